//! The upload engine over the local-disk backend.
//!
//! Long on purpose: one test binary for the whole engine builds once; its tests
//! are grouped by the engine module they exercise.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use sha2::{Digest as _, Sha256};
use tenax_core::storage::LocalDisk;
use tenax_core::{
    AppendOptions, DigestSet, Engine, EngineConfig, Error, FileKey, FileName, Interruption,
    Namespace, NewUpload, Status,
};

type Frame = Result<Bytes, String>;

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn engine(dir: &std::path::Path) -> Engine {
    Engine::open(
        Arc::new(LocalDisk::open(dir).expect("data dir")),
        EngineConfig::default(),
    )
    .await
    .expect("engine")
}

fn frames(data: &[u8], size: usize) -> Vec<Frame> {
    data.chunks(size)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn named(name: &str, total: Option<u64>) -> NewUpload {
    NewUpload {
        name: Some(FileName::new(name).expect("name")),
        total,
        ..NewUpload::default()
    }
}

#[tokio::test]
async fn appends_in_pieces_and_publishes_with_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let data = pattern(3 << 20);
    let id = engine
        .create(named("a.bin", Some(data.len() as u64)))
        .await
        .expect("create");

    let mut lease = engine.lease(id).await.expect("lease");
    let first = lease
        .append(
            stream::iter(frames(&data[..1_000_000], 65_536)),
            AppendOptions::up_to(1_000_000),
        )
        .await
        .expect("append");
    assert_eq!((first.written, first.interruption), (1_000_000, None));
    // A resend overlapping what is held: the first 400 000 bytes are skipped.
    let rest = &data[600_000..];
    let second = lease
        .append(
            stream::iter(frames(rest, 100_000)),
            AppendOptions::up_to(rest.len() as u64 - 400_000).skip(400_000),
        )
        .await
        .expect("append");
    assert_eq!(second.written, data.len() as u64 - 1_000_000);
    assert_eq!(lease.held(), data.len() as u64);

    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.sha256, hex_sha256(&data));
    assert_eq!(
        std::fs::read(dir.path().join("files/a.bin")).expect("published"),
        data
    );
    // The upload keeps its own bytes under its id.
    assert_eq!(
        std::fs::read(dir.path().join(format!("uploads/{id}.bin"))).expect("data"),
        data
    );
}

#[tokio::test]
async fn a_failing_body_keeps_its_prefix_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let data = pattern(300_000);
    let mut body = frames(&data, 50_000);
    body.truncate(3);
    body.push(Err("connection reset".into()));
    let mut lease = engine.lease(id).await.expect("lease");
    let outcome = lease
        .append(stream::iter(body), AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(outcome.written, 150_000);
    assert_eq!(
        outcome.interruption,
        Some(Interruption::Body("connection reset".into()))
    );
    drop(lease);

    // A new engine over the same directory (a restart) sees the same prefix.
    let engine = self::engine(dir.path()).await;
    let lease = engine.lease(id).await.expect("lease");
    assert_eq!(lease.held(), 150_000);
    assert_eq!(
        std::fs::read(dir.path().join(format!("uploads/{id}.bin"))).expect("data"),
        &data[..150_000]
    );
}

#[tokio::test]
async fn a_newer_request_ends_the_older_one_which_keeps_its_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let data = pattern(200_000);

    // The older request: 100 000 bytes, then a body that never ends.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Frame>(4);
    let older = tokio::spawn({
        let engine = engine.clone();
        async move {
            let mut lease = engine.lease(id).await.expect("lease");
            let body = tokio_stream_from(receiver);
            lease
                .append(body, AppendOptions::default())
                .await
                .expect("append")
        }
    });
    sender
        .send(Ok(Bytes::copy_from_slice(&data[..100_000])))
        .await
        .expect("send");
    // Let the older request write what it has before the newer one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let newer = tokio::time::timeout(Duration::from_secs(10), engine.lease(id))
        .await
        .expect("not blocked")
        .expect("lease");
    assert_eq!(newer.held(), 100_000);
    let outcome = older.await.expect("older task");
    assert_eq!(outcome.interruption, Some(Interruption::Superseded));
    assert_eq!(outcome.written, 100_000);
    drop(sender);
}

fn tokio_stream_from(
    receiver: tokio::sync::mpsc::Receiver<Frame>,
) -> impl futures_util::Stream<Item = Frame> + Send + Unpin {
    stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    })
    .boxed()
}

#[tokio::test]
async fn digests_survive_a_restart_mid_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(2_500_000);
    let id = {
        let engine = engine(dir.path()).await;
        let id = engine
            .create(named("r.bin", Some(data.len() as u64)))
            .await
            .expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(&data[..1_234_567], 100_000)),
                AppendOptions::default(),
            )
            .await
            .expect("append");
        id
    };
    let engine = engine(dir.path()).await;
    let mut lease = engine.lease(id).await.expect("lease");
    assert_eq!(lease.held(), 1_234_567);
    let rest = &data[1_234_567..];
    lease
        .append(
            stream::iter(frames(rest, 77_777)),
            AppendOptions::up_to(rest.len() as u64),
        )
        .await
        .expect("append");
    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.sha256, hex_sha256(&data));
    assert_eq!(info.size, data.len() as u64);
}

