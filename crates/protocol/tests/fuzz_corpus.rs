//! Replays the committed fuzz corpus and regression inputs (`fuzz/corpus/`,
//! `fuzz/regressions/`) through the same invariant checks the fuzz targets
//! run (`fuzz/checks.rs`), so that CI exercises them without fuzzing.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/checks.rs"]
mod checks;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

/// Every file under `fuzz/corpus/<target>` and `fuzz/regressions/<target>`
/// (the latter may be empty or missing).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = Path::new(FUZZ_DIR).join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            assert_ne!(kind, "corpus", "missing corpus {}", dir.display());
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus directory").path();
            if path.is_file() {
                let data = fs::read(&path).expect("readable corpus file");
                files.push((path, data));
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for (path, data) in &files {
        let outcome = std::panic::catch_unwind(|| check(data));
        assert!(
            outcome.is_ok(),
            "{target}: {} violates an invariant",
            path.display()
        );
    }
    files.len()
}

#[test]
fn content_range_corpus() {
    replay("content_range", checks::content_range);
}

#[test]
fn seed_decide_corpus() {
    replay("seed_decide", checks::seed_decide_bytes);
}

#[test]
fn names_corpus() {
    replay("names", checks::names);
}

#[test]
fn tus_headers_corpus() {
    replay("tus_headers", checks::tus_headers);
}

#[test]
fn structured_fields_corpus() {
    replay("structured_fields", checks::structured_fields);
}

#[test]
fn range_corpus() {
    replay("range", checks::range);
}

#[test]
fn forwarded_corpus() {
    replay("forwarded", checks::forwarded);
}

/// The hand-written `seed_decide` seeds must decode into inputs (a change
/// to `checks::SeedInput` silently turns old files into other inputs).
#[test]
fn seed_decide_seeds_still_decode() {
    use arbitrary::{Arbitrary, Unstructured};
    let path = Path::new(FUZZ_DIR).join("corpus/seed_decide/append_overlap");
    let data = fs::read(&path).expect("hand-written seed");
    let input = checks::SeedInput::arbitrary_take_rest(Unstructured::new(&data)).expect("decodes");
    let (range, length) = input.headers();
    assert_eq!(range.as_deref(), Some("bytes 5-14/*"));
    assert_eq!(length.as_deref(), Some("10"));
    assert_eq!(input.state().held, 10);
    assert_eq!(input.state().total, Some(20));
}
