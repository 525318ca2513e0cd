//! The upload engine: one writer per upload, durable appends, finalisation.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tenax_protocol::{FileName, Namespace, UploadId};
use thiserror::Error;
use tokio::sync::{OwnedMappedMutexGuard, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, LocalCatalog, PublishedFile, Taken};
use crate::digest::Digests;
use crate::events::{Event, EventKind, HookError, Hooks, NoHooks, event_id};
use crate::hasher::Hasher;
use crate::quota::{Quota, QuotaExceeded, Usage};
use crate::record::{Concat, FileKey, FinalInfo, NewUpload, Status, UploadRecord};
use crate::storage::{Append, Storage, StorageError};

/// Bytes gathered from the body before they go to storage in one batch.
/// Two batches are in memory per upload at most: one being written, one filling.
const BATCH: usize = 1 << 20;

/// After a request is told to stop (a newer one wants the upload), it still
/// takes what its connection delivers for this long, up to `DRAIN_LIMIT`
/// bytes: a client that lost its link asks for the offset as soon as it is
/// back, often before the server has read the dying connection's last
/// bytes, and those bytes are worth keeping rather than sending again.
const DRAIN_TIME: Duration = Duration::from_millis(300);
const DRAIN_LIMIT: u64 = 16 << 20;

/// How often an active upload's record is rewritten just to refresh its
/// `updated_at` (which drives expiry), so that appends do not pay for it.
const ACTIVITY_GRANULARITY: u64 = 3600;

/// The names of the engine's metrics (through the `metrics` facade; the
/// binary installs the recorder).
pub mod metric {
    /// Gauge: uploads in progress (every upload resource, tus parts included).
    pub const ACTIVE: &str = "tenax_uploads_active";
    /// Counter: uploads completed.
    pub const COMPLETED: &str = "tenax_uploads_completed_total";
    /// Counter: uploads found expired.
    pub const EXPIRED: &str = "tenax_uploads_expired_total";
    /// Counter: uploads cancelled (terminated).
    pub const CANCELLED: &str = "tenax_uploads_cancelled_total";
    /// Histogram: seconds taken by each data fsync.
    pub const FSYNC_SECONDS: &str = "tenax_fsync_seconds";
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// An active upload that has not changed for this long is expired.
    pub upload_ttl: Duration,
    /// How long the record of an expired upload is kept (so that tus
    /// answers 410 rather than 404) before the collector removes it.
    pub expired_retention: Duration,
    /// Whether completed uploads of the seed dialect carry an MD5 (GCS's
    /// `md5Hash`; other dialects never compute one). It is the costliest
    /// digest and caps a single upload's speed (~0.7 GB/s here).
    pub md5: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            upload_ttl: Duration::from_secs(7 * 24 * 3600),
            expired_retention: Duration::from_secs(7 * 24 * 3600),
            md5: true,
        }
    }
}

/// Engine failures, by meaning.
#[derive(Debug, Error)]
pub enum Error {
    /// No upload has this id (or name).
    #[error("no such upload")]
    NotFound,
    /// The upload was cancelled.
    #[error("the upload was cancelled")]
    Gone,
    /// The upload was idle for longer than the configured time to live.
    #[error("the upload expired")]
    Expired,
    /// The operation needs an active upload, and this one is complete.
    #[error("the upload is already complete")]
    Complete,
    /// Finalisation was asked for before every byte arrived.
    #[error("the upload holds {held} of {total} bytes")]
    Incomplete {
        /// Bytes held.
        held: u64,
        /// The total size.
        total: u64,
    },
    /// A chunk's checksum did not match; the chunk was discarded.
    #[error("the chunk's checksum does not match; it was discarded")]
    ChecksumMismatch,
    /// A concatenation names an upload that is not a finished partial upload.
    #[error("upload {0} is not a finished partial upload")]
    NotConcatenable(UploadId),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The namespace's quota does not allow it.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The pre-create hook refused the upload or could not be asked.
    #[error(transparent)]
    Hook(#[from] HookError),
}

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

/// Verifies one chunk as it is appended (tus checksums): fed every byte
/// the chunk appends, asked for a verdict once the body has ended.
pub trait ChunkCheck: Send {
    /// Feeds the next appended bytes.
    fn update(&mut self, bytes: &[u8]);
    /// Whether the chunk is valid.
    fn verify(self: Box<Self>) -> bool;
}

/// What one pass of the expiry collector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Active uploads found idle past the time to live: marked expired,
    /// their data removed.
    pub expired: usize,
    /// Records of expired uploads removed after the retention period.
    pub removed: usize,
    /// Uploads due for collection but leased (receiving) right now: left
    /// alone until a later pass.
    pub busy: usize,
    /// Uploads whose collection failed (logged; retried at the next pass).
    pub failed: usize,
}

/// What the collector did with one upload.
enum Collected {
    Nothing,
    Expired,
    Removed,
    Busy,
}

/// A read-only view of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stored record.
    pub record: UploadRecord,
    /// Bytes durably held.
    pub held: u64,
}

/// The engine. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    config: EngineConfig,
    slots: Mutex<HashMap<UploadId, Arc<Slot>>>,
    /// Names, published files, quotas, leases: this process's own, or
    /// shared with other nodes.
    catalog: Arc<dyn Catalog>,
    /// The namespace of each upload asked about (it never changes).
    owners: Mutex<HashMap<UploadId, Namespace>>,
    shutdown: CancellationToken,
    /// When the engine opened (seconds since the epoch): uploads that
    /// expired before it were never counted as active.
    opened_at: u64,
    /// Where upload events go (completion hooks).
    hooks: Arc<dyn Hooks>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("storage", &self.inner.storage)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Per-upload exclusion: the mutex is the one-writer rule, the token lets a
/// newer request stop the holder.
struct Slot {
    state: Arc<tokio::sync::Mutex<Option<Loaded>>>,
    holder: Mutex<Option<CancellationToken>>,
    /// Bytes made durable and acknowledged, readable without the lock (for
    /// downloads of an upload in progress); `u64::MAX` until known.
    acknowledged: AtomicU64,
    /// Set once the upload has been found expired (counted once).
    expired: AtomicBool,
    /// The storage write of an append whose request was dropped half-way:
    /// it still runs, and the next lease waits for it before reading the
    /// upload's length (found by the `engine_model` fuzz target: otherwise
    /// its bytes landed after the reload, past a later truncation).
    orphan: Mutex<Option<tokio::task::JoinHandle<Flushed>>>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            state: Arc::default(),
            holder: Mutex::default(),
            acknowledged: AtomicU64::new(u64::MAX),
            expired: AtomicBool::new(false),
            orphan: Mutex::default(),
        }
    }
}

