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
//! finalisation the engine calls
//! [`Storage::seal`](tenax_core::Storage::seal): the tail becomes the last
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
//!
//! Modules: `store` ([`ObjectStorage`], the backend), `append` (an open
//! upload's multipart writer), `state` (where an upload's bytes are),
//! `paths` (the layout above), `meta` ([`MetaStore`]).

use std::io;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::multipart::MultipartStore;
use tenax_core::StorageError;

mod append;
mod backend;
mod meta;
mod paths;
mod state;
mod store;
#[cfg(test)]
mod tests;

pub use meta::{MetaStore, ObjectMeta};
pub use store::ObjectStorage;

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
pub(crate) trait MultipartObjectStore: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> MultipartObjectStore for T {}

/// An object-store failure as a storage one: [`StorageError::Unavailable`]
/// (the server answers 503 with `Retry-After`: what it acknowledged is
/// kept, a retry later may succeed) when the object store could not be
/// reached or stopped answering, after the client's own retries;
/// [`StorageError::Io`] otherwise.
pub(crate) fn io_error(error: object_store::Error) -> StorageError {
    if out_of_reach(&error) {
        StorageError::Unavailable(io::Error::other(error))
    } else {
        StorageError::Io(io::Error::other(error))
    }
}

/// Whether `error` comes from the transport (no connection, a connection
/// refused, reset or timed out) rather than from an answer of the store.
fn out_of_reach(error: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    // The chain is short; the bound only guards against a cycle.
    for _ in 0..16 {
        let Some(current) = source else {
            return false;
        };
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        if let Some(io) = current.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        source = current.source();
    }
    false
}

pub(crate) fn not_found_or_io(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => io_error(other),
    }
}

pub(crate) fn total_len(chunks: &[Bytes]) -> u64 {
    chunks.iter().map(|chunk| chunk.len() as u64).sum()
}
