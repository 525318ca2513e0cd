//! tenax storage on an object store: S3 and compatible servers through
//! `object_store`, or its `InMemory` store for tests.
//!
//! ```text
//! PREFIX/uploads/ID/record.json   the upload's record (the engine's, replaced whole)
//! PREFIX/uploads/ID/state.json    where its bytes are: the multipart id, the parts
//!                                 (ETag and length each), the tail objects, or "sealed"
//! PREFIX/uploads/ID/tail-N        bytes below the part size, acknowledged but not yet a part
//! PREFIX/uploads/ID/data          the multipart upload's target: the whole data once sealed
//! PREFIX/files/NAME               published files (a server-side copy of `data`)
//! PREFIX/spaces/NS/NAME           the same, for the files of namespace NS
//! ```
//!
//! Appended bytes are gathered in memory until a part is full (8 MiB by
//! default) and then uploaded as the next part of the upload's multipart
//! upload, at most two parts in flight (so at most about three parts in
//! memory per open upload). At `sync` the bytes that do
//! not fill a part go to a new small `tail-N` object, and `state.json` is
//! rewritten to list every part and tail: that PUT is the commit point, so
//! the durable length is what `state.json` describes, and every byte it
//! counts is in an object or an uploaded part. Nothing lives only in one
//! node's memory: another node (or this one after a restart) reopens the
//! upload from `state.json`, reads the tail objects back, and continues the
//! same multipart upload.
//!
//! The parts of an unfinished multipart upload cannot be read back, so an
//! upload in progress is readable only from the end of its last part (the
//! tail objects); other ranges answer [`StorageError::NotReadable`]. At
//! finalisation the engine calls [`Storage::seal`]: the tail becomes the last
//! part, the multipart upload is completed into `data`, and `state.json`
//! says "sealed". A truncate into the parts, or an append after a seal,
//! rebuilds a fresh multipart upload from `data` (rare: a checksum mismatch
//! on a chunk larger than the tail, or a failed finalisation).
//!
//! Records and data states go through a [`MetaStore`]: by default
//! [`ObjectMeta`], the `record.json` and `state.json` objects above; with
//! several nodes, the cluster's database, which fences every commit
//! (`tenax-cluster`, docs/cluster.md).
//!
//! See docs/storage.md for the durability argument and the failure modes.

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
use object_store::path::{Path, PathPart};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use tenax_core::storage::{Append, ByteStream, Stored};
use tenax_core::{FileKey, Status, Storage, StorageError, UploadId, UploadRecord};

mod meta;

pub use meta::{MetaStore, ObjectMeta, parse_record, record_json};

/// The default part size: above S3's 5 MiB minimum, small enough to buffer
/// one per open upload.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// Parts of one upload on their way at once, by default: enough to keep
/// the store busy while the next part fills, with a bound on memory.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

/// The smallest part (but the last) that S3 accepts.
pub const S3_MIN_PART_SIZE: usize = 5 << 20;

/// Why an object-store backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL is not `s3://BUCKET[/PREFIX]`.
    #[error("invalid object-store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The prefix is not a valid object path.
    #[error("invalid prefix {prefix:?}: {source}")]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
        /// The parser's complaint.
        #[source]
        source: object_store::path::Error,
    },
    /// The part size is zero.
    #[error("the part size must be at least 1 byte")]
    PartSize,
    /// The client could not be built from the environment.
    #[error("cannot configure the S3 client: {0}")]
    Client(#[source] object_store::Error),
}

/// A store that also offers the low-level multipart API (persistable ids).
trait MultipartObjectStore: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> MultipartObjectStore for T {}