#[tokio::test]
async fn overrun_keeps_only_the_announced_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    let outcome = lease
        .append(
            stream::iter(frames(&pattern(1000), 300)),
            AppendOptions::up_to(500),
        )
        .await
        .expect("append");
    assert_eq!(
        (outcome.written, outcome.interruption),
        (500, Some(Interruption::Overrun))
    );
    assert_eq!(lease.held(), 500);
}

#[tokio::test]
async fn cancel_forgets_the_data_and_remembers_the_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    lease
        .append(
            stream::iter(frames(&pattern(10), 10)),
            AppendOptions::up_to(10),
        )
        .await
        .expect("append");
    lease.cancel().await.expect("cancel");
    drop(lease);
    assert!(matches!(engine.lease(id).await, Err(Error::Gone)));
    assert!(!dir.path().join(format!("uploads/{id}.bin")).exists());
    let engine = self::engine(dir.path()).await;
    assert!(matches!(engine.lease(id).await, Err(Error::Gone)));
}

#[tokio::test]
async fn names_continue_the_current_upload_until_asked_to_start_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("n.bin").expect("name"),
    };
    let mut lease = engine
        .lease_name(&name, NewUpload::default, |_| false)
        .await
        .expect("lease");
    let first = lease.id();
    lease
        .append(stream::iter(frames(b"hello", 5)), AppendOptions::up_to(5))
        .await
        .expect("append");
    lease.finalize().await.expect("finalize");
    drop(lease);

    let again = engine
        .lease_name(&name, NewUpload::default, |_| false)
        .await
        .expect("lease");
    assert_eq!(again.id(), first);
    assert!(matches!(again.record().status, Status::Complete(_)));
    drop(again);
    let fresh = engine
        .lease_name(&name, NewUpload::default, |_| true)
        .await
        .expect("lease");
    assert_ne!(fresh.id(), first);
    assert_eq!(fresh.held(), 0);
    drop(fresh);

    // The index is rebuilt from storage: the active upload wins over the complete one.
    let engine = self::engine(dir.path()).await;
    let lease = engine
        .lease_name(&name, NewUpload::default, |_| false)
        .await
        .expect("lease");
    assert_ne!(lease.id(), first);
}

#[tokio::test]
async fn expired_uploads_are_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(LocalDisk::open(dir.path()).expect("data dir"));
    let engine = Engine::open(
        storage,
        EngineConfig {
            upload_ttl: Duration::ZERO,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let id = engine.create(NewUpload::default()).await.expect("create");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(engine.lease(id).await, Err(Error::Expired)));
}

/// A check that accepts a chunk when its bytes add up to `expected`.
struct ByteSum {
    sum: u64,
    expected: u64,
}

impl tenax_core::ChunkCheck for ByteSum {
    fn update(&mut self, bytes: &[u8]) {
        self.sum += bytes.iter().map(|&b| u64::from(b)).sum::<u64>();
    }

    fn verify(self: Box<Self>) -> Result<(), tenax_core::Error> {
        if self.sum == self.expected {
            Ok(())
        } else {
            Err(tenax_core::Error::ChecksumMismatch)
        }
    }
}

fn byte_sum(data: &[u8]) -> u64 {
    data.iter().map(|&b| u64::from(b)).sum()
}

#[tokio::test]
async fn checked_appends_keep_only_valid_whole_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let data = pattern(600_000);
    let id = engine
        .create(named("c.bin", Some(600_000)))
        .await
        .expect("create");
    let mut lease = engine.lease(id).await.expect("lease");

    let good = &data[..200_000];
    let check = Box::new(ByteSum {
        sum: 0,
        expected: byte_sum(good),
    });
    let outcome = lease
        .append(
            stream::iter(frames(good, 50_000)),
            AppendOptions::up_to(600_000).check(check),
        )
        .await
        .expect("valid chunk");
    assert_eq!(outcome.written, 200_000);

    let next = &data[200_000..400_000];
    let wrong = Box::new(ByteSum {
        sum: 0,
        expected: byte_sum(next) + 1,
    });
    let refused = lease
        .append(
            stream::iter(frames(next, 50_000)),
            AppendOptions::up_to(400_000).check(wrong),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::ChecksumMismatch)),
        "{refused:?}"
    );
    assert_eq!(lease.held(), 200_000);

    let mut cut = frames(next, 50_000);
    cut.truncate(2);
    cut.push(Err("reset".into()));
    let check = Box::new(ByteSum {
        sum: 0,
        expected: byte_sum(next),
    });
    let outcome = lease
        .append(
            stream::iter(cut),
            AppendOptions::up_to(400_000).check(check),
        )
        .await
        .expect("interrupted");
    assert_eq!(outcome.written, 0);
    assert_eq!(lease.held(), 200_000);

    let rest = &data[200_000..];
    let check = Box::new(ByteSum {
        sum: 0,
        expected: byte_sum(rest),
    });
    lease
        .append(
            stream::iter(frames(rest, 65_536)),
            AppendOptions::up_to(400_000).check(check),
        )
        .await
        .expect("valid chunk");
    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.sha256, hex_sha256(&data));
}

