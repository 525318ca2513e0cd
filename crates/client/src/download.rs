//! The downloader: RFC 9110 range requests, resumed across dropped
//! connections and across runs, optionally over several connections, or
//! following an upload still in progress.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{FutureExt as _, TryStreamExt as _, stream};
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{Response, Url};
use serde::{Deserialize, Serialize};
use tenax_protocol::parse_u64;
use tokio::time::Instant;

use crate::error::Error;
use crate::hash::{self, HashCursor};
use crate::net::{self, Failure, Policy, Retrier, Tally, lock};
use crate::retry;
use crate::uploader::Event;

/// Suffix of the state file kept beside a partial download.
pub const STATE_SUFFIX: &str = ".tenax-download";
/// Bytes gathered from the network before one positional write (one
/// blocking hand-off); the next batch is received while one is written.
const WRITE_BATCH: usize = 2 << 20;
/// State-file checkpoints (in the background): at most every this many
/// bytes…
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Size of the pieces a segmented download is cut into: pieces are fetched
/// in order, a few at once, so that the file fills (and is hashed) mostly
/// from the front.
const PIECE: u64 = 32 << 20;
/// Messages queued to the hashing thread (each up to [`WRITE_BATCH`]).
const HASH_QUEUE: usize = 8;
/// Bytes read back from the file at a time by the hashing thread.
const READ_BACK: usize = 4 << 20;
/// …or this much time, whichever comes first.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Fresh starts after which a file that keeps changing is given up on.
const MAX_RESTARTS: u32 = 5;
/// Polls for the validators of a followed upload once all its bytes are in.
const CONFIRM_POLLS: u32 = 20;
/// The least time between two [`Event::Received`] reports.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The progress callback type.
type ProgressFn = dyn Fn(DownloadProgress) + Send + Sync;

/// Downloads a URL into a file with RFC 9110 range requests, resuming
/// across dropped connections, server errors and (through a small state
/// file beside the file, `FILE.tenax-download`) across runs.
///
/// * A resumed request carries `Range: bytes=N-` and `If-Range` with the
///   validator of the first answer (a strong `ETag`, else `Last-Modified`).
///   A `200` answer means the file changed on the server: the download
///   starts over from byte 0 ([`Event::Restarted`]); two versions are never
///   spliced.
/// * [`Downloader::connections`] fetches segments in parallel into a
///   preallocated file; each segment has its own retry loop, and the state
///   file records each segment's progress so that a killed run fetches only
///   what is missing.
/// * [`Downloader::follow`] downloads an upload still in progress
///   (`/uploads/{id}`), polling for more bytes until it is complete.
/// * The SHA-256 of the file is computed (while the bytes arrive in order,
///   else in a read pass at the end) and checked against the server's
///   `Repr-Digest` ([`Error::ReprDigestMismatch`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), tenax_client::Error> {
/// let report = tenax_client::Downloader::new()
///     .connections(4)
///     .on_progress(|p| eprintln!("{} of {:?} bytes", p.on_disk, p.total))
///     .download("http://localhost:8080/files/backup.tar", "backup.tar")
///     .await?;
/// println!("{} bytes, sha256 {}", report.size, report.sha256);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Downloader {
    policy: Policy,
    connections: usize,
    follow: bool,
    poll_min: Duration,
    poll_max: Duration,
    min_segment: u64,
    on_progress: Option<Arc<ProgressFn>>,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("policy", &self.policy)
            .field("connections", &self.connections)
            .field("follow", &self.follow)
            .field("poll_min", &self.poll_min)
            .field("poll_max", &self.poll_max)
            .field("min_segment", &self.min_segment)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl Default for Downloader {
    fn default() -> Self {
        Downloader {
            policy: Policy::default(),
            connections: 1,
            follow: false,
            poll_min: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            min_segment: 1 << 20,
            on_progress: None,
        }
    }
}

impl Downloader {
    /// A downloader with the defaults: one connection, 100 retries without
    /// progress (network failures not counted), no time limit, a 30 s stall
    /// timeout, a 10 s connect timeout, backoff from 1 s to 60 s after the
    /// server's trouble, probes every 500 ms while the link is down, no
    /// following, polls from 0.5 s to 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    crate::net::policy_setters!("download");

    /// Fetch the file as up to `n` segments over `n` connections at once
    /// (default 1; zero is treated as one). Segments are at least 1 MiB.
    /// A server that does not answer ranges with `206`, an unknown length,
    /// or [`Downloader::follow`] means one connection.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Follow an upload still in progress (default `false`): download what
    /// the server holds (`206` with `Content-Range: bytes A-B/*`), then poll
    /// for more until the upload is complete. Without it, an incomplete
    /// upload is an error.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// Bounds of the polling delay while following (default 0.5 s to 5 s,
    /// doubling while nothing new arrives).
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.poll_min = min;
        self.poll_max = max.max(min);
        self
    }

    /// Calls `callback` on every progress report and event. It runs on the
    /// download tasks, so it should be quick.
    pub fn on_progress(
        mut self,
        callback: impl Fn(DownloadProgress) + Send + Sync + 'static,
    ) -> Self {
        self.on_progress = Some(Arc::new(callback));
        self
    }

    /// The state file kept beside `file` while its download is unfinished.
    pub fn state_path(file: impl AsRef<Path>) -> PathBuf {
        let file = file.as_ref();
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(STATE_SUFFIX);
        file.with_file_name(name)
    }

    /// Downloads `url` into `file`, resuming a partial `file` (with its state
    /// file, or, without one, trusting its bytes as a prefix, as `curl -C -`
    /// does, and checking the result with `Repr-Digest`). Returns once the
    /// whole file is on disk, synced and verified.
    pub async fn download(
        &self,
        url: &str,
        file: impl AsRef<Path>,
    ) -> Result<DownloadReport, Error> {
        let path = file.as_ref().to_owned();
        let url = Url::parse(url).map_err(|e| Error::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl {
                url: url.to_string(),
                reason: "only http and https URLs can be downloaded".to_owned(),
            });
        }
        let state_path = Self::state_path(&path);
        let write_error = |source| Error::LocalWrite {
            path: path.clone(),
            source,
        };
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_error)?;
        let file = Arc::new(handle);
        let gate = Arc::new(RwLock::new(0));
        let hash = Arc::new(Mutex::new(HashCursor::default()));
        let job = Job {
            dl: self,
            client: self.policy.client(true)?,
            url,
            path: path.clone(),
            state_path,
            hasher: Hasher::start(file.clone(), gate.clone(), hash.clone()),
            file,
            gate,
            tally: Tally::new(&self.policy),
            meta: Mutex::new(Meta::default()),
            hash,
            received: AtomicU64::new(0),
            restarts: AtomicU32::new(0),
            checkpoint: tokio::sync::Mutex::new(Checkpoints {
                last: Instant::now(),
                received: 0,
                running: None,
            }),
            reports: Mutex::new(Reports::new()),
        };
        job.run().await
    }
}

