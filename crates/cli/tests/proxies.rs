//! tenax behind the reverse proxies people run: Debian's nginx 1.22,
//! HAProxy 2.6 and Caddy 2.6, each started here as a child process on
//! loopback with the documented example config of `docs/proxies/` (its
//! `{{...}}` placeholders filled in), in front of the real binary started
//! with `--behind-proxy --trusted-proxies 127.0.0.1` (README, "Behind a
//! reverse proxy").
//!
//! Through each proxy: google-resumable-media, tus-js-client (tus and both
//! IETF modes, one with the whole file in the creation request),
//! `tenax upload` in seed, tus and ietf, and resumed downloads with
//! `curl -C -` and `aria2c -c`. Every upload must finish within
//! [`UPLOAD_BOUND`] (well under tenax's 60 s body timeout, which is what a
//! proxy that swallows the body runs into) and every upload URL handed out
//! must point at the proxy. Through nginx also: a path prefix, HTTPS at the
//! proxy, a 5 MiB body limit, and the stall of `--interim-responses
//! always` (nginx 1.22 takes a 104 for the final answer).
//!
//! `scripts/test` installs the proxies (apt-get) and sets
//! `TENAX_TEST_PROXIES=1`: then a missing proxy fails the test; otherwise
//! the test says so and skips.

#![allow(missing_docs)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::files::{assert_same_bytes, assert_stored, write_random_file};
use support::peers::{node_driver, peers_node_modules, python_driver};
use support::process::{drive, json_line, run_cli, text};
use support::{BIN, MIB, random_bytes};
use tenax_testkit::{Rng, TestServer};

/// The most one upload through a proxy may take: a few MiB on loopback
/// take a second or two; a body stalled by a proxy that took a 104 for the
/// final answer waits for tenax's minimum-rate window (30 s) or body idle
/// timeout (60 s).
const UPLOAD_BOUND: Duration = Duration::from_secs(20);

/// How long a proxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The example configs, run as they are documented.
const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/proxies");

/// The size of the test files: a few MiB and an odd tail.
const FILE_SIZE: u64 = 3 * MIB + 12_345;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
    Caddy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Caddy => "caddy",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx.conf",
            Kind::Haproxy => "haproxy.cfg",
            Kind::Caddy => "Caddyfile",
        }
    }

    /// The Debian package that has the binary.
    fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Caddy => "caddy",
        }
    }

    /// The proxy's binary; `None` (after saying so) when it is missing
    /// and `TENAX_TEST_PROXIES` does not require it.
    fn binary(self) -> Option<PathBuf> {
        let name = self.name();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file());
        if found.is_none() {
            let message = format!(
                "{name} is not installed: run scripts/test (it installs the Debian \
                 package {} with apt-get)",
                self.package()
            );
            assert!(
                std::env::var_os("TENAX_TEST_PROXIES").is_none_or(|v| v != "1"),
                "{message}"
            );
            eprintln!("SKIPPED: {message}");
        }
        found
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot find a free port")
}

/// A running proxy, killed when dropped.
struct Proxy {
    kind: Kind,
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
    limited_port: u16,
}

impl Proxy {
    /// Starts `kind` in front of `tenax` (a few attempts, in case another
    /// test took a port first); `None` when the proxy is not installed.
    fn start(kind: Kind, tenax: SocketAddr) -> Option<Proxy> {
        let binary = kind.binary()?;
        let mut last = String::new();
        for _ in 0..3 {
            match Proxy::try_start(kind, &binary, tenax) {
                Ok(proxy) => return Some(proxy),
                Err(why) => last = why,
            }
        }
        panic!("{} did not start: {last}", kind.name());
    }

