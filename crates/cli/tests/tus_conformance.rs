//! Conformance of the tus 1.0.0 dialect (docs/protocol.md §2) against the real
//! `tenax serve` binary: cases 29–54 of docs/protocol.md §5, checksums,
//! termination during a PATCH, kill -9, and uploads that switch between
//! tus and the seed dialect.
//!
//! Every test starts its own server; sizes are small and every loop is
//! bounded in count and time.
//!
//! One file on purpose: one test per conformance case, in case order, so that
//! the file reads as the checklist of docs/protocol.md §5 (and one test binary
//! builds faster than several).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use support::http::{
    Resp, age_record, assert_not_published, assert_problem, assert_upload_location, chunked,
    connect, download, path_of, raw_exchange, read_response, read_response_within, request,
    upload_entries,
};
use support::{BIN, random_bytes};
use tenax_testkit::{Rng, TestServer};
use tokio::io::AsyncWriteExt as _;

const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// The largest upload the server accepts by default (`Tus-Max-Size`).
const MAX_SIZE: u64 = 1 << 40;

// ---------------------------------------------------------------------------
// tus helpers
// ---------------------------------------------------------------------------

/// Every tus response but OPTIONS' carries `Tus-Resumable: 1.0.0`.
fn assert_tus(resp: &Resp) {
    assert_eq!(
        resp.header("tus-resumable"),
        Some("1.0.0"),
        "tus response without Tus-Resumable: 1.0.0: {}",
        resp.describe()
    );
}

/// A tus request (with `Tus-Resumable: 1.0.0`); checks the answer's
/// `Tus-Resumable`.
async fn tus(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let mut all = vec![("tus-resumable", "1.0.0")];
    all.extend_from_slice(headers);
    let resp = request(method, url, &all, body).await;
    assert_tus(&resp);
    resp
}

