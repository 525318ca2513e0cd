//! Range downloads (docs/protocol.md §4): the answers to GET and HEAD on a
//! completed upload, and to a ranged GET on an upload still in progress.
//!
//! Every decision comes from `tenax_protocol::range`; this module only
//! reads the request's header fields, writes the response's and streams the
//! bytes from storage. Bodies are never built in memory: a multipart body
//! is a stream of small part heads and storage reads, opened one after the
//! other as the client reads.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use tenax_core::{FinalInfo, Snapshot, Storage, UploadRecord};
use tenax_protocol::range::{
    ByteRange, Conditions, Decision, RangeOutcome, Representation, available_ranges, decide,
    format_date, unsatisfied_content_range,
};
use tenax_protocol::repr_digest::Sha256Digest;

use crate::common::no_store;
use crate::problem::Problem;

const OCTET_STREAM: &str = "application/octet-stream";

/// `Repr-Digest` (RFC 9530).
static REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");

/// Answers a GET or HEAD on a completed upload: 200, 206 (one range or
/// `multipart/byteranges`), 304, 412 or 416, per the request's `Range` and
/// preconditions. The bytes are served as an attachment (see
/// [`user_content`]), under the record's name if it has one.
pub(crate) async fn serve_complete(
    storage: &Arc<dyn Storage>,
    method: &Method,
    headers: &HeaderMap,
    record: &UploadRecord,
    info: &FinalInfo,
) -> Result<Response, Problem> {
    let len = info.size;
    let etag = format!("\"{}\"", info.sha256);
    let fields = Fields::read(headers);
    let request = fields.conditions(method);
    let representation = Representation {
        len,
        etag: Some(&etag),
        last_modified: Some(info.completed_at),
    };
    let decision = decide(&request, &representation, unix_now());

    let mut validators = HeaderMap::new();
    validators.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    insert(&mut validators, header::ETAG, &etag);
    insert(
        &mut validators,
        header::LAST_MODIFIED,
        &format_date(info.completed_at),
    );
    let content_type = content_type(record);
    let head = method == Method::HEAD;

    let mut response = match decision {
        Decision::NotModified => StatusCode::NOT_MODIFIED.into_response(),
        Decision::PreconditionFailed => {
            let mut response = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "urn:tenax:problem:precondition-failed",
                "Precondition failed",
                "a precondition of the request does not hold for the current file",
            )
            .into_response();
            response.headers_mut().extend(validators);
            return Ok(response);
        }
        Decision::Unsatisfiable => {
            let mut response = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "urn:tenax:problem:range-not-satisfiable",
                "Range not satisfiable",
                format!("the file holds {len} bytes"),
            )
            .with("size", len)
            .into_response();
            let headers = response.headers_mut();
            headers.extend(validators);
            insert(
                headers,
                header::CONTENT_RANGE,
                &unsatisfied_content_range(len),
            );
            return Ok(response);
        }
        Decision::Full => {
            let body = if head || len == 0 {
                Body::empty()
            } else {
                read_body(storage, record, 0..len).await?
            };
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            headers.insert(header::CONTENT_TYPE, content_type.clone());
            response
        }
        Decision::Partial(ranges) => {
            partial(storage, record, &ranges, Some(len), &content_type).await?
        }
    };
    let headers = response.headers_mut();
    headers.extend(validators);
    if let Some(digest) = repr_digest(&info.sha256) {
        insert(headers, REPR_DIGEST.clone(), &digest);
    }
    user_content(headers, record);
    Ok(response)
}

/// Answers a GET on an upload still in progress (docs/protocol.md case 85): with
/// a `Range`, 206 for bytes below the offset held (`Content-Range:
/// bytes A-B/*`, or `/LEN` once the length is known) or 416 past it;
/// without one (or with one that is ignored), 409 naming the offset, since
/// the upload must never be served as if it were complete.
pub(crate) async fn serve_in_progress(
    storage: &Arc<dyn Storage>,
    headers: &HeaderMap,
    snapshot: &Snapshot,
) -> Result<Response, Problem> {
    let record = &snapshot.record;
    // Bytes past `staged_from` are not verified yet and may be cut off.
    let held = record
        .staged_from
        .map_or(snapshot.held, |staged| staged.min(snapshot.held));
    let total = record.total;
    let fields = Fields::read(headers);
    // No strong validator exists for a changing upload, so an If-Range
    // never holds, and the answer would be the whole (unavailable) body.
    let range = fields
        .range
        .as_deref()
        .filter(|_| fields.if_range.is_none());
    let incomplete = || {
        Problem::new(
            StatusCode::CONFLICT,
            "urn:tenax:problem:incomplete-upload",
            "Upload incomplete",
            format!(
                "the upload holds {held} bytes and is not complete; \
                 request a Range below offset {held}"
            ),
        )
        .with("held", held)
        .with("offset", held)
        .with_header(header::CACHE_CONTROL, no_store())
    };
    let mut response = match available_ranges(range, held, total) {
        RangeOutcome::Ignored(_) | RangeOutcome::Abusive => return Err(incomplete()),
        RangeOutcome::Unsatisfiable => {
            let mut problem = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "urn:tenax:problem:range-not-satisfiable",
                "Range not satisfiable",
                format!("the upload holds {held} bytes so far"),
            )
            .with("held", held)
            .with("offset", held)
            .with_header(header::CACHE_CONTROL, no_store());
            if let Some(total) = total
                && let Ok(value) = HeaderValue::from_str(&unsatisfied_content_range(total))
            {
                problem = problem.with_header(header::CONTENT_RANGE, value);
            }
            return Err(problem);
        }
        RangeOutcome::Ranges(ranges) => {
            partial(storage, record, &ranges, total, &content_type(record)).await?
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, no_store());
    user_content(headers, record);
    Ok(response)
}

