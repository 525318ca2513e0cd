//! End-to-end uploads: the client (library and `tenax upload`) and plain
//! `curl` against the real `tenax serve` binary, over real sockets on
//! loopback: chunk boundaries, large files, the seed protocol's literal
//! requests, unknown totals, a flapping link (fault proxy), a server killed
//! with SIGKILL mid-upload, and the CLI killed and run again.
//!
//! Every loop is bounded in count and time; random data comes from
//! [`Rng`] (replay a failure with the printed `TENAX_TEST_SEED`).

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::files::{assert_same_file, held_on_disk, stored_path, write_random_file};
use support::process::{json_line, start_and_kill_cli, text, wait_output};
use support::uploads::{quick_uploader, recording};
use support::{BIN, KIB, MIB, assert_object_json, random_bytes, sha256_hex};
use tenax_client::{Event, Progress};
use tenax_client::{Protocol, Uploader};
use tenax_testkit::{FaultProxy, LinkConfig, Outage, Rng, Schedule, TestServer, WeakLink};

/// Upper bound for any single wait on the network or a child process.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `GET /files/NAME` with reqwest: the status and the body.
async fn get_file(server: &TestServer, name: &str) -> (u16, Vec<u8>) {
    tokio::time::timeout(
        IO_TIMEOUT,
        support::http::get(&server.url(&format!("/files/{name}"))),
    )
    .await
    .expect("GET timed out")
}

/// `tenax upload ARGS…`, waited for with a deadline.
fn run_cli(args: &[&str]) -> Output {
    support::process::run_cli(args, IO_TIMEOUT)
}

/// A curl response: final status, the final header block, the body.
#[derive(Debug)]
struct CurlResp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl CurlResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", text(&self.body)))
    }
}

