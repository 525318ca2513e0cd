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

/// The running digests of one upload.
pub(crate) struct Hasher {
    feed: mpsc::Sender<(Vec<Bytes>, OwnedSemaphorePermit)>,
    task: JoinHandle<Option<Digests>>,
    /// Bytes handed over so far.
    fed: u64,
}

impl Hasher {
    /// Starts hashing after what `digests` already covers.
    pub(crate) fn start(digests: Digests) -> Self {
        let fed = digests.upto();
        let (feed, mut batches) = mpsc::channel::<(Vec<Bytes>, OwnedSemaphorePermit)>(BACKLOG);
        let task = tokio::spawn(async move {
            let mut digests = digests;
            while let Some((batch, _permit)) = batches.recv().await {
                digests = digests.update_concurrently(&batch).await.ok()?;
            }
            Some(digests)
        });
        Hasher { feed, task, fed }
    }

    /// How many bytes of the upload were handed over.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// Hands over the next bytes of the upload; waits while the backlog is
    /// full. False if the hashing task failed.
    pub(crate) async fn feed(&mut self, batch: Vec<Bytes>) -> bool {
        let len: u64 = batch.iter().map(|chunk| chunk.len() as u64).sum();
        let Ok(permit) = Arc::clone(&SHARED).acquire_owned().await else {
            return false;
        };
        if self.feed.send((batch, permit)).await.is_err() {
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
