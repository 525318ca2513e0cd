//! Concatenation: partial uploads, each written on its own, joined in
//! order into a final upload, at once when they are all complete or as
//! soon as the last of them completes.

use std::sync::Arc;

use tenax_protocol::UploadId;

use super::Engine;
use super::append::AppendOptions;
use crate::error::Error;
use crate::record::{Concat, NewUpload, Status};
use crate::storage::StorageError;

/// The most parts one final upload may name. Each part is named once, so
/// assembling writes each part's bytes once more, at most.
pub const MAX_CONCAT_PARTS: usize = 1000;

impl Engine {
    /// Creates a final upload as the concatenation of partial uploads, in
    /// order. When every part is finished, the final upload is assembled
    /// and complete when this returns. With `allow_unfinished`, parts may
    /// still be in progress: the final upload is assembled as soon as
    /// the last of them completes. Nothing is created when a part is
    /// unknown, cancelled, not a partial upload, or unfinished without
    /// `allow_unfinished`, when a part is named twice, or when there are
    /// more than [`MAX_CONCAT_PARTS`]. The final's size counts against the
    /// quotas at its creation, before anything is assembled.
    pub async fn concatenate(
        &self,
        parts: Vec<UploadId>,
        new: NewUpload,
        allow_unfinished: bool,
    ) -> Result<UploadId, Error> {
        if parts.len() > MAX_CONCAT_PARTS {
            return Err(Error::TooManyParts {
                limit: MAX_CONCAT_PARTS,
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(parts.len());
        if let Some(repeated) = parts.iter().find(|part| !seen.insert(**part)) {
            return Err(Error::RepeatedPart(*repeated));
        }
        let mut total = Some(0u64);
        let mut unfinished = Vec::new();
        for &part in &parts {
            // Read without a lease: a part's writer, if any, must not be stopped.
            let snapshot = self.peek(part).await?;
            if snapshot.record.namespace != new.namespace {
                return Err(Error::NotFound);
            }
            match (&snapshot.record.status, &snapshot.record.concat) {
                (Status::Complete(info), Some(Concat::Partial)) => {
                    total = total.map(|total| total + info.size);
                }
                (Status::Active, Some(Concat::Partial)) if allow_unfinished => {
                    total = total
                        .zip(snapshot.record.total)
                        .map(|(total, size)| total + size);
                    unfinished.push(part);
                }
                (Status::Cancelled, _) => return Err(Error::Gone),
                (Status::Expired, _) => return Err(Error::Expired),
                _ => return Err(Error::NotConcatenable(part)),
            }
        }
        let new = NewUpload {
            total,
            concat: Some(Concat::Final(parts)),
            ..new
        };
        let id = self.create(new).await?;
        if unfinished.is_empty() {
            self.assemble(id).await?;
        } else {
            self.inner.catalog.await_parts(id, &unfinished).await?;
        }
        Ok(id)
    }

    /// Assembles a final upload from its parts if they are all complete;
    /// returns whether the final upload is complete.
    pub(super) async fn assemble(&self, id: UploadId) -> Result<bool, Error> {
        let mut lease = self.lease(id).await?;
        let Some(Concat::Final(parts)) = lease.record().concat.clone() else {
            return Ok(false);
        };
        if !matches!(lease.record().status, Status::Active) {
            return Ok(true);
        }
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            let snapshot = self.peek(part).await?;
            match &snapshot.record.status {
                Status::Complete(info) => sources.push((snapshot.record.clone(), info.size)),
                Status::Active => return Ok(false),
                Status::Cancelled => return Err(Error::Gone),
                Status::Expired => return Err(Error::Expired),
            }
        }
        if lease.held() > 0 {
            // An assembly that a crash interrupted: start it over.
            lease.truncate(0).await?;
        }
        lease
            .set_total(sources.iter().map(|(_, size)| size).sum())
            .await?;
        let storage = Arc::clone(&self.inner.storage);
        for (record, size) in sources {
            let stream = storage.read(&record, 0..size).await?;
            let outcome = lease.append(stream, AppendOptions::up_to(size)).await?;
            if outcome.written != size {
                return Err(StorageError::Io(std::io::Error::other(format!(
                    "concatenation read {} of {size} bytes of {}",
                    outcome.written, record.id
                )))
                .into());
            }
        }
        lease.finalize().await?;
        Ok(true)
    }

    /// A partial upload completed: assemble the final uploads waiting for it.
    pub(super) async fn part_completed(&self, part: UploadId) -> Result<(), Error> {
        for id in self.inner.catalog.part_completed(part).await? {
            // A task of its own: the part's lease is still held here.
            self.spawn_assembly(id);
        }
        Ok(())
    }

    /// Assembles a final upload in a task of its own (a plain function, so
    /// that the recursion through `finalize` is not in a future's type).
    pub(super) fn spawn_assembly(&self, id: UploadId) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.assemble(id).await {
                tracing::error!(%id, %error, "assembling a final upload failed");
            }
        });
    }
}
