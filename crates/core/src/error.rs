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
    /// A concatenation names an upload that is not a finished partial upload.
    #[error("upload {0} is not a finished partial upload")]
    NotConcatenable(UploadId),
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