/// `Upload-Metadata` from pairs (an empty value gives a bare key).
fn metadata(pairs: &[(&str, &[u8])]) -> String {
    pairs
        .iter()
        .map(|(key, value)| {
            if value.is_empty() {
                (*key).to_owned()
            } else {
                format!("{key} {}", BASE64.encode(value))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn filename(name: &str) -> String {
    metadata(&[("filename", name.as_bytes())])
}

/// A tus `POST /uploads` with `headers` and no body.
async fn post(server: &TestServer, headers: &[(&str, &str)]) -> Resp {
    tus(Method::POST, &server.url("/uploads"), headers, Vec::new()).await
}

/// `POST /uploads` that must answer 201 with an absolute `Location`.
async fn create(server: &TestServer, headers: &[(&str, &str)]) -> String {
    let resp = post(server, headers).await;
    assert_created(server, &resp)
}

fn assert_created(server: &TestServer, resp: &Resp) -> String {
    assert_eq!(resp.status, 201, "creation: {}", resp.describe());
    let location = resp
        .header("location")
        .unwrap_or_else(|| panic!("201 without Location: {}", resp.describe()))
        .to_owned();
    assert_upload_location(server, &location);
    location
}

/// An upload of `length` bytes named `name`.
async fn create_named(server: &TestServer, length: u64, name: &str) -> String {
    let length = length.to_string();
    let meta = filename(name);
    create(
        server,
        &[("upload-length", &length), ("upload-metadata", &meta)],
    )
    .await
}

/// A fresh server and a 20-byte upload named `name` that holds `12345`.
async fn holding_five_of_twenty(name: &str) -> (TestServer, String) {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 20, name).await;
    assert_patched(&patch(&url, 0, b"12345", &[]).await, 5, false);
    (server, url)
}

/// `HEAD` with tus headers.
async fn head(url: &str) -> Resp {
    tus(Method::HEAD, url, &[], Vec::new()).await
}

/// The offset reported by HEAD, after checking §2.2's HEAD answer.
async fn offset_of(url: &str) -> u64 {
    let resp = head(url).await;
    assert_head(&resp);
    resp.number("upload-offset")
}

fn assert_head(resp: &Resp) {
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
    assert!(
        resp.headers.contains_key("upload-length")
            != resp.headers.contains_key("upload-defer-length"),
        "HEAD must carry exactly one of Upload-Length, Upload-Defer-Length: {}",
        resp.describe()
    );
    if let Some(defer) = resp.header("upload-defer-length") {
        assert_eq!(defer, "1", "{}", resp.describe());
    }
    resp.number("upload-offset");
}

/// An unknown, terminated or expired upload: 404 or 410, no `Upload-Offset`.
fn assert_gone(resp: &Resp) {
    assert!(
        matches!(resp.status, 404 | 410),
        "expected 404 or 410: {}",
        resp.describe()
    );
    assert!(
        resp.headers.get("upload-offset").is_none(),
        "a gone upload reports Upload-Offset: {}",
        resp.describe()
    );
}

/// A tus PATCH of `body` at `offset`.
async fn patch(url: &str, offset: u64, body: &[u8], extra: &[(&str, &str)]) -> Resp {
    let offset = offset.to_string();
    let mut headers = vec![("content-type", OFFSET_STREAM), ("upload-offset", &offset)];
    headers.extend_from_slice(extra);
    tus(Method::PATCH, url, &headers, body.to_vec()).await
}

/// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_imf_fixdate(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split(' ').collect();
    if parts.len() != 6 || parts[5] != "GMT" || !parts[0].ends_with(',') || text.len() != 29 {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant), for years ≥ 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `Upload-Expires` is an IMF-fixdate in the future (within the 7-day TTL).
fn assert_expires(resp: &Resp) {
    let value = resp
        .header("upload-expires")
        .unwrap_or_else(|| panic!("no Upload-Expires: {}", resp.describe()));
    let at = parse_imf_fixdate(value)
        .unwrap_or_else(|| panic!("Upload-Expires {value:?} is not an IMF-fixdate"));
    let now = now();
    assert!(
        at > now && at <= now + 8 * 86_400,
        "Upload-Expires {value:?} is not within the next 8 days"
    );
}

/// A successful PATCH: 204, the new `Upload-Offset`, `Upload-Expires`
/// while the upload is still open.
fn assert_patched(resp: &Resp, offset: u64, complete: bool) {
    assert_eq!(resp.status, 204, "PATCH: {}", resp.describe());
    assert_eq!(
        resp.number("upload-offset"),
        offset,
        "PATCH offset: {}",
        resp.describe()
    );
    if !complete {
        assert_expires(resp);
    }
}

/// Sends `data[from..]` in PATCHes of `step` bytes; checks every answer.
async fn finish(url: &str, data: &[u8], from: u64, step: usize) {
    let mut offset = from as usize;
    for _ in 0..=data.len() / step.max(1) + 1 {
        if offset == data.len() {
            return;
        }
        let end = (offset + step).min(data.len());
        let resp = patch(url, offset as u64, &data[offset..end], &[]).await;
        assert_patched(&resp, end as u64, end == data.len());
        offset = end;
    }
    panic!("finish did not terminate");
}

/// A raw tus PATCH head on `path`.
fn patch_head(
    addr: std::net::SocketAddr,
    path: &str,
    offset: u64,
    framing: &str,
    extra: &str,
) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: {OFFSET_STREAM}\r\nUpload-Offset: {offset}\r\n{framing}{extra}\r\n"
    )
}

fn checksum(algorithm: &str, data: &[u8]) -> String {
    let digest = match algorithm {
        "sha1" => Sha1::digest(data).to_vec(),
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha256" => Sha256::digest(data).to_vec(),
        "crc32" => crc32fast::hash(data).to_be_bytes().to_vec(),
        other => panic!("no algorithm {other}"),
    };
    format!("{algorithm} {}", BASE64.encode(digest))
}

// ---------------------------------------------------------------------------
// Cases 29–54
// ---------------------------------------------------------------------------

/// Case 29: OPTIONS → 204 with Tus-Version, Tus-Extension, Tus-Max-Size,
/// Tus-Checksum-Algorithm; a `Tus-Resumable` in the request is ignored.
#[tokio::test]
async fn case29_options_advertises_capabilities() {
    let server = TestServer::start(BIN);
    let id_url = create_named(&server, 10, "c29.bin").await;
    for (url, headers) in [
        (server.url("/uploads"), vec![]),
        (server.url("/uploads"), vec![("tus-resumable", "0.2.2")]),
        (id_url.clone(), vec![]),
    ] {
        let resp = request(Method::OPTIONS, &url, &headers, Vec::new()).await;
        assert!(
            matches!(resp.status, 200 | 204),
            "OPTIONS {url}: {}",
            resp.describe()
        );
        let versions: Vec<&str> = resp
            .header("tus-version")
            .unwrap_or_else(|| panic!("no Tus-Version: {}", resp.describe()))
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(versions.first(), Some(&"1.0.0"), "{}", resp.describe());
        let extensions: Vec<&str> = resp
            .header("tus-extension")
            .unwrap_or_else(|| panic!("no Tus-Extension: {}", resp.describe()))
            .split(',')
            .map(str::trim)
            .collect();
        for extension in [
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "checksum-trailer",
            "termination",
            "concatenation",
        ] {
            assert!(
                extensions.contains(&extension),
                "Tus-Extension lacks {extension}: {}",
                resp.describe()
            );
        }
        assert_eq!(resp.number("tus-max-size"), MAX_SIZE, "{}", resp.describe());
        let algorithms: Vec<&str> = resp
            .header("tus-checksum-algorithm")
            .unwrap_or_else(|| panic!("no Tus-Checksum-Algorithm: {}", resp.describe()))
            .split(',')
            .map(str::trim)
            .collect();
        for algorithm in ["sha1", "md5", "sha256", "crc32"] {
            assert!(
                algorithms.contains(&algorithm),
                "Tus-Checksum-Algorithm lacks {algorithm}: {}",
                resp.describe()
            );
        }
    }
    // OPTIONS changed nothing.
    assert_eq!(offset_of(&id_url).await, 0);
}

fn assert_version_refused(resp: &Resp) {
    assert_problem(resp, 412);
    assert_tus(resp);
    assert_eq!(
        resp.header("tus-version")
            .map(|v| v.split(',').any(|v| v.trim() == "1.0.0")),
        Some(true),
        "412 without Tus-Version: {}",
        resp.describe()
    );
}

/// Case 30: `Tus-Resumable: 0.2.2` → 412 + Tus-Version, nothing created or
/// changed (POST, PATCH, HEAD).
#[tokio::test]
async fn case30_unsupported_tus_version_is_412() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 20, "c30.bin").await;
    assert_patched(&patch(&url, 0, b"hello", &[]).await, 5, false);
    let entries = upload_entries(&server);

    let old = [("tus-resumable", "0.2.2")];
    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[old[0], ("upload-length", "100")],
        Vec::new(),
    )
    .await;
    assert_version_refused(&resp);
    assert!(
        resp.headers.get("location").is_none(),
        "{}",
        resp.describe()
    );
    assert_eq!(upload_entries(&server), entries, "a 412 created an upload");

    let resp = request(
        Method::PATCH,
        &url,
        &[
            old[0],
            ("content-type", OFFSET_STREAM),
            ("upload-offset", "5"),
        ],
        b"world".to_vec(),
    )
    .await;
    assert_version_refused(&resp);
    let resp = request(Method::HEAD, &url, &old, Vec::new()).await;
    assert_eq!(resp.status, 412, "{}", resp.describe());
    assert!(
        resp.headers.get("tus-version").is_some(),
        "{}",
        resp.describe()
    );
    assert_eq!(offset_of(&url).await, 5, "a 412 changed the upload");
}

/// Case 30: a DELETE with `Tus-Resumable: 0.2.2` is refused (412) and does
/// not terminate the upload.
#[tokio::test]
async fn case30_delete_with_unsupported_version_is_412() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 20, "c30d.bin").await;
    assert_patched(&patch(&url, 0, b"hello", &[]).await, 5, false);
    let resp = request(
        Method::DELETE,
        &url,
        &[("tus-resumable", "0.2.2")],
        Vec::new(),
    )
    .await;
    let after = head(&url).await;
    assert_version_refused(&resp);
    assert_head(&after);
    assert_eq!(after.number("upload-offset"), 5, "{}", after.describe());
}

/// Case 30: a tus-shaped request without `Tus-Resumable` (creation with
/// `Upload-Length`, a PATCH of an offset stream) → 412 + Tus-Version,
/// nothing created or changed.
#[tokio::test]
async fn case30_missing_tus_resumable_is_412() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 20, "c30m.bin").await;
    assert_patched(&patch(&url, 0, b"hello", &[]).await, 5, false);
    let entries = upload_entries(&server);

    let resp = request(
        Method::PATCH,
        &url,
        &[("content-type", OFFSET_STREAM), ("upload-offset", "5")],
        b"world".to_vec(),
    )
    .await;
    let offset = offset_of(&url).await;
    assert_eq!(
        offset, 5,
        "a PATCH without Tus-Resumable changed the upload"
    );
    assert_version_refused(&resp);

    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-length", "100"),
            ("upload-metadata", &filename("x")),
        ],
        Vec::new(),
    )
    .await;
    let created = upload_entries(&server) - entries;
    assert_version_refused(&resp);
    assert_eq!(created, 0, "a POST without Tus-Resumable created an upload");
}