    fn try_start(kind: Kind, binary: &Path, tenax: SocketAddr) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let run = dir.path();
        let (port, tls_port, limited_port) = (free_port(), free_port(), free_port());
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("cannot make a certificate");
        std::fs::write(run.join("cert.pem"), certified.cert.pem()).expect("write cert.pem");
        std::fs::write(run.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key.pem");
        let template = std::fs::read_to_string(Path::new(TEMPLATES).join(kind.template()))
            .expect("read the example config");
        let utf8 = |path: PathBuf| path.to_str().expect("UTF-8 path").to_owned();
        let config = template
            .replace("{{RUN}}", &utf8(run.to_owned()))
            .replace("{{PORT}}", &port.to_string())
            .replace("{{TLS_PORT}}", &tls_port.to_string())
            .replace("{{LIMITED_PORT}}", &limited_port.to_string())
            .replace("{{CERT}}", &utf8(run.join("cert.pem")))
            .replace("{{KEY}}", &utf8(run.join("key.pem")))
            .replace("{{TENAX}}", &tenax.to_string());
        let left = config
            .match_indices("{{")
            .any(|(at, _)| config[at + 2..].starts_with(|c: char| c.is_ascii_uppercase()));
        assert!(
            !left,
            "a placeholder left in docs/proxies/{}",
            kind.template()
        );
        let config_path = run.join(kind.template());
        std::fs::write(&config_path, config).expect("write the config");
        let log = std::fs::File::create(run.join("proxy.log")).expect("create proxy.log");
        let mut command = Command::new(binary);
        match kind {
            Kind::Nginx => {
                command
                    .arg("-p")
                    .arg(run)
                    .arg("-c")
                    .arg(&config_path)
                    .arg("-e")
                    .arg(run.join("error.log"))
                    // One process that dies with its kill (a master's
                    // workers would outlive a SIGKILL).
                    .args(["-g", "daemon off; master_process off;"]);
            }
            Kind::Haproxy => {
                command.arg("-db").arg("-f").arg(&config_path);
            }
            Kind::Caddy => {
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&config_path)
                    .env("HOME", run)
                    .env("XDG_DATA_HOME", run.join("data"))
                    .env("XDG_CONFIG_HOME", run.join("config"));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut proxy = Proxy {
            kind,
            child,
            dir,
            port,
            tls_port,
            limited_port,
        };
        let ports: &[u16] = match kind {
            Kind::Nginx => &[port, tls_port, limited_port],
            _ => &[port],
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("exited with {status}: {}", proxy.log()));
            }
            if ports
                .iter()
                .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
            {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening after {START_TIMEOUT:?}: {}",
                    proxy.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT{path}` at the proxy.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://localhost:TLS_PORT{path}` at the proxy (nginx).
    fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls_port)
    }

