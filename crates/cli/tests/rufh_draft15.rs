//! The IETF draft's changes after interop version 9 (drafts -12 to -15,
//! docs/protocol.md §3.5), against the real `tenax serve` binary: a 413 for
//! an upload limit carries `Upload-Limit`; an empty creation is always
//! allowed; `max-age` counts down while the end of life it implies never
//! moves earlier; every answer says `Upload-Complete`; `GET` on the upload
//! resource is an offset retrieval; the draft's `Content-Disposition` example
//! (`filename*`) names the file.
//!
//! Every test starts its own server; every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use support::http::{Resp, assert_problem, download, request, upload_entries};
use support::{BIN, random_bytes};
use tenax_protocol::rufh::UploadLimit;
use tenax_testkit::{Rng, TestServer};

const V: &str = "9";
const PARTIAL_UPLOAD: &str = "application/partial-upload";

async fn rufh(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let mut all = vec![("upload-draft-interop-version", V)];
    all.extend_from_slice(headers);
    request(method, url, &all, body).await
}

fn limit(resp: &Resp) -> UploadLimit {
    let field = resp
        .header("upload-limit")
        .unwrap_or_else(|| panic!("no Upload-Limit: {}", resp.describe()));
    UploadLimit::parse(field).unwrap_or_else(|| panic!("Upload-Limit {field:?} does not parse"))
}

fn complete_flag(resp: &Resp) -> &str {
    resp.header("upload-complete")
        .unwrap_or_else(|| panic!("no Upload-Complete: {}", resp.describe()))
}

async fn create_empty(server: &TestServer, extra: &[(&str, &str)]) -> (String, Resp) {
    let mut headers = vec![("upload-complete", "?0")];
    headers.extend_from_slice(extra);
    let resp = rufh(Method::POST, &server.url("/uploads"), &headers, Vec::new()).await;
    assert_eq!(resp.status, 201, "creation: {}", resp.describe());
    let location = resp.header("location").expect("Location").to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        server.url(&location)
    };
    (url, resp)
}

async fn append(url: &str, offset: u64, complete: bool, body: &[u8]) -> Resp {
    let offset = offset.to_string();
    rufh(
        Method::PATCH,
        url,
        &[
            ("content-type", PARTIAL_UPLOAD),
            ("upload-offset", &offset),
            ("upload-complete", if complete { "?1" } else { "?0" }),
        ],
        body.to_vec(),
    )
    .await
}

/// A 413 caused by the upload limits carries `Upload-Limit` with the
/// `max-size` it broke, on creation and on a completing append (draft -12:
/// "clarify client behavior for 413 responses"), and `Upload-Complete: ?0`.
#[tokio::test]
async fn too_large_answers_carry_the_limit() {
    let server = TestServer::start_with(BIN, &["--max-upload-size", "1000"]);
    let entries = upload_entries(&server);
    let resp = rufh(
        Method::POST,
        &server.url("/uploads"),
        &[("upload-complete", "?0"), ("upload-length", "5000")],
        Vec::new(),
    )
    .await;
    assert_problem(&resp, 413);
    assert_eq!(limit(&resp).max_size, Some(1000), "{}", resp.describe());
    assert_eq!(complete_flag(&resp), "?0");
    assert_eq!(resp.header("upload-draft-interop-version"), Some(V));
    assert_eq!(upload_entries(&server), entries, "a 413 created an upload");

    let (url, created) = create_empty(&server, &[]).await;
    assert_eq!(limit(&created).max_size, Some(1000));
    let resp = append(&url, 0, true, &[7u8; 2000]).await;
    assert_problem(&resp, 413);
    assert_eq!(limit(&resp).max_size, Some(1000), "{}", resp.describe());
    assert_eq!(complete_flag(&resp), "?0");
    // Nothing was stored; the upload goes on within the limit.
    let resp = append(&url, 0, true, &[7u8; 1000]).await;
    assert!(matches!(resp.status, 200 | 204), "{}", resp.describe());
    assert_eq!(complete_flag(&resp), "?1");
}

/// An upload creation with no content is always allowed (draft -12), in every
/// interop version served, and no `Upload-Limit` tenax sends has a
/// `min-append-size` that could say otherwise.
#[tokio::test]
async fn empty_creation_is_always_allowed() {
    let server = TestServer::start(BIN);
    for version in ["5", "6", "7", "8", "9"] {
        let resp = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                ("upload-draft-interop-version", version),
                ("upload-complete", "?0"),
                ("upload-length", "4096"),
            ],
            Vec::new(),
        )
        .await;
        assert_eq!(resp.status, 201, "interop {version}: {}", resp.describe());
        let field = resp.header("upload-limit").expect("Upload-Limit");
        assert!(!field.contains("min-append-size"), "{field}");
        assert_eq!(resp.number("upload-offset"), 0);
        assert_eq!(complete_flag(&resp), "?0");
    }
}

