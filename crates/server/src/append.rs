//! The append-and-answer path every dialect shares.
//!
//! An adapter reads its dialect's headers, checks the client's offset with
//! [`check_offset`] (tus and RUFH; seed's offset is decided by
//! `tenax_protocol::seed`), and hands the body to [`append`]: engine
//! append (with a checksum or progress reports if asked) → finalisation
//! once the upload is whole → an [`Appended`] that the adapter words as its
//! answer. The offset check is a step of its own because each dialect
//! answers other questions around it in its own order (tus: a complete
//! upload after a mismatch, RUFH before), and the order decides the status
//! code the conformance tests pin.
//!
//! [`append`] holds the server's only calls of the engine's appends, and
//! with [`finalize`] its only finalisation for a request. It also logs
//! every append's timeline (see [`TIMELINE`]).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use futures_util::StreamExt as _;
pub(crate) use tenax_core::Progress;
use tenax_core::{AppendOptions, ChunkCheck, FinalInfo, Interruption, Lease};
use tenax_protocol::tus::Checksum;

use crate::auth::Access;
use crate::body::data_stream;
use crate::checksum::{HeaderChecksum, TrailerChecksum};
use crate::hooks::HookAnswer;
use crate::problem::Problem;
use crate::state::AppState;

/// The request that writes an upload: its credential, checked again before
/// a finalisation, and where the completion hook's answer goes (both
/// request extensions, put there by the auth and hooks middleware).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// What the request's credential allows.
    pub(crate) access: Access,
    /// Filled in when this request completes an upload.
    pub(crate) answer: HookAnswer,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let access = parts.extensions.get::<Access>().cloned();
        let answer = parts.extensions.get::<HookAnswer>().cloned();
        match (access, answer) {
            (Some(access), Some(answer)) => Ok(Caller { access, answer }),
            // Only if a route were left outside the middleware.
            _ => Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "urn:tenax:problem:internal",
                "Internal error",
                "the request reached an upload without its credential",
            )),
        }
    }
}

/// A client's offset that is not the one the upload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetMismatch {
    /// The bytes the upload holds.
    pub(crate) expected: u64,
    /// The offset the client sent.
    pub(crate) provided: u64,
}

impl OffsetMismatch {
    /// 409 with `expected-offset` and `provided-offset`, under the
    /// dialect's problem type and title.
    pub(crate) fn problem(self, kind: &'static str, title: &'static str) -> Problem {
        Problem::new(
            StatusCode::CONFLICT,
            kind,
            title,
            format!("the upload holds {} bytes; send from there", self.expected),
        )
        .with("expected-offset", self.expected)
        .with("provided-offset", self.provided)
    }
}

/// Whether the client's `provided` offset is the one the upload holds.
pub(crate) fn check_offset(lease: &Lease, provided: u64) -> Result<(), OffsetMismatch> {
    match lease.held() {
        held if held == provided => Ok(()),
        expected => Err(OffsetMismatch { expected, provided }),
    }
}

/// The bytes the upload still takes before its length (unbounded while the
/// length is unknown).
pub(crate) fn remaining(lease: &Lease) -> u64 {
    lease
        .record()
        .total
        .map_or(u64::MAX, |total| total.saturating_sub(lease.held()))
}

/// How the chunk is verified before it is kept.
pub(crate) enum Verify {
    /// Not at all: every byte that arrives is kept.
    Nothing,
    /// Against a checksum sent ahead of the body: staged, kept only whole
    /// and matching.
    Checksum(Checksum),
    /// Against a checksum in the body's trailers (none: kept unchecked).
    TrailerChecksum,
}

/// When the upload is finalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Not by this request.
    Never,
    /// Once it holds its length (known before or set by the adapter),
    /// however the body ended.
    AtLength,
    /// The client declared this request the last: if the body arrives
    /// whole, the upload ends where it does.
    Declared,
}

/// One append, as an adapter asks for it.
pub(crate) struct Append<'a> {
    /// Leading body bytes the upload holds already (seed's overlap).
    pub(crate) skip: u64,
    /// The most bytes to write; `None`: up to the upload's length.
    pub(crate) limit: Option<u64>,
    /// How the chunk is verified.
    pub(crate) verify: Verify,
    /// Progress reports, if the client takes them.
    pub(crate) progress: Option<Progress<'a>>,
    /// When to finalise.
    pub(crate) finish: Finish,
}

impl Default for Append<'_> {
    fn default() -> Self {
        Append {
            skip: 0,
            limit: None,
            verify: Verify::Nothing,
            progress: None,
            finish: Finish::AtLength,
        }
    }
}

/// What an append did, for the adapter's answer (the upload's offset and
/// status are on the lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Why the body stopped early, if it did; what arrived before is kept.
    pub(crate) interruption: Option<Interruption>,
    /// [`Finish::Declared`] only: the body ended whole at `held` bytes,
    /// short of the `length` known before, so the upload was not
    /// finalised.
    pub(crate) short_of_length: Option<u64>,
}

