//! The crate's modules import each other without a cycle, and the module
//! that decides a request's dialect stays a leaf.
//!
//! Read from the sources: every `crate::…` path outside comments and
//! `#[cfg(test)]` blocks is an edge to the longest module it names (a path
//! naming no module is the crate root's). Declaring a child (`mod x;`) is
//! not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name (`dialects::tus`, `(root)`) → source text.
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut folders = vec![src.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let name = relative
                .with_extension("")
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "::");
            let name = match name.strip_suffix("::mod") {
                Some(folder) => folder.to_owned(),
                None if name == "lib" => "(root)".to_owned(),
                None => name,
            };
            let text = std::fs::read_to_string(&path).expect("a source file");
            modules.insert(name, text);
        }
    }
    modules
}

/// The code of a file without comments and test modules.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::` path in `code`, `use crate::{a, b::c}` groups expanded
/// (one level, which is all this crate uses).
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            paths.extend(group[..end].split(',').map(|item| item.trim().to_owned()));
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        paths.push(rest[..end].trim_end_matches(':').to_owned());
    }
    paths
}

/// The module a path points into: the longest module name it starts with.
fn module_of<'m>(path: &str, modules: &'m BTreeSet<String>) -> &'m str {
    modules
        .iter()
        .filter(|module| {
            path == module.as_str()
                || path
                    .strip_prefix(module.as_str())
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|module| module.len())
        .map_or("(root)", String::as_str)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let names = sources.keys().cloned().collect::<BTreeSet<_>>();
    sources
        .iter()
        .map(|(name, text)| {
            let deps = crate_paths(&code(text))
                .iter()
                .map(|path| module_of(path, &names).to_owned())
                .filter(|dep| dep != name)
                .collect();
            (name.clone(), deps)
        })
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("never empty");
        for dep in graph.get(last).into_iter().flatten() {
            if dep == start {
                let mut cycle = path.clone();
                cycle.push(dep.clone());
                return Some(cycle);
            }
            if seen.insert(dep.clone()) {
                let mut longer = path.clone();
                longer.push(dep.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_imports_its_way_back_to_itself() {
    let graph = graph();
    assert!(graph.len() > 20, "the sources were found: {graph:?}");
    for module in graph.keys() {
        assert_eq!(cycle_through(&graph, module), None, "{graph:#?}");
    }
}

#[test]
fn the_dialect_decision_is_a_leaf_used_by_router_and_metrics() {
    let graph = graph();
    assert_eq!(graph["dialect"], BTreeSet::new());
    assert!(graph["dialects"].contains("dialect"), "{graph:#?}");
    assert!(graph["ops"].contains("dialect"), "{graph:#?}");
    for adapter in ["dialects::seed", "dialects::tus", "dialects::rufh"] {
        let deps = &graph[adapter];
        assert!(
            !deps.iter().any(|dep| dep.starts_with("dialects")),
            "{adapter} imports another adapter or the dispatcher: {deps:?}"
        );
        assert!(deps.contains("append"), "{adapter} skips the shared path");
    }
}

#[test]
fn the_reader_finds_edges_and_cycles() {
    let names = ["a", "b", "b::c"]
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>();
    let paths = crate_paths("use crate::{a::X, b::c::{Y}};\nlet z = crate::b::f();");
    let modules = paths
        .iter()
        .map(|path| module_of(path, &names))
        .collect::<Vec<_>>();
    assert_eq!(modules, ["a", "b::c", "b"]);
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert!(cycle_through(&graph, "a").is_some());
}
