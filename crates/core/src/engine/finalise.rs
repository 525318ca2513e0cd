//! Finalisation: the digests completed, the record marked complete, the
//! file published under its name (superseding the upload it showed
//! before), and the completion event released.

use std::sync::Arc;

use futures_util::StreamExt as _;
use tenax_protocol::{FileName, Namespace, UploadId};

use super::{Engine, Lease, Snapshot, lock, now, outbox_error};
use crate::catalog::PublishedFile;
use crate::error::Error;
use crate::events::{Event, EventKind, event_id};
use crate::metric;
use crate::record::{Concat, FileKey, FinalInfo, Status, UploadRecord};
use crate::storage::StorageError;
use tenax_protocol::gcs::Live;

impl Engine {
    /// Publishes a complete upload under its name if that is not done yet,
    /// and records that it is.
    pub(super) async fn publish(&self, record: &mut UploadRecord) -> Result<(), Error> {
        let Status::Complete(info) = &mut record.status else {
            return Ok(());
        };
        if info.published {
            return Ok(());
        }
        self.inner.storage.publish(record).await?;
        if let Status::Complete(info) = &mut record.status {
            info.published = true;
        }
        self.inner.storage.put_record(record).await?;
        if let (Some(file), Status::Complete(info)) = (record.file_key(), &record.status) {
            let previous = self
                .inner
                .catalog
                .publish(&file, record.id, info.size)
                .await?;
            if let Some(previous) = previous {
                self.supersede(previous).await?;
            }
        }
        // The file is in place: its completion may be announced (this also
        // releases the event of a publication a crash interrupted).
        self.inner
            .hooks
            .commit(&event_id(record.id, EventKind::Completed, 0))
            .await
            .map_err(outbox_error)?;
        Ok(())
    }

    /// Records that a completed upload no longer shows under its name, so
    /// that a restart does not show it again (found by the `engine_model`
    /// fuzz target: with completion times in seconds, a restart could pick
    /// the older of two uploads finished within a second, or bring back an
    /// older upload after the one that replaced it was cancelled).
    pub(super) async fn supersede(&self, id: UploadId) -> Result<(), Error> {
        let mut stored = match self.inner.storage.load(id).await {
            Ok(stored) => stored,
            Err(StorageError::NotFound) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let Status::Complete(info) = &mut stored.record.status else {
            return Ok(());
        };
        info.superseded = true;
        self.inner.storage.put_record(&stored.record).await?;
        // A copy of the old record in memory must not be written back over
        // this one: the next lease reloads it. A request holding it right
        // now (rare: the upload is complete) may still do so.
        let slot = lock(&self.inner.slots).get(&id).cloned();
        if let Some(slot) = slot
            && let Ok(mut guard) = slot.state.try_lock()
            && let Some(loaded) = guard.as_mut()
        {
            loaded.dirty = true;
        }
        Ok(())
    }

    /// The completed upload whose bytes are published under `file`.
    pub async fn published(&self, file: &FileKey) -> Result<Snapshot, Error> {
        let (id, _) = self
            .inner
            .catalog
            .published(file)
            .await?
            .ok_or(Error::NotFound)?;
        let snapshot = self.peek(id).await?;
        match snapshot.record.status {
            Status::Complete(_) => Ok(snapshot),
            _ => Err(Error::NotFound),
        }
    }

    /// Every published file of a namespace: its name and the completed
    /// upload it shows, sorted by name. A name whose upload cannot be read
    /// is left out.
    pub async fn published_files(
        &self,
        namespace: &Namespace,
    ) -> Result<Vec<(FileName, Snapshot)>, Error> {
        let listed = self.inner.catalog.published_in(namespace).await?;
        let mut files = Vec::with_capacity(listed.len());
        for PublishedFile { file, upload, .. } in listed {
            if let Ok(snapshot) = self.peek(upload).await
                && matches!(snapshot.record.status, Status::Complete(_))
            {
                files.push((file.name, snapshot));
            }
        }
        Ok(files)
    }
}

impl Lease {
    /// Declares digests an object of the GCS JSON API must have when it
    /// completes (an `x-goog-hash` on the request that completes it), kept
    /// with its record; [`Lease::finalize`] checks them. Nothing to do for
    /// an empty declaration or another upload.
    pub async fn declare_digests(
        &mut self,
        md5: Option<String>,
        crc32c: Option<String>,
    ) -> Result<(), Error> {
        if md5.is_none() && crc32c.is_none() || !matches!(self.loaded.record.status, Status::Active)
        {
            return Ok(());
        }
        let mut record = self.loaded.record.clone();
        // Only an object of the GCS JSON API takes them: a plain seed
        // upload keeps its own final answer.
        let Some(rules) = record.object.as_mut() else {
            return Ok(());
        };
        if md5.is_some() {
            rules.md5 = md5;
        }
        if crc32c.is_some() {
            rules.crc32c = crc32c;
        }
        if record != self.loaded.record {
            self.engine.inner.storage.put_record(&record).await?;
            self.loaded.record = record;
        }
        Ok(())
    }

