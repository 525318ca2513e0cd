//! Conformance of range downloads (docs/protocol.md §4) against the real
//! `tenax serve` binary, over real sockets on loopback: cases 72–85 of
//! docs/protocol.md §5 and the download parts of 86–87, then real clients
//! resuming (`curl -C -`, `wget -c`, `aria2c -c`, `aria2c -x4`).
//!
//! wget and aria2c are installed by `scripts/test`; a missing one fails
//! the test that needs it (never a silent pass). Every test starts its own
//! server; sizes stay small, every wait is bounded.
//!
//! One file on purpose: one test per conformance case, in case order, so that
//! the file reads as the checklist of docs/protocol.md §5 (and one test binary
//! builds faster than several).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use sha2::{Digest as _, Sha256};
use support::files::assert_same_bytes;
use support::http::{Resp, assert_problem, client, path_of, request, send};
use support::process::drive;
use support::{BIN, KIB, MIB, random_bytes, sha256_hex};
use tenax_testkit::{Rng, TestServer};

/// How long a download client may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

/// Uploads `data` whole under `name` with the seed literal form
/// (`PUT /api/upload?file=NAME` + `Content-Range`); returns the final JSON.
async fn upload(server: &TestServer, name: &str, data: &[u8]) -> serde_json::Value {
    let range = if data.is_empty() {
        "bytes */0".to_owned()
    } else {
        format!("bytes 0-{}/{}", data.len() - 1, data.len())
    };
    let resp = send(
        client()
            .put(server.url(&format!("/api/upload?file={}", encode(name))))
            .header("content-range", range)
            .header("content-type", "text/plain")
            .body(data.to_vec()),
    )
    .await;
    assert_eq!(resp.status, 200, "upload of {name}: {}", resp.describe());
    resp.json()
}

/// Percent-encodes everything but unreserved characters (for a query).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server with one published file of `len` random bytes.
async fn server_with(name: &str, len: usize) -> (TestServer, Vec<u8>, serde_json::Value) {
    let server = TestServer::start(BIN);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, len);
    let json = upload(&server, name, &data).await;
    (server, data, json)
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(Method::GET, &server.url(path), headers, Vec::new()).await
}

fn blocking<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a runtime")
        .block_on(future)
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

fn assert_full(resp: &Resp, data: &[u8], what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.describe());
    assert_eq!(
        resp.header("accept-ranges"),
        Some("bytes"),
        "{what}: {}",
        resp.describe()
    );
    assert!(
        resp.header("content-range").is_none(),
        "{what}: {}",
        resp.describe()
    );
    assert_eq!(resp.number("content-length"), data.len() as u64, "{what}");
    assert_same_bytes(what, &resp.body, data);
}

/// A single-range 206: `Content-Range: bytes f-l/total`, an exact
/// `Content-Length`, never multipart, and the bytes `data[f..=l]`.
fn assert_single(resp: &Resp, data: &[u8], first: usize, last: usize, total: &str, what: &str) {
    assert_eq!(resp.status, 206, "{what}: {}", resp.describe());
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes {first}-{last}/{total}").as_str()),
        "{what}"
    );
    assert_eq!(
        resp.number("content-length"),
        (last - first + 1) as u64,
        "{what}"
    );
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        !content_type.starts_with("multipart/"),
        "{what}: a single range as {content_type}"
    );
    assert_same_bytes(what, &resp.body, &data[first..=last]);
}

fn assert_unsatisfiable(resp: &Resp, len: usize, what: &str) {
    assert_eq!(resp.status, 416, "{what}: {}", resp.describe());
    assert_eq!(
        resp.header("content-range"),
        Some(format!("bytes */{len}").as_str()),
        "{what}"
    );
}

/// One part of a `multipart/byteranges` body.
#[derive(Debug)]
struct Part {
    content_type: String,
    content_range: String,
    first: usize,
    last: usize,
    body: Vec<u8>,
}