/// Case 31: `Upload-Length: 100` → 201 + Location; HEAD → offset 0, length
/// 100, `no-store`.
#[tokio::test]
async fn case31_create_then_head() {
    let server = TestServer::start(BIN);
    let resp = post(&server, &[("upload-length", "100")]).await;
    let url = assert_created(&server, &resp);
    assert_expires(&resp);
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-offset"), 0);
    assert_eq!(resp.number("upload-length"), 100);
    assert!(resp.headers.get("upload-defer-length").is_none());
    assert!(resp.body.is_empty());
}

/// Case 32: `Upload-Length: 0` → complete at once (an empty file).
#[tokio::test]
async fn case32_zero_length_is_complete_at_once() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 0, "c32.bin").await;
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-offset"), 0);
    assert_eq!(resp.number("upload-length"), 0);
    assert_eq!(download(&server, "c32.bin").await, Vec::<u8>::new());
    // Complete: a body is refused, an empty PATCH is fine.
    assert_problem(&patch(&url, 0, b"x", &[]).await, 413);
    let resp = patch(&url, 0, b"", &[]).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert_eq!(resp.number("upload-offset"), 0);
}

/// Case 33: both length headers, `Upload-Defer-Length: 2`, or neither → 400.
#[tokio::test]
async fn case33_length_header_combinations() {
    let server = TestServer::start(BIN);
    let entries = upload_entries(&server);
    for headers in [
        vec![("upload-length", "10"), ("upload-defer-length", "1")],
        vec![("upload-defer-length", "2")],
        vec![("upload-defer-length", "0")],
        vec![],
    ] {
        let resp = post(&server, &headers).await;
        assert_problem(&resp, 400);
        assert!(
            resp.headers.get("location").is_none(),
            "{}",
            resp.describe()
        );
    }
    assert_eq!(upload_entries(&server), entries, "a 400 created an upload");
}

/// Case 34: a length of 2^64, `-1` or `1e3` → 400; above Tus-Max-Size → 413.
#[tokio::test]
async fn case34_bad_and_oversized_lengths() {
    let server = TestServer::start(BIN);
    let entries = upload_entries(&server);
    for length in ["18446744073709551616", "-1", "1e3", "+5", "0x10", ""] {
        let resp = post(&server, &[("upload-length", length)]).await;
        assert_problem(&resp, 400);
    }
    let over = (MAX_SIZE + 1).to_string();
    let resp = post(&server, &[("upload-length", &over)]).await;
    assert_problem(&resp, 413);
    assert_eq!(
        upload_entries(&server),
        entries,
        "a refused POST created an upload"
    );
    // Exactly the maximum is accepted.
    create(&server, &[("upload-length", &MAX_SIZE.to_string())]).await;
}

/// Case 35: PATCH with the wrong Content-Type → 415; without Upload-Offset → 400.
#[tokio::test]
async fn case35_patch_content_type_and_missing_offset() {
    let (_server, url) = holding_five_of_twenty("c35.bin").await;
    for content_type in [
        Some("application/octet-stream"),
        Some("text/plain"),
        Some("application/partial-upload"),
        None,
    ] {
        let mut headers = vec![("upload-offset", "5")];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let resp = tus(Method::PATCH, &url, &headers, b"abc".to_vec()).await;
        assert_problem(&resp, 415);
    }
    let resp = tus(
        Method::PATCH,
        &url,
        &[("content-type", OFFSET_STREAM)],
        b"abc".to_vec(),
    )
    .await;
    assert_problem(&resp, 400);
    assert_eq!(offset_of(&url).await, 5);
}

/// Case 36: `Upload-Offset` of `+5`, `0x5`, `5.0` → 400, unchanged.
#[tokio::test]
async fn case36_malformed_offsets_are_400() {
    let (_server, url) = holding_five_of_twenty("c36.bin").await;
    for offset in ["+5", "0x5", "5.0", "-5", "5e0", "18446744073709551621"] {
        let resp = tus(
            Method::PATCH,
            &url,
            &[("content-type", OFFSET_STREAM), ("upload-offset", offset)],
            b"abc".to_vec(),
        )
        .await;
        assert_problem(&resp, 400);
    }
    assert_eq!(offset_of(&url).await, 5);
}

/// Case 37: a lower or higher `Upload-Offset` → 409, unchanged.
#[tokio::test]
async fn case37_offset_mismatch_is_409() {
    let (server, url) = holding_five_of_twenty("c37.bin").await;
    for offset in [0, 4, 6, 19] {
        let resp = patch(&url, offset, b"abc", &[]).await;
        assert_problem(&resp, 409);
    }
    assert_eq!(offset_of(&url).await, 5);
    // The right offset still works, and the bytes are exact.
    assert_patched(&patch(&url, 5, &[b'x'; 15], &[]).await, 20, true);
    let mut expected = b"12345".to_vec();
    expected.extend_from_slice(&[b'x'; 15]);
    assert_eq!(download(&server, "c37.bin").await, expected);
}

/// Case 38: offset + Content-Length > length → 413 before any body byte
/// is read (the head alone gets the answer).
#[tokio::test]
async fn case38_past_length_is_413_before_reading() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 100, "c38.bin").await;
    let path = path_of(&url);
    for (offset, length) in [(0u64, 101u64), (50, 51), (50, 1_000_000)] {
        if offset == 50 && offset_of(&url).await == 0 {
            assert_patched(&patch(&url, 0, &[7; 50], &[]).await, 50, false);
        }
        let mut stream = connect(server.addr()).await;
        let framing = format!("Content-Length: {length}\r\n");
        stream
            .write_all(patch_head(server.addr(), &path, offset, &framing, "").as_bytes())
            .await
            .expect("write head");
        let mut buffer = Vec::new();
        // No body byte is sent: the answer must come from the head alone.
        let resp = read_response_within(&mut stream, &mut buffer, Duration::from_secs(5), false)
            .await
            .unwrap_or_else(|| panic!("no answer to a PATCH past the length ({offset}+{length})"));
        assert_problem(&resp, 413);
        assert_tus(&resp);
        assert_eq!(offset_of(&url).await, offset);
    }
}

