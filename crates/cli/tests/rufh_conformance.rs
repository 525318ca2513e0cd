//! Conformance of the IETF "Resumable Uploads for HTTP" dialect
//! (docs/protocol.md §3) against the real `tenax serve` binary: cases 56–71 of
//! docs/protocol.md §5, and an upload that switches between RUFH and tus.
//!
//! Every test starts its own server; sizes are small and every loop is
//! bounded in count and time.
//!
//! One file on purpose: one test per conformance case, in case order, so that
//! the file reads as the checklist of docs/protocol.md §5 (and one test binary
//! builds faster than several).

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use support::http::{
    Resp, assert_not_published, assert_problem, assert_upload_location, connect, download,
    paced_request, path_of, raw_exchange, read_all_heads, request, upload_entries,
};
use support::{BIN, random_bytes};
use tenax_testkit::{Rng, TestServer};
use tokio::io::AsyncWriteExt as _;

const PARTIAL_UPLOAD: &str = "application/partial-upload";
const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// The interop version these tests speak unless they say otherwise.
const V: &str = "9";

// ---------------------------------------------------------------------------
// RUFH helpers
// ---------------------------------------------------------------------------

/// `Upload-Limit` is a dictionary holding `min-size=0` (at least).
fn assert_limit(resp: &Resp) {
    let limit = resp
        .header("upload-limit")
        .unwrap_or_else(|| panic!("no Upload-Limit: {}", resp.describe()));
    assert!(
        limit.split(',').any(|member| member.trim() == "min-size=0"),
        "Upload-Limit {limit:?} lacks min-size=0"
    );
}

fn assert_complete_flag(resp: &Resp, complete: bool) {
    assert_eq!(
        resp.header("upload-complete"),
        Some(if complete { "?1" } else { "?0" }),
        "Upload-Complete: {}",
        resp.describe()
    );
}

/// Progress headers: `Upload-Offset`, `Upload-Complete`, echoed version.
fn assert_progress(resp: &Resp, offset: u64, complete: bool, version: &str) {
    assert_eq!(
        resp.number("upload-offset"),
        offset,
        "Upload-Offset: {}",
        resp.describe()
    );
    assert_complete_flag(resp, complete);
    assert_eq!(
        resp.header("upload-draft-interop-version"),
        Some(version),
        "interop version not echoed: {}",
        resp.describe()
    );
}

/// A RUFH request with `Upload-Draft-Interop-Version: version`.
async fn rufh(
    method: Method,
    url: &str,
    version: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut all = vec![("upload-draft-interop-version", version)];
    all.extend_from_slice(headers);
    request(method, url, &all, body).await
}

/// Creation with `Upload-Complete: ?0` that must answer 201 + Location +
/// Upload-Limit; returns the upload URL.
async fn create_incomplete(
    server: &TestServer,
    version: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut all = vec![("upload-complete", "?0")];
    all.extend_from_slice(headers);
    let resp = rufh(
        Method::POST,
        &server.url("/uploads"),
        version,
        &all,
        body.to_vec(),
    )
    .await;
    assert_eq!(resp.status, 201, "creation: {}", resp.describe());
    let location = resp
        .header("location")
        .unwrap_or_else(|| panic!("201 without Location: {}", resp.describe()))
        .to_owned();
    assert_upload_location(server, &location);
    assert_limit(&resp);
    assert_progress(&resp, body.len() as u64, false, version);
    location
}

fn disposition(name: &str) -> String {
    format!("attachment; filename=\"{name}\"")
}

/// An upload named `name` with a known length, holding `prefix`.
async fn create_named(server: &TestServer, name: &str, length: u64, prefix: &[u8]) -> String {
    let disposition = disposition(name);
    let length = length.to_string();
    create_incomplete(
        server,
        V,
        &[
            ("content-disposition", &disposition),
            ("upload-length", &length),
        ],
        prefix,
    )
    .await
}

