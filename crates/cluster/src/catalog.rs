//! The engine's [`Catalog`] in PostgreSQL: leases, names, published
//! files, quotas and tus finals.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row as _};
use tenax_core::catalog::{NameLock, OnTakenElsewhere, PublishedFile, Taken};
use tenax_core::{
    Catalog, Error, FileKey, FileName, Namespace, Quota, StorageError, UploadId, UploadRecord,
};

use crate::{CHANNEL, Cluster, LEASE_TTL, db_error, lock, parse_id, size, taken_payload, unsigned};

/// The advisory-lock key of a name (the length keeps it unambiguous).
fn name_key(file: &FileKey) -> String {
    let namespace = file.namespace.as_str();
    format!(
        "name:{}:{namespace}:{}",
        namespace.len(),
        file.name.as_str()
    )
}
/// An advisory lock on a name, held on its own connection.
struct PgNameLock {
    conn: Option<PoolConnection<Postgres>>,
    key: String,
}

impl Drop for PgNameLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (the process is ending): the connection
            // closes, and with it the session's locks.
            conn.close_on_drop();
            return;
        };
        runtime.spawn(async move {
            let unlocked = sqlx::query("select pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Closing the session releases its locks.
                conn.close_on_drop();
            }
        });
    }
}

#[async_trait]
impl Catalog for Cluster {
    // The database is the catalog; nothing to rebuild.
    fn restore(&self, _records: &[UploadRecord]) {}

    fn on_taken_elsewhere(&self, hook: OnTakenElsewhere) {
        let _ = self.on_taken.set(hook);
    }