/// Case 39: a chunked PATCH never pushes the offset past the length.
#[tokio::test]
async fn case39_chunked_patch_stops_at_length() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 10, "c39.bin").await;
    let body = chunked(&[b"0123456", b"789abcdef", b"ghijklmn"], "");
    let mut bytes = patch_head(
        server.addr(),
        &path_of(&url),
        0,
        "Transfer-Encoding: chunked\r\n",
        "",
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    let resp = raw_exchange(server.addr(), &bytes)
        .await
        .expect("an answer to the chunked PATCH");
    assert_tus(&resp);
    assert!(
        (400..500).contains(&resp.status),
        "a chunked body past the length was accepted: {}",
        resp.describe()
    );
    if let Some(offset) = resp.header("upload-offset") {
        assert!(
            offset.parse::<u64>().expect("number") <= 10,
            "{}",
            resp.describe()
        );
    }
    let head = head(&url).await;
    assert_head(&head);
    let held = head.number("upload-offset");
    assert!(held <= 10, "offset {held} past the length 10");
    assert_eq!(head.number("upload-length"), 10, "{}", head.describe());
    if held == 10 {
        assert_eq!(download(&server, "c39.bin").await, b"0123456789");
    }
}

/// Case 40: an interrupted PATCH keeps the prefix, visible in HEAD; the
/// upload then resumes from there.
#[tokio::test]
async fn case40_interrupted_patch_keeps_prefix() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(40), 100_000);
    let url = create_named(&server, 100_000, "c40.bin").await;
    let mut stream = connect(server.addr()).await;
    stream
        .write_all(
            patch_head(
                server.addr(),
                &path_of(&url),
                0,
                "Content-Length: 100000\r\n",
                "",
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    stream.write_all(&data[..40_000]).await.expect("write part");
    stream.shutdown().await.expect("half-close");
    let mut buffer = Vec::new();
    let answer = read_response(&mut stream, &mut buffer).await;
    drop(stream);
    if let Some(answer) = &answer
        && let Some(offset) = answer.header("upload-offset")
    {
        assert_eq!(offset, "40000", "{}", answer.describe());
    }
    let held = offset_of(&url).await;
    assert_eq!(held, 40_000, "the received prefix was not kept");
    finish(&url, &data, held, 30_000).await;
    assert_eq!(download(&server, "c40.bin").await, data);
}

/// Case 41: a complete upload: an empty PATCH at the final offset → 204;
/// with a body → 413.
#[tokio::test]
async fn case41_patch_on_complete_upload() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 10, "c41.bin").await;
    assert_patched(&patch(&url, 0, b"0123456789", &[]).await, 10, true);
    let resp = patch(&url, 10, b"", &[]).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert_eq!(resp.number("upload-offset"), 10);
    assert_problem(&patch(&url, 10, b"x", &[]).await, 413);
    assert_problem(&patch(&url, 0, b"0123456789", &[]).await, 409);
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-offset"), 10);
    assert_eq!(resp.number("upload-length"), 10);
    assert_eq!(download(&server, "c41.bin").await, b"0123456789");
}

/// Case 42: POST + `X-HTTP-Method-Override: PATCH` is a PATCH; a GET with
/// an override to DELETE is not a DELETE.
#[tokio::test]
async fn case42_method_override() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 10, "c42.bin").await;
    let resp = tus(
        Method::POST,
        &url,
        &[
            ("x-http-method-override", "PATCH"),
            ("content-type", OFFSET_STREAM),
            ("upload-offset", "0"),
        ],
        b"01234".to_vec(),
    )
    .await;
    assert_patched(&resp, 5, false);
    assert_eq!(offset_of(&url).await, 5);

    // A GET is not a tus request: only the override's effect matters.
    let resp = request(
        Method::GET,
        &url,
        &[
            ("tus-resumable", "1.0.0"),
            ("x-http-method-override", "DELETE"),
        ],
        Vec::new(),
    )
    .await;
    assert_ne!(resp.status, 204, "GET became a DELETE: {}", resp.describe());
    assert!(resp.status >= 400, "{}", resp.describe());
    assert_eq!(
        offset_of(&url).await,
        5,
        "the GET override touched the upload"
    );

    // The override also finishes the upload.
    let resp = tus(
        Method::POST,
        &url,
        &[
            ("x-http-method-override", "PATCH"),
            ("content-type", OFFSET_STREAM),
            ("upload-offset", "5"),
        ],
        b"56789".to_vec(),
    )
    .await;
    assert_patched(&resp, 10, true);
    assert_eq!(download(&server, "c42.bin").await, b"0123456789");
}

/// Case 43: creation-with-upload → 201 + `Upload-Offset` = bytes stored.
#[tokio::test]
async fn case43_creation_with_upload() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(43), 20_000);
    let meta = filename("c43.bin");
    let resp = tus(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-length", "20000"),
            ("upload-metadata", &meta),
            ("content-type", OFFSET_STREAM),
        ],
        data[..8_000].to_vec(),
    )
    .await;
    let url = assert_created(&server, &resp);
    assert_eq!(resp.number("upload-offset"), 8_000, "{}", resp.describe());
    assert_eq!(offset_of(&url).await, 8_000);
    finish(&url, &data, 8_000, 8_000).await;
    assert_eq!(download(&server, "c43.bin").await, data);

    // The whole file in the POST, with Expect: 100-continue on a raw socket.
    let meta = filename("c43b.bin");
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Length: 20000\r\n\
         Upload-Metadata: {meta}\r\nContent-Type: {OFFSET_STREAM}\r\nContent-Length: 20000\r\n\
         Expect: 100-continue\r\n\r\n",
        server.addr()
    );
    let mut stream = connect(server.addr()).await;
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut buffer = Vec::new();
    let first = read_response_within(&mut stream, &mut buffer, Duration::from_secs(3), false).await;
    if let Some(first) = &first {
        assert_eq!(
            first.status,
            100,
            "an answer before the body: {}",
            first.describe()
        );
    }
    stream.write_all(&data).await.expect("write body");
    let resp = read_response(&mut stream, &mut buffer)
        .await
        .expect("an answer to the creation");
    assert_created(&server, &resp);
    assert_tus(&resp);
    assert_eq!(resp.number("upload-offset"), 20_000, "{}", resp.describe());
    assert_eq!(download(&server, "c43b.bin").await, data);
    // Without the offset content type, a body is not an upload (no bytes stored).
    let resp = post(&server, &[("upload-length", "20")]).await;
    let url = assert_created(&server, &resp);
    assert_eq!(offset_of(&url).await, 0);
}