/// Storage on an object store.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn MultipartObjectStore>,
    /// Where records and data states live.
    meta: Arc<dyn MetaStore>,
    root: Path,
    part_size: usize,
    parts_in_flight: usize,
    description: Arc<str>,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.description)
            .field("meta", &self.meta)
            .field("root", &self.root)
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
        let path = self.file_path(file);
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
            root,
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
    /// [`S3_MIN_PART_SIZE`]; the in-memory store accepts any, which lets
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

    fn upload_dir(&self, id: UploadId) -> Path {
        self.root.clone().join("uploads").join(id.to_string())
    }

    fn record_path(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("record.json")
    }

    fn state_path(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("state.json")
    }

    fn tail_path(&self, id: UploadId, seq: u64) -> Path {
        self.upload_dir(id).join(format!("tail-{seq}"))
    }

    fn data_path(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("data")
    }

    fn file_path(&self, file: &FileKey) -> Path {
        let dir = if file.namespace.is_default() {
            self.root.clone().join("files")
        } else {
            self.root
                .clone()
                .join("spaces")
                .join(PathPart::from(file.namespace.as_str()))
        };
        dir.join(PathPart::from(file.name.as_str()))
    }

    /// The data state; an upload created by a node that crashed between its
    /// two writes has none yet, which means empty.
    async fn load_state(&self, id: UploadId) -> Result<DataState, StorageError> {
        match self.meta.state(id).await? {
            Some(bytes) => parse_state(id, &bytes),
            None => Ok(DataState::default()),
        }
    }

    /// The data state of an upload that must exist (`NotFound` otherwise:
    /// `create` writes the state before the record).
    async fn load_existing_state(&self, id: UploadId) -> Result<DataState, StorageError> {
        match self.meta.state(id).await? {
            Some(bytes) => parse_state(id, &bytes),
            None => Err(StorageError::NotFound),
        }
    }

    async fn save_state(&self, id: UploadId, state: &DataState) -> Result<(), StorageError> {
        self.meta.put_state(id, state_bytes(state)?).await
    }

    /// Reads the tail objects back, in order.
    async fn read_tails(&self, id: UploadId, tails: &[Tail]) -> Result<Vec<Bytes>, StorageError> {
        let mut out = Vec::with_capacity(tails.len());
        for tail in tails {
            let bytes = self
                .store
                .get(&self.tail_path(id, tail.seq))
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
    async fn delete_quietly(&self, paths: Vec<Path>) {
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => tracing::warn!(%error, %path, "cannot delete an unused object"),
            }
        }
    }

    /// Deletes every object under the upload's prefix but those kept.
    async fn delete_upload_objects(&self, id: UploadId, keep: &[Path]) -> Result<(), StorageError> {
        let prefix = self.upload_dir(id);
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
    async fn seal_state(
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
        let data = self.data_path(id);
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
            .map(|tail| self.tail_path(id, tail.seq))
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
            pieces.push((self.tail_path(id, tail.seq), from..to));
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
    async fn stream_object(
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

/// Where an upload's bytes are; rewritten whole at every sync (the commit
/// point of an append).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DataState {
    /// The multipart upload into `data`, once the first part was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<Multipart>,
    /// Acknowledged bytes after the parts, in order.
    #[serde(default)]
    tails: Vec<Tail>,
    /// The number of the next tail object: names are never reused, so a
    /// stale reader never sees a rewritten tail.
    #[serde(default)]
    next_tail: u64,
    /// Set when the whole data is the `data` object, of this length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Multipart {
    id: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    etag: String,
    len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tail {
    seq: u64,
    len: u64,
}

impl DataState {
    fn parts_len(&self) -> u64 {
        self.multipart.as_ref().map_or(0, |multipart| {
            multipart.parts.iter().map(|part| part.len).sum()
        })
    }

    fn tails_len(&self) -> u64 {
        self.tails.iter().map(|tail| tail.len).sum()
    }

    fn len(&self) -> u64 {
        self.sealed
            .unwrap_or_else(|| self.parts_len() + self.tails_len())
    }
}

fn state_bytes(state: &DataState) -> Result<Bytes, StorageError> {
    serde_json::to_vec(state)
        .map(Bytes::from)
        .map_err(|error| StorageError::Io(io::Error::other(error)))
}

fn parse_state(id: UploadId, bytes: &[u8]) -> Result<DataState, StorageError> {
    parse_json(&format!("the data state of {id}"), bytes)
}

/// Parses stored JSON; `what` names it in the error.
fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|error| {
        StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: {error}"),
        ))
    })
}

