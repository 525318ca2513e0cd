//! The storage conformance suite: one set of scenarios run against every
//! backend (LocalDisk, the object-store backend over `InMemory`, and over
//! the real S3 server that `scripts/test` starts), so that they provably
//! behave alike where the engine can tell.
//!
//! The one allowed difference: an object store cannot read back the parts
//! of an unfinished multipart upload, so reading an upload in progress
//! below its last part answers `NotReadable` there (the tail is always
//! readable, and everything once sealed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use tenax_core::storage::LocalDisk;
use tenax_core::{
    FileKey, FileName, FinalInfo, Namespace, Status, Storage, StorageError, UploadId, UploadRecord,
};
use tenax_objstore::ObjectStorage;
use tenax_testkit::Rng;

/// One backend under test.
struct Backend {
    storage: Arc<dyn Storage>,
    /// A second handle on the same data sharing no memory with the first:
    /// another node, or this one after a restart.
    reopen: Box<dyn Fn() -> Arc<dyn Storage> + Send + Sync>,
    /// The part size (the object stores) or a comparable size (local disk).
    unit: usize,
    kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

enum Kind {
    Local(PathBuf),
    Object {
        storage: ObjectStorage,
        raw: Arc<dyn MultipartStore>,
        prefix: Path,
    },
}

const SMALL_PART: usize = 1000;

fn local() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let storage = Arc::new(LocalDisk::open(&root).expect("open"));
    let again = root.clone();
    Backend {
        storage,
        reopen: Box::new(move || Arc::new(LocalDisk::open(&again).expect("reopen"))),
        unit: SMALL_PART,
        kind: Kind::Local(root),
        _dir: Some(dir),
    }
}

fn memory() -> Backend {
    let store = Arc::new(InMemory::new());
    let prefix = Path::from("tenax");
    let make = {
        let (store, prefix) = (Arc::clone(&store), prefix.clone());
        move || {
            ObjectStorage::over_store(Arc::clone(&store), prefix.clone())
                .with_part_size(SMALL_PART)
                .expect("part size")
        }
    };
    let storage = make();
    Backend {
        storage: Arc::new(storage.clone()),
        reopen: Box::new(move || Arc::new(make())),
        unit: SMALL_PART,
        kind: Kind::Object {
            storage,
            raw: store,
            prefix,
        },
        _dir: None,
    }
}

fn s3(name: &str) -> Option<Backend> {
    let url = tenax_testkit::s3_url(name)?;
    let rest = url.strip_prefix("s3://").expect("an s3:// URL");
    let (bucket, prefix) = rest.split_once('/').expect("a prefix");
    let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
    let raw = Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .build()
            .expect("S3 client from the environment"),
    );
    let part = tenax_objstore::S3_MIN_PART_SIZE;
    let storage = ObjectStorage::over_store(Arc::clone(&raw), Path::from(prefix.as_str()))
        .with_part_size(part)
        .expect("part size");
    let reopen = move || -> Arc<dyn Storage> {
        // A new client, as another node would have.
        Arc::new(
            ObjectStorage::from_url(&url)
                .expect("S3 from URL")
                .with_part_size(part)
                .expect("part size"),
        )
    };
    Some(Backend {
        storage: Arc::new(storage.clone()),
        reopen: Box::new(reopen),
        unit: part,
        kind: Kind::Object {
            storage,
            raw,
            prefix: Path::from(prefix.as_str()),
        },
        _dir: None,
    })
}

impl Backend {
    async fn published(&self, file: &FileKey) -> Option<Vec<u8>> {
        match &self.kind {
            Kind::Local(root) => {
                let dir = if file.namespace.is_default() {
                    root.join("files")
                } else {
                    root.join("spaces").join(file.namespace.as_str())
                };
                match std::fs::read(dir.join(file.name.as_str())) {
                    Ok(bytes) => Some(bytes),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                    Err(error) => panic!("reading a published file: {error}"),
                }
            }
            Kind::Object { storage, .. } => match storage.read_published(file).await {
                Ok(stream) => Some(collect(stream).await),
                Err(StorageError::NotFound) => None,
                Err(error) => panic!("reading a published file: {error}"),
            },
        }
    }
}

fn new_id(rng: &mut Rng) -> UploadId {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    UploadId::from_bytes(bytes)
}

fn record(rng: &mut Rng, name: Option<&str>) -> UploadRecord {
    UploadRecord {
        id: new_id(rng),
        namespace: Namespace::default(),
        name: name.map(|name| FileName::new(name).expect("valid name")),
        total: None,
        content_type: None,
        metadata: BTreeMap::new(),
        concat: None,
        staged_from: None,
        digests: tenax_core::DigestSet::NONE,
        created_at: 1,
        created_ns: None,
        updated_at: 1,
        status: Status::Active,
        object: None,
    }
}

