//! aiotus (the asyncio tus client from PyPI, pinned in
//! tests/peers/requirements.txt) against the real `tenax serve` binary: its
//! concatenation upload (`upload_multiple`: partial uploads in parallel,
//! then a final `Upload-Concat: final;…` upload that joins them) and its
//! single upload, directly and through a proxy that cuts connections. The
//! stored file is byte-exact, by its final URL and by name.
//!
//! Driver: `tests/peers/aiotus_upload.py`, run with the peers' venv that
//! `scripts/test` installs. A missing peer fails the test; it never skips.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use support::http::request;
use support::peers::{peers_aiotus, python_driver};
use support::process::drive;
use support::{BIN, MIB, random_bytes};
use tenax_testkit::{FaultProxy, Rng, TestServer};

/// How long one aiotus run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

fn run_aiotus(endpoint: &str, name: &str, chunk: u64, parallel: u32, parts: &[PathBuf]) -> String {
    // Fails, telling how to install them, unless the venv has aiotus.
    peers_aiotus();
    let mut command = python_driver("aiotus_upload.py");
    command
        .args([endpoint, name, &chunk.to_string(), &parallel.to_string()])
        .args(parts);
    let report = drive(command, "aiotus_upload.py", CLIENT_TIMEOUT).ok();
    report["location"].as_str().expect("location").to_owned()
}

/// Writes the parts; returns their paths and their concatenation.
fn parts(dir: &Path, rng: &mut Rng, sizes: &[usize]) -> (Vec<PathBuf>, Vec<u8>) {
    let mut whole = Vec::new();
    let mut paths = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let data = random_bytes(rng, *size);
        let path = dir.join(format!("part{index}"));
        std::fs::write(&path, &data).expect("write part");
        whole.extend_from_slice(&data);
        paths.push(path);
    }
    (paths, whole)
}

async fn assert_stored(server: &TestServer, location: &str, name: &str, expected: &[u8]) {
    let by_url = if location.starts_with("http") {
        // Through the proxy, the URL names the proxy; ask tenax directly.
        let path = location.split_once("/uploads/").expect("an upload URL").1;
        server.url(&format!("/uploads/{path}"))
    } else {
        server.url(location)
    };
    for url in [by_url, server.url(&format!("/files/{name}"))] {
        let got = request(Method::GET, &url, &[], Vec::new()).await;
        assert_eq!(got.status, 200, "{url}: {}", got.describe());
        assert_eq!(got.body.len(), expected.len(), "{url}: length");
        assert!(got.body == expected, "{url}: the stored bytes differ");
    }
}

/// `upload_multiple`: five parts of odd sizes, three at a time, joined by a
/// final concatenation upload.
#[test]
fn aiotus_concatenation_is_byte_exact() {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::from_env_or_os();
    let sizes = [
        3 * MIB as usize + 17,
        MIB as usize,
        777_777,
        5,
        2 * MIB as usize + 1,
    ];
    let (paths, whole) = parts(dir.path(), &mut rng, &sizes);
    let endpoint = server.url("/uploads");
    let location = run_aiotus(&endpoint, "aiotus-concat.bin", MIB, 3, &paths);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(assert_stored(
        &server,
        &location,
        "aiotus-concat.bin",
        &whole,
    ));
    // The final upload says how it was made (tus concatenation, §2.3).
    let head = rt.block_on(request(
        Method::HEAD,
        &server.url(&format!(
            "/uploads/{}",
            location.rsplit('/').next().expect("id")
        )),
        &[("tus-resumable", "1.0.0")],
        Vec::new(),
    ));
    let concat = head.header("upload-concat").unwrap_or_default().to_owned();
    assert!(
        concat.starts_with("final;"),
        "Upload-Concat {concat:?}: {}",
        head.describe()
    );
    assert_eq!(concat.split(' ').count(), sizes.len(), "{concat}");
}

/// Through a proxy that cuts every connection after 1 to 3 MiB of upload,
/// aiotus's retries (a HEAD, then the rest) still store exact bytes, for a
/// single upload and for a concatenation.
#[test]
fn aiotus_through_a_cutting_proxy() {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::from_env_or_os();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = rt.block_on(FaultProxy::start(
        server.addr(),
        (MIB, 3 * MIB),
        rng.clone(),
    ));
    let endpoint = format!("http://{}/uploads", proxy.addr());

    let (single, whole) = parts(dir.path(), &mut rng, &[7 * MIB as usize + 3]);
    let location = run_aiotus(&endpoint, "aiotus-cut.bin", 2 * MIB, 1, &single);
    rt.block_on(assert_stored(&server, &location, "aiotus-cut.bin", &whole));

    let sub = dir.path().join("multi");
    std::fs::create_dir(&sub).expect("mkdir");
    let (many, whole) = parts(
        &sub,
        &mut rng,
        &[4 * MIB as usize, 3 * MIB as usize + 9, 100],
    );
    let location = run_aiotus(&endpoint, "aiotus-cut-concat.bin", 2 * MIB, 2, &many);
    rt.block_on(assert_stored(
        &server,
        &location,
        "aiotus-cut-concat.bin",
        &whole,
    ));
    let cuts = proxy
        .stats()
        .cuts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(cuts > 0, "the proxy never cut a connection");
    eprintln!("aiotus through the cutting proxy: {cuts} cuts");
}