/// What every response carrying an upload's bytes says, so that a browser
/// never runs them as this server's origin (where the upload page and its
/// saved upload URLs live), whatever media type the uploader declared:
/// always an attachment (with the name, if any), never sniffed, and
/// sandboxed with nothing to load should a browser render it anyway.
fn user_content(headers: &mut HeaderMap, record: &UploadRecord) {
    let disposition = match &record.name {
        Some(name) => content_disposition(name.as_str()),
        None => "attachment".to_owned(),
    };
    insert(headers, header::CONTENT_DISPOSITION, &disposition);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(USER_CONTENT_POLICY),
    );
}

/// The `Content-Security-Policy` of user content: no script, no
/// subresource, a unique opaque origin.
const USER_CONTENT_POLICY: &str = "default-src 'none'; sandbox";

/// 206: one range with `Content-Range`, several as `multipart/byteranges`.
async fn partial(
    storage: &Arc<dyn Storage>,
    record: &UploadRecord,
    ranges: &[ByteRange],
    complete_len: Option<u64>,
    content_type: &HeaderValue,
) -> Result<Response, Problem> {
    if let [range] = ranges {
        let body = read_body(storage, record, range.to_std()).await?;
        let mut response = (StatusCode::PARTIAL_CONTENT, body).into_response();
        let headers = response.headers_mut();
        insert(
            headers,
            header::CONTENT_RANGE,
            &range.content_range(complete_len),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
        headers.insert(header::CONTENT_TYPE, content_type.clone());
        return Ok(response);
    }
    let multipart = Multipart::new(ranges, complete_len, content_type);
    let media_type = format!("multipart/byteranges; boundary={}", multipart.boundary);
    let len = multipart.len();
    let mut response = (
        StatusCode::PARTIAL_CONTENT,
        multipart.body(storage.clone(), record.clone()),
    )
        .into_response();
    let headers = response.headers_mut();
    insert(headers, header::CONTENT_TYPE, &media_type);
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(response)
}

/// A `multipart/byteranges` body (RFC 9110 §14.6): the part heads are
/// written up front (a few hundred bytes each, at most 16 parts), the part
/// bodies are read from storage only when the stream reaches them.
#[derive(Debug)]
struct Multipart {
    boundary: String,
    parts: Vec<(Bytes, ByteRange)>,
    tail: Bytes,
}

impl Multipart {
    fn new(ranges: &[ByteRange], complete_len: Option<u64>, content_type: &HeaderValue) -> Self {
        let boundary = boundary();
        let content_type = String::from_utf8_lossy(content_type.as_bytes()).into_owned();
        let parts = ranges
            .iter()
            .enumerate()
            .map(|(i, range)| {
                // The CRLF before a delimiter belongs to it; the first
                // delimiter starts the body.
                let crlf = if i == 0 { "" } else { "\r\n" };
                let head = format!(
                    "{crlf}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                    range.content_range(complete_len)
                );
                (Bytes::from(head), *range)
            })
            .collect();
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        Multipart {
            boundary,
            parts,
            tail,
        }
    }

    /// The exact body length (`None` only on overflow).
    fn len(&self) -> Option<u64> {
        self.parts
            .iter()
            .try_fold(self.tail.len() as u64, |sum, (head, range)| {
                sum.checked_add(head.len() as u64)?.checked_add(range.len())
            })
    }

    fn body(self, storage: Arc<dyn Storage>, record: UploadRecord) -> Body {
        let record = Arc::new(record);
        let parts = self.parts.into_iter().map(move |(head, range)| {
            let (storage, record) = (storage.clone(), record.clone());
            let data = stream::once(async move {
                storage
                    .read(&record, range.to_std())
                    .await
                    .map_err(io::Error::other)
            })
            .try_flatten();
            stream::once(async move { Ok::<_, io::Error>(head) }).chain(data)
        });
        let tail = self.tail;
        let body = stream::iter(parts)
            .flatten()
            .chain(stream::once(async move { Ok(tail) }));
        Body::from_stream(body)
    }
}

/// A fresh random boundary (RFC 2046: at most 70 characters; 32 random hex
/// digits never occur in a body by chance).
fn boundary() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without an OS random source, the clock still varies per request.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("tenax-{hex}")
}

