//! Where the records and data states of object-store uploads live: as small
//! objects beside the data ([`ObjectMeta`], one node or several with no
//! shared database), or in a database shared by several nodes (the
//! `tenax-cluster` crate), which fences every commit.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use tenax_core::layout::{parse_record, record_json};
use tenax_core::{StorageError, UploadId, UploadRecord};

use crate::paths::Paths;
use crate::{io_error, not_found_or_io};

/// The records and data states of the uploads.
///
/// The data state is opaque here (JSON bytes of the object-store backend):
/// writing it is the commit point of an append, so a store shared by
/// several nodes must refuse it ([`StorageError::Fenced`]) from a node that
/// no longer holds the upload.
#[async_trait]
pub trait MetaStore: Send + Sync + fmt::Debug + 'static {
    /// Creates an upload's record and empty state.
    async fn create(&self, record: &UploadRecord, state: Bytes) -> Result<(), StorageError>;

    /// An upload's record; [`StorageError::NotFound`] for an unknown id.
    async fn record(&self, id: UploadId) -> Result<UploadRecord, StorageError>;

    /// Replaces an upload's record, atomically.
    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError>;

    /// Every upload's record.
    async fn records(&self) -> Result<Vec<UploadRecord>, StorageError>;

    /// An upload's data state; `None` when it has none (never written, or cleared).
    async fn state(&self, id: UploadId) -> Result<Option<Bytes>, StorageError>;

    /// Replaces an upload's data state, atomically and durably: the commit
    /// point of every append.
    async fn put_state(&self, id: UploadId, state: Bytes) -> Result<(), StorageError>;

    /// Clears an upload's data state (its data is gone). Idempotent.
    async fn clear_state(&self, id: UploadId) -> Result<(), StorageError>;

    /// Forgets an upload: its record and state. Idempotent.
    async fn remove(&self, id: UploadId) -> Result<(), StorageError>;

    /// A cheap check that the store answers (readiness).
    async fn probe(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Called before each multipart part is uploaded: a shared store
    /// refuses it ([`StorageError::Fenced`]) when another node took the
    /// upload over, so that a stale writer stops sending parts.
    async fn before_part(&self, id: UploadId) -> Result<(), StorageError> {
        let _ = id;
        Ok(())
    }
}

/// Records and states as objects beside the data:
/// `PREFIX/uploads/ID/record.json` and `PREFIX/uploads/ID/state.json`.
#[derive(Clone)]
pub struct ObjectMeta {
    store: Arc<dyn ObjectStore>,
    paths: Paths,
}

impl fmt::Debug for ObjectMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectMeta")
            .field("root", self.paths.root())
            .finish_non_exhaustive()
    }
}

impl ObjectMeta {
    /// Records and states in `store` under `root`.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        ObjectMeta {
            store,
            paths: Paths::new(root),
        }
    }

    async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        self.store
            .get(path)
            .await
            .map_err(not_found_or_io)?
            .bytes()
            .await
            .map_err(io_error)
    }

    async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(io_error)?;
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(io_error(error)),
        }
    }
}

#[async_trait]
impl MetaStore for ObjectMeta {
    async fn create(&self, record: &UploadRecord, state: Bytes) -> Result<(), StorageError> {
        // The state first: a record without a state would be an upload
        // whose bytes nobody can find; a state without a record is invisible.
        self.put_state(record.id, state).await?;
        self.put_record(record).await
    }

    async fn record(&self, id: UploadId) -> Result<UploadRecord, StorageError> {
        let path = self.paths.record(id);
        parse_record(path.as_ref(), &self.get(&path).await?)
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let json = record_json(record)?;
        self.put(&self.paths.record(record.id), json.into()).await
    }

    async fn records(&self) -> Result<Vec<UploadRecord>, StorageError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.paths.uploads()))
            .await
            .map_err(io_error)?;
        let ids: Vec<UploadId> = listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename())
            .filter_map(|name| UploadId::parse(name).ok())
            .collect();
        let loaded: Vec<_> = stream::iter(ids)
            .map(|id| async move { (id, self.record(id).await) })
            .buffered(16)
            .collect()
            .await;
        let mut records = Vec::with_capacity(loaded.len());
        for (id, record) in loaded {
            match record {
                Ok(record) => records.push(record),
                // Leftovers of a removal that did not finish.
                Err(StorageError::NotFound) => {}
                Err(error) => tracing::warn!(%error, %id, "skipping unreadable upload record"),
            }
        }
        Ok(records)
    }

    async fn state(&self, id: UploadId) -> Result<Option<Bytes>, StorageError> {
        match self.get(&self.paths.state(id)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn put_state(&self, id: UploadId, state: Bytes) -> Result<(), StorageError> {
        self.put(&self.paths.state(id), state).await
    }

    async fn clear_state(&self, id: UploadId) -> Result<(), StorageError> {
        self.delete(&self.paths.state(id)).await
    }

    async fn remove(&self, id: UploadId) -> Result<(), StorageError> {
        self.delete(&self.paths.state(id)).await?;
        self.delete(&self.paths.record(id)).await
    }
}