/// Parses a `multipart/byteranges` response back into its parts, byte
/// exact: each part's length comes from its `Content-Range`, and what
/// follows it must be the next delimiter.
fn parse_multipart(resp: &Resp) -> Vec<Part> {
    assert_eq!(resp.status, 206, "{}", resp.describe());
    assert!(
        resp.header("content-range").is_none(),
        "multipart with a top-level Content-Range: {}",
        resp.describe()
    );
    let content_type = resp.header("content-type").unwrap_or_default();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart/byteranges: {}", resp.describe()));
    assert_eq!(
        resp.number("content-length"),
        resp.body.len() as u64,
        "multipart Content-Length"
    );
    let body = &resp.body;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = support::http::find(body, &delimiter).expect("a first delimiter");
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        if body[at..].starts_with(b"--") {
            assert_eq!(&body[at..], b"--\r\n", "after the close delimiter");
            break;
        }
        assert!(body[at..].starts_with(b"\r\n"), "delimiter without CRLF");
        at += 2;
        let head_len = support::http::find(&body[at..], b"\r\n\r\n").expect("part head");
        let head = std::str::from_utf8(&body[at..at + head_len]).expect("ASCII part head");
        at += head_len + 4;
        let mut content_type = None;
        let mut content_range = None;
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(':').expect("a header line");
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value.trim().to_owned()),
                "content-range" => content_range = Some(value.trim().to_owned()),
                other => panic!("unexpected part header {other}"),
            }
        }
        let content_range = content_range.expect("a part without Content-Range");
        let (first, last) = content_range
            .strip_prefix("bytes ")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(range, _)| range.split_once('-'))
            .and_then(|(f, l)| Some((f.parse::<usize>().ok()?, l.parse::<usize>().ok()?)))
            .unwrap_or_else(|| panic!("bad part Content-Range {content_range:?}"));
        let part_body = body[at..at + (last - first + 1)].to_vec();
        at += last - first + 1;
        assert!(
            body[at..].starts_with(b"\r\n"),
            "part body not followed by CRLF"
        );
        at += 2;
        assert!(
            body[at..].starts_with(&delimiter),
            "part not followed by a delimiter"
        );
        parts.push(Part {
            content_type: content_type.expect("a part without Content-Type"),
            content_range,
            first,
            last,
            body: part_body,
        });
    }
    parts
}

// ---------------------------------------------------------------------------
// Cases 72–82: complete files
// ---------------------------------------------------------------------------

/// Case 72: GET → 200 with `Accept-Ranges`, a strong ETag (the SHA-256),
/// `Last-Modified`, `Repr-Digest`, `Content-Type` and `Content-Disposition`;
/// HEAD → the same headers and no body; the same by id.
#[tokio::test]
async fn c72_get_and_head() {
    let (server, data, json) = server_with("c72.bin", 1000).await;
    let resp = get(&server, "/files/c72.bin", &[]).await;
    assert_full(&resp, &data, "GET");
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    let digest = format!("sha-256=:{}:", BASE64.encode(Sha256::digest(&data)));
    assert_eq!(resp.header("repr-digest"), Some(digest.as_str()));
    let last_modified = resp.header("last-modified").expect("Last-Modified");
    let modified = httpdate_secs(last_modified);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(modified <= now && now - modified < 120, "{last_modified}");
    let expected_type = json["contentType"]
        .as_str()
        .unwrap_or("application/octet-stream");
    assert_eq!(resp.header("content-type"), Some(expected_type));
    assert_eq!(
        resp.header("content-disposition"),
        Some("attachment; filename=\"c72.bin\"; filename*=UTF-8''c72.bin")
    );

    let head = request(Method::HEAD, &server.url("/files/c72.bin"), &[], Vec::new()).await;
    assert_eq!(head.status, 200, "{}", head.describe());
    assert!(head.body.is_empty());
    for name in [
        "accept-ranges",
        "etag",
        "last-modified",
        "repr-digest",
        "content-type",
        "content-length",
        "content-disposition",
    ] {
        assert_eq!(head.header(name), resp.header(name), "HEAD {name}");
    }

    let id = json["id"].as_str().expect("the final JSON names the id");
    let by_id = get(&server, &format!("/uploads/{id}"), &[]).await;
    assert_full(&by_id, &data, "GET by id");
    assert_eq!(by_id.header("etag"), Some(etag.as_str()));
}