#[tokio::test]
async fn a_chunk_staged_when_the_server_died_is_discarded_at_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let engine = engine(dir.path()).await;
        let id = engine.create(NewUpload::default()).await.expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(&pattern(1000), 100)),
                AppendOptions::up_to(1000),
            )
            .await
            .expect("append");
        id
    };
    // What a crash in the middle of a checked append leaves behind: the
    // record marks the stage, the data holds unverified bytes past it.
    let record_path = dir.path().join(format!("uploads/{id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
    record["staged_from"] = 1000.into();
    std::fs::write(&record_path, serde_json::to_vec(&record).expect("json")).expect("write record");
    let data_path = dir.path().join(format!("uploads/{id}.bin"));
    let mut bytes = std::fs::read(&data_path).expect("data");
    bytes.extend_from_slice(&[0xAA; 500]);
    std::fs::write(&data_path, bytes).expect("write data");

    let engine = engine(dir.path()).await;
    let lease = engine.lease(id).await.expect("lease");
    assert_eq!(lease.held(), 1000);
    assert_eq!(lease.record().staged_from, None);
    assert_eq!(std::fs::metadata(&data_path).expect("data").len(), 1000);
}

#[tokio::test]
async fn concatenation_joins_finished_partials_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let data = pattern(700_000);
    let mut parts = Vec::new();
    for piece in [&data[..300_000], &data[300_000..300_001], &data[300_001..]] {
        let new = NewUpload {
            total: Some(piece.len() as u64),
            concat: Some(tenax_core::Concat::Partial),
            ..NewUpload::default()
        };
        let id = engine.create(new).await.expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(piece, 65_536)),
                AppendOptions::up_to(piece.len() as u64),
            )
            .await
            .expect("append");
        lease.finalize().await.expect("finalize");
        parts.push(id);
    }
    let unfinished = engine
        .create(NewUpload {
            total: Some(10),
            concat: Some(tenax_core::Concat::Partial),
            ..NewUpload::default()
        })
        .await
        .expect("create");
    let refused = engine
        .concatenate(vec![parts[0], unfinished], NewUpload::default(), false)
        .await;
    assert!(
        matches!(refused, Err(Error::NotConcatenable(id)) if id == unfinished),
        "{refused:?}"
    );

    let joined = engine
        .concatenate(parts.clone(), named("joined.bin", None), false)
        .await
        .expect("concatenate");
    let snapshot = engine.peek(joined).await.expect("peek");
    assert_eq!(
        snapshot.record.concat,
        Some(tenax_core::Concat::Final(parts))
    );
    let Status::Complete(info) = snapshot.record.status else {
        panic!("not complete")
    };
    assert_eq!(info.sha256, hex_sha256(&data));
    assert_eq!(
        std::fs::read(dir.path().join("files/joined.bin")).expect("published"),
        data
    );
}

#[tokio::test]
async fn md5_is_left_out_when_switched_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(LocalDisk::open(dir.path()).expect("data dir"));
    let config = EngineConfig {
        digests: DigestSet::NONE,
        ..EngineConfig::default()
    };
    let engine = Engine::open(storage, config).await.expect("engine");
    let id = engine.create(NewUpload::default()).await.expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    let data = pattern(3 << 20);
    lease
        .append(
            stream::iter(frames(&data, 65_536)),
            AppendOptions::default(),
        )
        .await
        .expect("append");
    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.md5, None);
    assert_eq!(info.sha256, hex_sha256(&data));
}

#[tokio::test]
async fn a_newer_upload_of_a_name_replaces_the_file_but_not_the_older_uploads_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let mut ids = Vec::new();
    for content in [&b"first version"[..], &b"second"[..]] {
        let id = engine
            .create(named("v.txt", Some(content.len() as u64)))
            .await
            .expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(content, 4)),
                AppendOptions::up_to(content.len() as u64),
            )
            .await
            .expect("append");
        lease.finalize().await.expect("finalize");
        ids.push(id);
    }
    assert_eq!(
        std::fs::read(dir.path().join("files/v.txt")).expect("published"),
        b"second"
    );
    let first = engine.peek(ids[0]).await.expect("peek");
    let mut stream = engine
        .storage()
        .read(&first.record, 0..first.held)
        .await
        .expect("read");
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(bytes, b"first version");
}

