//! Completion hooks (issue 5), against the real binary and a test receiver
//! on loopback that checks every webhook's HMAC: every event type arrives
//! with its fields from every dialect; the outbox survives kill -9 and a
//! receiver that is down; the command hook; the pre-create hook refuses
//! (its message reaches tus, seed and RUFH clients), renames, and fails
//! closed or open; the completion hook's answer reaches the final response.
//!
//! Long on purpose: one test binary with one receiver helper for every hook
//! rule.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};
use reqwest::Method;
use serde_json::{Value, json};
use tenax_testkit::{Rng, TestServer};

use support::http::{Resp, assert_problem, request};
use support::{BIN, hex, random_bytes, sha256_hex};

const SECRET: &str = "the webhook secret of the tests";

/// How long any wait for an event may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Answer 500 to events (a receiver in trouble).
    failing: AtomicBool,
    /// Every event id POSTed, accepted or not.
    attempts: Mutex<Vec<String>>,
    /// Accepted events, in arrival order (duplicates included).
    events: Mutex<Vec<Value>>,
    /// Requests whose signature or id header did not match.
    bad: AtomicUsize,
    /// Pre-create requests.
    pre_creates: Mutex<Vec<Value>>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    headers
        .get("tenax-signature")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == sign(body))
}

async fn on_event(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = event["id"].as_str().unwrap_or_default().to_owned();
    let header_id = headers
        .get("tenax-event-id")
        .and_then(|value| value.to_str().ok());
    if !signed(&headers, &body) || header_id != Some(id.as_str()) {
        seen.bad.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    seen.attempts.lock().expect("lock").push(id.clone());
    if seen.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    seen.events.lock().expect("lock").push(event);
    axum::Json(json!({"processed": id, "note": "reçu"})).into_response()
}

async fn on_pre_create(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> Response {
    if !signed(&headers, &body) {
        seen.bad.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.pre_creates.lock().expect("lock").push(request.clone());
    let name = request["upload"]["name"].as_str().unwrap_or_default();
    if name.contains("reject") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"message": "files called reject-* are not welcome here"})),
        )
            .into_response();
    }
    if name == "rename-me.bin" {
        return axum::Json(json!({
            "name": "renamed.bin",
            "metadata": {"origin": BASE64.encode("pre-create hook")},
        }))
        .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

impl Receiver {
    async fn start(port: u16) -> Self {
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new()
            .route("/events", axum::routing::post(on_event))
            .route("/pre-create", axum::routing::post(on_pre_create))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        self.seen.events.lock().expect("lock").clone()
    }

    /// Accepted events, deduplicated by id (as a receiver must).
    fn unique(&self) -> BTreeMap<String, Value> {
        self.events()
            .into_iter()
            .map(|event| (event["id"].as_str().unwrap_or_default().to_owned(), event))
            .collect()
    }

    /// The accepted events of one upload and type, deduplicated.
    fn of(&self, upload: &str, kind: &str) -> Vec<Value> {
        self.unique()
            .into_values()
            .filter(|event| event["upload"]["id"] == upload && event["type"] == kind)
            .collect()
    }

    /// Waits until the upload's event of `kind` arrived; returns it.
    async fn wait_for(&self, upload: &str, kind: &str) -> Value {
        let start = Instant::now();
        loop {
            if let Some(event) = self.of(upload, kind).into_iter().next() {
                return event;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {kind} event for {upload}; got {:#?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_all_signed(&self) {
        assert_eq!(
            self.seen.bad.load(Ordering::SeqCst),
            0,
            "unsigned or mislabelled requests"
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A secret file in a directory that outlives the server.
fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("hook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write the secret");
    path
}

fn start(dir: &Path, receiver_url: &str, more: &[&str]) -> TestServer {
    let secret = secret_file(dir);
    let secret = secret.to_str().expect("UTF-8 path");
    let mut args = vec![
        "--hook-url",
        receiver_url,
        "--hook-secret-file",
        secret,
        "--hook-retry-min",
        "100ms",
        "--hook-retry-max",
        "400ms",
        "--hook-timeout",
        "3s",
    ];
    args.extend_from_slice(more);
    TestServer::start_with(BIN, &args)
}

/// Seed: initiate, then one PUT with everything; the upload id and the final answer.
async fn seed_upload(server: &TestServer, name: &str, data: &[u8]) -> (String, Resp) {
    let url = server.url(&format!("/api/upload?file={name}"));
    let length = data.len().to_string();
    let resp = request(
        Method::POST,
        &url,
        &[("x-upload-content-length", length.as_str())],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 200, "initiate: {}", resp.describe());
    let location = resp.header("location").expect("Location").to_owned();
    let range = format!("bytes 0-{}/{}", data.len() - 1, data.len());
    let done = request(
        Method::PUT,
        &location,
        &[("content-range", range.as_str())],
        data.to_vec(),
    )
    .await;
    (upload_id(&location), done)
}

fn upload_id(location: &str) -> String {
    let path = location.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// tus: create (with metadata), then one PATCH with everything.
async fn tus_upload(server: &TestServer, name: &str, data: &[u8]) -> (String, Resp) {
    let metadata = format!(
        "filename {},kind {}",
        BASE64.encode(name),
        BASE64.encode("test")
    );
    let length = data.len().to_string();
    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-length", length.as_str()),
            ("upload-metadata", metadata.as_str()),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 201, "tus create: {}", resp.describe());
    let location = resp.header("location").expect("Location").to_owned();
    let done = request(
        Method::PATCH,
        &location,
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        data.to_vec(),
    )
    .await;
    (upload_id(&location), done)
}

/// RUFH: one complete POST.
async fn rufh_upload(server: &TestServer, name: &str, data: &[u8]) -> (String, Resp) {
    let disposition = format!("attachment; filename=\"{name}\"");
    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-complete", "?1"),
            ("content-disposition", disposition.as_str()),
        ],
        data.to_vec(),
    )
    .await;
    let id = resp.header("location").map(upload_id).unwrap_or_default();
    (id, resp)
}

async fn metrics(server: &TestServer) -> String {
    let resp = request(Method::GET, &server.url("/metrics"), &[], Vec::new()).await;
    assert_eq!(resp.status, 200);
    String::from_utf8(resp.body).expect("UTF-8 metrics")
}

/// The sum of a metric's samples whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            let rest = &line[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|label| rest.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn outbox_files(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir().join("outbox"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn check_upload_fields(event: &Value, id: &str, name: &str, size: usize) {
    assert_eq!(event["upload"]["id"], id, "{event}");
    assert_eq!(event["upload"]["name"], name, "{event}");
    assert_eq!(event["upload"]["namespace"], "", "{event}");
    assert_eq!(event["upload"]["size"], size, "{event}");
    assert!(
        event["time"]
            .as_u64()
            .is_some_and(|time| time > 1_600_000_000),
        "{event}"
    );
    assert!(event["upload"]["metadata"].is_object(), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_arrives_from_every_dialect() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(
        dir.path(),
        &receiver.url("/events"),
        &[
            "--hook-progress-interval",
            "0s",
            "--upload-ttl",
            "2s",
            "--expiry-interval",
            "200ms",
        ],
    );
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 300_000);

    let (seed_id, done) = seed_upload(&server, "seed.bin", &data).await;
    assert_eq!(done.status, 200, "{}", done.describe());
    let (tus_id, done) = tus_upload(&server, "tus.bin", &data).await;
    assert_eq!(done.status, 204, "{}", done.describe());
    let (rufh_id, done) = rufh_upload(&server, "rufh.bin", &data).await;
    assert!(matches!(done.status, 200 | 201), "{}", done.describe());

    for (id, name) in [
        (&seed_id, "seed.bin"),
        (&tus_id, "tus.bin"),
        (&rufh_id, "rufh.bin"),
    ] {
        let created = receiver.wait_for(id, "created").await;
        check_upload_fields(&created, id, name, data.len());
        assert_eq!(created["id"], format!("{id}.created"));
        let completed = receiver.wait_for(id, "completed").await;
        check_upload_fields(&completed, id, name, data.len());
        assert_eq!(completed["upload"]["offset"], data.len());
        assert_eq!(completed["upload"]["digests"]["sha256"], sha256_hex(&data));
        assert!(completed["upload"]["digests"]["crc32c"].is_string());
        let progress = receiver.wait_for(id, "progress").await;
        assert_eq!(progress["upload"]["offset"], data.len(), "{progress}");
        assert!(progress["upload"].get("digests").is_none());
    }
    let tus_created = receiver.wait_for(&tus_id, "created").await;
    assert_eq!(
        tus_created["upload"]["metadata"]["kind"],
        BASE64.encode("test")
    );
    // Created before completed, for each upload (delivery keeps commit order).
    let events = receiver.events();
    let position = |id: &str| events.iter().position(|event| event["id"] == id);
    assert!(position(&format!("{seed_id}.created")) < position(&format!("{seed_id}.completed")));

    // Cancelled: a tus upload terminated half-way.
    let length = "1000";
    let resp = request(
        Method::POST,
        &server.url("/uploads"),
        &[("tus-resumable", "1.0.0"), ("upload-length", length)],
        Vec::new(),
    )
    .await;
    let location = resp.header("location").expect("Location").to_owned();
    let cancelled_id = upload_id(&location);
    let resp = request(
        Method::DELETE,
        &location,
        &[("tus-resumable", "1.0.0")],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    let cancelled = receiver.wait_for(&cancelled_id, "cancelled").await;
    assert_eq!(cancelled["upload"]["size"], 1000);

    // Expired: a seed upload left idle past the 2 s time to live.
    let (idle, _) = {
        let url = server.url("/api/upload?file=idle.bin");
        let resp = request(Method::POST, &url, &[], Vec::new()).await;
        let location = resp.header("location").expect("Location").to_owned();
        (upload_id(&location), resp)
    };
    let expired = receiver.wait_for(&idle, "expired").await;
    assert_eq!(expired["upload"]["name"], "idle.bin");

    // Exactly once each here (the receiver never failed), all signed.
    let mut ids = receiver.seen.attempts.lock().expect("lock").clone();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        count,
        "an event was delivered twice without a failure"
    );
    receiver.assert_all_signed();

    // The metrics moved, and the outbox drained.
    eventually("an empty outbox", || outbox_files(&server).is_empty()).await;
    let text = metrics(&server).await;
    let completed = metric(
        &text,
        "tenax_hook_deliveries_total",
        &["target=\"webhook\"", "event=\"completed\""],
    );
    assert!(completed >= 3.0, "{text}");
    assert!(metric(&text, "tenax_hook_deliveries_total", &["event=\"expired\""]) >= 1.0);
    assert_eq!(metric(&text, "tenax_hook_outbox_depth", &[]), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_survives_kill9_before_delivery_and_arrives_once() {
    let receiver = Receiver::start(0).await;
    receiver.seen.failing.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(dir.path(), &receiver.url("/events"), &[]);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 100_000);
    let (id, done) = seed_upload(&server, "crash.bin", &data).await;
    assert_eq!(done.status, 200, "{}", done.describe());
    let completed_id = format!("{id}.completed");
    // The receiver refuses; the failures show in the metrics.
    eventually("a failed attempt", || {
        receiver
            .seen
            .attempts
            .lock()
            .expect("lock")
            .iter()
            .any(|seen| seen.ends_with(".created"))
    })
    .await;
    let text = metrics(&server).await;
    assert!(
        metric(&text, "tenax_hook_failures_total", &["target=\"webhook\""]) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "tenax_hook_outbox_depth", &[]) >= 2.0,
        "{text}"
    );
    server.kill9();

    // Simulate the worst crash window too: the completion event back to
    // pending, as if the server died between publication and release; and
    // a pending event of an upload that never came to be.
    let outbox = server.data_dir().join("outbox");
    let committed = outbox_files(&server)
        .into_iter()
        .find(|name| name.ends_with(&format!("-{completed_id}.json")))
        .expect("the completed event waits in the outbox");
    std::fs::rename(
        outbox.join(&committed),
        outbox.join(format!("{completed_id}.pending")),
    )
    .expect("make it pending");
    let ghost = "00000000000000000000000000000000";
    std::fs::write(
        outbox.join(format!("{ghost}.created.pending")),
        json!({"id": format!("{ghost}.created"), "type": "created", "time": 1,
               "upload": {"id": ghost, "namespace": "", "name": null, "size": null,
                          "offset": 0, "metadata": {}}})
        .to_string(),
    )
    .expect("write a ghost event");

    receiver.seen.failing.store(false, Ordering::SeqCst);
    server.restart();
    let completed = receiver.wait_for(&id, "completed").await;
    assert_eq!(completed["upload"]["digests"]["sha256"], sha256_hex(&data));
    receiver.wait_for(&id, "created").await;
    eventually("an empty outbox", || outbox_files(&server).is_empty()).await;
    // After deduplication by id: exactly one completed event, and the
    // ghost never delivered.
    assert_eq!(receiver.of(&id, "completed").len(), 1);
    assert!(receiver.of(ghost, "created").is_empty());
    let accepted = receiver
        .events()
        .iter()
        .filter(|event| event["id"] == completed_id.as_str())
        .count();
    assert!(accepted >= 1);
    receiver.assert_all_signed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_later() {
    // A port with nobody behind it, for now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let url = format!("http://127.0.0.1:{port}/events");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = start(dir.path(), &url, &[]);
    let mut rng = Rng::from_env_or_os();
    let mut ids = Vec::new();
    for index in 0..3 {
        let data = random_bytes(&mut rng, 10_000 + index);
        let (id, done) = seed_upload(&server, &format!("down-{index}.bin"), &data).await;
        assert_eq!(done.status, 200, "{}", done.describe());
        ids.push(id);
    }
    // A restart while the receiver is down loses nothing either.
    let text = metrics(&server).await;
    assert!(
        metric(&text, "tenax_hook_outbox_depth", &[]) >= 6.0,
        "{text}"
    );
    server.terminate(Duration::from_secs(10));
    server.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let receiver = Receiver::start(port).await;
    for id in &ids {
        receiver.wait_for(id, "created").await;
        receiver.wait_for(id, "completed").await;
    }
    eventually("an empty outbox", || outbox_files(&server).is_empty()).await;
    receiver.assert_all_signed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_hook_gets_every_event_on_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ncat > \"{}/$TENAX_EVENT_ID.json\"\necho '{{\"ok\":true}}'\n",
            spool.display()
        ),
    )
    .expect("write the script");
    let command = format!("sh {}", script.display());
    let server = TestServer::start_with(BIN, &["--hook-command", &command]);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 5000);
    let (id, done) = seed_upload(&server, "command.bin", &data).await;
    assert_eq!(done.status, 200, "{}", done.describe());
    let path = spool.join(format!("{id}.completed.json"));
    eventually("the command's completed event", || path.exists()).await;
    let start = Instant::now();
    let event: Value = loop {
        if let Ok(event) = serde_json::from_slice(&std::fs::read(&path).expect("read")) {
            break event;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the event file stays unreadable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event["type"], "completed");
    assert_eq!(event["upload"]["digests"]["sha256"], sha256_hex(&data));
    assert!(spool.join(format!("{id}.created.json")).exists());
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "tenax_hook_deliveries_total",
            &["target=\"command\""]
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_create_hook_rejects_and_renames_in_every_dialect() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = secret_file(dir.path());
    let server = TestServer::start_with(
        BIN,
        &[
            "--pre-create-hook-url",
            &receiver.url("/pre-create"),
            "--hook-secret-file",
            secret.to_str().expect("UTF-8"),
        ],
    );
    let message = "files called reject-* are not welcome here";
    // seed
    let resp = request(
        Method::POST,
        &server.url("/api/upload?file=reject-1.bin"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(assert_problem(&resp, 422)["detail"], message);
    let resp = request(
        Method::PUT,
        &server.url("/api/upload?file=reject-2.bin"),
        &[],
        b"x".to_vec(),
    )
    .await;
    assert_eq!(assert_problem(&resp, 422)["detail"], message);
    // tus
    let (_, resp) = {
        let metadata = format!("filename {}", BASE64.encode("reject-3.bin"));
        let resp = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                ("tus-resumable", "1.0.0"),
                ("upload-length", "10"),
                ("upload-metadata", &metadata),
            ],
            Vec::new(),
        )
        .await;
        ((), resp)
    };
    assert_eq!(assert_problem(&resp, 422)["detail"], message);
    // RUFH
    let (_, resp) = rufh_upload(&server, "reject-4.bin", b"abc").await;
    assert_eq!(assert_problem(&resp, 422)["detail"], message);
    // Nothing was created.
    let files = request(Method::GET, &server.url("/api/files"), &[], Vec::new()).await;
    assert!(
        !String::from_utf8_lossy(&files.body).contains("reject"),
        "{}",
        files.describe()
    );

    // Renamed, with the hook's metadata.
    let (_, done) = seed_upload(&server, "rename-me.bin", b"renamed content").await;
    assert_eq!(done.status, 200, "{}", done.describe());
    assert_eq!(done.json()["name"], "renamed.bin");
    let file = request(
        Method::GET,
        &server.url("/files/renamed.bin"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(file.body, b"renamed content");
    let absent = request(
        Method::GET,
        &server.url("/files/rename-me.bin"),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(absent.status, 404);
    // The hook saw what the client asked for.
    let asked = receiver.seen.pre_creates.lock().expect("lock").clone();
    assert!(
        asked
            .iter()
            .any(|ask| ask["upload"]["name"] == "rename-me.bin"),
        "{asked:?}"
    );
    assert!(asked.iter().all(|ask| ask["type"] == "pre-create"));
    receiver.assert_all_signed();
    let text = metrics(&server).await;
    assert!(
        metric(
            &text,
            "tenax_hook_pre_create_total",
            &["result=\"rejected\""]
        ) >= 4.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "tenax_hook_pre_create_total",
            &["result=\"accepted\""]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_create_hook_that_fails_refuses_with_503_or_fails_open() {
    // A hook that never answers: accepts and stays silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/pre-create",
        silent.local_addr().expect("address")
    );
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let closed = TestServer::start_with(
        BIN,
        &["--pre-create-hook-url", &url, "--hook-timeout", "500ms"],
    );
    let started = Instant::now();
    let resp = request(
        Method::POST,
        &closed.url("/api/upload?file=a.bin"),
        &[],
        Vec::new(),
    )
    .await;
    assert_problem(&resp, 503);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hook call did not time out"
    );
    let open = TestServer::start_with(
        BIN,
        &[
            "--pre-create-hook-url",
            &url,
            "--hook-timeout",
            "500ms",
            "--pre-create-hook-fail-open",
        ],
    );
    let (_, done) = seed_upload(&open, "b.bin", b"fail-open").await;
    assert_eq!(done.status, 200, "{}", done.describe());
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_completion_answer_reaches_the_final_response() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(
        dir.path(),
        &receiver.url("/events"),
        &["--hook-completion-response"],
    );
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 20_000);

    let (id, done) = seed_upload(&server, "answer.bin", &data).await;
    assert_eq!(done.status, 200, "{}", done.describe());
    let expected = json!({"processed": format!("{id}.completed"), "note": "reçu"});
    assert_eq!(done.json()["hookResponse"], expected, "{}", done.describe());

    let (id, done) = tus_upload(&server, "answer-tus.bin", &data).await;
    assert_eq!(done.status, 204, "{}", done.describe());
    let header = done
        .header("tenax-hook-response")
        .expect("Tenax-Hook-Response");
    let answer: Value = serde_json::from_str(header).expect("JSON header");
    assert_eq!(answer["processed"], format!("{id}.completed"));
    assert_eq!(answer["note"], "reçu");

    let (id, done) = rufh_upload(&server, "answer-rufh.bin", &data).await;
    let header = done
        .header("tenax-hook-response")
        .expect("Tenax-Hook-Response");
    let answer: Value = serde_json::from_str(header).expect("JSON header");
    assert_eq!(answer["processed"], format!("{id}.completed"));

    // Delivered once, by the request, not again by the delivery task.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts = receiver.seen.attempts.lock().expect("lock").clone();
    let completions = attempts
        .iter()
        .filter(|seen| seen.ends_with(".completed"))
        .count();
    assert_eq!(completions, 3, "{attempts:?}");
    receiver.assert_all_signed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_is_announced_while_it_streams() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(
        dir.path(),
        &receiver.url("/events"),
        &["--hook-progress-interval", "0s"],
    );
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 4 << 20);
    let (id, done) = tus_upload(&server, "long.bin", &data).await;
    assert_eq!(done.status, 204, "{}", done.describe());
    receiver.wait_for(&id, "completed").await;
    eventually("the progress events", || {
        receiver
            .of(&id, "progress")
            .iter()
            .any(|event| event["upload"]["offset"] == data.len())
    })
    .await;
    let offsets: Vec<u64> = receiver
        .of(&id, "progress")
        .iter()
        .filter_map(|event| event["upload"]["offset"].as_u64())
        .collect();
    // One PATCH, yet several durable offsets announced on the way.
    assert!(offsets.len() >= 2, "{offsets:?}");
    assert!(offsets.iter().all(|offset| *offset <= data.len() as u64));
    receiver.assert_all_signed();
}
