//! Faults beyond a clean close (issue 15): a connection reset mid-body
//! (`SO_LINGER` 0 → RST, no FIN) and a peer that stalls without closing,
//! both made by the fault proxy (`tenax_testkit::Fault`) between the real
//! binary and its client.
//!
//! The server must treat each as a dropped connection and keep the bytes
//! that arrived (docs/protocol.md §0, "A body that ends early is a partial
//! append"; a silent body ends at `--body-idle-timeout`); `tenax upload` must
//! treat each as a drop (a reset at once, a stall after `--stall-timeout`),
//! resume from what the server holds, and finish byte-exact.

mod support;

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::files::{assert_stored, write_random_file};
use support::http::{IO_TIMEOUT, client, connect, send};
use support::process::{json_line, text};
use support::{BIN, KIB, MIB, random_bytes};
use tenax_testkit::{Cut, Fault, FaultProxy, Rng, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the server's clients wait for a stalled body before they drop it.
const BODY_IDLE: &str = "2s";

/// Creates a tus upload of `total` bytes; returns its path.
async fn create(server: &TestServer, total: usize) -> String {
    let resp = send(
        client()
            .post(server.url("/uploads"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", total.to_string()),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.describe());
    let location = resp.header("location").expect("location").to_owned();
    support::http::path_of(&location)
}

/// The tus `Upload-Offset` the server reports now.
async fn held(server: &TestServer, path: &str) -> u64 {
    let resp = send(
        client()
            .head(server.url(path))
            .header("tus-resumable", "1.0.0"),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.describe());
    resp.number("upload-offset")
}

/// PATCHes `data[at..]` directly (no proxy); returns the new offset.
async fn patch(server: &TestServer, path: &str, at: usize, body: &[u8]) -> u64 {
    let resp = send(
        client()
            .patch(server.url(path))
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", at.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body.to_vec()),
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    resp.number("upload-offset")
}

/// The head of a tus PATCH of `len` bytes at `at`.
fn patch_head(server: &TestServer, path: &str, at: usize, len: usize) -> String {
    format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {at}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n",
        server.addr()
    )
}

/// The upload's bytes, read back with a range request (case 85) once complete.
async fn stored(server: &TestServer, path: &str) -> Vec<u8> {
    let resp = send(client().get(server.url(path))).await;
    assert_eq!(resp.status, 200, "{}", resp.describe());
    resp.body
}

/// Waits (bounded) until `done` holds.
async fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PATCH whose connection is reset (RST, no FIN) 300 000 bytes into its
/// body: the client sees a reset, and the server keeps a prefix of what
/// arrived, at least what it had acknowledged; the upload then finishes
/// byte-exact from the offset the server reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_body_keeps_the_acknowledged_bytes() {
    let server = TestServer::start(BIN);
    let mut rng = Rng::from_env_or_os();
    let total = 600_000;
    let data = random_bytes(&mut rng, total);
    let path = create(&server, total).await;
    let acked = patch(&server, &path, 0, &data[..100_000]).await;
    assert_eq!(acked, 100_000);

    let head = patch_head(&server, &path, 100_000, total - 100_000);
    let budget = (head.len() + 300_000) as u64;
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: Some((budget, budget)),
            download: None,
            fault: Fault::Reset,
        },
        rng.clone(),
    )
    .await;
    let mut stream = connect(proxy.addr()).await;
    stream.write_all(head.as_bytes()).await.expect("head");
    // The write of the body fails once the reset arrives, or it all fits
    // the socket buffers; either way the answer is the reset.
    let _ = stream.write_all(&data[100_000..]).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the reset did not arrive");
    match read {
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}"),
        Ok(n) => panic!(
            "the connection closed cleanly ({n} bytes: {:?}), not with a reset",
            String::from_utf8_lossy(&answer)
        ),
    }
    assert_eq!(proxy.stats().resets.load(Ordering::Relaxed), 1);

    let after = held(&server, &path).await;
    assert!(
        (acked..=acked + 300_000).contains(&after),
        "acknowledged {acked}, forwarded up to {}, held {after}",
        acked + 300_000
    );
    let done = patch(&server, &path, after as usize, &data[after as usize..]).await;
    assert_eq!(done, total as u64);
    assert!(stored(&server, &path).await == data, "stored bytes differ");
}

