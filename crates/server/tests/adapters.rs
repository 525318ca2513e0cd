//! The dialect adapters' HTTP behaviour, in process: [`tenax_server::router`]
//! over an engine on a temporary directory, driven one request at a time
//! with `tower::ServiceExt::oneshot`. Every test checks status and headers
//! and reads what the engine stored straight from the storage, not through
//! the server. (What crosses processes, sockets and restarts is tested
//! against the real binary in `crates/cli/tests`.)

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use futures_util::TryStreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tenax_core::storage::LocalDisk;
use tenax_core::{CompletionAnswer, Engine, EngineConfig, FileKey, UploadId};
use tenax_protocol::FileName;
use tenax_server::{ServerConfig, router};
use tower::ServiceExt as _;

const HOST: &str = "http://tenax.test";
const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OFFSET_STREAM: (&str, &str) = ("content-type", "application/offset+octet-stream");
const PARTIAL_UPLOAD: (&str, &str) = ("content-type", "application/partial-upload");
const INTEROP: (&str, &str) = ("upload-draft-interop-version", "9");
const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// A router over a fresh engine; the directory lives as long as it.
struct Server {
    _dir: tempfile::TempDir,
    engine: Engine,
    app: Router,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Arc::new(LocalDisk::open(dir.path()).expect("data dir"));
        let engine = Engine::open(storage, EngineConfig::default())
            .await
            .expect("engine");
        let app = router(engine.clone(), config);
        Server {
            _dir: dir,
            engine,
            app,
        }
    }

    async fn open() -> Server {
        Server::start(ServerConfig::default()).await
    }

    /// One request: `path` (or an absolute URL), headers, body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let uri = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{HOST}{path}")
        };
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if !body.is_empty() {
            request = request.header("content-length", body.len());
        }
        let request = request
            .body(Body::from(body.to_vec()))
            .expect("a valid request");
        self.exchange(request).await
    }

    /// A seed chunk or status query: `PUT` with this `Content-Range`.
    async fn put_range(&self, url: &str, range: &str, body: &[u8]) -> Answer {
        self.send(Method::PUT, url, &[("content-range", range)], body)
            .await
    }

    /// One request as built, its answer read whole.
    async fn exchange(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The bytes the storage holds for the upload at `location`.
    async fn stored(&self, location: &str) -> Vec<u8> {
        let snapshot = self.engine.peek(id_of(location)).await.expect("an upload");
        self.engine
            .storage()
            .read(&snapshot.record, 0..snapshot.held)
            .await
            .expect("readable")
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await
            .expect("read whole")
    }

    /// The upload last completed under `name`, if any.
    async fn published(&self, name: &str) -> Option<UploadId> {
        let file = FileKey {
            namespace: Default::default(),
            name: FileName::new(name).expect("a file name"),
        };
        let snapshot = self.engine.published(&file).await.ok()?;
        Some(snapshot.record.id)
    }
}

