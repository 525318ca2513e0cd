//! The uploader: configuration, progress reporting and the upload loop.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, future, stream};
use reqwest::header::LOCATION;
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use tenax_protocol::parse_u64;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::dialect::{Answer, Capabilities, Creation, Dialect, Protocol};
use crate::error::Error;
use crate::hash::{self, HashCursor};
use crate::http::{self, Response, Sockets};
use crate::journal::{Entry, FileIdentity, Journal};
use crate::net::{
    self, Failure, Policy, Retrier, Tally, error_chain, lock, problem_detail, record,
};
use crate::target::{self, Target};

/// Read size of the streamed chunk bodies (each read is a trip to tokio's
/// blocking pool, so not too small), and the size of the pieces they are
/// handed to the HTTP stack in while the link holds.
const READ_CAPACITY: usize = 64 * 1024;
/// The piece size once a connection of the upload has dropped. Every
/// piece counts as sent once handed over, and what the HTTP stack and the
/// kernel hold when the link dies is lost and sent again: the link soak
/// (`bench/soak`, cuts every 1–8 MiB) lost about 1 MiB per cut with
/// 256 KiB pieces, 0.3–0.5 MiB with 64 KiB ones through reqwest, 110–210
/// KiB with 64 KiB pieces and a 64 KiB unsent limit, 65–80 KiB with 16 KiB
/// pieces, a 16 KiB stack buffer (`http.rs`) and a 16 KiB unsent limit,
/// 49–64 KiB with 8 KiB for all three (hyper's smallest buffer); most of
/// what is left is in the proxy, which stands for the link. Small pieces and a small stack buffer
/// cost system calls: on loopback they took a quarter more client CPU and
/// 10–20% of the speed, hence only on a link that has dropped, where the
/// link, not the CPU, is the limit.
const FLAPPING_PIECE: usize = 8 * 1024;
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
            chunk_size: 8 << 20,
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
    /// An uploader with the defaults: 8 MiB chunks, 100 retries without
    /// progress (network failures not counted), no time limit, a 30 s stall
    /// timeout, a 10 s connect timeout, backoff from 1 s to 60 s after the
    /// server's trouble, probes every 500 ms while the link is down, no journal, the seed protocol, one
    /// connection and 16 KiB unsent per socket.
    pub fn new() -> Self {
        Self::default()
    }

    crate::net::policy_setters!("upload");

    /// Bytes per request (default 8 MiB). Zero is treated as one byte.
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
            bytes_sent: Arc::new(AtomicU64::new(0)),
            dropped: AtomicBool::new(false),
            local_error: Arc::new(Mutex::new(None)),
            tally: Tally::new(&self.policy),
        };
        let parts = shared.negotiate().await?;
        shared.acked = (0..parts).map(|_| AtomicU64::new(0)).collect();
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
}

/// A server answer the loop can act on.
#[derive(Debug)]
enum Reply {
    /// Not complete: this many bytes are held.
    Incomplete(u64),
    /// The upload is final; with the seed final JSON if the answer had it.
    Complete(Option<ServerObject>),
}

/// A read block cut into pieces of at most `piece` bytes (sharing its
/// buffer).
fn pieces(item: io::Result<Bytes>, piece: usize) -> Vec<io::Result<Bytes>> {
    let piece = piece.max(1);
    match item {
        Ok(mut block) => {
            let mut pieces = Vec::with_capacity(block.len().div_ceil(piece));
            while block.len() > piece {
                pieces.push(Ok(block.split_to(piece)));
            }
            pieces.push(Ok(block));
            pieces
        }
        Err(e) => vec![Err(e)],
    }
}

