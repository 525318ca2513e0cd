//! The wire differences between the upload dialects.
//!
//! The upload loop (`uploader.rs`) is the same for every dialect: create an
//! upload, send a chunk from an offset, ask the server how much it holds,
//! and at the end check the server's SHA-256. [`Dialect`] supplies the
//! requests for those steps and reads the answers into an [`Answer`]:
//!
//! | step | seed (§1) | tus (§2) | ietf (§3) |
//! |---|---|---|---|
//! | create | `POST …/api/upload?file=` | `POST /uploads`, `Upload-Length`, `Upload-Metadata` | `POST /uploads`, `Upload-Complete: ?0`, `Content-Disposition` |
//! | chunk | `PUT`, `Content-Range` | `PATCH`, `Upload-Offset` | `PATCH`, `Upload-Offset`, `Upload-Complete` |
//! | query | `PUT`, `bytes */SIZE` | `HEAD` | `HEAD` |
//! | digest | the final `200` JSON | seed status query `bytes */*` | seed status query `bytes */*` |

use std::fmt;
use std::str::FromStr;

use reqwest::header::{
    CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE,
};
use reqwest::{Method, Url};
use serde::Serialize;
use tenax_protocol::parse_u64;
use tenax_protocol::repr_digest::WANT_REPR_DIGEST;
use tenax_protocol::seed::parse_held_range;
use tenax_protocol::{rufh, tus};
use thiserror::Error;

use crate::error::Error;
use crate::http::{Body, Client, RequestBuilder};
use crate::target::Target;

/// Content type of seed chunks.
const OCTET_STREAM: &str = "application/octet-stream";
/// Content type of tus chunks.
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// The RUFH interop version spoken.
const INTEROP_VERSION: &str = "9";

/// The protocol an [`Uploader`](crate::Uploader) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// Google-style "308 Resume Incomplete" (`docs/protocol.md` §1), the default.
    #[default]
    Seed,
    /// tus 1.0.0 (§2) at `{base}/uploads`.
    Tus,
    /// The IETF "Resumable Uploads for HTTP" draft, interop version 9 (§3),
    /// at `{base}/uploads`.
    Ietf,
    /// Ask the server (`OPTIONS {base}/uploads`): tus if `Tus-Version` lists
    /// 1.0.0, else ietf if `Accept-Patch` or `Upload-Limit` is present, else
    /// seed.
    Auto,
}

impl Protocol {
    /// The lowercase name: `seed`, `tus`, `ietf` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Seed => "seed",
            Protocol::Tus => "tus",
            Protocol::Ietf => "ietf",
            Protocol::Auto => "auto",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that is not `seed`, `tus`, `ietf` or `auto`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown protocol {0:?} (expected seed, tus, ietf or auto)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "seed" => Ok(Protocol::Seed),
            "tus" => Ok(Protocol::Tus),
            "ietf" | "rufh" => Ok(Protocol::Ietf),
            "auto" => Ok(Protocol::Auto),
            _ => Err(UnknownProtocol(text.to_owned())),
        }
    }
}

/// A concrete dialect (what [`Protocol::Auto`] resolves to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Seed,
    Tus,
    Ietf,
}

/// What kind of upload a creation request makes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Creation<'a> {
    /// The whole file, under its name.
    Whole,
    /// A tus partial upload (one part of a parallel upload).
    Part,
    /// The tus concatenation of these (absolute) part URLs, under the name.
    Final(&'a [Url]),
}

/// A server answer as far as its status and headers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The upload is not complete; the server holds this many bytes.
    Held(u64),
    /// The upload is complete (no digest in the answer).
    Complete,
    /// The upload is complete and the body is the seed final JSON.
    FinalJson,
    /// An error status: classify it.
    Error,
}

/// What `OPTIONS {base}/uploads` revealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// `Tus-Version` lists 1.0.0.
    pub(crate) tus: bool,
    /// `Tus-Extension` lists `concatenation`.
    pub(crate) concatenation: bool,
    /// `Accept-Patch` or `Upload-Limit` is present.
    pub(crate) ietf: bool,
}

impl Capabilities {
    /// Reads the capability headers of an `OPTIONS` answer.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let lists = |name: &str, item: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case(item))
        };
        Capabilities {
            tus: lists("tus-version", tus::VERSION),
            concatenation: lists("tus-extension", "concatenation"),
            ietf: headers.contains_key("accept-patch") || headers.contains_key("upload-limit"),
        }
    }

    /// The dialect [`Protocol::Auto`] picks.
    pub(crate) fn dialect(self) -> Dialect {
        if self.tus {
            Dialect::Tus
        } else if self.ietf {
            Dialect::Ietf
        } else {
            Dialect::Seed
        }
    }
}