    async fn take(&self, id: UploadId) -> Result<Taken, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(
            "with old as (select fence, holder, lease_until > now() as busy
                          from tenax_uploads where id = $1 for update)
             update tenax_uploads u
             set fence = old.fence + 1, holder = $2,
                 lease_until = now() + make_interval(secs => $3)
             from old where u.id = $1
             returning u.fence, old.holder, coalesce(old.busy, false) as busy",
        )
        .bind(id.to_string())
        .bind(&self.node)
        .bind(LEASE_TTL.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            // No such upload: loading it answers `NotFound`.
            return Ok(Taken { fresh: true });
        };
        let fence: i64 = row.try_get("fence").map_err(db_error)?;
        let holder: Option<String> = row.try_get("holder").map_err(db_error)?;
        let busy: bool = row.try_get("busy").map_err(db_error)?;
        sqlx::query("select pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(taken_payload(id, fence))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let fresh = self.took(id, fence);
        if busy && let Some(holder) = holder.filter(|holder| *holder != self.node) {
            self.wait_for_release(id, fence - 1, &holder).await;
        }
        Ok(Taken { fresh })
    }

    async fn try_take(&self, id: UploadId) -> Result<Option<Taken>, Error> {
        let row = sqlx::query(
            "update tenax_uploads
             set fence = fence + 1, holder = $2, lease_until = now() + make_interval(secs => $3)
             where id = $1 and (lease_until is null or lease_until < now())
             returning fence",
        )
        .bind(id.to_string())
        .bind(&self.node)
        .bind(LEASE_TTL.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        match row {
            Some(row) => {
                let fence: i64 = row.try_get("fence").map_err(db_error)?;
                Ok(Some(Taken {
                    fresh: self.took(id, fence),
                }))
            }
            None => match self.fenced_or_missing(id).await {
                StorageError::Fenced => Ok(None),
                StorageError::NotFound => Ok(Some(Taken { fresh: true })),
                error => Err(error.into()),
            },
        }
    }

    fn release(&self, id: UploadId) {
        let fence = {
            let mut fences = lock(&self.fences);
            let Some(held) = fences.get_mut(&id).filter(|held| held.active) else {
                return;
            };
            held.active = false;
            held.fence
        };
        let pool = self.pool.clone();
        // Without a runtime (the process is ending) the lease runs out.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let released = sqlx::query(
                "update tenax_uploads
                 set released = greatest(released, $2),
                     lease_until = case when fence = $2 then null else lease_until end
                 where id = $1",
            )
            .bind(id.to_string())
            .bind(fence)
            .execute(&pool)
            .await;
            if let Err(error) = released {
                tracing::warn!(%id, %error, "cannot release an upload's lease; it runs out");
            }
        });
    }

    async fn lock_name(&self, file: &FileKey) -> Result<NameLock, Error> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let key = name_key(file);
        sqlx::query("select pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(Box::new(PgNameLock {
            conn: Some(conn),
            key,
        }))
    }

    async fn current(&self, file: &FileKey) -> Result<Option<UploadId>, Error> {
        let row = sqlx::query("select upload from tenax_names where namespace = $1 and name = $2")
            .bind(file.namespace.as_str())
            .bind(file.name.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| parse_id(row.get::<&str, _>("upload")))
            .transpose()
    }

    async fn set_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error> {
        sqlx::query(
            "insert into tenax_names (namespace, name, upload) values ($1, $2, $3)
             on conflict (namespace, name) do update set upload = excluded.upload",
        )
        .bind(file.namespace.as_str())
        .bind(file.name.as_str())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn forget_current(&self, file: &FileKey, id: UploadId) -> Result<(), Error> {
        sqlx::query("delete from tenax_names where namespace = $1 and name = $2 and upload = $3")
            .bind(file.namespace.as_str())
            .bind(file.name.as_str())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn published(&self, file: &FileKey) -> Result<Option<(UploadId, u64)>, Error> {
        let row = sqlx::query(
            "select upload, size from tenax_published where namespace = $1 and name = $2",
        )
        .bind(file.namespace.as_str())
        .bind(file.name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok((
                parse_id(row.get::<&str, _>("upload"))?,
                unsigned(row.get("size")),
            ))
        })
        .transpose()
    }

    async fn publish(
        &self,
        file: &FileKey,
        id: UploadId,
        size: u64,
    ) -> Result<Option<UploadId>, Error> {
        let row = sqlx::query(
            "with old as (select upload from tenax_published
                          where namespace = $1 and name = $2 for update)
             insert into tenax_published (namespace, name, upload, size) values ($1, $2, $3, $4)
             on conflict (namespace, name) do update set upload = excluded.upload, size = excluded.size
             returning (select upload from old) as previous",
        )
        .bind(file.namespace.as_str())
        .bind(file.name.as_str())
        .bind(id.to_string())
        .bind(self::size(size))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        let previous: Option<&str> = row.try_get("previous").map_err(db_error)?;
        match previous {
            Some(previous) if previous != id.to_string() => Ok(Some(parse_id(previous)?)),
            _ => Ok(None),
        }
    }

    async fn unpublish(&self, file: &FileKey, id: UploadId) -> Result<bool, Error> {
        let done = sqlx::query(
            "delete from tenax_published where namespace = $1 and name = $2 and upload = $3",
        )
        .bind(file.namespace.as_str())
        .bind(file.name.as_str())
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn published_in(&self, namespace: &Namespace) -> Result<Vec<PublishedFile>, Error> {
        let rows = sqlx::query(
            "select name, upload, size from tenax_published where namespace = $1 order by name",
        )
        .bind(namespace.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut files = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(name) = FileName::new(row.get::<&str, _>("name")) else {
                continue;
            };
            files.push(PublishedFile {
                file: FileKey {
                    namespace: namespace.clone(),
                    name,
                },
                upload: parse_id(row.get::<&str, _>("upload"))?,
                size: unsigned(row.get("size")),
            });
        }
        Ok(files)
    }

    fn set_quotas(&self, quotas: HashMap<Namespace, Quota>) {
        *lock(&self.quotas) = quotas;
    }

    async fn admit(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error> {
        self.account(id, namespace, size, publishes, true).await
    }

    async fn declare(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
    ) -> Result<(), Error> {
        self.account(id, namespace, size, publishes, false).await
    }

    async fn retire(&self, id: UploadId) -> Result<(), Error> {
        sqlx::query("delete from tenax_active where upload = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn in_progress(&self, namespace: &Namespace) -> Result<(u64, u64), Error> {
        let row = sqlx::query(
            "select count(*) as uploads, coalesce(sum(size), 0)::bigint as bytes
             from tenax_active where namespace = $1",
        )
        .bind(namespace.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok((unsigned(row.get("uploads")), unsigned(row.get("bytes"))))
    }

    async fn await_parts(&self, final_upload: UploadId, parts: &[UploadId]) -> Result<(), Error> {
        for part in parts {
            sqlx::query(
                "insert into tenax_finals (part, final) values ($1, $2) on conflict do nothing",
            )
            .bind(part.to_string())
            .bind(final_upload.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    async fn part_completed(&self, part: UploadId) -> Result<Vec<UploadId>, Error> {
        let rows = sqlx::query("delete from tenax_finals where part = $1 returning final")
            .bind(part.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| parse_id(row.get::<&str, _>("final")))
            .collect()
    }
}
impl Cluster {
    /// Admits a new upload or declares a size, under the namespace's
    /// advisory lock so that concurrent creations on any node cannot
    /// overshoot a quota together.
    async fn account(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        publishes: bool,
        new_upload: bool,
    ) -> Result<(), Error> {
        let quota = lock(&self.quotas)
            .get(namespace)
            .copied()
            .unwrap_or_default();
        if quota == Quota::default() {
            // Nothing to check, so no lock to queue on: just count it.
            return self
                .count_in_progress(id, namespace, size, new_upload)
                .await;
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("quota:{}", namespace.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let row = sqlx::query(
            "select count(*) filter (where upload <> $2) as uploads,
                    coalesce(sum(size) filter (where upload <> $2), 0)::bigint as bytes,
                    count(*) filter (where upload = $2) as known
             from tenax_active where namespace = $1",
        )
        .bind(namespace.as_str())
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if !new_upload && row.get::<i64, _>("known") == 0 {
            // Not in progress (complete or gone): nothing to count.
            return Ok(());
        }
        let stored = if quota.max_bytes_stored.is_some() {
            let row = sqlx::query(
                "select coalesce(sum(size), 0)::bigint as bytes from tenax_published where namespace = $1",
            )
            .bind(namespace.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            unsigned(row.get("bytes"))
        } else {
            0
        };
        quota.check(
            (unsigned(row.get("uploads")), unsigned(row.get("bytes"))),
            stored,
            size,
            publishes,
            new_upload,
        )?;
        sqlx::query(
            "insert into tenax_active (upload, namespace, size) values ($1, $2, $3)
             on conflict (upload) do update set size = excluded.size",
        )
        .bind(id.to_string())
        .bind(namespace.as_str())
        .bind(self::size(size))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Records an upload in progress and its declared size, unchecked; a
    /// size declared later only updates an upload still counted.
    async fn count_in_progress(
        &self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        new_upload: bool,
    ) -> Result<(), Error> {
        let query = if new_upload {
            sqlx::query(
                "insert into tenax_active (upload, namespace, size) values ($1, $2, $3)
                 on conflict (upload) do update set size = excluded.size",
            )
        } else {
            sqlx::query("update tenax_active set size = $3 where upload = $1 and namespace = $2")
        };
        query
            .bind(id.to_string())
            .bind(namespace.as_str())
            .bind(self::size(size))
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
