//! Interop with the official tus client, `tus-js-client` (its Node build),
//! against the real `tenax serve` binary.
//!
//! The client comes from `target/peers/node/node_modules` (or
//! `$TENAX_PEERS/node/node_modules`), which `scripts/test` installs from
//! `tests/peers/package.json` and the committed `package-lock.json`; the
//! driver script is `tests/peers/tus_upload.mjs`. Each test uploads a random
//! file in one of the script's modes and compares what tenax stored with the
//! source, byte for byte. A missing peer fails the test; it never skips.

#![allow(missing_docs)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::files::assert_same_bytes;
use support::http::get;
use support::peers::{node_driver, peers_node_modules};
use support::process::drive;
use support::{BIN, MIB, random_bytes};
use tenax_testkit::{FaultProxy, Rng, TestServer};

/// How long one run of the Node client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// A few MiB and a random tail, so that the last chunk is short.
fn odd_sized_data(rng: &mut Rng) -> Vec<u8> {
    support::odd_sized_data(rng, MIB)
}

/// Runs `node tus_upload.mjs PARAMS`; panics with the client's output unless
/// it exits 0 and prints `"ok": true` (its request/response trace is in the
/// test's stderr). Returns the printed JSON.
fn run_client(params: &Value) -> Value {
    let mode = params["mode"].as_str().unwrap_or("?");
    let mut command = node_driver(&peers_node_modules(), "tus_upload.mjs");
    command.arg(params.to_string());
    drive(command, &format!("tus_upload.mjs {mode}"), CLIENT_TIMEOUT).ok()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a runtime")
}

/// A `GET`: the status and the body.
fn fetch(url: &str) -> (u16, Vec<u8>) {
    runtime().block_on(get(url))
}

/// `GET /files/NAME` must return the source.
fn assert_published(server: &TestServer, name: &str, data: &[u8]) {
    let (status, stored) = fetch(&server.url(&format!("/files/{name}")));
    assert_eq!(status, 200, "GET /files/{name}");
    assert_same_bytes(&format!("/files/{name}"), &stored, data);
}

/// The upload id at the end of an upload URL, which must be ours.
fn upload_id(server: &TestServer, url: &str) -> String {
    let prefix = server.url("/uploads/");
    let id = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("upload URL {url} is not under {prefix}"));
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "odd upload id in {url}"
    );
    id.to_owned()
}

struct Fixture {
    server: TestServer,
    _dir: tempfile::TempDir,
    file: PathBuf,
    data: Vec<u8>,
}

fn fixture(data: Vec<u8>) -> Fixture {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let file = dir.path().join("source.bin");
    std::fs::write(&file, &data).expect("cannot write the source file");
    Fixture {
        server,
        _dir: dir,
        file,
        data,
    }
}

fn params(endpoint: &str, file: &Path, name: &str, mode: &str) -> Value {
    json!({
        "endpoint": endpoint,
        "file": file.to_str().expect("temporary paths are UTF-8"),
        "name": name,
        "mode": mode,
    })
}

/// Runs one named mode against a fresh server and checks `/files/NAME`.
fn named_mode(mode: &str) -> (Fixture, Value) {
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(odd_sized_data(&mut rng));
    let name = format!("tus-js-{mode}.bin");
    let report = run_client(&params(&fx.server.url("/uploads"), &fx.file, &name, mode));
    upload_id(
        &fx.server,
        report["url"].as_str().expect("report has a url"),
    );
    assert_eq!(
        report["size"].as_u64(),
        Some(fx.data.len() as u64),
        "{report}"
    );
    assert_published(&fx.server, &name, &fx.data);
    (fx, report)
}

#[test]
fn plain_chunked_upload() {
    let (fx, report) = named_mode("plain");
    assert_eq!(report["offset"].as_u64(), Some(fx.data.len() as u64));
    // 1 MiB chunks: four PATCHes for 3 MiB and a tail.
    assert_eq!(report["requests"]["PATCH 204"], json!(4), "{report}");
}

#[test]
fn resume_after_abort_with_a_new_upload_object() {
    let (_fx, report) = named_mode("resume");
    assert_eq!(report["firstUrl"], report["url"], "{report}");
    let resumed = report["resumedFrom"].as_u64().unwrap_or(0);
    assert!(resumed > 0, "the second run did not resume: {report}");
    assert_eq!(report["requests"]["POST 201"], json!(1), "{report}");
}