#[tokio::test]
async fn a_publication_cut_by_a_crash_is_finished_at_the_next_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = {
        let engine = engine(dir.path()).await;
        let id = engine
            .create(named("p.bin", Some(5)))
            .await
            .expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(stream::iter(frames(b"hello", 5)), AppendOptions::up_to(5))
            .await
            .expect("append");
        lease.finalize().await.expect("finalize");
        id
    };
    // What a crash after the first record write leaves: complete, not published.
    std::fs::remove_file(dir.path().join("files/p.bin")).expect("unpublish");
    let record_path = dir.path().join(format!("uploads/{id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
    record["status"]["published"] = false.into();
    std::fs::write(&record_path, serde_json::to_vec(&record).expect("json")).expect("write record");

    let engine = engine(dir.path()).await;
    let lease = engine.lease(id).await.expect("lease");
    assert!(matches!(&lease.record().status, Status::Complete(info) if info.published));
    assert_eq!(
        std::fs::read(dir.path().join("files/p.bin")).expect("published"),
        b"hello"
    );
}

#[tokio::test]
async fn a_final_upload_of_unfinished_parts_completes_with_the_last_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let data = pattern(400_000);
    let partial = |len: usize| NewUpload {
        total: Some(len as u64),
        concat: Some(tenax_core::Concat::Partial),
        ..NewUpload::default()
    };
    let first = engine.create(partial(100_000)).await.expect("create");
    let second = engine.create(partial(300_000)).await.expect("create");
    let joined = engine
        .concatenate(vec![first, second], named("late.bin", None), true)
        .await
        .expect("concatenate");
    assert!(matches!(
        engine.peek(joined).await.expect("peek").record.status,
        Status::Active
    ));

    for (id, piece) in [(second, &data[100_000..]), (first, &data[..100_000])] {
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(piece, 65_536)),
                AppendOptions::up_to(piece.len() as u64),
            )
            .await
            .expect("append");
        lease.finalize().await.expect("finalize");
    }
    // The assembly runs in a task of its own; wait for it, boundedly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = engine.peek(joined).await.expect("peek");
        // Complete is recorded before the file is published (a crash in
        // between publishes at the next lease): wait for both.
        if let Status::Complete(info) = &snapshot.record.status
            && info.published
        {
            assert_eq!(info.sha256, hex_sha256(&data));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the final upload was never assembled and published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        std::fs::read(dir.path().join("files/late.bin")).expect("published"),
        data
    );
}

#[tokio::test]
async fn cancelling_a_published_upload_withdraws_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let id = engine
        .create(named("gone.txt", Some(2)))
        .await
        .expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    lease
        .append(stream::iter(frames(b"hi", 2)), AppendOptions::up_to(2))
        .await
        .expect("append");
    lease.finalize().await.expect("finalize");
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("gone.txt").expect("name"),
    };
    assert_eq!(
        engine.published(&name).await.expect("published").record.id,
        id
    );
    lease.cancel().await.expect("cancel");
    drop(lease);
    assert!(matches!(
        engine.published(&name).await,
        Err(Error::NotFound)
    ));
    assert!(!dir.path().join("files/gone.txt").exists());
}

#[tokio::test]
async fn published_files_lists_completed_names_sorted_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = engine(dir.path()).await;
        assert!(
            engine
                .published_files(&Namespace::default())
                .await
                .expect("list")
                .is_empty()
        );
        for (name, content) in [("b.txt", &b"bee"[..]), ("a.txt", &b"ay"[..])] {
            let id = engine
                .create(named(name, Some(content.len() as u64)))
                .await
                .expect("create");
            let mut lease = engine.lease(id).await.expect("lease");
            lease
                .append(
                    stream::iter(frames(content, 2)),
                    AppendOptions::up_to(content.len() as u64),
                )
                .await
                .expect("append");
            lease.finalize().await.expect("finalize");
        }
        // An upload in progress is not listed.
        engine
            .create(named("c.txt", Some(10)))
            .await
            .expect("create");
        let listed: Vec<String> = engine
            .published_files(&Namespace::default())
            .await
            .expect("list")
            .iter()
            .map(|(name, _)| name.as_str().to_owned())
            .collect();
        assert_eq!(listed, ["a.txt", "b.txt"]);
    }
    let engine = engine(dir.path()).await;
    let files = engine
        .published_files(&Namespace::default())
        .await
        .expect("list");
    assert_eq!(files.len(), 2);
    let (name, snapshot) = &files[1];
    assert_eq!(name.as_str(), "b.txt");
    assert!(
        matches!(&snapshot.record.status, Status::Complete(info) if info.size == 3 && info.sha256 == hex_sha256(b"bee"))
    );
}

// ---------------------------------------------------------------------------
// Expiry collector
// ---------------------------------------------------------------------------

