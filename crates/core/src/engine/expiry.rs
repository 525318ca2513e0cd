//! The expiry collector: uploads idle past the time to live are marked
//! expired and their data removed; the records of long-expired uploads go.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tenax_protocol::UploadId;

use super::lease::Release;
use super::{Engine, Loaded, Slot, lock, now, outbox_error};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::metric;
use crate::record::Status;
use crate::storage::StorageError;

/// What one pass of the expiry collector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Active uploads found idle past the time to live: marked expired,
    /// their data removed.
    pub expired: usize,
    /// Records of expired uploads removed after the retention period.
    pub removed: usize,
    /// Uploads due for collection but leased (receiving) right now: left
    /// alone until a later pass.
    pub busy: usize,
    /// Uploads whose collection failed (logged; retried at the next pass).
    pub failed: usize,
}

/// What the collector did with one upload.
enum Collected {
    Nothing,
    Expired,
    Removed,
    Busy,
}

impl Engine {
    /// Whether an active upload last active at `updated_at` has expired at
    /// `at`. A stored `updated_at` lags the last activity by up to
    /// [`activity_granularity`], so that much more is allowed: an upload a
    /// client may still have been sending to is never expired (a restart
    /// with a short time to live expired such uploads, found by the
    /// power-cut torture), while one idle for longer does not come back to
    /// life at a restart.
    pub(super) fn is_idle(&self, updated_at: u64, at: u64) -> bool {
        let ttl = self.inner.config.upload_ttl;
        updated_at
            .saturating_add(activity_granularity(ttl))
            .saturating_add(ttl.as_secs())
            < at
    }

    /// Counts an upload found expired, once (and not at all if it expired
    /// before the engine opened: it was never counted as active).
    pub(super) fn count_expired(&self, slot: &Slot, updated_at: u64) {
        let ttl = self.inner.config.upload_ttl;
        let expiry = updated_at
            .saturating_add(activity_granularity(ttl))
            .saturating_add(ttl.as_secs());
        if expiry >= self.inner.opened_at && !slot.expired.swap(true, Ordering::AcqRel) {
            metrics::counter!(metric::EXPIRED).increment(1);
            metrics::gauge!(metric::ACTIVE).decrement(1);
        }
    }

    /// One pass of the expiry collector. Every active upload idle for
    /// longer than the time to live (by its in-memory last activity when it
    /// is loaded, else by its record) is marked [`Status::Expired`] and its
    /// data removed; the record of an upload expired for longer than
    /// `expired_retention` is removed. An upload that is leased right now
    /// (receiving, or being asked about) is skipped: it is not idle.
    pub async fn collect_expired(&self) -> Result<CollectReport, Error> {
        let retention = self.inner.config.expired_retention.as_secs();
        let mut report = CollectReport::default();
        for record in self.inner.storage.list().await? {
            // The stored `updated_at` is never newer than the in-memory one,
            // so an upload whose record is not due is not due at all.
            let due = match record.status {
                Status::Active => self.is_idle(record.updated_at, now()),
                Status::Expired => record.updated_at.saturating_add(retention) < now(),
                Status::Complete(_) | Status::Cancelled => false,
            };
            if !due {
                continue;
            }
            match self.collect_one(record.id).await {
                Ok(Collected::Nothing) => {}
                Ok(Collected::Expired) => report.expired += 1,
                Ok(Collected::Removed) => report.removed += 1,
                Ok(Collected::Busy) => report.busy += 1,
                Err(error) => {
                    tracing::warn!(id = %record.id, %error, "collecting an expired upload failed");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn collect_one(&self, id: UploadId) -> Result<Collected, Error> {
        let slot = self.slot(id);
        let Ok(mut guard) = Arc::clone(&slot.state).try_lock_owned() else {
            return Ok(Collected::Busy);
        };
        let Some(taken) = self.inner.catalog.try_take(id).await? else {
            return Ok(Collected::Busy);
        };
        let _release = Release {
            catalog: Arc::clone(&self.inner.catalog),
            id,
        };
        if !taken.fresh {
            *guard = None;
        }
        let record = match guard.as_ref().filter(|loaded| !loaded.dirty) {
            Some(loaded) => loaded.record.clone(),
            None => match self.inner.storage.load(id).await {
                Ok(stored) => stored.record,
                Err(StorageError::NotFound) => return Ok(Collected::Nothing),
                Err(error) => return Err(error.into()),
            },
        };
        let at = now();
        match record.status {
            Status::Active if self.is_idle(record.updated_at, at) => {
                // Whatever fails below, the next lease reloads from storage.
                // This also closes the data an idle upload kept open.
                *guard = None;
                let last_active = record.updated_at;
                let mut expired = record;
                expired.status = Status::Expired;
                expired.updated_at = at;
                expired.staged_from = None;
                let event = Event::new(EventKind::Expired, &expired, 0, at);
                self.inner
                    .hooks
                    .prepare(&event)
                    .await
                    .map_err(outbox_error)?;
                // The record first: a crash before the data goes leaves a
                // tombstone whose data the removal discards again.
                self.inner.storage.put_record(&expired).await?;
                self.inner.storage.discard(id).await?;
                self.inner
                    .hooks
                    .commit(&event.id)
                    .await
                    .map_err(outbox_error)?;
                self.inner.hooks.forget(id);
                self.count_expired(&slot, last_active);
                self.inner.catalog.retire(id).await?;
                slot.acknowledged.store(0, Ordering::Release);
                tracing::info!(%id, last_active, "upload expired");
                *guard = Some(Loaded {
                    record: expired,
                    held: 0,
                    hasher: None,
                    append: None,
                    dirty: false,
                    persisted_at: at,
                });
                Ok(Collected::Expired)
            }
            Status::Expired
                if record
                    .updated_at
                    .saturating_add(self.inner.config.expired_retention.as_secs())
                    < at =>
            {
                *guard = None;
                self.inner.storage.discard(id).await?;
                self.inner.storage.remove_record(id).await?;
                if let Some(file) = record.file_key() {
                    self.inner.catalog.forget_current(&file, id).await?;
                }
                lock(&self.inner.slots).remove(&id);
                lock(&self.inner.owners).remove(&id);
                tracing::info!(%id, "expired upload forgotten");
                Ok(Collected::Removed)
            }
            _ => Ok(Collected::Nothing),
        }
    }

    /// Runs [`Engine::collect_expired`] now and then every `every`, until
    /// the engine shuts down.
    pub fn spawn_collector(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = engine.inner.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match engine.collect_expired().await {
                    Ok(report) if report == CollectReport::default() => {}
                    Ok(report) => tracing::info!(?report, "expiry collector pass"),
                    Err(error) => tracing::warn!(%error, "expiry collector pass failed"),
                }
            }
        })
    }
}

/// How far a stored `updated_at` may lag the last activity, in seconds: an
/// active upload's record is rewritten just to refresh it at most this
/// often (appends do not pay for it), an hour, or a quarter of the time to
/// live `ttl` when that is shorter.
pub(super) fn activity_granularity(ttl: std::time::Duration) -> u64 {
    (ttl.as_secs() / 4).min(3600)
}