/// 24 MiB and a tail through a proxy that cuts every connection after 1 to
/// 4 MiB from the client; tus-js-client must HEAD, resume and finish.
fn cut_mode(name: &str, chunk_size: Value, options: Value) {
    let mut rng = Rng::from_env_or_os();
    let len = 24 * MIB + rng.between(1, MIB - 1);
    let fx = fixture(random_bytes(&mut rng, len as usize));
    let runtime = runtime();
    let proxy = runtime.block_on(FaultProxy::start(
        fx.server.addr(),
        (MIB, 4 * MIB),
        rng.clone(),
    ));
    let endpoint = format!("http://{}/uploads", proxy.addr());
    let mut request = params(&endpoint, &fx.file, name, "cut");
    request["chunkSize"] = chunk_size;
    request["options"] = options;
    let report = run_client(&request);
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    eprintln!("proxy: {cuts} cuts; client: {report}");
    assert!(cuts >= 5, "the proxy cut only {cuts} connections");
    assert_eq!(report["offset"].as_u64(), Some(len), "{report}");
    if request["options"]["protocol"].is_string() {
        // The IETF modes: every answer's Upload-Offset, through the cuts.
        let appends = check_upload_offsets(&report, len, false);
        assert!(appends > 0, "no append was checked: {report}");
    }
    let url = report["url"].as_str().expect("report has a url");
    assert!(url.starts_with(&format!("http://{}/uploads/", proxy.addr())));
    let id = url.rsplit('/').next().unwrap_or_default();
    let (status, published) = fetch(&fx.server.url(&format!("/files/{name}")));
    if request["options"]["protocol"].is_string() && status != 200 {
        // The IETF modes may leave the file unnamed (see `ietf_mode`).
        assert_stored(&fx.server, id, &fx.data);
    } else {
        assert_eq!(status, 200, "GET /files/{name}");
        assert_same_bytes(&format!("/files/{name}"), &published, &fx.data);
    }
    drop(proxy);
}

#[test]
fn upload_through_cutting_proxy_in_one_patch() {
    // One PATCH for everything: every cut lands mid-body, and the client
    // must resume from what tenax kept of the interrupted request.
    cut_mode("tus-js-cut-one.bin", json!("Infinity"), json!({}));
}

#[test]
fn upload_through_cutting_proxy_in_chunks() {
    // 1 MiB PATCHes on kept-alive connections: cuts also land in headers
    // and between requests.
    cut_mode("tus-js-cut-chunks.bin", json!(MIB), json!({}));
}

#[test]
fn ietf_draft_05_through_cutting_proxy() {
    cut_mode(
        "tus-js-cut-ietf.bin",
        json!(4 * MIB),
        json!({"protocol": "ietf-draft-05"}),
    );
}

#[test]
fn parallel_uploads_concatenate() {
    let (fx, report) = named_mode("parallel");
    // tus-js-client sends the metadata on the final upload only.
    let partials = report["partials"].as_array().expect("partial URLs");
    assert_eq!(partials.len(), 3, "{report}");
    for partial in partials {
        upload_id(&fx.server, partial.as_str().expect("a partial URL"));
    }
    assert_eq!(report["requests"]["POST 201"], json!(4), "{report}");
}

#[test]
fn creation_with_upload() {
    let (fx, report) = named_mode("creation-with-upload");
    assert_eq!(report["offset"].as_u64(), Some(fx.data.len() as u64));
    // The POST carried the first MiB: three PATCHes remain.
    assert_eq!(report["requests"]["PATCH 204"], json!(3), "{report}");
}

#[test]
fn deferred_length_from_a_stream() {
    let (fx, report) = named_mode("deferred");
    assert_eq!(report["offset"].as_u64(), Some(fx.data.len() as u64));
    let sent_at = report["lengthSentAt"].as_array().expect("lengthSentAt");
    assert_eq!(sent_at.len(), 1, "Upload-Length sent once: {report}");
}

#[test]
fn deferred_length_ending_on_a_chunk_boundary() {
    // The data ends exactly on a chunk boundary. tus-js-client 4.3.1 stalls
    // on a Readable stream of such a length (tus/tus-js-client#779, a client
    // bug), so the bytes go in as a Buffer: the length rides on the last
    // full chunk's PATCH.
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(random_bytes(&mut rng, (3 * MIB) as usize));
    let name = "tus-js-deferred-even.bin";
    let mut request = params(&fx.server.url("/uploads"), &fx.file, name, "deferred");
    request["input"] = json!("buffer");
    let report = run_client(&request);
    assert_eq!(report["offset"].as_u64(), Some(3 * MIB), "{report}");
    assert_eq!(report["lengthSentAt"], json!([2 * MIB]), "{report}");
    assert_published(&fx.server, name, &fx.data);
}