/// Compares `body` with the bytes the upload holds in `range`, writing
/// nothing (a resent chunk the upload holds whole): 409 when they differ.
pub(crate) async fn compare_held(
    state: &AppState,
    lease: &mut Lease,
    body: Body,
    range: std::ops::Range<u64>,
) -> Result<(), Problem> {
    let stream = data_stream(body, &state.config, None);
    Ok(lease.compare_held(stream, range).await?)
}

/// The tracing target of the per-append timeline: one `debug` event per
/// append with the upload, its offset, the bytes written and the phases in
/// microseconds: from the handler's start to the body's first byte, to its
/// last byte (both absent for an empty body), to the bytes being durable
/// (the engine's last write and fsync) and to the end of the finalisation. `start_unix_us` places it in
/// time, so that the client's pause between two requests shows (the next
/// start minus this start and its phases). `bench/clients --timeline`
/// reads these with `--log tenax::timeline=debug --log-format json`.
pub(crate) const TIMELINE: &str = "tenax::timeline";

/// When the body's first and last bytes reached the engine.
#[derive(Default)]
struct BodyMarks {
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Microseconds from `from` to `to` (0 if `to` is earlier).
fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// Appends `body` at the upload's offset and finalises as `request.finish`
/// says. Everything written is durable (and a finalisation done) before
/// this returns, also when it returns an error or an interruption.
pub(crate) async fn append(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
    body: Body,
    request: Append<'_>,
) -> Result<Appended, Problem> {
    let start = Instant::now();
    let start_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    let offset = lease.held();
    // The body's frames are timed only when the timeline is logged.
    let timed = tracing::enabled!(target: TIMELINE, tracing::Level::DEBUG);
    let mut marks = BodyMarks::default();
    let mark = |bytes: &Result<bytes::Bytes, String>| {
        if timed && bytes.is_ok() {
            let now = Instant::now();
            marks.first.get_or_insert(now);
            marks.last = Some(now);
        }
    };
    let limit = request.limit.unwrap_or_else(|| remaining(lease));
    let config = &state.config;
    // The engine's only append call in the server. A checked chunk counts
    // for nothing until it is verified, so it reports no progress.
    let (stream, check): (_, Option<Box<dyn ChunkCheck>>) = match request.verify {
        Verify::Checksum(checksum) => (
            data_stream(body, config, None),
            Some(Box::new(HeaderChecksum::new(
                checksum.algorithm,
                checksum.digest,
            ))),
        ),
        Verify::TrailerChecksum => {
            let trailers = Arc::new(Mutex::new(None));
            let check = Box::new(TrailerChecksum::new(Arc::clone(&trailers)));
            (data_stream(body, config, Some(trailers)), Some(check))
        }
        Verify::Nothing => (data_stream(body, config, None), None),
    };
    let options = AppendOptions::up_to(limit).skip(request.skip);
    let options = match (check, request.progress) {
        (Some(check), _) => options.check(check),
        (None, Some(progress)) => options.progress(progress.every, progress.report),
        (None, None) => options,
    };
    let outcome = lease.append(stream.inspect(mark), options).await?;
    let durable = Instant::now();
    let mut appended = Appended {
        interruption: outcome.interruption,
        short_of_length: None,
    };
    let held = lease.held();
    match request.finish {
        Finish::Never => {}
        Finish::AtLength => {
            if lease.record().total == Some(held) {
                finalize(state, caller, lease).await?;
            }
        }
        Finish::Declared if appended.interruption.is_none() => match lease.record().total {
            Some(length) if length != held => appended.short_of_length = Some(length),
            _ => {
                lease.set_total(held).await?;
                finalize(state, caller, lease).await?;
            }
        },
        Finish::Declared => {}
    }
    tracing::debug!(
        target: TIMELINE,
        upload = %lease.id(),
        offset,
        bytes = outcome.written,
        start_unix_us,
        to_first_byte_us = marks.first.map(|at| micros(start, at)),
        to_last_byte_us = marks.last.map(|at| micros(start, at)),
        to_durable_us = micros(start, durable),
        to_end_us = micros(start, Instant::now()),
        "append"
    );
    Ok(appended)
}

/// Finalises an upload, once the request's credential has been checked
/// again (it may have been revoked or expired while the body arrived), and
/// puts the completion hook's answer, if the server waits for one, where
/// the answer picks it up.
pub(crate) async fn finalize(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
) -> Result<FinalInfo, Problem> {
    caller.access.recheck(&state.config.auth)?;
    let info = lease.finalize().await?;
    if let Some(hooks) = &state.config.completion_answer
        && let Some(answer) = hooks.answer(lease.id()).await
    {
        caller.answer.set(answer);
    }
    Ok(info)
}
