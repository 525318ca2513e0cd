//! The upload page (`GET /`) in real headless Chromium, against the real
//! `tenax serve` binary.
//!
//! Chromium is Debian's `/usr/bin/chromium`; it is driven through
//! `playwright-core` from `target/peers/node/node_modules` (or
//! `$TENAX_PEERS/node/node_modules`); `scripts/test` installs both. The
//! driver is `tests/peers/browser/page_driver.mjs`, one scenario per test.
//! A missing browser or driver fails the test; it never skips. Each
//! scenario saves screenshots under `target/screenshots/`.

#![allow(missing_docs)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::files::write_random_file;
use support::http::get;
use support::peers::{chromium, node_driver, peers_playwright};
use support::process::drive;
use support::{BIN, MIB, sha256_hex};
use tenax_testkit::{FaultProxy, Rng, TestServer};

/// How long one driver run may take (its own waits are bounded by less).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(420);

/// The size of the main test file.
const SIZE: u64 = 50 * MIB;

/// Where the scenarios save their screenshots.
fn screenshots() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/screenshots"
    ))
}

/// Runs one scenario of `page_driver.mjs`; panics with its output unless it
/// exits 0 and prints `"ok": true`. Returns the printed JSON.
fn run_driver(scenario: &str, mut params: Value) -> Value {
    let chromium = chromium();
    params["scenario"] = json!(scenario);
    params["chromium"] = json!(chromium.to_str().expect("a UTF-8 path"));
    params["shots"] = json!(screenshots().to_str().expect("a UTF-8 path"));
    params["timeout"] = json!(120_000);
    let mut command = node_driver(&peers_playwright(), "browser/page_driver.mjs");
    command.arg(params.to_string());
    drive(
        command,
        &format!("page_driver.mjs {scenario}"),
        DRIVER_TIMEOUT,
    )
    .ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a runtime")
}

/// A server and a folder with random source files.
struct Fixture {
    server: TestServer,
    dir: tempfile::TempDir,
    rng: Rng,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            server: TestServer::start(BIN),
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
            rng: Rng::from_env_or_os(),
        }
    }

    /// A random file `name` of `len` bytes: its path and SHA-256.
    fn file(&mut self, name: &str, len: u64) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let sha256 = write_random_file(&mut self.rng, &path, len);
        (path, sha256)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `GET /api/files` must list `name` with `size` and `sha256`, and
/// `GET /files/NAME` must serve bytes with that digest.
fn assert_stored(server: &TestServer, name: &str, size: u64, sha256: &str) {
    let rt = runtime();
    let (status, body) = rt.block_on(get(&server.url("/api/files")));
    assert_eq!(status, 200, "GET /api/files");
    let list: Value = serde_json::from_slice(&body).expect("/api/files is JSON");
    let entry = list
        .as_array()
        .and_then(|files| files.iter().find(|file| file["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not in /api/files: {list}"));
    assert_eq!(entry["size"], json!(size), "{entry}");
    assert_eq!(entry["sha256"], json!(sha256), "{entry}");
    assert_eq!(entry["url"], json!(format!("/files/{name}")), "{entry}");
    assert!(
        entry["completed_at"].as_u64().is_some_and(|t| t > 0),
        "{entry}"
    );
    let (status, stored) = rt.block_on(get(&server.url(&format!("/files/{name}"))));
    assert_eq!(status, 200, "GET /files/{name}");
    assert_eq!(sha256_hex(&stored), sha256, "the bytes of /files/{name}");
}

#[test]
fn the_page_and_its_assets_are_served_with_types_and_caching() {
    let server = TestServer::start(BIN);
    let rt = runtime();
    let client = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = rt
            .block_on(client.get(server.url(path)).send())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), 200, "GET {path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "GET {path}: {}",
            header("content-type")
        );
        assert_eq!(header("cache-control"), "no-cache", "GET {path}");
        let etag = header("etag");
        assert!(etag.starts_with('"'), "GET {path}: ETag {etag:?}");
        let again = rt
            .block_on(
                client
                    .get(server.url(path))
                    .header("If-None-Match", &etag)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(again.status(), 304, "GET {path} with If-None-Match");
    }
    let (status, body) = rt.block_on(get(&server.url("/api/files")));
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
}

#[test]
fn uploads_a_50_mib_file_through_the_page() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("page-50mib.bin", SIZE);
    let report = run_driver(
        "upload",
        json!({
            "base": fx.server.url(""),
            "file": path_str(&file),
            "name": "page-50mib.bin",
            "size": SIZE,
            "query": "?token=s3cret-token",
            "token": "s3cret-token",
        }),
    );
    assert_eq!(report["link"], json!("/files/page-50mib.bin"), "{report}");
    // The token from the address went into the field, out of the address,
    // and onto every upload request.
    assert_eq!(report["tokenField"], json!("s3cret-token"), "{report}");
    let address = report["address"].as_str().unwrap_or_default();
    assert!(
        !address.contains("s3cret"),
        "the token stayed in the address: {address}"
    );
    let requests = report["auth"]["requests"].as_u64().unwrap_or(0);
    assert!(requests >= 8, "{report}");
    assert_eq!(report["auth"]["withToken"], json!(requests), "{report}");
    assert_stored(&fx.server, "page-50mib.bin", SIZE, &sha256);
}