/// Offset retrieval (§3.3): 200/204 with every progress field and
/// `no-store`; returns the response.
async fn head(url: &str, version: &str) -> Resp {
    let resp = rufh(Method::HEAD, url, version, &[], Vec::new()).await;
    assert!(
        matches!(resp.status, 200 | 204),
        "HEAD: {}",
        resp.describe()
    );
    assert_eq!(
        resp.header("cache-control"),
        Some("no-store"),
        "HEAD without no-store: {}",
        resp.describe()
    );
    assert_limit(&resp);
    resp.number("upload-offset");
    assert!(
        matches!(resp.header("upload-complete"), Some("?0" | "?1")),
        "HEAD without Upload-Complete: {}",
        resp.describe()
    );
    resp
}

async fn offset_of(url: &str) -> u64 {
    head(url, V).await.number("upload-offset")
}

/// An unknown, cancelled or voided upload: 404 or 410.
fn assert_gone(resp: &Resp) {
    assert!(
        matches!(resp.status, 404 | 410),
        "expected 404 or 410: {}",
        resp.describe()
    );
}

/// An append (PATCH, `application/partial-upload`).
async fn append(
    url: &str,
    offset: u64,
    complete: bool,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Resp {
    let offset = offset.to_string();
    let mut headers = vec![
        ("content-type", PARTIAL_UPLOAD),
        ("upload-offset", offset.as_str()),
        ("upload-complete", if complete { "?1" } else { "?0" }),
    ];
    headers.extend_from_slice(extra);
    rufh(Method::PATCH, url, V, &headers, body.to_vec()).await
}

/// A successful append: 204 `?0` or 2xx `?1`, with the new offset.
fn assert_appended(resp: &Resp, offset: u64, complete: bool) {
    if complete {
        assert!(
            matches!(resp.status, 200 | 201 | 204),
            "completing append: {}",
            resp.describe()
        );
    } else {
        assert_eq!(resp.status, 204, "append: {}", resp.describe());
    }
    assert_progress(resp, offset, complete, V);
}

/// Type of a draft problem, with its members checked.
fn assert_draft_problem(resp: &Resp, status: u16, kind: &str) -> Value {
    let json = assert_problem(resp, status);
    assert_eq!(json["type"], kind, "problem type: {json}");
    json
}

/// A raw POST to `/uploads` with `headers` and `body`; every interim head
/// and the final answer.
async fn raw_create(
    server: &TestServer,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Vec<Resp>, Option<Resp>) {
    let mut text = format!(
        "POST /uploads HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        server.addr(),
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let mut stream = connect(server.addr()).await;
    stream.write_all(text.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut buffer = Vec::new();
    read_all_heads(&mut stream, &mut buffer).await
}

fn patch_head(
    addr: std::net::SocketAddr,
    path: &str,
    offset: u64,
    complete: &str,
    framing: &str,
) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nUpload-Draft-Interop-Version: {V}\r\n\
         Content-Type: {PARTIAL_UPLOAD}\r\nUpload-Offset: {offset}\r\n\
         Upload-Complete: {complete}\r\n{framing}\r\n"
    )
}

// ---------------------------------------------------------------------------
// Cases 56–71
// ---------------------------------------------------------------------------

/// Case 56: an empty `?0` POST (interop 8 and 9) → 201 + Location +
/// Upload-Limit (`min-size=0`), `Upload-Complete: ?0`, the version echoed.
#[tokio::test]
async fn case56_empty_incomplete_creation() {
    let server = TestServer::start(BIN);
    for version in ["8", "9"] {
        let url = create_incomplete(&server, version, &[], b"").await;
        let resp = head(&url, version).await;
        assert_progress(&resp, 0, false, version);
        assert!(
            resp.headers.get("upload-length").is_none(),
            "{}",
            resp.describe()
        );
    }
}

/// Case 57: a `?1` POST with a body → 104 (Location, Upload-Limit, echoed
/// interop version) before the final answer with `Upload-Complete: ?1`.
#[tokio::test]
async fn case57_complete_creation_sends_104() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(57), 50_000);
    let disposition = disposition("c57.bin");
    let (interim, last) = raw_create(
        &server,
        &[
            ("Upload-Draft-Interop-Version", V),
            ("Upload-Complete", "?1"),
            ("Content-Disposition", &disposition),
            ("Content-Type", "application/octet-stream"),
        ],
        &data,
    )
    .await;
    let resumption: Vec<&Resp> = interim.iter().filter(|resp| resp.status == 104).collect();
    let first = resumption
        .first()
        .unwrap_or_else(|| panic!("no 104 before the final answer: {interim:?}"));
    let location = first
        .header("location")
        .unwrap_or_else(|| panic!("104 without Location: {}", first.describe()));
    assert_upload_location(&server, location);
    assert_limit(first);
    assert_eq!(
        first.header("upload-draft-interop-version"),
        Some(V),
        "{}",
        first.describe()
    );
    for later in &resumption[1..] {
        assert!(
            later.headers.get("location").is_none() || later.header("location") == Some(location)
        );
    }
    let last = last.expect("a final answer");
    assert!(
        matches!(last.status, 200 | 201 | 204),
        "{}",
        last.describe()
    );
    assert_complete_flag(&last, true);
    assert_eq!(download(&server, "c57.bin").await, data);
    let resp = head(location, V).await;
    assert_progress(&resp, data.len() as u64, true, V);
}

