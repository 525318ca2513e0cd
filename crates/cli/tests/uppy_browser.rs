//! Uppy 6 (`@uppy/core` + `@uppy/tus`, bundled with esbuild) in real
//! headless Chromium against the real `tenax serve` binary, from a second
//! origin: the page is served by the driver on its own port, so every
//! request to tenax is cross-origin (CORS preflights for PATCH and its tus
//! headers; `Location` and `Upload-Offset` read through the exposed
//! headers). The page is reloaded mid-upload; Uppy finds the upload URL its
//! tus plugin stored in localStorage, asks tenax for the offset and sends
//! only the rest. The stored file is byte-exact.
//!
//! Driver: `tests/peers/browser/uppy_driver.mjs`; peers from `scripts/test`
//! (`target/peers/node`: @uppy/core, @uppy/tus, esbuild, playwright-core;
//! Debian's chromium). A missing peer fails the test; it never skips.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::files::write_random_file;
use support::http::request;
use support::peers::{chromium, node_driver, peers_uppy};
use support::process::drive;
use support::{BIN, MIB, sha256_hex};
use tenax_testkit::{Rng, TestServer};

/// How long the driver may take (its own waits are bounded by less).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(300);
const SIZE: u64 = 6 * MIB;
const CHUNK: u64 = 256 * 1024;

/// Runs `uppy_driver.mjs PARAMS`; panics unless it exits 0 and prints
/// `"ok": true`. Returns the printed JSON.
fn run_driver(params: &Value) -> Value {
    let mut command = node_driver(&peers_uppy(), "browser/uppy_driver.mjs");
    command.arg(params.to_string());
    drive(command, "uppy_driver.mjs", DRIVER_TIMEOUT).ok()
}

fn requests<'r>(report: &'r Value, phase: &str) -> &'r Vec<Value> {
    report[phase]["requests"].as_array().expect("requests")
}

fn offset(entry: &Value) -> u64 {
    entry["offset"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("no Upload-Offset in {entry}"))
}

#[test]
fn uppy_cross_origin_upload_resumes_after_a_reload() {
    let chromium = chromium();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("uppy.bin");
    let sha256 = write_random_file(&mut Rng::from_env_or_os(), &source, SIZE);
    let tenax = server.url("");
    let tenax = tenax.trim_end_matches('/');
    let report = run_driver(&json!({
        "tenax": tenax,
        "file": source.to_str().expect("UTF-8 path"),
        "name": "uppy.bin",
        "chunkSize": CHUNK,
        // Paced so that the reload lands mid-upload: 24 chunks, 100 ms each.
        "delayMs": 100,
        "reloadAfter": 6 * CHUNK,
        "chromium": chromium.to_str().expect("UTF-8 path"),
        "timeout": 120_000,
    }));

    // A second origin: the page's port is not tenax's.
    let page_origin = report["pageOrigin"].as_str().expect("pageOrigin");
    assert_ne!(page_origin, tenax, "the page must come from another origin");

    // Before the reload: a cross-origin POST whose Location the page could
    // read (exposed), then PATCHes whose Upload-Offset it could read.
    let responses = report["before"]["responses"].as_array().expect("responses");
    let created = &responses[0];
    assert_eq!(created["method"], "POST", "{created}");
    assert_eq!(created["status"], 201, "{created}");
    let url = created["location"]
        .as_str()
        .unwrap_or_else(|| panic!("Location not readable cross-origin: {created}"))
        .to_owned();
    assert!(url.starts_with(&format!("{tenax}/uploads/")), "{url}");
    let acked = report["before"]["acked"].as_u64().expect("acked");
    assert!((6 * CHUNK..SIZE).contains(&acked), "reloaded at {acked}");

    // What Uppy's tus plugin kept in localStorage across the reload.
    let stored = report["stored"].as_array().expect("stored");
    assert_eq!(stored.len(), 1, "{stored:?}");
    let entry: Value = serde_json::from_str(stored[0][1].as_str().expect("value")).expect("JSON");
    assert_eq!(entry["uploadUrl"], json!(url), "{entry}");

    // After the reload: no new upload, an offset query, then only the rest.
    let after = requests(&report, "after");
    assert!(
        after.iter().all(|request| request["method"] != "POST"),
        "a new upload was created after the reload: {after:?}"
    );
    assert_eq!(after[0]["method"], "HEAD", "{after:?}");
    assert_eq!(after[0]["url"], json!(url));
    let patches: Vec<&Value> = after.iter().filter(|r| r["method"] == "PATCH").collect();
    let resumed_at = offset(patches.first().expect("a PATCH after the reload"));
    assert!(
        (acked..SIZE).contains(&resumed_at),
        "resumed at {resumed_at}, {acked} acknowledged before the reload"
    );
    let resent = SIZE - resumed_at;
    assert!(
        resent < SIZE - acked + CHUNK,
        "{resent} bytes sent after the reload"
    );
    let chunks_after = u64::try_from(patches.len()).expect("count");
    assert_eq!(
        chunks_after,
        resent.div_ceil(CHUNK),
        "PATCHes after the reload: {patches:?}"
    );
    assert_eq!(report["after"]["uploadURL"], json!(url));

    // The stored file is byte-exact, by id and by name.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for target in [url.clone(), server.url("/files/uppy.bin")] {
        let got = rt.block_on(request(Method::GET, &target, &[], Vec::new()));
        assert_eq!(got.status, 200, "{}", got.describe());
        assert_eq!(got.body.len() as u64, SIZE);
        assert_eq!(
            sha256_hex(&got.body),
            sha256,
            "{target} differs from the source"
        );
    }
    eprintln!(
        "uppy: reloaded at {acked} acknowledged bytes, resumed at {resumed_at}, resent {resent} of {SIZE}"
    );
}
