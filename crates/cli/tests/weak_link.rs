//! `tenax upload` over a weak link (`tenax_testkit::WeakLink`): it is back
//! on the wire soon after a long outage, finds a silent link without
//! waiting for the stall timeout (while it sends, and after its last body
//! byte), and honours a server's `Retry-After`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::downloads::run_download;
use support::files::{assert_same_file, assert_stored, write_random_file};
use support::process::{run_cli, text};
use support::{BIN, MIB};
use tenax_testkit::{LinkConfig, Outage, Rng, Schedule, TestServer, WeakLink};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Body bytes (well beyond the few hundred of a status query or a probe)
/// that mark the upload as moving again.
const MOVING: u64 = 64 * 1024;

/// Uploads a `size`-byte file through a link with `schedule` and `outage`
/// (1 MB/s up, 20 ms each way); returns how long after the link's first
/// return the upload moved again, the upload's stderr, and its run time.
async fn through_outage(
    name: &str,
    size: u64,
    schedule: Schedule,
    outage: Outage,
) -> (Duration, String, Duration) {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join(name);
    write_random_file(&mut Rng::from_env_or_os(), &file, size);
    let link = WeakLink::start(
        server.addr(),
        LinkConfig {
            uplink: Some(1_000_000),
            downlink: Some(4_000_000),
            delay: Duration::from_millis(20),
            schedule,
            outage,
        },
    )
    .await;
    let url = format!("http://{}/", link.addr());
    let path = file.to_str().expect("UTF-8").to_owned();
    let started = Instant::now();
    let upload = tokio::task::spawn_blocking(move || {
        run_cli(
            &[&path, &url, "--no-journal", "--json"],
            Duration::from_secs(120),
        )
    });
    // Watch the bytes the server gets: at the link's return, and when they
    // grow again by more than a probe's worth.
    let mut back_at = None;
    let mut at_return = 0;
    let mut moving_after = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while moving_after.is_none() && Instant::now() < deadline && !upload.is_finished() {
        let delivered = link.stats().client_bytes.load(Ordering::Relaxed);
        let log = link.stats().transitions();
        if back_at.is_none()
            && let Some((at, _)) = log.iter().find(|(_, up)| *up)
        {
            back_at = Some(*at);
            at_return = delivered;
        }
        if let Some(back) = back_at
            && delivered > at_return + MOVING
        {
            moving_after = Some(link.started().elapsed().saturating_sub(back));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = upload.await.expect("the upload thread");
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the upload failed: {stderr}");
    assert_stored(&server, name, &file);
    let moving_after = moving_after.unwrap_or_else(|| {
        panic!(
            "the upload never moved after the link's return ({:?}); stderr: {stderr}",
            link.stats().transitions()
        )
    });
    (moving_after, stderr, took)
}

/// After a 30 s outage (every connection reset, new ones refused), the
/// upload is moving again within 2 s of the link's return: the network
/// failures are probed every 500 ms, not backed off to tens of seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_within_2s_after_a_30s_outage() {
    let schedule = Schedule::fixed(vec![(Duration::from_millis(1500), Duration::from_secs(30))]);
    let (after, stderr, _) = through_outage("outage.bin", 4 * MIB, schedule, Outage::Reset).await;
    assert!(
        after <= Duration::from_secs(2),
        "moving again {after:?} after the link's return; stderr: {stderr}"
    );
    assert!(stderr.contains("retrying in 0."), "no probing: {stderr}");
}

/// A link that goes silent (connections neither move nor close) is found
/// by probes on fresh connections, long before the 30 s stall timeout, and
/// the upload resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_found_by_the_watchdog_and_resumed() {
    let schedule = Schedule::fixed(vec![(Duration::from_millis(1500), Duration::from_secs(4))]);
    let (after, stderr, took) =
        through_outage("silent.bin", 4 * MIB, schedule, Outage::BlackHole).await;
    assert!(
        stderr.contains("while the server answers on a new connection"),
        "the silent connection was not found by a probe: {stderr}"
    );
    assert!(
        after <= Duration::from_secs(3),
        "moving again {after:?} after the link's return; stderr: {stderr}"
    );
    // 4 MiB at 1 MB/s plus the outage: far below the 30 s stall timeout.
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
}