    /// The site with the 5 MiB body limit (nginx).
    fn limited_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.limited_port)
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The proxy's output and logs, for failure messages.
    fn log(&self) -> String {
        let mut all = String::new();
        for name in ["proxy.log", "error.log", "access.log"] {
            if let Ok(content) = std::fs::read_to_string(self.dir.path().join(name)) {
                let tail: Vec<&str> = content.lines().rev().take(30).collect();
                all.push_str(&format!("\n--- {} {name} ---\n", self.kind.name()));
                for line in tail.into_iter().rev() {
                    all.push_str(line);
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tenax as the proxies' origin: forwarding headers believed from
/// loopback only, interim responses as `auto` decides.
fn origin(extra: &[&str]) -> TestServer {
    let mut args = vec!["--behind-proxy", "--trusted-proxies", "127.0.0.1"];
    args.extend_from_slice(extra);
    TestServer::start_with(BIN, &args)
}

/// A server and its proxy; `None` (skipped) without the proxy.
fn setup(kind: Kind) -> Option<(TestServer, Proxy)> {
    let server = origin(&[]);
    let proxy = Proxy::start(kind, server.addr())?;
    Some((server, proxy))
}

/// A random file of [`FILE_SIZE`] bytes named `name` in `dir`.
fn source(dir: &Path, name: &str) -> PathBuf {
    sized_source(dir, name, FILE_SIZE)
}

/// A random file of `len` bytes named `name` in `dir`.
fn sized_source(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    write_random_file(&mut Rng::from_env_or_os(), &path, len);
    path
}

/// The size of a whole-file IETF creation request: more than the socket
/// buffers between client, proxy and tenax hold, so that a proxy that
/// stops forwarding the body on a 104 stalls it.
const CREATION_SIZE: u64 = 20_000_000;

/// `tenax upload` of `file` to `url` (in 1 MiB requests unless `extra`
/// has a `--chunk-size`); checks that it finished within the
/// bound, that its upload URL starts with `expect_prefix` and that the
/// server stored the file. Returns the JSON report.
fn tenax_upload(
    server: &TestServer,
    proxy: &Proxy,
    protocol: &str,
    file: &Path,
    url: &str,
    expect_prefix: &str,
    extra: &[&str],
) -> Value {
    let started = Instant::now();
    let path = file.to_str().expect("UTF-8 path");
    let mut args = vec![
        "--protocol",
        protocol,
        "--json",
        "--no-journal",
        "--max-time",
        "60s",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--chunk-size") {
        args.extend_from_slice(&["--chunk-size", "1MiB"]);
    }
    args.extend_from_slice(&[path, url]);
    let out = run_cli(&args, UPLOAD_BOUND + Duration::from_secs(30));
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "tenax upload --protocol {protocol} through {} failed: {}{}",
        proxy.kind.name(),
        text(&out.stderr),
        proxy.log()
    );
    assert!(
        elapsed < UPLOAD_BOUND,
        "tenax upload --protocol {protocol} through {} took {elapsed:?}; stderr {}",
        proxy.kind.name(),
        text(&out.stderr)
    );
    let report = json_line(&out);
    let session = report["url"].as_str().unwrap_or_default();
    assert!(
        session.starts_with(expect_prefix),
        "{protocol}: the upload URL {session:?} does not point at the proxy ({expect_prefix}); \
         report {report}"
    );
    let name = file.file_name().and_then(|n| n.to_str()).expect("a name");
    assert_stored(server, name, file);
    report
}

/// `tenax upload` in seed, tus and ietf through the proxy.
fn tenax_upload_all_dialects(kind: Kind) {
    let Some((server, proxy)) = setup(kind) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    for protocol in ["seed", "tus", "ietf"] {
        let file = source(dir.path(), &format!("{}-{protocol}.bin", kind.name()));
        let prefix = proxy.url("/uploads/");
        tenax_upload(
            &server,
            &proxy,
            protocol,
            &file,
            &proxy.url(""),
            &prefix,
            &[],
        );
    }
}

/// Runs `node tus_upload.mjs PARAMS` within the bound; returns its report.
fn tus_js(params: &Value, extra_env: &[(&str, &Path)]) -> Value {
    let mut command = node_driver(&peers_node_modules(), "tus_upload.mjs");
    command.arg(params.to_string());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let mode = &params["mode"];
    let driven = drive(
        command,
        &format!("tus_upload.mjs {mode}"),
        UPLOAD_BOUND + Duration::from_secs(30),
    );
    let elapsed = driven.run.elapsed;
    let report = driven.ok();
    assert!(
        elapsed < UPLOAD_BOUND,
        "tus-js-client {mode} took {elapsed:?}"
    );
    report
}

/// What tus-js-client uploaded ended up in tenax: published under `name`
/// (tus), or at least held whole under its upload id (the IETF modes may
/// leave it unnamed).
fn assert_tus_js_stored(server: &TestServer, report: &Value, name: &str, file: &Path) {
    let published = server.data_dir().join("files").join(name);
    let data = std::fs::read(file).expect("read the source");
    if published.exists() {
        assert_stored(server, name, file);
        return;
    }
    let url = report["url"].as_str().expect("a url");
    let id = url.rsplit('/').next().expect("an id");
    let held = server.data_dir().join("uploads").join(format!("{id}.bin"));
    let stored = std::fs::read(&held)
        .unwrap_or_else(|e| panic!("{name}: neither published nor held ({e}): {report}"));
    assert_same_bytes(name, &stored, &data);
}

/// tus-js-client through the proxy: tus 1.0 in 1 MiB chunks, the IETF
/// draft (interop 5 and 6), and a whole file in one IETF creation request
/// (`Upload-Complete: ?1` with the body, where a 104 would go out if tenax
/// sent one).
fn tus_js_client_modes(kind: Kind) {
    let Some((server, proxy)) = setup(kind) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let runs = [
        ("plain", json!(MIB), json!({}), FILE_SIZE),
        ("ietf-03", json!(MIB), json!({}), FILE_SIZE),
        ("ietf-05", json!(MIB), json!({}), FILE_SIZE),
        (
            "ietf-05",
            json!("Infinity"),
            json!({"uploadDataDuringCreation": true}),
            CREATION_SIZE,
        ),
    ];
    for (index, (mode, chunk, options, size)) in runs.into_iter().enumerate() {
        let name = format!("{}-tusjs-{index}-{mode}.bin", kind.name());
        let file = sized_source(dir.path(), &name, size);
        let report = tus_js(
            &json!({
                "endpoint": proxy.url("/uploads"),
                "file": file.to_str().expect("UTF-8 path"),
                "name": name,
                "mode": mode,
                "chunkSize": chunk,
                "options": options,
            }),
            &[],
        );
        let url = report["url"].as_str().unwrap_or_default();
        assert!(
            url.starts_with(&proxy.url("/uploads/")),
            "{mode}: the upload URL {url:?} does not point at the proxy: {report}"
        );
        assert_eq!(
            report["size"].as_u64().or(report["offset"].as_u64()),
            Some(size),
            "{report}"
        );
        assert_tus_js_stored(&server, &report, &name, &file);
    }
}

/// google-resumable-media through the proxy, in 512 KiB chunks; its
/// session URL must point at the proxy.
fn google_resumable_media(kind: Kind) {
    let Some((server, proxy)) = setup(kind) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let name = format!("{}-google.bin", kind.name());
    let file = source(dir.path(), &name);
    let mut command = python_driver("google_upload.py");
    command
        .arg(proxy.url("/uploads"))
        .arg(&file)
        .arg((512 * 1024).to_string())
        .arg("plain")
        .arg(&name);
    let run = drive(
        command,
        "google_upload.py",
        UPLOAD_BOUND + Duration::from_secs(30),
    )
    .run;
    assert!(
        run.status.is_some_and(|status| status.success()),
        "google-resumable-media through {} failed ({:?}): {}{}",
        kind.name(),
        run.status,
        run.stdout,
        proxy.log()
    );
    assert!(run.elapsed < UPLOAD_BOUND, "took {:?}", run.elapsed);
    let session = run
        .stderr
        .lines()
        .find_map(|line| line.split("session ").nth(1))
        .unwrap_or_else(|| panic!("the client logged no session URL: {}", run.stderr));
    assert!(
        session.starts_with(&proxy.url("/uploads/")),
        "the session URL {session:?} does not point at the proxy"
    );
    assert_stored(&server, &name, &file);
}

/// A tool from the distribution (`scripts/test` installs it).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/test"))
}

/// A tool's run: bounded, output kept.
fn run_tool(mut command: Command, what: &str) -> support::process::PeerRun {
    command.env("LC_ALL", "C");
    let run = drive(command, what, UPLOAD_BOUND).run;
    assert!(
        run.status.is_some_and(|status| status.success()),
        "{what}: {:?} {} {}",
        run.status,
        run.stdout,
        run.stderr
    );
    run
}

/// A local copy whose first `prefix` bytes are inverted: a client that
/// resumes keeps them, one that starts over does not. Returns what a
/// resumed file holds.
fn partial_copy(local: &Path, data: &[u8], prefix: usize) -> Vec<u8> {
    let inverted: Vec<u8> = data[..prefix].iter().map(|b| !b).collect();
    std::fs::write(local, &inverted).expect("write the partial file");
    let mut expected = inverted;
    expected.extend_from_slice(&data[prefix..]);
    expected
}

/// `curl -C -` and `aria2c -c` resume partial downloads through the proxy.
fn downloads_resume(kind: Kind) {
    let Some((server, proxy)) = setup(kind) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let name = format!("{}-download.bin", kind.name());
    let file = source(dir.path(), &name);
    tenax_upload(
        &server,
        &proxy,
        "seed",
        &file,
        &server.url(""),
        &server.url("/uploads/"),
        &[],
    );
    let data = std::fs::read(&file).expect("read the source");
    let url = proxy.url(&format!("/files/{name}"));

    let local = dir.path().join("curl.bin");
    let expected = partial_copy(&local, &data, MIB as usize + 17);
    let mut curl = Command::new(tool("curl"));
    curl.args(["-sS", "-C", "-", "-w", "%{http_code}", "-o"])
        .arg(&local)
        .arg(&url);
    let run = run_tool(curl, "curl -C -");
    assert_eq!(run.stdout, "206", "curl saw {}; {}", run.stdout, run.stderr);
    assert_same_bytes(
        "curl -C -",
        &std::fs::read(&local).expect("read"),
        &expected,
    );

    // aria2c resumes at a piece boundary (1 MiB): a whole-piece prefix.
    let aria_dir = dir.path().join("aria2");
    std::fs::create_dir(&aria_dir).expect("mkdir");
    let expected = partial_copy(&aria_dir.join(&name), &data, 2 * MIB as usize);
    let mut aria2c = Command::new(tool("aria2c"));
    aria2c
        .args([
            "--no-conf",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--auto-file-renaming=false",
            "--max-tries=1",
            "-c",
            "-d",
        ])
        .arg(&aria_dir)
        .arg("-o")
        .arg(&name)
        .arg(&url);
    run_tool(aria2c, "aria2c -c");
    let local = std::fs::read(aria_dir.join(&name)).expect("read");
    assert_same_bytes("aria2c -c", &local, &expected);
}

macro_rules! through {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn tenax_upload_seed_tus_ietf() {
                tenax_upload_all_dialects($kind);
            }

            #[test]
            fn tus_js_client_tus_and_ietf() {
                tus_js_client_modes($kind);
            }

            #[test]
            fn google_resumable_media_upload() {
                google_resumable_media($kind);
            }

            #[test]
            fn curl_and_aria2c_resume() {
                downloads_resume($kind);
            }
        }
    };
}

