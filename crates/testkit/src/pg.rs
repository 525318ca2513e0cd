//! The PostgreSQL server of the test run: `scripts/test` starts a
//! throwaway cluster (scripts/lib/pg.sh) and exports its URL. Databases are
//! created with the `psql` command, so testkit needs no SQL client crate.

use std::process::Command;

/// Set by `scripts/test` to `postgres://postgres@127.0.0.1:PORT/postgres`.
pub const URL_VAR: &str = "TENAX_TEST_DATABASE_URL";

/// Set to `1` by `scripts/test`: the PostgreSQL tests must run, never skip.
pub const REQUIRED_VAR: &str = "TENAX_TEST_PG";

/// A fresh, empty database `<name>_<random hex>` on the test server, as a
/// `postgres://` URL, or `None` (after a loud message on stderr) when no
/// server was started and none is required. Panics when `scripts/test`
/// required one and it is missing, or when the database cannot be created.
pub fn database_url(name: &str) -> Option<String> {
    let base = match std::env::var(URL_VAR) {
        Ok(base) if !base.is_empty() => base,
        _ if std::env::var(REQUIRED_VAR).as_deref() == Ok("1") => panic!(
            "{REQUIRED_VAR}=1 but {URL_VAR} is not set: scripts/test did not start PostgreSQL"
        ),
        _ => {
            eprintln!(
                "\n*** SKIPPED: {name} needs PostgreSQL; run it through scripts/test \
                 (which starts one and sets {URL_VAR}) ***\n"
            );
            return None;
        }
    };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).expect("the OS random source");
    let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
    // An identifier: lower-case letters, digits and `_` only, so it needs
    // no quoting in SQL or in the URL.
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let database = format!("{name}_{suffix}");
    let output = Command::new("psql")
        .arg(&base)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {database}"))
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run psql (is PostgreSQL's client installed?): {error}")
        });
    assert!(
        output.status.success(),
        "psql could not create database {database} on {base}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(replace_database(&base, &database))
}

/// `url` with its path (the database name) replaced by `database`; the
/// query string, if any, is kept.
fn replace_database(url: &str, database: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_start = without_query.find("://").map_or(0, |at| at + 3);
    let path_start = without_query[authority_start..]
        .find('/')
        .map_or(without_query.len(), |at| authority_start + at);
    let mut result = format!("{}/{database}", &without_query[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
            "postgres://postgres@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            replace_database("postgres://u@h:1", "t_1"),
            "postgres://u@h:1/t_1"
        );
        assert_eq!(
            replace_database("postgres://u@h:1/x?sslmode=disable", "t_1"),
            "postgres://u@h:1/t_1?sslmode=disable"
        );
    }
}