/// Case 58: a missing or unknown interop version → never a 104; an unknown
/// version with `?1` is a conventional upload, with `?0` a 400.
#[tokio::test]
async fn case58_no_104_without_a_known_version() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(58), 10_000);
    for (version, name) in [(None, "c58a.bin"), (Some("99"), "c58b.bin")] {
        let disposition = disposition(name);
        let mut headers = vec![
            ("Upload-Complete", "?1"),
            ("Content-Disposition", disposition.as_str()),
        ];
        if let Some(version) = version {
            headers.push(("Upload-Draft-Interop-Version", version));
        }
        let (interim, last) = raw_create(&server, &headers, &data).await;
        assert!(interim.is_empty(), "interim answers: {interim:?}");
        let last = last.expect("a final answer");
        assert!(
            matches!(last.status, 200 | 201 | 204),
            "{}",
            last.describe()
        );
        assert!(
            last.headers.get("upload-draft-interop-version").is_none(),
            "an unknown version echoed: {}",
            last.describe()
        );
        assert_eq!(download(&server, name).await, data);
    }
    let entries = upload_entries(&server);
    let (interim, last) = raw_create(
        &server,
        &[
            ("Upload-Draft-Interop-Version", "99"),
            ("Upload-Complete", "?0"),
        ],
        b"",
    )
    .await;
    assert!(interim.is_empty(), "interim answers: {interim:?}");
    assert_problem(&last.expect("a final answer"), 400);
    assert_eq!(upload_entries(&server), entries, "a 400 created an upload");
}

/// Case 59: HEAD → 204 with Upload-Offset, Upload-Complete, Upload-Length
/// (if known), Upload-Limit, `no-store`.
#[tokio::test]
async fn case59_head_reports_progress() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c59.bin", 10, b"01234").await;
    let resp = head(&url, V).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert_progress(&resp, 5, false, V);
    assert_eq!(resp.number("upload-length"), 10);
    assert!(resp.body.is_empty());

    let unknown = create_incomplete(&server, "8", &[], b"abc").await;
    let resp = head(&unknown, "8").await;
    assert_progress(&resp, 3, false, "8");
    assert!(
        resp.headers.get("upload-length").is_none(),
        "{}",
        resp.describe()
    );

    assert_appended(&append(&url, 5, true, b"56789", &[]).await, 10, true);
    let resp = head(&url, V).await;
    assert_progress(&resp, 10, true, V);
    assert_eq!(resp.number("upload-length"), 10);
    assert_eq!(download(&server, "c59.bin").await, b"0123456789");

    let resp = rufh(
        Method::HEAD,
        &server.url("/uploads/0123456789abcdef0123456789abcdef"),
        V,
        &[],
        Vec::new(),
    )
    .await;
    assert_gone(&resp);
    assert!(
        resp.headers.get("upload-offset").is_none(),
        "{}",
        resp.describe()
    );
}

