//! The client's tus and IETF dialects (and `auto`) end to end, against the
//! real `tenax serve` binary over loopback: sizes around the chunk boundary,
//! a flapping link (fault proxy), parallel tus uploads (concatenation)
//! through the library and the CLI, and a CLI run killed mid-upload then run
//! again (journal).
//!
//! Random data comes from [`Rng`] (replay a failure with the printed
//! `TENAX_TEST_SEED`); every wait is bounded.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tenax_client::{Event, Progress, Protocol, Uploader};
use tenax_testkit::{FaultProxy, Rng, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_tenax");

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Upper bound for any single wait on the network or a child process.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The dialects under test, as the library and the CLI name them.
const DIALECTS: [(Protocol, &str); 3] = [
    (Protocol::Tus, "tus"),
    (Protocol::Ietf, "ietf"),
    (Protocol::Auto, "auto"),
];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `len` random bytes to `path` in blocks; returns their SHA-256.
fn write_random_file(rng: &mut Rng, path: &Path, len: u64) -> String {
    let mut file = fs::File::create(path).expect("create the source file");
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut block[..n]);
        hasher.update(&block[..n]);
        file.write_all(&block[..n]).expect("write the source file");
        left -= n as u64;
    }
    file.sync_all().expect("sync the source file");
    hex(&hasher.finalize())
}

/// Asserts that the server published `name` with exactly the bytes of
/// `source` (streamed, block by block).
fn assert_stored(server: &TestServer, name: &str, source: &Path) {
    let stored = server.data_dir().join("files").join(name);
    let mut a = fs::File::open(&stored)
        .unwrap_or_else(|e| panic!("cannot open the stored file {}: {e}", stored.display()));
    let mut b = fs::File::open(source).expect("open the source file");
    let (la, lb) = (
        a.metadata().expect("stat").len(),
        b.metadata().expect("stat").len(),
    );
    assert_eq!(la, lb, "{name}: stored size differs from the source's");
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    while offset < la {
        let n = (la - offset).min(MIB) as usize;
        a.read_exact(&mut ba[..n]).expect("read the stored file");
        b.read_exact(&mut bb[..n]).expect("read the source file");
        assert!(
            ba[..n] == bb[..n],
            "{name}: the stored file differs from the source in the block at {offset}"
        );
        offset += n as u64;
    }
}

/// The total size of the server's in-progress data files (`uploads/*.bin`).
fn held_on_disk(server: &TestServer) -> u64 {
    let Ok(entries) = fs::read_dir(server.data_dir().join("uploads")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A fast uploader for tests: short backoff and stall timeout.
fn quick_uploader(protocol: Protocol, chunk: u64) -> Uploader {
    Uploader::new()
        .protocol(protocol)
        .chunk_size(chunk)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .stall_timeout(Duration::from_secs(5))
        .max_retries(1000)
}

/// Collects the events an uploader reports.
fn recording(uploader: Uploader) -> (Uploader, Arc<Mutex<Vec<Progress>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let uploader = uploader.on_progress(move |p| sink.lock().expect("log").push(p));
    (uploader, log)
}

fn events(log: &Mutex<Vec<Progress>>) -> Vec<Event> {
    log.lock()
        .expect("log")
        .iter()
        .map(|p| p.event.clone())
        .collect()
}

/// The upload URLs created, in order.
fn created(log: &Mutex<Vec<Progress>>) -> Vec<String> {
    events(log)
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionCreated { url } => Some(url),
            _ => None,
        })
        .collect()
}

/// `tenax upload ARGS…`, waited for with a deadline.
fn run_cli(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("upload")
        .args(args)
        .env_remove("TENAX_JOURNAL_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenax upload");
    wait_output(child, IO_TIMEOUT)
}

