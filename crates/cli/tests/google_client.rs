//! Interop with Google's Python client, `google-resumable-media`
//! (`google.resumable_media.requests.ResumableUpload`), against the real
//! `tenax serve` binary.
//!
//! The client runs from the venv that `scripts/test` installs into
//! `target/peers/venv` (or `$TENAX_PEERS/venv`); the driver script is
//! `tests/peers/google_upload.py`. Each test uploads a random file and then
//! compares `GET /files/NAME` with the source, byte for byte.

#![allow(missing_docs)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::files::assert_same_bytes;
use support::http::get_blocking;
use support::peers::python_driver;
use support::process::drive;
use support::{BIN, random_bytes, sha256_hex};
use tenax_testkit::{Rng, TestServer};

/// The granularity google-resumable-media enforces on chunk sizes.
const GRANULE: usize = 256 * 1024;

/// How long one run of the Python client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// What the Python client printed on success: the final object JSON.
#[derive(Debug)]
struct ClientRun {
    object: serde_json::Value,
}

/// Runs `google_upload.py INIT_URL FILE CHUNK MODE NAME`; panics with the
/// client's output unless it exits 0.
fn run_client(init_url: &str, file: &Path, chunk_size: usize, mode: &str, name: &str) -> ClientRun {
    let mut command = python_driver("google_upload.py");
    command
        .arg(init_url)
        .arg(file)
        .arg(chunk_size.to_string())
        .arg(mode)
        .arg(name);
    let object = drive(command, &format!("google_upload.py {mode}"), CLIENT_TIMEOUT).succeeded();
    ClientRun { object }
}

/// Uploads `data` as `name` with the given mode and checks the object JSON
/// and the stored bytes.
fn upload_and_compare(init_path: &str, data: &[u8], chunk_size: usize, mode: &str, name: &str) {
    let server = TestServer::start(BIN);
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
        Some(sha256_hex(data).as_str()),
        "final JSON: {}",
        run.object
    );
    assert_eq!(
        run.object["name"].as_str(),
        Some(name),
        "final JSON: {}",
        run.object
    );

    let (status, stored) = get_blocking(&server.url(&format!("/files/{name}")));
    assert_eq!(status, 200, "GET /files/{name}");
    assert_same_bytes(name, &stored, data);
}

/// Three MiB of random bytes and a random tail, so that the last chunk is
/// short.
fn odd_sized_data(rng: &mut Rng) -> Vec<u8> {
    support::odd_sized_data(rng, GRANULE as u64)
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
