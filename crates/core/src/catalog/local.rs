//! The catalog of a single process: maps in memory, rebuilt from the
//! records at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tenax_protocol::{Namespace, UploadId};

use super::{Catalog, NameLock, PublishedFile, Taken};
use crate::error::Error;
use crate::quota::{Accounts, Quota};
use crate::record::{Concat, FileKey, Status, UploadRecord};

/// The in-memory catalog; the engine's default.
#[derive(Debug, Default)]
pub struct LocalCatalog {
    /// The current upload of each name.
    names: Mutex<HashMap<FileKey, UploadId>>,
    /// Which upload each published name shows, and its size.
    published: Mutex<HashMap<FileKey, (UploadId, u64)>>,
    /// Uploads in progress per namespace, and the quotas.
    accounts: Mutex<Accounts>,
    /// Final uploads waiting for unfinished parts: part to finals.
    pending_finals: Mutex<HashMap<UploadId, Vec<UploadId>>>,
    /// One mutex per name being found or created.
    name_locks: Arc<Mutex<HashMap<FileKey, Arc<tokio::sync::Mutex<()>>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        LocalCatalog::default()
    }

    fn bytes_stored(&self, namespace: &Namespace) -> u64 {
        lock(&self.published)
            .iter()
            .filter(|(key, _)| &key.namespace == namespace)
            .map(|(_, (_, size))| size)
            .sum()
    }

    /// The stored bytes where a quota limits them, else 0: summing them
    /// walks every published file, which a creation without such a quota
    /// need not pay.
    fn bytes_stored_if_limited(&self, namespace: &Namespace) -> u64 {
        let limited = lock(&self.accounts)
            .quota(namespace)
            .max_bytes_stored
            .is_some();
        if limited {
            self.bytes_stored(namespace)
        } else {
            0
        }
    }
}

/// Serialises "find or create the upload of a name", per name: waiting for
/// an older request (or a pre-create hook) holds up only the requests for
/// the same name. The map entry goes with the last holder.
struct LocalNameLock {
    locks: Arc<Mutex<HashMap<FileKey, Arc<tokio::sync::Mutex<()>>>>>,
    file: FileKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LocalNameLock {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let mutex = Arc::clone(tokio::sync::OwnedMutexGuard::mutex(&guard));
        drop(guard);
        // Clones are taken under the map's lock, so a count of two (the
        // map's and this one) means nobody else waits for this name.
        let mut locks = lock(&self.locks);
        if Arc::strong_count(&mutex) == 2 {
            locks.remove(&self.file);
        }
    }
}

#[async_trait]
impl Catalog for LocalCatalog {
    fn restore(&self, records: &[UploadRecord]) {
        let complete: std::collections::HashSet<UploadId> = records
            .iter()
            .filter(|record| matches!(record.status, Status::Complete(_)))
            .map(|record| record.id)
            .collect();
        let mut pending_finals = lock(&self.pending_finals);
        let mut accounts = lock(&self.accounts);
        let mut published: HashMap<FileKey, (u64, UploadId, u64)> = HashMap::new();
        let mut names: HashMap<FileKey, (u64, UploadId)> = HashMap::new();
        for record in records {
            if let (Status::Active, Some(Concat::Final(parts))) = (&record.status, &record.concat) {
                for part in parts.iter().filter(|part| !complete.contains(part)) {
                    pending_finals.entry(*part).or_default().push(record.id);
                }
            }
            if matches!(record.status, Status::Active) {
                accounts.restore(record.id, &record.namespace, record.total.unwrap_or(0));
            }
            let Some(file) = record.file_key() else {
                continue;
            };
            if let Status::Complete(info) = &record.status
                && info.published
                && !info.superseded
            {
                let rank = (info.completed_at, record.id, info.size);
                let best = published.entry(file.clone()).or_insert(rank);
                *best = (*best).max(rank);
            }
            // A name addresses its most recently created upload, whatever
            // became of it (docs/protocol.md §1.1): what `create` made
            // current before the restart, whatever order records are read in.
            let rank = record.creation_order();
            let best = names.entry(file).or_insert(rank);
            *best = (*best).max(rank);
        }
        *lock(&self.published) = published
            .into_iter()
            .map(|(name, (_, id, size))| (name, (id, size)))
            .collect();
        *lock(&self.names) = names
            .into_iter()
            .map(|(name, (_, id))| (name, id))
            .collect();
    }

