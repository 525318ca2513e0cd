//! Appending a body to a leased upload: [`Lease::append`], the one entry
//! point, with its [`AppendOptions`] (bytes to skip, a limit, a chunk
//! check, progress reports), in named steps: `begin` (open the data and the
//! pipeline), `receive` (the body, frame by frame: `next_frame`, `accept`,
//! `gather`, `flush`), `settle` (the last batch written and synced, the
//! durable length acknowledged).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pipeline::{BATCH, Batch, BodyMemory, Pipeline};
use super::{Lease, now, outbox_error};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::hasher::Hasher;
use crate::record::Status;
use crate::storage::StorageError;

/// After a request is told to stop (a newer one wants the upload), it still
/// takes what its connection delivers for this long, up to `DRAIN_LIMIT`
/// bytes: a client that lost its link asks for the offset as soon as it is
/// back, often before the server has read the dying connection's last
/// bytes, and those bytes are worth keeping rather than sending again.
const DRAIN_TIME: Duration = Duration::from_millis(300);
const DRAIN_LIMIT: u64 = 16 << 20;

/// How long a body may pause before what it gathered is written anyway.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// Why an append stopped before its body ended. The bytes received before
/// the interruption are kept and durable either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// A newer request on the same upload took over.
    Superseded,
    /// The server is shutting down.
    ShuttingDown,
    /// The body failed (the client vanished, a timeout, a framing error).
    Body(String),
    /// The body carried more bytes than announced; the announced ones were kept.
    Overrun,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Bytes appended by this request (after any skipped prefix).
    pub written: u64,
    /// Bytes the body delivered in all, skipped ones included.
    pub received: u64,
    /// Why the append stopped early, if it did.
    pub interruption: Option<Interruption>,
}

/// Verifies one chunk as it is appended (a checksum the client sent): fed
/// every byte the chunk appends, asked for a verdict once the body has ended.
pub trait ChunkCheck: Send {
    /// Feeds the next appended bytes.
    fn update(&mut self, bytes: &[u8]);
    /// The verdict: `Ok` for a valid chunk, [`Error::ChecksumMismatch`]
    /// when the bytes do not match, [`Error::ChecksumInvalid`] when the
    /// check itself cannot be made (a checksum that arrived only at the end,
    /// in a trailer, malformed or with an algorithm not offered).
    fn verify(self: Box<Self>) -> Result<(), Error>;
}

/// Progress reports while a body streams: about every `every`, what arrived
/// is made durable and `report` is called with the number of bytes held
/// (for interim answers that tell the client its offset).
pub struct Progress<'a> {
    /// How often, at most.
    pub every: Duration,
    /// Called with the number of bytes durably held.
    pub report: &'a mut (dyn FnMut(u64) + Send),
}

impl fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// How [`Lease::append`] takes a body. The default writes the whole body,
/// unchecked, without progress reports.
pub struct AppendOptions<'a> {
    /// Leading bytes of the body that the upload already holds: received
    /// and counted, not written.
    pub skip: u64,
    /// Bytes written at most (after the skipped ones); a body that carries
    /// more ends with [`Interruption::Overrun`], the bytes within the limit kept.
    pub limit: u64,
    /// Verifies the appended bytes as one chunk. The chunk is staged (a
    /// crash before the verdict discards it) and kept only when it is valid
    /// and arrived whole; otherwise the upload is left exactly as it was:
    /// [`Error::ChecksumMismatch`] for a bad chunk, and an outcome with
    /// `written == 0` and the interruption for one that did not arrive whole.
    pub check: Option<Box<dyn ChunkCheck>>,
    /// Progress reports while the body streams. None are made for a
    /// checked chunk: its bytes are not accepted before the verdict.
    pub progress: Option<Progress<'a>>,
}

impl Default for AppendOptions<'_> {
    fn default() -> Self {
        AppendOptions {
            skip: 0,
            limit: u64::MAX,
            check: None,
            progress: None,
        }
    }
}