#[test]
fn an_offline_spell_mid_upload_is_waited_out() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("offline.bin", SIZE);
    let report = run_driver(
        "offline",
        json!({
            "base": fx.server.url(""),
            "file": path_str(&file),
            "name": "offline.bin",
            "size": SIZE,
            "offlineMs": 3000,
        }),
    );
    assert_eq!(report["during"]["state"], json!("waiting"), "{report}");
    let during = report["during"]["acked"].as_u64().unwrap_or(0);
    assert!(
        (8 * MIB..SIZE).contains(&during),
        "offline at {during}: {report}"
    );
    assert_stored(&fx.server, "offline.bin", SIZE, &sha256);
}

#[test]
fn a_link_cut_every_few_mib_still_delivers_the_file() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("cut.bin", SIZE);
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(
        fx.server.addr(),
        (2 * MIB, 6 * MIB),
        Rng::new(fx.rng.next_u64()),
    ));
    let report = run_driver(
        "proxy",
        json!({
            "base": format!("http://{}", proxy.addr()),
            "file": path_str(&file),
            "name": "cut.bin",
            "size": SIZE,
        }),
    );
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    let sent = proxy.stats().client_bytes.load(Ordering::Relaxed);
    eprintln!("{cuts} cuts, {sent} client bytes: {report}");
    assert!(cuts >= 5, "the proxy cut only {cuts} connections");
    assert_stored(&fx.server, "cut.bin", SIZE, &sha256);
}

#[test]
fn a_reload_resumes_without_resending_what_the_server_holds() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("reload.bin", SIZE);
    let rt = runtime();
    // No cuts: the proxy only counts what the browser sends.
    let proxy = rt.block_on(FaultProxy::start(
        fx.server.addr(),
        (u64::MAX / 2, u64::MAX / 2),
        Rng::new(fx.rng.next_u64()),
    ));
    let report = run_driver(
        "reload",
        json!({
            "base": format!("http://{}", proxy.addr()),
            "file": path_str(&file),
            "name": "reload.bin",
            "size": SIZE,
            "reloadAt": 20 * MIB,
        }),
    );
    let held = report["pending"]["acked"].as_u64().unwrap_or(0);
    assert!(
        (20 * MIB..SIZE).contains(&held),
        "held after the reload: {report}"
    );
    let resumed = report["resumed"]["acked"].as_u64().unwrap_or(0);
    assert!(resumed >= held, "resumed below what was held: {report}");
    let sent = proxy.stats().client_bytes.load(Ordering::Relaxed);
    eprintln!("the browser sent {sent} bytes for a {SIZE}-byte file: {report}");
    assert!(
        (sent as f64) < 1.2 * SIZE as f64,
        "the browser sent {sent} bytes for {SIZE}: it re-sent what the server held"
    );
    assert_stored(&fx.server, "reload.bin", SIZE, &sha256);
}

#[test]
fn pause_resume_and_cancel() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("pause-me.bin", 32 * MIB);
    let (second, _) = fx.file("cancel-me.bin", 32 * MIB);
    let report = run_driver(
        "controls",
        json!({
            "base": fx.server.url(""),
            "file": path_str(&file),
            "name": "pause-me.bin",
            "size": 32 * MIB,
            "file2": path_str(&second),
            "name2": "cancel-me.bin",
        }),
    );
    assert_eq!(
        report["still"]["acked"], report["paused"]["acked"],
        "{report}"
    );
    assert_stored(&fx.server, "pause-me.bin", 32 * MIB, &sha256);
    // Cancel sent DELETE: the upload is gone, nothing is published, and the
    // page forgot it.
    let url = report["cancelledUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("no upload URL for the cancelled file: {report}"));
    let rt = runtime();
    let (status, _) = rt.block_on(get(url));
    assert!(
        matches!(status, 404 | 410),
        "GET {url} after cancel: {status}"
    );
    let (status, _) = rt.block_on(get(&fx.server.url("/files/cancel-me.bin")));
    assert_eq!(status, 404, "the cancelled file is published");
    let stored = report["stored"].as_str().unwrap_or("{}");
    assert!(
        !stored.contains(url),
        "the page still remembers {url}: {stored}"
    );
}

#[test]
fn keyboard_only_with_named_controls() {
    let mut fx = Fixture::new();
    let (file, sha256) = fx.file("keys.bin", 24 * MIB);
    let report = run_driver(
        "keyboard",
        json!({
            "base": fx.server.url(""),
            "file": path_str(&file),
            "name": "keys.bin",
            "size": 24 * MIB,
        }),
    );
    for control in [
        "picker",
        "tokenField",
        "uploads",
        "files",
        "refresh",
        "progressName",
    ] {
        assert_eq!(
            report["names"][control],
            json!(1),
            "accessible name of {control}: {report}"
        );
    }
    assert!(
        report["names"]["liveRegions"].as_u64().unwrap_or(0) >= 1,
        "no aria-live region: {report}"
    );
    assert_stored(&fx.server, "keys.bin", 24 * MIB, &sha256);
}

#[test]
fn a_phone_sized_screen() {
    let mut fx = Fixture::new();
    let (file, _) = fx.file("holiday-photos.zip", 6 * MIB);
    let (second, _) = fx.file("site-survey-2026.mov", 48 * MIB);
    let report = run_driver(
        "phone",
        json!({
            "base": fx.server.url(""),
            "file": path_str(&file),
            "name": "holiday-photos.zip",
            "size": 6 * MIB,
            "file2": path_str(&second),
            "name2": "site-survey-2026.mov",
            "viewport": {"width": 390, "height": 844},
            "scale": 2,
            "mobile": true,
        }),
    );
    assert!(
        report["overflow"]
            .as_i64()
            .is_some_and(|overflow| overflow <= 0),
        "the page scrolls sideways on a phone: {report}"
    );
}