fn io_error(error: object_store::Error) -> StorageError {
    StorageError::Io(io::Error::other(error))
}

fn not_found_or_io(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => io_error(other),
    }
}

fn total_len(chunks: &[Bytes]) -> u64 {
    chunks.iter().map(|chunk| chunk.len() as u64).sum()
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
            return self.stream_object(&self.data_path(id), range).await;
        }
        let state = self.load_existing_state(id).await?;
        if state.sealed.is_some() {
            return self.stream_object(&self.data_path(id), range).await;
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
            .copy(&self.data_path(record.id), &self.file_path(&file))
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
                .map(|tail| self.tail_path(id, tail.seq))
                .collect();
            if !bytes.is_empty() {
                let seq = state.next_tail;
                state.next_tail += 1;
                self.store
                    .put(&self.tail_path(id, seq), PutPayload::from(bytes))
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
                .abort_multipart(&self.data_path(id), &multipart.id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        // The state goes last: while it exists, a retry still knows the
        // multipart upload to abort.
        self.delete_upload_objects(id, &[self.record_path(id), self.state_path(id)])
            .await?;
        self.meta.clear_state(id).await
    }

    async fn remove_record(&self, id: UploadId) -> Result<(), StorageError> {
        self.delete_upload_objects(id, &[self.record_path(id), self.state_path(id)])
            .await?;
        self.meta.remove(id).await
    }

    async fn unpublish(&self, file: &FileKey) -> Result<(), StorageError> {
        match self.store.delete(&self.file_path(file)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(io_error(error)),
        }
    }

    async fn probe(&self) -> Result<(), StorageError> {
        self.meta.probe().await?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.root.clone().join(format!(
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

/// An open upload: the acknowledged tail and the bytes not yet durable are
/// in memory (together less than one part, plus the batch being written).
#[derive(Debug)]
struct ObjectAppend {
    storage: ObjectStorage,
    id: UploadId,
    /// The state as it will be saved at the next sync.
    state: DataState,
    /// The bytes of `state.tails` (durable in tail objects).
    tail: Vec<Bytes>,
    /// Bytes written since the last sync, not yet in any object.
    pending: Vec<Bytes>,
    /// Tail objects that became part of a part; deleted once the state
    /// that no longer lists them is saved.
    absorbed: Vec<u64>,
    /// Whether `state` differs from the saved one.
    dirty: bool,
    /// The last saved state and its tail bytes: after a failed write the
    /// writer's memory may have lost bytes in the middle (a part that did
    /// not go up), so the next sync goes back to this instead of saving a
    /// state with a hole.
    saved: (DataState, Vec<Bytes>),
    /// A write failed since the last sync.
    failed: bool,
    /// The parts being uploaded while the next one fills, oldest first.
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<Result<Part, StorageError>>>,
}

impl Drop for ObjectAppend {
    fn drop(&mut self) {
        self.abandon_part();
    }
}

impl ObjectAppend {
    fn new(storage: ObjectStorage, id: UploadId, state: DataState, tail: Vec<Bytes>) -> Self {
        ObjectAppend {
            storage,
            id,
            saved: (state.clone(), tail.clone()),
            state,
            tail,
            pending: Vec::new(),
            absorbed: Vec::new(),
            dirty: false,
            failed: false,
            in_flight: std::collections::VecDeque::new(),
        }
    }

    /// Empties an upload: aborts its multipart upload, drops its tail.
    async fn reset(
        storage: &ObjectStorage,
        id: UploadId,
        state: DataState,
    ) -> Result<(), StorageError> {
        if let Some(multipart) = &state.multipart {
            match storage
                .store
                .abort_multipart(&storage.data_path(id), &multipart.id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        let old: Vec<Path> = state
            .tails
            .iter()
            .map(|tail| storage.tail_path(id, tail.seq))
            .collect();
        let empty = DataState {
            next_tail: state.next_tail,
            ..DataState::default()
        };
        storage.save_state(id, &empty).await?;
        storage.delete_quietly(old).await;
        Ok(())
    }

    fn buffered(&self) -> usize {
        (total_len(&self.tail) + total_len(&self.pending)) as usize
    }

    /// Uploads the first `part_size` buffered bytes (the whole tail, which
    /// is always shorter than a part, then pending bytes) as the next part.
    async fn upload_part(&mut self) -> Result<(), StorageError> {
        let size = self.storage.part_size;
        let mut part = std::mem::take(&mut self.tail);
        let mut room = size - total_len(&part) as usize;
        let mut rest = Vec::new();
        for mut chunk in self.pending.drain(..) {
            if room == 0 {
                rest.push(chunk);
            } else if chunk.len() <= room {
                room -= chunk.len();
                part.push(chunk);
            } else {
                part.push(chunk.split_to(room));
                room = 0;
                rest.push(chunk);
            }
        }
        self.pending = rest;
        let data = self.storage.data_path(self.id);
        let multipart = match &mut self.state.multipart {
            Some(multipart) => multipart,
            None => {
                let id = self
                    .storage
                    .store
                    .create_multipart(&data)
                    .await
                    .map_err(io_error)?;
                self.state.multipart.insert(Multipart {
                    id,
                    parts: Vec::new(),
                })
            }
        };
        let len = total_len(&part);
        let upload_id = multipart.id.clone();
        // A node that lost the upload to another sends no more parts.
        self.storage.meta.before_part(self.id).await?;
        // A bounded number of parts in flight while the next one fills:
        // wait for the oldest when the window is full.
        while self.in_flight.len() >= self.storage.parts_in_flight {
            self.finish_oldest_part().await?;
        }
        let index =
            self.state.multipart.as_ref().map_or(0, |m| m.parts.len()) + self.in_flight.len();
        let store = Arc::clone(&self.storage.store);
        let payload: PutPayload = part.into_iter().collect();
        // The index is the number of parts before it: after a crash the next
        // writer uploads the same index again, and the later copy wins.
        self.in_flight.push_back(tokio::spawn(async move {
            let uploaded = store
                .put_part(&data, &upload_id, index, payload)
                .await
                .map_err(io_error)?;
            Ok(Part {
                etag: uploaded.content_id,
                len,
            })
        }));
        self.absorbed
            .extend(self.state.tails.drain(..).map(|tail| tail.seq));
        self.dirty = true;
        Ok(())
    }

    /// Waits for the oldest part in flight and lists it (parts are listed
    /// in index order).
    async fn finish_oldest_part(&mut self) -> Result<(), StorageError> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let part = task
            .await
            .map_err(|join| StorageError::Io(io::Error::other(join)))??;
        match &mut self.state.multipart {
            Some(multipart) => multipart.parts.push(part),
            None => {
                return Err(StorageError::Io(io::Error::other(
                    "a part finished without its multipart upload",
                )));
            }
        }
        Ok(())
    }

    /// Waits for every part in flight.
    async fn finish_parts(&mut self) -> Result<(), StorageError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest_part().await?;
        }
        Ok(())
    }

    /// Drops the parts in flight (their uploads are abandoned).
    fn abandon_part(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }

    /// Turns a sealed upload back into a multipart upload holding its first
    /// `len` bytes, copied from `data` through this node.
    async fn rebuild(&mut self, len: u64) -> Result<(), StorageError> {
        let Some(sealed) = self.state.sealed else {
            return Ok(());
        };
        let source = self.storage.data_path(self.id);
        self.abandon_part();
        self.state = DataState {
            next_tail: self.state.next_tail,
            ..DataState::default()
        };
        self.tail.clear();
        self.pending.clear();
        self.dirty = true;
        if len == 0 {
            return Ok(());
        }
        // The new multipart upload targets `data` too; S3 replaces the old
        // object only when it completes, so the copy reads a stable source.
        let mut bytes = self
            .storage
            .stream_object(&source, 0..len.min(sealed))
            .await?;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(StorageError::Io)?;
            self.push(chunk).await?;
        }
        Ok(())
    }

    async fn push(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        if !chunk.is_empty() {
            self.pending.push(chunk);
        }
        while self.buffered() >= self.storage.part_size {
            self.upload_part().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Append for ObjectAppend {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Io(io::Error::other(
                "an earlier write to this upload failed; sync first",
            )));
        }
        if chunks.iter().all(Bytes::is_empty) {
            return Ok(());
        }
        let written = self.write_all(chunks).await;
        self.failed = written.is_err();
        written
    }

    async fn sync(&mut self) -> Result<u64, StorageError> {
        if self.failed {
            // Back to what is durable; parts uploaded since are orphans that
            // the next part uploads replace (same indexes).
            self.abandon_part();
            let (state, tail) = self.saved.clone();
            if let (Some(created), None) = (&self.state.multipart, &state.multipart) {
                // Created since the last save: nothing durable refers to it.
                let (store, data, upload) = (
                    Arc::clone(&self.storage.store),
                    self.storage.data_path(self.id),
                    created.id.clone(),
                );
                tokio::spawn(async move {
                    if let Err(error) = store.abort_multipart(&data, &upload).await {
                        tracing::warn!(%error, %data, "cannot abort an unused multipart upload");
                    }
                });
            }
            self.state = state;
            self.tail = tail;
            self.pending.clear();
            self.absorbed.clear();
            self.dirty = false;
            self.failed = false;
            return Ok(self.state.len());
        }
        let synced = self.sync_all().await;
        self.failed = synced.is_err();
        synced
    }
}

impl ObjectAppend {
    async fn write_all(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        if let Some(sealed) = self.state.sealed {
            self.rebuild(sealed).await?;
        }
        for chunk in chunks {
            self.push(chunk).await?;
        }
        Ok(())
    }

    async fn sync_all(&mut self) -> Result<u64, StorageError> {
        self.finish_parts().await?;
        if !self.pending.is_empty() {
            let seq = self.state.next_tail;
            let len = total_len(&self.pending);
            let payload: PutPayload = self.pending.iter().cloned().collect();
            self.storage
                .store
                .put(&self.storage.tail_path(self.id, seq), payload)
                .await
                .map_err(io_error)?;
            self.state.next_tail += 1;
            self.state.tails.push(Tail { seq, len });
            self.tail.append(&mut self.pending);
            self.dirty = true;
        }
        if self.dirty {
            self.storage.save_state(self.id, &self.state).await?;
            self.saved = (self.state.clone(), self.tail.clone());
            self.dirty = false;
            let absorbed = self
                .absorbed
                .drain(..)
                .map(|seq| self.storage.tail_path(self.id, seq))
                .collect();
            self.storage.delete_quietly(absorbed).await;
        }
        Ok(self.state.len())
    }
}

#[cfg(test)]
mod tests {
    //! Object-store failures in the middle of an append: what was
    //! acknowledged stays, and nothing unacknowledged is ever counted.

    use std::sync::atomic::AtomicUsize;

    use futures_util::stream::BoxStream;
    use object_store::{
        CopyOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutResult,
    };
    use tenax_core::Namespace;

    use super::*;

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

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
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
            md5: false,
            created_at: 1,
            updated_at: 1,
            status: Status::Active,
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
}