async fn expiring_engine(
    dir: &std::path::Path,
    upload_ttl: Duration,
    expired_retention: Duration,
) -> Engine {
    Engine::open(
        Arc::new(LocalDisk::open(dir).expect("data dir")),
        EngineConfig {
            upload_ttl,
            expired_retention,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine")
}

/// Appends `data` at the current offset through a fresh lease.
async fn append_bytes(engine: &Engine, id: tenax_core::UploadId, data: &[u8]) {
    let mut lease = engine.lease(id).await.expect("lease");
    let outcome = lease
        .append(stream::iter(frames(data, 1000)), AppendOptions::default())
        .await
        .expect("append");
    assert_eq!(outcome.written, data.len() as u64);
}

#[tokio::test]
async fn collector_expires_an_idle_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = expiring_engine(dir.path(), Duration::ZERO, Duration::from_secs(3600)).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    append_bytes(&engine, id, &pattern(5000)).await;
    let data_path = dir.path().join(format!("uploads/{id}.bin"));
    assert!(data_path.exists());
    // Not idle yet within the same second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = engine.collect_expired().await.expect("collect");
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(report.removed, 0, "{report:?}");
    assert!(!data_path.exists(), "the data of an expired upload stays");
    assert!(matches!(engine.lease(id).await, Err(Error::Expired)));
    assert!(matches!(engine.try_lease(id).await, Err(Error::Expired)));
    let snapshot = engine.peek(id).await.expect("tombstone");
    assert_eq!(snapshot.record.status, Status::Expired);
    assert_eq!(snapshot.held, 0);
    // A second pass has nothing left to do.
    let again = engine.collect_expired().await.expect("collect");
    assert_eq!(again, tenax_core::CollectReport::default());
    // A restarted engine sees the tombstone too.
    drop(engine);
    let engine = expiring_engine(dir.path(), Duration::ZERO, Duration::from_secs(3600)).await;
    assert!(matches!(engine.lease(id).await, Err(Error::Expired)));
}

#[tokio::test]
async fn collector_skips_a_leased_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A time to live of one second (in whole seconds): with zero, a second
    // boundary between the creation and the lease would expire it first.
    let engine = expiring_engine(dir.path(), Duration::from_secs(1), Duration::ZERO).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let lease = engine.lease(id).await.expect("lease");
    assert!(
        engine.try_lease(id).await.expect("try_lease").is_none(),
        "try_lease took a leased upload"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for _ in 0..3 {
        let report = engine.collect_expired().await.expect("collect");
        assert_eq!(report.busy, 1, "{report:?}");
        assert_eq!(report.expired, 0, "{report:?}");
    }
    assert!(dir.path().join(format!("uploads/{id}.bin")).exists());
    drop(lease);
    let report = engine.collect_expired().await.expect("collect");
    assert_eq!(report.expired, 1, "{report:?}");
}

#[tokio::test]
async fn collector_spares_a_busy_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Idle means 2 whole seconds without an append; the stored record is
    // refreshed only hourly, so only the in-memory activity keeps it alive.
    let engine = expiring_engine(dir.path(), Duration::from_secs(1), Duration::ZERO).await;
    let id = engine.create(NewUpload::default()).await.expect("create");
    let chunk = pattern(1000);
    for round in 0..8u64 {
        append_bytes(&engine, id, &chunk).await;
        let report = engine.collect_expired().await.expect("collect");
        assert_eq!(report.expired, 0, "round {round}: {report:?}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let lease = engine.try_lease(id).await.expect("alive").expect("free");
    assert_eq!(lease.held(), 8 * 1000);
}

#[tokio::test]
async fn collector_forgets_expired_uploads_after_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = expiring_engine(dir.path(), Duration::ZERO, Duration::ZERO).await;
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("gone.bin").expect("name"),
    };
    let id = engine
        .create(named("gone.bin", Some(10)))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = engine.collect_expired().await.expect("collect");
    assert_eq!(report.expired, 1, "{report:?}");
    let record_path = dir.path().join(format!("uploads/{id}.json"));
    assert!(record_path.exists(), "the tombstone went at once");
    assert!(matches!(engine.lease(id).await, Err(Error::Expired)));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = engine.collect_expired().await.expect("collect");
    assert_eq!(report.removed, 1, "{report:?}");
    assert!(!record_path.exists(), "the tombstone stayed");
    assert!(matches!(engine.lease(id).await, Err(Error::NotFound)));
    // The name starts afresh.
    let lease = engine
        .lease_name(&name, NewUpload::default, |_| false)
        .await
        .expect("lease_name");
    assert_ne!(lease.id(), id);
}

/// Found by the crash torture test: a crash between the last durable append
/// and the finalisation leaves an upload holding every byte, not complete.
/// Whether that means complete is the dialect's call (tus: yes; the IETF
/// draft: only with `Upload-Complete: ?1`), so the engine only has to be
/// able to finish it later, with the same digests.
#[tokio::test]
async fn a_finalisation_cut_by_a_crash_can_be_finished_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(300_000);
    let id = {
        let engine = engine(dir.path()).await;
        let id = engine
            .create(named("cut.bin", Some(data.len() as u64)))
            .await
            .expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        lease
            .append(
                stream::iter(frames(&data, 65_536)),
                AppendOptions::up_to(data.len() as u64),
            )
            .await
            .expect("append");
        // The process dies here, before `finalize`.
        id
    };
    let engine = engine(dir.path()).await;
    let mut lease = engine.lease(id).await.expect("lease");
    assert!(matches!(lease.record().status, Status::Active));
    assert_eq!(lease.held(), data.len() as u64);
    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.sha256, hex_sha256(&data));
    assert_eq!(
        std::fs::read(dir.path().join("files/cut.bin")).expect("published"),
        data
    );
}

