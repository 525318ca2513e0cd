//! The engine's failures, by meaning.

use tenax_protocol::UploadId;
use thiserror::Error;

use crate::events::HookError;
use crate::quota::QuotaExceeded;
use crate::storage::StorageError;

/// Engine failures, by meaning.
#[derive(Debug, Error)]
pub enum Error {
    /// No upload has this id (or name).
    #[error("no such upload")]
    NotFound,
    /// The upload was cancelled.
    #[error("the upload was cancelled")]
    Gone,
    /// The upload was idle for longer than the configured time to live.
    #[error("the upload expired")]
    Expired,
    /// The operation needs an active upload, and this one is complete.
    #[error("the upload is already complete")]
    Complete,
    /// Finalisation was asked for before every byte arrived.
    #[error("the upload holds {held} of {total} bytes")]
    Incomplete {
        /// Bytes held.
        held: u64,
        /// The total size.
        total: u64,
    },
    /// A chunk's checksum did not match; the chunk was discarded.
    #[error("the chunk's checksum does not match; it was discarded")]
    ChecksumMismatch,
    /// A chunk's checksum cannot be checked (a malformed value, or an
    /// algorithm the server does not offer); the chunk was discarded.
    #[error("the chunk's checksum cannot be checked ({0}); it was discarded")]
    ChecksumInvalid(String),
    /// A concatenation names an upload that is not a finished partial upload.
    #[error("upload {0} is not a finished partial upload")]
    NotConcatenable(UploadId),
    /// A concatenation names the same part more than once.
    #[error("upload {0} is named more than once in the concatenation")]
    RepeatedPart(UploadId),
    /// A concatenation names more parts than allowed.
    #[error("a concatenation may name at most {limit} parts")]
    TooManyParts {
        /// The most parts one final upload may name.
        limit: usize,
    },
    /// The upload's metadata (its media type included) is over the limit.
    #[error("the upload's metadata takes {size} bytes, over the limit of {limit}")]
    MetadataTooLarge {
        /// Its size: keys, values and the media type, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Bytes resent for a range the upload already holds differ from what it
    /// holds (another client writing the same name, say); nothing changed.
    #[error("the {len} bytes sent from offset {at} differ from the bytes held there")]
    OverlapMismatch {
        /// Where the compared range starts.
        at: u64,
        /// How long it is.
        len: u64,
    },
    /// The object's bytes do not have the digest its client declared
    /// (docs/protocol.md §7.4): not completed, the bytes kept.
    #[error("the declared {algorithm} {declared} does not match the object's {computed}")]
    DigestMismatch {
        /// `md5` or `crc32c`.
        algorithm: &'static str,
        /// What the client declared, base64.
        declared: String,
        /// What the bytes have, base64.
        computed: String,
    },
    /// A precondition of the GCS JSON API does not hold (docs/protocol.md
    /// §7.5): nothing published.
    #[error(transparent)]
    PreconditionFailed(#[from] tenax_protocol::gcs::PreconditionFailed),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The namespace's quota does not allow it.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The pre-create hook refused the upload or could not be asked.
    #[error(transparent)]
    Hook(#[from] HookError),
}
