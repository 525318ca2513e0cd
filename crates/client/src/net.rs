//! What uploads and downloads share: the retry policy, the stall watchdog,
//! the classification of failed attempts and the reading of error answers.

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

/// The policy setters of a transfer builder (a type with a `policy: Policy`
/// field), written once for [`crate::Uploader`] and [`crate::Downloader`].
macro_rules! policy_setters {
    ($transfer:literal) => {
        #[doc = concat!("How many attempts in a row may fail without progress before the ", $transfer, " gives up (default 100). Progress resets the count.")]
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

        /// Bounds of the exponential backoff between retries (default 1 s to
        /// 60 s, factor 2, with jitter). A server's `Retry-After` overrides it.
        pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
            self.policy.min_delay = min;
            self.policy.max_delay = max.max(min);
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
    /// Bounds of the exponential backoff.
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
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
    /// Connection trouble, a stall, `408`, `429` or `5xx`: back off, retry.
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
    /// Give up with this error.
    Fatal(Error),
}

impl Failure {
    /// A transient failure without `Retry-After`.
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        Failure::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The consecutive-failure bookkeeping of one connection (lane, segment).
pub(crate) struct Retrier {
    /// Consecutive failures without progress.
    failures: u32,
    /// Consecutive `400` answers without progress.
    bad_requests: u32,
    backoff: Box<dyn Iterator<Item = Duration> + Send + Sync>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("failures", &self.failures)
            .field("bad_requests", &self.bad_requests)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// A fresh count (call again after progress).
    pub(crate) fn new(policy: &Policy) -> Self {
        Retrier {
            failures: 0,
            bad_requests: 0,
            backoff: Box::new(retry::delays(policy.min_delay, policy.max_delay)),
        }
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

    /// Sends a request (`response`: its sending future) under the stall
    /// watchdog and the time limit: the request is dropped when `moved` has
    /// not changed and no response came for the stall timeout.
    pub(crate) async fn send_watched<T, E>(
        &self,
        policy: &Policy,
        response: impl Future<Output = Result<T, E>>,
        moved: &AtomicU64,
    ) -> Result<T, Failure>
    where
        E: std::error::Error,
    {
        let stall = policy.stall_timeout;
        tokio::pin!(response);
        let mut ticks = tokio::time::interval(tick(stall));
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
                    if self.past_deadline(Duration::ZERO) {
                        return Err(Failure::Fatal(self.time_limit()));
                    }
                }
            }
        }
    }

    /// The next block of a response body, under the stall watchdog and the
    /// time limit (`None` at its end).
    pub(crate) async fn next_block(
        &self,
        policy: &Policy,
        response: &mut Response,
    ) -> Result<Option<bytes::Bytes>, Failure> {
        let stall = policy.stall_timeout;
        let wait = match self.deadline {
            Some(deadline) => stall.min(deadline.saturating_duration_since(Instant::now())),
            None => stall,
        };
        match tokio::time::timeout(wait, response.chunk()).await {
            Ok(Ok(block)) => Ok(block),
            Ok(Err(e)) => Err(Failure::transient(error_chain(&e))),
            Err(_) if self.past_deadline(Duration::ZERO) => Err(Failure::Fatal(self.time_limit())),
            Err(_) => Err(Failure::transient(format!(
                "stalled: nothing moved for {}s",
                stall.as_secs_f64()
            ))),
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
        retry.failures += 1;
        let (reason, delay) = match failure {
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
            Failure::Fatal(error) => return Err(error),
        };
        *lock(&self.last_error) = reason.clone();
        if retry.failures > policy.max_retries {
            return Err(Error::RetriesExhausted {
                attempts: retry.failures,
                last_error: reason,
            });
        }
        if self.past_deadline(delay) {
            return Err(self.time_limit());
        }
        Ok((reason, delay))
    }
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
}