/// An answer, its body read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII"))
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name}: {}", self.describe()))
            .parse()
            .expect("a number")
    }

    fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location: {}", self.describe()))
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON")
    }

    /// A problem+json answer with this status; its JSON.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.describe());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.describe()
        );
        let json = self.json();
        assert_eq!(json["status"], status, "{json}");
        json
    }

    fn describe(&self) -> String {
        format!(
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

fn id_of(location: &str) -> UploadId {
    let id = location.rsplit('/').next().expect("a path");
    UploadId::parse(id).expect("an upload id")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

// --- seed (Google's resumable upload) --------------------------------------

/// Initiates a seed session for `name` of `length` bytes; its URL.
async fn seed_session(server: &Server, name: &str, length: u64) -> String {
    let answer = server
        .send(
            Method::POST,
            &format!("/api/upload?file={name}"),
            &[("x-upload-content-length", &length.to_string())],
            b"",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.describe());
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let location = answer.location();
    assert!(
        location.starts_with(&format!("{HOST}/uploads/")),
        "{location}"
    );
    location
}

#[tokio::test]
async fn seed_chunks_answer_308_then_200_with_the_object() {
    let server = Server::open().await;
    let url = seed_session(&server, "seed.bin", 10).await;

    let answer = server.put_range(&url, "bytes 0-3/10", b"0123").await;
    assert_eq!(
        answer.status,
        StatusCode::PERMANENT_REDIRECT,
        "{}",
        answer.describe()
    );
    assert_eq!(answer.header("range"), Some("bytes=0-3"));
    assert_eq!(
        answer.header("location"),
        None,
        "a 308 never carries Location"
    );
    assert_eq!(server.stored(&url).await, b"0123");

    // A status query reports the same.
    let answer = server.put_range(&url, "bytes */10", b"").await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(answer.header("range"), Some("bytes=0-3"));

    // A chunk overlapping what is held: the held prefix is skipped.
    let answer = server.put_range(&url, "bytes 2-9/10", b"23456789").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.describe());
    assert_eq!(answer.header("range"), None);
    let object = answer.json();
    assert_eq!(object["name"], "seed.bin");
    assert_eq!(object["size"], "10");
    assert_eq!(object["sha256"], sha256_hex(b"0123456789"));
    assert!(object["md5Hash"].is_string(), "{object}");
    assert!(object.get("hookResponse").is_none(), "{object}");
    assert_eq!(server.stored(&url).await, b"0123456789");
    assert_eq!(server.published("seed.bin").await, Some(id_of(&url)));
}

#[tokio::test]
async fn seed_without_308_answers_200_with_the_override() {
    let server = Server::open().await;
    let url = seed_session(&server, "no308.bin", 6).await;
    let answer = server
        .send(
            Method::PUT,
            &url,
            &[
                ("content-range", "bytes 0-2/6"),
                ("x-guploader-no-308", "yes"),
            ],
            b"abc",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.describe());
    assert_eq!(answer.header("x-http-status-code-override"), Some("308"));
    assert_eq!(answer.header("range"), Some("bytes=0-2"));
    assert_eq!(server.stored(&url).await, b"abc");
}

#[tokio::test]
async fn seed_refuses_a_gap_and_a_bad_range_and_keeps_what_it_holds() {
    let server = Server::open().await;
    let url = seed_session(&server, "gap.bin", 10).await;
    server.put_range(&url, "bytes 0-3/10", b"0123").await;

    let answer = server.put_range(&url, "bytes 6-9/10", b"6789").await;
    let problem = answer.problem(416);
    assert_eq!(problem["type"], "urn:tenax:problem:upload-gap");
    assert_eq!(problem["held"], 4);
    assert_eq!(answer.header("range"), Some("bytes=0-3"));

    let answer = server.put_range(&url, "bytes 9-3/10", b"0").await;
    assert_eq!(
        answer.problem(400)["type"],
        "urn:tenax:problem:bad-content-range"
    );
    assert_eq!(server.stored(&url).await, b"0123");
}

#[tokio::test]
async fn seed_literal_form_uploads_by_name() {
    let server = Server::open().await;
    let answer = server
        .send(
            Method::PUT,
            "/api/upload?file=whole.txt",
            &[],
            b"all at once",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.describe());
    assert_eq!(answer.json()["size"], "11");
    let id = server.published("whole.txt").await.expect("published");
    assert_eq!(
        server.stored(&format!("/uploads/{id}")).await,
        b"all at once"
    );
}

// --- tus 1.0.0 --------------------------------------------------------------

/// Creates a tus upload of `length` bytes; its URL.
async fn tus_create(server: &Server, length: u64, extra: &[(&str, &str)]) -> String {
    let length = length.to_string();
    let mut headers = vec![TUS, ("upload-length", length.as_str())];
    headers.extend_from_slice(extra);
    let answer = server.send(Method::POST, "/uploads", &headers, b"").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.describe());
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(answer.number("upload-offset"), 0);
    assert!(answer.header("upload-expires").is_some());
    answer.location()
}

async fn tus_patch(
    server: &Server,
    url: &str,
    offset: u64,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let offset = offset.to_string();
    let mut headers = vec![TUS, OFFSET_STREAM, ("upload-offset", offset.as_str())];
    headers.extend_from_slice(extra);
    server.send(Method::PATCH, url, &headers, body).await
}

#[tokio::test]
async fn tus_create_patch_head_and_offset_mismatch() {
    let server = Server::open().await;
    // "hi.txt" in base64.
    let url = tus_create(&server, 11, &[("upload-metadata", "filename aGkudHh0")]).await;

    let answer = tus_patch(&server, &url, 0, &[], b"hello").await;
    assert_eq!(
        answer.status,
        StatusCode::NO_CONTENT,
        "{}",
        answer.describe()
    );
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));

    let answer = server.send(Method::HEAD, &url, &[TUS], b"").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(answer.number("upload-length"), 11);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("upload-metadata"), Some("filename aGkudHh0"));

    // A PATCH from an offset other than the one held: 409, nothing written,
    // and the answer still tells the offset.
    let answer = tus_patch(&server, &url, 3, &[], b"lo world").await;
    let problem = answer.problem(409);
    assert_eq!(problem["type"], "urn:tenax:problem:offset-mismatch");
    assert_eq!(problem["expected-offset"], 5);
    assert_eq!(problem["provided-offset"], 3);
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(answer.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(server.stored(&url).await, b"hello");

    let answer = tus_patch(&server, &url, 5, &[], b" world").await;
    assert_eq!(
        answer.status,
        StatusCode::NO_CONTENT,
        "{}",
        answer.describe()
    );
    assert_eq!(answer.number("upload-offset"), 11);
    assert_eq!(answer.header("upload-expires"), None, "complete: no expiry");
    assert_eq!(server.stored(&url).await, b"hello world");
    assert_eq!(server.published("hi.txt").await, Some(id_of(&url)));

    // Bodiless PATCH on a complete upload: 204; with a body: 413.
    assert_eq!(
        tus_patch(&server, &url, 11, &[], b"").await.status,
        StatusCode::NO_CONTENT
    );
    tus_patch(&server, &url, 11, &[], b"!").await.problem(413);
    assert_eq!(server.stored(&url).await, b"hello world");
}

