//! Interop with Google's Python client, `google-resumable-media`
//! (`google.resumable_media.requests.ResumableUpload`), against the real
//! `tenax serve` binary.
//!
//! The client runs from the venv that `scripts/test` installs into
//! `target/peers/venv` (or `$TENAX_PEERS/venv`); the driver script is
//! `tests/peers/google_upload.py`. Each test uploads a random file and then
//! compares `GET /files/NAME` with the source, byte for byte.

#![allow(missing_docs)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tenax_testkit::{Rng, TestServer};

/// The granularity google-resumable-media enforces on chunk sizes.
const GRANULE: usize = 256 * 1024;

/// How long one run of the Python client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// The script driving the Python client.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/peers/google_upload.py"
);

/// The peers folder `scripts/test` fills, unless `TENAX_PEERS` says otherwise.
const DEFAULT_PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/peers");

/// The venv's Python, or a failure telling how to install it. Never skips.
fn peers_python() -> PathBuf {
    let peers = std::env::var_os("TENAX_PEERS")
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PEERS), PathBuf::from);
    let python = peers.join("venv/bin/python");
    assert!(
        python.exists(),
        "the Python peers are not installed ({} is missing): run scripts/test \
         to install the peers (it creates target/peers/venv from \
         tests/peers/requirements.txt)",
        python.display()
    );
    python
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What the Python client printed on success: the final object JSON.
#[derive(Debug)]
struct ClientRun {
    object: serde_json::Value,
}

/// Runs `google_upload.py INIT_URL FILE CHUNK MODE NAME`; panics with the
/// client's output unless it exits 0.
fn run_client(init_url: &str, file: &Path, chunk_size: usize, mode: &str, name: &str) -> ClientRun {
    let python = peers_python();
    let started = Instant::now();
    let mut child = Command::new(&python)
        .arg(SCRIPT)
        .arg(init_url)
        .arg(file)
        .arg(chunk_size.to_string())
        .arg(mode)
        .arg(name)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));

    // Drain both pipes on threads so the child never blocks on them.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the client") {
            break Some(status);
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_thread.join().expect("stdout reader panicked");
    let err = err_thread.join().expect("stderr reader panicked");
    eprintln!(
        "--- google_upload.py {mode} ({:?}) ---\n{err}",
        started.elapsed()
    );
    match status {
        None => panic!(
            "google-resumable-media ({mode}) did not finish within {CLIENT_TIMEOUT:?}\n\
             stderr:\n{err}"
        ),
        Some(status) if !status.success() => panic!(
            "google-resumable-media ({mode}) failed with {status}\nstdout:\n{out}\nstderr:\n{err}"
        ),
        Some(_) => {}
    }
    let last = out.lines().last().unwrap_or_default();
    let object = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the client printed no object JSON ({e}): {out:?}"));
    ClientRun { object }
}

/// `GET /files/NAME`: the status and the body.
fn fetch(server: &TestServer, name: &str) -> (u16, Vec<u8>) {
    let url = server.url(&format!("/files/{name}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a runtime");
    runtime.block_on(async {
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
        (status, body.to_vec())
    })
}

/// Uploads `data` as `name` with the given mode and checks the object JSON
/// and the stored bytes.
fn upload_and_compare(init_path: &str, data: &[u8], chunk_size: usize, mode: &str, name: &str) {
    let server = TestServer::start(env!("CARGO_BIN_EXE_tenax"));
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let file = dir.path().join("source.bin");
    std::fs::write(&file, data).expect("cannot write the source file");

    let run = run_client(&server.url(init_path), &file, chunk_size, mode, name);

    let size = data.len().to_string();
    assert_eq!(
        run.object["size"].as_str(),
        Some(size.as_str()),
        "final JSON: {}",
        run.object
    );
    assert_eq!(
        run.object["sha256"].as_str(),
        Some(hex(&Sha256::digest(data)).as_str()),
        "final JSON: {}",
        run.object
    );
    assert_eq!(
        run.object["name"].as_str(),
        Some(name),
        "final JSON: {}",
        run.object
    );

    let (status, stored) = fetch(&server, name);
    assert_eq!(status, 200, "GET /files/{name}");
    assert_eq!(stored.len(), data.len(), "stored length of {name}");
    if let Some(at) = stored.iter().zip(data).position(|(a, b)| a != b) {
        panic!("stored {name} differs from the source at byte {at}");
    }
}

/// Three MiB of random bytes and a random tail, so that the last chunk is
/// short.
fn odd_sized_data(rng: &mut Rng) -> Vec<u8> {
    let len = 3 * 1024 * 1024 + rng.between(1, GRANULE as u64 - 1) as usize;
    random_bytes(rng, len)
}

#[test]
fn plain_known_size_upload() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "plain", "google-plain.bin");
}

#[test]
fn plain_upload_through_api_upload_route() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    let name = "google-api-route.bin";
    upload_and_compare(
        &format!("/api/upload?file={name}"),
        &data,
        2 * GRANULE,
        "plain",
        name,
    );
}

#[test]
fn recover_after_rejected_dropped_and_unanswered_chunks() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "recover", "google-recover.bin");
}

#[test]
fn library_retry_resends_a_chunk_dropped_mid_body() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "retry", "google-retry.bin");
}

#[test]
fn checksum_md5_is_validated_by_the_client() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "md5", "google-md5.bin");
}

#[test]
fn checksum_crc32c_is_validated_by_the_client() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "crc32c", "google-crc32c.bin");
}

#[test]
fn zero_byte_object() {
    upload_and_compare("/uploads", &[], GRANULE, "zero", "google-empty.bin");
}

#[test]
fn unknown_size_stream_with_short_last_chunk() {
    let mut rng = Rng::from_env_or_os();
    let data = odd_sized_data(&mut rng);
    upload_and_compare("/uploads", &data, GRANULE, "stream", "google-stream.bin");
}

#[test]
fn unknown_size_stream_ending_on_a_chunk_boundary() {
    // The last read is empty, so the library finalises with `bytes */N`.
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 8 * GRANULE);
    upload_and_compare(
        "/uploads",
        &data,
        2 * GRANULE,
        "stream",
        "google-stream-boundary.bin",
    );
}

#[test]
fn unknown_size_zero_byte_stream() {
    upload_and_compare(
        "/uploads",
        &[],
        GRANULE,
        "stream",
        "google-stream-empty.bin",
    );
}
