//! The upload loop against a tiny in-test HTTP/1.1 server that plays the
//! seed protocol and injects faults (dropped connections, stalls, 5xx, a
//! lost session, a wrong digest).

#![allow(missing_docs)]

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tenax_client::{Error, Event, Uploader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Keep this many body bytes of the next chunk, then hang up.
    DropAfter(usize),
    /// Answer the next chunk with this status.
    Status(u16),
    /// Forget the session (404 from now on).
    Gone,
    /// Read nothing more and answer nothing for a while.
    Stall,
}

#[derive(Debug, Default)]
struct State {
    session: Option<String>,
    sessions: u32,
    held: Vec<u8>,
    total: u64,
    faults: VecDeque<Fault>,
    wrong_digest: bool,
    deletes: u32,
    chunk_bytes: u64,
    /// A proxy's body limit: a PUT with a longer body gets 413 (its body
    /// read and dropped first, as nginx does).
    body_limit: Option<usize>,
    /// The `Upload-Limit` the 413 carries, if any.
    limit_header: Option<String>,
    /// The body sizes of the PUTs that got through.
    accepted: Vec<usize>,
}

type Shared = Arc<Mutex<State>>;

async fn serve(state: Shared) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let base2 = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(connection(socket, state.clone(), base2.clone()));
        }
    });
    base
}

async fn connection(mut socket: TcpStream, state: Shared, base: String) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut block = [0u8; 4096];
        match socket.read(&mut block).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&block[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end..].to_vec();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let range = header("content-range");
    let limited = {
        let s = state.lock().expect("lock");
        (method == "PUT")
            .then_some(s.body_limit)
            .flatten()
            .filter(|limit| length > *limit)
            .map(|_| s.limit_header.clone())
    };
    if let Some(limit_header) = limited {
        let mut drained = body.len();
        while drained < length {
            let mut block = vec![0u8; 65536];
            match socket.read(&mut block).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        let headers: Vec<String> = limit_header
            .map(|value| format!("Upload-Limit: {value}"))
            .into_iter()
            .collect();
        respond(
            &mut socket,
            413,
            &headers,
            "<html>413 Request Entity Too Large</html>\n",
        )
        .await;
        return;
    }
    if method == "PUT" && length > 0 {
        state.lock().expect("lock").accepted.push(length);
    }
    let fault = if method == "PUT" && length > 0 {
        state.lock().expect("lock").faults.pop_front()
    } else {
        None
    };
    let keep = match fault {
        Some(Fault::DropAfter(n)) => n.min(length),
        Some(Fault::Stall) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return;
        }
        _ => length,
    };
    while body.len() < keep {
        let mut block = vec![0u8; 65536];
        match socket.read(&mut block).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&block[..n]),
        }
    }
    body.truncate(keep);

    let answer = (|| {
        let mut s = state.lock().expect("lock");
        s.chunk_bytes += body.len() as u64;
        let current = s.session.clone();
        Some(match (method, fault) {
            ("POST", _) => {
                s.sessions += 1;
                let id = format!("{:032x}", s.sessions);
                s.session = Some(id.clone());
                s.held.clear();
                s.total = header("x-upload-content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (
                    200,
                    vec![format!("Location: {base}/uploads/{id}")],
                    String::new(),
                )
            }
            ("DELETE", _) => {
                s.deletes += 1;
                s.session = None;
                (204, vec![], String::new())
            }
            ("PUT", _) if current.as_deref().is_none_or(|id| !target.ends_with(id)) => (
                404,
                vec![],
                r#"{"title":"Not Found","detail":"no such upload"}"#.to_owned(),
            ),
            (_, Some(Fault::Gone)) => {
                s.session = None;
                (404, vec![], r#"{"detail":"no such upload"}"#.to_owned())
            }
            (_, Some(Fault::Status(code))) => (
                code,
                vec!["Retry-After: 0".to_owned()],
                format!(r#"{{"title":"injected","detail":"injected {code}"}}"#),
            ),
            _ => {
                let range = range.unwrap_or_default();
                let spec = range.strip_prefix("bytes ").unwrap_or_default();
                let (span, _) = spec.split_once('/').unwrap_or_default();
                if span != "*" {
                    let first: usize = span
                        .split('-')
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if first > s.held.len() {
                        let r = format!("Range: bytes=0-{}", s.held.len().saturating_sub(1));
                        return Some((416, vec![r], r#"{"detail":"gap"}"#.to_owned()));
                    }
                    let skip = s.held.len() - first;
                    if body.len() > skip {
                        let tail = body[skip..].to_vec();
                        s.held.extend_from_slice(&tail);
                    }
                    if fault.is_some() {
                        return None; // DropAfter: hang up without answering
                    }
                }
                if s.held.len() as u64 == s.total {
                    let mut digest = hex(&s.held);
                    if s.wrong_digest {
                        digest = "00".repeat(32);
                    }
                    let json = format!(
                        r#"{{"id":"x","name":"n","size":"{}","sha256":"{digest}","md5Hash":"","crc32c":""}}"#,
                        s.total
                    );
                    (200, vec!["Content-Type: application/json".to_owned()], json)
                } else if s.held.is_empty() {
                    (308, vec![], String::new())
                } else {
                    (
                        308,
                        vec![format!("Range: bytes=0-{}", s.held.len() - 1)],
                        String::new(),
                    )
                }
            }
        })
    })();
    if let Some((status, headers, reply)) = answer {
        respond(&mut socket, status, &headers, &reply).await;
    }
}

async fn respond(socket: &mut TcpStream, status: u16, headers: &[String], body: &str) {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status >= 400 && !body.is_empty() {
        text.push_str("Content-Type: application/problem+json\r\n");
    }
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    let _ = socket.write_all(text.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn write_file(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("my file.bin");
    let bytes = data(len);
    std::fs::write(&path, &bytes).expect("write");
    (path, bytes)
}

fn uploader(events: &Arc<Mutex<Vec<Event>>>) -> Uploader {
    let events = events.clone();
    Uploader::new()
        .chunk_size(64 * 1024)
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .stall_timeout(Duration::from_millis(300))
        .on_progress(move |p| events.lock().expect("lock").push(p.event))
}

#[tokio::test]
async fn survives_drops_stalls_and_server_errors() {
    let state = Shared::default();
    state.lock().expect("lock").faults = [
        Fault::DropAfter(10_000),
        Fault::Status(503),
        Fault::Stall,
        Fault::Status(416),
    ]
    .into();
    let base = serve(state.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (path, bytes) = write_file(dir.path(), 300_000);
    let events = Arc::default();
    let report = uploader(&events)
        .upload(&path, &base)
        .await
        .expect("upload");
    assert_eq!(report.size, 300_000);
    assert_eq!(report.name, "my file.bin");
    assert_eq!(report.sha256, hex(&bytes));
    assert_eq!(report.retries, 4);
    assert!(report.bytes_sent > report.size, "{report:?}");
    assert_eq!(state.lock().expect("lock").held, bytes);
    let events = events.lock().expect("lock");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Resumed { from: 10_000 })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Retrying { reason, .. } if reason.contains("stalled")))
    );
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Retrying { reason, .. } if reason.contains("injected 503"))
        )
    );
    assert_eq!(events.last(), Some(&Event::Completed));
}