/// A PATCH whose connection stalls 300 000 bytes into its body, neither end
/// closed: the server gives up on the silent body after
/// `--body-idle-timeout` and keeps every byte that arrived (here all the
/// forwarded ones); the upload then finishes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_mid_body_is_dropped_by_the_server_which_keeps_what_arrived() {
    let server = TestServer::start_with(BIN, &["--body-idle-timeout", BODY_IDLE]);
    let mut rng = Rng::from_env_or_os();
    let total = 600_000;
    let data = random_bytes(&mut rng, total);
    let path = create(&server, total).await;
    let acked = patch(&server, &path, 0, &data[..100_000]).await;

    let head = patch_head(&server, &path, 100_000, total - 100_000);
    let budget = (head.len() + 300_000) as u64;
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: Some((budget, budget)),
            download: None,
            fault: Fault::Stall(Duration::from_secs(60)),
        },
        rng.clone(),
    )
    .await;
    let mut stream = connect(proxy.addr()).await;
    stream.write_all(head.as_bytes()).await.expect("head");
    // All but what the stalled proxy leaves unread fits the socket buffers;
    // the rest waits, as on a dead link.
    let body = data[100_000..].to_vec();
    let writer = tokio::spawn(async move {
        let _ = stream.write_all(&body).await;
        // Hold the connection open: the client end never closes it.
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(stream);
    });
    let stats = proxy.stats();
    wait_for("the stall", IO_TIMEOUT, || {
        stats.stalls.load(Ordering::Relaxed) == 1
    })
    .await;
    let stalled_at = Instant::now();
    wait_for(
        "the server dropping the stalled body",
        Duration::from_secs(30),
        || stats.stalls_dropped_by_server.load(Ordering::Relaxed) == 1,
    )
    .await;
    eprintln!(
        "the server dropped the stalled body after {:.1?} (--body-idle-timeout {BODY_IDLE})",
        stalled_at.elapsed()
    );
    assert_eq!(stats.stalls_dropped_by_client.load(Ordering::Relaxed), 0);
    let after = held(&server, &path).await;
    assert_eq!(
        after,
        acked + 300_000,
        "the server did not keep every byte that arrived before the stall"
    );
    let done = patch(&server, &path, after as usize, &data[after as usize..]).await;
    assert_eq!(done, total as u64);
    assert!(stored(&server, &path).await == data, "stored bytes differ");
    writer.abort();
}

/// `tenax upload` through a proxy that ends every connection after 1 to 3
/// MiB of upload with `fault`, in `protocol`: the client resumes after each
/// and the published file is the source, byte for byte. Returns the proxy.
async fn upload_through(
    server: &TestServer,
    protocol: &str,
    fault: Fault,
    extra: &[&str],
) -> FaultProxy {
    let mut rng = Rng::from_env_or_os();
    let proxy = FaultProxy::start_with(
        server.addr(),
        Cut {
            upload: Some((MIB, 3 * MIB)),
            download: None,
            fault,
        },
        rng.clone(),
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let name = format!("fault-{protocol}-{}.bin", rng.next_u64() % 1000);
    let source = dir.path().join(&name);
    write_random_file(&mut rng, &source, 8 * MIB + 3 * KIB + 1);
    let url = format!("http://{}/", proxy.addr());
    let mut args: Vec<String> = [
        source.to_str().expect("utf-8"),
        &url,
        "--protocol",
        protocol,
        "--chunk-size",
        "2MiB",
        "--probe-interval",
        "200ms",
        "--max-time",
        "150s",
        "--json",
        "--no-journal",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::process::run_cli(&args, Duration::from_secs(180))
    })
    .await
    .expect("tenax upload");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{protocol}, {fault:?}: stderr: {}",
        text(&out.stderr)
    );
    let report = json_line(&out);
    eprintln!(
        "{protocol}, {fault:?}: {} cuts, retries {}, bytes sent {} for {}",
        proxy.stats().cuts.load(Ordering::Relaxed),
        report["retries"],
        report["bytes_sent"],
        report["size"]
    );
    assert_stored(server, &name, &source);
    assert!(
        proxy.stats().cuts.load(Ordering::Relaxed) >= 2,
        "{protocol}: the proxy cut fewer than twice"
    );
    proxy
}

/// `tenax upload` in each dialect through connections reset mid-body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenax_upload_finishes_through_resets() {
    let server = TestServer::start(BIN);
    for protocol in ["seed", "tus", "ietf"] {
        let proxy = upload_through(&server, protocol, Fault::Reset, &[]).await;
        assert!(proxy.stats().resets.load(Ordering::Relaxed) >= 2);
    }
}

/// `tenax upload` through connections that stall mid-body: it gives up on
/// each after `--stall-timeout` (before the server's body idle timeout),
/// resumes, and finishes; the server drops the stalled bodies on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenax_upload_finishes_through_stalls() {
    let server = TestServer::start_with(BIN, &["--body-idle-timeout", "4s"]);
    for protocol in ["seed", "tus"] {
        let proxy = upload_through(
            &server,
            protocol,
            Fault::Stall(Duration::from_secs(60)),
            &["--stall-timeout", "2s"],
        )
        .await;
        let stats = proxy.stats();
        assert!(stats.stalls.load(Ordering::Relaxed) >= 2, "{protocol}");
        assert!(
            stats.stalls_dropped_by_client.load(Ordering::Relaxed) >= 1,
            "{protocol}: tenax upload never gave up on a stalled connection"
        );
    }
}
