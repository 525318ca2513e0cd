//! Downloads: files put on the server with the seed protocol's literal
//! requests, `tenax download` runs (whole or killed part way), the client
//! library's `Downloader` set up for tests, and download state files.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenax_client::Downloader;

use super::BIN;
use super::http::{IO_TIMEOUT, client};
use super::process::wait_output;

/// Bytes per literal `PUT` when putting a file on the server.
const PUT_CHUNK: u64 = 16 << 20;

/// Puts `data` on the server as `name` with the literal seed form
/// (`PUT /api/upload?file=NAME` + `Content-Range`), in chunks.
pub(crate) async fn put_bytes(base: &str, name: &str, data: &[u8]) {
    let client = client();
    let url = format!("{base}/api/upload?file={name}");
    let total = data.len();
    if total == 0 {
        let r = client
            .put(&url)
            .header("Content-Range", "bytes */0")
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status().as_u16(), 200, "empty PUT of {name}");
        return;
    }
    let chunk = usize::try_from(PUT_CHUNK).expect("chunk fits");
    for at in (0..total).step_by(chunk) {
        let end = (at + chunk).min(total);
        let r = client
            .put(&url)
            .header("Content-Range", format!("bytes {at}-{}/{total}", end - 1))
            .body(data[at..end].to_vec())
            .send()
            .await
            .expect("PUT");
        let expected = if end == total { 200 } else { 308 };
        assert_eq!(r.status().as_u16(), expected, "PUT {at}-{end} of {name}");
    }
}

/// Puts the file at `path` on the server as `name` (literal seed form),
/// reading it a chunk at a time.
pub(crate) async fn put_file(base: &str, name: &str, path: &Path) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let url = format!("{base}/api/upload?file={name}");
    let mut file = std::fs::File::open(path).expect("open the source");
    let total = file.metadata().expect("stat").len();
    let mut at = 0u64;
    while at < total {
        let n = PUT_CHUNK.min(total - at);
        let mut buffer = vec![0u8; usize::try_from(n).expect("chunk fits")];
        file.read_exact(&mut buffer).expect("read the source");
        let r = client
            .put(&url)
            .header(
                "Content-Range",
                format!("bytes {at}-{}/{total}", at + n - 1),
            )
            .body(buffer)
            .send()
            .await
            .expect("PUT");
        let expected = if at + n == total { 200 } else { 308 };
        assert_eq!(r.status().as_u16(), expected, "PUT at {at} of {name}");
        at += n;
    }
}

/// Starts an upload of `name` with `POST /api/upload?file=NAME`; returns
/// its `/uploads/{id}` URL.
pub(crate) async fn begin_upload(base: &str, name: &str) -> String {
    let r = client()
        .post(format!("{base}/api/upload?file={name}"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200, "initiate {name}");
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_owned()
}

/// `PUT`s `data` at `at` to an upload URL (`/*` unless `last`, then the
/// total); returns the status.
pub(crate) async fn put_chunk(url: &str, at: usize, data: &[u8], last: bool) -> u16 {
    let end = at + data.len();
    let total = if last {
        end.to_string()
    } else {
        "*".to_owned()
    };
    let range = if data.is_empty() {
        format!("bytes */{total}")
    } else {
        format!("bytes {at}-{}/{total}", end - 1)
    };
    let r = client()
        .put(url)
        .header("Content-Range", range)
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT chunk");
    r.status().as_u16()
}

/// A fast downloader for tests: short backoff, polls and stall timeout.
pub(crate) fn quick_downloader() -> Downloader {
    Downloader::new()
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .poll_interval(Duration::from_millis(50), Duration::from_millis(300))
        .stall_timeout(Duration::from_secs(10))
        .max_retries(1000)
        .max_time(Some(Duration::from_secs(300)))
}

/// `tenax download ARGS…`.
fn download_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("download").args(args).stdin(Stdio::null());
    command
}

/// `tenax download ARGS…`, waited for at most `timeout`.
pub(crate) fn run_download(args: &[&str], timeout: Duration) -> Output {
    let child = download_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tenax download");
    wait_output(child, timeout)
}

/// The state file of a download into `file`, parsed (`None` if absent or
/// unreadable, e.g. while it is being replaced).
pub(crate) fn read_state(file: &Path) -> Option<Value> {
    let bytes = std::fs::read(Downloader::state_path(file)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Bytes the state file of `file` records as on disk.
pub(crate) fn state_done(state: &Value) -> u64 {
    state["segments"]
        .as_array()
        .map(|segments| segments.iter().filter_map(|s| s["done"].as_u64()).sum())
        .unwrap_or(0)
}

/// Starts `tenax download ARGS…` into `file` and SIGKILLs it once its
/// state file records at least `threshold` bytes (within [`IO_TIMEOUT`]);
/// returns the state then.
pub(crate) fn start_and_kill_download(args: &[&str], file: &Path, threshold: u64) -> Value {
    let mut child = download_command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tenax download");
    let deadline = Instant::now() + IO_TIMEOUT;
    let state = loop {
        if let Some(state) = read_state(file)
            && state_done(&state) >= threshold
        {
            break state;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("tenax download exited ({status}) before the kill");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the download never recorded {threshold} bytes");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let exited = child.try_wait().expect("try_wait");
    child.kill().expect("kill the client");
    child.wait().expect("reap the client");
    assert!(exited.is_none(), "the client exited before the kill");
    state
}