#[tokio::test]
async fn space_reserved_for_appends_is_released_at_completion() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    // Unnamed, as tus parts are: nothing is published, the data stays.
    let data = pattern(3 << 20);
    let id = engine
        .create(NewUpload {
            total: Some(data.len() as u64),
            ..NewUpload::default()
        })
        .await
        .expect("create");
    let path = dir.path().join(format!("uploads/{id}.bin"));
    let mut lease = engine.lease(id).await.expect("lease");
    lease
        .append(
            stream::iter(frames(&data[..1 << 20], 65_536)),
            AppendOptions::up_to(1 << 20),
        )
        .await
        .expect("append");
    let metadata = std::fs::metadata(&path).expect("data file");
    assert_eq!(
        metadata.len(),
        1 << 20,
        "reservation must not show in the length"
    );
    let reserved = metadata.blocks() * 512;
    lease
        .append(
            stream::iter(frames(&data[1 << 20..], 65_536)),
            AppendOptions::up_to(2 << 20),
        )
        .await
        .expect("append");
    lease.finalize().await.expect("finalize");
    let metadata = std::fs::metadata(&path).expect("data file");
    let allocated = metadata.blocks() * 512;
    assert_eq!(metadata.len(), data.len() as u64);
    assert!(
        allocated <= data.len() as u64 + 64 * 1024,
        "{allocated} bytes allocated for {} (reserved {reserved} at 1 MiB)",
        data.len()
    );
    assert_eq!(std::fs::read(&path).expect("read"), data);
}

#[tokio::test]
async fn a_name_waiting_for_its_upload_does_not_hold_up_other_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let key = |name: &str| FileKey {
        namespace: Namespace::default(),
        name: FileName::new(name).expect("name"),
    };
    let held = engine
        .lease_name(&key("a.bin"), NewUpload::default, |_| false)
        .await
        .expect("lease a");
    // A second request for "a.bin" waits for the first to let go ...
    let second = tokio::spawn({
        let engine = engine.clone();
        let a = key("a.bin");
        async move {
            engine
                .lease_name(&a, NewUpload::default, |_| false)
                .await
                .map(|lease| lease.id())
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ... which does not stop "b.bin" meanwhile.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        engine.lease_name(&key("b.bin"), NewUpload::default, |_| false),
    )
    .await
    .expect("b.bin waited for a.bin")
    .expect("lease b");
    assert_ne!(other.id(), held.id());
    let first = held.id();
    drop(held);
    let again = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second request for a.bin never got it")
        .expect("task")
        .expect("lease a again");
    assert_eq!(again, first);
}

/// Completes an upload of `name` holding `data`.
async fn complete_named(engine: &Engine, name: &str, data: &[u8]) -> tenax_core::UploadId {
    let id = engine
        .create(named(name, Some(data.len() as u64)))
        .await
        .expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    lease
        .append(
            stream::iter(frames(data, 4096)),
            AppendOptions::up_to(data.len() as u64),
        )
        .await
        .expect("append");
    lease.finalize().await.expect("finalize");
    id
}

// Found by the engine_model fuzz target: completion times are in seconds,
// and a restart ranked two uploads of a name finished within the same
// second by their (random) ids.
#[tokio::test]
async fn a_restart_shows_the_last_of_two_uploads_finished_in_the_same_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("same.bin").expect("name"),
    };
    for round in 0..8u8 {
        let engine = engine(dir.path()).await;
        complete_named(&engine, "same.bin", &[round; 10]).await;
        let last = complete_named(&engine, "same.bin", &[round + 100; 20]).await;
        let before = engine.published(&name).await.expect("published");
        assert_eq!(before.record.id, last);
        drop(engine);
        let engine = self::engine(dir.path()).await;
        let after = engine.published(&name).await.expect("published");
        assert_eq!(
            after.record.id, last,
            "round {round}: an older upload came back"
        );
    }
}

// Found by the engine_model fuzz target: cancelling the upload a name shows
// withdraws the name, and a restart brought back the older upload it had
// replaced.
#[tokio::test]
async fn a_restart_does_not_bring_back_a_replaced_upload_after_a_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("gone.bin").expect("name"),
    };
    let engine = engine(dir.path()).await;
    complete_named(&engine, "gone.bin", b"older").await;
    let newer = complete_named(&engine, "gone.bin", b"newer bytes").await;
    engine
        .lease(newer)
        .await
        .expect("lease")
        .cancel()
        .await
        .expect("cancel");
    assert!(matches!(
        engine.published(&name).await,
        Err(Error::NotFound)
    ));
    assert!(!dir.path().join("files/gone.bin").exists());
    drop(engine);
    let engine = self::engine(dir.path()).await;
    assert!(
        matches!(engine.published(&name).await, Err(Error::NotFound)),
        "the replaced upload shows again after a restart"
    );
}

/// `LocalDisk` whose data writes wait for a permit: a write can be held in
/// flight for as long as a test wants.
#[derive(Debug)]
struct GatedDisk {
    inner: LocalDisk,
    gate: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug)]
struct GatedAppend {
    inner: Box<dyn tenax_core::storage::Append>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl tenax_core::storage::Append for GatedAppend {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), tenax_core::StorageError> {
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.write(chunks).await
    }
    async fn sync(&mut self) -> Result<u64, tenax_core::StorageError> {
        self.inner.sync().await
    }
}