/// Case 44: deferred length: a PATCH sets it; a different later value →
/// 400; a value below the offset → 400.
#[tokio::test]
async fn case44_deferred_length() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(44), 30);
    let meta = filename("c44.bin");
    let url = create(
        &server,
        &[("upload-defer-length", "1"), ("upload-metadata", &meta)],
    )
    .await;
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.header("upload-defer-length"), Some("1"));
    assert_eq!(resp.number("upload-offset"), 0);

    assert_patched(&patch(&url, 0, &data[..10], &[]).await, 10, false);
    // Below the offset.
    assert_problem(&patch(&url, 10, b"", &[("upload-length", "5")]).await, 400);
    let resp = head(&url).await;
    assert_eq!(
        resp.header("upload-defer-length"),
        Some("1"),
        "{}",
        resp.describe()
    );
    assert_eq!(resp.number("upload-offset"), 10);

    // The length is set by a PATCH.
    assert_patched(
        &patch(&url, 10, &data[10..20], &[("upload-length", "30")]).await,
        20,
        false,
    );
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-length"), 30, "{}", resp.describe());
    assert!(resp.headers.get("upload-defer-length").is_none());
    // A different value later.
    assert_problem(
        &patch(&url, 20, &data[20..], &[("upload-length", "40")]).await,
        400,
    );
    let resp = head(&url).await;
    assert_eq!(resp.number("upload-offset"), 20);
    assert_eq!(resp.number("upload-length"), 30);
    // The same value again is fine.
    assert_patched(
        &patch(&url, 20, &data[20..], &[("upload-length", "30")]).await,
        30,
        true,
    );
    assert_eq!(download(&server, "c44.bin").await, data);
}

/// Case 45: deferred: an empty PATCH with `Upload-Length` = offset completes.
#[tokio::test]
async fn case45_empty_patch_with_length_completes() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(45), 16);
    let meta = filename("c45.bin");
    let url = create(
        &server,
        &[("upload-defer-length", "1"), ("upload-metadata", &meta)],
    )
    .await;
    assert_patched(&patch(&url, 0, &data, &[]).await, 16, false);
    let resp = patch(&url, 16, b"", &[("upload-length", "16")]).await;
    assert_patched(&resp, 16, true);
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-offset"), 16);
    assert_eq!(resp.number("upload-length"), 16);
    assert_eq!(download(&server, "c45.bin").await, data);
    assert_problem(&patch(&url, 16, b"x", &[]).await, 413);
}

fn parse_echoed_metadata(value: &str) -> std::collections::BTreeMap<String, String> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let pair = pair.trim();
            match pair.split_once(' ') {
                Some((key, value)) => (key.to_owned(), value.trim().to_owned()),
                None => (pair.to_owned(), String::new()),
            }
        })
        .collect()
}

/// Case 46: metadata: an empty header, a bare `key`, `key ` → OK; HEAD
/// echoes the pairs.
#[tokio::test]
async fn case46_metadata_forms_are_accepted_and_echoed() {
    let server = TestServer::start(BIN);
    // An empty header (tuspy).
    let url = create(&server, &[("upload-length", "5"), ("upload-metadata", "")]).await;
    let resp = head(&url).await;
    assert_head(&resp);
    if let Some(value) = resp.header("upload-metadata") {
        assert!(value.trim().is_empty(), "{}", resp.describe());
    }

    let name = BASE64.encode("c46.bin");
    let kind = BASE64.encode("text/plain");
    let value = format!("filename {name},flag,empty ,filetype {kind}");
    let url = create(
        &server,
        &[("upload-length", "5"), ("upload-metadata", &value)],
    )
    .await;
    let resp = head(&url).await;
    assert_head(&resp);
    let echoed = parse_echoed_metadata(
        resp.header("upload-metadata")
            .unwrap_or_else(|| panic!("HEAD without Upload-Metadata: {}", resp.describe())),
    );
    let expected: std::collections::BTreeMap<String, String> = [
        ("filename", name.as_str()),
        ("flag", ""),
        ("empty", ""),
        ("filetype", kind.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(echoed, expected, "{}", resp.describe());
    // The filename is the published name.
    assert_patched(&patch(&url, 0, b"hello", &[]).await, 5, true);
    assert_eq!(download(&server, "c46.bin").await, b"hello");
}

/// Case 47: metadata with a duplicate key, a key with a space, or bad
/// base64 → 400, nothing created.
#[tokio::test]
async fn case47_bad_metadata_is_400() {
    let server = TestServer::start(BIN);
    let entries = upload_entries(&server);
    for value in [
        "a YQ==,a Yg==",
        "my key YQ==",
        "a !!!",
        "a YQ== Yg==",
        ",",
        "a YQ==,,b Yg==",
    ] {
        let resp = post(
            &server,
            &[("upload-length", "5"), ("upload-metadata", value)],
        )
        .await;
        assert_problem(&resp, 400);
        assert!(
            resp.headers.get("location").is_none(),
            "{}",
            resp.describe()
        );
    }
    assert_eq!(
        upload_entries(&server),
        entries,
        "bad metadata created an upload"
    );
}

/// Case 48: PATCH responses carry `Upload-Expires`; after expiry → 404/410.
#[tokio::test]
async fn case48_expiration() {
    let mut server = TestServer::start(BIN);
    let url = create_named(&server, 20, "c48.bin").await;
    let resp = patch(&url, 0, b"12345", &[]).await;
    assert_patched(&resp, 5, false);
    assert_expires(&resp);

    server.kill9();
    age_record(&server, &url);
    server.restart();
    let resp = head(&url).await;
    assert_gone(&resp);
    let resp = patch(&url, 5, b"67890", &[]).await;
    assert_gone(&resp);
    assert_problem(&resp, resp.status);
}

/// Case 48: `Upload-Expires` is on every PATCH response (tus expiration:
/// "MUST be included in every PATCH response if the upload is going to
/// expire"), error answers included.
#[tokio::test]
async fn case48_error_patch_responses_carry_upload_expires() {
    let (_server, url) = holding_five_of_twenty("c48e.bin").await;
    let resp = patch(&url, 3, b"xx", &[]).await;
    assert_problem(&resp, 409);
    assert_expires(&resp);
}

/// Case 49: a checksum match (every offered algorithm) → 204.
#[tokio::test]
async fn case49_checksum_match_each_algorithm() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(49), 4_000);
    let url = create_named(&server, 4_000, "c49.bin").await;
    for (index, algorithm) in ["sha1", "md5", "sha256", "crc32"].iter().enumerate() {
        let (from, to) = (index * 1_000, (index + 1) * 1_000);
        let sum = checksum(algorithm, &data[from..to]);
        let resp = patch(
            &url,
            from as u64,
            &data[from..to],
            &[("upload-checksum", &sum)],
        )
        .await;
        assert_patched(&resp, to as u64, to == 4_000);
    }
    assert_eq!(download(&server, "c49.bin").await, data);
}