/// A progress report, passed to the [`Downloader::on_progress`] callback.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DownloadProgress {
    /// Bytes of the file on disk (written, all segments together).
    pub on_disk: u64,
    /// The file's size, if known.
    pub total: Option<u64>,
    /// Body bytes received in this run, re-fetched ones included.
    pub bytes_received: u64,
    /// Recent rate in bytes per second.
    pub rate: f64,
    /// Failed attempts so far (all connections together).
    pub retries: u32,
    /// What happened.
    pub event: Event,
}

/// The outcome of a successful download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DownloadReport {
    /// The URL downloaded.
    pub url: String,
    /// The file written.
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Whether the SHA-256 was checked against the server's `Repr-Digest`.
    pub verified: bool,
    /// Body bytes received in this run, re-fetched ones included (less than
    /// `size` when a partial file was resumed).
    pub bytes_received: u64,
    /// Failed attempts that were retried.
    pub retries: u32,
    /// Fresh starts because the file changed on the server (or the server
    /// ignored a range request).
    pub restarts: u32,
    /// Connections (segments) of the last attempt.
    pub connections: usize,
    /// Wall-clock time of the download (serialised as fractional seconds).
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
}

/// Serialises a duration as fractional seconds.
fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The state file: what a later run needs to resume without splicing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    url: String,
    #[serde(flatten)]
    meta: Meta,
    /// The segments and how much of each is on disk.
    segments: Vec<SegState>,
}

/// One segment in the state file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SegState {
    start: u64,
    /// Exclusive end; `None` while the length is unknown.
    end: Option<u64>,
    /// Bytes on disk from `start`.
    done: u64,
}

/// What the server told about the representation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    etag: Option<String>,
    last_modified: Option<String>,
    length: Option<u64>,
    /// The `Repr-Digest` SHA-256, lowercase hex.
    sha256: Option<String>,
    /// Whether anything was learnt from an answer yet.
    #[serde(skip)]
    known: bool,
}

impl Meta {
    /// The `If-Range` value: a strong ETag, else the Last-Modified date.
    fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(tag) if !tag.starts_with("W/") => Some(tag),
            _ => self.last_modified.as_deref(),
        }
    }
}

/// One segment being fetched.
#[derive(Debug)]
struct Segment {
    start: u64,
    /// Exclusive end, `u64::MAX` while unknown.
    end: AtomicU64,
    done: AtomicU64,
}

impl Segment {
    fn new(state: SegState) -> Self {
        Segment {
            start: state.start,
            end: AtomicU64::new(state.end.unwrap_or(u64::MAX)),
            done: AtomicU64::new(state.done),
        }
    }

    fn end(&self) -> Option<u64> {
        Some(self.end.load(Ordering::Relaxed)).filter(|e| *e != u64::MAX)
    }

    fn pos(&self) -> u64 {
        self.start.saturating_add(self.done.load(Ordering::Relaxed))
    }

    fn state(&self) -> SegState {
        SegState {
            start: self.start,
            end: self.end(),
            done: self.done.load(Ordering::Relaxed),
        }
    }
}

/// Why an attempt stopped short of the whole file.
#[derive(Debug)]
enum Stop {
    /// Start over from byte 0, with this full answer if there is one.
    Restart {
        reason: String,
        response: Option<Box<Response>>,
    },
    /// Give up.
    Error(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Error(error)
    }
}

/// An answer to a range request, read from its status and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `206`: bytes `first..=last` of `total` (`None`: `*`, in progress).
    Partial {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    /// `200`: the whole representation (`Content-Length` if given).
    Full { length: Option<u64> },
    /// `416`: nothing at or past the position; the length if given.
    Unsatisfiable { total: Option<u64> },
    /// `409`: an upload in progress served without a range.
    InProgress,
}

/// A `Content-Range`: the range (`None`: `*`) and the total (`None`: `*`).
type RangeSpec = (Option<(u64, u64)>, Option<u64>);

/// Reads `Content-Range: bytes A-B/LEN`, `bytes A-B/*` or `bytes */LEN`
/// (as `(Some((A, B)), Some(LEN))` etc.).
fn parse_content_range(value: &str) -> Option<RangeSpec> {
    let rest = value.trim().strip_prefix("bytes ")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(parse_u64(t).ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b) = (parse_u64(a).ok()?, parse_u64(b).ok()?);
            if b < a || total.is_some_and(|t| b >= t) {
                return None;
            }
            Some((a, b))
        }
    };
    if range.is_none() && total.is_none() {
        // `*/*` says nothing; treat it as no length.
        return Some((None, None));
    }
    Some((range, total))
}

/// The SHA-256 (hex) of a `Repr-Digest` dictionary, if it has one.
fn parse_repr_digest(value: &str) -> Option<String> {
    value.split(',').find_map(|member| {
        let (key, value) = member.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let value = value.trim();
        let value = value.split(';').next()?.trim();
        let b64 = value.strip_prefix(':')?.strip_suffix(':')?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        (bytes.len() == 32).then(|| hash::hex(&bytes))
    })
}

