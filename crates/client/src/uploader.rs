//! The uploader: configuration, progress reporting and the upload loop.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, future, stream};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Response, Url};
use serde::{Deserialize, Serialize};
use tenax_protocol::parse_u64;
use tenax_protocol::seed::parse_held_range;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

use crate::error::Error;
use crate::hash::{self, HashCursor};
use crate::journal::{Entry, FileIdentity, Journal};
use crate::retry;
use crate::target::{self, Target};

/// Content type announced for every upload.
const OCTET_STREAM: &str = "application/octet-stream";
/// Read size of the streamed chunk bodies.
const READ_CAPACITY: usize = 256 * 1024;
/// Largest error or final response body read into memory.
const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Consecutive `400` answers after which the upload is abandoned.
const MAX_BAD_REQUESTS: u32 = 3;

/// The progress callback type.
type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// Uploads files with the seed protocol (Google-style "308 Resume
/// Incomplete"), resuming across dropped connections, server errors and,
/// with a journal directory, across runs.
///
/// ```no_run
/// # async fn demo() -> Result<(), tenax_client::Error> {
/// use std::time::Duration;
/// let report = tenax_client::Uploader::new()
///     .chunk_size(16 << 20)
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
    max_retries: u32,
    max_time: Option<Duration>,
    stall_timeout: Duration,
    connect_timeout: Duration,
    min_delay: Duration,
    max_delay: Duration,
    journal_dir: Option<PathBuf>,
    on_progress: Option<Arc<ProgressFn>>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("chunk_size", &self.chunk_size)
            .field("max_retries", &self.max_retries)
            .field("max_time", &self.max_time)
            .field("stall_timeout", &self.stall_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("journal_dir", &self.journal_dir)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl Default for Uploader {
    fn default() -> Self {
        Uploader {
            chunk_size: 8 << 20,
            max_retries: 100,
            max_time: None,
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            journal_dir: None,
            on_progress: None,
        }
    }
}

impl Uploader {
    /// An uploader with the defaults: 8 MiB chunks, 100 retries without
    /// progress, no time limit, a 30 s stall timeout, a 10 s connect timeout,
    /// backoff from 1 s to 60 s and no journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes per request (default 8 MiB). Zero is treated as one byte.
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// How many attempts in a row may fail without the server acknowledging
    /// a new byte before giving up (default 100). Progress resets the count.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The longest the whole upload may take (default `None`: unlimited).
    pub fn max_time(mut self, limit: Option<Duration>) -> Self {
        self.max_time = limit;
        self
    }

    /// How long a request may go without moving a body byte or getting a
    /// response before it counts as a dropped connection (default 30 s).
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The TCP (and TLS) connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds of the exponential backoff between retries (default 1 s to
    /// 60 s, factor 2, with jitter). A server's `Retry-After` overrides it.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max.max(min);
        self
    }

    /// Where to keep the resume journal (default `None`: no journal, an
    /// interrupted run cannot be resumed by the next one).
    pub fn journal_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.journal_dir = dir;
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
        let client = self.client()?;
        let mut run = Run {
            session: target.endpoint.clone(),
            up: self,
            client,
            path: path.to_owned(),
            target,
            size: meta.len(),
            identity: FileIdentity::of(&meta),
            hash: Arc::new(Mutex::new(HashCursor::default())),
            hash_file,
            journal,
            bytes_sent: Arc::new(AtomicU64::new(0)),
            local_error: Arc::new(Mutex::new(None)),
            acknowledged: 0,
            high_water: 0,
            retries: 0,
            failures: 0,
            bad_requests: 0,
            backoff: Box::new(retry::delays(self.min_delay, self.max_delay)),
            last_error: String::new(),
            started: Instant::now(),
            deadline: self.max_time.map(|limit| Instant::now() + limit),
        };
        run.drive().await
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
            .timeout(self.stall_timeout)
            .send()
            .await
            .map_err(|e| Error::Protocol(error_chain(&e)))?;
        let status = response.status().as_u16();
        match status {
            200..=299 | 404 | 410 => Ok(()),
            _ => Err(Error::Rejected {
                status,
                detail: problem_detail(status, &read_capped(response).await),
            }),
        }
    }

    /// The HTTP client: no redirects (a `308` must reach us), our timeouts.
    fn client(&self) -> Result<reqwest::Client, Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("tenax/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)
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

/// What a [`Progress`] report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new session was created on the server.
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
    /// The server has the whole file and the checksums match.
    Completed,
}

/// The outcome of a successful upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UploadReport {
    /// The session URL the file was uploaded through.
    pub url: String,
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
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
}