impl fmt::Debug for AppendOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendOptions")
            .field("skip", &self.skip)
            .field("limit", &self.limit)
            .field("check", &self.check.is_some())
            .field("progress", &self.progress)
            .finish()
    }
}

impl<'a> AppendOptions<'a> {
    /// Writes at most `limit` bytes, nothing skipped, unchecked.
    pub fn up_to(limit: u64) -> Self {
        AppendOptions {
            limit,
            ..AppendOptions::default()
        }
    }

    /// Skips the body's first `skip` bytes (already held).
    #[must_use]
    pub fn skip(self, skip: u64) -> Self {
        AppendOptions { skip, ..self }
    }

    /// Verifies the appended bytes with `check` (see [`AppendOptions::check`]).
    #[must_use]
    pub fn check(self, check: Box<dyn ChunkCheck>) -> Self {
        AppendOptions {
            check: Some(check),
            ..self
        }
    }

    /// Reports progress about every `every` (see [`Progress`]).
    #[must_use]
    pub fn progress(self, every: Duration, report: &'a mut (dyn FnMut(u64) + Send)) -> Self {
        AppendOptions {
            progress: Some(Progress { every, report }),
            ..self
        }
    }
}

/// Where one append stands while its body streams.
struct Intake {
    /// Bytes held when the append began.
    start: u64,
    /// Bytes still to skip.
    to_skip: u64,
    /// Bytes that may still be written.
    room: u64,
    received: u64,
    written: u64,
    /// Bytes gathered, not yet handed to the pipeline.
    batch: Batch,
    interruption: Option<Interruption>,
    /// The first storage failure; the append stops at it.
    failure: Option<StorageError>,
    /// Once told to stop, what may still be taken: bytes, and until when.
    drain_budget: u64,
    drain_deadline: Option<Instant>,
    last_report: Instant,
}

impl Intake {
    fn new(start: u64, skip: u64, limit: u64) -> Self {
        Intake {
            start,
            to_skip: skip,
            room: limit,
            received: 0,
            written: 0,
            batch: Batch::default(),
            interruption: None,
            failure: None,
            drain_budget: DRAIN_LIMIT,
            drain_deadline: None,
            last_report: Instant::now(),
        }
    }

    /// Counts a frame, sets apart what is to be skipped and cuts what
    /// exceeds the limit (an overrun); returns the skipped bytes and the
    /// bytes to write.
    fn accept(&mut self, mut bytes: Bytes) -> (Bytes, Bytes) {
        if self.interruption.is_some() {
            self.drain_budget = self.drain_budget.saturating_sub(bytes.len() as u64);
        }
        self.received += bytes.len() as u64;
        let skipped = self.to_skip.min(bytes.len() as u64);
        self.to_skip -= skipped;
        let skipped = bytes.split_to(skipped as usize);
        if bytes.len() as u64 > self.room {
            bytes.truncate(self.room as usize);
            self.interruption = Some(Interruption::Overrun);
        }
        self.room -= bytes.len() as u64;
        self.written += bytes.len() as u64;
        (skipped, bytes)
    }

    /// Gives back the last `len` bytes counted as written (a quota cut them).
    fn unwrite(&mut self, len: u64) {
        self.written -= len;
        self.room += len;
    }

    /// Hands the batch gathered so far to the pipeline; false (the failure
    /// kept) if storage failed.
    async fn submit(&mut self, pipeline: &mut Pipeline) -> bool {
        match pipeline.submit(self.batch.take()).await {
            Ok(()) => true,
            Err(error) => {
                self.failure = Some(error);
                false
            }
        }
    }