fn header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The answer of a response, or why it cannot be used.
fn answer_of(status: u16, headers: &HeaderMap) -> Result<Answer, String> {
    let content_range = header(headers, CONTENT_RANGE);
    match status {
        206 => {
            let value = content_range.ok_or("a 206 answer without Content-Range")?;
            match parse_content_range(value) {
                Some((Some((first, last)), total)) => Ok(Answer::Partial { first, last, total }),
                _ => Err(format!(
                    "a 206 answer with an unusable Content-Range {value:?} (multipart answers are not requested)"
                )),
            }
        }
        200 => Ok(Answer::Full {
            length: header(headers, CONTENT_LENGTH).and_then(|v| parse_u64(v).ok()),
        }),
        416 => Ok(Answer::Unsatisfiable {
            total: content_range
                .and_then(parse_content_range)
                .and_then(|(_, total)| total),
        }),
        409 => Ok(Answer::InProgress),
        _ => Err(format!("unexpected status {status}")),
    }
}

/// Rate and report-throttling bookkeeping.
#[derive(Debug)]
struct Reports {
    last: Instant,
    sample_at: Instant,
    sample_bytes: u64,
    rate: f64,
}

impl Reports {
    fn new() -> Self {
        let now = Instant::now();
        Reports {
            last: now,
            sample_at: now,
            sample_bytes: 0,
            rate: 0.0,
        }
    }
}

/// One download: what every segment shares.
struct Job<'a> {
    dl: &'a Downloader,
    client: reqwest::Client,
    url: Url,
    path: PathBuf,
    state_path: PathBuf,
    file: Arc<std::fs::File>,
    /// The generation of the file's contents: a write of an older
    /// generation (started before a fresh start truncated the file) is
    /// dropped. Writers hold it shared, truncation exclusively.
    gate: Arc<RwLock<u64>>,
    tally: Tally,
    meta: Mutex<Meta>,
    hash: Arc<Mutex<HashCursor>>,
    /// The thread that feeds `hash` in order while the download runs.
    hasher: Hasher,
    received: AtomicU64,
    restarts: AtomicU32,
    checkpoint: tokio::sync::Mutex<Checkpoints>,
    reports: Mutex<Reports>,
}

