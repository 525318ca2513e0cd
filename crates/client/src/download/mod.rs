//! The downloader: RFC 9110 range requests, resumed across dropped
//! connections and across runs, optionally over several connections, or
//! following an upload still in progress.
//!
//! The parts, by role:
//!
//! * [`job`]: one download from start to report: planning the segments,
//!   fresh starts, the final hash check, progress reports;
//! * [`segment`]: one segment's requests and retry loop;
//! * [`follow`]: confirming an upload followed to its end;
//! * [`answer`]: reading a response (status, `Content-Range`, validators);
//! * [`write`]: positional writes of the received bytes, off the runtime;
//! * [`hasher`]: the thread hashing the file in order while it fills;
//! * [`state`]: the segments, the representation's metadata and the state
//!   file that lets a later run resume.

mod answer;
mod follow;
mod hasher;
mod job;
mod segment;
mod state;
mod write;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::{Response, Url};
use serde::Serialize;

use crate::error::Error;
use crate::hash::HashCursor;
use crate::net::{Failure, Policy, Silence, Tally};
use crate::uploader::Event;

use self::hasher::Hasher;
use self::job::Reports;
use self::state::{Checkpoints, Meta};

/// Suffix of the state file kept beside a partial download.
pub const STATE_SUFFIX: &str = ".tenax-download";

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
    /// server's trouble, probes every 250 ms while the link is down, no
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
            checkpoint: tokio::sync::Mutex::new(Checkpoints::new()),
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
    #[serde(serialize_with = "crate::seconds::serialize")]
    pub elapsed: Duration,
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

impl Job<'_> {
    /// Sends `request` under the stall watchdog and the time limit; once it
    /// has been silent as long as `silence` allows, `HEAD` of the URL checks
    /// the link on fresh connections (any answer: the link is up, this
    /// connection is dead).
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        silence: Silence,
    ) -> Result<Response, Failure> {
        self.watch(request.send(), silence).await
    }

    /// The next block of `response`'s body (`None` at its end), watched as
    /// [`send`](Self::send) watches a request.
    async fn next_block(
        &self,
        response: &mut Response,
        silence: Silence,
    ) -> Result<Option<bytes::Bytes>, Failure> {
        self.watch(response.chunk(), silence).await
    }

    async fn watch<T>(
        &self,
        outcome: impl Future<Output = reqwest::Result<T>>,
        silence: Silence,
    ) -> Result<T, Failure> {
        let probe = || {
            let head = self.client.head(self.url.clone());
            async move { head.send().await.is_ok() }
        };
        let unmoved = AtomicU64::new(0);
        self.tally
            .send_probed(&self.dl.policy, outcome, &unmoved, probe, silence)
            .await
    }

    fn write_error(&self, source: io::Error) -> Error {
        Error::LocalWrite {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
