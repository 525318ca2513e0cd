//! The tenax client: resumable uploads over plain HTTP.
//!
//! [`Uploader`] speaks the seed protocol (Google-style "308 Resume
//! Incomplete", `PROTOCOLS.md` §1): it creates a session with `POST`, streams
//! the file in chunks with `PUT` + `Content-Range`, and after any trouble asks
//! the server how much it holds (`Content-Range: bytes */SIZE`) and goes on
//! from there. It never assumes a chunk arrived: only the server's `Range`
//! moves the upload forward.
//!
//! * Retries: exponential backoff with jitter (1 s doubling to 60 s), the
//!   server's `Retry-After` honoured, a stall watchdog for connections that
//!   stop moving, a cap on consecutive failures without progress and an
//!   optional overall time limit.
//! * Integrity: the SHA-256 of the file is computed while it is read and
//!   compared with the server's at the end ([`Error::DigestMismatch`]).
//! * Across runs: with a journal directory, an interrupted upload of the same
//!   (unchanged) file to the same URL resumes its session.
//! * Memory: chunk bodies are streamed from the file; nothing holds a chunk.
//!
//! Errors map to the CLI's exit codes with [`Error::exit_code`].

mod error;
mod hash;
mod journal;
mod retry;
mod target;
mod uploader;

pub use error::Error;
pub use uploader::{Event, Progress, UploadReport, Uploader};