/// Waits for `child` at most `timeout` (killing it after), collecting its output.
fn wait_output(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "tenax upload did not finish within {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    child.wait_with_output().expect("collect output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The single JSON line `tenax upload --json` prints on stdout.
fn json_line(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one JSON line on stdout: {stdout:?}; stderr: {}",
        text(&out.stderr)
    );
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", lines[0]))
}

/// What `auto` resolves to against `tenax serve` (it offers tus).
fn resolved(protocol: Protocol) -> Protocol {
    match protocol {
        Protocol::Auto => Protocol::Tus,
        other => other,
    }
}

// ---------------------------------------------------------------------------
// 1. Sizes around the chunk boundary, every dialect
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_in_every_dialect() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let chunk = 256 * KIB;
    for (protocol, label) in DIALECTS {
        for size in [0, 1, chunk + 1, 20 * MIB] {
            let name = format!("{label}-{size}.bin");
            let path = dir.path().join(&name);
            let sha = write_random_file(&mut rng, &path, size);
            let chunk = if size > MIB { 4 * MIB } else { chunk };
            let (uploader, log) = recording(quick_uploader(protocol, chunk));
            let report = tokio::time::timeout(IO_TIMEOUT, uploader.upload(&path, &server.url("")))
                .await
                .unwrap_or_else(|_| panic!("{name}: timed out"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report.size, size, "{name}");
            assert_eq!(report.sha256, sha, "{name}");
            assert_eq!(report.protocol, resolved(protocol), "{name}");
            assert_eq!(report.parts, 1, "{name}");
            assert_eq!(report.bytes_sent, size, "{name}: nothing is re-sent");
            assert_eq!(report.retries, 0, "{name}");
            let sessions = created(&log);
            assert_eq!(sessions.len(), 1, "{name}: {sessions:?}");
            assert!(
                sessions[0].starts_with(&server.url("/uploads/")),
                "{name}: not created at the collection: {sessions:?}"
            );
            assert_eq!(report.url, sessions[0], "{name}");
            let events = events(&log);
            assert_eq!(
                events.iter().any(|e| matches!(
                    e,
                    Event::ProtocolChosen {
                        protocol: Protocol::Tus
                    }
                )),
                protocol == Protocol::Auto,
                "{name}: {events:?}"
            );
            assert_eq!(events.last(), Some(&Event::Completed), "{name}");
            assert_stored(&server, &name, &path);
        }
    }
}

// ---------------------------------------------------------------------------
// 2. A flapping link, every dialect
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_in_every_dialect() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 64 * MIB;
    let chunk = 8 * MIB;
    for (protocol, label) in DIALECTS {
        let proxy = FaultProxy::start(server.addr(), (MIB, 4 * MIB), rng.clone()).await;
        let name = format!("flappy-{label}.bin");
        let path = dir.path().join(&name);
        let sha = write_random_file(&mut rng, &path, size);
        let started = Instant::now();
        let (uploader, log) = recording(quick_uploader(protocol, chunk));
        let report = tokio::time::timeout(
            Duration::from_secs(300),
            uploader.upload(&path, &format!("http://{}/", proxy.addr())),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stats = proxy.stats();
        let cuts = stats.cuts.load(Ordering::Relaxed);
        let overhead = report.bytes_sent - report.size;
        eprintln!(
            "{name}: {} MiB in {:.1?}, {cuts} cuts, {} retries, {overhead} bytes re-sent",
            size / MIB,
            started.elapsed(),
            report.retries,
        );
        assert_eq!(report.sha256, sha, "{name}");
        assert_eq!(report.size, size, "{name}");
        assert_eq!(report.protocol, resolved(protocol), "{name}");
        assert!(cuts >= 10, "{name}: the proxy cut only {cuts} times");
        // An interrupted PATCH keeps its prefix: at most the bytes in flight
        // of each cut chunk are sent again.
        assert!(
            overhead <= cuts * chunk,
            "{name}: {overhead} bytes re-sent for {cuts} cuts of at most {chunk} bytes each"
        );
        let resumed = events(&log)
            .iter()
            .filter(|e| matches!(e, Event::Resumed { .. }))
            .count();
        assert!(resumed > 0, "{name}: the client never resumed");
        assert!(
            !events(&log)
                .iter()
                .any(|e| matches!(e, Event::Restarted { .. })),
            "{name}: the upload started over"
        );
        assert_stored(&server, &name, &path);
    }
}