/// Case 60: PATCH without `application/partial-upload`, or without
/// Upload-Offset or Upload-Complete → 4xx, unchanged.
#[tokio::test]
async fn case60_append_preconditions() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c60.bin", 10, b"01234").await;
    for content_type in [
        None,
        Some("application/octet-stream"),
        Some("application/offset+octet-stream"),
    ] {
        let mut headers = vec![("upload-offset", "5"), ("upload-complete", "?0")];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let resp = rufh(Method::PATCH, &url, V, &headers, b"56".to_vec()).await;
        assert!(
            matches!(resp.status, 400 | 415),
            "content type {content_type:?}: {}",
            resp.describe()
        );
        assert_problem(&resp, resp.status);
    }
    for headers in [
        vec![("content-type", PARTIAL_UPLOAD), ("upload-complete", "?0")],
        vec![("content-type", PARTIAL_UPLOAD), ("upload-offset", "5")],
    ] {
        let resp = rufh(Method::PATCH, &url, V, &headers, b"56".to_vec()).await;
        assert_problem(&resp, 400);
    }
    let resp = head(&url, V).await;
    assert_progress(&resp, 5, false, V);
}

/// Case 61: a wrong offset → 409 + Upload-Offset + `Upload-Complete: ?0` +
/// problem JSON (`expected-offset`, `provided-offset`).
#[tokio::test]
async fn case61_mismatching_offset() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c61.bin", 10, b"01234").await;
    for provided in [0u64, 3, 6, 9] {
        let resp = append(&url, provided, false, b"x", &[]).await;
        let json = assert_draft_problem(&resp, 409, MISMATCHING_OFFSET);
        assert_eq!(json["expected-offset"], 5, "{json}");
        assert_eq!(json["provided-offset"], provided, "{json}");
        assert_progress(&resp, 5, false, V);
    }
    assert_eq!(offset_of(&url).await, 5);
    assert_appended(&append(&url, 5, true, b"56789", &[]).await, 10, true);
    assert_eq!(download(&server, "c61.bin").await, b"0123456789");
}

/// Case 62: a 16-digit Upload-Offset, or `Upload-Complete: true` → absent
/// → 400; `?1;a=b` → true.
#[tokio::test]
async fn case62_structured_field_validity() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c62.bin", 10, b"01234").await;
    for (offset, complete) in [
        ("1000000000000005", "?0"),
        ("5", "true"),
        ("5", "1"),
        ("5", "?2"),
        ("-5", "?0"),
        ("5.0", "?0"),
    ] {
        let resp = rufh(
            Method::PATCH,
            &url,
            V,
            &[
                ("content-type", PARTIAL_UPLOAD),
                ("upload-offset", offset),
                ("upload-complete", complete),
            ],
            b"56789".to_vec(),
        )
        .await;
        assert_problem(&resp, 400);
    }
    assert_eq!(offset_of(&url).await, 5);
    let resp = rufh(
        Method::PATCH,
        &url,
        V,
        &[
            ("content-type", PARTIAL_UPLOAD),
            ("upload-offset", "5"),
            ("upload-complete", "?1;a=b"),
        ],
        b"56789".to_vec(),
    )
    .await;
    assert_appended(&resp, 10, true);
    assert_eq!(download(&server, "c62.bin").await, b"0123456789");
}

/// Case 63: Upload-Length against Content-Length with `?1`, or differing
/// from the creation → 400 inconsistent-upload-length, unchanged.
#[tokio::test]
async fn case63_inconsistent_length() {
    let server = TestServer::start(BIN);
    let entries = upload_entries(&server);
    let resp = rufh(
        Method::POST,
        &server.url("/uploads"),
        V,
        &[("upload-complete", "?1"), ("upload-length", "10")],
        b"01234".to_vec(),
    )
    .await;
    assert_draft_problem(&resp, 400, INCONSISTENT_LENGTH);
    assert_eq!(upload_entries(&server), entries, "a 400 created an upload");

    let url = create_named(&server, "c63.bin", 20, b"01234").await;
    // A different length than at creation.
    let resp = append(&url, 5, false, b"56789", &[("upload-length", "30")]).await;
    assert_draft_problem(&resp, 400, INCONSISTENT_LENGTH);
    assert_eq!(offset_of(&url).await, 5);
    // Completing short of the length.
    let resp = append(&url, 5, true, b"56789", &[]).await;
    assert_draft_problem(&resp, 400, INCONSISTENT_LENGTH);
    assert_eq!(offset_of(&url).await, 5);
    // Upload-Length against offset + Content-Length on a completing append.
    let resp = append(&url, 5, true, b"56789", &[("upload-length", "20")]).await;
    assert_draft_problem(&resp, 400, INCONSISTENT_LENGTH);
    let resp = head(&url, V).await;
    assert_progress(&resp, 5, false, V);
    assert_eq!(resp.number("upload-length"), 20);
    // The upload is still usable.
    assert_appended(
        &append(&url, 5, true, b"56789abcdefghij", &[]).await,
        20,
        true,
    );
    assert_eq!(download(&server, "c63.bin").await, b"0123456789abcdefghij");
}