    /// The next frame of the body. Once told to stop, takes only what has
    /// already arrived (a dying connection's last bytes are still worth
    /// keeping), up to a bound; a body that pauses has what it gathered
    /// written, so that its share of the memory budget does not sit idle.
    async fn next_frame<S, E>(
        &mut self,
        body: &mut S,
        pipeline: &mut Pipeline,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Frame
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        let frame = if self.interruption.is_some() {
            let deadline = *self
                .drain_deadline
                .get_or_insert_with(|| Instant::now() + DRAIN_TIME);
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(frame) if self.drain_budget > 0 => frame,
                _ => return Frame::End,
            }
        } else {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.interruption = Some(if shutdown.is_cancelled() {
                        Interruption::ShuttingDown
                    } else {
                        Interruption::Superseded
                    });
                    return Frame::Again;
                }
                frame = body.next() => frame,
                () = tokio::time::sleep(IDLE_FLUSH), if !self.batch.is_empty() => {
                    return if self.submit(pipeline).await {
                        Frame::Again
                    } else {
                        Frame::End
                    };
                }
            }
        };
        match frame {
            None => Frame::End,
            Some(Err(error)) => {
                self.interruption
                    .get_or_insert(Interruption::Body(error.to_string()));
                Frame::End
            }
            Some(Ok(bytes)) => Frame::Bytes(bytes),
        }
    }

    /// Adds bytes to the batch with their share of the body memory budget.
    /// Short of memory, writes what this body gathered first (its share
    /// comes back once written), then waits. False if storage failed.
    async fn gather(&mut self, bytes: Bytes, pipeline: &mut Pipeline, budget: &BodyMemory) -> bool {
        let memory = match budget.try_take(bytes.len()) {
            Some(memory) => Some(memory),
            None => {
                if !self.batch.is_empty() && !self.submit(pipeline).await {
                    return false;
                }
                budget.take(bytes.len()).await
            }
        };
        self.batch.push(bytes, memory);
        true
    }
}

/// The step in which an upload of undeclared length counts bytes against
/// the quotas ahead of writing them (one catalog call per step).
const RESERVE_STEP: u64 = 1 << 20;

/// What an upload of undeclared length counts against its namespace's
/// quotas (a declared length was counted whole when it was declared):
/// `counted` bytes so far, raised ahead of writing in steps of
/// [`RESERVE_STEP`], and brought down to the bytes held at the end.
struct Reservation {
    catalog: Arc<dyn crate::catalog::Catalog>,
    id: tenax_protocol::UploadId,
    namespace: tenax_protocol::Namespace,
    publishes: bool,
    counted: u64,
}

impl Reservation {
    /// For `record`, holding `held` bytes; `None` if its length is declared.
    fn of(
        catalog: &Arc<dyn crate::catalog::Catalog>,
        record: &crate::record::UploadRecord,
        held: u64,
    ) -> Option<Self> {
        record.total.is_none().then(|| Reservation {
            catalog: Arc::clone(catalog),
            id: record.id,
            namespace: record.namespace.clone(),
            publishes: record.name.is_some(),
            counted: held,
        })
    }

    /// Counts the bytes accepted so far (`bytes` the last of them) before
    /// they are written. Past a quota, `bytes` is cut to what was counted
    /// and the quota error returned.
    async fn count(&mut self, intake: &mut Intake, bytes: &mut Bytes) -> Result<(), Error> {
        let needed = intake.start + intake.written;
        if needed <= self.counted {
            return Ok(());
        }
        let mut refused = None;
        for ask in [needed.next_multiple_of(RESERVE_STEP), needed] {
            match self.declare(ask).await {
                Ok(()) => {
                    self.counted = ask;
                    return Ok(());
                }
                Err(error @ Error::Quota(_)) => refused = Some(error),
                Err(other) => {
                    refused = Some(other);
                    break;
                }
            }
        }
        // What was counted before may still be written.
        let excess = (needed - self.counted).min(bytes.len() as u64);
        bytes.truncate(bytes.len() - excess as usize);
        intake.unwrite(excess);
        Err(refused.unwrap_or(Error::Complete))
    }

    /// Counts what is held, not what was set aside. Giving back never
    /// exceeds a quota; a failure here only leaves the count higher.
    async fn settle(self, held: u64) {
        if self.counted > held {
            let _ = self.declare(held).await;
        }
    }

    async fn declare(&self, size: u64) -> Result<(), Error> {
        self.catalog
            .declare(self.id, &self.namespace, size, self.publishes)
            .await
    }
}