/// Runs `curl -s -D HEADERS -o BODY ARGS…` and reads the final response
/// (`1xx` blocks such as `100 Continue` are skipped).
fn curl(dir: &Path, args: &[&str]) -> CurlResp {
    let headers_path = dir.join("curl-headers");
    let body_path = dir.join("curl-body");
    let _ = fs::remove_file(&headers_path);
    let _ = fs::remove_file(&body_path);
    let child = Command::new("curl")
        .arg("-s")
        .arg("--max-time")
        .arg("60")
        .arg("-D")
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let out = wait_output(child, IO_TIMEOUT);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let raw = fs::read_to_string(&headers_path).expect("curl wrote the headers");
    let mut blocks: Vec<(u16, Vec<(String, String)>)> = Vec::new();
    for line in raw.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {line:?}"));
            blocks.push((status, Vec::new()));
        } else if let Some((k, v)) = line.split_once(':')
            && let Some(block) = blocks.last_mut()
        {
            block.1.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let (status, headers) = blocks
        .into_iter()
        .rfind(|(s, _)| *s >= 200)
        .unwrap_or_else(|| panic!("no final response in {raw:?}"));
    CurlResp {
        status,
        headers,
        body: fs::read(&body_path).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// 1. Sizes around the chunk boundary, 100 MiB, and the CLI's JSON report
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_uploads_sizes_around_the_chunk_boundary() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let chunk = 256 * KIB;
    for size in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 7] {
        let name = format!("size-{size}.bin");
        let path = dir.path().join(&name);
        let data = random_bytes(&mut rng, size as usize);
        fs::write(&path, &data).expect("write source");
        let (uploader, log) = recording(quick_uploader(chunk));
        let report = tokio::time::timeout(IO_TIMEOUT, uploader.upload(&path, &server.url("/")))
            .await
            .unwrap_or_else(|_| panic!("upload of {size} bytes timed out"))
            .unwrap_or_else(|e| panic!("upload of {size} bytes failed: {e:#}"));
        assert_eq!(report.name, name);
        assert_eq!(report.size, size);
        assert_eq!(report.sha256, sha256_hex(&data), "size {size}");
        assert_eq!(report.bytes_sent, size, "no faults: nothing re-sent");
        assert_eq!(report.retries, 0, "size {size}");
        assert!(
            report.url.starts_with(&server.url("/uploads/")),
            "{}",
            report.url
        );
        let events = log.lock().expect("log").clone();
        assert!(
            matches!(events.last().map(|p| &p.event), Some(Event::Completed)),
            "size {size}: {events:?}"
        );
        let (status, body) = get_file(&server, &name).await;
        assert_eq!(status, 200, "GET /files/{name}");
        assert!(
            body == data,
            "GET /files/{name}: bytes differ (size {size})"
        );
        assert_eq!(fs::read(stored_path(&server, &name)).expect("stored"), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_uploads_100_mib() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 100 * MIB;
    let path = dir.path().join("big.bin");
    let sha = write_random_file(&mut rng, &path, size);
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        quick_uploader(8 * MIB).upload(&path, &server.url("/")),
    )
    .await
    .expect("upload timed out")
    .expect("upload failed");
    eprintln!("100 MiB uploaded in {:.1?}", started.elapsed());
    assert_eq!(report.size, size);
    assert_eq!(report.sha256, sha);
    assert_eq!(report.bytes_sent, size);
    assert_eq!(report.retries, 0);
    assert_same_file(&stored_path(&server, "big.bin"), &path);
}

/// At its defaults the library sends the whole file in one request in
/// every dialect (no round trip and sync per chunk), and its progress
/// moves while that request streams, before any acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_send_one_request_and_report_progress_while_it_streams() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    // 12 MiB (more than the old 8 MiB chunks) at 16 MB/s: most of a
    // second of streaming, so several reports.
    let link = WeakLink::start(
        server.addr(),
        LinkConfig {
            uplink: Some(16_000_000),
            downlink: None,
            delay: Duration::from_millis(5),
            schedule: Schedule::always_up(),
            outage: Outage::Reset,
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let size = 12 * MIB;
    for protocol in [Protocol::Seed, Protocol::Tus, Protocol::Ietf] {
        let name = format!("one-request-{protocol}.bin");
        let path = dir.path().join(&name);
        write_random_file(&mut rng, &path, size);
        let (uploader, log) = recording(Uploader::new().protocol(protocol));
        let url = format!("http://{}/", link.addr());
        let report = tokio::time::timeout(IO_TIMEOUT, uploader.upload(&path, &url))
            .await
            .unwrap_or_else(|_| panic!("{protocol}: the upload timed out"))
            .unwrap_or_else(|e| panic!("{protocol}: the upload failed: {e:#}"));
        assert_eq!((report.bytes_sent, report.retries), (size, 0), "{protocol}");
        assert_same_file(&stored_path(&server, &name), &path);
        let log = log.lock().expect("log").clone();
        let sending: Vec<&Progress> = log.iter().filter(|p| p.event == Event::Sending).collect();
        assert!(sending.len() >= 2, "{protocol}: {log:?}");
        // One request: nothing is acknowledged while any body streams (a
        // second request would stream after the first one's answer).
        assert!(
            sending.iter().all(|p| p.acknowledged == 0),
            "{protocol}: {log:?}"
        );
        assert!(
            sending.windows(2).all(|w| w[0].sending <= w[1].sending),
            "{protocol}: {log:?}"
        );
        let most = sending.iter().map(|p| p.sending).max().unwrap_or(0);
        assert!(most >= size / 2, "{protocol}: at most {most} reported");
        let last = log.last().expect("events");
        assert_eq!((&last.event, last.sending), (&Event::Completed, 0));
    }
}

#[test]
fn cli_json_report_and_stored_bytes() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 3 * 256 * KIB + 5;
    let path = dir.path().join("cli.bin");
    let data = random_bytes(&mut rng, size as usize);
    fs::write(&path, &data).expect("write source");
    let journal = dir.path().join("journal");
    let out = run_cli(&[
        path.to_str().expect("utf-8"),
        &server.url(""),
        "--chunk-size",
        "256KiB",
        "--json",
        "--journal-dir",
        journal.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let json = json_line(&out);
    let url = json["url"].as_str().expect("url is a string");
    assert!(url.starts_with(&server.url("/uploads/")), "{json}");
    assert_eq!(json["name"], "cli.bin", "{json}");
    assert_eq!(json["size"], size, "{json}");
    assert_eq!(json["sha256"], sha256_hex(&data), "{json}");
    assert_eq!(json["bytes_sent"], size, "{json}");
    assert_eq!(json["retries"], 0, "{json}");
    let seconds = json["seconds"].as_f64().expect("seconds is a number");
    assert!((0.0..60.0).contains(&seconds), "{json}");
    assert_eq!(
        fs::read(stored_path(&server, "cli.bin")).expect("stored"),
        data
    );
    // The journal entry is gone once the upload is finished.
    let left = fs::read_dir(&journal)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert_eq!(left, 0, "journal entries left after a finished upload");
}

#[test]
fn cli_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("f.bin");
    fs::write(&path, b"hello").expect("write");
    let file = path.to_str().expect("utf-8");
    let journal = dir.path().join("journal");
    let journal = journal.to_str().expect("utf-8");
    let missing = dir.path().join("missing.bin");
    let missing = missing.to_str().expect("utf-8");
    // A port nothing listens on (bound, then released).
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let cases: [(&[&str], i32); 4] = [
        (&["--bogus-flag", file, "http://127.0.0.1:1/"], 2),
        (&[file, "ftp://127.0.0.1/", "--journal-dir", journal], 3),
        (
            &[
                file,
                &format!("http://{closed}/"),
                "--max-retries",
                "0",
                "--journal-dir",
                journal,
            ],
            4,
        ),
        (
            &[missing, "http://127.0.0.1:1/", "--journal-dir", journal],
            6,
        ),
    ];
    for (args, code) in cases {
        let out = run_cli(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: stderr {}",
            text(&out.stderr)
        );
        assert!(
            !out.stderr.is_empty(),
            "{args:?}: an error message is expected"
        );
    }
}

// ---------------------------------------------------------------------------
// 2–3. The seed protocol's literal requests and unknown totals, with curl
// ---------------------------------------------------------------------------

#[test]
fn curl_literal_seed_requests() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let data = random_bytes(&mut rng, 1_000_000);
    let first = dir.path().join("chunk0");
    let rest = dir.path().join("chunk1");
    fs::write(&first, &data[..262_144]).expect("write");
    fs::write(&rest, &data[262_144..]).expect("write");
    let url = server.url("/api/upload?file=abc.zip");

    let r = curl(
        dir.path(),
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", first.display()),
            "-H",
            "Content-Range: bytes 0-262143/1000000",
            &url,
        ],
    );
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(r.header("range"), Some("bytes=0-262143"), "{r:?}");

    let r = curl(
        dir.path(),
        &["-X", "PUT", "-H", "Content-Range: bytes */*", &url],
    );
    assert_eq!(r.status, 308, "status query: {r:?}");
    assert_eq!(r.header("range"), Some("bytes=0-262143"), "{r:?}");

    let r = curl(
        dir.path(),
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", rest.display()),
            "-H",
            "Content-Range: bytes 262144-999999/1000000",
            &url,
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let json = r.json();
    assert_object_json(&json, "abc.zip", &data);
    assert_eq!(json["size"], "1000000");

    let r = curl(dir.path(), &[&server.url("/files/abc.zip")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == data, "GET /files/abc.zip differs from the source");
}

#[test]
fn curl_unknown_total_then_final_chunk() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let total = 700_001usize;
    let chunk = 262_144usize;
    let data = random_bytes(&mut rng, total);
    let url = server.url("/api/upload?file=stream.bin");
    let mut at = 0usize;
    for round in 0..10 {
        assert!(round < 9, "too many chunks");
        let end = (at + chunk).min(total);
        let body = dir.path().join("part");
        fs::write(&body, &data[at..end]).expect("write");
        let last = end == total;
        let range = if last {
            format!("Content-Range: bytes {at}-{}/{total}", end - 1)
        } else {
            format!("Content-Range: bytes {at}-{}/*", end - 1)
        };
        let r = curl(
            dir.path(),
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", body.display()),
                "-H",
                &range,
                &url,
            ],
        );
        if last {
            assert_eq!(r.status, 200, "{range}: {r:?}");
            assert_object_json(&r.json(), "stream.bin", &data);
            break;
        }
        assert_eq!(r.status, 308, "{range}: {r:?}");
        let expected = format!("bytes=0-{}", end - 1);
        assert_eq!(r.header("range"), Some(expected.as_str()), "{r:?}");
        at = end;
    }
    let r = curl(dir.path(), &[&server.url("/files/stream.bin")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body == data, "GET /files/stream.bin differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_total_finalised_by_an_empty_status_query() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let total = 600_000usize;
    let chunk = 200_000usize;
    let data = random_bytes(&mut rng, total);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(IO_TIMEOUT)
        .build()
        .expect("client");
    let url = server.url("/api/upload?file=open-ended.bin");
    for at in (0..total).step_by(chunk) {
        let end = at + chunk;
        let r = client
            .put(&url)
            .header("Content-Range", format!("bytes {at}-{}/*", end - 1))
            .body(data[at..end].to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status().as_u16(), 308, "chunk at {at}");
        assert_eq!(
            r.headers().get("range").and_then(|v| v.to_str().ok()),
            Some(format!("bytes=0-{}", end - 1).as_str())
        );
    }
    // A `bytes */*` query does not finalise; `bytes */TOTAL` does.
    let r = client
        .put(&url)
        .header("Content-Range", "bytes */*")
        .header("Content-Length", "0")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 308);
    let r = client
        .put(&url)
        .header("Content-Range", format!("bytes */{total}"))
        .header("Content-Length", "0")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status().as_u16(), 200);
    let json: Value = r.json().await.expect("final JSON");
    assert_object_json(&json, "open-ended.bin", &data);
    let (status, body) = get_file(&server, "open-ended.bin").await;
    assert_eq!(status, 200);
    assert!(body == data, "GET /files/open-ended.bin differs");
}

