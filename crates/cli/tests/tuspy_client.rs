//! Case 55's tuspy half (docs/protocol.md §5): the tus project's Python
//! client, tuspy (`tusclient`, installed by scripts/test into
//! target/peers/venv), uploads to the real binary a file that ends exactly on
//! a chunk boundary and one with a short last chunk; every chunk's answer
//! must move the offset by exactly the chunk (tuspy takes it from
//! `Upload-Offset`), and the published file must be the source, byte for
//! byte.
//!
//! tuspy 1.1.0 has no deferred length (it always sends `Upload-Length` at
//! creation), so the deferred half of case 55 is tus-js-client's
//! (`tus_js_client.rs::deferred_length_ending_on_a_chunk_boundary`).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::files::assert_same_bytes;
use support::http::get_blocking;
use support::peers::python_driver;
use support::process::drive;
use support::{BIN, KIB, random_bytes};
use tenax_testkit::{Rng, TestServer};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `tuspy_upload.py`; panics unless it reports success. Returns its report.
fn run_tuspy(endpoint: &str, file: &Path, chunk: u64, name: &str) -> Value {
    let mut command = python_driver("tuspy_upload.py");
    command
        .arg(endpoint)
        .arg(file)
        .arg(chunk.to_string())
        .arg(name);
    drive(command, &format!("tuspy_upload.py {name}"), CLIENT_TIMEOUT).ok()
}

/// Uploads `size` random bytes with tuspy in chunks of `chunk` and checks
/// every chunk's offset and the published bytes.
fn upload(size: u64, chunk: u64, name: &str) {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join(name);
    let data = random_bytes(&mut rng, size as usize);
    std::fs::write(&file, &data).expect("write the source");
    let report = run_tuspy(&server.url("/uploads"), &file, chunk, name);
    assert_eq!(report["offset"].as_u64(), Some(size), "{report}");
    let chunks = report["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len() as u64, size.div_ceil(chunk), "{report}");
    let mut expected_from = 0;
    for (index, step) in chunks.iter().enumerate() {
        let (from, to) = (step[0].as_u64(), step[1].as_u64());
        assert_eq!(from, Some(expected_from), "chunk {index}: {report}");
        let whole = (expected_from + chunk).min(size);
        assert_eq!(
            to,
            Some(whole),
            "chunk {index}: Upload-Offset after the chunk: {report}"
        );
        expected_from = whole;
    }
    let (status, published) = get_blocking(&server.url(&format!("/files/{name}")));
    assert_eq!(status, 200, "GET /files/{name}");
    assert_same_bytes(name, &published, &data);
}

/// Case 55, tuspy: the file ends exactly on a chunk boundary (the last
/// chunk is full, and the upload completes with it).
#[test]
fn case55_tuspy_file_ending_on_a_chunk_boundary() {
    upload(4 * 256 * KIB, 256 * KIB, "tuspy-boundary.bin");
}

/// Case 55, tuspy: a short last chunk.
#[test]
fn case55_tuspy_file_with_a_short_last_chunk() {
    upload(3 * 256 * KIB + 1234, 256 * KIB, "tuspy-tail.bin");
}
