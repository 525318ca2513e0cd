//! The write/hash pipeline of one append: body bytes gathered into
//! batches (within the engine's body memory budget), each batch written by
//! storage while the next one fills, and handed to the hasher.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Slot, lock};
use crate::hasher::Hasher;
use crate::storage::{Append, StorageError};

/// Bytes gathered from the body before they go to storage in one batch.
/// Two batches are in memory per upload at most: one being written, one filling.
pub(super) const BATCH: usize = 1 << 20;

/// The default of [`EngineConfig::body_memory`](super::EngineConfig::body_memory).
pub(super) const DEFAULT_BODY_MEMORY: usize = 48 << 20;

/// The budget of body bytes waiting to be written and hashed, shared by
/// every append of one engine, counted in KiB.
pub(super) struct BodyMemory {
    kib: Arc<Semaphore>,
    /// The budget in KiB: no single take asks for more.
    capacity: u32,
}

impl BodyMemory {
    /// A budget of `bytes` (rounded up to whole KiB, at least one).
    pub(super) fn new(bytes: usize) -> Self {
        let capacity = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        BodyMemory {
            kib: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    fn units(&self, len: usize) -> u32 {
        u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity)
    }

    /// A share for `len` bytes, if the budget has it now.
    pub(super) fn try_take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.kib)
            .try_acquire_many_owned(self.units(len))
            .ok()
    }

    /// A share for `len` bytes, once the budget has it.
    pub(super) async fn take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        // The semaphore is never closed, so this only waits.
        Arc::clone(&self.kib)
            .acquire_many_owned(self.units(len))
            .await
            .ok()
    }
}

/// Body bytes gathered for one write, with their share of the budget.
#[derive(Default)]
pub(super) struct Batch {
    chunks: Vec<Bytes>,
    pub(super) len: usize,
    memory: Option<OwnedSemaphorePermit>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub(super) fn push(&mut self, bytes: Bytes, memory: Option<OwnedSemaphorePermit>) {
        self.len += bytes.len();
        self.chunks.push(bytes);
        match (&mut self.memory, memory) {
            (Some(held), Some(more)) => held.merge(more),
            (held, more) => *held = held.take().or(more),
        }
    }

    pub(super) fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}

/// Double buffering between the body and storage: one batch is written
/// while the next one fills; each batch goes to the hasher first.
pub(super) struct Pipeline {
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
pub(super) type Finished = (
    Option<Box<dyn Append>>,
    Option<Hasher>,
    Option<StorageError>,
    Result<u64, StorageError>,
);

/// A storage write in flight comes back with its writer, the write's
/// outcome and, after the last batch, the sync's.
pub(super) type Flushed = (
    Box<dyn Append>,
    Result<(), StorageError>,
    Option<Result<u64, StorageError>>,
);

impl Pipeline {
    /// A pipeline writing with `writer` and hashing with `hasher` (if the
    /// digests can follow); a write still in flight when it is dropped is
    /// left to `slot`.
    pub(super) fn new(writer: Box<dyn Append>, hasher: Option<Hasher>, slot: Arc<Slot>) -> Self {
        Pipeline {
            writer: Some(writer),
            hasher,
            in_flight: None,
            slot,
        }
    }

    /// Waits for the batch in flight, then starts writing `batch`.
    pub(super) async fn submit(&mut self, batch: Batch) -> Result<(), StorageError> {
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
    pub(super) async fn finish(mut self, batch: Batch) -> Finished {
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
    pub(super) async fn sync(&mut self) -> Result<u64, StorageError> {
        self.wait().await?;
        match self.writer.as_mut() {
            Some(writer) => writer.sync().await,
            None => Err(StorageError::Io(std::io::Error::other("writer lost"))),
        }
    }
}
