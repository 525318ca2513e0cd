//! The uploader: configuration, progress reporting and the upload loop.
//!
//! `session.rs` holds what the lanes of one upload share and drives them;
//! `lane.rs` is one upload resource's request and retry loop.

mod lane;
mod session;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::dialect::{Dialect, Protocol};
use crate::error::Error;
use crate::hash::HashCursor;
use crate::http::{self, Sockets};
use crate::journal::{FileIdentity, Journal};
use crate::net::{self, Policy, Tally, error_chain, lock, problem_detail};
use crate::target::{self};

use session::Shared;

/// Read size of the streamed request bodies: each read is a trip to
/// tokio's blocking pool (two thread wake-ups), so it is large.
const READ_SIZE: usize = 1024 * 1024;
/// The size of the pieces a body is handed to the HTTP stack in while the
/// link holds: what a first drop can lose (see [`FLAPPING_PIECE`]).
const STEADY_PIECE: usize = 64 * 1024;
/// The piece size once a connection of the upload has dropped. Every
/// piece counts as sent once handed over, and what the HTTP stack and the
/// kernel hold when the link dies is lost and sent again: the link soak
/// (`bench/soak`, cuts every 1–8 MiB) lost about 1 MiB per cut with
/// 256 KiB pieces, 0.3–0.5 MiB with 64 KiB ones through reqwest, 110–210
/// KiB with 64 KiB pieces and a 64 KiB unsent limit, 65–80 KiB with 16 KiB
/// pieces, a 16 KiB stack buffer (`http.rs`) and a 16 KiB unsent limit,
/// 49–64 KiB with 8 KiB for all three (hyper's smallest buffer), of which
/// 11–23 KiB (median 17) on the client's side; a 4 KiB unsent limit took
/// that to 11–17 (median 15), and 4 KiB pieces did not lower it further.
/// The rest is in the proxy, which stands for the link. Small pieces and a
/// small stack buffer cost system calls: on loopback they took a quarter
/// more client CPU and 10–20% of the speed, hence only on a link that has
/// dropped, where the link, not the CPU, is the limit.
const FLAPPING_PIECE: usize = 8 * 1024;

/// The smallest request body a `413` shrinks requests to: a refusal of
/// one this small is final.
const MIN_REQUEST: u64 = 64 * 1024;
/// Default `TCP_NOTSENT_LOWAT` of upload sockets (see [`Uploader::unsent_limit`]).
pub const DEFAULT_UNSENT_LIMIT: u32 = 16 * 1024;
use net::MAX_RESPONSE_BODY;

/// The progress callback type.
type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// Uploads files with the seed protocol (Google-style "308 Resume
/// Incomplete"), tus 1.0.0 or the IETF resumable-upload draft (see
/// [`Protocol`]), resuming across dropped connections, server errors and,
/// with a journal directory, across runs. With tus, a file can be sent as
/// several parts at once ([`Uploader::parallel`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), tenax_client::Error> {
/// use std::time::Duration;
/// let report = tenax_client::Uploader::new()
///     .chunk_size(16 << 20)
///     .protocol(tenax_client::Protocol::Auto)
///     .max_time(Some(Duration::from_secs(3600)))
///     .on_progress(|p| eprintln!("{}/{} bytes", p.acknowledged, p.total))
///     .upload("backup.tar", "http://localhost:8080/")
///     .await?;
/// println!("{} bytes, sha256 {}", report.size, report.sha256);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Uploader {
    chunk_size: u64,
    policy: Policy,
    journal_dir: Option<PathBuf>,
    protocol: Protocol,
    parallel: usize,
    sockets: Sockets,
    on_progress: Option<Arc<ProgressFn>>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("chunk_size", &self.chunk_size)
            .field("policy", &self.policy)
            .field("journal_dir", &self.journal_dir)
            .field("protocol", &self.protocol)
            .field("parallel", &self.parallel)
            .field("sockets", &self.sockets)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl Default for Uploader {
    fn default() -> Self {
        Uploader {
            chunk_size: u64::MAX,
            policy: Policy::default(),
            journal_dir: None,
            protocol: Protocol::Seed,
            parallel: 1,
            sockets: Sockets {
                unsent_limit: Some(DEFAULT_UNSENT_LIMIT),
                send_buffer: None,
            },
            on_progress: None,
        }
    }
}