// ---------------------------------------------------------------------------
// 4. The flapping link
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_256_mib() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let proxy = FaultProxy::start(server.addr(), (MIB, 8 * MIB), rng.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let size = 256 * MIB;
    let chunk = 8 * MIB;
    let path = dir.path().join("flappy.bin");
    let sha = write_random_file(&mut rng, &path, size);
    let started = Instant::now();
    let (uploader, log) = recording(quick_uploader(chunk));
    let report = tokio::time::timeout(
        Duration::from_secs(600),
        uploader.upload(&path, &format!("http://{}/", proxy.addr())),
    )
    .await
    .expect("upload through the flapping link timed out")
    .expect("upload through the flapping link failed");
    let stats = proxy.stats();
    let cuts = stats.cuts.load(std::sync::atomic::Ordering::Relaxed);
    let connections = stats.connections.load(std::sync::atomic::Ordering::Relaxed);
    let client_bytes = stats
        .client_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let overhead = report.bytes_sent - report.size;
    eprintln!(
        "flapping link: {} MiB in {:.1?}, {cuts} cuts over {connections} connections, \
         {} retries, bytes_sent {} (overhead {overhead} bytes = {:.3}% of the size, \
         {:.2} chunk per cut), proxy forwarded {client_bytes} client bytes",
        size / MIB,
        started.elapsed(),
        report.retries,
        report.bytes_sent,
        overhead as f64 * 100.0 / size as f64,
        overhead as f64 / chunk as f64 / cuts.max(1) as f64,
    );
    assert_eq!(report.size, size);
    assert_eq!(report.sha256, sha);
    assert!(cuts >= 20, "the proxy cut only {cuts} times");
    assert!(
        overhead <= cuts * chunk,
        "{overhead} bytes re-sent for {cuts} cuts of at most {chunk} bytes each"
    );
    let resumed = log
        .lock()
        .expect("log")
        .iter()
        .filter(|p| matches!(p.event, Event::Resumed { .. }))
        .count();
    assert!(resumed > 0, "the client never resumed");
    assert_same_file(&stored_path(&server, "flappy.bin"), &path);
}

