//! An open upload on an object store: bytes gathered into multipart
//! parts (a few in flight), the rest into tail objects at each sync, and
//! the data state saved as the commit point.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::PutPayload;
use object_store::path::Path;
use tenax_core::storage::Append;
use tenax_core::{StorageError, UploadId};

use crate::state::{DataState, Multipart, Part, Tail};
use crate::store::ObjectStorage;
use crate::{io_error, total_len};

/// An open upload: the acknowledged tail and the bytes not yet durable are
/// in memory (together less than one part, plus the batch being written).
#[derive(Debug)]
pub(crate) struct ObjectAppend {
    storage: ObjectStorage,
    id: UploadId,
    /// The state as it will be saved at the next sync.
    state: DataState,
    /// The bytes of `state.tails` (durable in tail objects).
    tail: Vec<Bytes>,
    /// Bytes written since the last sync, not yet in any object.
    pending: Vec<Bytes>,
    /// Tail objects that became part of a part; deleted once the state
    /// that no longer lists them is saved.
    absorbed: Vec<u64>,
    /// Whether `state` differs from the saved one.
    dirty: bool,
    /// The last saved state and its tail bytes: after a failed write the
    /// writer's memory may have lost bytes in the middle (a part that did
    /// not go up), so the next sync goes back to this instead of saving a
    /// state with a hole.
    saved: (DataState, Vec<Bytes>),
    /// A write failed since the last sync.
    failed: bool,
    /// The parts being uploaded while the next one fills, oldest first.
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<Part, StorageError>>>,
}

impl Drop for ObjectAppend {
    fn drop(&mut self) {
        self.abandon_part();
    }
}

impl ObjectAppend {
    pub(crate) fn new(
        storage: ObjectStorage,
        id: UploadId,
        state: DataState,
        tail: Vec<Bytes>,
    ) -> Self {
        ObjectAppend {
            storage,
            id,
            saved: (state.clone(), tail.clone()),
            state,
            tail,
            pending: Vec::new(),
            absorbed: Vec::new(),
            dirty: false,
            failed: false,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// Empties an upload: aborts its multipart upload, drops its tail.
    pub(crate) async fn reset(
        storage: &ObjectStorage,
        id: UploadId,
        state: DataState,
    ) -> Result<(), StorageError> {
        if let Some(multipart) = &state.multipart {
            match storage
                .store
                .abort_multipart(&storage.paths.data(id), &multipart.id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        let old: Vec<Path> = state
            .tails
            .iter()
            .map(|tail| storage.paths.tail(id, tail.seq))
            .collect();
        let empty = DataState {
            next_tail: state.next_tail,
            ..DataState::default()
        };
        storage.save_state(id, &empty).await?;
        storage.delete_quietly(old).await;
        Ok(())
    }

    fn buffered(&self) -> usize {
        (total_len(&self.tail) + total_len(&self.pending)) as usize
    }

    /// Uploads the first `part_size` buffered bytes (the whole tail, which
    /// is always shorter than a part, then pending bytes) as the next part.
    async fn upload_part(&mut self) -> Result<(), StorageError> {
        let size = self.storage.part_size;
        let mut part = std::mem::take(&mut self.tail);
        let mut room = size - total_len(&part) as usize;
        let mut rest = Vec::new();
        for mut chunk in self.pending.drain(..) {
            if room == 0 {
                rest.push(chunk);
            } else if chunk.len() <= room {
                room -= chunk.len();
                part.push(chunk);
            } else {
                part.push(chunk.split_to(room));
                room = 0;
                rest.push(chunk);
            }
        }
        self.pending = rest;
        let data = self.storage.paths.data(self.id);
        let multipart = match &mut self.state.multipart {
            Some(multipart) => multipart,
            None => {
                let id = self
                    .storage
                    .store
                    .create_multipart(&data)
                    .await
                    .map_err(io_error)?;
                self.state.multipart.insert(Multipart {
                    id,
                    parts: Vec::new(),
                })
            }
        };
        let len = total_len(&part);
        let upload_id = multipart.id.clone();
        // A node that lost the upload to another sends no more parts.
        self.storage.meta.before_part(self.id).await?;
        // A bounded number of parts in flight while the next one fills:
        // wait for the oldest when the window is full.
        while self.in_flight.len() >= self.storage.parts_in_flight {
            self.finish_oldest_part().await?;
        }
        let index =
            self.state.multipart.as_ref().map_or(0, |m| m.parts.len()) + self.in_flight.len();
        let store = Arc::clone(&self.storage.store);
        let payload: PutPayload = part.into_iter().collect();
        // The index is the number of parts before it: after a crash the next
        // writer uploads the same index again, and the later copy wins.
        self.in_flight.push_back(tokio::spawn(async move {
            let uploaded = store
                .put_part(&data, &upload_id, index, payload)
                .await
                .map_err(io_error)?;
            Ok(Part {
                etag: uploaded.content_id,
                len,
            })
        }));
        self.absorbed
            .extend(self.state.tails.drain(..).map(|tail| tail.seq));
        self.dirty = true;
        Ok(())
    }

    /// Waits for the oldest part in flight and lists it (parts are listed
    /// in index order).
    async fn finish_oldest_part(&mut self) -> Result<(), StorageError> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let part = task
            .await
            .map_err(|join| StorageError::Io(io::Error::other(join)))??;
        match &mut self.state.multipart {
            Some(multipart) => multipart.parts.push(part),
            None => {
                return Err(StorageError::Io(io::Error::other(
                    "a part finished without its multipart upload",
                )));
            }
        }
        Ok(())
    }

    /// Waits for every part in flight.
    async fn finish_parts(&mut self) -> Result<(), StorageError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest_part().await?;
        }
        Ok(())
    }

    /// Drops the parts in flight (their uploads are abandoned).
    fn abandon_part(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }

    /// Turns a sealed upload back into a multipart upload holding its first
    /// `len` bytes, copied from `data` through this node.
    pub(crate) async fn rebuild(&mut self, len: u64) -> Result<(), StorageError> {
        let Some(sealed) = self.state.sealed else {
            return Ok(());
        };
        let source = self.storage.paths.data(self.id);
        self.abandon_part();
        self.state = DataState {
            next_tail: self.state.next_tail,
            ..DataState::default()
        };
        self.tail.clear();
        self.pending.clear();
        self.dirty = true;
        if len == 0 {
            return Ok(());
        }
        // The new multipart upload targets `data` too; S3 replaces the old
        // object only when it completes, so the copy reads a stable source.
        let mut bytes = self
            .storage
            .stream_object(&source, 0..len.min(sealed))
            .await?;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(StorageError::Io)?;
            self.push(chunk).await?;
        }
        Ok(())
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        if !chunk.is_empty() {
            self.pending.push(chunk);
        }
        while self.buffered() >= self.storage.part_size {
            self.upload_part().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Append for ObjectAppend {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Io(io::Error::other(
                "an earlier write to this upload failed; sync first",
            )));
        }
        if chunks.iter().all(Bytes::is_empty) {
            return Ok(());
        }
        let written = self.write_all(chunks).await;
        self.failed = written.is_err();
        written
    }

