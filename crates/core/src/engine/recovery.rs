//! Opening an engine over what storage holds: pending events resolved,
//! the catalog rebuilt, and concatenations whose parts all completed
//! before a restart assembled.

use std::sync::{Arc, Mutex};

use tenax_protocol::UploadId;
use tokio_util::sync::CancellationToken;

use super::{BodyMemory, Engine, EngineConfig, Inner, lock, now, outbox_error};
use crate::catalog::{Catalog, LocalCatalog};
use crate::error::Error;
use crate::events::{Hooks, NoHooks};
use crate::metric;
use crate::record::{Concat, Status};
use crate::storage::Storage;

impl Engine {
    /// Opens an engine over a storage backend and indexes its uploads.
    pub async fn open(storage: Arc<dyn Storage>, config: EngineConfig) -> Result<Self, Error> {
        Engine::open_with_hooks(storage, config, Arc::new(NoHooks)).await
    }

    /// Like [`Engine::open`], with upload events going to `hooks`, which
    /// first resolves the events a crash left pending.
    pub async fn open_with_hooks(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
        hooks: Arc<dyn Hooks>,
    ) -> Result<Self, Error> {
        Engine::open_with_catalog(storage, config, hooks, Arc::new(LocalCatalog::new())).await
    }

    /// Like [`Engine::open_with_hooks`], sharing names, published files,
    /// quotas and leases through `catalog` (several nodes on one object
    /// store share one).
    pub async fn open_with_catalog(
        storage: Arc<dyn Storage>,
        config: EngineConfig,
        hooks: Arc<dyn Hooks>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Self, Error> {
        let records = storage.list().await?;
        hooks.recover(&records).await.map_err(outbox_error)?;
        let opened_at = now();
        let live = records
            .iter()
            .filter(|record| {
                matches!(record.status, Status::Active)
                    && record.updated_at
                        + super::expiry::activity_granularity(config.upload_ttl)
                        + config.upload_ttl.as_secs()
                        >= opened_at
            })
            .count();
        metrics::gauge!(metric::ACTIVE).increment(live as f64);
        catalog.restore(&records);
        let complete: std::collections::HashSet<UploadId> = records
            .iter()
            .filter(|record| matches!(record.status, Status::Complete(_)))
            .map(|record| record.id)
            .collect();
        let ready_finals: Vec<UploadId> = records
            .iter()
            .filter(|record| match (&record.status, &record.concat) {
                (Status::Active, Some(Concat::Final(parts))) => {
                    parts.iter().all(|part| complete.contains(part))
                }
                _ => false,
            })
            .map(|record| record.id)
            .collect();
        let engine = Engine {
            inner: Arc::new(Inner {
                storage,
                body_memory: BodyMemory::new(config.body_memory),
                config,
                slots: Mutex::default(),
                catalog: Arc::clone(&catalog),
                owners: Mutex::default(),
                shutdown: CancellationToken::new(),
                opened_at,
                hooks,
                last_created: Mutex::new(
                    records
                        .iter()
                        .map(|record| record.creation_order().0)
                        .max()
                        .unwrap_or(0),
                ),
            }),
        };
        let weak = Arc::downgrade(&engine.inner);
        catalog.on_taken_elsewhere(Arc::new(move |id| {
            if let Some(inner) = weak.upgrade() {
                Engine { inner }.taken_elsewhere(id);
            }
        }));
        // Final uploads whose parts all completed before a restart.
        for id in ready_finals {
            engine.spawn_assembly(id);
        }
        Ok(engine)
    }

    /// Another node took the upload: the request writing it here stops
    /// (its commits would be refused anyway). What this process remembers
    /// of the upload is dropped at its next lease here, which the catalog
    /// reports as not fresh.
    fn taken_elsewhere(&self, id: UploadId) {
        let slot = lock(&self.inner.slots).get(&id).cloned();
        if let Some(slot) = slot
            && let Some(holder) = lock(&slot.holder).as_ref()
        {
            holder.cancel();
        }
    }
}