// ---------------------------------------------------------------------------
// 5. The server killed with SIGKILL mid-upload
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_then_restarted() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 64 * MIB;
    let chunk = 4 * MIB;
    let path = dir.path().join("survivor.bin");
    let sha = write_random_file(&mut rng, &path, size);
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let uploader = quick_uploader(chunk).on_progress({
        let log = Arc::clone(&log);
        move |p: Progress| {
            if p.event == Event::Acknowledged {
                let _ = ack_tx.send(p.acknowledged);
            }
            log.lock().expect("log").push(p);
        }
    });
    let url = server.url("/");
    // The upload runs on this task: `Uploader::upload`'s future is not
    // `Send`, so it cannot be given to `tokio::spawn` (reported as a bug).
    let upload = tokio::time::timeout(Duration::from_secs(180), uploader.upload(&path, &url));
    // The killer waits until the server has acknowledged a few chunks, then
    // kills it while the next ones are on their way, and restarts it.
    let killer = async move {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let acked = tokio::time::timeout_at(deadline, ack_rx.recv())
                .await
                .expect("no acknowledgement in time")
                .expect("the upload ended early");
            if acked >= 3 * chunk {
                break;
            }
        }
        // Preferably mid-chunk: once bytes of the next chunk are on disk
        // (bounded wait; kill anyway after it).
        let acked = held_on_disk(&server);
        for _ in 0..2000 {
            if held_on_disk(&server) > acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (server, held) = tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.kill9();
            let held = held_on_disk(&server);
            (server, held)
        })
        .await
        .expect("kill");
        eprintln!("killed the server holding {held} of {size} bytes");
        // The client retries against a dead port for a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = tokio::task::spawn_blocking(move || {
            let mut server = server;
            server.restart();
            server
        })
        .await
        .expect("restart");
        (server, held)
    };
    let (report, (server, held)) = tokio::join!(upload, killer);
    assert!(
        held >= 3 * chunk && held < size,
        "held {held} of {size} at the kill"
    );
    let report = report
        .expect("upload timed out after the restart")
        .expect("upload failed after the restart");
    assert_eq!(report.sha256, sha);
    assert_eq!(report.size, size);
    assert!(report.retries >= 1, "{report:?}");
    assert!(
        report.bytes_sent < 2 * size,
        "bytes_sent {} for a {size}-byte file: it started over",
        report.bytes_sent
    );
    let log = log.lock().expect("log");
    let resumed_from: Vec<u64> = log
        .iter()
        .filter_map(|p| match p.event {
            Event::Resumed { from } => Some(from),
            _ => None,
        })
        .collect();
    assert!(
        resumed_from.iter().any(|&from| from >= 3 * chunk),
        "no resume from the bytes held before the kill: {resumed_from:?}"
    );
    assert!(
        !log.iter()
            .any(|p| matches!(p.event, Event::Restarted { .. })),
        "the session was restarted instead of resumed"
    );
    eprintln!(
        "resumed from {resumed_from:?}; bytes_sent {} for {size}",
        report.bytes_sent
    );
    assert_same_file(&stored_path(&server, "survivor.bin"), &path);
}

