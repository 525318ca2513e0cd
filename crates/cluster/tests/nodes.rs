//! Two engines ("nodes") sharing one object store and one PostgreSQL
//! database: uploads continue across them, a newer taker fences the older
//! writer out, and names, published files and quotas are shared.
//!
//! Needs the test database that `scripts/test` starts
//! (`TENAX_TEST_DATABASE_URL`); skips loudly without it unless
//! `TENAX_TEST_PG=1` requires it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use object_store::memory::InMemory;
use object_store::path::Path;
use sqlx::Connection as _;
use tenax_cluster::Cluster;
use tenax_core::{
    AppendOptions, Catalog, Engine, EngineConfig, Error, FileKey, FileName, Namespace, NewUpload,
    NoHooks, Quota, QuotaExceeded, Status, StorageError,
};
use tenax_objstore::{MetaStore, ObjectStorage};

type Frame = Result<Bytes, String>;

/// A fresh database on the test server, or `None` (skipped).
async fn database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("TENAX_TEST_DATABASE_URL") else {
        assert_ne!(
            std::env::var("TENAX_TEST_PG").as_deref(),
            Ok("1"),
            "TENAX_TEST_PG=1 but TENAX_TEST_DATABASE_URL is not set"
        );
        eprintln!("\n*** SKIPPED: {name} needs PostgreSQL; run it through scripts/test ***\n");
        return None;
    };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).expect("random");
    let db: String = format!(
        "{name}_{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {db}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (prefix, _) = base.rsplit_once('/').expect("a database in the URL");
    Some(format!("{prefix}/{db}"))
}

struct Node {
    engine: Engine,
    cluster: Arc<Cluster>,
}

async fn node(url: &str, store: &Arc<InMemory>) -> Node {
    let cluster = Cluster::connect(url).await.expect("join");
    let storage = ObjectStorage::over_store(Arc::clone(store), Path::from("t"))
        .with_part_size(64)
        .expect("part size")
        .with_meta(Arc::clone(&cluster) as Arc<dyn MetaStore>);
    let engine = Engine::open_with_catalog(
        Arc::new(storage),
        EngineConfig::default(),
        Arc::new(NoHooks),
        Arc::clone(&cluster) as Arc<dyn Catalog>,
    )
    .await
    .expect("engine");
    Node { engine, cluster }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn frames(data: &[u8]) -> impl futures_util::Stream<Item = Frame> + Send + Unpin {
    let frames: Vec<Frame> = data
        .chunks(50)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    stream::iter(frames)
}

async fn read_all(engine: &Engine, file: &FileKey) -> Vec<u8> {
    use futures_util::StreamExt as _;
    let snapshot = engine.published(file).await.expect("published");
    let mut stream = engine
        .storage()
        .read(&snapshot.record, 0..snapshot.held)
        .await
        .expect("read");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

fn named(name: &str, total: u64) -> NewUpload {
    NewUpload {
        name: Some(FileName::new(name).expect("name")),
        total: Some(total),
        ..NewUpload::default()
    }
}

#[tokio::test]
async fn an_upload_continues_on_another_node_and_the_old_writer_is_fenced_out() {
    let Some(url) = database("fence").await else {
        return;
    };
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&url, &store).await, node(&url, &store).await);
    assert_ne!(a.cluster.node(), b.cluster.node());
    let data = pattern(1000);
    let id = a.engine.create(named("f.bin", 1000)).await.expect("create");

    let mut on_a = a.engine.lease(id).await.expect("lease on a");
    let first = on_a
        .append(frames(&data[..300]), AppendOptions::up_to(300))
        .await
        .expect("append on a");
    assert_eq!(first.written, 300);
    drop(on_a);

    // B takes the upload over and sees what A committed.
    let mut on_b = b.engine.lease(id).await.expect("lease on b");
    assert_eq!(on_b.held(), 300);
    on_b.append(frames(&data[300..600]), AppendOptions::up_to(300))
        .await
        .expect("append on b");
    drop(on_b);

    // A's memory of the upload is stale: its next lease reloads it.
    let mut again = a.engine.lease(id).await.expect("lease on a again");
    assert_eq!(again.held(), 600);
    // Now B takes it while A still holds its lease: A can commit nothing.
    let mut on_b = b.engine.lease(id).await.expect("b takes over");
    let refused = again
        .append(frames(&data[600..700]), AppendOptions::up_to(100))
        .await;
    assert!(
        matches!(refused, Err(Error::Storage(StorageError::Fenced))),
        "a fenced-out writer committed: {refused:?}"
    );
    drop(again);
    assert_eq!(on_b.held(), 600);
    on_b.append(frames(&data[600..]), AppendOptions::up_to(400))
        .await
        .expect("append on b");
    on_b.finalize().await.expect("finalize on b");
    drop(on_b);

    let file = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("f.bin").expect("name"),
    };
    assert_eq!(read_all(&a.engine, &file).await, data, "read through a");
    assert_eq!(read_all(&b.engine, &file).await, data, "read through b");
}