impl Uploader {
    /// An uploader with the defaults: the whole rest of the file in each
    /// request, 100 retries without progress (network failures not
    /// counted), no time limit, a 30 s stall timeout, a 10 s connect
    /// timeout, backoff from 1 s to 60 s after the server's trouble, probes
    /// every 250 ms while the link is down, no journal, the seed protocol,
    /// one connection and 16 KiB unsent per socket.
    pub fn new() -> Self {
        Self::default()
    }

    crate::net::policy_setters!("upload");

    /// The most bytes one request carries (default: no limit, the whole rest
    /// of the file in one request). The server keeps what arrives of a cut
    /// request, and after a drop the upload asks what it holds and goes on
    /// from there, so a smaller request saves nothing on a flapping link,
    /// while each request's end waits a round trip and a sync for its
    /// answer. Set a limit for a server or proxy that caps request bodies
    /// (a `413` also makes the upload shrink its requests). Zero is treated
    /// as one byte.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// Where to keep the resume journal (default `None`: no journal, an
    /// interrupted run cannot be resumed by the next one).
    pub fn journal_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.journal_dir = dir;
        self
    }

    /// The protocol to speak (default [`Protocol::Seed`]). With
    /// [`Protocol::Auto`] the server is asked first (`OPTIONS
    /// {base}/uploads`). tus and ietf uploads go to `{base}/uploads`, the name
    /// travelling in `Upload-Metadata` / `Content-Disposition`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Upload the file as `parts` contiguous parts at once (default 1). Needs
    /// tus with the `concatenation` extension: each part is a partial tus
    /// upload with its own retries, then a final upload concatenates them.
    /// When the dialect cannot do that (seed, ietf, or a server without
    /// `concatenation`), the upload uses one connection and an
    /// [`Event::Warning`] says so. Zero is treated as one.
    pub fn parallel(mut self, parts: usize) -> Self {
        self.parallel = parts.max(1);
        self
    }

    /// The most bytes each upload connection lets the kernel hold unsent
    /// (`TCP_NOTSENT_LOWAT`; default [`DEFAULT_UNSENT_LIMIT`], 16 KiB;
    /// `None`: the system's default, unlimited on Linux). Every byte the
    /// kernel holds when a link drops is lost and sent again, so a small
    /// queue suits flapping links; bytes in flight are not limited by it, so
    /// a fast long link keeps its speed. Linux and Android only; ignored
    /// elsewhere.
    pub fn unsent_limit(mut self, bytes: Option<u32>) -> Self {
        self.sockets.unsent_limit = bytes.map(|b| b.max(1));
        self
    }

    /// The kernel send buffer of each upload connection (`SO_SNDBUF`,
    /// unsent and in-flight bytes together; default `None`: autotuned by
    /// the system). A fixed buffer also caps the speed at about `bytes` per
    /// round trip, so it is for links known to be slow.
    pub fn send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.sockets.send_buffer = bytes;
        self
    }

    /// Calls `callback` on every progress report and event. It runs on the
    /// upload task, so it should be quick.
    pub fn on_progress(mut self, callback: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(callback));
        self
    }

    /// Uploads `file` to `url`.
    ///
    /// `url` is either `http://host:port/api/upload?file=NAME` (upload as
    /// `NAME`) or a server root such as `http://host:port/` (upload under the
    /// file's base name). Returns once the server has the whole file and its
    /// SHA-256 and size match the local file's.
    pub async fn upload(&self, file: impl AsRef<Path>, url: &str) -> Result<UploadReport, Error> {
        let path = file.as_ref();
        let target = target::interpret(url, path)?;
        let local = |source| Error::LocalIo {
            path: path.to_owned(),
            source,
        };
        let hash_file = tokio::fs::File::open(path).await.map_err(local)?;
        let meta = hash_file.metadata().await.map_err(local)?;
        if !meta.is_file() {
            return Err(local(io::Error::other("not a regular file")));
        }
        let journal = self.journal_dir.as_ref().map(|dir| {
            let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            Journal::new(dir, &canonical, target.endpoint.as_str())
        });
        let (client, flapping_client) = http::Client::pair(&self.policy, self.sockets)?;
        let mut shared = Shared {
            up: self,
            client,
            flapping_client,
            path: path.to_owned(),
            target,
            dialect: Dialect::Seed,
            size: meta.len(),
            identity: FileIdentity::of(&meta),
            hash: Arc::new(Mutex::new(HashCursor::default())),
            hash_file: tokio::sync::Mutex::new(hash_file),
            journal,
            sessions: Mutex::new(Vec::new()),
            acked: Vec::new(),
            sending: Vec::new(),
            bytes_sent: Arc::new(AtomicU64::new(0)),
            dropped: AtomicBool::new(false),
            local_error: Arc::new(Mutex::new(None)),
            tally: Tally::new(&self.policy),
            request_size: AtomicU64::new(self.chunk_size),
        };
        let parts = shared.negotiate().await?;
        shared.acked = (0..parts).map(|_| AtomicU64::new(0)).collect();
        shared.sending = (0..parts).map(|_| AtomicU64::new(0)).collect();
        *lock(&shared.sessions) = vec![None; parts];
        shared.drive(parts).await
    }

    /// Cancels a session (`DELETE`). A session that is already gone counts
    /// as cancelled.
    pub async fn cancel(&self, session_url: &str) -> Result<(), Error> {
        let url = Url::parse(session_url).map_err(|e| Error::InvalidUrl {
            url: session_url.to_owned(),
            reason: e.to_string(),
        })?;
        let response = self
            .client()?
            .delete(url)
            .timeout(self.policy.stall_timeout)
            .send()
            .await
            .map_err(|e| Error::Protocol(error_chain(&e)))?;
        let status = response.status().as_u16();
        match status {
            200..=299 | 404 | 410 => Ok(()),
            _ => Err(Error::Rejected {
                status,
                detail: problem_detail(status, &response.read_capped().await),
            }),
        }
    }

    /// The HTTP client: no redirects (a `308` must reach us), our timeouts
    /// and socket options.
    fn client(&self) -> Result<http::Client, Error> {
        http::Client::new(&self.policy, self.sockets)
    }
}