/// The bytes an append skips because the upload holds them already (a
/// client resending them), compared with the bytes held there, read back
/// from storage as the body delivers them: two clients writing one upload
/// by name would otherwise make a file of both.
struct Overlap {
    held: crate::storage::ByteStream,
    /// Held bytes read, not yet compared.
    pending: Bytes,
    at: u64,
    len: u64,
}

impl Overlap {
    async fn open(
        storage: &dyn crate::storage::Storage,
        record: &crate::record::UploadRecord,
        range: Range<u64>,
    ) -> Result<Self, Error> {
        let (at, len) = (range.start, range.end - range.start);
        Ok(Overlap {
            held: storage.read(record, range).await?,
            pending: Bytes::new(),
            at,
            len,
        })
    }

    /// Compares the next `sent` bytes with the held ones.
    async fn compare(&mut self, mut sent: &[u8]) -> Result<(), Error> {
        let mismatch = Error::OverlapMismatch {
            at: self.at,
            len: self.len,
        };
        while !sent.is_empty() {
            if self.pending.is_empty() {
                self.pending = match self.held.next().await {
                    Some(Ok(bytes)) => bytes,
                    Some(Err(error)) => return Err(StorageError::Io(error).into()),
                    None => return Err(mismatch),
                };
                continue;
            }
            let n = self.pending.len().min(sent.len());
            if self.pending[..n] != sent[..n] {
                return Err(mismatch);
            }
            let _ = self.pending.split_to(n);
            sent = &sent[n..];
        }
        Ok(())
    }
}

/// What [`Intake::next_frame`] found.
enum Frame {
    /// Body bytes.
    Bytes(Bytes),
    /// Nothing to take yet (told to stop, or an idle batch written): ask again.
    Again,
    /// The body ended, failed, or may no longer be read.
    End,
}

impl Lease {
    /// Appends a body at the current offset, as `options` say: skips its
    /// first `skip` bytes (already held), then writes at most `limit`
    /// bytes. Everything written is durable when this returns, also when
    /// the body fails half-way or a newer request takes the upload over.
    pub async fn append<S, E>(
        &mut self,
        body: S,
        options: AppendOptions<'_>,
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        let AppendOptions {
            skip,
            limit,
            check,
            mut progress,
        } = options;
        match check {
            None => {
                self.receive(body, skip, limit, None, progress.as_mut())
                    .await
            }
            Some(check) => self.append_staged(body, skip, limit, check).await,
        }
    }

    /// A checked append: the chunk is staged, verified by `check`, and kept
    /// only when it is valid and whole (see [`AppendOptions::check`]).
    async fn append_staged<S, E>(
        &mut self,
        body: S,
        skip: u64,
        limit: u64,
        mut check: Box<dyn ChunkCheck>,
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        let from = self.loaded.held;
        let mut record = self.loaded.record.clone();
        record.staged_from = Some(from);
        self.engine.inner.storage.put_record(&record).await?;
        self.loaded.record = record;
        let appended = self
            .receive(body, skip, limit, Some(&mut *check), None)
            .await;
        let whole = matches!(&appended, Ok(outcome) if outcome.interruption.is_none());
        let verdict = if whole { check.verify() } else { Ok(()) };
        let keep = whole && verdict.is_ok();
        if !keep {
            self.truncate(from).await?;
        }
        let mut record = self.loaded.record.clone();
        record.staged_from = None;
        self.engine.inner.storage.put_record(&record).await?;
        self.loaded.record = record;
        if keep
            && self
                .engine
                .inner
                .hooks
                .progress_due(self.id(), self.loaded.held)
        {
            self.announce_progress(self.loaded.held).await?;
        }
        match appended {
            Ok(outcome) if keep => Ok(outcome),
            Ok(outcome) if !whole => Ok(AppendOutcome {
                written: 0,
                ..outcome
            }),
            Ok(_) => Err(verdict.err().unwrap_or(Error::ChecksumMismatch)),
            Err(error) => Err(error),
        }
    }