/// Case 64: an append past the known length is rejected, and the upload is
/// invalid afterwards.
#[tokio::test]
async fn case64_append_past_length_voids_upload() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c64.bin", 10, b"01234").await;
    let resp = append(&url, 5, false, b"56789abc", &[]).await;
    assert!((400..500).contains(&resp.status), "{}", resp.describe());
    assert_problem(&resp, resp.status);
    assert_gone(&rufh(Method::HEAD, &url, V, &[], Vec::new()).await);
    assert_gone(&append(&url, 5, true, b"56789", &[]).await);
    assert_not_published(&server, "c64.bin").await;
}

/// Case 64: the same with a chunked body (no Content-Length to check up
/// front): rejected, and the upload is invalid afterwards.
#[tokio::test]
async fn case64_chunked_append_past_length_voids_upload() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c64c.bin", 10, b"01234").await;
    let mut bytes = patch_head(
        server.addr(),
        &path_of(&url),
        5,
        "?0",
        "Transfer-Encoding: chunked\r\n",
    )
    .into_bytes();
    bytes.extend_from_slice(b"3\r\n567\r\n5\r\n89abc\r\n0\r\n\r\n");
    let resp = raw_exchange(server.addr(), &bytes)
        .await
        .expect("an answer");
    assert!((400..500).contains(&resp.status), "{}", resp.describe());
    let after = rufh(Method::HEAD, &url, V, &[], Vec::new()).await;
    assert_gone(&after);
}

/// Case 65: an empty `?1` PATCH at offset = length completes.
#[tokio::test]
async fn case65_empty_completing_append() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c65.bin", 10, b"01234").await;
    assert_appended(&append(&url, 5, false, b"56789", &[]).await, 10, false);
    let resp = head(&url, V).await;
    assert_progress(&resp, 10, false, V);
    assert_appended(&append(&url, 10, true, b"", &[]).await, 10, true);
    let resp = head(&url, V).await;
    assert_progress(&resp, 10, true, V);
    assert_eq!(download(&server, "c65.bin").await, b"0123456789");
}

/// Case 66: a completed upload: a PATCH with a body → 400; an empty one →
/// a replay of the final answer (or 410).
#[tokio::test]
async fn case66_append_to_completed_upload() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c66.bin", 10, b"01234").await;
    assert_appended(&append(&url, 5, true, b"56789", &[]).await, 10, true);
    for (offset, complete) in [(10, true), (10, false), (5, true)] {
        let resp = append(&url, offset, complete, b"more", &[]).await;
        assert_problem(&resp, 400);
    }
    let resp = append(&url, 10, true, b"", &[]).await;
    if resp.status != 410 {
        assert!(
            matches!(resp.status, 200 | 201 | 204),
            "{}",
            resp.describe()
        );
        assert_progress(&resp, 10, true, V);
    }
    let resp = head(&url, V).await;
    assert_progress(&resp, 10, true, V);
    assert_eq!(download(&server, "c66.bin").await, b"0123456789");
}

/// Case 66: the same with a chunked body (no Content-Length): a body on a
/// completed upload → 400, not a replay of the final answer.
#[tokio::test]
async fn case66_chunked_body_on_completed_upload_is_400() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, "c66c.bin", 10, b"01234").await;
    assert_appended(&append(&url, 5, true, b"56789", &[]).await, 10, true);
    let mut bytes = patch_head(
        server.addr(),
        &path_of(&url),
        10,
        "?1",
        "Transfer-Encoding: chunked\r\n",
    )
    .into_bytes();
    bytes.extend_from_slice(b"4\r\nmore\r\n0\r\n\r\n");
    let resp = raw_exchange(server.addr(), &bytes)
        .await
        .expect("an answer");
    assert_problem(&resp, 400);
    assert_eq!(download(&server, "c66c.bin").await, b"0123456789");
}