#[tokio::test]
async fn tus_creation_with_upload_writes_the_first_chunk() {
    let server = Server::open().await;
    let headers = [TUS, ("upload-length", "8"), OFFSET_STREAM];
    let answer = server
        .send(Method::POST, "/uploads", &headers, b"abcd")
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.describe());
    assert_eq!(answer.number("upload-offset"), 4);
    assert_eq!(server.stored(&answer.location()).await, b"abcd");
}

#[tokio::test]
async fn tus_refuses_bad_requests_without_writing() {
    let server = Server::open().await;
    let url = tus_create(&server, 10, &[]).await;

    // No Tus-Resumable (tus headers only): 412 naming the version.
    let answer = server
        .send(
            Method::PATCH,
            &url,
            &[OFFSET_STREAM, ("upload-offset", "0")],
            b"x",
        )
        .await;
    answer.problem(412);
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    // Another media type: 415.
    let answer = server
        .send(
            Method::PATCH,
            &url,
            &[TUS, ("upload-offset", "0"), ("content-type", "text/plain")],
            b"x",
        )
        .await;
    answer.problem(415);
    // A header that is not text: 400 (tus reads every header strictly).
    let request = Request::builder()
        .method(Method::PATCH)
        .uri(url.as_str())
        .header(TUS.0, TUS.1)
        .header(OFFSET_STREAM.0, OFFSET_STREAM.1)
        .header(
            "upload-offset",
            HeaderValue::from_bytes(b"0\xff").expect("obs-text"),
        )
        .body(Body::from("x"))
        .expect("a request");
    server.exchange(request).await.problem(400);
    // A chunk longer than the upload takes: 413 before a byte is written.
    tus_patch(&server, &url, 0, &[], b"0123456789A")
        .await
        .problem(413);
    // A checksum that does not match: 460, the chunk discarded.
    let wrong = format!("sha1 {}", "A".repeat(27) + "=");
    let answer = tus_patch(&server, &url, 0, &[("upload-checksum", &wrong)], b"01234").await;
    assert_eq!(
        answer.problem(460)["type"],
        "urn:tenax:problem:checksum-mismatch"
    );
    assert_eq!(answer.number("upload-offset"), 0);
    assert_eq!(server.stored(&url).await, b"");

    let digest = {
        use base64::Engine as _;
        use sha1::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"01234"))
    };
    let right = format!("sha1 {digest}");
    let answer = tus_patch(&server, &url, 0, &[("upload-checksum", &right)], b"01234").await;
    assert_eq!(
        answer.status,
        StatusCode::NO_CONTENT,
        "{}",
        answer.describe()
    );
    assert_eq!(server.stored(&url).await, b"01234");
}