    /// Streams the body into storage: every appended byte also goes to
    /// `check`, if any; progress is reported as `progress` says.
    async fn receive<S, E>(
        &mut self,
        mut body: S,
        skip: u64,
        limit: u64,
        mut check: Option<&mut dyn ChunkCheck>,
        mut progress: Option<&mut Progress<'_>>,
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        let held = self.loaded.held;
        if skip > held {
            return Err(Error::OverlapMismatch { at: 0, len: skip });
        }
        let engine = self.engine.clone();
        let inner = &engine.inner;
        let mut overlap = if skip > 0 && matches!(self.loaded.record.status, Status::Active) {
            let range = held - skip..held;
            Some(Overlap::open(inner.storage.as_ref(), &self.loaded.record, range).await?)
        } else {
            None
        };
        let mut pipeline = self.begin().await?;
        let mut intake = Intake::new(held, skip, limit);
        let mut reservation = Reservation::of(&inner.catalog, &self.loaded.record, held);
        // Why the append stopped on its own account, answered once what
        // arrived is settled.
        let mut refusal = None;
        loop {
            let frame = intake
                .next_frame(&mut body, &mut pipeline, &self.token, &inner.shutdown)
                .await;
            let (skipped, mut bytes) = match frame {
                Frame::Bytes(bytes) => intake.accept(bytes),
                Frame::Again => continue,
                Frame::End => break,
            };
            if let Some(overlap) = overlap.as_mut()
                && !skipped.is_empty()
                && let Err(error) = overlap.compare(&skipped).await
            {
                refusal = Some(error);
                break;
            }
            if let Some(reservation) = reservation.as_mut()
                && !bytes.is_empty()
                && let Err(error) = reservation.count(&mut intake, &mut bytes).await
            {
                refusal = Some(error);
            }
            if let Some(check) = check.as_deref_mut() {
                check.update(&bytes);
            }
            if !bytes.is_empty()
                && !intake
                    .gather(bytes, &mut pipeline, &inner.body_memory)
                    .await
            {
                break;
            }
            if intake.batch.len >= BATCH
                && !self
                    .flush(&mut intake, &mut pipeline, progress.as_deref_mut())
                    .await?
            {
                break;
            }
            if intake.interruption == Some(Interruption::Overrun) || refusal.is_some() {
                break;
            }
        }
        let outcome = self.settle(intake, pipeline).await;
        if let Some(reservation) = reservation {
            reservation.settle(self.loaded.held).await;
        }
        match refusal {
            Some(error) => outcome.and(Err(error)),
            None => outcome,
        }
    }
    /// Checks that the upload takes bytes and opens its data and the
    /// pipeline; the upload counts as being written (`dirty`) from here on.
    async fn begin(&mut self) -> Result<Pipeline, Error> {
        if !matches!(self.loaded.record.status, Status::Active) {
            return Err(Error::Complete);
        }
        let writer = match self.loaded.append.take() {
            Some(writer) => writer,
            None => {
                self.engine
                    .inner
                    .storage
                    .append(self.loaded.record.id, self.loaded.held)
                    .await?
            }
        };
        self.loaded.dirty = true;
        let held = self.loaded.held;
        let hasher = match self.loaded.hasher.take() {
            Some(hasher) if hasher.fed() == held => Some(hasher),
            _ if held == 0 => Some(Hasher::start(self.engine.new_digests(&self.loaded.record))),
            _ => None,
        };
        Ok(Pipeline::new(writer, hasher, Arc::clone(&self.slot)))
    }