#[async_trait::async_trait]
impl tenax_core::Storage for GatedDisk {
    async fn create(&self, r: &tenax_core::UploadRecord) -> Result<(), tenax_core::StorageError> {
        self.inner.create(r).await
    }
    async fn put_record(
        &self,
        r: &tenax_core::UploadRecord,
    ) -> Result<(), tenax_core::StorageError> {
        self.inner.put_record(r).await
    }
    async fn load(
        &self,
        id: tenax_core::UploadId,
    ) -> Result<tenax_core::storage::Stored, tenax_core::StorageError> {
        self.inner.load(id).await
    }
    async fn list(&self) -> Result<Vec<tenax_core::UploadRecord>, tenax_core::StorageError> {
        self.inner.list().await
    }
    async fn append(
        &self,
        id: tenax_core::UploadId,
        offset: u64,
    ) -> Result<Box<dyn tenax_core::storage::Append>, tenax_core::StorageError> {
        Ok(Box::new(GatedAppend {
            inner: self.inner.append(id, offset).await?,
            gate: Arc::clone(&self.gate),
        }))
    }
    async fn read(
        &self,
        r: &tenax_core::UploadRecord,
        range: std::ops::Range<u64>,
    ) -> Result<tenax_core::storage::ByteStream, tenax_core::StorageError> {
        self.inner.read(r, range).await
    }
    async fn publish(&self, r: &tenax_core::UploadRecord) -> Result<(), tenax_core::StorageError> {
        self.inner.publish(r).await
    }
    async fn truncate(
        &self,
        id: tenax_core::UploadId,
        len: u64,
    ) -> Result<(), tenax_core::StorageError> {
        self.inner.truncate(id, len).await
    }
    async fn discard(&self, id: tenax_core::UploadId) -> Result<(), tenax_core::StorageError> {
        self.inner.discard(id).await
    }
    async fn remove_record(
        &self,
        id: tenax_core::UploadId,
    ) -> Result<(), tenax_core::StorageError> {
        self.inner.remove_record(id).await
    }
    async fn unpublish(&self, file: &FileKey) -> Result<(), tenax_core::StorageError> {
        self.inner.unpublish(file).await
    }
    async fn seal(
        &self,
        id: tenax_core::UploadId,
        len: u64,
    ) -> Result<(), tenax_core::StorageError> {
        self.inner.seal(id, len).await
    }
}

// Found by the engine_model fuzz target: an append whose request is dropped
// while a batch is being written left that write running on its own; the
// next request reloaded the upload's length before the write landed, so the
// bytes appeared later, past what the engine held (and past a truncation of
// a failed checksummed chunk).
#[tokio::test]
async fn the_next_lease_waits_for_the_write_of_a_dropped_append() {
    // One whole batch (written, held at the gate), then a body that never
    // ends; the request is dropped while the write waits.
    let data = pattern(1 << 20);
    let body =
        stream::iter(vec![Ok::<_, String>(Bytes::copy_from_slice(&data))]).chain(stream::pending());
    the_next_lease_waits_for_a_dropped_write(&data, body).await;
}

// The same for a request's last bytes, which are written and synced in one
// storage step.
#[tokio::test]
async fn the_next_lease_waits_for_the_last_write_of_a_dropped_append() {
    // Under one batch: the body's end is its only write.
    let data = pattern(64 << 10);
    let body = stream::iter(vec![Ok::<_, String>(Bytes::copy_from_slice(&data))]);
    the_next_lease_waits_for_a_dropped_write(&data, body).await;
}

/// Appends `body` (carrying `data`) on gated storage and drops the request
/// while its write is held; the next lease must wait for that write, count
/// its bytes, and go on from there.
async fn the_next_lease_waits_for_a_dropped_write(
    data: &[u8],
    body: impl futures_util::Stream<Item = Result<Bytes, String>> + Send + Unpin,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let storage = Arc::new(GatedDisk {
        inner: LocalDisk::open(dir.path()).expect("data dir"),
        gate: Arc::clone(&gate),
    });
    let engine = Engine::open(storage, EngineConfig::default())
        .await
        .expect("engine");
    let id = engine.create(NewUpload::default()).await.expect("create");
    {
        let mut lease = engine.lease(id).await.expect("lease");
        let dropped = tokio::time::timeout(
            Duration::from_millis(200),
            lease.append(body, AppendOptions::default()),
        )
        .await;
        assert!(
            dropped.is_err(),
            "the append ended though its write was held"
        );
    }
    let next = tokio::spawn({
        let engine = engine.clone();
        async move { engine.lease(id).await.expect("lease").held() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !next.is_finished(),
        "the next lease did not wait for the write"
    );
    gate.add_permits(1000);
    let held = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the next lease is not stuck")
        .expect("lease task");
    assert_eq!(held, data.len() as u64, "the next lease counts the write");
    let mut lease = engine.lease(id).await.expect("lease");
    lease
        .append(stream::iter(frames(b"tail", 4)), AppendOptions::default())
        .await
        .expect("append after the dropped one");
    assert_eq!(lease.held(), data.len() as u64 + 4);
}

#[tokio::test]
async fn progress_reports_durable_offsets_while_the_body_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path()).await;
    let data = pattern(5 << 20);
    let id = engine.create(NewUpload::default()).await.expect("create");
    let path = dir.path().join("uploads").join(format!("{id}.bin"));
    let mut lease = engine.lease(id).await.expect("lease");
    let mut reported = Vec::new();
    let mut report = |held: u64| {
        // Reported bytes are on disk already.
        let on_disk = std::fs::metadata(&path).expect("data file").len();
        reported.push((held, on_disk));
    };
    let options = AppendOptions::default().progress(Duration::ZERO, &mut report);
    let outcome = lease
        .append(stream::iter(frames(&data, 256 << 10)), options)
        .await
        .expect("append");
    assert_eq!(outcome.written, data.len() as u64);
    assert!(reported.len() >= 3, "{reported:?}");
    for pair in reported.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{reported:?}");
    }
    for &(held, on_disk) in &reported {
        assert!(held <= on_disk && held <= data.len() as u64, "{reported:?}");
    }

    // A checked chunk reports nothing: its bytes are not accepted yet.
    let more = pattern(3 << 20);
    let mut checked_reports = 0;
    let mut count = |_: u64| checked_reports += 1;
    let check = Box::new(ByteSum {
        sum: 0,
        expected: byte_sum(&more),
    });
    let options = AppendOptions::default()
        .check(check)
        .progress(Duration::ZERO, &mut count);
    let outcome = lease
        .append(stream::iter(frames(&more, 256 << 10)), options)
        .await
        .expect("checked append");
    assert_eq!(outcome.written, more.len() as u64);
    assert_eq!(checked_reports, 0);
    assert_eq!(lease.held(), (data.len() + more.len()) as u64);
}