/// The bytes of `range` as a streamed body.
async fn read_body(
    storage: &Arc<dyn Storage>,
    record: &UploadRecord,
    range: std::ops::Range<u64>,
) -> Result<Body, Problem> {
    let stream = storage
        .read(record, range)
        .await
        .map_err(tenax_core::Error::from)?;
    Ok(Body::from_stream(stream))
}

/// The request fields `decide` reads, each field's lines joined with `", "`
/// (a repeated singleton field thereby becomes invalid and is ignored).
#[derive(Debug, Default)]
struct Fields {
    range: Option<String>,
    if_range: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    if_unmodified_since: Option<String>,
}

impl Fields {
    fn read(headers: &HeaderMap) -> Self {
        let field = |name: HeaderName| {
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        };
        Fields {
            range: field(header::RANGE),
            if_range: field(header::IF_RANGE),
            if_match: field(header::IF_MATCH),
            if_none_match: field(header::IF_NONE_MATCH),
            if_modified_since: field(header::IF_MODIFIED_SINCE),
            if_unmodified_since: field(header::IF_UNMODIFIED_SINCE),
        }
    }

    fn conditions(&self, method: &Method) -> Conditions<'_> {
        Conditions {
            get: method == Method::GET,
            safe: method == Method::GET || method == Method::HEAD,
            range: self.range.as_deref(),
            if_range: self.if_range.as_deref(),
            if_match: self.if_match.as_deref(),
            if_none_match: self.if_none_match.as_deref(),
            if_modified_since: self.if_modified_since.as_deref(),
            if_unmodified_since: self.if_unmodified_since.as_deref(),
        }
    }
}

/// The record's media type, or `application/octet-stream`.
fn content_type(record: &UploadRecord) -> HeaderValue {
    record
        .content_type
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
        .unwrap_or_else(|| HeaderValue::from_static(OCTET_STREAM))
}

/// `sha-256=:BASE64:` from the hex digest (`None` if it is not 32 bytes of hex).
fn repr_digest(sha256_hex: &str) -> Option<String> {
    Sha256Digest::from_hex(sha256_hex).map(|digest| digest.to_field())
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266, RFC 8187).
/// The quoted fallback keeps printable ASCII other than `"`, `\`, `;`, `=`
/// and `%` (which naive parsers or RFC 6266 appendix D warn about), and
/// writes `_` for everything else (CR, LF, quotes, non-ASCII); the
/// extended form percent-encodes every byte that is not an `attr-char`.
pub(crate) fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | ';' | '=' | '%') => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Inserts a header whose value we built; a value that is not a valid
/// header (it cannot happen for what this module writes) is left out.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_escapes_quotes_and_line_breaks() {
        assert_eq!(
            content_disposition("a\"b\r\nc é.txt"),
            "attachment; filename=\"a_b__c _.txt\"; filename*=UTF-8''a%22b%0D%0Ac%20%C3%A9.txt"
        );
        assert_eq!(
            content_disposition("a;b=c%41.txt"),
            "attachment; filename=\"a_b_c_41.txt\"; filename*=UTF-8''a%3Bb%3Dc%2541.txt"
        );
        assert_eq!(
            content_disposition("../../x"),
            "attachment; filename=\"../../x\"; filename*=UTF-8''..%2F..%2Fx"
        );
    }

    #[test]
    fn digest_of_hex() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            repr_digest(hex).as_deref(),
            Some("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")
        );
        assert_eq!(repr_digest("zz"), None);
    }

    #[test]
    fn multipart_length_is_exact() {
        let ranges = [
            ByteRange { first: 0, last: 0 },
            ByteRange { first: 5, last: 9 },
        ];
        let part = Multipart::new(&ranges, Some(10), &HeaderValue::from_static("text/plain"));
        let heads: usize = part.parts.iter().map(|(head, _)| head.len()).sum();
        assert_eq!(part.len(), Some((heads + part.tail.len() + 6) as u64));
        assert!(part.parts[0].0.starts_with(b"--tenax-"));
    }
}