#[tokio::test]
async fn a_lost_session_restarts_once() {
    let state = Shared::default();
    state.lock().expect("lock").faults = [Fault::Status(200 + 108), Fault::Gone].into();
    // 308 as an injected "status" is a plain no-progress answer; then the
    // session disappears.
    let base = serve(state.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (path, bytes) = write_file(dir.path(), 200_000);
    let events = Arc::default();
    let report = uploader(&events)
        .upload(&path, &format!("{base}/api/upload?file=x"))
        .await
        .expect("upload");
    assert_eq!(report.name, "x");
    let s = state.lock().expect("lock");
    assert_eq!(s.sessions, 2);
    assert_eq!(s.held, bytes);
    let events = events.lock().expect("lock");
    assert!(
        events.iter().any(|e| matches!(e, Event::Restarted { .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn digest_mismatch_and_rejection_map_to_exit_codes() {
    let state = Shared::default();
    state.lock().expect("lock").wrong_digest = true;
    let base = serve(state.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (path, _) = write_file(dir.path(), 1000);
    let events = Arc::default();
    let err = uploader(&events)
        .upload(&path, &base)
        .await
        .expect_err("mismatch");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(err.exit_code(), 5);

    let state = Shared::default();
    state.lock().expect("lock").faults = [Fault::Status(413)].into();
    let base = serve(state).await;
    let err = uploader(&events)
        .upload(&path, &base)
        .await
        .expect_err("413");
    assert!(matches!(err, Error::Rejected { status: 413, .. }), "{err}");
    assert!(err.to_string().contains("injected 413"), "{err}");
    assert_eq!(err.exit_code(), 3);

    let missing = dir.path().join("missing");
    let err = uploader(&events)
        .upload(&missing, &base)
        .await
        .expect_err("io");
    assert_eq!(err.exit_code(), 6);
}

#[tokio::test]
async fn empty_files_finalise_with_a_query() {
    let state = Shared::default();
    let base = serve(state.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (path, _) = write_file(dir.path(), 0);
    let events = Arc::default();
    let report = uploader(&events)
        .upload(&path, &base)
        .await
        .expect("upload");
    assert_eq!(report.size, 0);
    assert_eq!(report.bytes_sent, 0);
}

#[tokio::test]
async fn the_journal_resumes_across_runs_and_notices_changes() {
    let state = Shared::default();
    state.lock().expect("lock").faults = [Fault::DropAfter(100_000)].into();
    let base = serve(state.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let journal = dir.path().join("journal");
    let (path, bytes) = write_file(dir.path(), 300_000);
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let first = uploader(&events)
        .journal_dir(Some(journal.clone()))
        .max_retries(0);
    let err = first.upload(&path, &base).await.expect_err("gives up");
    assert_eq!(err.exit_code(), 4, "{err}");
    assert_eq!(std::fs::read_dir(&journal).expect("ls").count(), 1);

    // Second run: same session, continues where the server is.
    events.lock().expect("lock").clear();
    let second = uploader(&events).journal_dir(Some(journal.clone()));
    state.lock().expect("lock").faults = [Fault::DropAfter(0)].into();
    let err = second
        .clone()
        .max_retries(0)
        .upload(&path, &base)
        .await
        .expect_err("again");
    assert_eq!(err.exit_code(), 4);
    let report = second.upload(&path, &base).await.expect("resumed");
    assert_eq!(state.lock().expect("lock").sessions, 1);
    let seen = events.lock().expect("lock").clone();
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Resumed { from: 65_536 })),
        "{seen:?}"
    );
    assert_eq!(report.sha256, hex(&bytes));
    assert_eq!(std::fs::read_dir(&journal).expect("ls").count(), 0);

    // Interrupted again, then the file changes: a new session, the old one
    // is deleted.
    state.lock().expect("lock").faults = [Fault::DropAfter(10)].into();
    let err = first.upload(&path, &base).await.expect_err("gives up");
    assert_eq!(err.exit_code(), 4);
    std::fs::write(&path, data(1234)).expect("rewrite");
    events.lock().expect("lock").clear();
    second.upload(&path, &base).await.expect("restarted");
    let s = state.lock().expect("lock");
    assert_eq!((s.sessions, s.deletes), (3, 1));
    assert!(
        events
            .lock()
            .expect("lock")
            .iter()
            .any(|e| matches!(e, Event::Restarted { reason } if reason.contains("file changed")))
    );
}

/// A proxy's body limit (413 before the server): the upload halves its
/// requests until they pass and finishes; with `Upload-Limit:
/// max-append-size=N` on the 413 it takes N at once.
#[tokio::test]
async fn a_413_shrinks_requests_until_they_pass() {
    for (limit_header, passes) in [
        (None, vec![262_144]),
        (Some("max-append-size=100000"), vec![100_000]),
    ] {
        let state = Shared::default();
        {
            let mut s = state.lock().expect("lock");
            s.body_limit = Some(300_000);
            s.limit_header = limit_header.map(str::to_owned);
        }
        let base = serve(state.clone()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let (path, bytes) = write_file(dir.path(), 2_000_000);
        let events = Arc::default();
        let report = uploader(&events)
            .chunk_size(1 << 20)
            .upload(&path, &base)
            .await
            .expect("upload");
        assert_eq!(report.sha256, hex(&bytes));
        let s = state.lock().expect("lock");
        assert_eq!(s.held, bytes);
        assert_eq!(s.sessions, 1, "the same upload went on");
        // Every request that got through had the size the 413s led to
        // (the last one the rest of the file).
        let (last, full) = s.accepted.split_last().expect("requests");
        assert!(
            full.iter().all(|size| passes.contains(size)),
            "{:?}",
            s.accepted
        );
        assert!(*last <= passes[0], "{:?}", s.accepted);
        let shrinks = events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| matches!(e, Event::Warning { message } if message.contains("413")))
            .count();
        let expected = if limit_header.is_some() { 1 } else { 2 };
        assert_eq!(shrinks, expected, "{limit_header:?}");
    }
}
