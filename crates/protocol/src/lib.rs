//! The pure protocol layer of tenax.
//!
//! Everything here is a function from header text (and upload state) to a
//! typed value or decision. There is no I/O, no clock and no async: the
//! server's dialect adapters call into this crate and then act on the result,
//! which keeps every rule of `docs/protocol.md` testable (and fuzzable) on its
//! own.
//!
//! * [`number`]: the strict integer grammar shared by every dialect (§0).
//! * [`content_range`]: `Content-Range` as the seed dialect uses it (§1.2),
//!   including Google's `*` extensions.
//! * [`seed`]: the seed (Google "308 Resume Incomplete") decision table (§1.3)
//!   and the `Range: bytes=0-N` progress header.
//! * [`name`]: upload ids and user-chosen file names.
//! * [`range`]: range downloads: `Range`, the preconditions and `If-Range`
//!   (§4).
//! * [`forwarded`]: `Forwarded` and `X-Forwarded-*`, read behind a proxy.
//! * [`host`]: the request's own `Host`, checked on every request.
//! * [`disposition`]: the file name of a `Content-Disposition` (RFC 6266,
//!   RFC 8187).
//! * [`repr_digest`]: `Repr-Digest` / `Content-Digest` SHA-256 members.
//! * [`gcs`]: the GCS JSON API: object names, `x-goog-hash`, generation
//!   preconditions, `multipart/related` upload bodies.

pub mod content_range;
pub mod disposition;
pub mod forwarded;
pub mod gcs;
pub mod host;
pub mod name;
pub mod number;
pub mod range;
pub mod repr_digest;
pub mod rufh;
pub mod seed;
pub mod signed;
pub mod tus;

pub use content_range::{ContentRange, ContentRangeError, Total};
pub use name::{FileName, NameError, Namespace, UploadId};
pub use number::{NumberError, parse_u64};