/// The link goes silent just after the whole file has gone up in one
/// request: the server's answer never comes back and the connection never
/// closes. Probes find the link up after the longer wait an answer gets
/// (4 s, as a server may still be syncing), far below the 30 s stall
/// timeout; the status query then finds the upload complete. In every
/// dialect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_silent_after_the_last_body_byte_is_found_by_probes() {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let size = 2 * MIB;
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", front.local_addr().expect("addr"));
    let silencer = tokio::spawn(silent_after(front, server.addr(), size));
    for protocol in ["seed", "tus", "ietf"] {
        let name = format!("after-{protocol}.bin");
        let file = dir.path().join(&name);
        write_random_file(&mut Rng::from_env_or_os(), &file, size);
        let path = file.to_str().expect("UTF-8").to_owned();
        let url = url.clone();
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            run_cli(
                &[&path, &url, "--no-journal", "--protocol", protocol],
                Duration::from_secs(60),
            )
        })
        .await
        .expect("the upload thread");
        let took = started.elapsed();
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "{protocol}: the upload failed: {stderr}"
        );
        assert!(
            stderr.contains("while the server answers on a new connection"),
            "{protocol}: the silent connection was not found by a probe: {stderr}"
        );
        assert!(
            took < Duration::from_secs(15),
            "{protocol}: took {took:?} (the stall timeout is 30 s): {stderr}"
        );
        assert_stored(&server, &name, &file);
    }
    silencer.abort();
}

/// `tenax download` through a link that goes silent mid-body: probes on
/// fresh connections find the link back, and the download goes on from
/// where it stopped, long before the 30 s stall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_through_a_silent_link_is_found_by_probes() {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("down.bin");
    write_random_file(&mut Rng::from_env_or_os(), &file, 4 * MIB);
    let path = file.to_str().expect("UTF-8").to_owned();
    let direct = format!("http://{}/", server.addr());
    let out = run_cli(&[&path, &direct, "--no-journal"], Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = WeakLink::start(
        server.addr(),
        LinkConfig {
            uplink: Some(4_000_000),
            downlink: Some(1_000_000),
            delay: Duration::from_millis(20),
            schedule: Schedule::fixed(vec![(Duration::from_millis(1500), Duration::from_secs(4))]),
            outage: Outage::BlackHole,
        },
    )
    .await;
    let got = dir.path().join("got.bin");
    let url = format!("http://{}/files/down.bin", link.addr());
    let target = got.to_str().expect("UTF-8").to_owned();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        run_download(&[&url, "-o", &target], Duration::from_secs(60))
    })
    .await
    .expect("the download thread");
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the download failed: {stderr}");
    assert!(
        stderr.contains("while the server answers on a new connection"),
        "the silent connection was not found by a probe: {stderr}"
    );
    // 4 MiB at 1 MB/s plus the outage: far below the 30 s stall timeout.
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
    assert_same_file(&got, &file);
}

/// A front to `upstream` that passes every connection through, except that
/// once a connection has carried `body` bytes from the client, it forwards
/// nothing more from the server and never closes: a link gone silent just
/// after a whole-file request's last byte.
async fn silent_after(front: TcpListener, upstream: std::net::SocketAddr, body: u64) {
    while let Ok((client, _)) = front.accept().await {
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let silent = Arc::new(AtomicBool::new(false));
            let tripped = silent.clone();
            tokio::spawn(async move {
                let (mut carried, mut buffer) = (0u64, vec![0u8; 64 * 1024]);
                while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                    carried += n as u64;
                    // Before the server can see the last byte and answer.
                    if carried >= body {
                        tripped.store(true, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                if !silent.load(Ordering::SeqCst)
                    && client_write.write_all(&buffer[..n]).await.is_err()
                {
                    return;
                }
            }
            if silent.load(Ordering::SeqCst) {
                // Hold the client's side open, silent, until the test ends.
                std::future::pending::<()>().await;
            }
        });
    }
}

/// A server front that answers the first request with `503` and
/// `Retry-After: 5`, then passes every later connection through to the
/// server: the next request comes 5 s later, not sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_5_is_honoured() {
    let server = TestServer::start(BIN);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("busy.bin");
    write_random_file(&mut Rng::from_env_or_os(), &file, MIB);
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", front.local_addr().expect("addr"));
    let upstream = server.addr();
    let (report, waited) = tokio::sync::oneshot::channel();
    let busy = tokio::spawn(async move {
        let (mut first, _) = front.accept().await.expect("the first connection");
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
            let n = first.read(&mut buffer).await.expect("read the request");
            assert!(n > 0, "the client closed before a whole request head");
            head.extend_from_slice(&buffer[..n]);
        }
        first
            .write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("answer 503");
        let answered = Instant::now();
        drop(first);
        let (next, _) = front.accept().await.expect("the retry");
        let _ = report.send(answered.elapsed());
        // From now on, a plain pass-through.
        tokio::spawn(pass(next, upstream));
        while let Ok((more, _)) = front.accept().await {
            tokio::spawn(pass(more, upstream));
        }
    });
    let path = file.to_str().expect("UTF-8").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run_cli(&[&path, &url, "--no-journal"], Duration::from_secs(60))
    })
    .await
    .expect("the upload thread");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the upload failed: {stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    assert!(stderr.contains("retrying in 5.0s"), "{stderr}");
    busy.abort();
    let waited = waited.await.expect("the retry came through the front");
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(6500),
        "the retry came {waited:?} after the 503"
    );
    assert_stored(&server, "busy.bin", &file);
}

/// Copies a connection to `upstream` both ways until either side closes.
async fn pass(mut client: TcpStream, upstream: std::net::SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