/// Serialises a duration as fractional seconds.
fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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
    /// `308`: this many bytes are held.
    Incomplete(u64),
    /// `200`: the upload is final.
    Complete(ServerObject),
}

/// Why an attempt did not produce a [`Reply`].
#[derive(Debug)]
enum Failure {
    /// Connection trouble, a stall, `408`, `429` or `5xx`: back off, query.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// `416`: the server has less than we assumed; query.
    Gap(String),
    /// `400`: query, but give up if it keeps happening.
    BadRequest(String),
    /// `404` or `410`: the session is gone.
    Gone { status: u16, detail: String },
    /// Give up with this error.
    Fatal(Error),
}

impl Failure {
    fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The state of one upload.
struct Run<'a> {
    up: &'a Uploader,
    client: reqwest::Client,
    path: PathBuf,
    target: Target,
    size: u64,
    identity: FileIdentity,
    /// The session URL (the endpoint until a session is open).
    session: Url,
    hash: Arc<Mutex<HashCursor>>,
    /// A handle for reading gaps into the hash.
    hash_file: tokio::fs::File,
    journal: Option<Journal>,
    bytes_sent: Arc<AtomicU64>,
    /// A read error met by a body stream.
    local_error: Arc<Mutex<Option<io::Error>>>,
    acknowledged: u64,
    /// The most the server has acknowledged in the current session.
    high_water: u64,
    retries: u32,
    /// Consecutive failures without progress.
    failures: u32,
    /// Consecutive `400` answers without progress.
    bad_requests: u32,
    backoff: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    last_error: String,
    started: Instant,
    deadline: Option<Instant>,
}