    /// Finalises the upload at its current size, which must equal the total
    /// if one is known. Idempotent on a complete upload.
    pub async fn finalize(&mut self) -> Result<FinalInfo, Error> {
        let held = self.loaded.held;
        match &self.loaded.record.status {
            Status::Complete(info) => return Ok(info.clone()),
            Status::Cancelled => return Err(Error::Gone),
            Status::Expired => return Err(Error::Expired),
            Status::Active => {}
        }
        if let Some(total) = self.loaded.record.total
            && total != held
        {
            return Err(Error::Incomplete { held, total });
        }
        let storage = Arc::clone(&self.engine.inner.storage);
        if let Some(mut writer) = self.loaded.append.take() {
            writer.sync().await?;
        }
        storage.seal(self.id(), held).await?;
        let digests = match self.loaded.hasher.take() {
            Some(hasher) if hasher.fed() == held => hasher.finish().await,
            _ => None,
        };
        let mut digests = digests.unwrap_or_default();
        if digests.upto() != held || held == 0 {
            // The server restarted during the upload: hash the prefix again.
            digests = self.engine.new_digests(&self.loaded.record);
            let mut stream = storage.read(&self.loaded.record, 0..held).await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(StorageError::from)?;
                digests = tokio::task::spawn_blocking(move || {
                    digests.update(&chunk);
                    digests
                })
                .await
                .map_err(|join| StorageError::Io(std::io::Error::other(join)))?;
            }
        }
        let values = digests.finish();
        // An object of the GCS JSON API: its declared digests and its
        // preconditions decide whether it completes (docs/protocol.md
        // §7.4, §7.5). A refusal keeps the bytes and the upload active.
        let generation = check_object(&self.engine, &self.loaded.record, &values).await?;
        let completed_at = now();
        let info = FinalInfo {
            published: self.loaded.record.name.is_none(),
            size: held,
            sha256: values.sha256,
            md5: values.md5,
            crc32c: values.crc32c,
            completed_at,
            superseded: false,
            generation: Some(generation),
        };
        let mut record = self.loaded.record.clone();
        record.total = Some(held);
        record.updated_at = completed_at;
        record.status = Status::Complete(info.clone());
        // The completion event is pending before the upload is complete,
        // and released once the file is in place: a crash anywhere in
        // between leaves it pending, and recovery releases it when the
        // record shows the file published.
        let event = Event::new(EventKind::Completed, &record, held, completed_at);
        let hooks = Arc::clone(&self.engine.inner.hooks);
        hooks.prepare(&event).await.map_err(outbox_error)?;
        // Record first, then publication, then the record again: a crash in
        // between publishes at the next lease, so the file appears whole.
        storage.put_record(&record).await?;
        self.engine.publish(&mut record).await?;
        hooks.commit(&event.id).await.map_err(outbox_error)?;
        hooks.forget(self.id());
        self.loaded.record = record;
        self.engine.inner.catalog.retire(self.id()).await?;
        metrics::counter!(metric::COMPLETED).increment(1);
        metrics::gauge!(metric::ACTIVE).decrement(1);
        tracing::info!(id = %self.id(), size = held, sha256 = %info.sha256, "upload complete");
        if matches!(self.loaded.record.concat, Some(Concat::Partial)) {
            self.engine.part_completed(self.id()).await?;
        }
        Ok(info)
    }
}

/// The generation this upload publishes, once its declared digests and
/// its preconditions (if it is an object of the GCS JSON API) hold.
async fn check_object(
    engine: &Engine,
    record: &UploadRecord,
    values: &crate::digest::DigestValues,
) -> Result<u64, Error> {
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    let Some(rules) = &record.object else {
        return Ok(now_micros);
    };
    for (algorithm, declared, computed) in [
        ("md5", &rules.md5, values.md5.as_ref()),
        ("crc32c", &rules.crc32c, Some(&values.crc32c)),
    ] {
        // An MD5 the server does not compute (`--no-md5`) cannot be checked.
        if let (Some(declared), Some(computed)) = (declared, computed)
            && declared != computed
        {
            return Err(Error::DigestMismatch {
                algorithm,
                declared: declared.clone(),
                computed: computed.clone(),
            });
        }
    }
    let live = match record.file_key() {
        Some(file) => match engine.published(&file).await {
            Ok(Snapshot {
                record:
                    UploadRecord {
                        status: Status::Complete(info),
                        ..
                    },
                ..
            }) => Some(Live {
                generation: info.generation(),
                metageneration: 1,
            }),
            Ok(_) | Err(Error::NotFound) => None,
            Err(error) => return Err(error),
        },
        None => None,
    };
    rules.preconditions.check(live)?;
    // Generations of one name only grow, whatever the clock does.
    Ok(live.map_or(now_micros, |live| {
        now_micros.max(live.generation.saturating_add(1))
    }))
}