// ---------------------------------------------------------------------------
// 3. Parallel tus uploads (concatenation)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_parts_through_the_flapping_link() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let proxy = FaultProxy::start(server.addr(), (MIB, 4 * MIB), rng.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let size = 48 * MIB + 7;
    let chunk = 4 * MIB;
    let path = dir.path().join("parallel-auto.bin");
    let sha = write_random_file(&mut rng, &path, size);
    let (uploader, log) = recording(quick_uploader(Protocol::Auto, chunk).parallel(3));
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        uploader.upload(&path, &format!("http://{}/", proxy.addr())),
    )
    .await
    .expect("parallel upload timed out")
    .expect("parallel upload failed");
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    eprintln!(
        "parallel: {cuts} cuts, {} retries, {} bytes sent for {size}",
        report.retries, report.bytes_sent
    );
    assert_eq!(report.sha256, sha);
    assert_eq!(report.size, size);
    assert_eq!(report.protocol, Protocol::Tus);
    assert_eq!(report.parts, 3);
    assert!(cuts >= 5, "the proxy cut only {cuts} times");
    assert!(report.bytes_sent - size <= cuts * chunk, "{report:?}");
    let sessions = created(&log);
    assert_eq!(
        sessions.len(),
        4,
        "three parts and a final upload: {sessions:?}"
    );
    assert_eq!(report.url, sessions[3], "the report names the final upload");
    assert_stored(&server, "parallel-auto.bin", &path);

    // A dialect without concatenation falls back to one connection, and says so.
    let (uploader, log) = recording(quick_uploader(Protocol::Ietf, chunk).parallel(3));
    let small = dir.path().join("parallel-ietf.bin");
    let sha = write_random_file(&mut rng, &small, 3 * MIB);
    let report = tokio::time::timeout(IO_TIMEOUT, uploader.upload(&small, &server.url("")))
        .await
        .expect("timed out")
        .expect("ietf upload with --parallel failed");
    assert_eq!(report.sha256, sha);
    assert_eq!(report.parts, 1);
    assert!(
        events(&log)
            .iter()
            .any(|e| matches!(e, Event::Warning { .. })),
        "no warning about the ignored parallelism"
    );
    assert_stored(&server, "parallel-ietf.bin", &small);
}