struct Loaded {
    record: UploadRecord,
    held: u64,
    /// The digests of `0..held`, running behind the appends; `None` when
    /// they cannot follow (after a restart or a discarded chunk) and are
    /// computed from storage at finalisation instead.
    hasher: Option<Hasher>,
    /// The open data, kept between requests of a live upload.
    append: Option<Box<dyn Append>>,
    /// Set while an append runs: if its future is dropped half-way, the
    /// in-memory state is stale and the next lease reloads it.
    dirty: bool,
    /// The `updated_at` last written to storage. `record.updated_at` is
    /// refreshed in memory by every append (the collector reads it), but
    /// rewritten to storage only every `ACTIVITY_GRANULARITY`.
    persisted_at: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id() -> Result<UploadId, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| StorageError::Io(std::io::Error::other(error.to_string())))?;
    Ok(UploadId::from_bytes(bytes))
}

/// An outbox failure as a storage one (it lives in the data directory),
/// never as "not found".
fn outbox_error(error: std::io::Error) -> Error {
    match StorageError::from(error) {
        StorageError::NotFound => {
            StorageError::Io(std::io::Error::other("the event outbox vanished"))
        }
        other => other,
    }
    .into()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// Opens an engine over a storage backend and indexes its uploads.
    pub async fn open(storage: Arc<dyn Storage>, config: EngineConfig) -> Result<Self, Error> {
        Engine::open_with_hooks(storage, config, Arc::new(NoHooks)).await
    }

    /// Like [`Engine::open`], with upload events going to `hooks`, which
    /// first resolves the events a crash left pending.
    pub async fn open_with_hooks(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Self, Error> {
        Engine::open_with_catalog(storage, config, hooks, Arc::new(LocalCatalog::new())).await
    }

    /// Like [`Engine::open_with_hooks`], sharing names, published files,
    /// quotas and leases through `catalog` (several nodes on one object
    /// store share one).
    pub async fn open_with_catalog(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
        hooks: Arc<dyn Hooks>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, Error> {
        let records = storage.list().await?;
        hooks.recover(&records).await.map_err(outbox_error)?;
        let opened_at = now();
        let live = records
            .iter()
            .filter(|record| {
                matches!(record.status, Status::Active)
                    && record.updated_at + config.upload_ttl.as_secs() >= opened_at
            })
            .count();
        metrics::gauge!(metric::ACTIVE).increment(live as f64);
        catalog.restore(&records);
        let complete: std::collections::HashSet<UploadId> = records
            .iter()
            .filter(|record| matches!(record.status, Status::Complete(_)))
            .map(|record| record.id)
            .collect();
        let ready_finals: Vec<UploadId> = records
            .iter()
            .filter(|record| match (&record.status, &record.concat) {
                (Status::Active, Some(Concat::Final(parts))) => {
                    parts.iter().all(|part| complete.contains(part))
                }
                _ => false,
            })
            .map(|record| record.id)
            .collect();
        let engine = Engine {
            inner: Arc::new(Inner {
                storage,
                config,
                slots: Mutex::default(),
                catalog: Arc::clone(&catalog),
                owners: Mutex::default(),
                shutdown: CancellationToken::new(),
                opened_at,
                hooks,
            }),
        };
        let weak = Arc::downgrade(&engine.inner);
        catalog.on_taken_elsewhere(Arc::new(move |id| {
            if let Some(inner) = weak.upgrade() {
                Engine { inner }.taken_elsewhere(id);
            }
        }));
        // Final uploads whose parts all completed before a restart.
        for id in ready_finals {
            engine.spawn_assembly(id);
        }
        Ok(engine)
    }

    /// Another node took the upload: the request writing it here stops
    /// (its commits would be refused anyway). What this process remembers
    /// of the upload is dropped at its next lease here, which the catalog
    /// reports as not fresh.
    fn taken_elsewhere(&self, id: UploadId) {
        let slot = lock(&self.inner.slots).get(&id).cloned();
        if let Some(slot) = slot
            && let Some(holder) = lock(&slot.holder).as_ref()
        {
            holder.cancel();
        }
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// Creates an upload, once the pre-create hook has accepted it (and
    /// perhaps renamed it or changed its metadata).
    pub async fn create(&self, new: NewUpload) -> Result<UploadId, Error> {
        self.create_hooked(new, true).await
    }

    /// [`Engine::create`]; a pre-create hook may rename only when `rename`.
    async fn create_hooked(&self, mut new: NewUpload, rename: bool) -> Result<UploadId, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let asked_name = new.name.clone();
        self.inner.hooks.pre_create(&mut new).await?;
        if !rename && new.name != asked_name {
            // The name is how this upload is found again (`?file=NAME`).
            tracing::warn!(name = ?asked_name, "the pre-create hook cannot rename an upload addressed by its name");
            new.name = asked_name;
        }
        let created_at = now();
        let id = new_id()?;
        let catalog = &self.inner.catalog;
        catalog
            .admit(
                id,
                &new.namespace,
                new.total.unwrap_or(0),
                new.name.is_some(),
            )
            .await?;
        let record = UploadRecord {
            id,
            namespace: new.namespace,
            name: new.name,
            total: new.total,
            content_type: new.content_type,
            metadata: new.metadata,
            concat: new.concat,
            md5: new.md5,
            staged_from: None,
            created_at,
            updated_at: created_at,
            status: Status::Active,
        };
        let event = Event::new(EventKind::Created, &record, 0, created_at);
        if let Err(error) = self.inner.hooks.prepare(&event).await {
            catalog.retire(id).await?;
            return Err(outbox_error(error));
        }
        if let Err(error) = self.inner.storage.create(&record).await {
            catalog.retire(id).await?;
            return Err(error.into());
        }
        self.inner
            .hooks
            .commit(&event.id)
            .await
            .map_err(outbox_error)?;
        metrics::gauge!(metric::ACTIVE).increment(1);
        if let Some(file) = record.file_key() {
            catalog.set_current(&file, record.id).await?;
        }
        tracing::info!(id = %record.id, namespace = %record.namespace, name = ?record.name.as_ref().map(FileName::as_str), total = ?record.total, "upload created");
        Ok(record.id)
    }

    /// Takes the upload exclusively. A request holding it is told to stop
    /// (it keeps what it wrote) and this call waits until it has.
    pub async fn lease(&self, id: UploadId) -> Result<Lease, Error> {
        let slot = self.slot(id);
        let token = self.inner.shutdown.child_token();
        if let Some(older) = lock(&slot.holder).replace(token.clone()) {
            older.cancel();
        }
        let guard = Arc::clone(&slot.state).lock_owned().await;
        let taken = self.inner.catalog.take(id).await?;
        self.admit(id, slot, guard, token, taken).await
    }

    /// Takes the upload only if nobody holds it: `Ok(None)` when a request
    /// has it (or is waiting for it), without disturbing that request.
    /// Unlike [`Engine::lease`], a newer lease does not tell this one to
    /// stop; it waits for it to be dropped, so hold it briefly.
    pub async fn try_lease(&self, id: UploadId) -> Result<Option<Lease>, Error> {
        let slot = self.slot(id);
        let Ok(guard) = Arc::clone(&slot.state).try_lock_owned() else {
            return Ok(None);
        };
        let Some(taken) = self.inner.catalog.try_take(id).await? else {
            return Ok(None);
        };
        let token = self.inner.shutdown.child_token();
        self.admit(id, slot, guard, token, taken).await.map(Some)
    }

    fn slot(&self, id: UploadId) -> Arc<Slot> {
        Arc::clone(lock(&self.inner.slots).entry(id).or_default())
    }

    /// Loads the upload under its lock if needed and checks it can be leased.
    async fn admit(
        &self,
        id: UploadId,
        slot: Arc<Slot>,
        mut guard: OwnedMutexGuard<Option<Loaded>>,
        token: CancellationToken,
        taken: Taken,
    ) -> Result<Lease, Error> {
        // Whichever way this returns, the catalog hears when the upload is let go.
        let release = Release {
            catalog: Arc::clone(&self.inner.catalog),
            id,
        };
        if !taken.fresh {
            // Another node wrote the upload since: what is kept here
            // (the open data, the running digests) describes the past.
            *guard = None;
        }
        if guard.as_ref().is_none_or(|loaded| loaded.dirty) {
            let orphan = lock(&slot.orphan).take();
            if let Some(orphan) = orphan {
                // Its outcome does not matter: the length read below counts
                // what it wrote.
                let _ = orphan.await;
            }
            let mut stored = self.load(id).await?;
            self.publish(&mut stored.record).await?;
            if let Some(from) = stored.record.staged_from.take() {
                // A checksummed chunk was cut short by a crash: it was never
                // verified, so it goes.
                self.inner.storage.truncate(id, from).await?;
                self.inner.storage.put_record(&stored.record).await?;
                stored.held = from;
            }
            *guard = Some(Loaded {
                persisted_at: stored.record.updated_at,
                record: stored.record,
                held: stored.held,
                hasher: None,
                append: None,
                dirty: false,
            });
        }
        let guard = OwnedMutexGuard::try_map(guard, Option::as_mut).map_err(|_| Error::NotFound)?;
        slot.acknowledged.store(guard.held, Ordering::Release);
        let refused = match &guard.record.status {
            Status::Cancelled => Some(Error::Gone),
            Status::Expired => Some(Error::Expired),
            Status::Active if self.is_idle(guard.record.updated_at, now()) => {
                self.count_expired(&slot, guard.record.updated_at);
                Some(Error::Expired)
            }
            _ => None,
        };
        if let Some(error) = refused {
            return Err(error);
        }
        Ok(Lease {
            engine: self.clone(),
            loaded: guard,
            slot,
            token,
            _release: release,
        })
    }

    /// Whether an active upload last active at `updated_at` has expired at `at`.
    fn is_idle(&self, updated_at: u64, at: u64) -> bool {
        updated_at.saturating_add(self.inner.config.upload_ttl.as_secs()) < at
    }

    /// Counts an upload found expired, once (and not at all if it expired
    /// before the engine opened: it was never counted as active).
    fn count_expired(&self, slot: &Slot, updated_at: u64) {
        let expiry = updated_at.saturating_add(self.inner.config.upload_ttl.as_secs());
        if expiry >= self.inner.opened_at && !slot.expired.swap(true, Ordering::AcqRel) {
            metrics::counter!(metric::EXPIRED).increment(1);
            metrics::gauge!(metric::ACTIVE).decrement(1);
        }
    }

    /// One pass of the expiry collector. Every active upload idle for
    /// longer than the time to live (by its in-memory last activity when it
    /// is loaded, else by its record) is marked [`Status::Expired`] and its
    /// data removed; the record of an upload expired for longer than
    /// `expired_retention` is removed. An upload that is leased right now
    /// (receiving, or being asked about) is skipped: it is not idle.
    pub async fn collect_expired(&self) -> Result<CollectReport, Error> {
        let ttl = self.inner.config.upload_ttl.as_secs();
        let retention = self.inner.config.expired_retention.as_secs();
        let mut report = CollectReport::default();
        for record in self.inner.storage.list().await? {
            // The stored `updated_at` is never newer than the in-memory one,
            // so an upload whose record is not due is not due at all.
            let due = match record.status {
                Status::Active => record.updated_at.saturating_add(ttl) < now(),
                Status::Expired => record.updated_at.saturating_add(retention) < now(),
                Status::Complete(_) | Status::Cancelled => false,
            };
            if !due {
                continue;
            }
            match self.collect_one(record.id).await {
                Ok(Collected::Nothing) => {}
                Ok(Collected::Expired) => report.expired += 1,
                Ok(Collected::Removed) => report.removed += 1,
                Ok(Collected::Busy) => report.busy += 1,
                Err(error) => {
                    tracing::warn!(id = %record.id, %error, "collecting an expired upload failed");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn collect_one(&self, id: UploadId) -> Result<Collected, Error> {
        let slot = self.slot(id);
        let Ok(mut guard) = Arc::clone(&slot.state).try_lock_owned() else {
            return Ok(Collected::Busy);
        };
        let Some(taken) = self.inner.catalog.try_take(id).await? else {
            return Ok(Collected::Busy);
        };
        let _release = Release {
            catalog: Arc::clone(&self.inner.catalog),
            id,
        };
        if !taken.fresh {
            *guard = None;
        }
        let record = match guard.as_ref().filter(|loaded| !loaded.dirty) {
            Some(loaded) => loaded.record.clone(),
            None => match self.inner.storage.load(id).await {
                Ok(stored) => stored.record,
                Err(StorageError::NotFound) => return Ok(Collected::Nothing),
                Err(error) => return Err(error.into()),
            },
        };
        let at = now();
        match record.status {
            Status::Active if self.is_idle(record.updated_at, at) => {
                // Whatever fails below, the next lease reloads from storage.
                // This also closes the data an idle upload kept open.
                *guard = None;
                let last_active = record.updated_at;
                let mut expired = record;
                expired.status = Status::Expired;
                expired.updated_at = at;
                expired.staged_from = None;
                let event = Event::new(EventKind::Expired, &expired, 0, at);
                self.inner
                    .hooks
                    .prepare(&event)
                    .await
                    .map_err(outbox_error)?;
                // The record first: a crash before the data goes leaves a
                // tombstone whose data the removal discards again.
                self.inner.storage.put_record(&expired).await?;
                self.inner.storage.discard(id).await?;
                self.inner
                    .hooks
                    .commit(&event.id)
                    .await
                    .map_err(outbox_error)?;
                self.inner.hooks.forget(id);
                self.count_expired(&slot, last_active);
                self.inner.catalog.retire(id).await?;
                slot.acknowledged.store(0, Ordering::Release);
                tracing::info!(%id, last_active, "upload expired");
                *guard = Some(Loaded {
                    record: expired,
                    held: 0,
                    hasher: None,
                    append: None,
                    dirty: false,
                    persisted_at: at,
                });
                Ok(Collected::Expired)
            }
            Status::Expired
                if record
                    .updated_at
                    .saturating_add(self.inner.config.expired_retention.as_secs())
                    < at =>
            {
                *guard = None;
                self.inner.storage.discard(id).await?;
                self.inner.storage.remove_record(id).await?;
                if let Some(file) = record.file_key() {
                    self.inner.catalog.forget_current(&file, id).await?;
                }
                lock(&self.inner.slots).remove(&id);
                lock(&self.inner.owners).remove(&id);
                tracing::info!(%id, "expired upload forgotten");
                Ok(Collected::Removed)
            }
            _ => Ok(Collected::Nothing),
        }
    }

    /// Runs [`Engine::collect_expired`] now and then every `every`, until
    /// the engine shuts down.
    pub fn spawn_collector(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = engine.inner.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match engine.collect_expired().await {
                    Ok(report) if report == CollectReport::default() => {}
                    Ok(report) => tracing::info!(?report, "expiry collector pass"),
                    Err(error) => tracing::warn!(%error, "expiry collector pass failed"),
                }
            }
        })
    }

    /// Takes the current upload of `name`, or creates one when there is none,
    /// when it is gone, or when `start_new` says so for the current one.
    pub async fn lease_name(
        &self,
        file: &FileKey,
        new: impl FnOnce() -> NewUpload,
        start_new: impl FnOnce(&Snapshot) -> bool,
    ) -> Result<Lease, Error> {
        let _name_lock = self.inner.catalog.lock_name(file).await?;
        let current = self.inner.catalog.current(file).await?;
        if let Some(id) = current {
            match self.lease(id).await {
                Ok(lease) if !start_new(&lease.snapshot()) => return Ok(lease),
                Ok(_) | Err(Error::NotFound | Error::Gone | Error::Expired) => {}
                Err(error) => return Err(error),
            }
        }
        let id = self
            .create_hooked(
                NewUpload {
                    namespace: file.namespace.clone(),
                    name: Some(file.name.clone()),
                    ..new()
                },
                false,
            )
            .await?;
        self.lease(id).await
    }

    /// Takes the current upload of `name`; [`Error::NotFound`] when there
    /// is none.
    pub async fn lease_current(&self, file: &FileKey) -> Result<Lease, Error> {
        let current = self.inner.catalog.current(file).await?;
        self.lease(current.ok_or(Error::NotFound)?).await
    }

    /// Creates a final upload as the concatenation of partial uploads, in
    /// order (tus concatenation). When every part is finished, the final
    /// upload is assembled and complete when this returns. With
    /// `allow_unfinished`, parts may still be in progress (tus
    /// concatenation-unfinished): the final upload is assembled as soon as
    /// the last of them completes. Nothing is created when a part is
    /// unknown, cancelled, not a partial upload, or unfinished without
    /// `allow_unfinished`.
    pub async fn concatenate(
        &self,
        parts: Vec<UploadId>,
        new: NewUpload,
        allow_unfinished: bool,
    ) -> Result<UploadId, Error> {
        let mut total = Some(0u64);
        let mut unfinished = Vec::new();
        for &part in &parts {
            // Read without a lease: a part's writer, if any, must not be stopped.
            let snapshot = self.peek(part).await?;
            if snapshot.record.namespace != new.namespace {
                return Err(Error::NotFound);
            }
            match (&snapshot.record.status, &snapshot.record.concat) {
                (Status::Complete(info), Some(Concat::Partial)) => {
                    total = total.map(|total| total + info.size);
                }
                (Status::Active, Some(Concat::Partial)) if allow_unfinished => {
                    total = total
                        .zip(snapshot.record.total)
                        .map(|(total, size)| total + size);
                    unfinished.push(part);
                }
                (Status::Cancelled, _) => return Err(Error::Gone),
                (Status::Expired, _) => return Err(Error::Expired),
                _ => return Err(Error::NotConcatenable(part)),
            }
        }
        let new = NewUpload {
            total,
            concat: Some(Concat::Final(parts)),
            ..new
        };
        let id = self.create(new).await?;
        if unfinished.is_empty() {
            self.assemble(id).await?;
        } else {
            self.inner.catalog.await_parts(id, &unfinished).await?;
        }
        Ok(id)
    }

    /// Assembles a final upload from its parts if they are all complete;
    /// returns whether the final upload is complete.
    async fn assemble(&self, id: UploadId) -> Result<bool, Error> {
        let mut lease = self.lease(id).await?;
        let Some(Concat::Final(parts)) = lease.record().concat.clone() else {
            return Ok(false);
        };
        if !matches!(lease.record().status, Status::Active) {
            return Ok(true);
        }
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            let snapshot = self.peek(part).await?;
            match &snapshot.record.status {
                Status::Complete(info) => sources.push((snapshot.record.clone(), info.size)),
                Status::Active => return Ok(false),
                Status::Cancelled => return Err(Error::Gone),
                Status::Expired => return Err(Error::Expired),
            }
        }
        if lease.held() > 0 {
            // An assembly that a crash interrupted: start it over.
            lease.truncate(0).await?;
        }
        lease
            .set_total(sources.iter().map(|(_, size)| size).sum())
            .await?;
        let storage = Arc::clone(&self.inner.storage);
        for (record, size) in sources {
            let stream = storage.read(&record, 0..size).await?;
            let outcome = lease.append(stream, 0, size).await?;
            if outcome.written != size {
                return Err(StorageError::Io(std::io::Error::other(format!(
                    "concatenation read {} of {size} bytes of {}",
                    outcome.written, record.id
                )))
                .into());
            }
        }
        lease.finalize().await?;
        Ok(true)
    }

    /// A partial upload completed: assemble the final uploads waiting for it.
    async fn part_completed(&self, part: UploadId) -> Result<(), Error> {
        for id in self.inner.catalog.part_completed(part).await? {
            // A task of its own: the part's lease is still held here.
            self.spawn_assembly(id);
        }
        Ok(())
    }

    /// Assembles a final upload in a task of its own (a plain function, so
    /// that the recursion through `finalize` is not in a future's type).
    fn spawn_assembly(&self, id: UploadId) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.assemble(id).await {
                tracing::error!(%id, %error, "assembling a final upload failed");
            }
        });
    }

    /// An upload as storage holds it; [`Error::NotFound`] for an unknown id.
    async fn load(&self, id: UploadId) -> Result<crate::storage::Stored, Error> {
        self.inner
            .storage
            .load(id)
            .await
            .map_err(|error| match error {
                StorageError::NotFound => Error::NotFound,
                other => other.into(),
            })
    }

    /// The upload's state, read from storage without taking the upload over:
    /// a writer in flight keeps writing, and `held` may already count bytes
    /// it has written but not yet acknowledged.
    pub async fn peek(&self, id: UploadId) -> Result<Snapshot, Error> {
        let stored = self.load(id).await?;
        // The data of an upload in progress may already hold bytes an
        // append in flight has written but not yet made durable: count only
        // what was acknowledged. (A complete upload's size is its record's,
        // whoever completed it.)
        let acknowledged = match stored.record.status {
            Status::Active => lock(&self.inner.slots)
                .get(&id)
                .map_or(u64::MAX, |slot| slot.acknowledged.load(Ordering::Acquire)),
            _ => u64::MAX,
        };
        Ok(Snapshot {
            held: stored.held.min(acknowledged),
            record: stored.record,
        })
    }

    /// Engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Publishes a complete upload under its name if that is not done yet,
    /// and records that it is.
    async fn publish(&self, record: &mut UploadRecord) -> Result<(), Error> {
        let Status::Complete(info) = &mut record.status else {
            return Ok(());
        };
        if info.published {
            return Ok(());
        }
        self.inner.storage.publish(record).await?;
        if let Status::Complete(info) = &mut record.status {
            info.published = true;
        }
        self.inner.storage.put_record(record).await?;
        if let (Some(file), Status::Complete(info)) = (record.file_key(), &record.status) {
            let previous = self
                .inner
                .catalog
                .publish(&file, record.id, info.size)
                .await?;
            if let Some(previous) = previous {
                self.supersede(previous).await?;
            }
        }
        // The file is in place: its completion may be announced (this also
        // releases the event of a publication a crash interrupted).
        self.inner
            .hooks
            .commit(&event_id(record.id, EventKind::Completed, 0))
            .await
            .map_err(outbox_error)?;
        Ok(())
    }

    /// Records that a completed upload no longer shows under its name, so
    /// that a restart does not show it again (found by the `engine_model`
    /// fuzz target: with completion times in seconds, a restart could pick
    /// the older of two uploads finished within a second, or bring back an
    /// older upload after the one that replaced it was cancelled).
    async fn supersede(&self, id: UploadId) -> Result<(), Error> {
        let mut stored = match self.inner.storage.load(id).await {
            Ok(stored) => stored,
            Err(StorageError::NotFound) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let Status::Complete(info) = &mut stored.record.status else {
            return Ok(());
        };
        info.superseded = true;
        self.inner.storage.put_record(&stored.record).await?;
        // A copy of the old record in memory must not be written back over
        // this one: the next lease reloads it. A request holding it right
        // now (rare: the upload is complete) may still do so.
        let slot = lock(&self.inner.slots).get(&id).cloned();
        if let Some(slot) = slot
            && let Ok(mut guard) = slot.state.try_lock()
            && let Some(loaded) = guard.as_mut()
        {
            loaded.dirty = true;
        }
        Ok(())
    }

    /// Replaces the quotas of every namespace (unlisted ones are
    /// unlimited). Uploads already admitted are not affected.
    pub fn set_quotas(&self, quotas: HashMap<Namespace, Quota>) {
        self.inner.catalog.set_quotas(quotas);
    }

    /// What a namespace uses now.
    pub async fn usage(&self, namespace: &Namespace) -> Result<Usage, Error> {
        let catalog = &self.inner.catalog;
        let (uploads_in_progress, bytes_in_progress) = catalog.in_progress(namespace).await?;
        let bytes_stored = catalog
            .published_in(namespace)
            .await?
            .iter()
            .map(|file| file.size)
            .sum();
        Ok(Usage {
            uploads_in_progress,
            bytes_in_progress,
            bytes_stored,
        })
    }

    /// The namespace an upload belongs to.
    pub async fn owner(&self, id: UploadId) -> Result<Namespace, Error> {
        if let Some(namespace) = lock(&self.inner.owners).get(&id) {
            return Ok(namespace.clone());
        }
        let namespace = self.peek(id).await?.record.namespace;
        lock(&self.inner.owners).insert(id, namespace.clone());
        Ok(namespace)
    }

    /// The completed upload whose bytes are published under `file`.
    pub async fn published(&self, file: &FileKey) -> Result<Snapshot, Error> {
        let (id, _) = self
            .inner
            .catalog
            .published(file)
            .await?
            .ok_or(Error::NotFound)?;
        let snapshot = self.peek(id).await?;
        match snapshot.record.status {
            Status::Complete(_) => Ok(snapshot),
            _ => Err(Error::NotFound),
        }
    }

    /// Every published file of a namespace: its name and the completed
    /// upload it shows, sorted by name. A name whose upload cannot be read
    /// is left out.
    pub async fn published_files(
        &self,
        namespace: &Namespace,
    ) -> Result<Vec<(FileName, Snapshot)>, Error> {
        let listed = self.inner.catalog.published_in(namespace).await?;
        let mut files = Vec::with_capacity(listed.len());
        for PublishedFile { file, upload, .. } in listed {
            if let Ok(snapshot) = self.peek(upload).await
                && matches!(snapshot.record.status, Status::Complete(_))
            {
                files.push((file.name, snapshot));
            }
        }
        Ok(files)
    }

    fn new_digests(&self, record: &UploadRecord) -> Digests {
        Digests::new(self.inner.config.md5 && record.md5)
    }

    /// Stops every append in flight (they keep what they wrote) and refuses
    /// new uploads. Requests already waiting still get their answers.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

/// Tells the catalog that this process stopped writing an upload.
struct Release {
    catalog: Arc<dyn Catalog>,
    id: UploadId,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.catalog.release(self.id);
    }
}

