//! What the engines serving one storage share about its uploads, beyond
//! the bytes and records that [`Storage`](crate::Storage) keeps: who writes
//! each upload now, the current upload of each name, the published files,
//! the uploads in progress per namespace (quotas), and the final uploads
//! of concatenations waiting for their partial uploads.
//!
//! One process alone keeps all of it in memory ([`LocalCatalog`], rebuilt
//! from the records at start). Several nodes on one object store share it
//! through a database (the `tenax-cluster` crate): every method is then a
//! transaction, and [`Catalog::take`] is a lease with a fencing token.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tenax_protocol::{Namespace, UploadId};

use crate::error::Error;
use crate::quota::Quota;
use crate::record::{FileKey, UploadRecord};

mod local;

pub use local::LocalCatalog;

/// What [`Catalog::take`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// No other process took the upload since this one last did, so what
    /// this process remembers of it (its open data, its running digests)
    /// is still true. When `false`, the engine reloads it from storage.
    pub fresh: bool,
}

/// Called with an upload that another process has just taken over: a
/// request of this process that writes it must stop.
pub type OnTakenElsewhere = Arc<dyn Fn(UploadId) + Send + Sync>;

/// Held while an engine finds or creates the upload of a name; dropping it
/// lets the next request for the name go on.
pub type NameLock = Box<dyn Send + Sync>;

/// A published file: its name, the upload whose bytes it shows, their size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFile {
    /// The file.
    pub file: FileKey,
    /// The completed upload it shows.
    pub upload: UploadId,
    /// Its size in bytes.
    pub size: u64,
}

/// Shared upload state; see the module documentation.
#[async_trait]
pub trait Catalog: Send + Sync + fmt::Debug + 'static {
    /// Rebuilds the catalog from every record in storage, at start. A
    /// catalog kept outside this process (a database) is already up to
    /// date and ignores it.
    fn restore(&self, records: &[UploadRecord]);

    /// Calls `hook` whenever another process takes over an upload.
    fn on_taken_elsewhere(&self, hook: OnTakenElsewhere) {
        let _ = hook;
    }

    /// Makes this process the one writer of an upload, now: a newer
    /// taker always wins, and from then on the older one can commit
    /// nothing (storage refuses its commits with
    /// [`StorageError::Fenced`](crate::StorageError::Fenced)).
    async fn take(&self, id: UploadId) -> Result<Taken, Error>;

    /// Like [`Catalog::take`], but only when no process is writing the
    /// upload now (the expiry collector); `None` otherwise.
    async fn try_take(&self, id: UploadId) -> Result<Option<Taken>, Error>;

    /// This process stopped writing the upload (its request ended); the
    /// call must not block (a database catalog sends it on its way).
    fn release(&self, id: UploadId) {
        let _ = id;
    }

    /// Serialises "find or create the upload of this name" across requests.
    async fn lock_name(&self, file: &FileKey) -> Result<NameLock, Error>;

    /// The current upload of a name: what `?file=NAME` continues.
    async fn current(&self, file: &FileKey) -> Result<Option<UploadId>, Error>;

    /// Makes `id` the current upload of its name.
    async fn set_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error>;

    /// Forgets the current upload of a name if it is `id`.
    async fn forget_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error>;

    /// The upload a name shows, and its size.
    async fn published(&self, file: &FileKey) -> Result<Option<(UploadId, u64)>, Error>;

    /// Shows `id` under its name; returns the upload shown before, if another.
    async fn publish(
        &self,
        file: &FileKey,
        id: UploadId,
        size: u64,
    ) -> Result<Option<UploadId>, Error>;

    /// Withdraws a name if it shows `id`; returns whether it did.
    async fn unpublish(&self, file: &FileKey, id: UploadId) -> Result<bool, Error>;

    /// Every published file of a namespace, sorted by name.
    async fn published_in(&self, namespace: &Namespace) -> Result<Vec<PublishedFile>, Error>;

    /// Replaces the quotas of every namespace (unlisted ones are unlimited).
    fn set_quotas(&self, quotas: HashMap<Namespace, Quota>);

    /// Counts a new upload of `size` declared bytes (0 if unknown) as in
    /// progress, unless a quota of its namespace forbids it
    /// ([`Error::Quota`]); `publishes` says whether it will show as a file.
    async fn admit(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error>;

    /// Records the size an upload in progress declared later, unless a
    /// quota forbids it.
    async fn declare(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error>;

    /// The upload is no longer in progress.
    async fn retire(&self, id: UploadId) -> Result<(), Error>;

    /// Uploads in progress of a namespace and the sum of their declared sizes.
    async fn in_progress(&self, namespace: &Namespace) -> Result<(u64, u64), Error>;

    /// A final upload of a concatenation waits for these unfinished parts.
    async fn await_parts(&self, final_upload: UploadId, parts: &[UploadId]) -> Result<(), Error>;

    /// A part completed: the final uploads that waited for it (each returned once).
    async fn part_completed(&self, part: UploadId) -> Result<Vec<UploadId>, Error>;
}