fn complete(mut record: UploadRecord, size: u64) -> UploadRecord {
    record.total = Some(size);
    record.status = Status::Complete(FinalInfo {
        size,
        sha256: String::new(),
        md5: None,
        crc32c: String::new(),
        completed_at: 2,
        published: false,
        superseded: false,
        generation: None,
    });
    record
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

async fn collect(stream: tenax_core::storage::ByteStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("stream");
    chunks.concat()
}

/// Writes `data` through a fresh writer at `offset`, in uneven chunks, and
/// syncs; returns the durable length.
async fn append(
    storage: &dyn Storage,
    id: UploadId,
    offset: u64,
    data: &[u8],
    rng: &mut Rng,
) -> u64 {
    let mut writer = storage.append(id, offset).await.expect("append");
    let mut rest = data;
    while !rest.is_empty() {
        let mut batch = Vec::new();
        for _ in 0..rng.between(1, 4) {
            let take = (rng.between(1, 700) as usize).min(rest.len());
            let (chunk, after) = rest.split_at(take);
            batch.push(Bytes::copy_from_slice(chunk));
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        writer.write(batch).await.expect("write");
    }
    writer.sync().await.expect("sync")
}

/// Reads a range of an upload in progress: the same bytes everywhere, or
/// (object stores only) `NotReadable` below the tail.
async fn check_in_progress(
    backend: &Backend,
    record: &UploadRecord,
    data: &[u8],
    range: std::ops::Range<usize>,
) {
    match backend
        .storage
        .read(record, range.start as u64..range.end as u64)
        .await
    {
        Ok(stream) => assert_eq!(collect(stream).await, &data[range], "in-progress read"),
        Err(StorageError::NotReadable { readable_from }) => {
            assert!(
                matches!(backend.kind, Kind::Object { .. }),
                "local disk reads everything"
            );
            assert!((range.start as u64) < readable_from && readable_from <= data.len() as u64);
        }
        Err(error) => panic!("in-progress read failed: {error}"),
    }
}

async fn read_all(storage: &dyn Storage, record: &UploadRecord, len: usize) -> Vec<u8> {
    collect(storage.read(record, 0..len as u64).await.expect("read")).await
}

async fn append_sync_reopen(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let record = record(&mut rng, None);
    storage.create(&record).await.expect("create");
    assert_eq!(storage.load(record.id).await.expect("load").held, 0);
    let unit = backend.unit;
    let mut data = bytes(&mut rng, unit * 2 + unit / 3);
    let held = append(storage, record.id, 0, &data, &mut rng).await;
    assert_eq!(held, data.len() as u64);
    assert_eq!(storage.load(record.id).await.expect("load").held, held);
    assert!(
        storage.append(record.id, held + 1).await.is_err(),
        "wrong offset"
    );

    // Another node carries on.
    let other = (backend.reopen)();
    assert_eq!(other.load(record.id).await.expect("load").held, held);
    let more = bytes(&mut rng, unit + unit / 2 + 5);
    let held = append(&*other, record.id, held, &more, &mut rng).await;
    data.extend_from_slice(&more);
    assert_eq!(held, data.len() as u64);
    assert_eq!(storage.load(record.id).await.expect("load").held, held);
    let len = data.len();
    check_in_progress(backend, &record, &data, len - 5..len).await;
    check_in_progress(backend, &record, &data, 0..len).await;
    let tail = backend
        .storage
        .read(&record, (len - 3) as u64..len as u64)
        .await;
    assert!(
        tail.is_ok(),
        "the last bytes are readable in progress everywhere"
    );

    storage.seal(record.id, held).await.expect("seal");
    storage.seal(record.id, held).await.expect("seal again");
    assert_eq!(read_all(storage, &record, len).await, data);
    for _ in 0..8 {
        let start = rng.between(0, len as u64 - 1) as usize;
        let end = rng.between(start as u64 + 1, len as u64) as usize;
        let got = collect(
            storage
                .read(&record, start as u64..end as u64)
                .await
                .expect("read"),
        )
        .await;
        assert_eq!(got, &data[start..end], "range {start}..{end}");
    }
}

async fn unsynced_bytes_are_not_acknowledged(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let record = record(&mut rng, None);
    storage.create(&record).await.expect("create");
    let mut data = bytes(&mut rng, backend.unit + 10);
    let acked = append(storage, record.id, 0, &data, &mut rng).await;
    // A writer that dies before its sync (a node killed mid-request).
    let lost = bytes(&mut rng, backend.unit + 7);
    {
        let mut writer = storage.append(record.id, acked).await.expect("append");
        writer
            .write(vec![Bytes::copy_from_slice(&lost)])
            .await
            .expect("write");
    }
    let other = (backend.reopen)();
    let held = other.load(record.id).await.expect("load").held;
    assert!(held >= acked, "acknowledged bytes survive");
    assert!(held <= acked + lost.len() as u64);
    data.extend_from_slice(&lost);
    data.truncate(held as usize);
    let more = bytes(&mut rng, 99);
    let held = append(&*other, record.id, held, &more, &mut rng).await;
    data.extend_from_slice(&more);
    assert_eq!(held, data.len() as u64);
    other.seal(record.id, held).await.expect("seal");
    assert_eq!(read_all(storage, &record, data.len()).await, data);
}

async fn truncate_tail_and_parts(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let record = record(&mut rng, None);
    storage.create(&record).await.expect("create");
    let unit = backend.unit;
    let mut data = bytes(&mut rng, unit * 2 + unit / 2);
    let held = append(storage, record.id, 0, &data, &mut rng).await;
    // Within the tail.
    storage
        .truncate(record.id, held - 3)
        .await
        .expect("truncate");
    data.truncate(data.len() - 3);
    assert_eq!(
        storage.load(record.id).await.expect("load").held,
        data.len() as u64
    );
    // Into the parts.
    let cut = unit / 2 + 1;
    storage
        .truncate(record.id, cut as u64)
        .await
        .expect("truncate");
    data.truncate(cut);
    assert_eq!(
        (backend.reopen)().load(record.id).await.expect("load").held,
        cut as u64
    );
    let more = bytes(&mut rng, unit + 1);
    let held = append(storage, record.id, cut as u64, &more, &mut rng).await;
    data.extend_from_slice(&more);
    assert_eq!(held, data.len() as u64);
    storage.seal(record.id, held).await.expect("seal");
    assert_eq!(read_all(storage, &record, data.len()).await, data);
    // After a seal, and back to nothing.
    storage
        .truncate(record.id, 10)
        .await
        .expect("truncate sealed");
    assert_eq!(storage.load(record.id).await.expect("load").held, 10);
    storage.truncate(record.id, 0).await.expect("truncate to 0");
    assert_eq!(storage.load(record.id).await.expect("load").held, 0);
    let fresh = bytes(&mut rng, 42);
    assert_eq!(append(storage, record.id, 0, &fresh, &mut rng).await, 42);
    storage.seal(record.id, 42).await.expect("seal");
    assert_eq!(read_all(storage, &record, 42).await, fresh);
}

async fn append_after_seal(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let record = record(&mut rng, None);
    storage.create(&record).await.expect("create");
    let mut data = bytes(&mut rng, backend.unit + backend.unit / 5);
    let held = append(storage, record.id, 0, &data, &mut rng).await;
    storage.seal(record.id, held).await.expect("seal");
    assert_eq!(read_all(storage, &record, data.len()).await, data);
    // Sealing at a length the upload does not hold: an object store refuses;
    // local disk seals the file at its own length and ignores the number.
    // Either way nothing stored changes.
    let wrong = storage.seal(record.id, held + 1).await;
    match backend.kind {
        Kind::Local(_) => wrong.expect("local disk seals at the length it holds"),
        Kind::Object { .. } => assert!(wrong.is_err(), "sealed at a length it does not hold"),
    }
    assert_eq!(storage.load(record.id).await.expect("load").held, held);
    assert_eq!(read_all(storage, &record, data.len()).await, data);
    // A finalisation that failed after the seal: the client appends again.
    let other = (backend.reopen)();
    let more = bytes(&mut rng, backend.unit / 3);
    let held = append(&*other, record.id, held, &more, &mut rng).await;
    data.extend_from_slice(&more);
    assert_eq!(held, data.len() as u64);
    other.seal(record.id, held).await.expect("seal");
    assert_eq!(read_all(storage, &record, data.len()).await, data);
}

async fn publish_replace_unpublish(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let name = "report 1.bin";
    let mut versions = Vec::new();
    for len in [backend.unit + 17, 300] {
        let record = record(&mut rng, Some(name));
        storage.create(&record).await.expect("create");
        let data = bytes(&mut rng, len);
        let held = append(storage, record.id, 0, &data, &mut rng).await;
        storage.seal(record.id, held).await.expect("seal");
        let record = complete(record, held);
        storage.put_record(&record).await.expect("put record");
        storage.publish(&record).await.expect("publish");
        storage.publish(&record).await.expect("publish again");
        let file = record.file_key().expect("named");
        assert_eq!(
            backend.published(&file).await.as_deref(),
            Some(&data[..]),
            "published whole"
        );
        versions.push((record, data));
    }
    // The older upload keeps its own bytes under its id.
    let (old, old_data) = &versions[0];
    assert_eq!(read_all(storage, old, old_data.len()).await, *old_data);
    let file = old.file_key().expect("named");
    // Another namespace has its own files.
    let mut spaced = record(&mut rng, Some(name));
    spaced.namespace = Namespace::new("team-a").expect("namespace");
    storage.create(&spaced).await.expect("create");
    storage.seal(spaced.id, 0).await.expect("seal");
    let spaced = complete(spaced, 0);
    storage.publish(&spaced).await.expect("publish");
    let spaced_file = spaced.file_key().expect("named");
    assert_eq!(
        backend.published(&spaced_file).await.as_deref(),
        Some(&[][..])
    );
    assert_eq!(
        backend.published(&file).await.as_deref(),
        Some(&versions[1].1[..])
    );

    storage.unpublish(&file).await.expect("unpublish");
    assert_eq!(backend.published(&file).await, None);
    storage
        .unpublish(&file)
        .await
        .expect("unpublish is idempotent");
    assert!(backend.published(&spaced_file).await.is_some());
}

async fn discard_and_remove_record(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let mut record = record(&mut rng, None);
    storage.create(&record).await.expect("create");
    let data = bytes(&mut rng, backend.unit * 2 + 3);
    append(storage, record.id, 0, &data, &mut rng).await;
    let multipart = match &backend.kind {
        Kind::Object { storage, .. } => {
            let id = storage.pending_multipart(record.id).await.expect("state");
            assert!(id.is_some(), "parts were uploaded");
            id
        }
        Kind::Local(_) => None,
    };
    record.status = Status::Expired;
    storage.put_record(&record).await.expect("put record");
    storage.discard(record.id).await.expect("discard");
    storage
        .discard(record.id)
        .await
        .expect("discard is idempotent");
    let stored = (backend.reopen)()
        .load(record.id)
        .await
        .expect("the record stays");
    assert_eq!((stored.record.status, stored.held), (Status::Expired, 0));
    if let (
        Kind::Object {
            raw,
            prefix,
            storage: object,
        },
        Some(multipart),
    ) = (&backend.kind, multipart)
    {
        // The multipart upload was aborted: no part can be added any more.
        let data_path = Path::from(format!("{prefix}/uploads/{}/data", record.id));
        let put = raw
            .put_part(
                &data_path,
                &multipart,
                5,
                Bytes::from_static(b"late").into(),
            )
            .await;
        assert!(put.is_err(), "the multipart upload was aborted");
        assert_eq!(
            object.pending_multipart(record.id).await.expect("state"),
            None
        );
    }
    storage.remove_record(record.id).await.expect("remove");
    storage
        .remove_record(record.id)
        .await
        .expect("remove is idempotent");
    assert!(matches!(
        storage.load(record.id).await,
        Err(StorageError::NotFound)
    ));
    let listed = storage.list().await.expect("list");
    assert!(listed.iter().all(|listed| listed.id != record.id));
}

async fn not_found(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let storage = &*backend.storage;
    let ghost = record(&mut rng, Some("ghost"));
    let id = ghost.id;
    assert!(matches!(
        storage.load(id).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.append(id, 0).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.truncate(id, 0).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.read(&ghost, 0..1).await,
        Err(StorageError::NotFound)
    ));
    let done = complete(ghost.clone(), 5);
    assert!(matches!(
        storage.read(&done, 0..1).await,
        Err(StorageError::NotFound)
    ));
    storage.discard(id).await.expect("discard of nothing");
    storage.remove_record(id).await.expect("remove of nothing");
    storage
        .unpublish(&ghost.file_key().expect("named"))
        .await
        .expect("unpublish of nothing");
    storage.probe().await.expect("probe");
}

async fn list_sees_every_upload(backend: &Backend) {
    let mut rng = Rng::from_env_or_os();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let record = record(&mut rng, None);
        backend.storage.create(&record).await.expect("create");
        ids.push(record.id);
    }
    let other = (backend.reopen)();
    let listed: Vec<UploadId> = other
        .list()
        .await
        .expect("list")
        .iter()
        .map(|record| record.id)
        .collect();
    for id in ids {
        assert!(listed.contains(&id), "{id} listed");
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(&super::local()).await;
            })*
        }
        mod memory {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(&super::memory()).await;
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $scenario() {
                let Some(backend) = super::s3(stringify!($scenario)) else {
                    return;
                };
                super::$scenario(&backend).await;
            })*
        }
    };
}

conformance!(
    append_sync_reopen,
    unsynced_bytes_are_not_acknowledged,
    truncate_tail_and_parts,
    append_after_seal,
    publish_replace_unpublish,
    discard_and_remove_record,
    not_found,
    list_sees_every_upload,
);
