//! Digests computed beside the writes, in a task of their own.
//!
//! An acknowledgement waits for the disk, not for the hashes: SHA-256 and
//! MD5 are strictly sequential and slower than a write, so the hashing of an
//! upload runs behind its appends, across requests, and only finalisation
//! waits for it to catch up. The backlog is bounded, so a hasher that falls
//! far behind slows the body down instead of holding it in memory.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::digest::Digests;

/// Batches (of about 1 MiB each) of one upload waiting to be hashed, at
/// most: a whole 8 MiB chunk, so that its body is received at the network's
/// pace and its sync starts while the hashes catch up (they run on another
/// core meanwhile) instead of the body waiting for the hashes.
const BACKLOG: usize = 8;

/// Batches waiting to be hashed across all uploads, at most: many uploads
/// that outrun their hashers slow down rather than fill memory.
const SHARED_BACKLOG: usize = 32;

static SHARED: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(SHARED_BACKLOG)));

/// A batch on its way to be hashed: its bytes, its place in the shared
/// backlog, and its share of the body memory budget (if any), given back
/// once both its write and its hashing are done.
type Queued = (
    Vec<Bytes>,
    OwnedSemaphorePermit,
    Option<Arc<OwnedSemaphorePermit>>,
);

/// The running digests of one upload.
pub(crate) struct Hasher {
    feed: mpsc::Sender<Queued>,
    task: JoinHandle<Option<Digests>>,
    /// Bytes handed over so far.
    fed: u64,
}

impl Hasher {
    /// Starts hashing after what `digests` already covers.
    pub(crate) fn start(digests: Digests) -> Self {
        let fed = digests.upto();
        let (feed, mut batches) = mpsc::channel::<Queued>(BACKLOG);
        let task = tokio::spawn(async move {
            let mut digests = digests;
            while let Some((batch, _backlog, _memory)) = batches.recv().await {
                digests = digests.update_concurrently(batch).await.ok()?;
            }
            Some(digests)
        });
        Hasher { feed, task, fed }
    }

    /// How many bytes of the upload were handed over.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// Hands over the next bytes of the upload, with their share of the
    /// body memory budget; waits while the backlog is full. False if the
    /// hashing task failed.
    pub(crate) async fn feed(
        &mut self,
        batch: Vec<Bytes>,
        memory: Option<Arc<OwnedSemaphorePermit>>,
    ) -> bool {
        let len: u64 = batch.iter().map(|chunk| chunk.len() as u64).sum();
        let Ok(permit) = Arc::clone(&SHARED).acquire_owned().await else {
            return false;
        };
        if self.feed.send((batch, permit, memory)).await.is_err() {
            return false;
        }
        self.fed += len;
        true
    }

    /// Waits for every byte handed over to be hashed.
    pub(crate) async fn finish(self) -> Option<Digests> {
        drop(self.feed);
        self.task.await.ok().flatten()
    }
}