/// Case 49: a checksum mismatch → 460, the chunk discarded, the offset
/// unchanged; then the right chunk is accepted.
#[tokio::test]
async fn case49_checksum_mismatch_is_460() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(491), 3_000);
    let url = create_named(&server, 3_000, "c49m.bin").await;
    assert_patched(&patch(&url, 0, &data[..1_000], &[]).await, 1_000, false);
    for algorithm in ["sha1", "md5", "sha256", "crc32"] {
        let wrong = checksum(algorithm, b"something else");
        let resp = patch(
            &url,
            1_000,
            &data[1_000..2_000],
            &[("upload-checksum", &wrong)],
        )
        .await;
        assert_problem(&resp, 460);
        assert_eq!(
            offset_of(&url).await,
            1_000,
            "a {algorithm} mismatch moved the offset"
        );
    }
    let sum = checksum("sha1", &data[1_000..]);
    assert_patched(
        &patch(&url, 1_000, &data[1_000..], &[("upload-checksum", &sum)]).await,
        3_000,
        true,
    );
    assert_eq!(download(&server, "c49m.bin").await, data);
}

/// Case 49: an unknown algorithm, or a malformed header → 400, unchanged.
#[tokio::test]
async fn case49_unknown_or_malformed_checksum_is_400() {
    let server = TestServer::start(BIN);
    let url = create_named(&server, 10, "c49u.bin").await;
    assert_patched(&patch(&url, 0, b"01234", &[]).await, 5, false);
    let sha1 = checksum("sha1", b"56789");
    let bare = sha1.split(' ').nth(1).expect("digest").to_owned();
    for value in [
        format!("sha512 {}", BASE64.encode([0u8; 64])),
        format!("SHA1 {bare}"),
        format!("blake3 {}", BASE64.encode([0u8; 32])),
        "sha1".to_owned(),
        "sha1 !!!notbase64".to_owned(),
        format!("sha1 {}", BASE64.encode([0u8; 16])),
        bare,
    ] {
        let resp = patch(&url, 5, b"56789", &[("upload-checksum", &value)]).await;
        assert_problem(&resp, 400);
        assert_eq!(
            offset_of(&url).await,
            5,
            "Upload-Checksum {value:?} moved the offset"
        );
    }
}

/// Case 50: a trailer checksum on a chunked PATCH is verified; a mismatch
/// → 460 and the chunk is discarded.
#[tokio::test]
async fn case50_trailer_checksum() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(50), 3_000);
    let url = create_named(&server, 3_000, "c50.bin").await;
    let path = path_of(&url);
    let send = async |offset: u64, piece: &[u8], trailer: &str| -> Resp {
        let mut bytes = patch_head(
            server.addr(),
            &path,
            offset,
            "Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n",
            "",
        )
        .into_bytes();
        let half = piece.len() / 2;
        bytes.extend_from_slice(&chunked(
            &[&piece[..half], &piece[half..]],
            &format!("Upload-Checksum: {trailer}\r\n"),
        ));
        let resp = raw_exchange(server.addr(), &bytes)
            .await
            .expect("an answer to the chunked PATCH");
        assert_tus(&resp);
        resp
    };
    // A match.
    let resp = send(0, &data[..1_000], &checksum("sha1", &data[..1_000])).await;
    assert_patched(&resp, 1_000, false);
    assert_eq!(offset_of(&url).await, 1_000);
    // A mismatch: discarded.
    let resp = send(1_000, &data[1_000..2_000], &checksum("sha1", b"other")).await;
    assert_problem(&resp, 460);
    assert_eq!(
        offset_of(&url).await,
        1_000,
        "a mismatching trailer kept the chunk"
    );
    // Another algorithm, matching.
    let resp = send(
        1_000,
        &data[1_000..2_000],
        &checksum("sha256", &data[1_000..2_000]),
    )
    .await;
    assert_patched(&resp, 2_000, false);
    let resp = send(2_000, &data[2_000..], &checksum("crc32", b"nope")).await;
    assert_problem(&resp, 460);
    assert_eq!(offset_of(&url).await, 2_000);
    let resp = send(2_000, &data[2_000..], &checksum("md5", &data[2_000..])).await;
    assert_patched(&resp, 3_000, true);
    assert_eq!(download(&server, "c50.bin").await, data);
}

/// Case 51: DELETE → 204, then 404/410 for everything; finished uploads
/// can be terminated too.
#[tokio::test]
async fn case51_delete_then_gone() {
    let (server, url) = holding_five_of_twenty("c51.bin").await;
    let resp = tus(Method::DELETE, &url, &[], Vec::new()).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert!(resp.body.is_empty());
    assert_gone(&head(&url).await);
    assert_gone(&patch(&url, 5, b"67890", &[]).await);
    assert_gone(&patch(&url, 0, b"67890", &[]).await);
    assert_gone(&tus(Method::DELETE, &url, &[], Vec::new()).await);
    assert_not_published(&server, "c51.bin").await;

    // A finished upload.
    let url = create_named(&server, 3, "c51b.bin").await;
    assert_patched(&patch(&url, 0, b"abc", &[]).await, 3, true);
    let resp = tus(Method::DELETE, &url, &[], Vec::new()).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    assert_gone(&head(&url).await);
}

