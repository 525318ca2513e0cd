//! A full disk (issue 5): on a small tmpfs that the test mounts, an upload
//! that runs out of room gets `507` with problem+json, what the server had
//! acknowledged stays intact, and the upload resumes and completes once
//! space is freed.
//!
//! Mounting needs root. Where it is impossible the test says so and is
//! skipped, unless `TENAX_TEST_MOUNT=required` (set by `scripts/test` when it
//! runs as root, as in CI), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use tenax_testkit::{Rng, TestServer};

use support::http::{assert_problem, request};
use support::{BIN, KIB, MIB, random_bytes, sha256_hex};

/// A tmpfs of `size` bytes, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot.
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).map_err(|error| error.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn mount_or_skip(size: u64) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(tmpfs) => Some(tmpfs),
        Err(reason) if std::env::var("TENAX_TEST_MOUNT").as_deref() == Ok("required") => {
            panic!("cannot mount a tmpfs, and TENAX_TEST_MOUNT=required: {reason}")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED: the disk-full test needs to mount a tmpfs (root): {reason}. \
                 Set TENAX_TEST_MOUNT=required to make this a failure."
            );
            None
        }
    }
}

/// Fills the file system but for about `leave` bytes.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let filler = dir.join("filler");
    let stat = nix_free_bytes(dir);
    let size = stat.saturating_sub(leave);
    std::fs::write(&filler, vec![0xee; size as usize]).expect("write the filler");
    filler
}

/// Free bytes of the file system holding `dir` (`df`, to stay free of
/// unsafe code and extra crates).
fn nix_free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .expect("df prints the free bytes")
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_what_it_acknowledged_and_resumes() {
    let Some(tmpfs) = mount_or_skip(16 * MIB) else {
        return;
    };
    let data_dir = tmpfs.path.join("data");
    let mut server = TestServer::start_at(BIN, &data_dir, &[]);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, (4 * MIB) as usize);
    let total = data.len();
    let url = server.url("/api/upload?file=full.bin");
    // Room for about 1.5 MiB of upload data.
    let filler = fill(&tmpfs.path, 3 * MIB / 2);

    let chunk = 256 * KIB as usize;
    let mut acknowledged = 0usize;
    let mut refused = None;
    for start in (0..total).step_by(chunk) {
        let end = (start + chunk).min(total);
        let resp = put_chunk(&url, &data, start, end).await;
        if resp.status == 308 {
            acknowledged = held(resp.header("range"));
            assert_eq!(acknowledged, end, "{}", resp.describe());
            continue;
        }
        refused = Some(resp);
        break;
    }
    let refused = refused.expect("the disk never filled up");
    let json = assert_problem(&refused, 507);
    assert_eq!(json["type"], "urn:tenax:problem:storage-full", "{json}");
    assert!(acknowledged > 0, "nothing fitted before the disk filled up");

    // What was acknowledged is still held, in every dialect's view, and the
    // server still answers (reads need no room).
    let query = format!("bytes */{total}");
    let status = request(
        Method::PUT,
        &url,
        &[("content-range", query.as_str())],
        vec![],
    )
    .await;
    assert_eq!(status.status, 308, "{}", status.describe());
    let still = held(status.header("range"));
    assert!(
        still >= acknowledged,
        "held {still} < acknowledged {acknowledged}"
    );
    let ready = request(Method::GET, &server.url("/readyz"), &[], vec![]).await;
    assert_eq!(ready.status, 503, "readyz while full: {}", ready.describe());

    // Room again: the upload goes on from what the server holds, first on
    // the same server (which must not reuse a writer that failed half-way),
    // then across a restart, and completes whole.
    std::fs::remove_file(&filler).expect("remove the filler");
    let mut offset = still;
    let mut restarted = false;
    while offset < total {
        if !restarted && offset >= (still + total) / 2 {
            server.restart();
            restarted = true;
            let url = server.url("/api/upload?file=full.bin");
            let status = request(
                Method::PUT,
                &url,
                &[("content-range", query.as_str())],
                vec![],
            )
            .await;
            assert_eq!(
                held(status.header("range")),
                offset,
                "{}",
                status.describe()
            );
        }
        let url = server.url("/api/upload?file=full.bin");
        let resp = put_chunk(&url, &data, offset, (offset + chunk).min(total)).await;
        assert!(matches!(resp.status, 200 | 308), "{}", resp.describe());
        offset = if resp.status == 200 {
            total
        } else {
            held(resp.header("range"))
        };
    }
    assert!(restarted);
    let file = request(Method::GET, &server.url("/files/full.bin"), &[], vec![]).await;
    assert_eq!(file.status, 200, "{}", file.describe());
    assert_eq!(sha256_hex(&file.body), sha256_hex(&data));
}

/// The seed chunk `data[start..end]`.
async fn put_chunk(url: &str, data: &[u8], start: usize, end: usize) -> support::http::Resp {
    let range = format!("bytes {start}-{}/{}", end - 1, data.len());
    request(
        Method::PUT,
        url,
        &[("content-range", range.as_str())],
        data[start..end].to_vec(),
    )
    .await
}

/// The byte count of a `Range: bytes=0-N` answer (0 without one).
fn held(range: Option<&str>) -> usize {
    range.map_or(0, |range| {
        let last: usize = range
            .strip_prefix("bytes=0-")
            .and_then(|last| last.parse().ok())
            .unwrap_or_else(|| panic!("bad Range {range:?}"));
        last + 1
    })
}