fn httpdate_secs(text: &str) -> u64 {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
    let parts: Vec<&str> = text.split([' ', ':']).collect();
    assert_eq!(parts.len(), 8, "not an IMF-fixdate: {text:?}");
    let number = |i: usize| -> u64 { parts[i].parse().unwrap_or_else(|_| panic!("{text:?}")) };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap_or_else(|| panic!("{text:?}")) as u64
        + 1;
    let (year, day) = (number(3), number(1));
    // Days from civil (Howard Hinnant's algorithm).
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
    days * 86_400 + number(4) * 3600 + number(5) * 60 + number(6)
}

/// Case 73: `bytes=0-99` → 206 `bytes 0-99/LEN`, Content-Length 100.
#[tokio::test]
async fn c73_first_hundred() {
    let (server, data, _) = server_with("c73.bin", 1000).await;
    let resp = get(&server, "/files/c73.bin", &[("range", "bytes=0-99")]).await;
    assert_single(&resp, &data, 0, 99, "1000", "bytes=0-99");
    assert_eq!(resp.header("accept-ranges"), Some("bytes"));
    assert!(resp.header("etag").is_some(), "206 without ETag");
}

/// Case 74: suffix, open and overflowing ranges are clamped.
#[tokio::test]
async fn c74_clamped() {
    let (server, data, json) = server_with("c74.bin", 1000).await;
    let id = json["id"].as_str().expect("id").to_owned();
    for path in ["/files/c74.bin".to_owned(), format!("/uploads/{id}")] {
        for (range, first, last) in [
            ("bytes=-100", 900, 999),
            ("bytes=100-", 100, 999),
            ("bytes=0-99999999999999999999999", 0, 999),
            ("bytes=-99999999999999999999999", 0, 999),
            ("bytes=990-5000", 990, 999),
            ("bytes=-1000", 0, 999),
            ("bytes=999-999", 999, 999),
        ] {
            let resp = get(&server, &path, &[("range", range)]).await;
            assert_single(
                &resp,
                &data,
                first,
                last,
                "1000",
                &format!("{path} {range}"),
            );
        }
    }
}

/// Case 75: a range starting at or past the end → 416 `bytes */LEN`.
#[tokio::test]
async fn c75_unsatisfiable() {
    let (server, _, _) = server_with("c75.bin", 1000).await;
    for range in [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=99999999999999999999999-",
        "bytes=-0",
        "bytes=5000-6000,7000-",
    ] {
        let resp = get(&server, "/files/c75.bin", &[("range", range)]).await;
        assert_unsatisfiable(&resp, 1000, range);
    }
}

/// Case 76: invalid headers and unknown units are ignored → 200 whole.
#[tokio::test]
async fn c76_ignored() {
    let (server, data, _) = server_with("c76.bin", 1000).await;
    for range in [
        "bytes=5-2",
        "bytes=",
        "bytes=abc",
        "items=0-5",
        "bytes=0-1,abc",
        "bytes 0-5",
        "bytes=0-5/10",
    ] {
        let resp = get(&server, "/files/c76.bin", &[("range", range)]).await;
        assert_full(&resp, &data, range);
    }
}

