//! The client's tus and IETF dialects (and `auto`) end to end, against the
//! real `tenax serve` binary over loopback: sizes around the chunk boundary,
//! a flapping link (fault proxy), parallel tus uploads (concatenation)
//! through the library and the CLI, and a CLI run killed mid-upload then run
//! again (journal).
//!
//! Random data comes from [`Rng`] (replay a failure with the printed
//! `TENAX_TEST_SEED`); every wait is bounded.

mod support;

use std::fs;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::files::{assert_stored, held_on_disk, journal_entries, write_random_file};
use support::process::{json_line, start_and_kill_cli, text};
use support::uploads::{created, events, recording};
use support::{BIN, KIB, MIB};
use tenax_client::{Event, Protocol, Uploader};
use tenax_testkit::{FaultProxy, Rng, TestServer};

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

/// A fast uploader for tests in `protocol`.
fn quick_uploader(protocol: Protocol, chunk: u64) -> Uploader {
    support::uploads::quick_uploader(chunk).protocol(protocol)
}

/// `tenax upload ARGS…`, waited for with a deadline.
fn run_cli(args: &[&str]) -> Output {
    support::process::run_cli(args, IO_TIMEOUT)
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
    // The CI-size link soak (bench/soak runs 1 GiB): every dialect, cuts
    // every 1–8 MiB of request bytes.
    for (protocol, label) in [(Protocol::Seed, "seed")].into_iter().chain(DIALECTS) {
        let proxy = FaultProxy::start(server.addr(), (MIB, 8 * MIB), rng.clone()).await;
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
            "{name}: {} MiB in {:.1?}, {cuts} cuts, {} retries, {overhead} bytes re-sent \
             ({:.2}% of the file)",
            size / MIB,
            started.elapsed(),
            report.retries,
            overhead as f64 * 100.0 / size as f64,
        );
        assert_eq!(report.sha256, sha, "{name}");
        assert_eq!(report.size, size, "{name}");
        assert_eq!(report.protocol, resolved(protocol), "{name}");
        assert!(cuts >= 8, "{name}: the proxy cut only {cuts} times");
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
    .unwrap_or_else(|_| {
        let reasons: Vec<String> = events(&log)
            .into_iter()
            .filter_map(|e| match e {
                Event::Retrying { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        panic!(
            "parallel upload timed out after {} retries, the last ones: {:?}",
            reasons.len(),
            &reasons[reasons.len().saturating_sub(10)..]
        )
    })
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
        let held = start_and_kill_cli(&server, &args, before + 8 * MIB, IO_TIMEOUT) - before;
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
