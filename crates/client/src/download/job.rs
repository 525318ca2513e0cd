//! One download from start to report: resume or start, plan the
//! segments, start over when the file changes, verify, report progress.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{TryStreamExt as _, stream};
use reqwest::Response;
use tokio::time::Instant;

use super::answer::{Answer, answer_of};
use super::state::{Meta, SegState, Segment};
use super::{DownloadProgress, DownloadReport, Job, Stop};
use crate::error::Error;
use crate::hash::{self, HashCursor};
use crate::net::{Retrier, lock};
use crate::parts;
use crate::uploader::Event;

/// Size of the pieces a segmented download is cut into: pieces are fetched
/// in order, a few at once, so that the file fills (and is hashed) mostly
/// from the front.
const PIECE: u64 = 32 << 20;
/// Fresh starts after which a file that keeps changing is given up on.
const MAX_RESTARTS: u32 = 5;
/// The least time between two [`Event::Received`] reports.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Rate and report-throttling bookkeeping.
#[derive(Debug)]
pub(super) struct Reports {
    last: Instant,
    sample_at: Instant,
    sample_bytes: u64,
    rate: f64,
}

impl Reports {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Reports {
            last: now,
            sample_at: now,
            sample_bytes: 0,
            rate: 0.0,
        }
    }
}

impl Job<'_> {
    /// The whole download: resume or start, start over when the file
    /// changes, verify.
    pub(super) async fn run(&self) -> Result<DownloadReport, Error> {
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

    /// Drops everything on disk (and the state file) for a fresh start.
    pub(super) async fn start_over(&self) -> Result<(), Error> {
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
    pub(super) async fn attempt(
        &self,
        plan: Vec<Segment>,
        pending: Option<Response>,
    ) -> Result<usize, Stop> {
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
                let start = parts::split(total, pieces, i);
                Segment::new(SegState {
                    start,
                    end: Some(parts::split(total, pieces, i + 1)),
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
    pub(super) async fn run_segments(
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

    /// Sizes, syncs, hashes and verifies the finished file, then drops the
    /// state file.
    pub(super) async fn finish(&self, connections: usize) -> Result<DownloadReport, Error> {
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
    pub(super) fn report(&self, plan: &[Segment]) {
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

    pub(super) fn emit(&self, plan: &[Segment], event: Event) {
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