#[tokio::test]
async fn a_tiny_body_memory_budget_still_takes_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        Arc::new(LocalDisk::open(dir.path()).expect("data dir")),
        EngineConfig {
            body_memory: 1,
            ..EngineConfig::default()
        },
    )
    .await
    .expect("engine");
    let data = pattern(3 << 20);
    let id = engine.create(NewUpload::default()).await.expect("create");
    let mut lease = engine.lease(id).await.expect("lease");
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        lease.append(
            stream::iter(frames(&data, 64 << 10)),
            AppendOptions::default(),
        ),
    )
    .await
    .expect("the append finished")
    .expect("append");
    assert_eq!(outcome.written, data.len() as u64);
    let info = lease.finalize().await.expect("finalize");
    assert_eq!(info.sha256, hex_sha256(&data));
}

/// docs/protocol.md §1.1: a name addresses its most recently created
/// upload, before and after any number of restarts. Uploads of one name
/// created within one second (their `created_at` ties) and an older active
/// upload behind a newer cancelled one used to come back in the order the
/// records were listed.
#[tokio::test]
async fn a_name_addresses_its_newest_upload_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = FileKey {
        namespace: Namespace::default(),
        name: FileName::new("newest.bin").expect("name"),
    };
    let engine = engine(dir.path()).await;
    let mut created = Vec::new();
    for round in 0..6u64 {
        let id = engine
            .create(named("newest.bin", Some(1 << 20)))
            .await
            .expect("create");
        let mut lease = engine.lease(id).await.expect("lease");
        let bytes = pattern(1000 * (round as usize + 1));
        lease
            .append(stream::iter(frames(&bytes, 512)), AppendOptions::default())
            .await
            .expect("append");
        drop(lease);
        created.push(id);
    }
    let newest = *created.last().expect("created");
    let current = |engine: Engine| {
        let name = name.clone();
        async move {
            let lease = engine.lease_current(&name).await.expect("current");
            (lease.id(), lease.held())
        }
    };
    assert_eq!(current(engine.clone()).await, (newest, 6000));
    drop(engine);
    for restart in 0..20 {
        let engine = self::engine(dir.path()).await;
        assert_eq!(
            current(engine).await,
            (newest, 6000),
            "restart {restart}: the name addresses another upload"
        );
    }
    // The newest is cancelled: the name addresses it still (410), not an
    // older upload, before and after a restart.
    let engine = self::engine(dir.path()).await;
    engine
        .lease(newest)
        .await
        .expect("lease")
        .cancel()
        .await
        .expect("cancel");
    assert!(matches!(
        engine.lease_current(&name).await,
        Err(Error::Gone)
    ));
    drop(engine);
    for restart in 0..5 {
        let engine = self::engine(dir.path()).await;
        assert!(
            matches!(engine.lease_current(&name).await, Err(Error::Gone)),
            "restart {restart}: an older upload came back behind a cancelled one"
        );
    }
    // A record written before `created_ns` existed still orders (by
    // `created_at`, then id), and a new upload orders after it.
    let record_path = dir.path().join(format!("uploads/{}.json", created[0]));
    let json = std::fs::read_to_string(&record_path).expect("record");
    let old: serde_json::Value = serde_json::from_str(&json).expect("json");
    let mut old = old;
    old.as_object_mut().expect("object").remove("created_ns");
    old["created_at"] = serde_json::json!(4_000_000_000u64);
    std::fs::write(&record_path, old.to_string()).expect("write");
    let engine = self::engine(dir.path()).await;
    assert_eq!(current(engine.clone()).await.0, created[0]);
    let next = engine
        .create(named("newest.bin", None))
        .await
        .expect("create");
    assert_eq!(current(engine).await.0, next);
    let engine = self::engine(dir.path()).await;
    assert_eq!(current(engine).await.0, next);
}
