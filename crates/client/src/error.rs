//! The error type of the client and its mapping to CLI exit codes.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Everything that can make an upload or a download fail.
///
/// Transient trouble (dropped connections, stalls, `408`, `429`, `5xx`) is
/// retried inside [`Uploader::upload`](crate::Uploader::upload) and only
/// surfaces as [`Error::RetriesExhausted`] or [`Error::TimeLimit`] once the
/// retry policy gives up. Use [`Error::exit_code`] to turn an error into a
/// process exit status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The upload URL given by the user cannot be used.
    #[error("invalid upload URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bearer token cannot be sent in an HTTP header.
    #[error("the token is not valid in an HTTP header (visible ASCII only)")]
    InvalidToken,
    /// The local file could not be opened, inspected or read.
    #[error("cannot read {}", path.display())]
    LocalIo {
        /// The file being uploaded.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The local file changed (size, modification time or identity) while
    /// it was being uploaded.
    #[error("{} changed while it was being uploaded", path.display())]
    FileChanged {
        /// The file being uploaded.
        path: PathBuf,
    },
    /// The server refused the upload with a status that retrying cannot fix
    /// (a non-retryable `4xx`, or `400` over and over).
    #[error("the server rejected the request (HTTP {status}): {detail}")]
    Rejected {
        /// The HTTP status code.
        status: u16,
        /// The problem's `detail` (or `title`, or the status text).
        detail: String,
    },
    /// Too many consecutive attempts failed without the server acknowledging
    /// any new byte.
    #[error(
        "gave up after {attempts} consecutive failed attempts without progress; last error: {last_error}"
    )]
    RetriesExhausted {
        /// Failed attempts in a row.
        attempts: u32,
        /// What went wrong the last time.
        last_error: String,
    },
    /// The upload did not finish within the configured maximum time.
    #[error("gave up: the upload did not finish within {limit:?}; last error: {last_error}")]
    TimeLimit {
        /// The configured limit.
        limit: Duration,
        /// What went wrong the last time (empty if nothing failed).
        last_error: String,
    },
    /// The server's SHA-256 of the finished object differs from the local one.
    #[error("SHA-256 mismatch: the local file has {local}, the server stored {remote}")]
    DigestMismatch {
        /// Lowercase hex SHA-256 of the local file.
        local: String,
        /// The `sha256` the server reported.
        remote: String,
    },
    /// The server's size of the finished object differs from the local one.
    #[error("size mismatch: the local file has {local} bytes, the server stored {remote}")]
    SizeMismatch {
        /// The local file's size.
        local: u64,
        /// The `size` the server reported.
        remote: u64,
    },
    /// The server answered something the protocol does not allow (a bad
    /// `Range`, a `308` for more bytes than the file has, unreadable JSON).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The downloaded file's SHA-256 differs from the server's
    /// `Repr-Digest`: the bytes on disk are not the representation.
    #[error(
        "the downloaded file is corrupt: its SHA-256 is {actual}, the server's Repr-Digest says {expected}"
    )]
    ReprDigestMismatch {
        /// The SHA-256 the server announced, lowercase hex.
        expected: String,
        /// The SHA-256 of the downloaded file, lowercase hex.
        actual: String,
    },
    /// The file being downloaded could not be created, written, synced or
    /// read back, or its resume state could not be written.
    #[error("cannot write {}", path.display())]
    LocalWrite {
        /// The file (or its state file).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The TLS configuration of the upload connections could not be set up
    /// (the platform's roots, or the extra roots given).
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

impl Error {
    /// The process exit code the `tenax` CLI uses for this error.
    ///
    /// | code | meaning |
    /// |---|---|
    /// | 0 | success (not an error) |
    /// | 1 | any other error (protocol violation, client setup) |
    /// | 2 | command-line usage error (reported by clap, not by this crate) |
    /// | 3 | rejected by the server (a non-retryable `4xx`) or a bad URL |
    /// | 4 | gave up: retries or the maximum time exhausted |
    /// | 5 | the server's object differs from the local file (SHA-256 or size), or a download's SHA-256 differs from the server's `Repr-Digest` |
    /// | 6 | local I/O error: the file is unreadable or changed during the upload, or cannot be written |
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Rejected { .. } | Error::InvalidUrl { .. } => 3,
            Error::RetriesExhausted { .. } | Error::TimeLimit { .. } => 4,
            Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::ReprDigestMismatch { .. } => 5,
            Error::LocalIo { .. } | Error::FileChanged { .. } | Error::LocalWrite { .. } => 6,
            Error::Protocol(_) | Error::Client(_) | Error::Tls(_) | Error::InvalidToken => 1,
        }
    }
}