#[tokio::test]
async fn a_takeover_stops_the_writer_on_the_other_node() {
    let Some(url) = database("takeover").await else {
        return;
    };
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&url, &store).await, node(&url, &store).await);
    let id = a
        .engine
        .create(named("g.bin", 10_000))
        .await
        .expect("create");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Frame>(4);
    let writer = {
        let engine = a.engine.clone();
        tokio::spawn(async move {
            let mut lease = engine.lease(id).await.expect("lease on a");
            let body = tokio_stream_from(receiver);
            lease.append(body, AppendOptions::up_to(10_000)).await
        })
    };
    sender
        .send(Ok(Bytes::from(vec![1u8; 200])))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B takes over while A's body is still open: A hears of it and stops.
    let on_b = tokio::time::timeout(Duration::from_secs(10), b.engine.lease(id))
        .await
        .expect("the takeover waited too long")
        .expect("lease on b");
    let outcome = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the writer on a never stopped")
        .expect("join");
    // It stopped because it was superseded (and its commit was refused),
    // never by committing past the takeover.
    assert!(
        matches!(outcome, Err(Error::Storage(StorageError::Fenced)))
            || matches!(&outcome, Ok(o) if o.interruption.is_some()),
        "unexpected outcome {outcome:?}"
    );
    assert!(on_b.held() <= 200);
    drop(sender);
}

fn tokio_stream_from(
    receiver: tokio::sync::mpsc::Receiver<Frame>,
) -> impl futures_util::Stream<Item = Frame> + Send + Unpin {
    Box::pin(stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    }))
}

#[tokio::test]
async fn names_published_files_and_quotas_are_shared() {
    let Some(url) = database("shared").await else {
        return;
    };
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&url, &store).await, node(&url, &store).await);
    let file = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("abc.zip").expect("name"),
    };
    let data = pattern(500);
    // `?file=abc.zip` on A creates the upload; the same name on B continues it.
    let mut on_a = a
        .engine
        .lease_name(
            &file,
            || NewUpload {
                total: Some(500),
                ..NewUpload::default()
            },
            |_| false,
        )
        .await
        .expect("lease_name on a");
    on_a.append(frames(&data[..250]), AppendOptions::up_to(250))
        .await
        .expect("append");
    let id = on_a.id();
    drop(on_a);
    let mut on_b = b
        .engine
        .lease_name(&file, NewUpload::default, |_| false)
        .await
        .expect("lease_name on b");
    assert_eq!((on_b.id(), on_b.held()), (id, 250));
    on_b.append(frames(&data[250..]), AppendOptions::up_to(250))
        .await
        .expect("append");
    on_b.finalize().await.expect("finalize");
    drop(on_b);
    let listed = a
        .engine
        .published_files(&Namespace::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(matches!(listed[0].1.record.status, Status::Complete(_)));
    assert_eq!(read_all(&a.engine, &file).await, data);

    // One upload in progress per namespace, counted across the nodes.
    let quota = HashMap::from([(
        Namespace::default(),
        Quota {
            max_concurrent_uploads: Some(1),
            ..Quota::default()
        },
    )]);
    a.engine.set_quotas(quota.clone());
    b.engine.set_quotas(quota);
    a.engine
        .create(named("one", 10))
        .await
        .expect("first upload");
    let refused = b.engine.create(named("two", 10)).await;
    assert!(
        matches!(
            refused,
            Err(Error::Quota(QuotaExceeded::ConcurrentUploads { limit: 1 }))
        ),
        "{refused:?}"
    );
    let usage = b.engine.usage(&Namespace::default()).await.expect("usage");
    assert_eq!((usage.uploads_in_progress, usage.bytes_stored), (1, 500));
}
