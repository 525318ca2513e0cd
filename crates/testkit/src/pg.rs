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

/// A PostgreSQL server of a test's own, for tests that stop and restart
/// it (the shared one of `scripts/test` must stay up for the others): a
/// throwaway cluster in a temporary directory, on 127.0.0.1 and a free
/// port, from the same binaries as scripts/lib/pg.sh (`PG_BIN`, else
/// `pg_config --bindir`, else `/usr/lib/postgresql/*/bin`). As root, the
/// server runs as the `postgres` user, which owns the directory. Stopped
/// and removed when dropped.
#[derive(Debug)]
pub struct DedicatedPg {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl DedicatedPg {
    /// Starts one, or returns `None` (after a loud message) when the
    /// binaries are missing and [`REQUIRED_VAR`] is not `1`; panics when they
    /// are required or the server does not start.
    pub fn start(what: &str) -> Option<DedicatedPg> {
        let Some(bin) = pg_bindir() else {
            assert!(
                std::env::var(REQUIRED_VAR).as_deref() != Ok("1"),
                "{REQUIRED_VAR}=1 but PostgreSQL's initdb was not found (PG_BIN, pg_config, /usr/lib/postgresql)"
            );
            eprintln!("\n*** SKIPPED: {what} needs PostgreSQL's server binaries (initdb) ***\n");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("tenax-pg-")
            .tempdir_in("/tmp")
            .expect("a temporary directory");
        as_owner_prepare(dir.path());
        let data = dir.path().join("data");
        run_as_owner(&format!(
            "'{}' -D '{}' -A trust -U postgres --no-sync >'{}/initdb.log' 2>&1",
            bin.join("initdb").display(),
            data.display(),
            dir.path().display()
        ))
        .unwrap_or_else(|error| {
            panic!(
                "initdb failed ({error}); see {}/initdb.log",
                dir.path().display()
            )
        });
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let pg = DedicatedPg { bin, dir, port };
        pg.start_again();
        Some(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server: `fast` (clients disconnected, clean shutdown),
    /// else `immediate` (as a crash). Waits until it is down.
    pub fn stop(&self, fast: bool) {
        let mode = if fast { "fast" } else { "immediate" };
        run_as_owner(&format!(
            "'{}' -D '{}' -m {mode} -w stop >>'{}/pg_ctl.log' 2>&1",
            self.bin.join("pg_ctl").display(),
            self.dir.path().join("data").display(),
            self.dir.path().display()
        ))
        .unwrap_or_else(|error| panic!("pg_ctl stop failed: {error}"));
    }

    /// Starts the server (again) on its port; waits until it accepts
    /// connections.
    pub fn start_again(&self) {
        let dir = self.dir.path().display();
        run_as_owner(&format!(
            "'{}' -D '{dir}/data' -l '{dir}/log' -w -t 30 -o \"-p {} -k '{dir}' \
             -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100\" start \
             >>'{dir}/pg_ctl.log' 2>&1",
            self.bin.join("pg_ctl").display(),
            self.port
        ))
        .unwrap_or_else(|error| panic!("PostgreSQL did not start ({error}); see {dir}/log"));
    }
}

impl Drop for DedicatedPg {
    fn drop(&mut self) {
        let _ = run_as_owner(&format!(
            "'{}' -D '{}' -m immediate stop >/dev/null 2>&1",
            self.bin.join("pg_ctl").display(),
            self.dir.path().join("data").display()
        ));
    }
}

/// Where initdb and pg_ctl are.
fn pg_bindir() -> Option<std::path::PathBuf> {
    let has_initdb = |dir: &std::path::Path| dir.join("initdb").is_file();
    if let Some(bin) = std::env::var_os("PG_BIN").map(std::path::PathBuf::from)
        && has_initdb(&bin)
    {
        return Some(bin);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let bin = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_initdb(&bin) {
            return Some(bin);
        }
    }
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| has_initdb(bin))
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// As root, gives `dir` to the `postgres` user (postgres refuses to run as root).
fn as_owner_prepare(dir: &std::path::Path) {
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown postgres {}", dir.display());
    }
}

/// Runs a shell command line as the cluster's owner.
fn run_as_owner(line: &str) -> Result<(), String> {
    let status = if is_root() {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", line])
            .status()
    } else {
        Command::new("sh").args(["-c", line]).status()
    };
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(status.to_string()),
        Err(error) => Err(error.to_string()),
    }
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
