//! End-to-end downloads: `tenax download` and the client library's
//! `Downloader` against the real `tenax serve` binary over loopback: a whole
//! file, a truncated local file resumed (and a corrupt one caught by
//! `Repr-Digest`), a flapping link cutting a 256 MiB download every few MiB
//! (fault proxy, server→client), a file replaced on the server between two
//! parts of a resumed download, four connections through the proxy, a
//! killed segmented download resumed, and an upload followed while it is
//! in progress.
//!
//! Files are put on the server with the seed protocol's literal requests.
//! Random data comes from [`Rng`] (replay a failure with the printed
//! `TENAX_TEST_SEED`).

mod support;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::downloads::{
    begin_upload, put_bytes, put_chunk, put_file, quick_downloader, read_state, run_download,
    start_and_kill_download,
};
use support::files::{assert_same_file, write_random_file};
use support::process::{json_line, text};
use support::{BIN, KIB, MIB, random_bytes, sha256_hex};
use tenax_client::{DownloadProgress, Downloader, Event};
use tenax_testkit::{Cut, FaultProxy, Rng, TestServer};

/// Upper bound for a CLI run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn download_cli(args: &[&str]) -> std::process::Output {
    run_download(args, RUN_TIMEOUT)
}

/// Runs `tenax download --json URL -o FILE EXTRA…`, which must succeed;
/// returns its report.
fn download_ok(url: &str, file: &Path, extra: &[&str]) -> Value {
    let file_arg = file.to_str().expect("UTF-8 path");
    let mut args = vec!["--json", url, "-o", file_arg];
    args.extend_from_slice(extra);
    let out = download_cli(&args);
    assert!(
        out.status.success(),
        "tenax download failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    json_line(&out)
}

fn assert_report(report: &Value, size: u64, sha256: &str) {
    assert_eq!(report["size"], size, "{report}");
    assert_eq!(report["sha256"], sha256, "{report}");
    assert_eq!(report["verified"], true, "no Repr-Digest checked: {report}");
}

/// The events a downloader reported.
fn recording(downloader: Downloader) -> (Downloader, Arc<Mutex<Vec<DownloadProgress>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let downloader = downloader.on_progress(move |p| sink.lock().expect("log").push(p));
    (downloader, log)
}

fn events(log: &Mutex<Vec<DownloadProgress>>) -> Vec<Event> {
    log.lock()
        .expect("log")
        .iter()
        .map(|p| p.event.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_download_is_verified() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let len = 3 * MIB + rng.between(1, 100 * KIB);
    let data = random_bytes(&mut rng, len as usize);
    put_bytes(&server.url(""), "whole.bin", &data).await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("whole.bin");
    let url = server.url("/files/whole.bin");
    let report = tokio::task::spawn_blocking({
        let file = file.clone();
        move || download_ok(&url, &file, &[])
    })
    .await
    .expect("join");
    assert_report(&report, data.len() as u64, &sha256_hex(&data));
    assert_eq!(report["bytes_received"], data.len() as u64, "{report}");
    assert_eq!(report["restarts"], 0, "{report}");
    assert!(fs::read(&file).expect("read") == data, "the file differs");
    assert!(
        !Downloader::state_path(&file).exists(),
        "the state file outlived the download"
    );

    // An empty file and a missing one.
    put_bytes(&server.url(""), "empty.bin", &[]).await;
    let empty = dir.path().join("empty.bin");
    let report = quick_downloader()
        .download(&server.url("/files/empty.bin"), &empty)
        .await
        .expect("empty download");
    assert_eq!(report.size, 0);
    assert_eq!(fs::metadata(&empty).expect("stat").len(), 0);
    let missing = dir.path().join("missing.bin");
    let out = tokio::task::spawn_blocking({
        let url = server.url("/files/missing.bin");
        move || download_cli(&[&url, "-o", missing.to_str().expect("UTF-8")])
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_local_file_is_resumed_and_a_corrupt_one_caught() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let size = 4 * MIB + rng.between(1, MIB);
    let data = random_bytes(&mut rng, size as usize);
    put_bytes(&server.url(""), "part.bin", &data).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = server.url("/files/part.bin");

    // A local prefix without a state file (as left by another tool).
    let file = dir.path().join("part.bin");
    let prefix = rng.between(1, size - 1);
    fs::write(&file, &data[..prefix as usize]).expect("write the prefix");
    let report = tokio::task::spawn_blocking({
        let (url, file) = (url.clone(), file.clone());
        move || download_ok(&url, &file, &[])
    })
    .await
    .expect("join");
    assert_report(&report, size, &sha256_hex(&data));
    assert_eq!(report["bytes_received"], size - prefix, "{report}");
    assert!(fs::read(&file).expect("read") == data, "the file differs");

    // The same with a wrong byte in the prefix: the digest catches it.
    let mut bad = data[..prefix as usize].to_vec();
    bad[(prefix / 2) as usize] ^= 0x55;
    fs::write(&file, &bad).expect("write the bad prefix");
    let out = tokio::task::spawn_blocking({
        let file = file.clone();
        move || download_cli(&[&url, "-o", file.to_str().expect("UTF-8")])
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Repr-Digest"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_cuts_a_256_mib_download_every_few_mib() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("big.src");
    let size = 256 * MIB;
    let sha = write_random_file(&mut rng, &source, size);
    put_file(&server.url(""), "big.bin", &source).await;
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: None,
            download: Some((2 * MIB, 6 * MIB)),
            ..Cut::default()
        },
        rng.clone(),
    )
    .await;
    let file = dir.path().join("big.bin");
    let url = format!("http://{}/files/big.bin", proxy.addr());
    let report = quick_downloader()
        .download(&url, &file)
        .await
        .expect("the download survives the cuts");
    assert_eq!(report.size, size);
    assert_eq!(report.sha256, sha);
    assert!(report.verified, "no Repr-Digest checked");
    let cuts = proxy
        .stats()
        .cuts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts >= 30, "only {cuts} cuts");
    assert!(report.retries >= 30, "{report:?}");
    // Resumed, not restarted: little is fetched twice.
    assert!(report.bytes_received < size + size / 4, "{report:?}");
    assert_eq!(report.restarts, 0, "{report:?}");
    assert_same_file(&file, &source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_between_two_parts_starts_over() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let size = 8 * MIB;
    let old = random_bytes(&mut rng, size as usize);
    let new = random_bytes(&mut rng, size as usize);
    put_bytes(&server.url(""), "doc.bin", &old).await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("doc.bin");

    // The first part: a link cut once after 3 MiB, and no retries.
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: None,
            download: Some((3 * MIB, 3 * MIB)),
            ..Cut::default()
        },
        rng.clone(),
    )
    .await;
    // The same URL for both parts (the state file is tied to it).
    let url = format!("http://{}/files/doc.bin", proxy.addr());
    let err = quick_downloader()
        .max_retries(0)
        .download(&url, &file)
        .await
        .expect_err("the cut ends the first part");
    assert_eq!(err.exit_code(), 4, "{err}");
    let state = read_state(&file).expect("a state file after the first part");
    let done = support::downloads::state_done(&state);
    assert!(done > MIB && done < size, "state: {state}");
    assert!(state["etag"].is_string(), "no ETag recorded: {state}");

    // A new version of the same size under the same name.
    put_bytes(&server.url(""), "doc.bin", &new).await;

    // The second part, through the same flapping link: the answer to the
    // resumed request is the new version whole (If-Range fails), itself cut
    // and resumed.
    let (downloader, log) = recording(quick_downloader());
    let report = downloader
        .download(&url, &file)
        .await
        .expect("the second part");
    let events = events(&log);
    assert!(
        events.iter().any(|e| matches!(e, Event::Restarted { .. })),
        "no restart reported: {events:?}"
    );
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(report.sha256, sha256_hex(&new));
    assert!(report.verified);
    let got = fs::read(&file).expect("read");
    assert!(got == new, "the file is not the new version (spliced?)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_connections_through_a_flapping_link() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let size = 32 * MIB + rng.between(1, MIB);
    let data = random_bytes(&mut rng, size as usize);
    put_bytes(&server.url(""), "four.bin", &data).await;
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: None,
            download: Some((MIB, 3 * MIB)),
            ..Cut::default()
        },
        rng.clone(),
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("four.bin");
    let url = format!("http://{}/files/four.bin", proxy.addr());
    let report = tokio::task::spawn_blocking({
        let file = file.clone();
        move || {
            download_ok(
                &url,
                &file,
                &["--connections", "4", "--stall-timeout", "10s"],
            )
        }
    })
    .await
    .expect("join");
    assert_report(&report, size, &sha256_hex(&data));
    assert_eq!(report["connections"], 4, "{report}");
    assert!(report["retries"].as_u64() >= Some(5), "{report}");
    let cuts = proxy
        .stats()
        .cuts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts >= 5, "only {cuts} cuts");
    assert!(fs::read(&file).expect("read") == data, "the file differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_segmented_download_fetches_only_what_is_missing() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let source = dir.path().join("seg.src");
    let size = 128 * MIB;
    let sha = write_random_file(&mut rng, &source, size);
    put_file(&server.url(""), "seg.bin", &source).await;
    let file = dir.path().join("seg.bin");
    let url = server.url("/files/seg.bin");
    let state = tokio::task::spawn_blocking({
        let (url, file) = (url.clone(), file.clone());
        move || {
            let file_arg = file.to_str().expect("UTF-8").to_owned();
            start_and_kill_download(
                &[&url, "-o", &file_arg, "--connections", "4", "--quiet"],
                &file,
                16 * MIB,
            )
        }
    })
    .await
    .expect("join");
    let segments = state["segments"].as_array().expect("segments").len();
    assert_eq!(segments, 4, "state: {state}");
    let done = support::downloads::state_done(&state);
    let report = tokio::task::spawn_blocking({
        let file = file.clone();
        move || download_ok(&url, &file, &["--connections", "4"])
    })
    .await
    .expect("join");
    assert_eq!(report["size"], size, "{report}");
    assert_eq!(report["sha256"], sha, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["restarts"], 0, "{report}");
    let received = report["bytes_received"].as_u64().expect("bytes_received");
    assert!(
        received <= size - done,
        "the rerun fetched {received} bytes, but {done} of {size} were on disk"
    );
    assert_same_file(&file, &source);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_an_upload_in_progress() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let size = 6 * MIB + rng.between(1, MIB);
    let data = random_bytes(&mut rng, size as usize);
    let upload_url = begin_upload(&server.url(""), "live.bin").await;
    // The first chunk before the download starts, the rest while it runs.
    let chunk = 512 * KIB as usize;
    assert_eq!(put_chunk(&upload_url, 0, &data[..chunk], false).await, 308);
    let uploader = tokio::spawn({
        let (url, data) = (upload_url.clone(), data.clone());
        async move {
            let mut at = chunk;
            while at < data.len() {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let end = (at + chunk).min(data.len());
                let last = end == data.len();
                let status = put_chunk(&url, at, &data[at..end], last).await;
                assert_eq!(status, if last { 200 } else { 308 }, "chunk at {at}");
                at = end;
            }
        }
    });
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("live.bin");
    let (downloader, log) = recording(quick_downloader().follow(true));
    let report = downloader
        .download(&upload_url, &file)
        .await
        .expect("the followed download");
    uploader.await.expect("the uploader");
    assert_eq!(report.size, size);
    assert_eq!(report.sha256, sha256_hex(&data));
    assert!(fs::read(&file).expect("read") == data, "the file differs");
    let events = events(&log);
    assert!(
        events.iter().any(|e| matches!(e, Event::Waiting { .. })),
        "the download never waited for the upload: {events:?}"
    );
    // Without --follow, an upload in progress is refused.
    let other = begin_upload(&server.url(""), "pending.bin").await;
    assert_eq!(put_chunk(&other, 0, &data[..chunk], false).await, 308);
    let err = quick_downloader()
        .download(&other, dir.path().join("pending.bin"))
        .await
        .expect_err("incomplete upload");
    assert_eq!(err.exit_code(), 3, "{err}");
}