impl Dialect {
    /// The dialect's name as a [`Protocol`].
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Dialect::Seed => Protocol::Seed,
            Dialect::Tus => Protocol::Tus,
            Dialect::Ietf => Protocol::Ietf,
        }
    }

    /// The dialect named `name` (as stored in the journal).
    pub(crate) fn named(name: &str) -> Option<Self> {
        match name.parse().ok()? {
            Protocol::Seed => Some(Dialect::Seed),
            Protocol::Tus => Some(Dialect::Tus),
            Protocol::Ietf => Some(Dialect::Ietf),
            Protocol::Auto => None,
        }
    }

    /// Whether the server only completes an upload when told so (an IETF
    /// append with `Upload-Complete: ?1`), so that an upload holding every
    /// byte may still need an empty completing request.
    pub(crate) fn completes_explicitly(self) -> bool {
        self == Dialect::Ietf
    }

    /// Whether `409 Conflict` means "wrong offset, ask again".
    pub(crate) fn conflict_is_gap(self) -> bool {
        self != Dialect::Seed
    }

    /// The request creating an upload of `length` bytes.
    pub(crate) fn create(
        self,
        client: &Client,
        target: &Target,
        length: u64,
        creation: Creation<'_>,
    ) -> Result<RequestBuilder, Error> {
        let filename = || {
            let mut metadata = tus::Metadata::new();
            metadata.insert("filename".to_owned(), Some(target.name.as_bytes().to_vec()));
            tus::format_metadata(&metadata)
        };
        Ok(match self {
            // The final answer's SHA-256 is what the client checks: the
            // server need not spend CPU on an MD5 nobody reads.
            Dialect::Seed => client
                .post(target.endpoint.clone())
                .header("X-Upload-Content-Length", length)
                .header("X-Upload-Content-Type", OCTET_STREAM)
                .header(WANT_REPR_DIGEST, "sha-256=10")
                .header(CONTENT_LENGTH, 0),
            Dialect::Tus => {
                let request = client
                    .post(target.collection.clone())
                    .header("Tus-Resumable", tus::VERSION)
                    .header(CONTENT_LENGTH, 0);
                match creation {
                    Creation::Whole => request
                        .header("Upload-Length", length)
                        .header("Upload-Metadata", filename()),
                    Creation::Part => request
                        .header("Upload-Length", length)
                        .header("Upload-Concat", "partial"),
                    Creation::Final(parts) => {
                        let urls: Vec<&str> = parts.iter().map(Url::as_str).collect();
                        request
                            .header("Upload-Concat", format!("final;{}", urls.join(" ")))
                            .header("Upload-Metadata", filename())
                    }
                }
            }
            Dialect::Ietf => client
                .post(target.collection.clone())
                .header("Upload-Draft-Interop-Version", INTEROP_VERSION)
                .header("Upload-Complete", "?0")
                .header("Upload-Length", length)
                .header(CONTENT_DISPOSITION, disposition(&target.name)?)
                .header(CONTENT_LENGTH, 0),
        })
    }

    /// The request asking how much of the upload at `session` (of `length`
    /// bytes) the server holds.
    pub(crate) fn query(self, client: &Client, session: &Url, length: u64) -> RequestBuilder {
        match self {
            Dialect::Seed => client
                .put(session.clone())
                .header(CONTENT_RANGE, format!("bytes */{length}"))
                .header(CONTENT_LENGTH, 0),
            Dialect::Tus => client
                .request(Method::HEAD, session.clone())
                .header("Tus-Resumable", tus::VERSION),
            Dialect::Ietf => client
                .request(Method::HEAD, session.clone())
                .header("Upload-Draft-Interop-Version", INTEROP_VERSION),
        }
    }

    /// The seed status query (`bytes */*`): any dialect's upload answers it,
    /// with the final JSON (and its `sha256`) once complete.
    pub(crate) fn status_query(client: &Client, session: &Url) -> RequestBuilder {
        client
            .put(session.clone())
            .header(CONTENT_RANGE, "bytes */*")
            .header(CONTENT_LENGTH, 0)
    }

    /// The request sending `len` bytes from offset `at` of an upload of
    /// `length` bytes, with `body` streaming exactly those bytes. A zero
    /// `len` (IETF only) asks the server to complete the upload.
    pub(crate) fn chunk(
        self,
        client: &Client,
        session: &Url,
        (at, len, length): (u64, u64, u64),
        body: Body,
    ) -> RequestBuilder {
        let request = match self {
            Dialect::Seed => client
                .put(session.clone())
                .header(
                    CONTENT_RANGE,
                    format!("bytes {at}-{}/{length}", (at + len).saturating_sub(1)),
                )
                .header(CONTENT_TYPE, OCTET_STREAM),
            Dialect::Tus => client
                .patch(session.clone())
                .header("Tus-Resumable", tus::VERSION)
                .header("Upload-Offset", at)
                .header(CONTENT_TYPE, OFFSET_STREAM),
            Dialect::Ietf => client
                .patch(session.clone())
                .header("Upload-Draft-Interop-Version", INTEROP_VERSION)
                .header("Upload-Offset", at)
                .header(
                    "Upload-Complete",
                    if at + len == length { "?1" } else { "?0" },
                )
                .header(CONTENT_TYPE, rufh::PARTIAL_UPLOAD),
        };
        request.header(CONTENT_LENGTH, len).body(body)
    }

    /// Reads an answer to a creation, chunk or query on an upload of
    /// `length` bytes. `Err` is a protocol violation.
    pub(crate) fn answer(
        self,
        status: u16,
        headers: &HeaderMap,
        length: u64,
    ) -> Result<Answer, String> {
        match (self, status) {
            (Dialect::Seed, 200 | 201) => Ok(Answer::FinalJson),
            (Dialect::Seed, 308) => match headers.get(RANGE) {
                None => Ok(Answer::Held(0)),
                Some(value) => value
                    .to_str()
                    .ok()
                    .and_then(|v| parse_held_range(v).ok())
                    .map(Answer::Held)
                    .ok_or_else(|| format!("the server sent an invalid progress Range {value:?}")),
            },
            (Dialect::Tus, 200..=299) => {
                let offset = header(headers, "upload-offset")
                    .and_then(|v| parse_u64(v).ok())
                    .ok_or_else(|| {
                        format!("the tus answer (HTTP {status}) has no valid Upload-Offset")
                    })?;
                Ok(if offset == length {
                    Answer::Complete
                } else {
                    Answer::Held(offset)
                })
            }
            (Dialect::Ietf, 200..=299) => {
                if header(headers, "upload-complete").and_then(rufh::parse_boolean) == Some(true) {
                    return Ok(Answer::Complete);
                }
                header(headers, "upload-offset")
                    .and_then(rufh::parse_integer)
                    .map(Answer::Held)
                    .ok_or_else(|| format!("the answer (HTTP {status}) has no valid Upload-Offset"))
            }
            _ => Ok(Answer::Error),
        }
    }
}

