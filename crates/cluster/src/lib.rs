//! Several tenax nodes on one object store, coordinated through PostgreSQL.
//!
//! [`Cluster`] is both the engine's [`Catalog`] (leases, names, published
//! files, quotas, tus finals) and the object-store backend's [`MetaStore`]
//! (records and data states), so that nothing an upload needs lives in one
//! node's memory and any node serves any request.
//!
//! The one-writer rule is a lease with a fencing token: taking an upload
//! increments `fence` in its row, and every commit of a data state or a
//! record by a node that holds the upload names the fence it took, so a
//! node that lost the upload to another can commit nothing (its request
//! answers 409 `taken-over`). A newer taker never waits for the holder to
//! agree, since the client that sent the newer request has given up on the
//! older one; the holder hears of it through `LISTEN/NOTIFY` and stops its
//! request, and the taker waits (a few seconds at most) for it to let go, so
//! that no part it still uploads lands after the taker's. See
//! docs/cluster.md for the design and its failure modes.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _};
use tenax_core::catalog::{NameLock, OnTakenElsewhere, PublishedFile, Taken};
use tenax_core::{
    Catalog, Error, FileKey, FileName, Namespace, Quota, StorageError, UploadId, UploadRecord,
};
use tenax_objstore::{MetaStore, parse_record, record_json};

/// How long a lease lasts without a commit or a part renewing it. Only the
/// expiry collector looks at it (a taker never waits for it to run out),
/// so it is generous.
const LEASE_TTL: Duration = Duration::from_secs(120);

/// How long a taker waits at most for the node it took an upload from to
/// let go (that node's request stops when it hears of the takeover, after
/// its parts in flight).
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// The channel on which takers announce `ID FENCE`.
const CHANNEL: &str = "tenax_taken";

/// The schema, created at start if missing (under an advisory lock, so that
/// nodes starting together do not race).
const SCHEMA: &[&str] = &[
    "create table if not exists tenax_uploads (
        id text primary key,
        namespace text not null,
        record text not null,
        state bytea,
        fence bigint not null default 0,
        holder text,
        lease_until timestamptz,
        released bigint not null default 0
    )",
    "create table if not exists tenax_names (
        namespace text not null, name text not null, upload text not null,
        primary key (namespace, name)
    )",
    "create table if not exists tenax_published (
        namespace text not null, name text not null, upload text not null, size bigint not null,
        primary key (namespace, name)
    )",
    "create table if not exists tenax_active (
        upload text primary key, namespace text not null, size bigint not null
    )",
    "create index if not exists tenax_active_namespace on tenax_active (namespace)",
    "create table if not exists tenax_finals (
        part text not null, final text not null, primary key (part, final)
    )",
];

/// Why a cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database URL is not valid.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The database could not be reached or set up.
    #[error("cannot set up the cluster database: {0}")]
    Database(#[source] sqlx::Error),
}

/// A node's membership of a cluster; see the crate documentation.
pub struct Cluster {
    pool: PgPool,
    /// This node's name: the `application_name` of its connections, so
    /// that other nodes can tell whether it is alive.
    node: String,
    /// The fence this node last took for each upload, and whether a
    /// request of this node holds it now.
    fences: Mutex<HashMap<UploadId, Held>>,
    quotas: Mutex<HashMap<Namespace, Quota>>,
    on_taken: Arc<OnceLock<OnTakenElsewhere>>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    fence: i64,
    active: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A database failure, as the storage failure it is for the engine: out of
/// reach (503, retry later) or anything else.
fn db(error: sqlx::Error) -> StorageError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StorageError::Unavailable(std::io::Error::other(error)),
        other => StorageError::Io(std::io::Error::other(other)),
    }
}

fn db_error(error: sqlx::Error) -> Error {
    Error::Storage(db(error))
}

fn parse_id(text: &str) -> Result<UploadId, Error> {
    UploadId::parse(text).map_err(|_| {
        Error::Storage(StorageError::Io(std::io::Error::other(format!(
            "the cluster database holds an invalid upload id {text:?}"
        ))))
    })
}

