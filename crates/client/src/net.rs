//! What uploads and downloads share: the retry policy, the stall watchdog,
//! the classification of failed attempts and the reading of error answers.
//!
//! Over 800 lines only with its unit tests below; the code itself is about 650
//! lines.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::Response;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use tokio::time::Instant;

use crate::error::Error;
use crate::retry;

/// Largest error or final response body read into memory.
pub(crate) const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Consecutive `400` answers after which a transfer is abandoned.
const MAX_BAD_REQUESTS: u32 = 3;
/// The default pace of probes while the link is down.
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a request may move nothing while its body is still being sent
/// before fresh connections are probed: a shorter silence is an ordinary
/// wait for a full socket buffer.
const SILENCE: Duration = Duration::from_secs(2);
/// The same once the request is all sent (or has no body): the server may
/// be syncing or finishing the upload, so it gets longer.
const ANSWER_SILENCE: Duration = Duration::from_secs(4);
/// Silent requests cut in a row without progress, after which the waits
/// stop doubling (a slow server is not cut again and again).
const MAX_SILENT_STRIKES: u32 = 3;
/// The most probes pending at once while a request is silent.
const MAX_PROBES: usize = 4;

/// The policy setters of a transfer builder (a type with a `policy: Policy`
/// field), written once for [`crate::Uploader`] and [`crate::Downloader`].
macro_rules! policy_setters {
    ($transfer:literal) => {
        #[doc = concat!("How many attempts in a row may fail without progress before the ", $transfer, " gives up (default 100). Progress resets the count. Network failures (refused, reset or timed-out connections, stalls) do not count: through a link's outage the ", $transfer, " probes on, bounded only by [`max_time`](Self::max_time). Zero turns retries off altogether: the first failure of any kind ends the ", $transfer, ".")]
        pub fn max_retries(mut self, retries: u32) -> Self {
            self.policy.max_retries = retries;
            self
        }

        #[doc = concat!("The longest the whole ", $transfer, " may take (default `None`: unlimited).")]
        pub fn max_time(mut self, limit: Option<Duration>) -> Self {
            self.policy.max_time = limit;
            self
        }

        /// How long a request may go without moving a body byte or getting a
        /// response before it counts as a dropped connection (default 30 s).
        pub fn stall_timeout(mut self, timeout: Duration) -> Self {
            self.policy.stall_timeout = timeout.max(Duration::from_millis(1));
            self
        }

        /// The TCP (and TLS) connect timeout (default 10 s).
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.policy.connect_timeout = timeout;
            self
        }

        /// Bounds of the exponential backoff between retries after the
        /// server's own trouble (`408`, `429`, `5xx`; default 1 s to 60 s,
        /// factor 2, with jitter). A server's `Retry-After` overrides it.
        /// After a network failure the first retry waits at most `min`.
        pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
            self.policy.min_delay = min;
            self.policy.max_delay = max.max(min);
            self
        }

        /// How often the server is probed while the link is down (default
        /// 250 ms, ±10% jitter): after a network failure (a refused, reset or
        /// timed-out connection, a stall) the next attempt, a cheap status
        /// query, comes after this long, again and again, so the transfer
        /// resumes within about this long of the link's return however long
        /// it was down. Also the pace of the probes on fresh connections
        /// that tell a silent connection from a silent link.
        pub fn probe_interval(mut self, interval: Duration) -> Self {
            self.policy.probe_interval = interval.max(Duration::from_millis(10));
            self
        }

        /// Sends `Authorization: Bearer TOKEN` with every request (default:
        /// none; a signed URL needs none).
        pub fn bearer_token(mut self, token: Option<String>) -> Self {
            self.policy.bearer_token = token;
            self
        }

        /// Also trusts these certificate authorities (PEM), besides the
        /// system's: for a server with a private or self-signed certificate.
        pub fn extra_root_certificates(mut self, pem: Option<Vec<u8>>) -> Self {
            self.policy.extra_roots = pem;
            self
        }
    };
}
pub(crate) use policy_setters;

/// The retry policy and timeouts of a transfer.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Consecutive failed attempts without progress before giving up.
    pub(crate) max_retries: u32,
    /// The longest the whole transfer may take.
    pub(crate) max_time: Option<Duration>,
    /// How long a request may move nothing before it counts as dropped.
    pub(crate) stall_timeout: Duration,
    /// The TCP (and TLS) connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Bounds of the exponential backoff (server trouble).
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    /// The pace of probes while the link is down.
    pub(crate) probe_interval: Duration,
    /// Sent as `Authorization: Bearer …`.
    pub(crate) bearer_token: Option<String>,
    /// More trusted certificate authorities, PEM.
    pub(crate) extra_roots: Option<Vec<u8>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_retries: 100,
            max_time: None,
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            bearer_token: None,
            extra_roots: None,
        }
    }
}