/// What every lane (part) of one upload shares.
struct Shared<'a> {
    up: &'a Uploader,
    client: http::Client,
    /// The client of chunk requests once the link has dropped.
    flapping_client: http::Client,
    path: PathBuf,
    target: Target,
    /// The dialect spoken (resolved from [`Protocol::Auto`] first).
    dialect: Dialect,
    size: u64,
    identity: FileIdentity,
    hash: Arc<Mutex<HashCursor>>,
    /// A handle for reading gaps into the hash.
    hash_file: tokio::sync::Mutex<tokio::fs::File>,
    journal: Option<Journal>,
    /// The upload URL of each lane, as journaled.
    sessions: Mutex<Vec<Option<String>>>,
    /// Bytes the server acknowledged, per lane.
    acked: Vec<AtomicU64>,
    bytes_sent: Arc<AtomicU64>,
    /// A chunk request of the upload got no answer (the link dropped or
    /// stalled): from then on bodies go in [`FLAPPING_PIECE`]s through
    /// `flapping_client`.
    dropped: AtomicBool,
    /// A read error met by a body stream.
    local_error: Arc<Mutex<Option<io::Error>>>,
    /// Failed attempts, the last error and the time limit, all lanes
    /// together.
    tally: Tally,
}

impl Shared<'_> {
    /// Resolves the dialect (asking the server for [`Protocol::Auto`]) and
    /// the number of parts to upload at once.
    async fn negotiate(&mut self) -> Result<usize, Error> {
        let wanted = self.up.parallel;
        let capabilities = match self.up.protocol {
            Protocol::Auto => Some(self.probe().await?),
            Protocol::Tus if wanted > 1 => Some(self.probe().await?),
            _ => None,
        };
        self.dialect = match self.up.protocol {
            Protocol::Seed => Dialect::Seed,
            Protocol::Tus => Dialect::Tus,
            Protocol::Ietf => Dialect::Ietf,
            Protocol::Auto => capabilities.unwrap_or_default().dialect(),
        };
        if self.up.protocol == Protocol::Auto {
            self.emit(Event::ProtocolChosen {
                protocol: self.dialect.protocol(),
            });
        }
        if wanted < 2 {
            return Ok(1);
        }
        let refusal = if self.dialect != Dialect::Tus {
            Some(format!(
                "parallel uploads need tus concatenation; the {} upload uses one connection",
                self.dialect.protocol()
            ))
        } else if !capabilities.is_some_and(|c| c.concatenation) {
            Some(
                "the server does not offer tus concatenation; the upload uses one connection"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(message) = refusal {
            self.emit(Event::Warning { message });
            return Ok(1);
        }
        // At least one byte per part.
        Ok(usize::try_from(self.size)
            .map_or(wanted, |size| wanted.min(size))
            .max(1))
    }

    /// `OPTIONS {base}/uploads`, retried on transient trouble. A server
    /// that answers it with an error offers nothing (seed only).
    async fn probe(&self) -> Result<Capabilities, Error> {
        let mut retrier = Retrier::new(&self.up.policy);
        loop {
            let request = self
                .client
                .request(Method::OPTIONS, self.target.collection.clone());
            let failure = match self.send_watched(request, &AtomicU64::new(0)).await {
                Ok(response) if response.status().is_success() => {
                    return Ok(Capabilities::of(response.headers()));
                }
                Ok(response) => match self.failure_of(response).await {
                    failure @ (Failure::Transient { .. } | Failure::Network(_)) => failure,
                    _ => return Ok(Capabilities::default()),
                },
                Err(failure) => failure,
            };
            self.failed(&mut retrier, failure).await?;
        }
    }

    /// Uploads the file in `parts` lanes (then concatenates them) and checks
    /// the result.
    async fn drive(&self, parts: usize) -> Result<UploadReport, Error> {
        let resume = self.resume_points(parts).await;
        let (session, object) = if parts <= 1 {
            let mut lane = Lane::new(self, Some(0), Kind::Whole, 0, self.size);
            let object = lane.drive(resume.into_iter().next().flatten()).await?;
            (lane.session, object)
        } else {
            let mut lanes: Vec<Lane<'_, '_>> = (0..parts)
                .map(|i| {
                    let start = crate::parts::split(self.size, parts, i);
                    let end = crate::parts::split(self.size, parts, i + 1);
                    Lane::new(self, Some(i), Kind::Part, start, end - start)
                })
                .collect();
            future::try_join_all(
                lanes
                    .iter_mut()
                    .zip(resume)
                    .map(|(lane, url)| lane.drive(url)),
            )
            .await?;
            let urls = lanes.into_iter().map(|lane| lane.session).collect();
            let mut last = Lane::new(self, None, Kind::Final(urls), 0, self.size);
            let object = last.drive(None).await?;
            (last.session, object)
        };
        let object = object.ok_or_else(|| {
            Error::Protocol("the upload completed without a final answer".to_owned())
        })?;
        self.finish(object, &session, parts).await
    }

    /// The journaled upload URLs to resume, one per lane (`None`: create).
    /// A journal of a changed file, another dialect or another number of
    /// parts is dropped (and its uploads deleted, best effort).
    async fn resume_points(&self, parts: usize) -> Vec<Option<Url>> {
        let fresh = vec![None; parts];
        let Some(journal) = &self.journal else {
            return fresh;
        };
        let entry = match journal.load() {
            Ok(Some(entry)) => entry,
            Ok(None) => return fresh,
            Err(e) => {
                tracing::warn!(journal = %journal.path().display(), error = %e, "ignoring an unreadable journal entry");
                return fresh;
            }
        };
        let urls: Vec<Option<Url>> = if entry.parts.is_empty() {
            vec![Url::parse(&entry.session).ok()]
        } else {
            entry
                .parts
                .iter()
                .map(|part| part.as_deref().and_then(|u| Url::parse(u).ok()))
                .collect()
        };
        let reason = if entry.identity != self.identity {
            Some("file changed since the interrupted upload".to_owned())
        } else if Dialect::named(&entry.protocol) != Some(self.dialect) || urls.len() != parts {
            Some(format!(
                "the interrupted upload used {} in {} part(s), this one uses {} in {parts}",
                entry.protocol,
                urls.len(),
                self.dialect.protocol()
            ))
        } else {
            None
        };
        let Some(reason) = reason else {
            *lock(&self.sessions) = urls
                .iter()
                .map(|url| url.as_ref().map(Url::to_string))
                .collect();
            return urls;
        };
        let _ = journal.remove();
        for url in urls.into_iter().flatten() {
            // Best effort: free the server's space.
            let _ = self
                .client
                .delete(url)
                .timeout(self.up.policy.stall_timeout)
                .send()
                .await;
        }
        self.emit(Event::Restarted { reason });
        fresh
    }

    /// Sends a request under the stall watchdog and the time limit.
    async fn send_watched(
        &self,
        request: http::RequestBuilder,
        moved: &AtomicU64,
    ) -> Result<Response, Failure> {
        self.tally
            .send_watched(&self.up.policy, request.send(), moved)
            .await
    }

    /// [`send_watched`](Self::send_watched) for a request with a body of
    /// `len` bytes: while its body is silent before its end, it is checked
    /// with `OPTIONS {base}/uploads` on fresh connections (any answer: the
    /// link is up, this connection is dead). Once the body is all sent the
    /// silence is the server's (a slow sync) and only the stall timeout
    /// applies.
    async fn send_body(
        &self,
        request: http::RequestBuilder,
        moved: &AtomicU64,
        len: u64,
    ) -> Result<Response, Failure> {
        let probe = || {
            let pending = moved.load(Ordering::Relaxed) < len;
            let request = self
                .client
                .request(Method::OPTIONS, self.target.collection.clone());
            async move { pending && request.send().await.is_ok() }
        };
        self.tally
            .send_probed(&self.up.policy, request.send(), moved, Some(probe))
            .await
    }

    /// Reads the upload URL off the answer to a creating `POST`.
    async fn session_from(&self, response: Response) -> Result<Url, Failure> {
        let status = response.status().as_u16();
        if !matches!(status, 200 | 201) {
            return Err(match self.failure_of(response).await {
                Failure::Gap(detail) => Failure::Fatal(Error::Rejected { status, detail }),
                failure => failure,
            });
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::Fatal(Error::Protocol(
                    "the server created an upload without a Location".to_owned(),
                ))
            })?;
        response.url().join(location).map_err(|e| {
            Failure::Fatal(Error::Protocol(format!(
                "the upload Location {location:?} is invalid: {e}"
            )))
        })
    }

    /// Classifies an error answer, reading its problem details.
    async fn failure_of(&self, response: Response) -> Failure {
        let status = response.status().as_u16();
        let retry_after = net::retry_after(response.headers());
        let body = response.read_capped().await;
        match net::classify(status, retry_after, &body) {
            Failure::Fatal(Error::Rejected { detail, .. })
                if status == 409 && self.dialect.conflict_is_gap() =>
            {
                Failure::Gap(detail)
            }
            failure => failure,
        }
    }

    /// Reads a (small) response body under the stall timeout.
    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, Failure> {
        let read = async {
            let mut body = Vec::new();
            while let Some(block) = response.chunk().await? {
                if body.len() + block.len() > MAX_RESPONSE_BODY {
                    return Ok(None);
                }
                body.extend_from_slice(&block);
            }
            Ok::<_, hyper::Error>(Some(body))
        };
        match tokio::time::timeout(self.up.policy.stall_timeout, read).await {
            Err(_) => Err(Failure::network("stalled while reading the response")),
            Ok(Err(e)) => Err(Failure::of_transport(&e)),
            Ok(Ok(None)) => Err(Failure::Fatal(Error::Protocol(
                "the response body is too large".to_owned(),
            ))),
            Ok(Ok(Some(body))) => Ok(body),
        }
    }

    /// Books a failed attempt of a lane: gives up when the policy says so,
    /// otherwise reports it and sleeps (transient failures only).
    async fn failed(&self, retry: &mut Retrier, failure: Failure) -> Result<(), Error> {
        self.check_identity()?;
        let (reason, delay) = self.tally.book(&self.up.policy, retry, failure)?;
        self.emit(Event::Retrying {
            after: delay,
            reason,
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Checks the final answer against the local file and builds the report.
    async fn finish(
        &self,
        object: ServerObject,
        session: &Url,
        parts: usize,
    ) -> Result<UploadReport, Error> {
        // The upload is finished whatever the verdict.
        self.forget();
        let remote_size = match &object.size {
            serde_json::Value::String(s) => parse_u64(s).ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::Protocol(format!("the final size {} is not a number", object.size))
        })?;
        if remote_size != self.size {
            return Err(Error::SizeMismatch {
                local: self.size,
                remote: remote_size,
            });
        }
        {
            let mut file = self.hash_file.lock().await;
            hash::catch_up(&self.hash, &mut file, self.size)
                .await
                .map_err(|e| self.local_io(e))?;
        }
        self.check_identity()?;
        let local = hash::lock(&self.hash).finish();
        let remote = object
            .sha256
            .ok_or_else(|| Error::Protocol("the final response has no sha256".to_owned()))?;
        if !remote.eq_ignore_ascii_case(&local) {
            return Err(Error::DigestMismatch { local, remote });
        }
        self.emit(Event::Completed);
        Ok(UploadReport {
            url: session.to_string(),
            protocol: self.dialect.protocol(),
            parts,
            name: self.target.name.clone(),
            size: self.size,
            sha256: local,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            retries: self.tally.retries(),
            elapsed: self.tally.started().elapsed(),
        })
    }

    /// Journals the upload URL of lane `index` (best effort: a journal that
    /// cannot be written only costs resumability across runs).
    fn journal_session(&self, index: usize, url: &Url) {
        let mut sessions = lock(&self.sessions);
        if let Some(slot) = sessions.get_mut(index) {
            *slot = Some(url.to_string());
        }
        let Some(journal) = &self.journal else {
            return;
        };
        let parallel = sessions.len() > 1;
        let entry = Entry {
            version: 1,
            session: if parallel {
                String::new()
            } else {
                url.to_string()
            },
            protocol: self.dialect.protocol().as_str().to_owned(),
            parts: if parallel {
                sessions.clone()
            } else {
                Vec::new()
            },
            file: self.path.display().to_string(),
            endpoint: self.target.endpoint.to_string(),
            identity: self.identity.clone(),
        };
        if let Err(e) = journal.store(&entry) {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot write the resume journal");
        }
    }

    /// Drops the journal entry (the upload is finished or dead).
    fn forget(&self) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.remove()
        {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot remove the resume journal entry");
        }
    }

    /// Fails if a body stream met a read error.
    fn check_local(&self) -> Result<(), Error> {
        match lock(&self.local_error).take() {
            Some(e) => Err(self.local_io(e)),
            None => Ok(()),
        }
    }

    /// Fails if the file is no longer the one the upload started with.
    fn check_identity(&self) -> Result<(), Error> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.local_io(e))?;
        if FileIdentity::of(&meta) != self.identity {
            return Err(Error::FileChanged {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn local_io(&self, source: io::Error) -> Error {
        Error::LocalIo {
            path: self.path.clone(),
            source,
        }
    }

    fn emit(&self, event: Event) {
        if let Some(callback) = &self.up.on_progress {
            callback(Progress {
                acknowledged: self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum(),
                total: self.size,
                bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
                retries: self.tally.retries(),
                event,
            });
        }
    }
}

/// What a lane uploads.
#[derive(Debug)]
enum Kind {
    /// The whole file.
    Whole,
    /// One part of a parallel upload (a tus partial upload).
    Part,
    /// The concatenation of these part uploads (created complete).
    Final(Vec<Url>),
}

/// The next request of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Send from this offset (or, at the end, complete the upload).
    Send(u64),
    /// Ask the server how much it holds.
    Query,
    /// Ask for the final JSON with the server's digest (seed status query).
    Fetch,
}

/// One upload resource and its own retry loop: the whole file, or one part
/// of it, or the final concatenation.
struct Lane<'s, 'a> {
    sh: &'s Shared<'a>,
    /// The lane's slot in the journal and progress (none for the final).
    index: Option<usize>,
    kind: Kind,
    /// Where the lane's bytes start in the file.
    start: u64,
    /// How many bytes the lane uploads.
    len: u64,
    /// The upload URL (the endpoint until one is open).
    session: Url,
    /// The most the server has acknowledged of the current upload.
    high_water: u64,
    retry: Retrier,
}

impl<'s, 'a> Lane<'s, 'a> {
    fn new(sh: &'s Shared<'a>, index: Option<usize>, kind: Kind, start: u64, len: u64) -> Self {
        Lane {
            sh,
            index,
            kind,
            start,
            len,
            session: sh.target.endpoint.clone(),
            high_water: 0,
            retry: Retrier::new(&sh.up.policy),
        }
    }

    /// The upload loop: resumes `resume` (from the journal) or creates an
    /// upload, then sends, queries and retries until the server holds every
    /// byte. Returns the seed final JSON for a whole file or a final
    /// concatenation, `None` for a part.
    async fn drive(&mut self, resume: Option<Url>) -> Result<Option<ServerObject>, Error> {
        let sh = self.sh;
        let mut from_journal = resume.is_some();
        self.session = match resume {
            Some(url) => url,
            None => self.create().await?,
        };
        let mut resuming = from_journal;
        let mut restarts_left = 1u32;
        let mut step = self.first_step(from_journal);
        loop {
            let sent_at = match step {
                Step::Send(at)
                    if at < self.len || (at == self.len && sh.dialect.completes_explicitly()) =>
                {
                    Some(at)
                }
                _ => None,
            };
            let result = match (step, sent_at) {
                (_, Some(at)) => self.send_chunk(at).await,
                (Step::Fetch, _) => self.fetch().await,
                _ => self.query().await,
            };
            sh.check_local()?;
            match result {
                Ok(Reply::Complete(Some(object))) => {
                    self.set_acked(self.len);
                    return Ok(Some(object));
                }
                Ok(Reply::Complete(None)) => {
                    self.set_acked(self.len);
                    sh.emit(Event::Acknowledged);
                    if matches!(self.kind, Kind::Part) {
                        return Ok(None);
                    }
                    step = Step::Fetch;
                }
                Ok(Reply::Incomplete(held)) => {
                    if held > self.len {
                        return Err(Error::Protocol(format!(
                            "the server claims {held} bytes of a {}-byte upload",
                            self.len
                        )));
                    }
                    self.set_acked(held);
                    if held > self.high_water {
                        self.high_water = held;
                        self.retry = Retrier::new(&sh.up.policy);
                    }
                    if resuming {
                        resuming = false;
                        sh.emit(Event::Resumed {
                            from: self.start + held,
                        });
                    } else {
                        sh.emit(Event::Acknowledged);
                    }
                    let stuck = match (step, sent_at) {
                        (_, Some(at)) if at == self.len => Some(format!(
                            "the server holds all {held} bytes but did not complete the upload"
                        )),
                        (_, Some(at)) if held <= at => Some(format!(
                            "the server acknowledged none of the chunk at offset {}",
                            self.start + at
                        )),
                        (Step::Fetch, _) => Some(format!(
                            "the upload was reported complete, but its status query reports {held} bytes"
                        )),
                        _ => None,
                    };
                    match stuck {
                        Some(reason) => {
                            sh.failed(&mut self.retry, Failure::transient(reason))
                                .await?;
                            resuming = true;
                            step = Step::Query;
                        }
                        None => step = Step::Send(held),
                    }
                }
                Err(Failure::Gone { status, detail }) => {
                    let reason = if from_journal {
                        from_journal = false;
                        "the interrupted upload no longer exists on the server".to_owned()
                    } else if restarts_left > 0 {
                        restarts_left -= 1;
                        format!("the upload is gone on the server (HTTP {status}: {detail})")
                    } else {
                        sh.forget();
                        return Err(Error::Rejected { status, detail });
                    };
                    sh.emit(Event::Restarted { reason });
                    self.session = self.create().await?;
                    self.set_acked(0);
                    self.high_water = 0;
                    resuming = false;
                    step = self.first_step(false);
                }
                Err(Failure::Fatal(error)) => {
                    if matches!(error, Error::Rejected { .. }) {
                        sh.forget();
                    }
                    return Err(error);
                }
                Err(failure) => {
                    sh.failed(&mut self.retry, failure).await?;
                    resuming = true;
                    if step != Step::Fetch {
                        step = Step::Query;
                    }
                }
            }
        }
    }

    /// Where a lane starts: a fresh upload sends from 0, a journaled one asks
    /// first, a final concatenation is complete at once.
    fn first_step(&self, from_journal: bool) -> Step {
        if from_journal || matches!(self.kind, Kind::Final(_)) {
            Step::Query
        } else {
            Step::Send(0)
        }
    }

    fn set_acked(&self, held: u64) {
        if let Some(slot) = self.index.and_then(|i| self.sh.acked.get(i)) {
            slot.store(held, Ordering::Relaxed);
        }
    }

    /// `POST`s until an upload exists, then journals it.
    async fn create(&mut self) -> Result<Url, Error> {
        let sh = self.sh;
        loop {
            let creation = match &self.kind {
                Kind::Whole => Creation::Whole,
                Kind::Part => Creation::Part,
                Kind::Final(parts) => Creation::Final(parts),
            };
            let request = sh
                .dialect
                .create(&sh.client, &sh.target, self.len, creation)?;
            let failure = match sh.send_watched(request, &AtomicU64::new(0)).await {
                Ok(response) => match sh.session_from(response).await {
                    Ok(url) => {
                        if let Some(index) = self.index {
                            sh.journal_session(index, &url);
                        }
                        sh.emit(Event::SessionCreated {
                            url: url.to_string(),
                        });
                        return Ok(url);
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::BadRequest(detail) => {
                    return Err(Error::Rejected {
                        status: 400,
                        detail,
                    });
                }
                Failure::Gone { status, detail } => {
                    return Err(Error::Rejected { status, detail });
                }
                failure => sh.failed(&mut self.retry, failure).await?,
            }
        }
    }

    /// Sends the chunk starting at lane offset `at`, streamed from the file
    /// (an empty completing request when `at` is the lane's end).
    async fn send_chunk(&mut self, at: u64) -> Result<Reply, Failure> {
        let sh = self.sh;
        let from = self.start + at;
        if self.start == 0 && hash::lock(&sh.hash).upto() < from {
            let mut file = sh.hash_file.lock().await;
            let caught_up = hash::catch_up(&sh.hash, &mut file, from).await;
            caught_up.map_err(|e| Failure::Fatal(sh.local_io(e)))?;
        }
        let local = |e| Failure::Fatal(sh.local_io(e));
        let len = sh.up.chunk_size.min(self.len - at);
        let moved = Arc::new(AtomicU64::new(0));
        let (client, piece) = if sh.dropped.load(Ordering::Relaxed) {
            (&sh.flapping_client, FLAPPING_PIECE)
        } else {
            (&sh.client, READ_CAPACITY)
        };
        let body = if len == 0 {
            http::empty()
        } else {
            let mut file = tokio::fs::File::open(&sh.path).await.map_err(local)?;
            file.seek(io::SeekFrom::Start(from)).await.map_err(local)?;
            let (counter, hash, sent, slot) = (
                moved.clone(),
                sh.hash.clone(),
                sh.bytes_sent.clone(),
                sh.local_error.clone(),
            );
            let mut pos = from;
            let reads = ReaderStream::with_capacity(file.take(len), READ_CAPACITY)
                .flat_map(move |item| stream::iter(pieces(item, piece)))
                .map(move |item: io::Result<Bytes>| {
                    match &item {
                        Ok(block) => {
                            hash::lock(&hash).feed(pos, block);
                            let n = block.len() as u64;
                            pos += n;
                            counter.fetch_add(n, Ordering::Relaxed);
                            sent.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => record(&slot, io::Error::new(e.kind(), e.to_string())),
                    }
                    item
                });
            let (moved, slot) = (moved.clone(), sh.local_error.clone());
            let short = stream::once(async move {
                if moved.load(Ordering::Relaxed) < len {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when the upload started",
                    );
                    record(&slot, io::Error::new(e.kind(), e.to_string()));
                    Err(e)
                } else {
                    Ok(Bytes::new())
                }
            })
            .filter(|item| future::ready(item.is_err()));
            http::streamed(reads.chain(short))
        };
        let request = sh
            .dialect
            .chunk(client, &self.session, (at, len, self.len), body);
        let response = sh
            .send_body(request, &moved, len)
            .await
            .inspect_err(|_| sh.dropped.store(true, Ordering::Relaxed))?;
        self.reply_of(response, sh.dialect).await
    }

    /// Asks the server how much it holds (seed: `bytes */SIZE`, which
    /// finalises when it holds everything; tus, ietf: `HEAD`).
    async fn query(&self) -> Result<Reply, Failure> {
        let sh = self.sh;
        // Once the link has dropped, through the chunks' client: the next
        // chunk reuses the connection instead of opening another.
        let client = if sh.dropped.load(Ordering::Relaxed) {
            &sh.flapping_client
        } else {
            &sh.client
        };
        let request = sh.dialect.query(client, &self.session, self.len);
        let response = sh.send_watched(request, &AtomicU64::new(0)).await?;
        self.reply_of(response, sh.dialect).await
    }

    /// Asks for the final JSON (and the server's SHA-256) with a seed status
    /// query, which every dialect's upload answers.
    async fn fetch(&self) -> Result<Reply, Failure> {
        let sh = self.sh;
        let request = Dialect::status_query(&sh.client, &self.session);
        let response = sh.send_watched(request, &AtomicU64::new(0)).await?;
        self.reply_of(response, Dialect::Seed).await
    }

    /// Turns an answer (read as `dialect` speaks) into a [`Reply`] or
    /// [`Failure`].
    async fn reply_of(&self, response: Response, dialect: Dialect) -> Result<Reply, Failure> {
        let status = response.status().as_u16();
        match dialect.answer(status, response.headers(), self.len) {
            Err(reason) => Err(Failure::Fatal(Error::Protocol(reason))),
            Ok(Answer::Held(held)) => Ok(Reply::Incomplete(held)),
            Ok(Answer::Complete) => Ok(Reply::Complete(None)),
            Ok(Answer::FinalJson) => {
                let body = self.sh.read_body(response).await?;
                serde_json::from_slice(&body)
                    .map(|object| Reply::Complete(Some(object)))
                    .map_err(|e| {
                        Failure::Fatal(Error::Protocol(format!(
                            "the final response is not the expected JSON: {e}"
                        )))
                    })
            }
            Ok(Answer::Error) => Err(self.sh.failure_of(response).await),
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(pieces(Ok(block), READ_CAPACITY).len(), 1);
        assert!(pieces(Err(io::Error::other("x")), READ_CAPACITY)[0].is_err());
    }
}