/// Case 77: `bytes=0-0,-1` → multipart with two parts, each with
/// Content-Type and Content-Range, no top-level Content-Range; several
/// parts come in request order.
#[tokio::test]
async fn c77_multipart() {
    let (server, data, json) = server_with("c77.bin", 300 * KIB as usize + 7).await;
    let len = data.len();
    let part_type = json["contentType"]
        .as_str()
        .unwrap_or("application/octet-stream");
    let resp = get(&server, "/files/c77.bin", &[("range", "bytes=0-0,-1")]).await;
    let parts = parse_multipart(&resp);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].content_range, format!("bytes 0-0/{len}"));
    assert_eq!(
        parts[1].content_range,
        format!("bytes {0}-{0}/{len}", len - 1)
    );
    for part in &parts {
        assert_eq!(part.content_type, part_type);
        assert_same_bytes(
            &part.content_range,
            &part.body,
            &data[part.first..=part.last],
        );
    }

    // Larger parts, out of order, crossing storage read boundaries.
    let ranges = [
        (280_000, 300_000),
        (0, 99),
        (100_000, 270_000),
        (len - 5, len - 1),
    ];
    let header = format!(
        "bytes={}",
        ranges
            .iter()
            .map(|(f, l)| format!("{f}-{l}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let resp = get(&server, "/files/c77.bin", &[("range", &header)]).await;
    let parts = parse_multipart(&resp);
    assert_eq!(parts.len(), ranges.len());
    for (part, (first, last)) in parts.iter().zip(ranges) {
        assert_eq!((part.first, part.last), (first, last), "request order");
        assert_eq!(part.content_range, format!("bytes {first}-{last}/{len}"));
        assert_same_bytes(&part.content_range, &part.body, &data[first..=last]);
    }
}

/// Case 78: a single range is never multipart; 50 tiny overlapping
/// ranges, or three overlapping ones → 200 whole.
#[tokio::test]
async fn c78_single_and_abusive() {
    let (server, data, _) = server_with("c78.bin", 1000).await;
    let resp = get(&server, "/files/c78.bin", &[("range", "bytes=0-999")]).await;
    assert_single(&resp, &data, 0, 999, "1000", "bytes=0-999");
    // Only one satisfiable range left: a plain 206 too.
    let resp = get(&server, "/files/c78.bin", &[("range", "bytes=5-9,5000-")]).await;
    assert_single(&resp, &data, 5, 9, "1000", "one satisfiable");
    let tiny: Vec<String> = (0..50).map(|i| format!("{i}-{}", i + 3)).collect();
    let header = format!("bytes={}", tiny.join(","));
    let resp = get(&server, "/files/c78.bin", &[("range", &header)]).await;
    assert_full(&resp, &data, "50 tiny overlapping ranges");
    let resp = get(
        &server,
        "/files/c78.bin",
        &[("range", "bytes=0-10,5-15,8-20")],
    )
    .await;
    assert_full(&resp, &data, "three overlapping ranges");
    let resp = get(
        &server,
        "/files/c78.bin",
        &[("range", "bytes=90-91,70-71,50-51,30-31,10-11")],
    )
    .await;
    assert_full(&resp, &data, "many small unordered ranges");
}

/// Case 79: If-Range with the strong ETag → 206; a stale or weak tag →
/// 200 whole.
#[tokio::test]
async fn c79_if_range_etag() {
    let (server, data, _) = server_with("c79.bin", 1000).await;
    let etag = format!("\"{}\"", sha256_hex(&data));
    let weak = format!("W/{etag}");
    let resp = get(
        &server,
        "/files/c79.bin",
        &[("range", "bytes=10-19"), ("if-range", &etag)],
    )
    .await;
    assert_single(&resp, &data, 10, 19, "1000", "If-Range strong");
    for stale in ["\"0000\"", weak.as_str()] {
        let resp = get(
            &server,
            "/files/c79.bin",
            &[("range", "bytes=10-19"), ("if-range", stale)],
        )
        .await;
        assert_full(&resp, &data, &format!("If-Range {stale}"));
    }
}

/// Case 80: an If-Range date equal to Last-Modified → 206 (once the
/// completion is over a second old); any other date → 200 whole.
#[tokio::test]
async fn c80_if_range_date() {
    let (server, data, _) = server_with("c80.bin", 1000).await;
    let head = get(&server, "/files/c80.bin", &[]).await;
    let last_modified = head
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let modified = httpdate_secs(&last_modified);
    // Last-Modified is strong only once its second is over and a full
    // second has passed (docs/protocol.md §4): wait until then.
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        if now >= modified + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = get(
        &server,
        "/files/c80.bin",
        &[("range", "bytes=10-19"), ("if-range", &last_modified)],
    )
    .await;
    assert_single(&resp, &data, 10, 19, "1000", "If-Range = Last-Modified");
    for other in [
        fmt_date(modified + 1),
        fmt_date(modified - 1),
        "not a date".to_owned(),
    ] {
        let resp = get(
            &server,
            "/files/c80.bin",
            &[("range", "bytes=10-19"), ("if-range", &other)],
        )
        .await;
        assert_full(&resp, &data, &format!("If-Range {other}"));
    }
}

/// An IMF-fixdate, inverse of [`httpdate_secs`].
fn fmt_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Case 81: preconditions come before Range (an If-None-Match hit → 304,
/// a failed If-Match → 412); Range on HEAD or PUT is ignored.
#[tokio::test]
async fn c81_preconditions_and_methods() {
    let (server, data, _) = server_with("c81.bin", 1000).await;
    let etag = format!("\"{}\"", sha256_hex(&data));
    let url = server.url("/files/c81.bin");
    let resp = get(
        &server,
        "/files/c81.bin",
        &[("range", "bytes=0-9"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(resp.status, 304, "{}", resp.describe());
    assert!(resp.body.is_empty());
    assert_eq!(resp.header("etag"), Some(etag.as_str()));
    let weak = format!("\"x\", W/{etag}");
    let resp = get(&server, "/files/c81.bin", &[("if-none-match", &weak)]).await;
    assert_eq!(resp.status, 304, "weak comparison for If-None-Match");

    let resp = get(
        &server,
        "/files/c81.bin",
        &[("range", "bytes=0-9"), ("if-match", "\"stale\"")],
    )
    .await;
    assert_eq!(resp.status, 412, "{}", resp.describe());
    let resp = get(
        &server,
        "/files/c81.bin",
        &[("range", "bytes=0-9"), ("if-match", &etag)],
    )
    .await;
    assert_single(&resp, &data, 0, 9, "1000", "If-Match hit");

    let last_modified = resp
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    let resp = get(
        &server,
        "/files/c81.bin",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(resp.status, 304, "{}", resp.describe());
    let resp = get(
        &server,
        "/files/c81.bin",
        &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(resp.status, 412, "{}", resp.describe());

    let head = request(Method::HEAD, &url, &[("range", "bytes=0-9")], Vec::new()).await;
    assert_eq!(head.status, 200, "Range on HEAD: {}", head.describe());
    assert!(head.header("content-range").is_none());
    assert_eq!(head.number("content-length"), 1000);
    let head = request(Method::HEAD, &url, &[("if-none-match", &etag)], Vec::new()).await;
    assert_eq!(
        head.status,
        304,
        "HEAD + If-None-Match: {}",
        head.describe()
    );

    let put = request(Method::PUT, &url, &[("range", "bytes=0-9")], b"x".to_vec()).await;
    assert!(
        !matches!(put.status, 206 | 416) && put.header("content-range").is_none(),
        "Range on PUT: {}",
        put.describe()
    );
    // The file is unchanged.
    assert_full(
        &get(&server, "/files/c81.bin", &[]).await,
        &data,
        "after PUT",
    );
}

/// Case 82: a zero-byte object with `bytes=0-` → 200, empty.
#[tokio::test]
async fn c82_zero_length() {
    let server = TestServer::start(BIN);
    upload(&server, "c82.bin", &[]).await;
    for range in ["bytes=0-", "bytes=-5", "bytes=0-0"] {
        let resp = get(&server, "/files/c82.bin", &[("range", range)]).await;
        assert_full(&resp, &[], range);
    }
}

// ---------------------------------------------------------------------------
// Case 85: uploads in progress
// ---------------------------------------------------------------------------

/// Initiates a seed session (with a known total when `total` is set) and
/// sends `data` as its first chunk; returns the `/uploads/{id}` path.
async fn partial_upload(server: &TestServer, total: Option<usize>, data: &[u8]) -> String {
    let mut initiate = client().post(server.url("/uploads"));
    if let Some(total) = total {
        initiate = initiate.header("x-upload-content-length", total.to_string());
    }
    let resp = send(initiate).await;
    assert_eq!(resp.status, 200, "initiate: {}", resp.describe());
    let path = path_of(resp.header("location").expect("Location"));
    let total_text = total.map_or_else(|| "*".to_owned(), |t| t.to_string());
    let resp = send(
        client()
            .put(server.url(&path))
            .header(
                "content-range",
                format!("bytes 0-{}/{total_text}", data.len() - 1),
            )
            .body(data.to_vec()),
    )
    .await;
    assert_eq!(resp.status, 308, "chunk: {}", resp.describe());
    path
}

/// Case 85: an unfinished upload is never served as complete: without
/// Range → 409 naming the offset; with Range → 206 below the offset
/// (`/*`, or `/LEN` when the length is known), 416 past it.
#[tokio::test]
async fn c85_in_progress() {
    let server = TestServer::start(BIN);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 400);

    for (total, total_text) in [(Some(1000), "1000"), (None, "*")] {
        let path = partial_upload(&server, total, &data).await;
        let resp = get(&server, &path, &[]).await;
        let json = assert_problem(&resp, 409);
        assert_eq!(json["held"], 400, "{json}");
        assert_eq!(json["offset"], 400, "{json}");
        // An ignored Range is no Range.
        let resp = get(&server, &path, &[("range", "bytes=5-2")]).await;
        assert_problem(&resp, 409);

        for (range, first, last) in [
            ("bytes=0-99", 0, 99),
            ("bytes=300-", 300, 399),
            ("bytes=350-5000", 350, 399),
        ] {
            let resp = get(&server, &path, &[("range", range)]).await;
            assert_single(&resp, &data, first, last, total_text, range);
            assert_eq!(resp.header("cache-control"), Some("no-store"));
        }
        for range in ["bytes=400-", "bytes=999-999"] {
            let resp = get(&server, &path, &[("range", range)]).await;
            assert_eq!(resp.status, 416, "{range}: {}", resp.describe());
            let expected = total.map(|t| format!("bytes */{t}"));
            assert_eq!(resp.header("content-range"), expected.as_deref(), "{range}");
        }
        // A suffix needs the length, and must start below the offset.
        let resp = get(&server, &path, &[("range", "bytes=-700")]).await;
        if total.is_some() {
            assert_single(&resp, &data, 300, 399, total_text, "bytes=-700");
        } else {
            assert_eq!(resp.status, 416, "{}", resp.describe());
        }
        // Several ranges: multipart, each part within the held bytes.
        let resp = get(&server, &path, &[("range", "bytes=0-9,390-500")]).await;
        let parts = parse_multipart(&resp);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[1].content_range,
            format!("bytes 390-399/{total_text}")
        );
        for part in &parts {
            assert_same_bytes(
                &part.content_range,
                &part.body,
                &data[part.first..=part.last],
            );
        }
        // HEAD on the upload stays the upload dialects' offset query.
        let head = request(Method::HEAD, &server.url(&path), &[], Vec::new()).await;
        assert_ne!(head.status, 206, "{}", head.describe());
    }
}

// ---------------------------------------------------------------------------
// Cases 86–87: names
// ---------------------------------------------------------------------------

/// Case 86 (downloads): hostile ids and names → 400/404.
#[tokio::test]
async fn c86_hostile_paths() {
    let (server, _, _) = server_with("c86.bin", 10).await;
    let overlong = "a".repeat(4000);
    for path in [
        "/uploads/..%2F..%2Fetc".to_owned(),
        "/uploads/%00".to_owned(),
        format!("/uploads/{overlong}"),
        "/files/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/files/%00".to_owned(),
        "/files/.hidden".to_owned(),
        format!("/files/{overlong}"),
    ] {
        let resp = get(&server, &path, &[("range", "bytes=0-")]).await;
        assert!(
            matches!(resp.status, 400 | 404),
            "{path}: {}",
            resp.describe()
        );
    }
}

/// Case 87 (downloads): Content-Disposition quotes a safe fallback and
/// carries the exact name in `filename*` (RFC 6266 / RFC 8187).
#[tokio::test]
async fn c87_content_disposition() {
    let server = TestServer::start(BIN);
    let name = "we\"ird na;me é.txt";
    upload(&server, name, b"hello").await;
    let resp = get(&server, &format!("/files/{}", encode(name)), &[]).await;
    assert_full(&resp, b"hello", "odd name");
    let disposition = resp
        .header("content-disposition")
        .expect("Content-Disposition");
    assert_eq!(
        disposition,
        "attachment; filename=\"we_ird na_me _.txt\"; \
         filename*=UTF-8''we%22ird%20na%3Bme%20%C3%A9.txt"
    );
    assert!(!disposition.contains(['\r', '\n']));
    let encoded = disposition
        .split("filename*=UTF-8''")
        .nth(1)
        .expect("filename*");
    assert_eq!(percent_decode(encoded), name);
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

// ---------------------------------------------------------------------------
// Cases 83–84: real clients resuming
// ---------------------------------------------------------------------------

/// The path of `tool`, or a failure telling how to install it.
fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run scripts/test (it installs the \
             Debian package {package} with apt-get)"
        )
    })
}

/// A published file of a few MiB and a local copy whose first `prefix`
/// bytes are *inverted*: a client that resumes keeps them, one that
/// downloads again does not, so the result tells the two apart.
struct Resume {
    server: TestServer,
    data: Vec<u8>,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Resume {
    fn new(name: &'static str, len: u64) -> Self {
        let server = TestServer::start(BIN);
        let mut rng = Rng::from_env_or_os();
        let data = random_bytes(&mut rng, len as usize);
        blocking(upload(&server, name, &data));
        let dir = tempfile::tempdir().expect("temporary directory");
        Resume {
            server,
            data,
            dir,
            name,
        }
    }

    fn url(&self) -> String {
        self.server.url(&format!("/files/{}", self.name))
    }

    fn local(&self) -> PathBuf {
        self.dir.path().join(self.name)
    }

    /// Writes the inverted prefix; returns what a resumed file must hold.
    fn write_prefix(&self, prefix: usize) -> Vec<u8> {
        let inverted: Vec<u8> = self.data[..prefix].iter().map(|b| !b).collect();
        std::fs::write(self.local(), &inverted).expect("write the partial file");
        let mut expected = inverted;
        expected.extend_from_slice(&self.data[prefix..]);
        expected
    }

    fn assert_local(&self, expected: &[u8], what: &str) {
        let local = std::fs::read(self.local()).expect("read the downloaded file");
        assert_same_bytes(what, &local, expected);
    }
}

fn run(mut command: Command, what: &str) -> support::process::PeerRun {
    command.env("LC_ALL", "C");
    let run = drive(command, what, CLIENT_TIMEOUT).run;
    assert!(
        run.status.is_some(),
        "{what} did not finish within {CLIENT_TIMEOUT:?}; stderr: {}",
        run.stderr
    );
    run
}

fn curl_resume(curl: &Path, url: &str, local: &Path) -> support::process::PeerRun {
    let mut command = Command::new(curl);
    command
        // No `--fail`: curl 7.88 turns the 416 of a resumed GET into exit
        // 22 with it (newer curl does not); the status is checked instead.
        .args(["-sS", "-C", "-", "-w", "%{http_code}", "-o"])
        .arg(local)
        .arg(url);
    run(command, "curl -C -")
}

/// Case 83: `curl -C -` on a partial file → 206 appended; on a complete
/// file → 416, exit 0, the file untouched.
#[test]
fn c83_curl_resume() {
    let curl = tool("curl", "curl");
    let resume = Resume::new("c83.bin", 3 * MIB + 12_345);
    let expected = resume.write_prefix(MIB as usize + 17);
    let out = curl_resume(&curl, &resume.url(), &resume.local());
    assert!(
        out.status.is_some_and(|s| s.success()),
        "curl: {:?} {}",
        out.status,
        out.stderr
    );
    assert_eq!(
        out.stdout, "206",
        "curl saw {}; stderr {}",
        out.stdout, out.stderr
    );
    resume.assert_local(&expected, "curl -C - (partial)");

    let out = curl_resume(&curl, &resume.url(), &resume.local());
    assert!(
        out.status.is_some_and(|s| s.success()),
        "curl on a complete file: {:?} {}",
        out.status,
        out.stderr
    );
    assert_eq!(out.stdout, "416", "stderr {}", out.stderr);
    resume.assert_local(&expected, "curl -C - (complete)");
}

fn wget_resume(wget: &Path, resume: &Resume) -> support::process::PeerRun {
    let mut command = Command::new(wget);
    command
        .args(["-c", "--tries=1"])
        .arg(resume.url())
        .current_dir(resume.dir.path());
    run(command, "wget -c")
}

/// Case 84: `wget -c` on a partial file → appended; on a complete file →
/// "already fully retrieved", exit 0.
#[test]
fn c84_wget_resume() {
    let wget = tool("wget", "wget");
    let resume = Resume::new("c84.bin", 3 * MIB + 999);
    let expected = resume.write_prefix(2 * MIB as usize + 5);
    let out = wget_resume(&wget, &resume);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "wget: {:?} {}",
        out.status,
        out.stderr
    );
    resume.assert_local(&expected, "wget -c (partial)");

    let out = wget_resume(&wget, &resume);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "wget on a complete file: {:?} {}",
        out.status,
        out.stderr
    );
    assert!(
        out.stderr.contains("already fully retrieved")
            || out.stdout.contains("already fully retrieved"),
        "wget did not say 'already fully retrieved': {}",
        out.stderr
    );
    resume.assert_local(&expected, "wget -c (complete)");
}

fn aria2c(aria2c: &Path, resume: &Resume, extra: &[&str]) -> support::process::PeerRun {
    let mut command = Command::new(aria2c);
    command
        .args([
            "--no-conf",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--auto-file-renaming=false",
            "--max-tries=1",
        ])
        .args(extra)
        .arg("-d")
        .arg(resume.dir.path())
        .arg("-o")
        .arg(resume.name)
        .arg(resume.url());
    run(command, "aria2c")
}

/// `aria2c -c` resumes a partial file (appending to it); `aria2c -x4`
/// downloads with four ranged connections; both byte for byte.
#[test]
fn aria2c_resume_and_segmented() {
    let aria2 = tool("aria2c", "aria2");
    let resume = Resume::new("aria2.bin", 6 * MIB + 4321);
    // aria2c resumes at a piece boundary (1 MiB by default): a prefix of
    // whole pieces is kept exactly.
    let expected = resume.write_prefix(2 * MIB as usize);
    let out = aria2c(&aria2, &resume, &["-c"]);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "aria2c -c: {:?} {} {}",
        out.status,
        out.stdout,
        out.stderr
    );
    resume.assert_local(&expected, "aria2c -c");

    std::fs::remove_file(resume.local()).expect("remove the file");
    let out = aria2c(
        &aria2,
        &resume,
        &[
            "-x4",
            "-s4",
            "--min-split-size=1M",
            "--file-allocation=none",
        ],
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "aria2c -x4: {:?} {} {}",
        out.status,
        out.stdout,
        out.stderr
    );
    resume.assert_local(&resume.data, "aria2c -x4");
}