impl Policy {
    /// The HTTP client: no redirects followed unless `follow_redirects`
    /// (an upload's `308` must reach us), our connect timeout.
    pub(crate) fn client(&self, follow_redirects: bool) -> Result<reqwest::Client, Error> {
        let redirect = if follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        };
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.bearer_token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::InvalidToken)?;
            // Kept out of reqwest's debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &self.extra_roots {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)?;
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        builder
            .default_headers(headers)
            .redirect(redirect)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("tenax/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)
    }
}

/// Why an attempt did not produce a usable answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The link failed: a refused, reset or timed-out connection, a stall.
    /// Probe every [`Policy::probe_interval`] until it is back.
    Network(String),
    /// The request's connection went silent while the server answers on a
    /// fresh one: retry at once.
    Silent(String),
    /// The server's trouble (`408`, `429`, `5xx`) or an unexpected answer:
    /// back off exponentially, or as `Retry-After` says.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The server holds another offset than assumed (`416` or `409` on an
    /// upload): ask, then go on.
    Gap(String),
    /// `400`: retry, but give up if it keeps happening.
    BadRequest(String),
    /// `404` or `410`: the resource is gone.
    Gone { status: u16, detail: String },
    /// `413` to a request with a body: the server, or a proxy before it,
    /// takes smaller requests. Send smaller ones (at most
    /// `max_append_size`, when the answer's `Upload-Limit` says).
    TooLarge {
        detail: String,
        max_append_size: Option<u64>,
    },
    /// Give up with this error.
    Fatal(Error),
}

impl Failure {
    /// A network failure.
    pub(crate) fn network(reason: impl Into<String>) -> Self {
        Failure::Network(reason.into())
    }

    /// The failure of a request that got no answer: a network failure,
    /// unless TLS refused the server or the request could not be built
    /// (that is no outage: it backs off and counts towards the retry limit).
    pub(crate) fn of_transport(error: &(dyn std::error::Error + 'static)) -> Self {
        let reason = error_chain(error);
        if not_the_link(error) {
            Failure::transient(reason)
        } else {
            Failure::Network(reason)
        }
    }

    /// A transient failure without `Retry-After`.
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// When a silent request is checked on fresh connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Silence {
    /// The request body's length: until that much has moved, the request
    /// is sending, afterwards it awaits its answer.
    body: u64,
    /// Silent requests cut in a row without progress: each doubles the
    /// waits.
    strikes: u32,
}

impl Silence {
    /// How long the request may be silent, `moved` bytes of its body sent.
    fn allowed(self, moved: u64) -> Duration {
        let base = if moved < self.body {
            SILENCE
        } else {
            ANSWER_SILENCE
        };
        base * (1 << self.strikes.min(MAX_SILENT_STRIKES))
    }
}

/// The consecutive-failure bookkeeping of one connection (lane, segment).
pub(crate) struct Retrier {
    /// Consecutive failures without progress.
    failures: u32,
    /// Consecutive `400` answers without progress.
    bad_requests: u32,
    /// Consecutive network failures without progress.
    outage: u32,
    /// Consecutive silent requests cut without progress.
    silent: u32,
    backoff: Box<dyn Iterator<Item = Duration> + Send + Sync>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("failures", &self.failures)
            .field("bad_requests", &self.bad_requests)
            .field("outage", &self.outage)
            .field("silent", &self.silent)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// A fresh count (call again after progress).
    pub(crate) fn new(policy: &Policy) -> Self {
        Retrier {
            failures: 0,
            bad_requests: 0,
            outage: 0,
            silent: 0,
            backoff: Box::new(retry::delays(policy.min_delay, policy.max_delay)),
        }
    }

    /// When the next request, with a body of `body` bytes (0: none), is
    /// checked on fresh connections if it goes silent.
    pub(crate) fn silence(&self, body: u64) -> Silence {
        Silence {
            body,
            strikes: self.silent,
        }
    }