/// The checkpoint bookkeeping.
#[derive(Debug)]
struct Checkpoints {
    /// When the last checkpoint started, and `received` then.
    last: Instant,
    received: u64,
    /// The checkpoint running in the background, if any.
    running: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// What the hashing thread is told.
enum HashMsg {
    /// Bytes of generation `generation` being written at `pos`: hashed from
    /// memory if they extend the hashed prefix, else ignored.
    Data {
        generation: u64,
        pos: u64,
        blocks: Vec<Bytes>,
    },
    /// The first `upto` bytes of generation `generation` are written: what
    /// of them is not hashed yet is read back from the file (page cache).
    Prefix { generation: u64, upto: u64 },
}

/// A dedicated thread hashing the file in order, from the received bytes
/// when they extend the hashed prefix, else reading back what is written.
/// Best effort: a full queue drops messages, and [`Job::finish`] hashes
/// whatever is left.
struct Hasher {
    queue: Mutex<Option<std::sync::mpsc::SyncSender<HashMsg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Hasher {
    fn start(
        file: Arc<std::fs::File>,
        gate: Arc<RwLock<u64>>,
        cursor: Arc<Mutex<HashCursor>>,
    ) -> Self {
        let (queue, inbox) = std::sync::mpsc::sync_channel::<HashMsg>(HASH_QUEUE);
        let thread = std::thread::Builder::new()
            .name("tenax-hash".to_owned())
            .spawn(move || {
                let mut buffer = Vec::new();
                while let Ok(msg) = inbox.recv() {
                    match msg {
                        HashMsg::Data {
                            generation,
                            pos,
                            blocks,
                        } => {
                            let current = gate
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if *current != generation {
                                continue;
                            }
                            let mut cursor = hash::lock(&cursor);
                            let mut at = pos;
                            for block in &blocks {
                                cursor.feed(at, block);
                                at += block.len() as u64;
                            }
                        }
                        HashMsg::Prefix { generation, upto } => loop {
                            let current = gate
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let at = hash::lock(&cursor).upto();
                            if *current != generation || at >= upto {
                                break;
                            }
                            let n =
                                usize::try_from(upto - at).map_or(READ_BACK, |n| n.min(READ_BACK));
                            buffer.resize(n, 0);
                            if file.read_exact_at(&mut buffer, at).is_err() {
                                break;
                            }
                            hash::lock(&cursor).feed(at, &buffer);
                        },
                    }
                }
            })
            .ok();
        Hasher {
            queue: Mutex::new(thread.as_ref().map(|_| queue)),
            thread: Mutex::new(thread),
        }
    }

    /// Queues `msg` unless the queue is full (the hashing falls behind: the
    /// bytes are read back later instead).
    fn offer(&self, msg: HashMsg) {
        if let Some(queue) = lock(&self.queue).as_ref() {
            let _ = queue.try_send(msg);
        }
    }

    /// Lets the thread drain its queue and waits for it to end.
    async fn stop(&self) {
        drop(lock(&self.queue).take());
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Job<'_> {
    fn write_error(&self, source: io::Error) -> Error {
        Error::LocalWrite {
            path: self.path.clone(),
            source,
        }
    }

    /// The whole download: resume or start, start over when the file
    /// changes, verify.
    async fn run(&self) -> Result<DownloadReport, Error> {
        let mut segments = self.initial_segments()?;
        let mut pending: Option<Response> = None;
        let connections = loop {
            let plan: Vec<Segment> = segments.drain(..).map(Segment::new).collect();
            match self.attempt(plan, pending.take()).await {
                Ok(connections) => break connections,
                Err(Stop::Restart { reason, response }) => {
                    let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    if restarts > MAX_RESTARTS {
                        return Err(Error::Protocol(format!(
                            "gave up after {MAX_RESTARTS} fresh starts: {reason}"
                        )));
                    }
                    self.emit(&[], Event::Restarted { reason });
                    self.start_over().await?;
                    // A full answer in hand is the new version from byte 0;
                    // with several connections wanted, ask again for ranges.
                    if self.dl.connections <= 1 || self.dl.follow {
                        pending = response.map(|response| *response);
                    }
                    segments = vec![SegState::default()];
                }
                Err(Stop::Error(error)) => return Err(error),
            }
        };
        if self.dl.follow {
            self.confirm().await?;
        }
        self.finish(connections).await
    }

    /// After following an upload to its end: asks for its last byte until
    /// the answer carries the validators of a completed upload (an ETag),
    /// to learn its `Repr-Digest`. Bounded: after a while without them, the
    /// file is accepted unverified, with a warning.
    async fn confirm(&self) -> Result<(), Error> {
        let length = {
            let meta = lock(&self.meta);
            if meta.sha256.is_some() || meta.etag.is_some() {
                return Ok(());
            }
            match meta.length {
                Some(length) if length > 0 => length,
                _ => return Ok(()),
            }
        };
        let mut polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
        let mut retry = Retrier::new(&self.dl.policy);
        for _ in 0..CONFIRM_POLLS {
            let last = length - 1;
            let request = self
                .client
                .get(self.url.clone())
                .header(RANGE, format!("bytes={last}-{last}"));
            let outcome = self
                .tally
                .send_watched(&self.dl.policy, request.send(), &AtomicU64::new(0))
                .await;
            match outcome {
                Ok(response) if matches!(response.status().as_u16(), 200 | 206) => {
                    let total = match answer_of(response.status().as_u16(), response.headers()) {
                        Ok(Answer::Partial { total, .. }) => total,
                        Ok(Answer::Full { length }) => length,
                        _ => None,
                    };
                    if total.is_some_and(|total| total != length) {
                        return Err(Error::Protocol(format!(
                            "the followed upload ended with {} bytes, not {length}",
                            total.unwrap_or_default()
                        )));
                    }
                    if header(response.headers(), ETAG).is_some() {
                        self.learn(response.headers(), Some(length));
                        return Ok(());
                    }
                }
                Ok(response) if matches!(response.status().as_u16(), 409 | 416) => {}
                Ok(response) => match net::failure_of(&self.dl.policy, response).await {
                    Failure::Gone { status, detail } => {
                        return Err(Error::Rejected { status, detail });
                    }
                    failure => {
                        self.failed(&mut retry, failure)
                            .await
                            .map_err(|stop| match stop {
                                Stop::Error(error) => error,
                                Stop::Restart { reason, .. } => Error::Protocol(reason),
                            })?
                    }
                },
                Err(Failure::Fatal(error)) => return Err(error),
                Err(failure) => {
                    self.failed(&mut retry, failure)
                        .await
                        .map_err(|stop| match stop {
                            Stop::Error(error) => error,
                            Stop::Restart { reason, .. } => Error::Protocol(reason),
                        })?
                }
            }
            let after = polls.next().unwrap_or(self.dl.poll_max);
            if self.tally.past_deadline(after) {
                return Err(self.tally.time_limit());
            }
            self.emit(
                &[],
                Event::Waiting {
                    available: length,
                    after,
                },
            );
            tokio::time::sleep(after).await;
        }
        self.emit(
            &[],
            Event::Warning {
                message:
                    "the followed upload never showed its validators; the file is not verified"
                        .to_owned(),
            },
        );
        Ok(())
    }

    /// The segments to fetch from the state file, the partial file, or
    /// from scratch.
    fn initial_segments(&self) -> Result<Vec<SegState>, Error> {
        let local_len = self.file.metadata().map_err(|e| self.write_error(e))?.len();
        let state = match std::fs::read(&self.state_path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(state) => Some(state),
                Err(e) => {
                    tracing::warn!(state = %self.state_path.display(), error = %e, "ignoring an unreadable download state file");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.write_error(e)),
        };
        if let Some(state) = state {
            let problem = if state.url != self.url.as_str() {
                Some(format!(
                    "the partial file was downloaded from {}",
                    state.url
                ))
            } else if state.segments.is_empty() || !consistent(&state, local_len) {
                Some("the partial file does not match its state file".to_owned())
            } else {
                None
            };
            match problem {
                None => {
                    let done: u64 = state.segments.iter().map(|s| s.done).sum();
                    *lock(&self.meta) = Meta {
                        known: true,
                        ..state.meta
                    };
                    self.emit(&[], Event::Resumed { from: done });
                    return Ok(state.segments);
                }
                Some(reason) => {
                    self.emit(&[], Event::Restarted { reason });
                    self.file.set_len(0).map_err(|e| self.write_error(e))?;
                    return Ok(vec![SegState::default()]);
                }
            }
        }
        if local_len > 0 {
            self.emit(
                &[],
                Event::Warning {
                    message: format!(
                        "resuming the existing {local_len} bytes of {} without a state file: they are trusted as a prefix and checked by the final digest",
                        self.path.display()
                    ),
                },
            );
            self.emit(&[], Event::Resumed { from: local_len });
        }
        Ok(vec![SegState {
            start: 0,
            end: None,
            done: local_len,
        }])
    }

    /// Drops everything on disk (and the state file) for a fresh start.
    async fn start_over(&self) -> Result<(), Error> {
        // A background checkpoint must not write the state file after this.
        let _ = self.settle_checkpoint().await;
        match std::fs::remove_file(&self.state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.write_error(e)),
        }
        let (file, gate) = (self.file.clone(), self.gate.clone());
        tokio::task::spawn_blocking(move || {
            let mut generation = gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *generation += 1;
            file.set_len(0)
        })
        .await
        .map_err(|e| self.write_error(io::Error::other(e)))?
        .map_err(|e| self.write_error(e))?;
        *lock(&self.meta) = Meta::default();
        *lock(&self.hash) = HashCursor::default();
        Ok(())
    }

    /// One pass over `plan`: probes and splits a fresh download, then runs
    /// the segments. Returns the number of connections used.
    async fn attempt(&self, plan: Vec<Segment>, pending: Option<Response>) -> Result<usize, Stop> {
        let generation = *self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if plan.len() > 1 {
            let total = lock(&self.meta).length;
            self.emit(
                &plan,
                Event::Started {
                    total,
                    connections: plan.len(),
                },
            );
            self.run_segments(&plan, Vec::new(), generation).await?;
            return Ok(plan.len().min(self.dl.connections.max(1)));
        }
        let Some(first) = plan.first() else {
            return Err(Stop::Error(Error::Protocol(
                "nothing to download".to_owned(),
            )));
        };
        // The first request: its answer tells the length and range support.
        let mut retry = Retrier::new(&self.dl.policy);
        let response = match pending {
            Some(response) => response,
            None => self.fetch(first, &mut retry).await?,
        };
        let status = response.status().as_u16();
        let answer = answer_of(status, response.headers()).ok();
        let wants_split = self.dl.connections > 1 && !self.dl.follow;
        let split = match answer {
            Some(Answer::Partial {
                first: 0,
                total: Some(total),
                ..
            }) if wants_split && first.pos() == 0 && self.validators_agree(response.headers()) => {
                let n = usize::try_from(total / self.dl.min_segment.max(1))
                    .unwrap_or(usize::MAX)
                    .min(self.dl.connections);
                (n > 1).then_some((total, n))
            }
            _ => None,
        };
        if wants_split && split.is_none() {
            let message = match answer {
                Some(Answer::Partial { total: Some(_), .. }) if first.pos() > 0 => None,
                Some(Answer::Partial { total: Some(_), .. }) => {
                    Some("the file is too small to split; one connection".to_owned())
                }
                Some(Answer::Full { .. }) => Some(
                    "the server does not answer range requests with 206; one connection".to_owned(),
                ),
                _ => Some("the file's length is unknown; one connection".to_owned()),
            };
            if let Some(message) = message.filter(|_| first.pos() == 0) {
                self.emit(&plan, Event::Warning { message });
            }
        }
        let Some((total, n)) = split else {
            self.run_segments(&plan, vec![Some(response)], generation)
                .await?;
            return Ok(1);
        };
        // Split: preallocate, record the plan, the probe's body feeds segment 0.
        self.learn(response.headers(), Some(total));
        self.file
            .set_len(total)
            .map_err(|e| Stop::Error(self.write_error(e)))?;
        // Pieces of about PIECE bytes (at least n), fetched n at a time.
        let pieces = usize::try_from(total.div_ceil(PIECE))
            .unwrap_or(usize::MAX)
            .max(n);
        let segments: Vec<Segment> = (0..pieces)
            .map(|i| {
                let start = split_at(total, pieces, i);
                Segment::new(SegState {
                    start,
                    end: Some(split_at(total, pieces, i + 1)),
                    done: 0,
                })
            })
            .collect();
        self.checkpoint(&segments, true).await?;
        self.emit(
            &segments,
            Event::Started {
                total: Some(total),
                connections: n,
            },
        );
        self.run_segments(&segments, vec![Some(response)], generation)
            .await?;
        Ok(n)
    }

    /// Runs the segments of `plan` in order, up to the wanted number of
    /// connections at once (`first[i]`: an answer already in hand for
    /// segment `i`).
    async fn run_segments(
        &self,
        plan: &[Segment],
        mut first: Vec<Option<Response>>,
        generation: u64,
    ) -> Result<(), Stop> {
        first.resize_with(plan.len(), || None);
        let limit = self.dl.connections.max(1);
        let result = stream::iter(first.into_iter().enumerate().map(Ok))
            .try_for_each_concurrent(limit, |(i, response)| {
                self.segment(plan, i, response, generation)
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(Stop::Error(error)) => {
                // Keep what is on disk resumable (best effort).
                if let Err(e) = self.checkpoint(plan, true).await {
                    tracing::warn!(error = ?e, "cannot record the download's progress");
                }
                Err(Stop::Error(error))
            }
            Err(restart) => Err(restart),
        }
    }

    /// Whether a response's validators agree with the known ones.
    fn validators_agree(&self, headers: &HeaderMap) -> bool {
        self.change(headers).is_none()
    }

    /// Why a response is of another version than the one on disk, if it is.
    fn change(&self, headers: &HeaderMap) -> Option<String> {
        let meta = lock(&self.meta);
        if !meta.known {
            return None;
        }
        if let (Some(ours), Some(theirs)) = (meta.etag.as_deref(), header(headers, ETAG))
            && ours != theirs
        {
            return Some(format!(
                "the file changed on the server (ETag {ours} became {theirs})"
            ));
        }
        if meta.etag.is_none()
            && let (Some(ours), Some(theirs)) = (
                meta.last_modified.as_deref(),
                header(headers, LAST_MODIFIED),
            )
            && ours != theirs
        {
            return Some(format!(
                "the file changed on the server (Last-Modified {ours} became {theirs})"
            ));
        }
        None
    }

    /// Records the validators and length of a response (first answer, or
    /// fields that were missing so far, as when a followed upload ends).
    fn learn(&self, headers: &HeaderMap, total: Option<u64>) {
        let mut meta = lock(&self.meta);
        meta.known = true;
        if meta.etag.is_none() {
            meta.etag = header(headers, ETAG).map(str::to_owned);
        }
        if meta.last_modified.is_none() {
            meta.last_modified = header(headers, LAST_MODIFIED).map(str::to_owned);
        }
        if meta.sha256.is_none() {
            meta.sha256 = header(headers, "repr-digest").and_then(parse_repr_digest);
        }
        if meta.length.is_none() {
            meta.length = total;
        }
    }

    /// `GET` the missing part of `seg` (with `Range` and `If-Range`),
    /// retried until the server answers something usable.
    async fn fetch(&self, seg: &Segment, retry: &mut Retrier) -> Result<Response, Stop> {
        loop {
            let pos = seg.pos();
            let range = match seg.end() {
                Some(end) if end > pos => format!("bytes={pos}-{}", end - 1),
                _ => format!("bytes={pos}-"),
            };
            let mut request = self.client.get(self.url.clone()).header(RANGE, range);
            if let Some(validator) = lock(&self.meta).if_range() {
                request = request.header(IF_RANGE, validator);
            }
            let failure = match self
                .tally
                .send_watched(&self.dl.policy, request.send(), &AtomicU64::new(0))
                .await
            {
                Ok(response) if matches!(response.status().as_u16(), 200 | 206 | 409 | 416) => {
                    return Ok(response);
                }
                Ok(response) => match net::failure_of(&self.dl.policy, response).await {
                    Failure::Gone { status, detail } => {
                        return Err(Stop::Error(Error::Rejected { status, detail }));
                    }
                    failure => failure,
                },
                Err(failure) => failure,
            };
            self.failed(retry, failure).await?;
        }
    }

    /// Books a failed attempt, reports it and sleeps.
    async fn failed(&self, retry: &mut Retrier, failure: Failure) -> Result<(), Stop> {
        let (reason, delay) = self.tally.book(&self.dl.policy, retry, failure)?;
        self.emit(
            &[],
            Event::Retrying {
                after: delay,
                reason,
            },
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// The retry loop of segment `i`.
    async fn segment(
        &self,
        plan: &[Segment],
        i: usize,
        mut first: Option<Response>,
        generation: u64,
    ) -> Result<(), Stop> {
        let Some(seg) = plan.get(i) else {
            return Ok(());
        };
        let policy = &self.dl.policy;
        let mut retry = Retrier::new(policy);
        let mut polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
        let mut started = plan.len() > 1;
        loop {
            let pos = seg.pos();
            if seg.end().is_some_and(|end| pos >= end) {
                return Ok(());
            }
            let response = match first.take() {
                Some(response) => response,
                None => self.fetch(seg, &mut retry).await?,
            };
            let status = response.status().as_u16();
            let answer = answer_of(status, response.headers())
                .map_err(|reason| Stop::Error(Error::Protocol(reason)))?;
            if let Some(reason) = self.change(response.headers()) {
                let full = matches!(answer, Answer::Full { .. });
                return Err(Stop::Restart {
                    reason,
                    response: full.then(|| Box::new(response)),
                });
            }
            let mut wait = false;
            match answer {
                Answer::Partial { first, last, total } => {
                    if first != pos {
                        return Err(Stop::Error(Error::Protocol(format!(
                            "asked for bytes from {pos}, the server sent bytes {first}-{last}"
                        ))));
                    }
                    self.check_total(seg, total, plan.len())?;
                    self.learn(response.headers(), total);
                    if !started {
                        started = true;
                        self.emit(
                            plan,
                            Event::Started {
                                total,
                                connections: 1,
                            },
                        );
                    }
                    let stop = seg.end().map_or(last + 1, |end| end.min(last + 1));
                    let before = seg.pos();
                    match self.stream(plan, seg, response, stop, generation).await {
                        Ok(()) => {}
                        Err(Failure::Fatal(error)) => return Err(Stop::Error(error)),
                        Err(failure) => {
                            if seg.pos() > before {
                                retry = Retrier::new(policy);
                            }
                            self.failed(&mut retry, failure).await?;
                            continue;
                        }
                    }
                    if seg.pos() > before {
                        retry = Retrier::new(policy);
                        polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
                    }
                    if seg.pos() < stop {
                        let failure = Failure::network(format!(
                            "the answer ended at byte {} of {first}-{last}",
                            seg.pos()
                        ));
                        self.failed(&mut retry, failure).await?;
                    }
                }
                Answer::Full { length } => {
                    if pos > 0 || plan.len() > 1 {
                        return Err(Stop::Restart {
                            reason: format!(
                                "the server answered the request for bytes from {pos} with the whole file"
                            ),
                            response: Some(Box::new(response)),
                        });
                    }
                    // A whole answer from byte 0 is a fresh start: its
                    // validators and length replace any known ones.
                    *lock(&self.meta) = Meta::default();
                    self.learn(response.headers(), length);
                    if let Some(length) = length {
                        seg.end.store(length, Ordering::Relaxed);
                    }
                    if !started {
                        started = true;
                        self.emit(
                            plan,
                            Event::Started {
                                total: length,
                                connections: 1,
                            },
                        );
                    }
                    let stop = length.unwrap_or(u64::MAX);
                    match self.stream(plan, seg, response, stop, generation).await {
                        Ok(()) if length.is_none() => {
                            // Without a length, the end of the body ends it.
                            let got = seg.pos();
                            lock(&self.meta).length = Some(got);
                            seg.end.store(got, Ordering::Relaxed);
                            return Ok(());
                        }
                        Ok(()) => {
                            if seg.pos() < stop {
                                let failure = Failure::network(format!(
                                    "the answer ended at byte {} of {stop}",
                                    seg.pos()
                                ));
                                self.failed(&mut retry, failure).await?;
                            }
                        }
                        Err(Failure::Fatal(error)) => return Err(Stop::Error(error)),
                        Err(failure) => {
                            if seg.pos() > 0 {
                                retry = Retrier::new(policy);
                            }
                            self.failed(&mut retry, failure).await?;
                        }
                    }
                }
                Answer::Unsatisfiable { total: Some(total) } => {
                    let known = lock(&self.meta).length;
                    if known.is_some_and(|known| known != total) || pos > total {
                        return Err(Stop::Restart {
                            reason: format!(
                                "the file on the server has {total} bytes; {pos} were expected to be there"
                            ),
                            response: None,
                        });
                    }
                    if pos == total && (plan.len() == 1 || seg.end() == Some(total)) {
                        self.learn(response.headers(), Some(total));
                        seg.end.store(total, Ordering::Relaxed);
                        return Ok(());
                    }
                    if !self.dl.follow {
                        return Err(Stop::Error(Error::Protocol(format!(
                            "the server refused bytes from {pos} of a {total}-byte file"
                        ))));
                    }
                    wait = true;
                }
                Answer::Unsatisfiable { total: None } | Answer::InProgress => {
                    if !self.dl.follow {
                        let detail = net::read_capped(response).await;
                        return Err(Stop::Error(Error::Rejected {
                            status,
                            detail: format!(
                                "{} (an upload still in progress? use follow)",
                                net::problem_detail(status, &detail)
                            ),
                        }));
                    }
                    wait = true;
                }
            }
            if wait {
                let after = polls.next().unwrap_or(self.dl.poll_max);
                if self.tally.past_deadline(after) {
                    return Err(Stop::Error(self.tally.time_limit()));
                }
                self.emit(
                    plan,
                    Event::Waiting {
                        available: seg.pos(),
                        after,
                    },
                );
                tokio::time::sleep(after).await;
            }
        }
    }

    /// Checks a `206`'s total against the known length and the follow mode.
    fn check_total(&self, seg: &Segment, total: Option<u64>, segments: usize) -> Result<(), Stop> {
        match total {
            Some(total) => {
                let known = lock(&self.meta).length;
                if let Some(known) = known
                    && known != total
                {
                    return Err(Stop::Restart {
                        reason: format!(
                            "the file's length changed on the server from {known} to {total}"
                        ),
                        response: None,
                    });
                }
                if segments == 1 && seg.end().is_none() {
                    seg.end.store(total, Ordering::Relaxed);
                }
                Ok(())
            }
            None if self.dl.follow => Ok(()),
            None => Err(Stop::Error(Error::Rejected {
                status: 206,
                detail: "the upload is still in progress (its length is unknown); use follow"
                    .to_owned(),
            })),
        }
    }

    /// Writes the body of `response` at the segment's position, up to
    /// `stop` (exclusive). Returns at the end of the body or at `stop`.
    /// Batches of [`WRITE_BATCH`] bytes are written off the runtime while
    /// the next batch is received.
    async fn stream(
        &self,
        plan: &[Segment],
        seg: &Segment,
        mut response: Response,
        stop: u64,
        generation: u64,
    ) -> Result<(), Failure> {
        let policy = &self.dl.policy;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        let mut writing: Option<Writing> = None;
        let mut next = seg.pos();
        let outcome = loop {
            if next >= stop {
                // Notice the end of the body if it is there, so that the
                // connection goes back to the pool.
                let _ = response.chunk().now_or_never();
                break Ok(());
            }
            let mut block = match self.tally.next_block(policy, &mut response).await {
                Ok(Some(block)) => block,
                Ok(None) => break Ok(()),
                // Keep what arrived before the trouble.
                Err(failure) => break Err(failure),
            };
            let room = usize::try_from(stop - next).unwrap_or(usize::MAX);
            block.truncate(room);
            next += block.len() as u64;
            batch_len += block.len();
            batch.push(block);
            if batch_len >= WRITE_BATCH {
                self.settle(plan, seg, writing.take()).await?;
                writing = Some(self.launch(seg, std::mem::take(&mut batch), generation));
                batch_len = 0;
            }
        };
        self.settle(plan, seg, writing.take()).await?;
        if !batch.is_empty() {
            let last = self.launch(seg, batch, generation);
            self.settle(plan, seg, Some(last)).await?;
        }
        outcome
    }

    /// Starts writing `blocks` at the segment's position (nothing of it
    /// may be in flight), off the runtime, and offers them to the hash.
    fn launch(&self, seg: &Segment, blocks: Vec<Bytes>, generation: u64) -> Writing {
        let pos = seg.pos();
        self.hasher.offer(HashMsg::Data {
            generation,
            pos,
            blocks: blocks.clone(),
        });
        let (file, gate) = (self.file.clone(), self.gate.clone());
        tokio::task::spawn_blocking(move || {
            let current = gate
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current != generation {
                return Err(io::Error::other("the download started over"));
            }
            let mut at = pos;
            for block in &blocks {
                file.write_all_at(block, at)?;
                at += block.len() as u64;
            }
            Ok(at - pos)
        })
    }

    /// Waits for a write in flight, then books the progress, tells the
    /// hash what is on disk and checkpoints (in the background).
    async fn settle(
        &self,
        plan: &[Segment],
        seg: &Segment,
        writing: Option<Writing>,
    ) -> Result<(), Failure> {
        let Some(writing) = writing else {
            return Ok(());
        };
        let n = writing
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| Failure::Fatal(self.write_error(e)))?;
        seg.done.fetch_add(n, Ordering::Relaxed);
        self.received.fetch_add(n, Ordering::Relaxed);
        let generation = *self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.hasher.offer(HashMsg::Prefix {
            generation,
            upto: written_prefix(plan),
        });
        self.report(plan);
        self.checkpoint(plan, false).await.map_err(|e| match e {
            Stop::Error(error) => Failure::Fatal(error),
            Stop::Restart { reason, .. } => Failure::transient(reason),
        })
    }

    /// Persists the progress: syncs the data, then writes the state file
    /// (atomically). Unless `force`, only every [`CHECKPOINT_BYTES`] or
    /// [`CHECKPOINT_INTERVAL`], in the background, and never while one is
    /// still running; `force` waits for it.
    async fn checkpoint(&self, plan: &[Segment], force: bool) -> Result<(), Stop> {
        let mut last = if force {
            self.checkpoint.lock().await
        } else {
            match self.checkpoint.try_lock() {
                Ok(last) => last,
                Err(_) => return Ok(()),
            }
        };
        if let Some(running) = last.running.take() {
            if !force && !running.is_finished() {
                last.running = Some(running);
                return Ok(());
            }
            running
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e))?;
        }
        let received = self.received.load(Ordering::Relaxed);
        if !force
            && received < last.received + CHECKPOINT_BYTES
            && last.last.elapsed() < CHECKPOINT_INTERVAL
        {
            return Ok(());
        }
        if plan.is_empty() {
            return Ok(());
        }
        // What is counted as done now was written before this sync.
        let state = State {
            version: 1,
            url: self.url.to_string(),
            meta: lock(&self.meta).clone(),
            segments: plan.iter().map(Segment::state).collect(),
        };
        let (file, path) = (self.file.clone(), self.state_path.clone());
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| Stop::Error(Error::Protocol(format!("cannot encode the state: {e}"))))?;
        let task = tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            let mut temp = path.as_os_str().to_owned();
            temp.push(".tmp");
            let temp = PathBuf::from(temp);
            std::fs::write(&temp, &json)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, &path)
        });
        last.last = Instant::now();
        last.received = received;
        if force {
            task.await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e))?;
        } else {
            last.running = Some(task);
        }
        Ok(())
    }

    /// Waits for a background checkpoint to end.
    async fn settle_checkpoint(&self) -> Result<(), Stop> {
        let running = self.checkpoint.lock().await.running.take();
        match running {
            Some(running) => running
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e)),
            None => Ok(()),
        }
    }

    fn state_error(&self, source: io::Error) -> Stop {
        Stop::Error(Error::LocalWrite {
            path: self.state_path.clone(),
            source,
        })
    }

    /// Sizes, syncs, hashes and verifies the finished file, then drops the
    /// state file.
    async fn finish(&self, connections: usize) -> Result<DownloadReport, Error> {
        let meta = lock(&self.meta).clone();
        let size = meta
            .length
            .ok_or_else(|| Error::Protocol("the download ended without a length".to_owned()))?;
        self.hasher.stop().await;
        // Its outcome does not matter: the state file goes now.
        let _ = self.settle_checkpoint().await;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.set_len(size)?;
            file.sync_all()
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| self.write_error(e))?;
        let mut reader = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| self.write_error(e))?;
        hash::catch_up(&self.hash, &mut reader, size)
            .await
            .map_err(|e| self.write_error(e))?;
        let sha256 = hash::lock(&self.hash).finish();
        // The download is over whatever the verdict: a later run must not
        // trust these bytes as a prefix of anything.
        match std::fs::remove_file(&self.state_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.write_error(e)),
        }
        if let Some(expected) = &meta.sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(Error::ReprDigestMismatch {
                expected: expected.clone(),
                actual: sha256,
            });
        }
        self.emit(&[], Event::Completed);
        Ok(DownloadReport {
            url: self.url.to_string(),
            file: self.path.clone(),
            size,
            sha256,
            verified: meta.sha256.is_some(),
            bytes_received: self.received.load(Ordering::Relaxed),
            retries: self.tally.retries(),
            restarts: self.restarts.load(Ordering::Relaxed),
            connections,
            elapsed: self.tally.started().elapsed(),
        })
    }

    /// Reports [`Event::Received`], at most every [`REPORT_INTERVAL`].
    fn report(&self, plan: &[Segment]) {
        let due = {
            let mut reports = lock(&self.reports);
            let now = Instant::now();
            if now.duration_since(reports.last) < REPORT_INTERVAL {
                false
            } else {
                reports.last = now;
                true
            }
        };
        if due {
            self.emit(plan, Event::Received);
        }
    }

    fn emit(&self, plan: &[Segment], event: Event) {
        let Some(callback) = &self.dl.on_progress else {
            return;
        };
        let received = self.received.load(Ordering::Relaxed);
        let rate = {
            let mut reports = lock(&self.reports);
            let elapsed = reports.sample_at.elapsed();
            if elapsed >= Duration::from_millis(500) {
                let bytes = received.saturating_sub(reports.sample_bytes) as f64;
                reports.rate = bytes / elapsed.as_secs_f64();
                reports.sample_at = Instant::now();
                reports.sample_bytes = received;
            }
            reports.rate
        };
        let on_disk = plan
            .iter()
            .map(|s| s.done.load(Ordering::Relaxed))
            .sum::<u64>();
        callback(DownloadProgress {
            on_disk,
            total: lock(&self.meta).length,
            bytes_received: received,
            rate,
            retries: self.tally.retries(),
            event,
        });
    }
}

