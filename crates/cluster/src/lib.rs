//! Several tenax nodes on one object store, coordinated through PostgreSQL.
//!
//! [`Cluster`] is both the engine's [`Catalog`] (leases, names, published
//! files, quotas, tus finals) and the object-store backend's [`MetaStore`]
//! (records and data states), so that nothing an upload needs lives in one
//! node's memory and any node serves any request.
//!
//! [`Catalog`]: tenax_core::Catalog
//! [`MetaStore`]: tenax_objstore::MetaStore
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

use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tenax_core::catalog::OnTakenElsewhere;
use tenax_core::{Error, Namespace, Quota, StorageError, UploadId};

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

mod catalog;
mod meta;
mod schema;

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
        // sqlx reads any scheme as PostgreSQL's; a typo should not connect.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ClusterError::Url(sqlx::Error::Configuration(
                "the URL must start with postgres:// or postgresql://".into(),
            )));
        }
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
        for statement in schema::SCHEMA {
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

/// The payload a taker sends on [`CHANNEL`]: `ID FENCE`.
fn taken_payload(id: UploadId, fence: i64) -> String {
    format!("{id} {fence}")
}

/// Reads a [`taken_payload`]; `None` for anything else (another program
/// may notify on the channel).
fn parse_taken(payload: &str) -> Option<(UploadId, i64)> {
    let (id, fence) = payload.split_once(' ')?;
    Some((UploadId::parse(id).ok()?, fence.parse().ok()?))
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
        let Some((id, fence)) = parse_taken(notification.payload()) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_database_url_or_an_unreachable_database_is_a_clear_error() {
        for garbage in ["", "not a url", "http://127.0.0.1/db", "postgres://:x@/"] {
            let refused = Cluster::connect(garbage).await;
            assert!(
                matches!(refused, Err(ClusterError::Url(_))),
                "{garbage:?}: {refused:?}"
            );
        }
        // Port 1 on loopback: nothing listens there.
        let refused = Cluster::connect("postgres://postgres@127.0.0.1:1/tenax").await;
        assert!(
            matches!(refused, Err(ClusterError::Database(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn takeover_notifications_round_trip_and_garbage_is_ignored() {
        let id = UploadId::from_bytes([7; 16]);
        assert_eq!(parse_taken(&taken_payload(id, 42)), Some((id, 42)));
        for garbage in [
            "",
            " ",
            "42",
            &id.to_string(),
            &format!("{id} "),
            &format!("{id} x"),
            &format!("{id} 1 2"),
            &format!("{id}  1"),
            "nothex 1",
            &format!("{id} 99999999999999999999"),
            "\u{0}\u{0} 1",
        ] {
            assert_eq!(parse_taken(garbage), None, "{garbage:?}");
        }
    }
}