#[test]
fn cli_parallel_three_direct_and_through_the_proxy() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = runtime.block_on(FaultProxy::start(
        server.addr(),
        (MIB, 4 * MIB),
        rng.clone(),
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let size = 24 * MIB + 3;
    for (label, url) in [
        ("direct", server.url("")),
        ("proxied", format!("http://{}", proxy.addr())),
    ] {
        let name = format!("cli-parallel-{label}.bin");
        let path = dir.path().join(&name);
        let sha = write_random_file(&mut rng, &path, size);
        let out = run_cli(&[
            path.to_str().expect("utf-8"),
            &url,
            "--protocol",
            "tus",
            "--parallel",
            "3",
            "--chunk-size",
            "2MiB",
            "--stall-timeout",
            "10s",
            "--no-journal",
            "--json",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: stderr: {stderr}");
        let json = json_line(&out);
        assert_eq!(json["sha256"], sha, "{name}: {json}");
        assert_eq!(json["size"], size, "{name}: {json}");
        assert_eq!(json["protocol"], "tus", "{name}: {json}");
        assert_eq!(json["parts"], 3, "{name}: {json}");
        eprintln!("{name}: {json}");
        assert_stored(&server, &name, &path);
    }
    assert!(
        proxy.stats().cuts.load(Ordering::Relaxed) >= 3,
        "the proxy did not cut the proxied run"
    );
}

#[test]
fn cli_help_documents_the_new_options() {
    let out = Command::new(BIN)
        .args(["upload", "--help"])
        .output()
        .expect("run --help");
    let help = text(&out.stdout);
    for needle in ["--protocol", "seed", "tus", "ietf", "auto", "--parallel"] {
        assert!(help.contains(needle), "--help lacks {needle}: {help}");
    }
    let out = run_cli(&["x", "http://127.0.0.1:9", "--protocol", "gcs"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad --protocol is a usage error"
    );
}

// ---------------------------------------------------------------------------
// 4. The CLI killed mid-upload and run again (tus journal)
// ---------------------------------------------------------------------------

/// Starts `tenax upload` and SIGKILLs it once the server holds at least
/// `threshold` bytes of uploads in progress; returns them.
fn start_and_kill_cli(server: &TestServer, args: &[&str], threshold: u64) -> u64 {
    let mut child = Command::new(BIN)
        .arg("upload")
        .args(args)
        .env_remove("TENAX_JOURNAL_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenax upload");
    let deadline = Instant::now() + IO_TIMEOUT;
    let held = loop {
        let held = held_on_disk(server);
        if held >= threshold {
            break held;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("tenax upload exited ({status}) before the kill, server held {held}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server never held {threshold} bytes (held {held})");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let exited = child.try_wait().expect("try_wait");
    child.kill().expect("kill the client");
    child.wait().expect("reap the client");
    assert!(exited.is_none(), "the client exited before the kill");
    held
}

fn journal_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cli_killed_then_rerun_resumes_tus() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 64 * MIB;
    let journal = dir.path().join("journal");
    let url = server.url("");
    for parallel in ["1", "3"] {
        let name = format!("resume-tus-{parallel}.bin");
        let path = dir.path().join(&name);
        let sha = write_random_file(&mut rng, &path, size);
        let args = [
            path.to_str().expect("utf-8"),
            url.as_str(),
            "--protocol",
            "tus",
            "--parallel",
            parallel,
            "--chunk-size",
            "1MiB",
            "--json",
            "--stall-timeout",
            "10s",
            "--journal-dir",
            journal.to_str().expect("utf-8"),
        ];
        let before = held_on_disk(&server);
        let held = start_and_kill_cli(&server, &args, before + 8 * MIB) - before;
        eprintln!("{name}: killed the client with {held} of {size} bytes on the server");
        let entries = journal_entries(&journal);
        assert_eq!(entries.len(), 1, "{name}: {entries:?}");
        let entry: Value =
            serde_json::from_slice(&fs::read(&entries[0]).expect("read the journal"))
                .expect("journal JSON");
        assert_eq!(entry["protocol"], "tus", "{name}: {entry}");
        if parallel == "3" {
            assert_eq!(
                entry["parts"].as_array().map(Vec::len),
                Some(3),
                "{name}: {entry}"
            );
        }
        let out = run_cli(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: stderr: {stderr}");
        let json = json_line(&out);
        assert_eq!(json["sha256"], sha, "{name}: {json}");
        assert_eq!(json["protocol"], "tus", "{name}: {json}");
        let sent = json["bytes_sent"].as_u64().expect("bytes_sent");
        assert!(
            sent < size,
            "{name}: the second run sent {sent} bytes of {size}: it did not resume"
        );
        assert!(
            stderr.contains("resuming at byte"),
            "{name}: no resume message: {stderr}"
        );
        assert!(
            !stderr.contains("starting over"),
            "{name}: started over: {stderr}"
        );
        assert!(
            journal_entries(&journal).is_empty(),
            "{name}: the journal entry was not removed"
        );
        assert_stored(&server, &name, &path);
    }
}
