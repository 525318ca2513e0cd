//! [`ObjectStorage`]: the [`Storage`] backend over an object store, its
//! setup, and the operations on whole uploads (load, read, seal, publish,
//! truncate, discard).

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutPayload};
use tenax_core::storage::{Append, ByteStream, Stored};
use tenax_core::{FileKey, Status, Storage, StorageError, UploadId, UploadRecord};

use crate::append::ObjectAppend;
use crate::meta::{MetaStore, ObjectMeta};
use crate::paths::Paths;
use crate::state::{DataState, Multipart, Tail, parse_state, state_bytes};
use crate::{
    ConfigError, DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, MultipartObjectStore, io_error,
    not_found_or_io,
};

/// Storage on an object store.
#[derive(Clone)]
pub struct ObjectStorage {
    pub(crate) store: Arc<dyn MultipartObjectStore>,
    /// Where records and data states live.
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) paths: Paths,
    pub(crate) part_size: usize,
    pub(crate) parts_in_flight: usize,
    description: Arc<str>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.description)
            .field("meta", &self.meta)
            .field("root", self.paths.root())
            .field("part_size", &self.part_size)
            .field("parts_in_flight", &self.parts_in_flight)
            .finish()
    }
}

impl ObjectStorage {
    /// Storage in a fresh in-memory store (tests).
    pub fn in_memory() -> Self {
        Self::over(Arc::new(InMemory::new()), Path::default(), "memory")
    }