// ---------------------------------------------------------------------------
// 6. The CLI killed mid-upload and run again
// ---------------------------------------------------------------------------

/// Starts `tenax upload` and SIGKILLs it once the server holds at least
/// `threshold` bytes (but not all); returns the bytes held at the kill.
fn kill_cli_midway(server: &TestServer, args: &[&str], threshold: u64, size: u64) -> u64 {
    let held = start_and_kill_cli(server, args, threshold, IO_TIMEOUT);
    let held_after = held_on_disk(server);
    assert!(
        held_after < size,
        "the server held the whole file ({held_after}) when the client was killed; \
         the upload was too fast to interrupt"
    );
    held.max(held_after)
}

#[test]
fn cli_killed_then_rerun_resumes_and_restarts_after_a_change() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 64 * MIB;
    let path = dir.path().join("resume.bin");
    let sha = write_random_file(&mut rng, &path, size);
    let journal = dir.path().join("journal");
    let url = server.url("");
    let args = [
        path.to_str().expect("utf-8"),
        url.as_str(),
        "--chunk-size",
        "1MiB",
        "--json",
        "--stall-timeout",
        "10s",
        "--journal-dir",
        journal.to_str().expect("utf-8"),
    ];

    // Run 1, killed; run 2 resumes.
    let held = kill_cli_midway(&server, &args, 8 * MIB, size);
    eprintln!("killed the client with {held} of {size} bytes on the server");
    let out = run_cli(&args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let json = json_line(&out);
    assert_eq!(json["sha256"], sha, "{json}");
    assert_eq!(json["size"], size, "{json}");
    let sent = json["bytes_sent"].as_u64().expect("bytes_sent");
    assert!(
        sent < size,
        "the second run sent {sent} bytes of {size}: it did not resume"
    );
    assert!(
        stderr.contains("resuming at byte"),
        "no resume message: {stderr}"
    );
    assert_same_file(&stored_path(&server, "resume.bin"), &path);

    // Run 3, killed; the file is rewritten (same size, new content); run 4
    // starts over cleanly and says why.
    let before = held_on_disk(&server);
    kill_cli_midway(&server, &args, before + 8 * MIB, size + before);
    let sha2 = write_random_file(&mut rng, &path, size);
    assert_ne!(sha, sha2);
    let out = run_cli(&args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let json = json_line(&out);
    assert_eq!(json["sha256"], sha2, "{json}");
    assert_eq!(
        json["bytes_sent"], size,
        "a restart sends the whole file: {json}"
    );
    assert!(
        stderr.contains("changed"),
        "no message about the changed file on stderr: {stderr}"
    );
    assert_same_file(&stored_path(&server, "resume.bin"), &path);
}