/// Case 51: a DELETE during a streaming PATCH aborts the PATCH: the DELETE
/// answers 204 promptly, the PATCH ends early, the upload is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case51_delete_aborts_streaming_patch() {
    let server = TestServer::start(BIN);
    let total = 200_000usize;
    let data = random_bytes(&mut Rng::new(51), total);
    let url = create_named(&server, total as u64, "c51s.bin").await;
    let raw_head = patch_head(
        server.addr(),
        &path_of(&url),
        0,
        &format!("Content-Length: {total}\r\n"),
        "",
    );
    // 1000 bytes every 20 ms: about 4 s for the whole body.
    let streaming = tokio::spawn(support::http::paced_request(
        server.addr(),
        raw_head,
        data,
        1_000,
        Duration::from_millis(20),
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let resp = tus(Method::DELETE, &url, &[], Vec::new()).await;
    assert_eq!(
        resp.status,
        204,
        "DELETE during a PATCH: {}",
        resp.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the DELETE waited {:?} for the PATCH",
        started.elapsed()
    );
    let (sent, answer) = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the streaming PATCH was not aborted")
        .expect("the streaming task");
    assert!(sent < total, "the whole body was taken ({sent} bytes)");
    if let Some(answer) = &answer {
        assert_tus(answer);
        if let Some(offset) = answer.header("upload-offset") {
            assert!(
                offset.parse::<usize>().expect("number") < total,
                "{}",
                answer.describe()
            );
        }
    }
    assert_gone(&head(&url).await);
    assert_not_published(&server, "c51s.bin").await;
}

/// A finished partial upload of `data`; returns its URL.
async fn partial(server: &TestServer, data: &[u8]) -> String {
    let length = data.len().to_string();
    let url = create(
        server,
        &[("upload-length", &length), ("upload-concat", "partial")],
    )
    .await;
    let resp = head(&url).await;
    assert_eq!(
        resp.header("upload-concat"),
        Some("partial"),
        "{}",
        resp.describe()
    );
    if !data.is_empty() {
        assert_patched(&patch(&url, 0, data, &[]).await, data.len() as u64, true);
    }
    url
}

/// Case 52: concatenation with absolute URLs → final length = sum; HEAD
/// echoes `Upload-Concat`; a part named twice → 400 (issue 19: repeats
/// multiplied the bytes written), and nothing is created.
#[tokio::test]
async fn case52_concatenation() {
    let server = TestServer::start(BIN);
    let mut rng = Rng::new(52);
    let parts: Vec<Vec<u8>> = [3_000, 1, 5_000]
        .iter()
        .map(|len| random_bytes(&mut rng, *len))
        .collect();
    let mut urls = Vec::new();
    for part in &parts {
        urls.push(partial(&server, part).await);
    }
    let meta = filename("c52.bin");
    let repeated = format!("final;{} {} {}", urls[0], urls[1], urls[0]);
    let before = upload_entries(&server);
    let resp = post(
        &server,
        &[("upload-concat", &repeated), ("upload-metadata", &meta)],
    )
    .await;
    assert_problem(&resp, 400);
    assert_eq!(
        upload_entries(&server),
        before,
        "a refused final was created"
    );
    let concat = format!("final;{} {} {}", urls[0], urls[1], urls[2]);
    let resp = post(
        &server,
        &[("upload-concat", &concat), ("upload-metadata", &meta)],
    )
    .await;
    let url = assert_created(&server, &resp);
    let mut expected = Vec::new();
    for index in [0, 1, 2] {
        expected.extend_from_slice(&parts[index]);
    }
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-length"), expected.len() as u64);
    assert_eq!(resp.number("upload-offset"), expected.len() as u64);
    let echoed = resp
        .header("upload-concat")
        .unwrap_or_else(|| panic!("final HEAD without Upload-Concat: {}", resp.describe()));
    let listed: Vec<String> = echoed
        .strip_prefix("final;")
        .unwrap_or_else(|| panic!("Upload-Concat {echoed:?}"))
        .split(' ')
        .filter(|url| !url.is_empty())
        .map(path_of)
        .collect();
    let wanted: Vec<String> = [0, 1, 2].iter().map(|i| path_of(&urls[*i])).collect();
    assert_eq!(listed, wanted, "{}", resp.describe());
    assert_eq!(download(&server, "c52.bin").await, expected);
    // Relative URLs work as well.
    let concat = format!("final;{} {}", path_of(&urls[2]), path_of(&urls[1]));
    let url = create(&server, &[("upload-concat", &concat)]).await;
    let resp = head(&url).await;
    assert_eq!(resp.number("upload-length"), 5_001, "{}", resp.describe());
}

/// Case 53: a final listing an unfinished partial → 400; an unknown
/// partial → 404; a foreign or `../` URL → 400/404; a non-partial → 400.
#[tokio::test]
async fn case53_bad_concatenations() {
    let server = TestServer::start(BIN);
    let done = partial(&server, b"done").await;
    let unfinished = create(
        &server,
        &[("upload-length", "10"), ("upload-concat", "partial")],
    )
    .await;
    assert_patched(&patch(&unfinished, 0, b"half", &[]).await, 4, false);
    let plain = create_named(&server, 2, "c53plain.bin").await;
    assert_patched(&patch(&plain, 0, b"ok", &[]).await, 2, true);
    let entries = upload_entries(&server);

    let unknown = server.url("/uploads/0123456789abcdef0123456789abcdef");
    let cases: Vec<(String, &[u16])> = vec![
        (format!("final;{done} {unknown}"), &[404]),
        (format!("final;{done} {plain}"), &[400]),
        (
            format!("final;{done} http://evil.example/uploads/x"),
            &[400, 404],
        ),
        (format!("final;{done} /files/c53plain.bin"), &[400, 404]),
        (
            format!("final;{done} /uploads/../files/c53plain.bin"),
            &[400, 404],
        ),
        (
            format!("final;{done} ../uploads/{}", &path_of(&done)[9..]),
            &[400, 404],
        ),
        ("final;".to_owned(), &[400]),
        ("something".to_owned(), &[400]),
    ];
    for (value, statuses) in cases {
        let resp = post(&server, &[("upload-concat", &value)]).await;
        assert!(
            statuses.contains(&resp.status),
            "Upload-Concat {value:?}: expected {statuses:?}: {}",
            resp.describe()
        );
        assert_problem(&resp, resp.status);
        assert!(
            resp.headers.get("location").is_none(),
            "{}",
            resp.describe()
        );
    }
    assert_eq!(
        upload_entries(&server),
        entries,
        "a refused final created an upload"
    );
    assert_eq!(offset_of(&unfinished).await, 4);
}

/// Case 53 with concatenation-unfinished, which tenax offers: a final
/// upload may list a partial still in progress. It shows no offset until the
/// last part completes, then it is assembled: length = sum, exact bytes.
#[tokio::test]
async fn case53_unfinished_partial_completes_the_final_later() {
    let server = TestServer::start(BIN);
    let done = partial(&server, b"done").await;
    let unfinished = create(
        &server,
        &[("upload-length", "10"), ("upload-concat", "partial")],
    )
    .await;
    assert_patched(&patch(&unfinished, 0, b"half", &[]).await, 4, false);
    let concat = format!("final;{done} {unfinished}");
    let url = create(&server, &[("upload-concat", &concat)]).await;

    let pending = head(&url).await;
    assert_eq!(pending.status, 200, "{}", pending.describe());
    assert!(
        pending.headers.get("upload-offset").is_none(),
        "{}",
        pending.describe()
    );
    assert!(
        pending
            .header("upload-concat")
            .is_some_and(|value| value.starts_with("final;")),
        "{}",
        pending.describe()
    );
    assert_problem(&patch(&url, 0, b"x", &[]).await, 403);

    assert_patched(&patch(&unfinished, 4, b"-rest!", &[]).await, 10, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = head(&url).await;
        if resp.header("upload-offset") == Some("14") {
            assert_eq!(
                resp.header("upload-length"),
                Some("14"),
                "{}",
                resp.describe()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never assembled: {}",
            resp.describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = support::http::get(&url).await;
    assert_eq!((status, body.as_slice()), (200, &b"donehalf-rest!"[..]));
}

/// Case 54: PATCH to a final upload → 403; a final with `Upload-Length` or
/// a body → 400/403.
#[tokio::test]
async fn case54_final_upload_restrictions() {
    let server = TestServer::start(BIN);
    let a = partial(&server, b"abc").await;
    let b = partial(&server, b"def").await;
    let concat = format!("final;{a} {b}");
    let url = create(&server, &[("upload-concat", &concat)]).await;
    let resp = patch(&url, 6, b"", &[]).await;
    assert_problem(&resp, 403);
    let resp = patch(&url, 6, b"more", &[]).await;
    assert_problem(&resp, 403);
    assert_eq!(offset_of(&url).await, 6);

    let entries = upload_entries(&server);
    for headers in [
        vec![("upload-concat", concat.as_str()), ("upload-length", "6")],
        vec![
            ("upload-concat", concat.as_str()),
            ("upload-defer-length", "1"),
        ],
    ] {
        let resp = post(&server, &headers).await;
        assert!(matches!(resp.status, 400 | 403), "{}", resp.describe());
        assert_problem(&resp, resp.status);
    }
    let resp = tus(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-concat", concat.as_str()),
            ("content-type", OFFSET_STREAM),
        ],
        b"body".to_vec(),
    )
    .await;
    assert!(matches!(resp.status, 400 | 403), "{}", resp.describe());
    assert_problem(&resp, resp.status);
    assert_eq!(
        upload_entries(&server),
        entries,
        "a refused final created an upload"
    );
}

// ---------------------------------------------------------------------------
// Across dialects, crashes
// ---------------------------------------------------------------------------

/// Created with tus (POST + a partial PATCH), finished with seed PUTs.
#[tokio::test]
async fn cross_tus_then_seed() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(100), 50_000);
    let url = create_named(&server, 50_000, "x-tus-seed.bin").await;
    assert_patched(&patch(&url, 0, &data[..20_000], &[]).await, 20_000, false);
    // The seed dialect sees the same progress.
    let resp = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes */50000")],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 308, "{}", resp.describe());
    assert_eq!(
        resp.header("range"),
        Some("bytes=0-19999"),
        "{}",
        resp.describe()
    );
    let resp = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 20000-34999/50000")],
        data[20_000..35_000].to_vec(),
    )
    .await;
    assert_eq!(resp.status, 308, "{}", resp.describe());
    assert_eq!(resp.header("range"), Some("bytes=0-34999"));
    assert_eq!(offset_of(&url).await, 35_000);
    let resp = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 35000-49999/50000")],
        data[35_000..].to_vec(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.describe());
    assert_eq!(resp.json()["size"], "50000", "{}", resp.describe());
    assert_eq!(download(&server, "x-tus-seed.bin").await, data);
    let resp = head(&url).await;
    assert_eq!(resp.number("upload-offset"), 50_000);
}

