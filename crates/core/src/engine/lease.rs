//! Exclusive access to one upload ([`Lease`]): taking it (a newer request
//! stops the older one), loading it, and the operations that need it
//! (size, cancellation); appending and finalising have files of their own.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tenax_protocol::UploadId;
use tokio::sync::{OwnedMappedMutexGuard, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::{Engine, Loaded, Slot, Snapshot, lock, now, outbox_error};
use crate::catalog::{Catalog, Taken};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::metric;
use crate::record::{FileKey, NewUpload, Status, UploadRecord};

impl Engine {
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

    pub(super) fn slot(&self, id: UploadId) -> Arc<Slot> {
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
}

/// Tells the catalog that this process stopped writing an upload.
pub(super) struct Release {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) id: UploadId,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.catalog.release(self.id);
    }
}

/// Exclusive access to one upload, held for the duration of one request.
pub struct Lease {
    pub(super) engine: Engine,
    pub(super) loaded: OwnedMappedMutexGuard<Option<Loaded>, Loaded>,
    pub(super) slot: Arc<Slot>,
    /// Cancelled when a newer request (or the shutdown) wants the upload.
    pub(super) token: CancellationToken,
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

    /// Cuts an active upload back to `len` bytes.
    pub(super) async fn truncate(&mut self, len: u64) -> Result<(), Error> {
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