/// A header's text, if it is one.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `attachment; filename="NAME"` with `"` and `\` escaped. Names that cannot
/// be a header value (control characters) are refused.
fn disposition(name: &str) -> Result<HeaderValue, Error> {
    let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_bytes(format!("attachment; filename=\"{escaped}\"").as_bytes()).map_err(
        |_| Error::InvalidUrl {
            url: name.to_owned(),
            reason: "the file name cannot be sent in a Content-Disposition header".to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn protocol_names_round_trip() {
        for protocol in [
            Protocol::Seed,
            Protocol::Tus,
            Protocol::Ietf,
            Protocol::Auto,
        ] {
            assert_eq!(protocol.as_str().parse::<Protocol>(), Ok(protocol));
        }
        assert_eq!("TUS".parse::<Protocol>(), Ok(Protocol::Tus));
        assert!("gcs".parse::<Protocol>().is_err());
        assert_eq!(Dialect::named("ietf"), Some(Dialect::Ietf));
        assert_eq!(Dialect::named("auto"), None);
    }

    #[test]
    fn auto_picks_from_options() {
        let tus = headers(&[
            ("tus-version", "1.0.0"),
            ("tus-extension", "creation,termination, concatenation"),
            ("upload-limit", "min-size=0"),
        ]);
        let caps = Capabilities::of(&tus);
        assert!(caps.concatenation);
        assert_eq!(caps.dialect(), Dialect::Tus);
        let old_tus = headers(&[("tus-version", "0.2.2"), ("accept-patch", "x")]);
        assert_eq!(Capabilities::of(&old_tus).dialect(), Dialect::Ietf);
        let rufh = headers(&[("upload-limit", "min-size=0")]);
        assert_eq!(Capabilities::of(&rufh).dialect(), Dialect::Ietf);
        assert!(!Capabilities::of(&rufh).concatenation);
        assert_eq!(Capabilities::of(&HeaderMap::new()).dialect(), Dialect::Seed);
    }

    #[test]
    fn answers() {
        let tus = Dialect::Tus;
        let held = headers(&[("upload-offset", "5")]);
        assert_eq!(tus.answer(204, &held, 10), Ok(Answer::Held(5)));
        assert_eq!(tus.answer(200, &held, 5), Ok(Answer::Complete));
        assert!(tus.answer(204, &HeaderMap::new(), 5).is_err());
        assert_eq!(tus.answer(409, &held, 10), Ok(Answer::Error));
        let ietf = Dialect::Ietf;
        let incomplete = headers(&[("upload-offset", "5"), ("upload-complete", "?0")]);
        assert_eq!(ietf.answer(204, &incomplete, 10), Ok(Answer::Held(5)));
        let complete = headers(&[("upload-offset", "10"), ("upload-complete", "?1;x=1")]);
        assert_eq!(ietf.answer(200, &complete, 10), Ok(Answer::Complete));
        let seed = Dialect::Seed;
        assert_eq!(seed.answer(308, &HeaderMap::new(), 10), Ok(Answer::Held(0)));
        let range = headers(&[("range", "bytes=0-3")]);
        assert_eq!(seed.answer(308, &range, 10), Ok(Answer::Held(4)));
        assert_eq!(seed.answer(200, &range, 10), Ok(Answer::FinalJson));
        assert!(
            seed.answer(308, &headers(&[("range", "bytes=1-3")]), 10)
                .is_err()
        );
    }

    #[test]
    fn dispositions_are_quoted() {
        assert_eq!(
            disposition("a \"b\\c.txt").expect("valid"),
            "attachment; filename=\"a \\\"b\\\\c.txt\""
        );
        assert!(disposition("bad\nname").is_err());
    }
}