through!(nginx, Kind::Nginx);
through!(haproxy, Kind::Haproxy);
through!(caddy, Kind::Caddy);

/// nginx under a path prefix: `/transfer/X` at the proxy is `/X` at tenax,
/// and every URL tenax hands out keeps the prefix (`X-Forwarded-Prefix`).
#[test]
fn nginx_path_prefix() {
    let Some((server, proxy)) = setup(Kind::Nginx) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    for protocol in ["seed", "tus", "ietf"] {
        let file = source(dir.path(), &format!("prefix-{protocol}.bin"));
        let prefix = proxy.url("/transfer/uploads/");
        tenax_upload(
            &server,
            &proxy,
            protocol,
            &file,
            &proxy.url("/transfer"),
            &prefix,
            &[],
        );
    }
    let name = "prefix-tusjs.bin";
    let file = source(dir.path(), name);
    let report = tus_js(
        &json!({
            "endpoint": proxy.url("/transfer/uploads"),
            "file": file.to_str().expect("UTF-8 path"),
            "name": name,
            "mode": "plain",
        }),
        &[],
    );
    let url = report["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&proxy.url("/transfer/uploads/")),
        "{report}"
    );
    assert_stored(&server, name, &file);
    // A download under the prefix.
    let run = run_tool(
        {
            let mut curl = Command::new(tool("curl"));
            curl.args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .arg(proxy.url(&format!("/transfer/files/{name}")));
            curl
        },
        "curl",
    );
    assert_eq!(run.stdout, format!("200 {FILE_SIZE}"), "{}", run.stderr);
}

