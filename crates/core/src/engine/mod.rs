//! The upload engine: one writer per upload, durable appends, finalisation.
//!
//! The engine is split by role:
//!
//! - `mod.rs`: [`Engine`], its settings ([`EngineConfig`]), creation and
//!   read-only views ([`Engine::peek`]).
//! - `recovery.rs`: opening an engine over what storage holds (pending
//!   events, the catalog, concatenations a restart interrupted).
//! - `lease.rs`: [`Lease`], exclusive access to one upload: taking it (a
//!   newer request stops the older one), loading it, setting its size,
//!   cancelling it.
//! - `append.rs`: [`Lease::append`] and its [`AppendOptions`] (skip, limit,
//!   chunk check, progress), in named steps.
//! - `pipeline.rs`: the write/hash pipeline of one append: batches within
//!   the engine's body memory budget, one written while the next fills.
//! - `finalise.rs`: [`Lease::finalize`], publication under a name and the
//!   superseding of the upload the name showed before.
//! - `expiry.rs`: the expiry collector.
//! - `concatenation.rs`: partial uploads joined into a final upload.
//! - `usage.rs`: quotas, a namespace's usage, an upload's owner.
//!
//! The path of an append through core: the server's adapter, having
//! accepted a request and parsed its headers, takes the upload with
//! [`Engine::lease`] (`lease.rs`: the older holder is told to stop, the
//! upload is loaded from storage if this process does not have it), then
//! calls [`Lease::append`] (`append.rs`: checks the upload is active, opens
//! the storage [`Append`](crate::storage::Append), stages a checked chunk).
//! The body streams into the `Pipeline` (`pipeline.rs`): its bytes,
//! skipped and limited, are gathered into batches that take their share of
//! the body memory budget; each full batch is written by storage
//! ([`Append::write`](crate::storage::Append::write), for the local disk
//! positional writes in `storage/local.rs`) while the next fills, and is
//! fed to the hasher (`hasher.rs`). When the body ends, is interrupted or
//! fails, the last batch is written and synced in one step
//! ([`Append::write_then_sync`](crate::storage::Append::write_then_sync)),
//! and only the durable length it returns is acknowledged: the lease's
//! `held`, which the adapter answers with.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenax_protocol::{FileName, Namespace, UploadId};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::digest::{DigestSet, Digests};
use crate::error::Error;
use crate::events::{Event, EventKind, Hooks};
use crate::hasher::Hasher;
use crate::metric;
use crate::record::{NewUpload, Status, UploadRecord};
use crate::storage::{Append, Storage, StorageError};

mod append;
mod concatenation;
mod expiry;
mod finalise;
mod lease;
mod pipeline;
mod recovery;
mod usage;

pub use append::{AppendOptions, AppendOutcome, ChunkCheck, Interruption, Progress};
pub use concatenation::MAX_CONCAT_PARTS;
pub use expiry::CollectReport;
pub use lease::Lease;

use pipeline::{BodyMemory, Flushed};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// An active upload that has not changed for this long is expired.
    pub upload_ttl: Duration,
    /// How long the record of an expired upload is kept (so that requests
    /// can still learn that it expired) before the collector removes it.
    pub expired_retention: Duration,
    /// The optional digests this engine computes, for the uploads that ask
    /// for them ([`NewUpload::digests`]); the others never are.
    pub digests: DigestSet,
    /// Body bytes received but not yet written and hashed, across all the
    /// engine's uploads, at most: many uploads at once share this rather
    /// than each holding two batches. Rounded up to whole KiB.
    pub body_memory: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            upload_ttl: Duration::from_secs(7 * 24 * 3600),
            expired_retention: Duration::from_secs(7 * 24 * 3600),
            digests: DigestSet::MD5,
            body_memory: pipeline::DEFAULT_BODY_MEMORY,
        }
    }
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
    /// The budget of body bytes waiting to be written and hashed.
    body_memory: BodyMemory,
    /// The creation order of the upload created last, or the greatest
    /// of the stored ones at start (see [`Engine::next_creation`]).
    last_created: Mutex<u64>,
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
    /// rewritten to storage only every `expiry::activity_granularity`.
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
        check_metadata(&new)?;
        let asked_name = new.name.clone();
        self.inner.hooks.pre_create(&mut new).await?;
        if !rename && new.name != asked_name {
            // The name is how this upload is found again (`?file=NAME`).
            tracing::warn!(name = ?asked_name, "the pre-create hook cannot rename an upload addressed by its name");
            new.name = asked_name;
        }
        let created_at = now();
        let created_ns = self.next_creation();
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
            digests: new.digests,
            object: new.object,
            staged_from: None,
            created_at,
            created_ns: Some(created_ns),
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

    /// The creation order of a new upload: the time in nanoseconds, or
    /// one more than the last one given or stored if the clock is behind
    /// it (it stepped back, or several uploads came in one tick), so that
    /// the newest upload of a name is the same before and after a restart
    /// (docs/protocol.md §1.1).
    fn next_creation(&self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last = lock(&self.inner.last_created);
        *last = clock.max(last.saturating_add(1));
        *last
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
    fn new_digests(&self, record: &UploadRecord) -> Digests {
        Digests::new(self.inner.config.digests.intersection(record.digests))
    }

    /// Stops every append in flight (they keep what they wrote) and refuses
    /// new uploads. Requests already waiting still get their answers.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}

/// Refuses metadata over [`MAX_METADATA_SIZE`](crate::MAX_METADATA_SIZE).
fn check_metadata(new: &NewUpload) -> Result<(), Error> {
    let size = new.metadata_size();
    let limit = crate::record::MAX_METADATA_SIZE;
    if size > limit {
        return Err(Error::MetadataTooLarge { size, limit });
    }
    Ok(())
}
