//! Object-store failures in the middle of an append: what was
//! acknowledged stays, and nothing unacknowledged is ever counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tenax_core::{DigestSet, Namespace, Status, Storage, UploadId, UploadRecord};

use crate::ObjectStorage;

/// `InMemory` whose `put_part` number `fail_part` (counting from 1) and
/// PUT number `fail_put` fail once.
#[derive(Debug, Default)]
struct Flaky {
    inner: InMemory,
    fail_part: usize,
    fail_put: usize,
    parts: AtomicUsize,
    puts: AtomicUsize,
}

fn injected() -> object_store::Error {
    object_store::Error::Generic {
        store: "flaky",
        source: "injected failure".into(),
    }
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky")
    }
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_put {
            return Err(injected());
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[async_trait]
impl MultipartStore for Flaky {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.inner.create_multipart(path).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        if self.parts.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_part {
            return Err(injected());
        }
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}

fn record(seed: u8) -> UploadRecord {
    UploadRecord {
        id: UploadId::from_bytes([seed; 16]),
        namespace: Namespace::default(),
        name: None,
        total: None,
        content_type: None,
        metadata: Default::default(),
        concat: None,
        staged_from: None,
        digests: DigestSet::NONE,
        created_at: 1,
        created_ns: None,
        updated_at: 1,
        status: Status::Active,
        object: None,
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn read_all(storage: &ObjectStorage, record: &UploadRecord, len: u64) -> Vec<u8> {
    let chunks: Vec<Bytes> = storage
        .read(record, 0..len)
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("stream");
    chunks.concat()
}

/// A part that fails to go up (the second one): the write fails, the
/// sync goes back to the acknowledged length, and carrying on from
/// there gives exactly the bytes sent.
#[tokio::test]
async fn a_failed_part_is_never_acknowledged() {
    let flaky = Arc::new(Flaky {
        fail_part: 2,
        ..Flaky::default()
    });
    let storage = ObjectStorage::over_store(flaky, Path::from("t"))
        .with_part_size(100)
        .expect("part size");
    let record = record(1);
    storage.create(&record).await.expect("create");
    let bytes = data(1000);
    let mut writer = storage.append(record.id, 0).await.expect("append");
    writer
        .write(vec![Bytes::copy_from_slice(&bytes[..130])])
        .await
        .expect("write");
    assert_eq!(writer.sync().await.expect("sync"), 130);
    // 130 + 150 = 280: the first part here is the second put_part; it
    // goes up in the background, so its failure surfaces at the latest
    // at the sync.
    let written = writer
        .write(vec![Bytes::copy_from_slice(&bytes[130..280])])
        .await;
    let synced = writer.sync().await;
    assert!(
        written.is_err() || synced.is_err(),
        "the injected failure surfaces"
    );
    assert_eq!(storage.load(record.id).await.expect("load").held, 130);
    if synced.is_err() {
        assert!(
            writer.write(vec![Bytes::from_static(b"x")]).await.is_err(),
            "no write after a failure"
        );
    }
    assert_eq!(
        writer.sync().await.expect("sync"),
        130,
        "back to what was acknowledged"
    );
    writer
        .write(vec![Bytes::copy_from_slice(&bytes[130..])])
        .await
        .expect("write");
    assert_eq!(writer.sync().await.expect("sync"), 1000);
    assert_eq!(storage.load(record.id).await.expect("load").held, 1000);
    storage.seal(record.id, 1000).await.expect("seal");
    assert_eq!(read_all(&storage, &record, 1000).await, bytes);
}

/// A sync whose tail PUT fails acknowledges nothing new; the next sync
/// answers the length saved before, and the upload carries on.
#[tokio::test]
async fn a_failed_sync_acknowledges_nothing_new() {
    // PUTs: 1 state (create), 2 record, 3 tail, 4 state, 5 tail (fails).
    let flaky = Arc::new(Flaky {
        fail_put: 5,
        ..Flaky::default()
    });
    let storage = ObjectStorage::over_store(flaky, Path::from("t"))
        .with_part_size(100)
        .expect("part size");
    let record = record(2);
    storage.create(&record).await.expect("create");
    let bytes = data(400);
    let mut writer = storage.append(record.id, 0).await.expect("append");
    writer
        .write(vec![Bytes::copy_from_slice(&bytes[..50])])
        .await
        .expect("write");
    assert_eq!(writer.sync().await.expect("sync"), 50);
    writer
        .write(vec![Bytes::copy_from_slice(&bytes[50..90])])
        .await
        .expect("write");
    assert!(
        writer.sync().await.is_err(),
        "the injected failure surfaces"
    );
    assert_eq!(storage.load(record.id).await.expect("load").held, 50);
    assert_eq!(writer.sync().await.expect("sync"), 50);
    writer
        .write(vec![Bytes::copy_from_slice(&bytes[50..])])
        .await
        .expect("write");
    assert_eq!(writer.sync().await.expect("sync"), 400);
    storage.seal(record.id, 400).await.expect("seal");
    assert_eq!(read_all(&storage, &record, 400).await, bytes);
}

/// A seal that completed the multipart upload but died before saving
/// the state: the next seal finds `data` whole and carries on.
#[tokio::test]
async fn a_seal_cut_after_completion_is_finished_by_the_next() {
    // PUTs: 1 state (create), 2 record, 3 tail, 4 state, 5 state (seal; fails).
    let flaky = Arc::new(Flaky {
        fail_put: 5,
        ..Flaky::default()
    });
    let storage = ObjectStorage::over_store(flaky, Path::from("t"))
        .with_part_size(100)
        .expect("part size");
    let record = record(3);
    storage.create(&record).await.expect("create");
    let bytes = data(250);
    let mut writer = storage.append(record.id, 0).await.expect("append");
    writer
        .write(vec![Bytes::copy_from_slice(&bytes)])
        .await
        .expect("write");
    assert_eq!(writer.sync().await.expect("sync"), 250);
    drop(writer);
    assert!(
        storage.seal(record.id, 250).await.is_err(),
        "the injected failure surfaces"
    );
    assert!(
        storage
            .pending_multipart(record.id)
            .await
            .expect("state")
            .is_some()
    );
    storage.seal(record.id, 250).await.expect("the second seal");
    assert_eq!(
        storage.pending_multipart(record.id).await.expect("state"),
        None
    );
    assert_eq!(read_all(&storage, &record, 250).await, bytes);
}