/// Streams `data` as one append from `offset` at about 50 kB/s, in a task.
fn stream_append(
    server: &TestServer,
    url: &str,
    offset: u64,
    data: Vec<u8>,
) -> tokio::task::JoinHandle<(usize, Option<Resp>)> {
    let head = patch_head(
        server.addr(),
        &path_of(url),
        offset,
        "?1",
        &format!("Content-Length: {}\r\n", data.len()),
    );
    tokio::spawn(paced_request(
        server.addr(),
        head,
        data,
        1_000,
        Duration::from_millis(20),
        Duration::from_secs(5),
    ))
}

/// Case 67: a HEAD during a streaming append aborts the append; the offset
/// it reports is persisted and the next PATCH from it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case67_head_during_append_aborts_it() {
    let server = TestServer::start(BIN);
    let total = 200_000usize;
    let data = random_bytes(&mut Rng::new(67), total);
    let url = create_named(&server, "c67.bin", total as u64, &data[..1_000]).await;
    let streaming = stream_append(&server, &url, 1_000, data[1_000..].to_vec());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let resp = head(&url, V).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the HEAD waited {:?} for the append",
        started.elapsed()
    );
    assert_progress(&resp, resp.number("upload-offset"), false, V);
    let reported = resp.number("upload-offset");
    let (sent, answer) = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the streaming append was not aborted")
        .expect("the streaming task");
    assert!(sent < total - 1_000, "the whole body was taken");
    assert!(
        (1_000..=1_000 + sent as u64).contains(&reported),
        "HEAD reported {reported} with 1000 + {sent} bytes sent"
    );
    if let Some(answer) = &answer
        && let Some(offset) = answer.header("upload-offset")
    {
        assert!(
            offset.parse::<u64>().expect("number") <= reported,
            "{}",
            answer.describe()
        );
        assert_complete_flag(answer, false);
    }
    // The reported offset holds and the next PATCH continues from it.
    assert_eq!(offset_of(&url).await, reported);
    let resp = append(&url, reported, true, &data[reported as usize..], &[]).await;
    assert_appended(&resp, total as u64, true);
    assert_eq!(download(&server, "c67.bin").await, data);
}

/// Case 68: DELETE → 204; an in-flight append is killed; the upload is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case68_delete_kills_in_flight_append() {
    let server = TestServer::start(BIN);
    let total = 200_000usize;
    let data = random_bytes(&mut Rng::new(68), total);
    let url = create_named(&server, "c68.bin", total as u64, b"").await;
    let streaming = stream_append(&server, &url, 0, data);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let resp = rufh(Method::DELETE, &url, V, &[], Vec::new()).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the DELETE waited {:?} for the append",
        started.elapsed()
    );
    let (sent, answer) = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the streaming append was not killed")
        .expect("the streaming task");
    assert!(sent < total, "the whole body was taken");
    if let Some(answer) = &answer {
        assert!(
            answer.header("upload-complete") != Some("?1"),
            "a killed append completed: {}",
            answer.describe()
        );
    }
    assert_gone(&rufh(Method::HEAD, &url, V, &[], Vec::new()).await);
    assert_gone(&append(&url, 0, true, b"x", &[]).await);
    assert_not_published(&server, "c68.bin").await;
}

/// Case 69: OPTIONS → Upload-Limit + Accept-Patch containing
/// application/partial-upload.
#[tokio::test]
async fn case69_options() {
    let server = TestServer::start(BIN);
    for headers in [vec![], vec![("upload-draft-interop-version", V)]] {
        let resp = request(
            Method::OPTIONS,
            &server.url("/uploads"),
            &headers,
            Vec::new(),
        )
        .await;
        assert!(matches!(resp.status, 200 | 204), "{}", resp.describe());
        assert_limit(&resp);
        let accept = resp
            .header("accept-patch")
            .unwrap_or_else(|| panic!("no Accept-Patch: {}", resp.describe()));
        assert!(
            accept
                .split(',')
                .any(|media| media.trim().starts_with(PARTIAL_UPLOAD)),
            "Accept-Patch {accept:?}"
        );
    }
}