/// Exclusive access to one upload, held for the duration of one request.
pub struct Lease {
    engine: Engine,
    loaded: OwnedMappedMutexGuard<Option<Loaded>, Loaded>,
    slot: Arc<Slot>,
    token: CancellationToken,
    _release: Release,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.loaded.record.id)
            .field("held", &self.loaded.held)
            .finish()
    }
}

impl Lease {
    /// The upload's id.
    pub fn id(&self) -> UploadId {
        self.loaded.record.id
    }

    /// The upload's record.
    pub fn record(&self) -> &UploadRecord {
        &self.loaded.record
    }

    /// Bytes durably held.
    pub fn held(&self) -> u64 {
        self.loaded.held
    }

    /// A copy of the upload's state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            record: self.loaded.record.clone(),
            held: self.loaded.held,
        }
    }

    /// Records the total size, if it was not known. Durable on return.
    pub async fn set_total(&mut self, total: u64) -> Result<(), Error> {
        if self.loaded.record.total.is_none() {
            let record = &self.loaded.record;
            self.engine
                .inner
                .catalog
                .declare(record.id, &record.namespace, total, record.name.is_some())
                .await?;
            let mut record = self.loaded.record.clone();
            record.total = Some(total);
            record.updated_at = now();
            self.engine.inner.storage.put_record(&record).await?;
            self.loaded.record = record;
        }
        Ok(())
    }

    /// Appends a body at the current offset: skips its first `skip` bytes
    /// (already held), then writes at most `limit` bytes. Everything written
    /// is durable when this returns, also when the body fails half-way or a
    /// newer request takes the upload over.
    pub async fn append<S, E>(
        &mut self,
        body: S,
        skip: u64,
        limit: u64,
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        self.append_observed(body, skip, limit, &mut |_| {}, None)
            .await
    }

    /// Like [`Lease::append`], and about every `every` while the body
    /// streams, makes what arrived durable and calls `report` with the
    /// number of bytes held (for progress answers such as RUFH's 104).
    pub async fn append_reporting<S, E>(
        &mut self,
        body: S,
        skip: u64,
        limit: u64,
        every: Duration,
        report: &mut (dyn FnMut(u64) + Send),
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        self.append_observed(body, skip, limit, &mut |_| {}, Some((every, report)))
            .await
    }

    /// Appends a body that carries a checksum: the chunk is staged (a crash
    /// before the verdict discards it), verified by `check`, and kept only
    /// when it is valid and complete. Otherwise the upload is left exactly as
    /// it was: [`Error::ChecksumMismatch`] for a bad chunk, and an outcome
    /// with `written == 0` and the interruption for one that did not arrive whole.
    pub async fn append_checked<S, E>(
        &mut self,
        body: S,
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
            .append_observed(body, 0, limit, &mut |bytes| check.update(bytes), None)
            .await;
        let whole = matches!(&appended, Ok(outcome) if outcome.interruption.is_none());
        let keep = whole && check.verify();
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
            Ok(_) => Err(Error::ChecksumMismatch),
            Err(error) => Err(error),
        }
    }

    async fn append_observed<S, E>(
        &mut self,
        mut body: S,
        skip: u64,
        limit: u64,
        observe: &mut (dyn FnMut(&[u8]) + Send),
        mut progress: Option<(Duration, &mut (dyn FnMut(u64) + Send))>,
    ) -> Result<AppendOutcome, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: fmt::Display,
    {
        if !matches!(self.loaded.record.status, Status::Active) {
            return Err(Error::Complete);
        }
        let storage = Arc::clone(&self.engine.inner.storage);
        let writer = match self.loaded.append.take() {
            Some(writer) => writer,
            None => {
                storage
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
        let mut pipeline = Pipeline {
            writer: Some(writer),
            hasher,
            in_flight: None,
            slot: Arc::clone(&self.slot),
        };
        let (mut to_skip, mut room) = (skip, limit);
        let (mut received, mut written) = (0u64, 0u64);
        let mut batch = Batch::default();
        let mut interruption = None;
        let mut failure = None;
        // Once told to stop, take only what has already arrived (a dying
        // connection's last bytes are still worth keeping), up to a bound.
        let mut last_report = tokio::time::Instant::now();
        let mut drain_budget = DRAIN_LIMIT;
        let mut drain_deadline = None;
        loop {
            let frame = if interruption.is_some() {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_TIME);
                match tokio::time::timeout_at(deadline, body.next()).await {
                    Ok(frame) if drain_budget > 0 => frame,
                    _ => break,
                }
            } else {
                tokio::select! {
                    biased;
                    () = self.token.cancelled() => {
                        interruption = Some(if self.engine.inner.shutdown.is_cancelled() {
                            Interruption::ShuttingDown
                        } else {
                            Interruption::Superseded
                        });
                        continue;
                    }
                    frame = body.next() => frame,
                    // A body that pauses writes what it gathered, so that
                    // its share of the memory budget does not sit idle.
                    () = tokio::time::sleep(IDLE_FLUSH), if !batch.is_empty() => {
                        if let Err(error) = pipeline.submit(batch.take()).await {
                            failure = Some(error);
                            break;
                        }
                        continue;
                    }
                }
            };
            let mut bytes = match frame {
                None => break,
                Some(Err(error)) => {
                    interruption.get_or_insert(Interruption::Body(error.to_string()));
                    break;
                }
                Some(Ok(bytes)) => bytes,
            };
            if interruption.is_some() {
                drain_budget = drain_budget.saturating_sub(bytes.len() as u64);
            }
            received += bytes.len() as u64;
            let skipped = to_skip.min(bytes.len() as u64);
            to_skip -= skipped;
            let _ = bytes.split_to(skipped as usize);
            if bytes.len() as u64 > room {
                bytes.truncate(room as usize);
                interruption = Some(Interruption::Overrun);
            }
            room -= bytes.len() as u64;
            written += bytes.len() as u64;
            observe(&bytes);
            if !bytes.is_empty() {
                let memory = match BodyMemory::try_take(bytes.len()) {
                    Some(memory) => Some(memory),
                    None => {
                        // Short of memory: write what this body gathered
                        // (its share comes back once written), then wait.
                        if !batch.is_empty()
                            && let Err(error) = pipeline.submit(batch.take()).await
                        {
                            failure = Some(error);
                            break;
                        }
                        BodyMemory::take(bytes.len()).await
                    }
                };
                batch.push(bytes, memory);
            }
            if batch.len >= BATCH {
                if let Err(error) = pipeline.submit(batch.take()).await {
                    failure = Some(error);
                    break;
                }
                if let Some((every, report)) = progress.as_mut()
                    && last_report.elapsed() >= *every
                {
                    last_report = tokio::time::Instant::now();
                    match pipeline.sync().await {
                        Ok(held) => {
                            self.slot.acknowledged.store(held, Ordering::Release);
                            report(held);
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                // A long body is announced while it streams, too (not a
                // checksummed chunk: its bytes are not accepted yet).
                if self.loaded.record.staged_from.is_none()
                    && self
                        .engine
                        .inner
                        .hooks
                        .progress_due(self.id(), held + written)
                {
                    match pipeline.sync().await {
                        Ok(held) => {
                            self.slot.acknowledged.store(held, Ordering::Release);
                            self.announce_progress(held).await?;
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            if interruption == Some(Interruption::Overrun) {
                break;
            }
        }
        // Whatever happened, make what reached the data durable and count it.
        let last = if failure.is_none() {
            batch.take()
        } else {
            Batch::default()
        };
        let (writer, hasher, unwritten, synced) = pipeline.finish(last).await;
        let failure = failure.or(unwritten);
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
        // look at), persisted at most every `ACTIVITY_GRANULARITY`.
        let at = now();
        self.loaded.record.updated_at = self.loaded.record.updated_at.max(at);
        if let Some(error) = failure {
            return Err(error.into());
        }
        if self.loaded.persisted_at + ACTIVITY_GRANULARITY < at {
            self.engine
                .inner
                .storage
                .put_record(&self.loaded.record)
                .await?;
            self.loaded.persisted_at = at;
        }
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

    /// Finalises the upload at its current size, which must equal the total
    /// if one is known. Idempotent on a complete upload.
    pub async fn finalize(&mut self) -> Result<FinalInfo, Error> {
        let held = self.loaded.held;
        match &self.loaded.record.status {
            Status::Complete(info) => return Ok(info.clone()),
            Status::Cancelled => return Err(Error::Gone),
            Status::Expired => return Err(Error::Expired),
            Status::Active => {}
        }
        if let Some(total) = self.loaded.record.total
            && total != held
        {
            return Err(Error::Incomplete { held, total });
        }
        let storage = Arc::clone(&self.engine.inner.storage);
        if let Some(mut writer) = self.loaded.append.take() {
            writer.sync().await?;
        }
        storage.seal(self.id(), held).await?;
        let digests = match self.loaded.hasher.take() {
            Some(hasher) if hasher.fed() == held => hasher.finish().await,
            _ => None,
        };
        let mut digests = digests.unwrap_or_default();
        if digests.upto() != held || held == 0 {
            // The server restarted during the upload: hash the prefix again.
            digests = self.engine.new_digests(&self.loaded.record);
            let mut stream = storage.read(&self.loaded.record, 0..held).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(StorageError::from)?;
                digests = tokio::task::spawn_blocking(move || {
                    digests.update(&chunk);
                    digests
                })
                .await
                .map_err(|join| StorageError::Io(std::io::Error::other(join)))?;
            }
        }
        let values = digests.finish();
        let completed_at = now();
        let info = FinalInfo {
            published: self.loaded.record.name.is_none(),
            size: held,
            sha256: values.sha256,
            md5: values.md5,
            crc32c: values.crc32c,
            completed_at,
            superseded: false,
        };
        let mut record = self.loaded.record.clone();
        record.total = Some(held);
        record.updated_at = completed_at;
        record.status = Status::Complete(info.clone());
        // The completion event is pending before the upload is complete,
        // and released once the file is in place: a crash anywhere in
        // between leaves it pending, and recovery releases it when the
        // record shows the file published.
        let event = Event::new(EventKind::Completed, &record, held, completed_at);
        let hooks = Arc::clone(&self.engine.inner.hooks);
        hooks.prepare(&event).await.map_err(outbox_error)?;
        // Record first, then publication, then the record again: a crash in
        // between publishes at the next lease, so the file appears whole.
        storage.put_record(&record).await?;
        self.engine.publish(&mut record).await?;
        hooks.commit(&event.id).await.map_err(outbox_error)?;
        hooks.forget(self.id());
        self.loaded.record = record;
        self.engine.inner.catalog.retire(self.id()).await?;
        metrics::counter!(metric::COMPLETED).increment(1);
        metrics::gauge!(metric::ACTIVE).decrement(1);
        tracing::info!(id = %self.id(), size = held, sha256 = %info.sha256, "upload complete");
        if matches!(self.loaded.record.concat, Some(Concat::Partial)) {
            self.engine.part_completed(self.id()).await?;
        }
        Ok(info)
    }

    /// Records a progress event: `held` bytes are durable.
    async fn announce_progress(&mut self, held: u64) -> Result<(), Error> {
        let event = Event::new(EventKind::Progress, &self.loaded.record, held, now());
        let hooks = &self.engine.inner.hooks;
        hooks.prepare(&event).await.map_err(outbox_error)?;
        hooks.commit(&event.id).await.map_err(outbox_error)
    }

    /// Cuts an active upload back to `len` bytes.
    async fn truncate(&mut self, len: u64) -> Result<(), Error> {
        self.loaded.append = None;
        self.engine.inner.storage.truncate(self.id(), len).await?;
        self.loaded.held = len;
        self.slot.acknowledged.store(len, Ordering::Release);
        self.loaded.hasher = None;
        Ok(())
    }

    /// Cancels the upload: its data is removed, its record remembers it.
    pub async fn cancel(&mut self) -> Result<(), Error> {
        let mut record = self.loaded.record.clone();
        let was_active = matches!(record.status, Status::Active);
        let announce = !matches!(record.status, Status::Cancelled);
        record.status = Status::Cancelled;
        record.updated_at = now();
        self.loaded.append = None;
        let storage = &self.engine.inner.storage;
        let event = Event::new(
            EventKind::Cancelled,
            &record,
            self.loaded.held,
            record.updated_at,
        );
        let hooks = &self.engine.inner.hooks;
        if announce {
            hooks.prepare(&event).await.map_err(outbox_error)?;
        }
        storage.put_record(&record).await?;
        if let Some(file) = record.file_key()
            && self
                .engine
                .inner
                .catalog
                .unpublish(&file, record.id)
                .await?
        {
            storage.unpublish(&file).await?;
        }
        storage.discard(record.id).await?;
        if announce {
            hooks.commit(&event.id).await.map_err(outbox_error)?;
            hooks.forget(record.id);
        }
        self.loaded.record = record;
        self.loaded.held = 0;
        self.slot.acknowledged.store(0, Ordering::Release);
        self.engine.inner.catalog.retire(self.id()).await?;
        metrics::counter!(metric::CANCELLED).increment(1);
        if was_active {
            metrics::gauge!(metric::ACTIVE).decrement(1);
        }
        tracing::info!(id = %self.id(), "upload cancelled");
        Ok(())
    }
}

/// Body bytes waiting to be written, across all uploads, at most (in KiB):
/// many uploads at once share this rather than each holding two batches.
const BODY_MEMORY_KIB: u32 = 48 * 1024;

/// How long a body may pause before what it gathered is written anyway.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

static BODY_MEMORY: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(BODY_MEMORY_KIB as usize)));

/// A share of [`BODY_MEMORY`], held by body bytes until they are written
/// and hashed.
struct BodyMemory;

impl BodyMemory {
    fn units(len: usize) -> u32 {
        u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, BODY_MEMORY_KIB)
    }

    fn try_take(len: usize) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&BODY_MEMORY)
            .try_acquire_many_owned(Self::units(len))
            .ok()
    }

    async fn take(len: usize) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this only waits.
        Arc::clone(&BODY_MEMORY)
            .acquire_many_owned(Self::units(len))
            .await
            .ok()
    }
}

/// Body bytes gathered for one write, with their share of the budget.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
    memory: Option<OwnedSemaphorePermit>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn push(&mut self, bytes: Bytes, memory: Option<OwnedSemaphorePermit>) {
        self.len += bytes.len();
        self.chunks.push(bytes);
        match (&mut self.memory, memory) {
            (Some(held), Some(more)) => held.merge(more),
            (held, more) => *held = held.take().or(more),
        }
    }

    fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}