// --- RUFH (IETF resumable uploads) -------------------------------------------

#[tokio::test]
async fn rufh_create_append_and_offset_query() {
    let server = Server::open().await;
    let headers = [
        INTEROP,
        ("upload-complete", "?0"),
        ("upload-length", "10"),
        ("content-disposition", "attachment; filename=\"r.bin\""),
    ];
    let answer = server
        .send(Method::POST, "/uploads", &headers, b"01234")
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.describe());
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(answer.header("upload-complete"), Some("?0"));
    assert_eq!(answer.number("upload-length"), 10);
    assert_eq!(answer.header("upload-draft-interop-version"), Some("9"));
    assert!(
        answer
            .header("upload-limit")
            .is_some_and(|limit| limit.contains("min-size=0"))
    );
    let url = answer.location();
    assert_eq!(server.stored(&url).await, b"01234");

    let answer = server.send(Method::HEAD, &url, &[INTEROP], b"").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(answer.header("upload-complete"), Some("?0"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));

    // The wrong offset: 409 of the draft's type, nothing written.
    let append = |offset: &'static str, complete: &'static str| {
        [
            INTEROP,
            PARTIAL_UPLOAD,
            ("upload-offset", offset),
            ("upload-complete", complete),
        ]
    };
    let answer = server
        .send(Method::PATCH, &url, &append("2", "?1"), b"56789")
        .await;
    let problem = answer.problem(409);
    assert_eq!(problem["type"], MISMATCHING_OFFSET);
    assert_eq!(problem["expected-offset"], 5);
    assert_eq!(problem["provided-offset"], 2);
    assert_eq!(answer.number("upload-offset"), 5);
    assert_eq!(server.stored(&url).await, b"01234");

    let answer = server
        .send(Method::PATCH, &url, &append("5", "?1"), b"56789")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.describe());
    assert_eq!(answer.number("upload-offset"), 10);
    assert_eq!(answer.header("upload-complete"), Some("?1"));
    assert_eq!(server.stored(&url).await, b"0123456789");
    assert_eq!(server.published("r.bin").await, Some(id_of(&url)));
}

#[tokio::test]
async fn rufh_complete_creation_takes_its_length_from_the_body() {
    let server = Server::open().await;
    let headers = [INTEROP, ("upload-complete", "?1")];
    let answer = server
        .send(Method::POST, "/uploads", &headers, b"whole")
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.describe());
    assert_eq!(answer.header("upload-complete"), Some("?1"));
    assert_eq!(answer.number("upload-length"), 5);
    assert_eq!(server.stored(&answer.location()).await, b"whole");
}