/// HTTPS at nginx, plain HTTP to tenax: `X-Forwarded-Proto: https` makes
/// every upload URL https at the proxy.
#[test]
fn nginx_https_to_plain_tenax() {
    let Some((server, proxy)) = setup(Kind::Nginx) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let cert = proxy.cert();
    let cert_arg = cert.to_str().expect("UTF-8 path").to_owned();
    for protocol in ["seed", "tus", "ietf"] {
        let file = source(dir.path(), &format!("tls-{protocol}.bin"));
        let prefix = proxy.tls_url("/uploads/");
        tenax_upload(
            &server,
            &proxy,
            protocol,
            &file,
            &proxy.tls_url(""),
            &prefix,
            &["--cacert", &cert_arg],
        );
    }
    for (mode, index) in [("plain", 0), ("ietf-05", 1)] {
        let name = format!("tls-tusjs-{index}.bin");
        let file = source(dir.path(), &name);
        let report = tus_js(
            &json!({
                "endpoint": proxy.tls_url("/uploads"),
                "file": file.to_str().expect("UTF-8 path"),
                "name": name,
                "mode": mode,
            }),
            &[("NODE_EXTRA_CA_CERTS", cert.as_path())],
        );
        let url = report["url"].as_str().unwrap_or_default();
        assert!(url.starts_with(&proxy.tls_url("/uploads/")), "{report}");
        assert_tus_js_stored(&server, &report, &name, &file);
    }
}

