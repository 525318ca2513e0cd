//! Where upload bytes and records live.
//!
//! The trait is small on purpose: an object-storage backend has to map each
//! method onto a handful of requests. Every method that returns `Ok` has made
//! its effect durable.

use std::fmt;
use std::io;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use tenax_protocol::UploadId;
use thiserror::Error;

use crate::record::{FileKey, UploadRecord};

mod local;

pub use local::LocalDisk;

/// A stream of bytes read from storage.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// Storage failures, by meaning.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Another process took the upload over since this one did: its
    /// commits are refused, and nothing it wrote since is acknowledged.
    #[error("another request took the upload over")]
    Fenced,
    /// A service the backend needs is out of reach for now (the cluster's
    /// database); nothing was changed, and a retry later may succeed.
    #[error("storage is unavailable: {0}")]
    Unavailable(#[source] io::Error),
    /// The upload or file does not exist.
    #[error("not found")]
    NotFound,
    /// The device is full.
    #[error("storage is full")]
    Full(#[source] io::Error),
    /// Any other I/O failure.
    #[error("storage I/O failed: {0}")]
    Io(#[source] io::Error),
    /// The backend cannot serve this range of an upload still in progress
    /// (an object store cannot read back the parts of an unfinished
    /// multipart upload); bytes from `readable_from` on can be read, and
    /// everything once the upload is complete.
    #[error(
        "bytes below {readable_from} of an upload in progress cannot be read from this storage"
    )]
    NotReadable {
        /// The first offset the backend can serve while the upload is in progress.
        readable_from: u64,
    },
}

impl From<io::Error> for StorageError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StorageError::Full(error),
            _ => StorageError::Io(error),
        }
    }
}

/// An upload as storage holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its record.
    pub record: UploadRecord,
    /// How many bytes of data are durably held.
    pub held: u64,
}

/// A storage backend.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates a new upload: its record and empty data.
    async fn create(&self, record: &UploadRecord) -> Result<(), StorageError>;

    /// Atomically replaces an upload's record.
    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError>;

    /// Loads an upload's record and the number of bytes held.
    /// Returns [`StorageError::NotFound`] for an unknown id.
    async fn load(&self, id: UploadId) -> Result<Stored, StorageError>;

    /// Every upload's record (used to rebuild indexes at start).
    async fn list(&self) -> Result<Vec<UploadRecord>, StorageError>;

    /// Opens an active upload's data for appending at `offset`, which must be
    /// the number of bytes held.
    async fn append(&self, id: UploadId, offset: u64) -> Result<Box<dyn Append>, StorageError>;

    /// Streams a byte range of an upload's data, whether in progress or complete.
    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError>;

    /// Makes an active upload's `len` bytes readable whole, under its lease
    /// (the engine calls it at finalisation, before it reads them back to
    /// hash them), and releases what was set aside for its appends. An
    /// object store completes the multipart upload here; local disk gives
    /// back the space it reserved past the end. A later append or truncate
    /// still works. Idempotent.
    async fn seal(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let _ = (id, len);
        Ok(())
    }

    /// Publishes a complete upload's data: afterwards it is readable under its
    /// name (if it has one), whole. Idempotent.
    async fn publish(&self, record: &UploadRecord) -> Result<(), StorageError>;

    /// Cuts an active upload's data back to `len` bytes, durably (used to
    /// drop a chunk whose checksum failed).
    async fn truncate(&self, id: UploadId, len: u64) -> Result<(), StorageError>;

    /// Removes an upload's data. The record stays.
    async fn discard(&self, id: UploadId) -> Result<(), StorageError>;

    /// Forgets an upload whose data was discarded: removes its record
    /// (afterwards `load` answers [`StorageError::NotFound`]). Idempotent.
    async fn remove_record(&self, id: UploadId) -> Result<(), StorageError>;

    /// Withdraws a published file (its upload was cancelled). Idempotent.
    async fn unpublish(&self, file: &FileKey) -> Result<(), StorageError>;

    /// A cheap check that the backend accepts writes now (readiness).
    async fn probe(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// An open, appendable upload.
#[async_trait]
pub trait Append: Send + fmt::Debug {
    /// Appends the chunks, in order, after everything written before.
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError>;

    /// Makes everything written so far durable and returns the durable length.
    async fn sync(&mut self) -> Result<u64, StorageError>;

    /// [`write`](Append::write), then [`sync`](Append::sync) whatever the
    /// write's outcome (what reached storage before a failure still
    /// counts): how a request's last bytes are stored. A storage that can
    /// do both in one step overrides it (on local disk, one blocking call
    /// where there would be two).
    async fn write_then_sync(
        &mut self,
        chunks: Vec<Bytes>,
    ) -> (Result<(), StorageError>, Result<u64, StorageError>) {
        let written = if chunks.is_empty() {
            Ok(())
        } else {
            self.write(chunks).await
        };
        (written, self.sync().await)
    }
}