/// `max-age` is the lifetime left (draft -12: it may decrease "as
/// expected"), and the end of life it implies never moves earlier; an
/// append moves it later; a completed upload has none.
#[tokio::test]
async fn max_age_counts_down_and_the_end_never_moves_earlier() {
    let server = TestServer::start_with(BIN, &["--upload-ttl", "60s"]);
    let start = Instant::now();
    // The end of life an answer implies, in seconds since `start`, and the
    // rounding of whole seconds on both sides.
    let end_of = |resp: &Resp| {
        let age = limit(resp).max_age.expect("max-age on an active upload");
        assert!(age <= 60, "max-age {age} beyond the 60 s time to live");
        start.elapsed().as_secs_f64() + age as f64
    };
    let (url, created) = create_empty(&server, &[]).await;
    let end0 = end_of(&created);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let resp = rufh(Method::HEAD, &url, &[], Vec::new()).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    let age = limit(&resp).max_age.expect("max-age");
    assert!(
        age <= 58,
        "max-age {age} did not count down after 2.3 s idle"
    );
    let end1 = end_of(&resp);
    assert!(
        end1 >= end0 - 1.0,
        "end of life moved earlier: {end0} → {end1}"
    );
    // An append is activity: the end moves later.
    let resp = append(&url, 0, false, b"some bytes").await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    let end2 = end_of(&resp);
    assert!(
        end2 >= end1 + 1.0,
        "an append did not extend the life: {end1} → {end2}"
    );
    let resp = append(&url, 10, true, b"!").await;
    assert!(matches!(resp.status, 200 | 204), "{}", resp.describe());
    assert_eq!(
        limit(&resp).max_age,
        None,
        "a complete upload does not expire"
    );
}

/// `Upload-Complete` on every answer about an upload (draft -12: the server
/// SHOULD say whether an answer is the result of processing the upload).
#[tokio::test]
async fn every_answer_says_upload_complete() {
    let server = TestServer::start(BIN);
    let (url, created) = create_empty(&server, &[("upload-length", "10")]).await;
    assert_eq!(complete_flag(&created), "?0");
    let mismatch = append(&url, 5, false, b"abc").await;
    assert_eq!(mismatch.status, 409, "{}", mismatch.describe());
    assert_eq!(complete_flag(&mismatch), "?0");
    let wrong_type = rufh(
        Method::PATCH,
        &url,
        &[
            ("content-type", "text/plain"),
            ("upload-offset", "0"),
            ("upload-complete", "?0"),
        ],
        b"abc".to_vec(),
    )
    .await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.describe());
    assert_eq!(complete_flag(&wrong_type), "?0");
    let short = append(&url, 0, true, b"abc").await;
    assert_eq!(short.status, 400, "{}", short.describe());
    assert_eq!(complete_flag(&short), "?0");
    let done = append(&url, 0, true, b"0123456789").await;
    assert!(matches!(done.status, 200 | 204), "{}", done.describe());
    assert_eq!(complete_flag(&done), "?1");
}

/// `GET` on the upload resource with an interop version and no `Range` is an
/// offset retrieval (draft -12): 204 with the fields of a HEAD and no body,
/// in progress and complete. A `GET` without the version is still a download
/// (§4, case 85).
#[tokio::test]
async fn get_on_the_upload_is_an_offset_retrieval() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(1512), 20_000);
    let (url, _) = create_empty(
        &server,
        &[("content-disposition", "inline; filename=\"get15.bin\"")],
    )
    .await;
    let resp = append(&url, 0, false, &data[..8_000]).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    let got = rufh(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(got.status, 204, "{}", got.describe());
    assert_eq!(got.number("upload-offset"), 8_000);
    assert_eq!(complete_flag(&got), "?0");
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert_eq!(got.header("upload-draft-interop-version"), Some(V));
    assert!(limit(&got).max_age.is_some());
    assert!(got.body.is_empty(), "an offset retrieval has no content");
    // Without the version: the download of an upload in progress (409).
    let plain = request(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(plain.status, 409, "{}", plain.describe());
    // With a Range: bytes below the offset.
    let ranged = rufh(Method::GET, &url, &[("range", "bytes=0-99")], Vec::new()).await;
    assert_eq!(ranged.status, 206, "{}", ranged.describe());
    assert_eq!(ranged.body, data[..100]);

    let resp = append(&url, 8_000, true, &data[8_000..]).await;
    assert!(matches!(resp.status, 200 | 204), "{}", resp.describe());
    let got = rufh(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(got.status, 204, "{}", got.describe());
    assert_eq!(got.number("upload-offset"), 20_000);
    assert_eq!(complete_flag(&got), "?1");
    let plain = request(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(plain.status, 200, "{}", plain.describe());
    assert_eq!(plain.body, data);
}

/// The draft's `Content-Disposition` example (`inline`, `filename` and
/// `filename*`) names the file by `filename*`; a field that does not parse
/// is a 400 that creates nothing.
#[tokio::test]
async fn content_disposition_filename_star_names_the_file() {
    let server = TestServer::start(BIN);
    let data = random_bytes(&mut Rng::new(1513), 5_000);
    let resp = rufh(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-complete", "?1"),
            (
                "content-disposition",
                "inline; filename=\"fallback.bin\"; filename*=UTF-8''caf%C3%A9%20%C3%A0%3B1.bin",
            ),
        ],
        data.clone(),
    )
    .await;
    assert!(matches!(resp.status, 200 | 201), "{}", resp.describe());
    assert_eq!(complete_flag(&resp), "?1");
    assert_eq!(download(&server, "caf%C3%A9%20%C3%A0%3B1.bin").await, data);

    let entries = upload_entries(&server);
    for bad in [
        "inline; filename=\"open",
        "inline; filename*=UTF-8''%FF.bin",
        "inline; filename=a.bin; filename=b.bin",
    ] {
        let resp = rufh(
            Method::POST,
            &server.url("/uploads"),
            &[("upload-complete", "?0"), ("content-disposition", bad)],
            Vec::new(),
        )
        .await;
        assert_problem(&resp, 400);
        assert_eq!(complete_flag(&resp), "?0");
    }
    assert_eq!(upload_entries(&server), entries, "a 400 created an upload");
}