#[test]
fn terminate_mid_upload() {
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(odd_sized_data(&mut rng));
    let name = "tus-js-terminate.bin";
    let report = run_client(&params(
        &fx.server.url("/uploads"),
        &fx.file,
        name,
        "terminate",
    ));
    upload_id(
        &fx.server,
        report["url"].as_str().expect("report has a url"),
    );
    assert_eq!(report["deleteStatus"], json!(204), "{report}");
    let head = report["headAfterDelete"].as_u64().unwrap_or(0);
    assert!(head == 404 || head == 410, "{report}");
    let (status, _) = fetch(&fx.server.url(&format!("/files/{name}")));
    assert_eq!(status, 404, "a terminated upload must not be published");
}

/// `DATA/uploads/ID.bin` must hold the source (an unnamed upload).
fn assert_stored(server: &TestServer, id: &str, data: &[u8]) {
    let path = server.data_dir().join(format!("uploads/{id}.bin"));
    let stored = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("not published and cannot read {}: {e}", path.display()));
    assert_same_bytes(&path.display().to_string(), &stored, data);
}

/// Checks the `Upload-Offset` of every answer of an IETF run (the
/// `exchanges` the script reports): each append's answer carries the offset,
/// which is the request's offset plus the chunk sent (`strict`, on a clean
/// link), or between the request's offset and that (through a cutting
/// proxy); every append starts where the server last said; no offset ever
/// goes back; the last one is the size. Returns the number of appends checked.
fn check_upload_offsets(report: &Value, size: u64, strict: bool) -> usize {
    let chunk = report["chunkSize"].as_u64().unwrap_or(u64::MAX);
    let exchanges = report["exchanges"]
        .as_array()
        .unwrap_or_else(|| panic!("the script reported no exchanges: {report}"));
    let number = |value: &Value, what: &str, index: usize| -> Option<u64> {
        value.as_str().map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("exchange {index}: {what} {text:?}: {report}"))
        })
    };
    // The offset the server last reported, when the client knows it.
    let mut known: Option<u64> = None;
    let mut acked = 0u64;
    let mut appends = 0;
    for (index, exchange) in exchanges.iter().enumerate() {
        let method = exchange["method"].as_str().unwrap_or("?");
        let Some(status) = exchange["status"].as_u64() else {
            assert!(
                !strict,
                "exchange {index} ({method}) got no answer: {report}"
            );
            known = None;
            continue;
        };
        let answered = number(&exchange["responseOffset"], "Upload-Offset", index);
        if !(200..300).contains(&status) {
            assert!(
                !strict,
                "exchange {index}: {method} answered {status}: {report}"
            );
            known = answered;
            continue;
        }
        let offset = answered.unwrap_or_else(|| {
            panic!("exchange {index}: {method} {status} without Upload-Offset: {report}")
        });
        assert!(
            offset >= acked && offset <= size,
            "exchange {index}: {method} reported {offset} after {acked} was acknowledged (size {size}): {report}"
        );
        match method {
            "PATCH" => {
                let from = number(&exchange["requestOffset"], "request Upload-Offset", index)
                    .unwrap_or_else(|| panic!("exchange {index}: PATCH without Upload-Offset"));
                if let Some(known) = known {
                    assert_eq!(
                        from, known,
                        "exchange {index}: the append did not start where the server said: {report}"
                    );
                }
                let whole = from.saturating_add(chunk).min(size);
                if strict {
                    assert_eq!(
                        offset, whole,
                        "exchange {index}: PATCH at {from} answered Upload-Offset {offset}: {report}"
                    );
                } else {
                    assert!(
                        (from..=whole).contains(&offset),
                        "exchange {index}: PATCH at {from} answered Upload-Offset {offset}: {report}"
                    );
                }
                appends += 1;
            }
            // The creation request: an append too when it carries data.
            "POST" => {
                assert!(
                    offset <= chunk.min(size),
                    "exchange {index}: the creation answered Upload-Offset {offset}: {report}"
                );
                appends += usize::from(offset > 0);
            }
            _ => {}
        }
        known = Some(offset);
        acked = offset;
    }
    assert_eq!(
        acked, size,
        "the last Upload-Offset is not the size: {report}"
    );
    appends
}