fn size(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The advisory-lock key of a name (the length keeps it unambiguous).
fn name_key(file: &FileKey) -> String {
    let namespace = file.namespace.as_str();
    format!(
        "name:{}:{namespace}:{}",
        namespace.len(),
        file.name.as_str()
    )
}

impl Cluster {
    /// Joins the cluster whose database is at `url` (a `postgres://` URL):
    /// creates the schema if missing and starts listening for takeovers.
    pub async fn connect(url: &str) -> Result<Arc<Cluster>, ClusterError> {
        let mut suffix = [0u8; 4];
        // A clash of names only blurs logs and the liveness check's answer
        // for a few seconds; the fence is what guarantees exclusion.
        let _ = getrandom::fill(&mut suffix);
        let node = format!(
            "tenax-{}-{:02x}{:02x}{:02x}{:02x}",
            std::process::id(),
            suffix[0],
            suffix[1],
            suffix[2],
            suffix[3]
        );
        let options = PgConnectOptions::from_str(url)
            .map_err(ClusterError::Url)?
            .application_name(&node);
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(ClusterError::Database)?;
        let mut tx = pool.begin().await.map_err(ClusterError::Database)?;
        sqlx::query("select pg_advisory_xact_lock(7243001)")
            .execute(&mut *tx)
            .await
            .map_err(ClusterError::Database)?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(ClusterError::Database)?;
        }
        tx.commit().await.map_err(ClusterError::Database)?;
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(ClusterError::Database)?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(ClusterError::Database)?;
        let cluster = Arc::new(Cluster {
            pool,
            node,
            fences: Mutex::default(),
            quotas: Mutex::default(),
            on_taken: Arc::default(),
        });
        tokio::spawn(listen(Arc::downgrade(&cluster), listener));
        tracing::info!(node = %cluster.node, "joined the cluster");
        Ok(cluster)
    }

    /// This node's name in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The fence to commit with: `Some` while a request of this node holds
    /// the upload (then every commit is fenced), `None` for the writes
    /// outside a lease (a completed upload's record marked superseded).
    fn active_fence(&self, id: UploadId) -> Option<i64> {
        lock(&self.fences)
            .get(&id)
            .filter(|held| held.active)
            .map(|held| held.fence)
    }

    /// Records a fence this node took; whether it follows its own last one.
    fn took(&self, id: UploadId, fence: i64) -> bool {
        let mut fences = lock(&self.fences);
        let fresh = fences.get(&id).is_some_and(|held| held.fence + 1 == fence);
        fences.insert(
            id,
            Held {
                fence,
                active: true,
            },
        );
        fresh
    }

    /// After an update that matched no row with the fence: `Fenced` if the
    /// upload exists, else `NotFound`.
    async fn fenced_or_missing(&self, id: UploadId) -> StorageError {
        match sqlx::query("select 1 from tenax_uploads where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
        {
            Ok(Some(_)) => StorageError::Fenced,
            Ok(None) => StorageError::NotFound,
            Err(error) => db(error),
        }
    }

    /// Waits (up to [`TAKEOVER_WAIT`]) until the holder of `fence` has let
    /// the upload go, or its node is gone.
    async fn wait_for_release(&self, id: UploadId, fence: i64, holder: &str) {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        while tokio::time::Instant::now() < deadline {
            let row = sqlx::query(
                "select u.released >= $2 as released,
                        exists (select 1 from pg_stat_activity where application_name = $3) as alive
                 from tenax_uploads u where u.id = $1",
            )
            .bind(id.to_string())
            .bind(fence)
            .bind(holder)
            .fetch_optional(&self.pool)
            .await;
            match row {
                Ok(Some(row)) => {
                    let released: bool = row.try_get("released").unwrap_or(true);
                    let alive: bool = row.try_get("alive").unwrap_or(false);
                    if released || !alive {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tracing::warn!(%id, holder, "the previous holder did not let go in time");
    }
}

/// Hears takeovers and stops this node's request on each upload taken.
async fn listen(cluster: std::sync::Weak<Cluster>, mut listener: PgListener) {
    loop {
        let notification = match listener.recv().await {
            Ok(notification) => notification,
            Err(error) => {
                tracing::warn!(%error, "cluster notifications interrupted");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some((id, fence)) = notification.payload().split_once(' ') else {
            continue;
        };
        let (Ok(id), Ok(fence)) = (UploadId::parse(id), fence.parse::<i64>()) else {
            continue;
        };
        let ours = lock(&cluster.fences).get(&id).copied();
        if ours.is_some_and(|held| held.active && held.fence < fence)
            && let Some(hook) = cluster.on_taken.get()
        {
            hook(id);
        }
    }
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
        tokio::spawn(async move {
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
            .bind(format!("{id} {fence}"))
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
        tokio::spawn(async move {
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
            return self.count_in_progress(id, namespace, size, new_upload).await;
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

    /// Writes an upload's record or data state; fenced (and renewing the
    /// lease) while a request of this node holds the upload.
    async fn write_row(&self, id: UploadId, value: RowValue) -> Result<(), StorageError> {
        let fence = self.active_fence(id);
        let ttl = LEASE_TTL.as_secs_f64();
        let query = match value {
            RowValue::Record(json) => sqlx::query(
                "update tenax_uploads set record = $2,
                     lease_until = case when $3::bigint is null then lease_until
                                   else now() + make_interval(secs => $4) end
                 where id = $1 and ($3::bigint is null or fence = $3)",
            )
            .bind(id.to_string())
            .bind(json),
            RowValue::State(state) => sqlx::query(
                "update tenax_uploads set state = $2,
                     lease_until = case when $3::bigint is null then lease_until
                                   else now() + make_interval(secs => $4) end
                 where id = $1 and ($3::bigint is null or fence = $3)",
            )
            .bind(id.to_string())
            .bind(state),
        };
        let done = query
            .bind(fence)
            .bind(ttl)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.fenced_or_missing(id).await);
        }
        Ok(())
    }
}

/// What [`Cluster::write_row`] writes.
enum RowValue {
    Record(String),
    /// `None` clears it.
    State(Option<Vec<u8>>),
}

#[async_trait]
impl MetaStore for Cluster {
    async fn create(&self, record: &UploadRecord, state: Bytes) -> Result<(), StorageError> {
        let json = record_json(record)?;
        sqlx::query(
            "insert into tenax_uploads (id, namespace, record, state) values ($1, $2, $3, $4)",
        )
        .bind(record.id.to_string())
        .bind(record.namespace.as_str())
        .bind(json)
        .bind(state.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn record(&self, id: UploadId) -> Result<UploadRecord, StorageError> {
        let row = sqlx::query("select record from tenax_uploads where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?;
        parse_record(
            &format!("record {id}"),
            row.get::<&str, _>("record").as_bytes(),
        )
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.write_row(record.id, RowValue::Record(record_json(record)?))
            .await
    }

    async fn records(&self) -> Result<Vec<UploadRecord>, StorageError> {
        let rows = sqlx::query("select id, record from tenax_uploads")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let id: &str = row.get("id");
            match parse_record(
                &format!("record {id}"),
                row.get::<&str, _>("record").as_bytes(),
            ) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!(%error, id, "skipping unreadable upload record"),
            }
        }
        Ok(records)
    }

    async fn state(&self, id: UploadId) -> Result<Option<Bytes>, StorageError> {
        let row = sqlx::query("select state from tenax_uploads where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row
            .and_then(|row| row.get::<Option<Vec<u8>>, _>("state"))
            .map(Bytes::from))
    }

    async fn put_state(&self, id: UploadId, state: Bytes) -> Result<(), StorageError> {
        self.write_row(id, RowValue::State(Some(state.to_vec())))
            .await
    }

    async fn clear_state(&self, id: UploadId) -> Result<(), StorageError> {
        match self.write_row(id, RowValue::State(None)).await {
            Err(StorageError::NotFound) => Ok(()),
            other => other,
        }
    }

    async fn remove(&self, id: UploadId) -> Result<(), StorageError> {
        sqlx::query("delete from tenax_uploads where id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn probe(&self) -> Result<(), StorageError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn before_part(&self, id: UploadId) -> Result<(), StorageError> {
        let Some(fence) = self.active_fence(id) else {
            return Ok(());
        };
        let done = sqlx::query(
            "update tenax_uploads set lease_until = now() + make_interval(secs => $3)
             where id = $1 and fence = $2",
        )
        .bind(id.to_string())
        .bind(fence)
        .bind(LEASE_TTL.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.fenced_or_missing(id).await);
        }
        Ok(())
    }
}