    /// Storage at `s3://BUCKET[/PREFIX]`. The endpoint, region and
    /// credentials come from the environment as the AWS SDKs name them
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("only s3:// URLs are supported"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("the bucket is missing"));
        }
        let root = Path::parse(prefix.trim_end_matches('/')).map_err(|source| {
            ConfigError::InvalidPrefix {
                prefix: prefix.to_owned(),
                source,
            }
        })?;
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(ConfigError::Client)?;
        Ok(Self::over(Arc::new(s3), root, url))
    }

    /// Storage over any store with the multipart API (`AmazonS3`,
    /// `InMemory`, ...), under `prefix`.
    pub fn over_store<S: ObjectStore + MultipartStore>(store: Arc<S>, prefix: Path) -> Self {
        let description = store.to_string();
        Self::over(store, prefix, &description)
    }

    /// Streams a published file (operations and tests; the server serves
    /// files through their upload's record).
    pub async fn read_published(&self, file: &FileKey) -> Result<ByteStream, StorageError> {
        let path = self.paths.file(file);
        let result = self.store.get(&path).await.map_err(not_found_or_io)?;
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    /// The id of the upload's unfinished multipart upload, if it has one
    /// (operations and tests: a discarded upload must have none left).
    pub async fn pending_multipart(&self, id: UploadId) -> Result<Option<String>, StorageError> {
        Ok(self
            .load_state(id)
            .await?
            .multipart
            .map(|multipart| multipart.id))
    }

    fn over(store: Arc<dyn MultipartObjectStore>, root: Path, description: &str) -> Self {
        let meta = Arc::new(ObjectMeta::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            root.clone(),
        ));
        ObjectStorage {
            store,
            meta,
            paths: Paths::new(root),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            description: description.into(),
        }
    }

    /// Keeps records and data states in `meta` rather than as objects
    /// beside the data (several nodes sharing a database).
    pub fn with_meta(mut self, meta: Arc<dyn MetaStore>) -> Self {
        self.meta = meta;
        self
    }

    /// Sets the multipart part size. S3 wants at least
    /// [`S3_MIN_PART_SIZE`](crate::S3_MIN_PART_SIZE); the in-memory store accepts any, which lets
    /// tests cross part boundaries with little data.
    pub fn with_part_size(mut self, bytes: usize) -> Result<Self, ConfigError> {
        if bytes == 0 {
            return Err(ConfigError::PartSize);
        }
        self.part_size = bytes;
        Ok(self)
    }

    /// Sets how many parts of one upload may be on their way at once
    /// (at least 1). Memory per open upload is about `(n + 1) × part size`.
    pub fn with_parts_in_flight(mut self, parts: usize) -> Self {
        self.parts_in_flight = parts.max(1);
        self
    }

    /// The part size in use.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The data state; an upload created by a node that crashed between its
    /// two writes has none yet, which means empty.
    pub(crate) async fn load_state(&self, id: UploadId) -> Result<DataState, StorageError> {
        match self.meta.state(id).await? {
            Some(bytes) => parse_state(id, &bytes),
            None => Ok(DataState::default()),
        }
    }

    /// The data state of an upload that must exist (`NotFound` otherwise:
    /// `create` writes the state before the record).
    pub(crate) async fn load_existing_state(
        &self,
        id: UploadId,
    ) -> Result<DataState, StorageError> {
        match self.meta.state(id).await? {
            Some(bytes) => parse_state(id, &bytes),
            None => Err(StorageError::NotFound),
        }
    }

    pub(crate) async fn save_state(
        &self,
        id: UploadId,
        state: &DataState,
    ) -> Result<(), StorageError> {
        self.meta.put_state(id, state_bytes(state)?).await
    }

    /// Reads the tail objects back, in order.
    pub(crate) async fn read_tails(
        &self,
        id: UploadId,
        tails: &[Tail],
    ) -> Result<Vec<Bytes>, StorageError> {
        let mut out = Vec::with_capacity(tails.len());
        for tail in tails {
            let bytes = self
                .store
                .get(&self.paths.tail(id, tail.seq))
                .await
                .map_err(io_error)?
                .bytes()
                .await
                .map_err(io_error)?;
            if bytes.len() as u64 != tail.len {
                return Err(StorageError::Io(io::Error::other(format!(
                    "tail object {} of {id} holds {} bytes, its state says {}",
                    tail.seq,
                    bytes.len(),
                    tail.len
                ))));
            }
            out.push(bytes);
        }
        Ok(out)
    }

    /// Best-effort removal of objects no state refers to any more: a
    /// failure leaves garbage under the upload's prefix, which `discard`
    /// and `remove_record` collect.
    pub(crate) async fn delete_quietly(&self, paths: Vec<Path>) {
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => tracing::warn!(%error, %path, "cannot delete an unused object"),
            }
        }
    }

    /// Deletes every object under the upload's prefix but those kept.
    async fn delete_upload_objects(&self, id: UploadId, keep: &[Path]) -> Result<(), StorageError> {
        let prefix = self.paths.upload_dir(id);
        let mut listed: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(io_error)?;
        listed.retain(|path| !keep.contains(path));
        for path in listed {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        Ok(())
    }

    /// Completes the data into the `data` object; see [`Storage::seal`].
    pub(crate) async fn seal_state(
        &self,
        id: UploadId,
        state: &mut DataState,
        len: u64,
    ) -> Result<(), StorageError> {
        if state.sealed == Some(len) {
            return Ok(());
        }
        let have = state.len();
        if have != len {
            return Err(StorageError::Io(io::Error::other(format!(
                "cannot seal {id} at {len} bytes: it holds {have}"
            ))));
        }
        let tails = self.read_tails(id, &state.tails).await?;
        let data = self.paths.data(id);
        match state.multipart.take() {
            None => {
                self.store
                    .put(&data, tails.into_iter().collect::<PutPayload>())
                    .await
                    .map_err(io_error)?;
            }
            Some(multipart) => {
                if let Err(error) = self.complete(&data, multipart, tails).await {
                    // A seal that completed but died before saving the
                    // state: the upload id is gone and `data` is whole.
                    match self.store.head(&data).await {
                        Ok(meta) if meta.size == len => {}
                        _ => return Err(error),
                    }
                }
            }
        }
        let old_tails: Vec<Path> = state
            .tails
            .drain(..)
            .map(|tail| self.paths.tail(id, tail.seq))
            .collect();
        state.sealed = Some(len);
        self.save_state(id, state).await?;
        self.delete_quietly(old_tails).await;
        Ok(())
    }

    /// Uploads the tail as the last part (the last part may be small) and
    /// completes the multipart upload into `data`.
    async fn complete(
        &self,
        data: &Path,
        multipart: Multipart,
        tails: Vec<Bytes>,
    ) -> Result<(), StorageError> {
        let mut parts: Vec<PartId> = multipart
            .parts
            .into_iter()
            .map(|part| PartId {
                content_id: part.etag,
            })
            .collect();
        if !tails.is_empty() {
            let last = self
                .store
                .put_part(
                    data,
                    &multipart.id,
                    parts.len(),
                    tails.into_iter().collect(),
                )
                .await
                .map_err(io_error)?;
            parts.push(last);
        }
        self.store
            .complete_multipart(data, &multipart.id, parts)
            .await
            .map_err(io_error)?;
        Ok(())
    }

    /// Streams bytes of the tail objects (offsets relative to the tail).
    fn stream_tails(&self, id: UploadId, tails: &[Tail], range: Range<u64>) -> ByteStream {
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for tail in tails {
            let (start, end) = (at, at + tail.len);
            at = end;
            if end <= range.start || start >= range.end {
                continue;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            pieces.push((self.paths.tail(id, tail.seq), from..to));
        }
        let store = Arc::clone(&self.store);
        stream::iter(pieces)
            .then(move |(path, range)| {
                let store = Arc::clone(&store);
                async move {
                    store
                        .get_range(&path, range)
                        .await
                        .map_err(io::Error::other)
                }
            })
            .boxed()
    }

    /// Opens a range of one object (eagerly, so that a missing object is
    /// [`StorageError::NotFound`] here rather than an error mid-stream).
    pub(crate) async fn stream_object(
        &self,
        path: &Path,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(path, options)
            .await
            .map_err(not_found_or_io)?;
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    async fn create(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.meta
            .create(record, state_bytes(&DataState::default())?)
            .await
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.meta.put_record(record).await
    }

    async fn load(&self, id: UploadId) -> Result<Stored, StorageError> {
        let record = self.meta.record(id).await?;
        let held = match &record.status {
            Status::Active => self.load_state(id).await?.len(),
            Status::Complete(info) => info.size,
            Status::Cancelled | Status::Expired => 0,
        };
        Ok(Stored { record, held })
    }

    async fn list(&self) -> Result<Vec<UploadRecord>, StorageError> {
        self.meta.records().await
    }

    async fn append(&self, id: UploadId, offset: u64) -> Result<Box<dyn Append>, StorageError> {
        let state = self.load_existing_state(id).await?;
        let len = state.len();
        if len != offset {
            return Err(StorageError::Io(io::Error::other(format!(
                "data holds {len} bytes, expected {offset}"
            ))));
        }
        let tail = self.read_tails(id, &state.tails).await?;
        Ok(Box::new(ObjectAppend::new(self.clone(), id, state, tail)))
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        if range.start >= range.end {
            return Ok(stream::empty().boxed());
        }
        let id = record.id;
        if matches!(record.status, Status::Complete(_)) {
            return self.stream_object(&self.paths.data(id), range).await;
        }
        let state = self.load_existing_state(id).await?;
        if state.sealed.is_some() {
            return self.stream_object(&self.paths.data(id), range).await;
        }
        let parts_len = state.parts_len();
        if range.start < parts_len {
            return Err(StorageError::NotReadable {
                readable_from: parts_len,
            });
        }
        Ok(self.stream_tails(
            id,
            &state.tails,
            range.start - parts_len..range.end - parts_len,
        ))
    }

    async fn seal(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let mut state = self.load_existing_state(id).await?;
        self.seal_state(id, &mut state, len).await
    }

    async fn publish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let (Some(file), Status::Complete(info)) = (record.file_key(), &record.status) else {
            return Ok(());
        };
        let mut state = self.load_state(record.id).await?;
        self.seal_state(record.id, &mut state, info.size).await?;
        // S3 replaces an object whole, so readers of the name see the old
        // file or the new one; the upload keeps its own `data`.
        self.store
            .copy(&self.paths.data(record.id), &self.paths.file(&file))
            .await
            .map_err(io_error)
    }

    async fn truncate(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let mut state = self.load_existing_state(id).await?;
        let have = state.len();
        if len == have {
            return Ok(());
        }
        if len > have {
            return Err(StorageError::Io(io::Error::other(format!(
                "cannot truncate {id} to {len} bytes: it holds {have}"
            ))));
        }
        if len == 0 {
            return ObjectAppend::reset(self, id, state).await;
        }
        let parts_len = state.parts_len();
        if state.sealed.is_none() && len >= parts_len {
            // Within the tail: one new tail object with the kept bytes.
            let kept = (len - parts_len) as usize;
            let tails = self.read_tails(id, &state.tails).await?;
            let mut bytes = Vec::with_capacity(kept);
            for tail in &tails {
                let room = kept - bytes.len();
                bytes.extend_from_slice(&tail[..tail.len().min(room)]);
            }
            let old: Vec<Path> = state
                .tails
                .drain(..)
                .map(|tail| self.paths.tail(id, tail.seq))
                .collect();
            if !bytes.is_empty() {
                let seq = state.next_tail;
                state.next_tail += 1;
                self.store
                    .put(&self.paths.tail(id, seq), PutPayload::from(bytes))
                    .await
                    .map_err(io_error)?;
                state.tails.push(Tail {
                    seq,
                    len: kept as u64,
                });
            }
            self.save_state(id, &state).await?;
            self.delete_quietly(old).await;
            return Ok(());
        }
        // Into the parts, which cannot be read back: seal, then rebuild.
        self.seal_state(id, &mut state, have).await?;
        let mut writer = ObjectAppend::new(self.clone(), id, state, Vec::new());
        writer.rebuild(len).await?;
        writer.sync().await.map(|_| ())
    }

    async fn discard(&self, id: UploadId) -> Result<(), StorageError> {
        let state = self.load_state(id).await?;
        if let Some(multipart) = &state.multipart {
            match self
                .store
                .abort_multipart(&self.paths.data(id), &multipart.id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        // The state goes last: while it exists, a retry still knows the
        // multipart upload to abort.
        self.delete_upload_objects(id, &[self.paths.record(id), self.paths.state(id)])
            .await?;
        self.meta.clear_state(id).await
    }

    async fn remove_record(&self, id: UploadId) -> Result<(), StorageError> {
        self.delete_upload_objects(id, &[self.paths.record(id), self.paths.state(id)])
            .await?;
        self.meta.remove(id).await
    }

    async fn unpublish(&self, file: &FileKey) -> Result<(), StorageError> {
        match self.store.delete(&self.paths.file(file)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(io_error(error)),
        }
    }

    async fn probe(&self) -> Result<(), StorageError> {
        self.meta.probe().await?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.paths.root().clone().join(format!(
            "probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        self.store
            .put(&path, PutPayload::from_static(b"ok"))
            .await
            .map_err(io_error)?;
        self.store.delete(&path).await.map_err(io_error)
    }
}