impl Run<'_> {
    /// The upload loop.
    async fn drive(&mut self) -> Result<UploadReport, Error> {
        let mut from_journal = self.open_session().await?;
        let mut resuming = from_journal;
        let mut restarts_left = 1u32;
        // `None`: ask the server before sending.
        let mut offset = if from_journal { None } else { Some(0) };
        loop {
            let chunk_at = offset.filter(|&o| o < self.size);
            let result = match chunk_at {
                Some(at) => self.send_chunk(at).await,
                None => self.query().await,
            };
            self.check_local()?;
            match result {
                Ok(Reply::Complete(object)) => return self.finish(object).await,
                Ok(Reply::Incomplete(held)) => {
                    if held > self.size {
                        return Err(Error::Protocol(format!(
                            "the server claims {held} bytes of a {}-byte file",
                            self.size
                        )));
                    }
                    self.acknowledged = held;
                    if held > self.high_water {
                        self.high_water = held;
                        self.failures = 0;
                        self.bad_requests = 0;
                        self.backoff =
                            Box::new(retry::delays(self.up.min_delay, self.up.max_delay));
                    }
                    if resuming {
                        resuming = false;
                        self.emit(Event::Resumed { from: held });
                    } else {
                        self.emit(Event::Acknowledged);
                    }
                    if let Some(at) = chunk_at
                        && held <= at
                    {
                        self.failed(Failure::transient(format!(
                            "the server acknowledged none of the chunk at offset {at}"
                        )))
                        .await?;
                        resuming = true;
                        offset = None;
                    } else {
                        offset = Some(held);
                    }
                }
                Err(Failure::Gone { status, detail }) => {
                    let reason = if from_journal {
                        from_journal = false;
                        "the interrupted session no longer exists on the server".to_owned()
                    } else if restarts_left > 0 {
                        restarts_left -= 1;
                        format!("the session is gone on the server (HTTP {status}: {detail})")
                    } else {
                        self.forget();
                        return Err(Error::Rejected { status, detail });
                    };
                    self.emit(Event::Restarted { reason });
                    self.session = self.create_session().await?;
                    self.acknowledged = 0;
                    self.high_water = 0;
                    resuming = false;
                    offset = Some(0);
                }
                Err(Failure::Fatal(error)) => {
                    if matches!(error, Error::Rejected { .. }) {
                        self.forget();
                    }
                    return Err(error);
                }
                Err(failure) => {
                    self.failed(failure).await?;
                    resuming = true;
                    offset = None;
                }
            }
        }
    }

    /// Resumes the journaled session if the file is unchanged, otherwise
    /// creates one. Returns whether the session came from the journal.
    async fn open_session(&mut self) -> Result<bool, Error> {
        if let Some(journal) = &self.journal {
            match journal.load() {
                Ok(Some(entry)) => match Url::parse(&entry.session) {
                    Ok(url) if entry.identity == self.identity => {
                        self.session = url;
                        return Ok(true);
                    }
                    Ok(url) => {
                        let _ = journal.remove();
                        // Best effort: free the server's space.
                        let _ = self
                            .client
                            .delete(url)
                            .timeout(self.up.stall_timeout)
                            .send()
                            .await;
                        self.emit(Event::Restarted {
                            reason: "file changed since the interrupted upload".to_owned(),
                        });
                    }
                    Err(_) => {}
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(journal = %journal.path().display(), error = %e, "ignoring an unreadable journal entry");
                }
            }
        }
        self.session = self.create_session().await?;
        Ok(false)
    }

    /// `POST`s to the endpoint until a session exists, then journals it.
    async fn create_session(&mut self) -> Result<Url, Error> {
        loop {
            let request = self
                .client
                .post(self.target.endpoint.clone())
                .header("X-Upload-Content-Length", self.size)
                .header("X-Upload-Content-Type", OCTET_STREAM)
                .header(CONTENT_LENGTH, 0);
            let failure = match self.send_watched(request, &AtomicU64::new(0)).await {
                Ok(response) => match self.session_from(response).await {
                    Ok(url) => {
                        self.journal_session(&url);
                        self.emit(Event::SessionCreated {
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
                failure => self.failed(failure).await?,
            }
        }
    }

    /// Reads the session URL off the answer to a session-creating `POST`.
    async fn session_from(&self, response: Response) -> Result<Url, Failure> {
        let status = response.status().as_u16();
        if !matches!(status, 200 | 201) {
            return Err(match self.failure_of(response).await {
                Failure::Gap(detail) => Failure::Fatal(Error::Rejected {
                    status: 416,
                    detail,
                }),
                failure => failure,
            });
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::Fatal(Error::Protocol(
                    "the server created a session without a Location".to_owned(),
                ))
            })?;
        self.target.endpoint.join(location).map_err(|e| {
            Failure::Fatal(Error::Protocol(format!(
                "the session Location {location:?} is invalid: {e}"
            )))
        })
    }

    /// Sends the chunk starting at `at`, streamed from the file.
    async fn send_chunk(&mut self, at: u64) -> Result<Reply, Failure> {
        if hash::lock(&self.hash).upto() < at {
            let caught_up = hash::catch_up(&self.hash, &mut self.hash_file, at).await;
            caught_up.map_err(|e| Failure::Fatal(self.local_io(e)))?;
        }
        let local = |e| Failure::Fatal(self.local_io(e));
        let len = self.up.chunk_size.min(self.size - at);
        let last = at + len - 1;
        let mut file = tokio::fs::File::open(&self.path).await.map_err(local)?;
        file.seek(io::SeekFrom::Start(at)).await.map_err(local)?;
        let moved = Arc::new(AtomicU64::new(0));
        let body = {
            let (counter, hash, sent, slot) = (
                moved.clone(),
                self.hash.clone(),
                self.bytes_sent.clone(),
                self.local_error.clone(),
            );
            let mut pos = at;
            let reads = ReaderStream::with_capacity(file.take(len), READ_CAPACITY).map(
                move |item: io::Result<Bytes>| {
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
                },
            );
            let (moved, slot) = (moved.clone(), self.local_error.clone());
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
            reqwest::Body::wrap_stream(reads.chain(short))
        };
        let request = self
            .client
            .put(self.session.clone())
            .header(CONTENT_RANGE, format!("bytes {at}-{last}/{}", self.size))
            .header(CONTENT_LENGTH, len)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(body);
        let response = self.send_watched(request, &moved).await?;
        self.reply_of(response).await
    }

    /// Asks the server how much it holds (`bytes */SIZE`; finalises when it
    /// holds everything).
    async fn query(&mut self) -> Result<Reply, Failure> {
        let request = self
            .client
            .put(self.session.clone())
            .header(CONTENT_RANGE, format!("bytes */{}", self.size))
            .header(CONTENT_LENGTH, 0);
        let response = self.send_watched(request, &AtomicU64::new(0)).await?;
        self.reply_of(response).await
    }

    /// Sends a request under the stall watchdog and the time limit: the
    /// request is dropped when `moved` has not changed and no response came
    /// for the stall timeout.
    async fn send_watched(
        &self,
        request: reqwest::RequestBuilder,
        moved: &AtomicU64,
    ) -> Result<Response, Failure> {
        let stall = self.up.stall_timeout;
        let response = request.send();
        tokio::pin!(response);
        let mut ticks = tokio::time::interval(
            (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = moved.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::select! {
                result = &mut response => {
                    return result.map_err(|e| Failure::transient(error_chain(&e)));
                }
                _ = ticks.tick() => {
                    let now = moved.load(Ordering::Relaxed);
                    if now != seen {
                        seen = now;
                        since = Instant::now();
                    } else if since.elapsed() >= stall {
                        return Err(Failure::transient(format!(
                            "stalled: nothing moved for {}s",
                            stall.as_secs_f64()
                        )));
                    }
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Failure::Fatal(self.time_limit()));
                    }
                }
            }
        }
    }

    /// Turns a chunk or query answer into a [`Reply`] or [`Failure`].
    async fn reply_of(&self, response: Response) -> Result<Reply, Failure> {
        match response.status().as_u16() {
            200 | 201 => {
                let body = self.read_body(response).await?;
                serde_json::from_slice(&body)
                    .map(Reply::Complete)
                    .map_err(|e| {
                        Failure::Fatal(Error::Protocol(format!(
                            "the final response is not the expected JSON: {e}"
                        )))
                    })
            }
            308 => match response.headers().get(RANGE) {
                None => Ok(Reply::Incomplete(0)),
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(|v| parse_held_range(v).ok())
                    .map(Reply::Incomplete)
                    .ok_or_else(|| {
                        Failure::Fatal(Error::Protocol(format!(
                            "the server sent an invalid progress Range {value:?}"
                        )))
                    }),
            },
            _ => Err(self.failure_of(response).await),
        }
    }

    /// Classifies an error answer, reading its problem details.
    async fn failure_of(&self, response: Response) -> Failure {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let body = tokio::time::timeout(self.up.stall_timeout, read_capped(response))
            .await
            .unwrap_or_default();
        let detail = problem_detail(status, &body);
        match status {
            400 => Failure::BadRequest(detail),
            404 | 410 => Failure::Gone { status, detail },
            416 => Failure::Gap(detail),
            408 | 429 | 500..=599 => Failure::Transient {
                reason: format!("HTTP {status}: {detail}"),
                retry_after,
            },
            _ => Failure::Fatal(Error::Rejected { status, detail }),
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
            Ok::<_, reqwest::Error>(Some(body))
        };
        match tokio::time::timeout(self.up.stall_timeout, read).await {
            Err(_) => Err(Failure::transient("stalled while reading the response")),
            Ok(Err(e)) => Err(Failure::transient(error_chain(&e))),
            Ok(Ok(None)) => Err(Failure::Fatal(Error::Protocol(
                "the response body is too large".to_owned(),
            ))),
            Ok(Ok(Some(body))) => Ok(body),
        }
    }

    /// Books a failed attempt: gives up when the policy says so, otherwise
    /// reports it and sleeps (transient failures only).
    async fn failed(&mut self, failure: Failure) -> Result<(), Error> {
        self.check_identity()?;
        self.retries += 1;
        self.failures += 1;
        let (reason, delay) = match failure {
            Failure::Transient {
                reason,
                retry_after,
            } => {
                let backoff = self.backoff.next().unwrap_or(self.up.max_delay);
                (reason, retry_after.unwrap_or(backoff))
            }
            Failure::Gap(detail) => (
                format!("HTTP 416, the server is missing earlier bytes: {detail}"),
                Duration::ZERO,
            ),
            Failure::BadRequest(detail) => {
                self.bad_requests += 1;
                if self.bad_requests >= MAX_BAD_REQUESTS {
                    return Err(Error::Rejected {
                        status: 400,
                        detail,
                    });
                }
                (format!("HTTP 400: {detail}"), Duration::ZERO)
            }
            Failure::Gone { status, detail } => {
                (format!("HTTP {status}: {detail}"), Duration::ZERO)
            }
            Failure::Fatal(error) => return Err(error),
        };
        self.last_error = reason.clone();
        if self.failures > self.up.max_retries {
            return Err(Error::RetriesExhausted {
                attempts: self.failures,
                last_error: reason,
            });
        }
        if self.deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return Err(self.time_limit());
        }
        self.emit(Event::Retrying {
            after: delay,
            reason,
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Checks the final answer against the local file and builds the report.
    async fn finish(&mut self, object: ServerObject) -> Result<UploadReport, Error> {
        // The session is finished whatever the verdict.
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
        hash::catch_up(&self.hash, &mut self.hash_file, self.size)
            .await
            .map_err(|e| self.local_io(e))?;
        self.check_identity()?;
        let local = hash::lock(&self.hash).finish();
        let remote = object
            .sha256
            .ok_or_else(|| Error::Protocol("the final response has no sha256".to_owned()))?;
        if !remote.eq_ignore_ascii_case(&local) {
            return Err(Error::DigestMismatch { local, remote });
        }
        self.acknowledged = self.size;
        self.emit(Event::Completed);
        Ok(UploadReport {
            url: self.session.to_string(),
            name: self.target.name.clone(),
            size: self.size,
            sha256: local,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            retries: self.retries,
            elapsed: self.started.elapsed(),
        })
    }

    /// Journals the session (best effort: a journal that cannot be written
    /// only costs resumability across runs).
    fn journal_session(&self, session: &Url) {
        let Some(journal) = &self.journal else {
            return;
        };
        let entry = Entry {
            version: 1,
            session: session.to_string(),
            file: self.path.display().to_string(),
            endpoint: self.target.endpoint.to_string(),
            identity: self.identity.clone(),
        };
        if let Err(e) = journal.store(&entry) {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot write the resume journal");
        }
    }

    /// Drops the journal entry (the session is finished or dead).
    fn forget(&self) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.remove()
        {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot remove the resume journal entry");
        }
    }

    /// Fails if a body stream met a read error.
    fn check_local(&self) -> Result<(), Error> {
        let error = self
            .local_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match error {
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

    fn time_limit(&self) -> Error {
        Error::TimeLimit {
            limit: self.up.max_time.unwrap_or_default(),
            last_error: self.last_error.clone(),
        }
    }

    fn emit(&self, event: Event) {
        if let Some(callback) = &self.up.on_progress {
            callback(Progress {
                acknowledged: self.acknowledged,
                total: self.size,
                bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
                retries: self.retries,
                event,
            });
        }
    }
}

/// Stores the first read error of a body stream.
fn record(slot: &Mutex<Option<io::Error>>, error: io::Error) {
    let mut slot = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert(error);
}

/// Reads up to [`MAX_RESPONSE_BODY`] bytes of a body, empty on any error.
async fn read_capped(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(block)) = response.chunk().await {
        body.extend_from_slice(&block);
        if body.len() >= MAX_RESPONSE_BODY {
            break;
        }
    }
    body
}

/// The human message of an error answer: an RFC 9457 problem's `detail`,
/// else its `title`, else a short plain-text body, else the status text.
fn problem_detail(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
    }
    if let Ok(problem) = serde_json::from_slice::<Problem>(body)
        && let Some(text) = problem.detail.or(problem.title)
    {
        return text;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() <= 200 {
        return text.to_owned();
    }
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status")
        .to_owned()
}

/// An error and its sources, joined with `": "`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
    fn problem_details_are_surfaced() {
        let body = br#"{"type":"about:blank","title":"Gap","detail":"expected offset 10"}"#;
        assert_eq!(problem_detail(416, body), "expected offset 10");
        assert_eq!(problem_detail(413, br#"{"title":"Too big"}"#), "Too big");
        assert_eq!(problem_detail(500, b"  oops \n"), "oops");
        assert_eq!(problem_detail(503, b""), "Service Unavailable");
    }

    #[test]
    fn report_serialises_seconds() {
        let report = UploadReport {
            url: "http://h/uploads/x".into(),
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
    }
}