/// Case 70: interop 3 (`Upload-Incomplete`) → inverted semantics, or a
/// clean 400 that changes nothing.
#[tokio::test]
async fn case70_interop_3() {
    let server = TestServer::start(BIN);
    let entries = upload_entries(&server);
    for incomplete in ["?1", "?0"] {
        let resp = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                ("upload-draft-interop-version", "3"),
                ("upload-incomplete", incomplete),
            ],
            b"abc".to_vec(),
        )
        .await;
        assert_problem(&resp, 400);
    }
    assert_eq!(
        upload_entries(&server),
        entries,
        "interop 3 created an upload"
    );

    let url = create_named(&server, "c70.bin", 10, b"01234").await;
    let resp = request(
        Method::PATCH,
        &url,
        &[
            ("upload-draft-interop-version", "3"),
            ("upload-incomplete", "?0"),
            ("upload-offset", "5"),
        ],
        b"56789".to_vec(),
    )
    .await;
    let after = head(&url, V).await;
    if resp.status / 100 == 2 {
        // Inverted semantics: `Upload-Incomplete: ?0` completes.
        assert_progress(&after, 10, true, V);
        assert_eq!(download(&server, "c70.bin").await, b"0123456789");
    } else {
        assert_problem(&resp, 400);
        assert_progress(&after, 5, false, V);
    }
}

/// Case 71: a tus-js-client `ietf-draft-05` run (interop 6; and
/// `ietf-draft-03`, interop 5) → every answer carries `Upload-Offset`.
#[tokio::test]
async fn case71_tus_js_client_ietf_runs() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(71), 25_000);
    for (version, content_type, name) in [
        ("6", PARTIAL_UPLOAD, "c71-05.bin"),
        ("5", "application/offset+octet-stream", "c71-03.bin"),
    ] {
        // Creation as tus-js-client sends it: the tus fields, no body.
        let disposition = disposition(name);
        let resp = rufh(
            Method::POST,
            &server.url("/uploads"),
            version,
            &[
                ("upload-complete", "?0"),
                ("upload-length", "25000"),
                ("upload-metadata", "filename YzcxLmJpbg=="),
                ("content-disposition", &disposition),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.describe());
        let url = resp.header("location").expect("Location").to_owned();
        assert_upload_location(&server, &url);
        assert_progress(&resp, 0, false, version);
        // Chunks of 10000; the last one completes.
        let mut offset = 0usize;
        for _ in 0..3 {
            let end = (offset + 10_000).min(data.len());
            let last = end == data.len();
            let offset_text = offset.to_string();
            let resp = rufh(
                Method::PATCH,
                &url,
                version,
                &[
                    ("content-type", content_type),
                    ("upload-offset", &offset_text),
                    ("upload-complete", if last { "?1" } else { "?0" }),
                ],
                data[offset..end].to_vec(),
            )
            .await;
            assert!(resp.status / 100 == 2, "{}", resp.describe());
            assert_progress(&resp, end as u64, last, version);
            // A resume HEAD in between also reports the offset.
            let resp = head(&url, version).await;
            assert_progress(&resp, end as u64, last, version);
            offset = end;
        }
        assert_eq!(offset, data.len());
        assert_eq!(download(&server, name).await, data);
    }
}

// ---------------------------------------------------------------------------
// Across dialects
// ---------------------------------------------------------------------------

/// RUFH creation `?0`, a tus HEAD showing the same offset, a RUFH append
/// `?1`; the stored bytes are exact.
#[tokio::test]
async fn cross_rufh_then_tus_head_then_rufh() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(102), 30_000);
    let disposition = disposition("x-rufh.bin");
    let url = create_incomplete(
        &server,
        V,
        &[("content-disposition", &disposition)],
        &data[..12_000],
    )
    .await;
    let resp = request(
        Method::HEAD,
        &url,
        &[("tus-resumable", "1.0.0")],
        Vec::new(),
    )
    .await;
    assert!(matches!(resp.status, 200 | 204), "{}", resp.describe());
    assert_eq!(resp.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(resp.number("upload-offset"), 12_000, "{}", resp.describe());
    assert_eq!(
        resp.header("upload-defer-length"),
        Some("1"),
        "{}",
        resp.describe()
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let resp = append(&url, 12_000, true, &data[12_000..], &[]).await;
    assert_appended(&resp, 30_000, true);
    assert_eq!(download(&server, "x-rufh.bin").await, data);
    let resp = head(&url, V).await;
    assert_progress(&resp, 30_000, true, V);
}