/// A progress report, passed to the [`Uploader::on_progress`] callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes the server has acknowledged (its latest `Range`, or the full
    /// size once it answered `200`). It can go down if the server lost bytes.
    pub acknowledged: u64,
    /// The file's size.
    pub total: u64,
    /// Body bytes put on the wire so far, re-sent ones included.
    pub bytes_sent: u64,
    /// Bytes of the requests under way that are on the wire but not yet
    /// acknowledged: the server acknowledges them when a request ends (a
    /// request may carry the whole file); after a drop it reports how many
    /// it kept.
    pub sending: u64,
    /// Failed attempts so far (all of them, not only consecutive ones).
    pub retries: u32,
    /// What happened.
    pub event: Event,
}

/// What a [`Progress`] (upload) or [`DownloadProgress`](crate::DownloadProgress)
/// report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// [`Protocol::Auto`] chose a dialect.
    ProtocolChosen {
        /// The dialect spoken from now on.
        protocol: Protocol,
    },
    /// Something the user asked for cannot be done; the upload goes on
    /// without it (e.g. `parallel` without tus concatenation).
    Warning {
        /// What and why.
        message: String,
    },
    /// A new session was created on the server (one per part for a
    /// parallel upload, plus the final concatenation).
    SessionCreated {
        /// The session URL.
        url: String,
    },
    /// The server acknowledged bytes (after a chunk).
    Acknowledged,
    /// A request body is on its way (reported about four times a second
    /// while it streams): see [`Progress::sending`].
    Sending,
    /// After an interruption (or from the journal), the server's progress
    /// was queried and the upload continues from there.
    Resumed {
        /// The offset the upload continues from.
        from: u64,
    },
    /// An attempt failed; the next one starts after a delay.
    Retrying {
        /// The delay before the next attempt.
        after: Duration,
        /// What went wrong.
        reason: String,
    },
    /// The upload starts over in a new session.
    Restarted {
        /// Why.
        reason: String,
    },
    /// The server has the whole file and the checksums match (upload), or
    /// the whole file is on disk and verified (download).
    Completed,
    /// A download started: the first answer came.
    Started {
        /// The file's size, if the server told it (not while a followed
        /// upload is in progress).
        total: Option<u64>,
        /// Connections used.
        connections: usize,
    },
    /// Downloaded bytes reached the disk.
    Received,
    /// A followed upload has no new bytes yet; the download polls again
    /// after `after`.
    Waiting {
        /// Bytes on disk so far.
        available: u64,
        /// The delay before the next poll.
        after: Duration,
    },
}

