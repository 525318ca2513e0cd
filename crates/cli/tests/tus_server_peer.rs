//! `tenax upload --protocol tus` into a standard tus server: `@tus/server`
//! 2.4.5 with `@tus/file-store` (Node, installed by `scripts/test` from
//! `tests/peers/package-lock.json`), run by `bench/tus-server/server.mjs`,
//! the reference server of the benchmarks. The upload completes and is
//! stored byte-exact; as that server offers no final digest (it refuses
//! tenax's seed status query), the report says the upload is unverified.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::files::{assert_same_file, write_random_file};
use support::peers::peers_node_modules;
use support::process::{json_line, run_cli, text};
use support::{BIN, MIB};
use tenax_testkit::{Rng, TestServer};

/// The reference server's script.
const SERVER: &str = include_str!("../../../bench/tus-server/server.mjs");

/// `@tus/server` on a free loopback port, storing into its own directory;
/// killed on drop.
struct TusServer {
    child: Child,
    /// The tus endpoint, `http://127.0.0.1:PORT/uploads`.
    endpoint: String,
    dir: tempfile::TempDir,
}

impl TusServer {
    fn start() -> TusServer {
        let modules = peers_node_modules();
        let dir = tempfile::tempdir().expect("tmp");
        // An ES module given with `-e` resolves its imports from the
        // working directory: the one holding `node_modules`.
        let mut child = Command::new(std::env::var_os("NODE").unwrap_or_else(|| "node".into()))
            .current_dir(modules.parent().expect("the peers' Node folder"))
            .args(["--input-type=module", "-e", SERVER, "--", "server.mjs"])
            .arg(dir.path())
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("@tus/server did not start: {line:?}"))
            .to_owned();
        TusServer {
            child,
            endpoint: format!("{base}/uploads"),
            dir,
        }
    }

    /// Where `@tus/file-store` keeps the upload at `url`.
    fn stored(&self, url: &str) -> PathBuf {
        self.dir
            .path()
            .join(url.rsplit('/').next().unwrap_or_default())
    }
}

impl Drop for TusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request (the default) and 256 KiB chunks: both complete, byte-exact,
/// reported unverified in the JSON report and in the human one.
#[test]
fn tenax_upload_completes_on_a_standard_tus_server() {
    let server = TusServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    for (i, chunk) in [None, Some("256KiB")].into_iter().enumerate() {
        let file = dir.path().join(format!("plain-{i}.bin"));
        let sha256 = write_random_file(&mut Rng::from_env_or_os(), &file, 3 * MIB);
        let path = file.to_str().expect("UTF-8");
        let mut args = vec![path, &server.endpoint, "--protocol", "tus", "--no-journal"];
        args.extend(chunk.map(|chunk| ["--chunk-size", chunk]).iter().flatten());
        let json = [&args[..], &["--json"]].concat();
        let out = run_cli(&json, Duration::from_secs(60));
        assert!(out.status.success(), "{chunk:?}: {}", text(&out.stderr));
        let report = json_line(&out);
        assert_eq!(report["verified"], false, "{report}");
        assert_eq!(report["sha256"], sha256, "{report}");
        assert_eq!(report["size"], 3 * MIB, "{report}");
        let url = report["url"].as_str().expect("the upload URL");
        assert_same_file(&server.stored(url), &file);

        // The human report says it too.
        let out = run_cli(&args, Duration::from_secs(60));
        assert!(out.status.success(), "{chunk:?}: {}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(said.contains("unverified"), "{said}");
    }

    // tenax itself reports its digest: the same upload is verified there.
    let tenax = TestServer::start(BIN);
    let file = dir.path().join("tenax.bin");
    write_random_file(&mut Rng::from_env_or_os(), &file, MIB);
    let url = format!("http://{}/", tenax.addr());
    let path = file.to_str().expect("UTF-8");
    let args = [path, &url, "--protocol", "tus", "--no-journal", "--json"];
    let out = run_cli(&args, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json_line(&out)["verified"], true);
}