    async fn sync(&mut self) -> Result<u64, StorageError> {
        if self.failed {
            // Back to what is durable; parts uploaded since are orphans that
            // the next part uploads replace (same indexes).
            self.abandon_part();
            let (state, tail) = self.saved.clone();
            if let (Some(created), None) = (&self.state.multipart, &state.multipart) {
                // Created since the last save: nothing durable refers to it.
                let (store, data, upload) = (
                    Arc::clone(&self.storage.store),
                    self.storage.paths.data(self.id),
                    created.id.clone(),
                );
                tokio::spawn(async move {
                    if let Err(error) = store.abort_multipart(&data, &upload).await {
                        tracing::warn!(%error, %data, "cannot abort an unused multipart upload");
                    }
                });
            }
            self.state = state;
            self.tail = tail;
            self.pending.clear();
            self.absorbed.clear();
            self.dirty = false;
            self.failed = false;
            return Ok(self.state.len());
        }
        let synced = self.sync_all().await;
        self.failed = synced.is_err();
        synced
    }
}

impl ObjectAppend {
    async fn write_all(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        if let Some(sealed) = self.state.sealed {
            self.rebuild(sealed).await?;
        }
        for chunk in chunks {
            self.push(chunk).await?;
        }
        Ok(())
    }

    async fn sync_all(&mut self) -> Result<u64, StorageError> {
        self.finish_parts().await?;
        if !self.pending.is_empty() {
            let seq = self.state.next_tail;
            let len = total_len(&self.pending);
            let payload: PutPayload = self.pending.iter().cloned().collect();
            self.storage
                .store
                .put(&self.storage.paths.tail(self.id, seq), payload)
                .await
                .map_err(io_error)?;
            self.state.next_tail += 1;
            self.state.tails.push(Tail { seq, len });
            self.tail.append(&mut self.pending);
            self.dirty = true;
        }
        if self.dirty {
            self.storage.save_state(self.id, &self.state).await?;
            self.saved = (self.state.clone(), self.tail.clone());
            self.dirty = false;
            let absorbed = self
                .absorbed
                .drain(..)
                .map(|seq| self.storage.paths.tail(self.id, seq))
                .collect();
            self.storage.delete_quietly(absorbed).await;
        }
        Ok(self.state.len())
    }
}