/// The outcome of a successful upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UploadReport {
    /// The session URL the file was uploaded through (the final
    /// concatenation for a parallel upload).
    pub url: String,
    /// The dialect spoken (never [`Protocol::Auto`]).
    pub protocol: Protocol,
    /// How many parts were uploaded at once (1 unless parallel).
    pub parts: usize,
    /// The upload's name on the server.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex (checked against the server's).
    pub sha256: String,
    /// Whether the server's SHA-256 of what it stored was checked against
    /// [`sha256`](Self::sha256): tenax reports one, other tus and RUFH
    /// servers do not (their upload is complete, unverified).
    pub verified: bool,
    /// Body bytes put on the wire, re-sent ones included; `bytes_sent -
    /// size` is the overhead of retries (negative savings when resumed).
    pub bytes_sent: u64,
    /// Failed attempts that were retried.
    pub retries: u32,
    /// Wall-clock time of the upload (serialised as fractional seconds).
    #[serde(serialize_with = "crate::seconds::serialize")]
    pub elapsed: Duration,
}

/// The final `200` JSON (only the fields the client checks).
#[derive(Debug, Deserialize)]
struct ServerObject {
    /// `size` as a decimal string (GCS style) or a number.
    size: serde_json::Value,
    /// Lowercase hex SHA-256.
    sha256: Option<String>,
    /// Set when the server offers no final JSON at all.
    #[serde(skip)]
    unverified: bool,
}

impl ServerObject {
    /// A complete upload of `size` bytes on a server without a final JSON.
    fn unverified(size: u64) -> Self {
        ServerObject {
            size: size.into(),
            sha256: None,
            unverified: true,
        }
    }
}

/// A server answer the loop can act on.
#[derive(Debug)]
enum Reply {
    /// Not complete: this many bytes are held.
    Incomplete(u64),
    /// The upload is final; with the seed final JSON if the answer had it.
    Complete(Option<ServerObject>),
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::session::pieces;
    use super::*;

    /// An upload can run on any thread: `tokio::spawn` needs a `Send` future.
    #[test]
    fn the_upload_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let uploader = Uploader::new();
        assert_send(uploader.upload("missing-file", "http://127.0.0.1:9"));
    }

    #[test]
    fn report_serialises_seconds() {
        let report = UploadReport {
            url: "http://h/uploads/x".into(),
            protocol: Protocol::Tus,
            parts: 1,
            name: "a".into(),
            size: 3,
            sha256: "ab".into(),
            verified: true,
            bytes_sent: 4,
            retries: 1,
            elapsed: Duration::from_millis(1500),
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["elapsed"], 1.5);
        assert_eq!(json["size"], 3);
        assert_eq!(json["protocol"], "tus");
    }

    #[test]
    fn blocks_are_cut_into_pieces_in_order() {
        let block = Bytes::from(
            (0..=255u8)
                .cycle()
                .take(FLAPPING_PIECE * 2 + 5)
                .collect::<Vec<_>>(),
        );
        let cut: Vec<Bytes> = pieces(Ok(block.clone()), FLAPPING_PIECE)
            .into_iter()
            .map(|piece| piece.expect("data"))
            .collect();
        assert_eq!(
            cut.iter().map(Bytes::len).collect::<Vec<_>>(),
            [FLAPPING_PIECE, FLAPPING_PIECE, 5]
        );
        assert_eq!(cut.concat(), block.to_vec());
        assert_eq!(pieces(Ok(block), STEADY_PIECE).len(), 1);
        assert!(pieces(Err(io::Error::other("x")), STEADY_PIECE)[0].is_err());
    }
}