    // One process: the engine's own per-upload lock is the one-writer rule.
    async fn take(&self, _id: UploadId) -> Result<Taken, Error> {
        Ok(Taken { fresh: true })
    }

    async fn try_take(&self, _id: UploadId) -> Result<Option<Taken>, Error> {
        Ok(Some(Taken { fresh: true }))
    }

    async fn lock_name(&self, file: &FileKey) -> Result<NameLock, Error> {
        let mutex = Arc::clone(lock(&self.name_locks).entry(file.clone()).or_default());
        Ok(Box::new(LocalNameLock {
            locks: Arc::clone(&self.name_locks),
            file: file.clone(),
            guard: Some(mutex.lock_owned().await),
        }))
    }

    async fn current(&self, file: &FileKey) -> Result<Option<UploadId>, Error> {
        Ok(lock(&self.names).get(file).copied())
    }

    async fn set_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error> {
        lock(&self.names).insert(file.clone(), id);
        Ok(())
    }

    async fn forget_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error> {
        let mut names = lock(&self.names);
        if names.get(file) == Some(&id) {
            names.remove(file);
        }
        Ok(())
    }

    async fn published(&self, file: &FileKey) -> Result<Option<(UploadId, u64)>, Error> {
        Ok(lock(&self.published).get(file).copied())
    }

    async fn publish(
        &self,
        file: &FileKey,
        id: UploadId,
        size: u64,
    ) -> Result<Option<UploadId>, Error> {
        let previous = lock(&self.published).insert(file.clone(), (id, size));
        Ok(previous
            .map(|(previous, _)| previous)
            .filter(|previous| *previous != id))
    }

    async fn unpublish(&self, file: &FileKey, id: UploadId) -> Result<bool, Error> {
        let mut published = lock(&self.published);
        let shown = published.get(file).map(|(shown, _)| *shown) == Some(id);
        if shown {
            published.remove(file);
        }
        Ok(shown)
    }

    async fn published_in(&self, namespace: &Namespace) -> Result<Vec<PublishedFile>, Error> {
        let mut files: Vec<PublishedFile> = lock(&self.published)
            .iter()
            .filter(|(key, _)| &key.namespace == namespace)
            .map(|(file, (upload, size))| PublishedFile {
                file: file.clone(),
                upload: *upload,
                size: *size,
            })
            .collect();
        files.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(files)
    }

    fn set_quotas(&self, quotas: HashMap<Namespace, Quota>) {
        lock(&self.accounts).set_quotas(quotas);
    }

    async fn admit(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error> {
        let stored = self.bytes_stored_if_limited(namespace);
        Ok(lock(&self.accounts).admit(id, namespace, size, stored, publishes)?)
    }

    async fn declare(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error> {
        let stored = self.bytes_stored_if_limited(namespace);
        Ok(lock(&self.accounts).declare(id, size, stored, publishes)?)
    }

    async fn retire(&self, id: UploadId) -> Result<(), Error> {
        lock(&self.accounts).retire(id);
        Ok(())
    }

    async fn in_progress(&self, namespace: &Namespace) -> Result<(u64, u64), Error> {
        Ok(lock(&self.accounts).in_progress(namespace))
    }

    async fn await_parts(&self, final_upload: UploadId, parts: &[UploadId]) -> Result<(), Error> {
        let mut pending = lock(&self.pending_finals);
        for part in parts {
            pending.entry(*part).or_default().push(final_upload);
        }
        Ok(())
    }

    async fn part_completed(&self, part: UploadId) -> Result<Vec<UploadId>, Error> {
        Ok(lock(&self.pending_finals).remove(&part).unwrap_or_default())
    }
}