    /// A full batch: hands it to the pipeline, then makes what arrived
    /// durable when a progress report or a progress event is due. False if
    /// storage failed.
    async fn flush(
        &mut self,
        intake: &mut Intake,
        pipeline: &mut Pipeline,
        progress: Option<&mut Progress<'_>>,
    ) -> Result<bool, Error> {
        if !intake.submit(pipeline).await {
            return Ok(false);
        }
        // No progress is announced for a checked chunk (nor reported:
        // `append` gives it none): its bytes are not accepted yet.
        let staged = self.loaded.record.staged_from.is_some();
        if let Some(progress) = progress
            && intake.last_report.elapsed() >= progress.every
        {
            intake.last_report = Instant::now();
            match pipeline.sync().await {
                Ok(held) => {
                    self.slot.acknowledged.store(held, Ordering::Release);
                    (progress.report)(held);
                }
                Err(error) => {
                    intake.failure = Some(error);
                    return Ok(false);
                }
            }
        }
        // A long body is announced while it streams, too.
        if !staged
            && self
                .engine
                .inner
                .hooks
                .progress_due(self.id(), intake.start + intake.written)
        {
            match pipeline.sync().await {
                Ok(held) => {
                    self.slot.acknowledged.store(held, Ordering::Release);
                    self.announce_progress(held).await?;
                }
                Err(error) => {
                    intake.failure = Some(error);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Whatever happened, makes what reached the data durable and counts
    /// it: the durable length is what the lease holds and acknowledges.
    async fn settle(
        &mut self,
        mut intake: Intake,
        pipeline: Pipeline,
    ) -> Result<AppendOutcome, Error> {
        let last = if intake.failure.is_none() {
            intake.batch.take()
        } else {
            Batch::default()
        };
        let (writer, hasher, unwritten, synced) = pipeline.finish(last).await;
        let failure = intake.failure.or(unwritten);
        let held = synced?;
        let writer =
            writer.ok_or_else(|| StorageError::Io(std::io::Error::other("writer lost")))?;
        self.loaded.hasher = hasher.filter(|hasher| hasher.fed() == held);
        self.loaded.held = held;
        self.slot.acknowledged.store(held, Ordering::Release);
        // A writer that failed may have written part of a batch: the next
        // append opens the data again, at the durable length.
        if failure.is_none() {
            self.loaded.append = Some(writer);
        }
        self.loaded.dirty = false;
        // Activity, precise in memory (what the collector and the lease
        // look at), persisted at most every `activity_granularity`.
        let at = now();
        self.loaded.record.updated_at = self.loaded.record.updated_at.max(at);
        if let Some(error) = failure {
            return Err(error.into());
        }
        let granularity = super::expiry::activity_granularity(self.engine.inner.config.upload_ttl);
        if self.loaded.persisted_at + granularity < at {
            self.engine
                .inner
                .storage
                .put_record(&self.loaded.record)
                .await?;
            self.loaded.persisted_at = at;
        }
        let (written, received, interruption) =
            (intake.written, intake.received, intake.interruption);
        if written > 0
            && self.loaded.record.staged_from.is_none()
            && self.engine.inner.hooks.progress_due(self.id(), held)
        {
            self.announce_progress(held).await?;
        }
        tracing::debug!(id = %self.id(), written, held, ?interruption, "append");
        Ok(AppendOutcome {
            written,
            received,
            interruption,
        })
    }

    /// Compares the first bytes of `body` with the bytes held in `range`
    /// (a client resending a chunk the upload holds whole), writing
    /// nothing: [`Error::OverlapMismatch`] when they differ. A body that
    /// ends or fails early is compared as far as it went.
    pub async fn compare_held<S, E>(&mut self, mut body: S, range: Range<u64>) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        if range.end > self.loaded.held || range.start > range.end {
            return Err(Error::OverlapMismatch {
                at: range.start,
                len: range.end.saturating_sub(range.start),
            });
        }
        let mut left = range.end - range.start;
        let storage = &self.engine.inner.storage;
        let mut overlap = Overlap::open(storage.as_ref(), &self.loaded.record, range).await?;
        while left > 0 {
            let Some(Ok(mut bytes)) = body.next().await else {
                break;
            };
            bytes.truncate(left.min(bytes.len() as u64) as usize);
            left -= bytes.len() as u64;
            overlap.compare(&bytes).await?;
        }
        Ok(())
    }

    /// Records a progress event: `held` bytes are durable.
    async fn announce_progress(&mut self, held: u64) -> Result<(), Error> {
        let event = Event::new(EventKind::Progress, &self.loaded.record, held, now());
        let hooks = &self.engine.inner.hooks;
        hooks.prepare(&event).await.map_err(outbox_error)?;
        hooks.commit(&event.id).await.map_err(outbox_error)
    }
}