/// Double buffering between the body and storage: one batch is written
/// while the next one fills; each batch goes to the hasher first.
struct Pipeline {
    writer: Option<Box<dyn Append>>,
    hasher: Option<Hasher>,
    in_flight: Option<tokio::task::JoinHandle<Flushed>>,
    /// Where a write still in flight goes when the append is dropped.
    slot: Arc<Slot>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            *lock(&self.slot.orphan) = Some(in_flight);
        }
    }
}

/// What [`Pipeline::finish`] returns.
type Finished = (
    Option<Box<dyn Append>>,
    Option<Hasher>,
    Option<StorageError>,
    Result<u64, StorageError>,
);

/// A storage write in flight comes back with its writer, the write's
/// outcome and, after the last batch, the sync's.
type Flushed = (
    Box<dyn Append>,
    Result<(), StorageError>,
    Option<Result<u64, StorageError>>,
);

impl Pipeline {
    /// Waits for the batch in flight, then starts writing `batch`.
    async fn submit(&mut self, batch: Batch) -> Result<(), StorageError> {
        self.wait().await?;
        let Some(mut writer) = self.writer.take() else {
            return Err(StorageError::Io(std::io::Error::other("writer lost")));
        };
        let Batch { chunks, memory, .. } = batch;
        let (to_hash, memory) = (chunks.clone(), memory.map(Arc::new));
        let held = memory.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let written = writer.write(chunks).await;
            // The bytes are in storage: their share of the budget is free
            // once they are hashed too.
            drop(held);
            (writer, written, None)
        }));
        self.hash(to_hash, memory).await;
        Ok(())
    }

    /// Waits for the batch in flight, writes `batch` (unless a write
    /// failed) and makes everything durable, in one step where the storage
    /// can; returns the writer, the hasher, the first failure to write and
    /// the durable length. Through `in_flight`, so that a dropped append's
    /// last write is still waited for by the next lease.
    async fn finish(mut self, batch: Batch) -> Finished {
        let mut failure = self.wait().await.err();
        let Some(mut writer) = self.writer.take() else {
            let lost = || StorageError::Io(std::io::Error::other("writer lost"));
            return (
                None,
                self.hasher.take(),
                failure.or(Some(lost())),
                Err(lost()),
            );
        };
        let Batch {
            mut chunks, memory, ..
        } = batch;
        if failure.is_some() {
            chunks.clear();
        }
        let (to_hash, memory) = (chunks.clone(), memory.map(Arc::new));
        let held = memory.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let (written, synced) = writer.write_then_sync(chunks).await;
            drop(held);
            (writer, written, Some(synced))
        }));
        self.hash(to_hash, memory).await;
        let (writer, synced) = match self.join().await {
            None => {
                let lost = || StorageError::Io(std::io::Error::other("write lost"));
                failure = failure.or(Some(lost()));
                (None, Err(lost()))
            }
            Some(Ok((writer, written, synced))) => {
                failure = failure.or(written.err());
                let lost = || StorageError::Io(std::io::Error::other("sync lost"));
                (Some(writer), synced.unwrap_or_else(|| Err(lost())))
            }
            Some(Err(join)) => {
                let error = || StorageError::Io(std::io::Error::other(join.to_string()));
                failure = failure.or(Some(error()));
                (None, Err(error()))
            }
        };
        (writer, self.hasher.take(), failure, synced)
    }

    /// Hands `batch` to the hasher, after its write started: the write is
    /// the first to take an idle blocking thread. Its share of the body
    /// memory budget goes along: the bytes stay in memory until hashed.
    async fn hash(&mut self, batch: Vec<Bytes>, memory: Option<Arc<OwnedSemaphorePermit>>) {
        if let Some(hasher) = &mut self.hasher
            && !batch.is_empty()
            && !hasher.feed(batch, memory).await
        {
            self.hasher = None;
        }
    }

    /// Waits for the write in flight, if any.
    async fn join(&mut self) -> Option<Result<Flushed, tokio::task::JoinError>> {
        // Awaited in place: if this future is dropped, `Drop` still finds it.
        let joined = self.in_flight.as_mut()?.await;
        self.in_flight = None;
        Some(joined)
    }

    async fn wait(&mut self) -> Result<(), StorageError> {
        let Some(joined) = self.join().await else {
            return Ok(());
        };
        let (writer, written, _) =
            joined.map_err(|join| StorageError::Io(std::io::Error::other(join)))?;
        self.writer = Some(writer);
        written
    }

    /// Waits for the batch in flight and makes everything durable; returns
    /// the durable length.
    async fn sync(&mut self) -> Result<u64, StorageError> {
        self.wait().await?;
        match self.writer.as_mut() {
            Some(writer) => writer.sync().await,
            None => Err(StorageError::Io(std::io::Error::other("writer lost"))),
        }
    }
}