/// A seed session (`POST /uploads` + `X-Upload-Content-Length`) shows its
/// offset to tus HEAD and is finished with a tus PATCH.
#[tokio::test]
async fn cross_seed_then_tus() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(101), 40_000);
    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("content-type", "application/json; charset=UTF-8"),
            ("x-upload-content-length", "40000"),
        ],
        br#"{"name":"x-seed-tus.bin"}"#.to_vec(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.describe());
    let url = resp.header("location").expect("Location").to_owned();
    assert_upload_location(&server, &url);
    let resp = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 0-14999/40000")],
        data[..15_000].to_vec(),
    )
    .await;
    assert_eq!(resp.status, 308, "{}", resp.describe());
    let resp = head(&url).await;
    assert_head(&resp);
    assert_eq!(resp.number("upload-offset"), 15_000);
    assert_eq!(resp.number("upload-length"), 40_000);
    assert_problem(&patch(&url, 0, &data[..15_000], &[]).await, 409);
    assert_patched(
        &patch(&url, 15_000, &data[15_000..], &[]).await,
        40_000,
        true,
    );
    assert_eq!(download(&server, "x-seed-tus.bin").await, data);
}

/// Acknowledged `Upload-Offset`s survive kill -9 and a restart, also with
/// a PATCH in flight at the kill.
#[tokio::test]
async fn kill9_keeps_acknowledged_offsets() {
    let mut server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(91), 300_000);
    let url = create_named(&server, 300_000, "c91-tus.bin").await;
    let mut acknowledged = 0u64;
    for end in [60_000u64, 120_000] {
        let resp = patch(
            &url,
            acknowledged,
            &data[acknowledged as usize..end as usize],
            &[],
        )
        .await;
        assert_patched(&resp, end, false);
        acknowledged = end;
        server.kill9();
        server.restart();
        let held = offset_of(&url).await;
        assert_eq!(
            held, acknowledged,
            "an acknowledged offset was lost to kill -9"
        );
    }
    // A PATCH in flight at the kill: at least the acknowledged bytes stay,
    // at most what was sent.
    let mut stream = connect(server.addr()).await;
    stream
        .write_all(
            patch_head(
                server.addr(),
                &path_of(&url),
                acknowledged,
                "Content-Length: 180000\r\n",
                "",
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    stream
        .write_all(&data[120_000..170_000])
        .await
        .expect("write part");
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill9();
    drop(stream);
    server.restart();
    let held = offset_of(&url).await;
    assert!(
        (acknowledged..=170_000).contains(&held),
        "held {held} after a kill with 120000 acknowledged and 170000 sent"
    );
    finish(&url, &data, held, 100_000).await;
    assert_eq!(download(&server, "c91-tus.bin").await, data);
}
