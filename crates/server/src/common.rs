//! Small pieces every dialect adapter uses.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use tenax_core::UploadId;
use tenax_protocol::{FileName, NameError};

use crate::problem::Problem;

pub(crate) fn file_name(text: &str) -> Result<FileName, Problem> {
    FileName::new(text).map_err(invalid_name)
}

/// 400 for a name a client gave that is not valid: refused, never dropped.
pub(crate) fn invalid_name(error: NameError) -> Problem {
    Problem::bad_request(format!("invalid file name: {error}"))
}

pub(crate) fn upload_id(text: &str) -> Result<UploadId, Problem> {
    UploadId::parse(text).map_err(|_| Problem::not_found("no such upload"))
}

/// A header's text, the one way every dialect reads a header: `Err` (400)
/// when it is not visible ASCII. tus and seed answer that 400; RUFH counts
/// such a field as absent (`.ok().flatten()`), as RFC 9651 has it for an
/// invalid structured field.
pub(crate) fn header_str<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, Problem> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Problem::bad_request(format!("{name} is not ASCII")))
        })
        .transpose()
}

pub(crate) fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// Whether the request has a body (a chunked or HTTP/2 body counts even
/// before its first byte).
pub(crate) fn has_body(headers: &HeaderMap, body: &Body) -> bool {
    match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length != "0",
        None => !http_body::Body::is_end_stream(body),
    }
}
