//! The tenax client: resumable uploads and downloads over plain HTTP.
//!
//! [`Uploader`] speaks three dialects ([`Protocol`]), chosen by the caller or
//! asked of the server ([`Protocol::Auto`]):
//!
//! * seed (Google-style "308 Resume Incomplete", `docs/protocol.md` §1, the
//!   default): a session from `POST`, chunks with `PUT` + `Content-Range`,
//!   progress from `Content-Range: bytes */SIZE` queries;
//! * tus 1.0.0 (§2): `POST /uploads`, `PATCH` + `Upload-Offset`, `HEAD`; with
//!   [`Uploader::parallel`] the file goes up as several partial uploads at
//!   once, then a final concatenation;
//! * the IETF resumable-upload draft (§3, interop 9): `POST /uploads` with
//!   `Upload-Complete: ?0`, `PATCH` + `Upload-Offset` + `Upload-Complete`,
//!   `HEAD`.
//!
//! After any trouble it asks the server how much it holds and goes on from
//! there. It never assumes a chunk arrived: only the server's answer moves
//! the upload forward.
//!
//! * Retries made for links: after a network failure (refused, reset,
//!   timed out, stalled) a cheap status query every probe interval (250 ms
//!   ± 10%) for as long as the link is down, bounded only by the optional
//!   overall time limit; probes on fresh connections that find a silent
//!   connection in about 2 s; for the server's own trouble (`5xx`, `429`,
//!   `408`) its `Retry-After`, else exponential backoff with jitter (1 s
//!   doubling to 60 s) and a cap on consecutive such failures without
//!   progress.
//! * Integrity: the SHA-256 of the file is computed while it is read and
//!   compared with the server's at the end ([`Error::DigestMismatch`]).
//! * Across runs: with a journal directory, an interrupted upload of the same
//!   (unchanged) file to the same URL resumes its session.
//! * Memory: chunk bodies are streamed from the file; nothing holds a chunk.
//! * Flapping links: what the HTTP stack and the kernel hold when a link dies
//!   is sent again, so upload sockets keep at most 16 KiB unsent
//!   ([`Uploader::unsent_limit`]) and, once a connection has dropped, the
//!   body goes in 16 KiB pieces through an HTTP stack buffering no more.
//!
//! [`Downloader`] fetches files with RFC 9110 range requests (`docs/protocol.md`
//! §4): resumed with `If-Range` across dropped connections and runs (a state
//! file beside the partial file), optionally over several connections, or
//! following an upload still in progress; verified against `Repr-Digest`.
//! Uploads and downloads share the retry policy and the stall watchdog.
//!
//! Errors map to the CLI's exit codes with [`Error::exit_code`].

mod dialect;
mod download;
mod error;
mod hash;
mod http;
mod journal;
mod net;
mod parts;
mod retry;
mod seconds;
mod target;
mod uploader;

pub use dialect::{Protocol, UnknownProtocol};
pub use download::{DownloadProgress, DownloadReport, Downloader, STATE_SUFFIX};
pub use error::Error;
pub use uploader::{DEFAULT_UNSENT_LIMIT, Event, Progress, UploadReport, Uploader};