    /// When a response body that goes silent is checked: as a request body
    /// still being sent.
    pub(crate) fn receiving(&self) -> Silence {
        self.silence(u64::MAX)
    }
}

/// What all connections of one transfer share: the failure count, the last
/// error and the overall deadline.
#[derive(Debug)]
pub(crate) struct Tally {
    retries: AtomicU32,
    last_error: Mutex<String>,
    started: Instant,
    deadline: Option<Instant>,
    limit: Option<Duration>,
}

impl Tally {
    /// Starts the clock of a transfer under `policy`.
    pub(crate) fn new(policy: &Policy) -> Self {
        let started = Instant::now();
        Tally {
            retries: AtomicU32::new(0),
            last_error: Mutex::new(String::new()),
            started,
            deadline: policy.max_time.map(|limit| started + limit),
            limit: policy.max_time,
        }
    }

    /// Failed attempts so far, all connections together.
    pub(crate) fn retries(&self) -> u32 {
        self.retries.load(Ordering::Relaxed)
    }

    /// When the transfer started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Whether the time limit is reached, or would be after `delay`.
    pub(crate) fn past_deadline(&self, delay: Duration) -> bool {
        self.deadline.is_some_and(|d| Instant::now() + delay >= d)
    }

    /// The error for an exhausted time limit.
    pub(crate) fn time_limit(&self) -> Error {
        Error::TimeLimit {
            limit: self.limit.unwrap_or_default(),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Sends a request (`response`: its sending future, or any future of the
    /// transfer's network) under the stall watchdog and the time limit: it
    /// is dropped when `moved` has not changed and no response came for the
    /// stall timeout. And once it has moved nothing for as long as `silence`
    /// allows, `probe()` (a request on a fresh connection; `true`: the
    /// server answered) every probe interval: an answer while the request
    /// is still silent means its connection is dead though the link is up
    /// (a silent link drops connections without a word), so it is dropped
    /// at once instead of at the stall timeout. A false alarm (a server slower than allowed)
    /// costs a status query, and doubles the next request's allowance.
    pub(crate) async fn send_probed<T, E, P, F>(
        &self,
        policy: &Policy,
        response: impl Future<Output = Result<T, E>>,
        moved: &AtomicU64,
        probe: P,
        silence: Silence,
    ) -> Result<T, Failure>
    where
        E: std::error::Error + 'static,
        P: Fn() -> F,
        F: Future<Output = bool>,
    {
        let stall = policy.stall_timeout;
        tokio::pin!(response);
        let mut ticks = tokio::time::interval(tick(stall.min(policy.probe_interval)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = moved.load(Ordering::Relaxed);
        let mut since = Instant::now();
        let mut probes = futures_util::stream::FuturesUnordered::new();
        // Past the stall timeout, the watchdog decides alone.
        let allowed = |moved: u64| silence.allowed(moved).min(stall);
        let mut next_probe = since + allowed(seen);
        loop {
            tokio::select! {
                result = &mut response => {
                    return result.map_err(|e| Failure::of_transport(&e));
                }
                Some(answered) = futures_util::StreamExt::next(&mut probes) => {
                    if answered && moved.load(Ordering::Relaxed) == seen {
                        return Err(Failure::Silent(format!(
                            "nothing moved for {:.1}s while the server answers on a new connection",
                            since.elapsed().as_secs_f64()
                        )));
                    }
                }
                _ = ticks.tick() => {
                    let now = moved.load(Ordering::Relaxed);
                    if now != seen {
                        seen = now;
                        since = Instant::now();
                        next_probe = since + allowed(seen);
                        probes.clear();
                    } else if since.elapsed() >= stall {
                        return Err(Failure::network(format!(
                            "stalled: nothing moved for {}s",
                            stall.as_secs_f64()
                        )));
                    } else if Instant::now() >= next_probe {
                        if probes.len() < MAX_PROBES {
                            // A probe stuck on a dead connection frees its slot.
                            let life = policy.probe_interval * MAX_PROBES as u32;
                            let probe = tokio::time::timeout(life.max(SILENCE), probe());
                            probes.push(async move { probe.await.unwrap_or(false) });
                        }
                        next_probe = Instant::now() + jittered(policy.probe_interval);
                    }
                    if self.past_deadline(Duration::ZERO) {
                        return Err(Failure::Fatal(self.time_limit()));
                    }
                }
            }
        }
    }

    /// Books a failed attempt: gives up when the policy says so, otherwise
    /// returns what went wrong and how long to wait before the next attempt.
    pub(crate) fn book(
        &self,
        policy: &Policy,
        retry: &mut Retrier,
        failure: Failure,
    ) -> Result<(String, Duration), Error> {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if policy.max_retries == 0 {
            // Retries are off: nothing is retried, network failures neither.
            retry.failures = retry.failures.saturating_add(1);
            let reason = match failure {
                Failure::Fatal(error) => return Err(error),
                other => self.book_answer(policy, retry, other)?.0,
            };
            *lock(&self.last_error) = reason.clone();
            return Err(Error::RetriesExhausted {
                attempts: retry.failures,
                last_error: reason,
            });
        }
        let (reason, delay) = match failure {
            // A link's outage: probe at a steady pace, bounded only by the
            // time limit (the first probe comes sooner after a lone drop).
            Failure::Network(reason) => {
                retry.outage = retry.outage.saturating_add(1);
                let pace = jittered(policy.probe_interval);
                let delay = if retry.outage == 1 {
                    pace.min(policy.min_delay)
                } else {
                    pace
                };
                return self.check_deadline(reason, delay);
            }
            Failure::Silent(reason) => {
                retry.silent = retry.silent.saturating_add(1);
                return self.check_deadline(reason, Duration::ZERO);
            }
            _ => {
                retry.failures += 1;
                self.book_answer(policy, retry, failure)?
            }
        };
        *lock(&self.last_error) = reason.clone();
        if retry.failures > policy.max_retries {
            return Err(Error::RetriesExhausted {
                attempts: retry.failures,
                last_error: reason,
            });
        }
        self.check_deadline(reason, delay)
    }

    /// Gives up if the time limit is reached or would be after `delay`.
    fn check_deadline(&self, reason: String, delay: Duration) -> Result<(String, Duration), Error> {
        *lock(&self.last_error) = reason.clone();
        if self.past_deadline(delay) {
            return Err(self.time_limit());
        }
        Ok((reason, delay))
    }

    /// The reason and delay of a failure that is not the link's.
    fn book_answer(
        &self,
        policy: &Policy,
        retry: &mut Retrier,
        failure: Failure,
    ) -> Result<(String, Duration), Error> {
        Ok(match failure {
            Failure::Network(reason) | Failure::Silent(reason) => (reason, policy.probe_interval),
            Failure::Transient {
                reason,
                retry_after,
            } => {
                let backoff = retry.backoff.next().unwrap_or(policy.max_delay);
                (reason, retry_after.unwrap_or(backoff))
            }
            Failure::Gap(detail) => (
                format!("the server holds another offset than expected: {detail}"),
                Duration::ZERO,
            ),
            Failure::BadRequest(detail) => {
                retry.bad_requests += 1;
                if retry.bad_requests >= MAX_BAD_REQUESTS {
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
            Failure::TooLarge { detail, .. } => (format!("HTTP 413: {detail}"), Duration::ZERO),
            Failure::Fatal(error) => return Err(error),
        })
    }
}

/// `interval` ± 10%, at random.
pub(crate) fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A fresh `RandomState` is freshly keyed: enough randomness for jitter.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(0.9 + 0.2 * unit)
}

/// Whether TLS refused the connection or the request was invalid
/// (somewhere in `error`'s chain): failures a working link does not cure.
fn not_the_link(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() || e.is::<http::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            && not_the_link(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// How often the watchdog looks.
fn tick(stall: Duration) -> Duration {
    (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// The `Retry-After` of an answer, if readable.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
}

/// Classifies an error answer, reading (a capped part of) its body for the
/// problem details. `409` is fatal here; callers that read it otherwise
/// check first.
pub(crate) async fn failure_of(policy: &Policy, response: Response) -> Failure {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = tokio::time::timeout(policy.stall_timeout, read_capped(response))
        .await
        .unwrap_or_default();
    classify(status, retry_after, &body)
}

/// Classifies an error answer of status `status` with (a capped part of)
/// its `body`. `409` is fatal here; callers that read it otherwise check
/// first.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let detail = problem_detail(status, body);
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

/// Locks a mutex, ignoring poisoning (every guarded value here stays
/// consistent across a panic).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stores the first I/O error met (by a body stream, a writer).
pub(crate) fn record(slot: &Mutex<Option<io::Error>>, error: io::Error) {
    lock(slot).get_or_insert(error);
}

/// Reads up to [`MAX_RESPONSE_BODY`] bytes of a body, empty on any error.
pub(crate) async fn read_capped(mut response: Response) -> Vec<u8> {
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
pub(crate) fn problem_detail(status: u16, body: &[u8]) -> String {
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
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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

    #[test]
    fn problem_details_are_surfaced() {
        let body = br#"{"type":"about:blank","title":"Gap","detail":"expected offset 10"}"#;
        assert_eq!(problem_detail(416, body), "expected offset 10");
        assert_eq!(problem_detail(413, br#"{"title":"Too big"}"#), "Too big");
        assert_eq!(problem_detail(500, b"  oops \n"), "oops");
        assert_eq!(problem_detail(503, b""), "Service Unavailable");
    }

    #[test]
    fn the_policy_gives_up_after_max_retries() {
        let policy = Policy {
            max_retries: 2,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..Policy::default()
        };
        let tally = Tally::new(&policy);
        let mut retry = Retrier::new(&policy);
        for _ in 0..2 {
            tally
                .book(&policy, &mut retry, Failure::transient("x"))
                .expect("retry");
        }
        let err = tally
            .book(&policy, &mut retry, Failure::transient("y"))
            .expect_err("exhausted");
        assert!(matches!(err, Error::RetriesExhausted { attempts: 3, .. }));
        assert_eq!(tally.retries(), 3);
    }

    #[test]
    fn network_failures_probe_steadily_and_never_exhaust_retries() {
        let policy = Policy {
            max_retries: 2,
            ..Policy::default()
        };
        let tally = Tally::new(&policy);
        let mut retry = Retrier::new(&policy);
        let interval = policy.probe_interval;
        for attempt in 0..1000 {
            let (_, delay) = tally
                .book(&policy, &mut retry, Failure::network("connection refused"))
                .expect("a network failure never exhausts the retries");
            assert!(delay <= interval.mul_f64(1.1), "{attempt}: {delay:?}");
            if attempt > 0 {
                assert!(delay >= interval.mul_f64(0.9), "{attempt}: {delay:?}");
            }
        }
        // Silent connections retry at once.
        let (_, delay) = tally
            .book(&policy, &mut retry, Failure::Silent("silent".into()))
            .expect("retry");
        assert_eq!(delay, Duration::ZERO);
        // The server's trouble still counts.
        for _ in 0..2 {
            tally
                .book(&policy, &mut retry, Failure::transient("HTTP 503"))
                .expect("retry");
        }
        let err = tally
            .book(&policy, &mut retry, Failure::transient("HTTP 503"))
            .expect_err("exhausted");
        assert!(matches!(err, Error::RetriesExhausted { attempts: 3, .. }));
        // Zero turns retries off, for network failures too.
        let off = Policy {
            max_retries: 0,
            ..Policy::default()
        };
        let err = tally
            .book(&off, &mut Retrier::new(&off), Failure::network("refused"))
            .expect_err("no retries");
        assert!(matches!(err, Error::RetriesExhausted { attempts: 1, .. }));
    }

    #[test]
    fn the_first_network_retry_comes_soon_and_the_time_limit_ends_probing() {
        let policy = Policy {
            min_delay: Duration::from_millis(10),
            max_time: Some(Duration::from_millis(300)),
            probe_interval: Duration::from_millis(500),
            ..Policy::default()
        };
        let tally = Tally::new(&policy);
        let mut retry = Retrier::new(&policy);
        let (_, first) = tally
            .book(&policy, &mut retry, Failure::network("reset"))
            .expect("retry");
        assert!(first <= Duration::from_millis(10), "{first:?}");
        // The next probe (about 500 ms away) would pass the time limit.
        let err = tally
            .book(&policy, &mut retry, Failure::network("refused"))
            .expect_err("past the time limit");
        assert!(matches!(err, Error::TimeLimit { .. }), "{err:?}");
    }

    #[test]
    fn retry_after_is_honoured_for_server_trouble() {
        let policy = Policy::default();
        let tally = Tally::new(&policy);
        let mut retry = Retrier::new(&policy);
        let failure = classify(503, Some(Duration::from_secs(5)), b"");
        let (reason, delay) = tally.book(&policy, &mut retry, failure).expect("retry");
        assert_eq!(delay, Duration::from_secs(5));
        assert!(reason.contains("503"), "{reason}");
    }

    #[test]
    fn transport_errors_are_the_link_unless_tls_or_invalid() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            Failure::of_transport(&refused),
            Failure::Network(_)
        ));
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            Failure::of_transport(&tls),
            Failure::Transient { .. }
        ));
        let invalid = http::Request::builder()
            .uri("http://bad host/")
            .body(())
            .expect_err("an invalid URI");
        assert!(matches!(
            Failure::of_transport(&invalid),
            Failure::Transient { .. }
        ));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= base.mul_f64(0.9) && *d <= base.mul_f64(1.1))
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "no jitter at all");
    }

    /// A request that moves nothing is dropped once a probe answers, long
    /// before the stall timeout; one that moves is left alone.
    #[tokio::test]
    async fn a_silent_request_is_dropped_when_a_probe_answers() {
        let policy = Policy {
            probe_interval: Duration::from_millis(100),
            ..Policy::default()
        };
        let tally = Tally::new(&policy);
        let sending = Retrier::new(&policy).silence(u64::MAX);
        let moved = AtomicU64::new(0);
        let started = Instant::now();
        let silent = std::future::pending::<Result<(), io::Error>>();
        let result = tally
            .send_probed(&policy, silent, &moved, || async { true }, sending)
            .await;
        assert!(matches!(result, Err(Failure::Silent(_))), "{result:?}");
        let took = started.elapsed();
        assert!(
            took >= SILENCE && took < SILENCE + Duration::from_secs(1),
            "{took:?}"
        );

        // Bytes keep moving for 3 s, then the answer comes: no probe fires.
        let moving = async {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                moved.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, io::Error>(7)
        };
        let probed = AtomicU32::new(0);
        let answer = tally
            .send_probed(
                &policy,
                moving,
                &moved,
                || {
                    probed.fetch_add(1, Ordering::Relaxed);
                    async { true }
                },
                sending,
            )
            .await;
        assert!(matches!(answer, Ok(7)), "{answer:?}");
        assert_eq!(probed.load(Ordering::Relaxed), 0);

        // A probe that gets no answer either (the link is down) leaves the
        // request to the stall timeout.
        let policy = Policy {
            stall_timeout: Duration::from_millis(2500),
            probe_interval: Duration::from_millis(100),
            ..Policy::default()
        };
        let silent = std::future::pending::<Result<(), io::Error>>();
        let result = tally
            .send_probed(&policy, silent, &moved, || async { false }, sending)
            .await;
        assert!(matches!(result, Err(Failure::Network(_))), "{result:?}");
    }

    /// Once the body is all sent, the silence allowed is longer (the server
    /// may be syncing), and every silent cut without progress doubles it.
    #[test]
    fn the_silence_allowed_grows_after_the_body_and_with_each_cut() {
        let policy = Policy::default();
        let tally = Tally::new(&policy);
        let mut retry = Retrier::new(&policy);
        assert_eq!(retry.silence(10).allowed(9), SILENCE);
        assert_eq!(retry.silence(10).allowed(10), ANSWER_SILENCE);
        assert_eq!(retry.silence(0).allowed(0), ANSWER_SILENCE);
        assert_eq!(retry.receiving().allowed(1 << 40), SILENCE);
        for strikes in 1..=MAX_SILENT_STRIKES + 2 {
            let booked = tally.book(&policy, &mut retry, Failure::Silent("cut".into()));
            assert_eq!(booked.map(|(_, delay)| delay).ok(), Some(Duration::ZERO));
            let doubled = 1 << strikes.min(MAX_SILENT_STRIKES);
            assert_eq!(retry.silence(0).allowed(0), ANSWER_SILENCE * doubled);
        }
        // Progress starts a fresh count.
        assert_eq!(Retrier::new(&policy).silence(0).allowed(0), ANSWER_SILENCE);
    }

    /// A request whose body is all sent is probed only after the longer
    /// allowance: a server syncing for three seconds is not cut.
    #[tokio::test]
    async fn an_answer_is_awaited_longer_than_a_body() {
        let policy = Policy {
            probe_interval: Duration::from_millis(100),
            ..Policy::default()
        };
        let tally = Tally::new(&policy);
        let moved = AtomicU64::new(10);
        let after_body = Retrier::new(&policy).silence(10);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, io::Error>(())
        };
        let result = tally
            .send_probed(&policy, slow, &moved, || async { true }, after_body)
            .await;
        assert!(result.is_ok(), "{result:?}");
        let started = Instant::now();
        let silent = std::future::pending::<Result<(), io::Error>>();
        let result = tally
            .send_probed(&policy, silent, &moved, || async { true }, after_body)
            .await;
        assert!(matches!(result, Err(Failure::Silent(_))), "{result:?}");
        let took = started.elapsed();
        assert!(
            took >= ANSWER_SILENCE && took < ANSWER_SILENCE + Duration::from_secs(1),
            "{took:?}"
        );
    }
}