/// The IETF draft modes: tus-js-client sends the tus `Upload-Metadata` (and
/// `Upload-Length`) along, but no `Content-Disposition`, so the file may stay
/// unnamed; then the bytes are checked in `DATA/uploads/ID.bin`.
fn ietf_mode(mode: &str, interop: &str, extra: &[(&str, Value)]) -> Value {
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(odd_sized_data(&mut rng));
    let name = format!("tus-js-{mode}.bin");
    let mut request = params(&fx.server.url("/uploads"), &fx.file, &name, mode);
    for (key, value) in extra {
        request[*key] = value.clone();
    }
    let report = run_client(&request);
    let post = report["postRequest"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let run_interop = post
        .get("upload-draft-interop-version")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(run_interop, json!(interop), "{report}");
    assert_eq!(
        report["postStatus"].as_u64().map(|s| s / 100),
        Some(2),
        "{report}"
    );
    assert_eq!(report["offset"].as_u64(), Some(fx.data.len() as u64));
    let appends = check_upload_offsets(&report, fx.data.len() as u64, true);
    assert!(appends > 0, "no append was checked: {report}");
    let id = upload_id(
        &fx.server,
        report["url"].as_str().expect("report has a url"),
    );
    let (status, published) = fetch(&fx.server.url(&format!("/files/{name}")));
    if status == 200 {
        assert_same_bytes(&format!("/files/{name}"), &published, &fx.data);
    } else {
        assert_stored(&fx.server, &id, &fx.data);
    }
    report
}

#[test]
fn ietf_draft_03_interop_5() {
    ietf_mode("ietf-03", "5", &[]);
}

#[test]
fn ietf_draft_05_interop_6() {
    ietf_mode("ietf-05", "6", &[]);
}

#[test]
fn ietf_draft_05_whole_file_in_the_creation_request() {
    // uploadDataDuringCreation with no chunk size: one POST with
    // `Upload-Complete: ?1` and the whole body.
    let report = ietf_mode(
        "ietf-05",
        "6",
        &[
            ("chunkSize", json!("Infinity")),
            ("options", json!({"uploadDataDuringCreation": true})),
        ],
    );
    assert_eq!(
        report["postRequest"]["upload-complete"],
        json!("?1"),
        "{report}"
    );
    assert_eq!(
        report["requests"].as_object().map(|r| r.len()),
        Some(1),
        "{report}"
    );
}

#[test]
fn ietf_draft_03_creation_with_upload() {
    let report = ietf_mode(
        "ietf-03",
        "5",
        &[("options", json!({"uploadDataDuringCreation": true}))],
    );
    assert_eq!(
        report["postRequest"]["upload-complete"],
        json!("?0"),
        "{report}"
    );
}

#[test]
fn ietf_draft_05_resume_after_abort() {
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(odd_sized_data(&mut rng));
    let mut request = params(&fx.server.url("/uploads"), &fx.file, "unused.bin", "resume");
    request["options"] = json!({"protocol": "ietf-draft-05"});
    let report = run_client(&request);
    assert!(report["resumedFrom"].as_u64().unwrap_or(0) > 0, "{report}");
    let id = upload_id(
        &fx.server,
        report["url"].as_str().expect("report has a url"),
    );
    assert_stored(&fx.server, &id, &fx.data);
}

#[test]
fn override_patch_method() {
    // `overridePatchMethod`: POST + `X-HTTP-Method-Override: PATCH`.
    let mut rng = Rng::from_env_or_os();
    let fx = fixture(odd_sized_data(&mut rng));
    let name = "tus-js-override.bin";
    let mut request = params(&fx.server.url("/uploads"), &fx.file, name, "plain");
    request["options"] = json!({"overridePatchMethod": true});
    let report = run_client(&request);
    assert_eq!(report["requests"]["POST 204"], json!(4), "{report}");
    assert_published(&fx.server, name, &fx.data);
}

/// The offset check itself: it accepts a clean run and refuses an append
/// answered with an offset that is not what was sent, or none.
#[test]
fn the_upload_offset_check_catches_a_wrong_append_answer() {
    let exchange = |method: &str, from: Option<&str>, answered: Option<&str>| {
        json!({"method": method, "status": if method == "POST" { 201 } else { 204 },
               "requestOffset": from, "requestComplete": null, "responseOffset": answered})
    };
    let report = |exchanges: Vec<Value>| json!({"chunkSize": 4, "exchanges": exchanges});
    let good = report(vec![
        exchange("POST", None, Some("0")),
        exchange("PATCH", Some("0"), Some("4")),
        exchange("PATCH", Some("4"), Some("6")),
    ]);
    assert_eq!(check_upload_offsets(&good, 6, true), 2);
    let wrong = [
        // The second append's answer claims less than was sent.
        report(vec![
            exchange("POST", None, Some("0")),
            exchange("PATCH", Some("0"), Some("4")),
            exchange("PATCH", Some("4"), Some("5")),
        ]),
        // No Upload-Offset on an append's answer.
        report(vec![
            exchange("POST", None, Some("0")),
            exchange("PATCH", Some("0"), None),
            exchange("PATCH", Some("4"), Some("6")),
        ]),
        // An answer going back.
        report(vec![
            exchange("POST", None, Some("0")),
            exchange("PATCH", Some("0"), Some("4")),
            exchange("HEAD", None, Some("2")),
            exchange("PATCH", Some("2"), Some("6")),
        ]),
    ];
    for (index, report) in wrong.iter().enumerate() {
        let caught = std::panic::catch_unwind(|| check_upload_offsets(report, 6, true));
        assert!(caught.is_err(), "case {index} passed the check");
    }
}