#[tokio::test]
async fn rufh_counts_an_invalid_field_as_absent_and_voids_an_overrun() {
    let server = Server::open().await;
    // An Upload-Length that is not text counts as absent (§3.2): the
    // upload is created without a length, where tus would answer 400.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{HOST}/uploads"))
        .header(INTEROP.0, INTEROP.1)
        .header("upload-complete", "?0")
        .header(
            "upload-length",
            HeaderValue::from_bytes(b"1\xff").expect("obs-text"),
        )
        .body(Body::empty())
        .expect("a request");
    let answer = server.exchange(request).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.describe());
    assert_eq!(answer.header("upload-length"), None);

    // Past a known length: 400 inconsistent length, and the upload is void.
    let headers = [INTEROP, ("upload-complete", "?0"), ("upload-length", "4")];
    let url = server
        .send(Method::POST, "/uploads", &headers, b"")
        .await
        .location();
    let patch = [
        INTEROP,
        PARTIAL_UPLOAD,
        ("upload-offset", "0"),
        ("upload-complete", "?0"),
    ];
    let answer = server.send(Method::PATCH, &url, &patch, b"too long").await;
    assert_eq!(answer.problem(400)["type"], INCONSISTENT_LENGTH);
    let answer = server.send(Method::HEAD, &url, &[INTEROP], b"").await;
    assert!(
        matches!(answer.status.as_u16(), 404 | 410),
        "{}",
        answer.describe()
    );
}

// --- across dialects --------------------------------------------------------

#[tokio::test]
async fn options_and_unknown_uploads() {
    let server = Server::open().await;
    let answer = server.send(Method::OPTIONS, "/uploads", &[], b"").await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.header("tus-version"), Some("1.0.0"));
    assert!(
        answer
            .header("tus-extension")
            .is_some_and(|ext| ext.contains("creation"))
    );
    assert_eq!(
        answer.header("accept-patch"),
        Some("application/partial-upload")
    );

    let missing = format!("/uploads/{}", "0".repeat(32));
    let answer = server.send(Method::HEAD, &missing, &[INTEROP], b"").await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{}",
        answer.describe()
    );
    let answer = tus_patch(&server, &missing, 0, &[], b"x").await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{}",
        answer.describe()
    );
}

/// A completion hook receiver that answers with the upload's id.
#[derive(Debug)]
struct EchoAnswer;

#[async_trait]
impl CompletionAnswer for EchoAnswer {
    async fn answer(&self, upload: UploadId) -> Option<Value> {
        Some(json!({ "completed": upload.to_string(), "note": "é" }))
    }
}

#[tokio::test]
async fn the_completing_request_carries_the_hook_answer_in_every_dialect() {
    let server = Server::start(ServerConfig {
        completion_answer: Some(Arc::new(EchoAnswer)),
        ..ServerConfig::default()
    })
    .await;
    let header = |url: &str| json!({ "completed": id_of(url).to_string(), "note": "é" });

    // tus: only the completing PATCH has it.
    let url = tus_create(&server, 4, &[]).await;
    let answer = tus_patch(&server, &url, 0, &[], b"ab").await;
    assert_eq!(answer.header("tenax-hook-response"), None);
    let answer = tus_patch(&server, &url, 2, &[], b"cd").await;
    let value: Value =
        serde_json::from_str(answer.header("tenax-hook-response").expect("the answer"))
            .expect("JSON");
    assert_eq!(value, header(&url));

    // seed: in the header and in the object JSON.
    let url = seed_session(&server, "hooked.bin", 2).await;
    let answer = server.put_range(&url, "bytes 0-1/2", b"ok").await;
    assert_eq!(answer.json()["hookResponse"], header(&url));
    assert!(answer.header("tenax-hook-response").is_some());

    // RUFH: a complete creation.
    let headers = [INTEROP, ("upload-complete", "?1")];
    let answer = server
        .send(Method::POST, "/uploads", &headers, b"done")
        .await;
    let value: Value =
        serde_json::from_str(answer.header("tenax-hook-response").expect("the answer"))
            .expect("JSON");
    assert_eq!(value, header(&answer.location()));
}