/// A positional write in flight: the bytes written.
type Writing = tokio::task::JoinHandle<io::Result<u64>>;

/// How many leading bytes of the file are on disk: the segments complete
/// from the front, plus the progress of the first incomplete one.
fn written_prefix(plan: &[Segment]) -> u64 {
    let mut upto = 0;
    for seg in plan {
        if seg.start != upto {
            break;
        }
        upto = seg.pos();
        if seg.end().is_none_or(|end| upto < end) {
            break;
        }
    }
    upto
}

/// Whether a state file fits the partial file beside it.
fn consistent(state: &State, local_len: u64) -> bool {
    match state.segments.as_slice() {
        [single] => single.start == 0 && single.done <= local_len,
        segments => {
            state.meta.length == Some(local_len)
                && segments.iter().all(|s| {
                    s.end.is_some_and(|end| {
                        s.start <= end && end <= local_len && s.done <= end - s.start
                    })
                })
        }
    }
}

/// Where segment `index` of `n` of a `size`-byte file starts.
fn split_at(size: u64, n: usize, index: usize) -> u64 {
    let (Ok(n), Ok(index)) = (u128::try_from(n), u128::try_from(index)) else {
        return size;
    };
    if n == 0 {
        return size;
    }
    u64::try_from(u128::from(size) * index.min(n) / n).unwrap_or(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((Some((0, 99)), Some(1000)))
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some((Some((5, 9)), None))
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some((None, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes */*"), Some((None, None)));
        assert_eq!(parse_content_range("bytes 9-5/1000"), None);
        assert_eq!(parse_content_range("bytes 0-1000/1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes 0-99999999999999999999/*"), None);
    }

    #[test]
    fn repr_digests() {
        let empty = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            parse_repr_digest(&format!("sha-512=:AAAA:, sha-256=:{empty}:")).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(parse_repr_digest("sha-256=:!!:"), None);
        assert_eq!(parse_repr_digest("md5=:AAAA:"), None);
    }

    #[test]
    fn answers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, "bytes 10-19/*".parse().expect("value"));
        assert_eq!(
            answer_of(206, &headers),
            Ok(Answer::Partial {
                first: 10,
                last: 19,
                total: None
            })
        );
        headers.insert(CONTENT_RANGE, "bytes */30".parse().expect("value"));
        assert_eq!(
            answer_of(416, &headers),
            Ok(Answer::Unsatisfiable { total: Some(30) })
        );
        assert!(answer_of(206, &headers).is_err());
        assert!(answer_of(206, &HeaderMap::new()).is_err());
    }

    #[test]
    fn state_files_must_fit_the_partial_file() {
        let mut state = State {
            version: 1,
            url: "http://h/f".into(),
            meta: Meta {
                length: Some(100),
                ..Meta::default()
            },
            segments: vec![
                SegState {
                    start: 0,
                    end: Some(50),
                    done: 10,
                },
                SegState {
                    start: 50,
                    end: Some(100),
                    done: 50,
                },
            ],
        };
        assert!(consistent(&state, 100));
        assert!(!consistent(&state, 60));
        state.segments[1].done = 51;
        assert!(!consistent(&state, 100));
        let single = State {
            segments: vec![SegState {
                start: 0,
                end: None,
                done: 30,
            }],
            ..state
        };
        assert!(consistent(&single, 30));
        assert!(!consistent(&single, 29));
        let json = serde_json::to_string(&single).expect("json");
        let back: State = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, single);
    }

    #[test]
    fn state_paths_sit_beside_the_file() {
        assert_eq!(
            Downloader::state_path("/tmp/x/a.bin"),
            PathBuf::from("/tmp/x/a.bin.tenax-download")
        );
    }

    #[test]
    fn the_download_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let downloader = Downloader::new();
        assert_send(downloader.download("http://127.0.0.1:9/f", "missing"));
    }
}