/// `client_max_body_size 5m`: nginx answers 413 to the 8 MiB requests of
/// `tenax upload`, which then sends smaller ones and finishes, in every
/// dialect; tus-js-client finishes with the chunk size the README gives
/// for such a limit (4 MiB).
#[test]
fn nginx_body_limit_shrinks_requests() {
    let Some((server, proxy)) = setup(Kind::Nginx) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    for protocol in ["seed", "tus", "ietf"] {
        let name = format!("limit-{protocol}.bin");
        let file = dir.path().join(&name);
        write_random_file(&mut Rng::from_env_or_os(), &file, 11 * MIB + 7);
        let prefix = proxy.limited_url("/uploads/");
        // 8 MiB requests, over the limit.
        let report = tenax_upload(
            &server,
            &proxy,
            protocol,
            &file,
            &proxy.limited_url(""),
            &prefix,
            &["--chunk-size", "8MiB"],
        );
        assert_eq!(report["size"].as_u64(), Some(11 * MIB + 7), "{report}");
    }
    let access = std::fs::read_to_string(proxy.dir.path().join("access.log")).unwrap_or_default();
    assert!(
        access.contains("\" 413 "),
        "nginx refused no request: the limit was not tested: {access}"
    );
    let name = "limit-tusjs.bin";
    let file = dir.path().join(name);
    write_random_file(&mut Rng::from_env_or_os(), &file, 11 * MIB + 7);
    let report = tus_js(
        &json!({
            "endpoint": proxy.limited_url("/uploads"),
            "file": file.to_str().expect("UTF-8 path"),
            "name": name,
            "mode": "plain",
            "chunkSize": 4 * MIB,
        }),
        &[],
    );
    assert!(
        report["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&proxy.limited_url("/uploads/")),
        "{report}"
    );
    assert_stored(&server, name, &file);
}

/// A complete IETF creation with its body, raw through the proxy: the
/// interim and final status lines the client saw, and how long the
/// final answer took. With `pace`, the body goes in 64 KiB pieces with
/// that pause between them.
fn raw_creation(port: u16, name: &str, len: usize, pace: Option<Duration>) -> (Vec<u16>, Duration) {
    use std::io::{Read as _, Write as _};
    let body = random_bytes(&mut Rng::new(1104), len);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {len}\r\nUpload-Draft-Interop-Version: 9\r\nUpload-Complete: ?1\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
    );
    let started = Instant::now();
    let mut writer = stream.try_clone().expect("clone the stream");
    let sender = std::thread::spawn(move || {
        // The proxy may stop reading (or close): a write error ends it.
        let _ = writer.write_all(head.as_bytes());
        match pace {
            None => {
                let _ = writer.write_all(&body);
            }
            Some(pause) => {
                for piece in body.chunks(64 * 1024) {
                    if writer.write_all(piece).is_err() {
                        break;
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    });
    let mut seen = Vec::new();
    let mut statuses = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&seen);
        statuses = text
            .split("\r\n")
            .filter_map(|line| line.strip_prefix("HTTP/1.1 "))
            .filter_map(|rest| rest.get(..3)?.parse().ok())
            .collect();
        if statuses.iter().any(|status| *status >= 200) {
            break;
        }
    }
    let elapsed = started.elapsed();
    drop(stream);
    let _ = sender.join();
    (statuses, elapsed)
}

/// nginx 1.22 takes a 104 for the final response: with `--interim-responses
/// always`, a complete IETF creation through it gets the 104 and then
/// nothing until tenax's body timeout (3 s here) cuts the stalled body,
/// short of its length, and nginx logs status 104. With the default
/// (`auto`), the same request through nginx gets no 104 and completes at
/// once.
#[test]
fn nginx_stalls_on_104_unless_auto() {
    let Some(binary) = Kind::Nginx.binary() else {
        return;
    };
    drop(binary);
    const LEN: usize = 20_000_000;
    let stalled = origin(&["--interim-responses", "always", "--body-idle-timeout", "3s"]);
    let proxy = Proxy::start(Kind::Nginx, stalled.addr()).expect("nginx");
    let (statuses, elapsed) = raw_creation(proxy.port, "stall.bin", LEN, None);
    eprintln!("always through nginx: {statuses:?} after {elapsed:?}");
    assert_eq!(statuses.first(), Some(&104), "{statuses:?}{}", proxy.log());
    assert!(
        elapsed >= Duration::from_secs(3),
        "the upload did not stall (answered after {elapsed:?}): {statuses:?}"
    );
    let held = support::files::held_on_disk(&stalled);
    assert!(
        held < LEN as u64,
        "tenax received the whole body ({held} bytes) through nginx"
    );
    // nginx logs the request when it ends: wait for the line (bounded).
    let mut access = String::new();
    for _ in 0..100 {
        access = std::fs::read_to_string(proxy.dir.path().join("access.log")).unwrap_or_default();
        if access.contains("POST /uploads") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        access.contains("\"POST /uploads HTTP/1.1\" 104 "),
        "nginx did not log the 104 as the final status: {access}"
    );
    drop(proxy);

    let server = origin(&[]);
    let proxy = Proxy::start(Kind::Nginx, server.addr()).expect("nginx");
    let (statuses, elapsed) = raw_creation(proxy.port, "auto.bin", LEN, None);
    eprintln!("auto through nginx: {statuses:?} after {elapsed:?}");
    assert_eq!(statuses, vec![201], "{}", proxy.log());
    assert!(elapsed < UPLOAD_BOUND, "took {elapsed:?}");
}

/// A body of 16 MB at about 1.3 MB/s (12 s or more): tenax sends a 104
/// with the upload's URL, then one with its offset every second or two.
const PACED_LEN: usize = 16_000_000;
const PACE: Duration = Duration::from_millis(50);

/// HAProxy 2.6 passes every 104 on (with `--interim-responses always`):
/// the client sees them all, then the final 201.
#[test]
fn haproxy_passes_every_104_on() {
    if Kind::Haproxy.binary().is_none() {
        return;
    }
    let server = origin(&["--interim-responses", "always"]);
    let proxy = Proxy::start(Kind::Haproxy, server.addr()).expect("haproxy");
    let (statuses, elapsed) = raw_creation(proxy.port, "paced.bin", PACED_LEN, Some(PACE));
    eprintln!("always through haproxy: {statuses:?} after {elapsed:?}");
    let interim = statuses.iter().filter(|status| **status == 104).count();
    assert!(interim >= 6, "{statuses:?}{}", proxy.log());
    assert_eq!(statuses.last(), Some(&201), "{statuses:?}{}", proxy.log());
}

/// Caddy 2.6 (built with Go 1.19) passes a 104 on, but Go's HTTP client
/// fails a request at its sixth 1xx: a short creation gets its 104 and
/// its 201; a slow one gets five 104s and then Caddy's 502, the body cut.
/// Hence `auto` (no 104 through a proxy) behind Caddy.
#[test]
fn caddy_passes_five_1xx_then_fails_the_request() {
    if Kind::Caddy.binary().is_none() {
        return;
    }
    let server = origin(&["--interim-responses", "always"]);
    let proxy = Proxy::start(Kind::Caddy, server.addr()).expect("caddy");
    let (statuses, elapsed) = raw_creation(proxy.port, "short.bin", 2_000_000, None);
    eprintln!("always through caddy, short: {statuses:?} after {elapsed:?}");
    assert_eq!(statuses.first(), Some(&104), "{statuses:?}{}", proxy.log());
    assert_eq!(statuses.last(), Some(&201), "{statuses:?}{}", proxy.log());

    let (statuses, elapsed) = raw_creation(proxy.port, "paced.bin", PACED_LEN, Some(PACE));
    eprintln!("always through caddy, paced: {statuses:?} after {elapsed:?}");
    let interim = statuses.iter().filter(|status| **status == 104).count();
    assert_eq!(interim, 5, "{statuses:?}{}", proxy.log());
    assert_eq!(statuses.last(), Some(&502), "{statuses:?}{}", proxy.log());

    // With the default, no 104 goes through Caddy and the slow upload
    // completes.
    let server = origin(&[]);
    let proxy = Proxy::start(Kind::Caddy, server.addr()).expect("caddy");
    let (statuses, elapsed) = raw_creation(proxy.port, "auto.bin", PACED_LEN, Some(PACE));
    eprintln!("auto through caddy, paced: {statuses:?} after {elapsed:?}");
    assert_eq!(statuses, [201], "{}", proxy.log());
}
