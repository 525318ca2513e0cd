//! The [`Storage`] trait over [`ObjectStorage`]: the engine's view of an
//! object store. Kept apart from `store.rs` so that the writer
//! (`append.rs`) and the storage it writes through do not import each other.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::{StreamExt as _, stream};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use tenax_core::storage::{Append, ByteStream, Stored};
use tenax_core::{FileKey, Status, Storage, StorageError, UploadId, UploadRecord};

use crate::append::ObjectAppend;
use crate::io_error;
use crate::state::{DataState, Tail, state_bytes};
use crate::store::ObjectStorage;

#[async_trait]
impl Storage for ObjectStorage {
    async fn create(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.meta
            .create(record, state_bytes(&DataState::default())?)
            .await
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.meta.put_record(record).await
    }

    async fn load(&self, id: UploadId) -> Result<Stored, StorageError> {
        let record = self.meta.record(id).await?;
        let held = match &record.status {
            Status::Active => self.load_state(id).await?.len(),
            Status::Complete(info) => info.size,
            Status::Cancelled | Status::Expired => 0,
        };
        Ok(Stored { record, held })
    }

    async fn list(&self) -> Result<Vec<UploadRecord>, StorageError> {
        self.meta.records().await
    }

    async fn append(&self, id: UploadId, offset: u64) -> Result<Box<dyn Append>, StorageError> {
        let state = self.load_existing_state(id).await?;
        let len = state.len();
        if len != offset {
            return Err(StorageError::Io(io::Error::other(format!(
                "data holds {len} bytes, expected {offset}"
            ))));
        }
        let tail = self.read_tails(id, &state.tails).await?;
        Ok(Box::new(ObjectAppend::new(self.clone(), id, state, tail)))
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        if range.start >= range.end {
            return Ok(stream::empty().boxed());
        }
        let id = record.id;
        if matches!(record.status, Status::Complete(_)) {
            return self.stream_object(&self.paths.data(id), range).await;
        }
        let state = self.load_existing_state(id).await?;
        if state.sealed.is_some() {
            return self.stream_object(&self.paths.data(id), range).await;
        }
        let parts_len = state.parts_len();
        if range.start < parts_len {
            return Err(StorageError::NotReadable {
                readable_from: parts_len,
            });
        }
        Ok(self.stream_tails(
            id,
            &state.tails,
            range.start - parts_len..range.end - parts_len,
        ))
    }

    async fn seal(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let mut state = self.load_existing_state(id).await?;
        self.seal_state(id, &mut state, len).await
    }

    async fn publish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let (Some(file), Status::Complete(info)) = (record.file_key(), &record.status) else {
            return Ok(());
        };
        let mut state = self.load_state(record.id).await?;
        self.seal_state(record.id, &mut state, info.size).await?;
        // S3 replaces an object whole, so readers of the name see the old
        // file or the new one; the upload keeps its own `data`.
        self.store
            .copy(&self.paths.data(record.id), &self.paths.file(&file))
            .await
            .map_err(io_error)
    }

    async fn truncate(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let mut state = self.load_existing_state(id).await?;
        let have = state.len();
        if len == have {
            return Ok(());
        }
        if len > have {
            return Err(StorageError::Io(io::Error::other(format!(
                "cannot truncate {id} to {len} bytes: it holds {have}"
            ))));
        }
        if len == 0 {
            return ObjectAppend::reset(self, id, state).await;
        }
        let parts_len = state.parts_len();
        if state.sealed.is_none() && len >= parts_len {
            // Within the tail: one new tail object with the kept bytes.
            let kept = (len - parts_len) as usize;
            let tails = self.read_tails(id, &state.tails).await?;
            let mut bytes = Vec::with_capacity(kept);
            for tail in &tails {
                let room = kept - bytes.len();
                bytes.extend_from_slice(&tail[..tail.len().min(room)]);
            }
            let old: Vec<Path> = state
                .tails
                .drain(..)
                .map(|tail| self.paths.tail(id, tail.seq))
                .collect();
            if !bytes.is_empty() {
                let seq = state.next_tail;
                state.next_tail += 1;
                self.store
                    .put(&self.paths.tail(id, seq), PutPayload::from(bytes))
                    .await
                    .map_err(io_error)?;
                state.tails.push(Tail {
                    seq,
                    len: kept as u64,
                });
            }
            self.save_state(id, &state).await?;
            self.delete_quietly(old).await;
            return Ok(());
        }
        // Into the parts, which cannot be read back: seal, then rebuild.
        self.seal_state(id, &mut state, have).await?;
        let mut writer = ObjectAppend::new(self.clone(), id, state, Vec::new());
        writer.rebuild(len).await?;
        writer.sync().await.map(|_| ())
    }

    async fn discard(&self, id: UploadId) -> Result<(), StorageError> {
        let state = self.load_state(id).await?;
        if let Some(multipart) = &state.multipart {
            match self
                .store
                .abort_multipart(&self.paths.data(id), &multipart.id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        // The state goes last: while it exists, a retry still knows the
        // multipart upload to abort.
        self.delete_upload_objects(id, &[self.paths.record(id), self.paths.state(id)])
            .await?;
        self.meta.clear_state(id).await
    }

    async fn remove_record(&self, id: UploadId) -> Result<(), StorageError> {
        self.delete_upload_objects(id, &[self.paths.record(id), self.paths.state(id)])
            .await?;
        self.meta.remove(id).await
    }

    async fn unpublish(&self, file: &FileKey) -> Result<(), StorageError> {
        match self.store.delete(&self.paths.file(file)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(io_error(error)),
        }
    }

    async fn probe(&self) -> Result<(), StorageError> {
        self.meta.probe().await?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.paths.root().clone().join(format!(
            "probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        self.store
            .put(&path, PutPayload::from_static(b"ok"))
            .await
            .map_err(io_error)?;
        self.store.delete(&path).await.map_err(io_error)
    }
}
