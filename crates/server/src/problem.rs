//! RFC 9457 problem details: every error answer of tenax.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use tenax_core::{Error as EngineError, HookError, StorageError};

/// The problem type of a request whose upload another request took over
/// while it wrote (several nodes: its commits were refused).
pub(crate) const TAKEN_OVER: &str = "urn:tenax:problem:taken-over";

/// The problem type of an upload whose bytes do not have the digest its
/// client declared (docs/protocol.md §7.4).
pub(crate) const DIGEST_MISMATCH: &str = "urn:tenax:problem:digest-mismatch";

/// The problem type of a GCS precondition that does not hold
/// (docs/protocol.md §7.5).
pub(crate) const PRECONDITION_FAILED: &str = "urn:tenax:problem:precondition-failed";

/// An error answer: status, a problem type and a human-readable detail.
///
/// Boxed, so that `Result<T, Problem>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct Problem(Box<Details>);

#[derive(Debug, Clone, Serialize)]
struct Details {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(flatten)]
    extra: Map<String, Value>,
    #[serde(skip)]
    headers: HeaderMap,
}

impl Problem {
    /// A problem of type `kind` (a URI) with a short `title` and this request's `detail`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem(Box::new(Details {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            extra: Map::new(),
            headers: HeaderMap::new(),
        }))
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "urn:tenax:problem:bad-request",
            "Bad request",
            detail,
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "urn:tenax:problem:not-found",
            "Not found",
            detail,
        )
    }

    /// The problem type (a URN).
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// The human-readable detail.
    pub(crate) fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The headers the answer carries besides the body's.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The same problem with another status code.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.0.status = status.as_u16();
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.extend(self.0.headers);
        response
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Self {
        let detail = error.to_string();
        match error {
            EngineError::NotFound | EngineError::Expired => Problem::not_found(detail),
            EngineError::Gone => Problem::new(
                StatusCode::GONE,
                "urn:tenax:problem:gone",
                "Upload cancelled",
                detail,
            ),
            EngineError::Complete => Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:tenax:problem:completed-upload",
                "Upload already complete",
                detail,
            ),
            EngineError::Incomplete { .. } => Problem::new(
                StatusCode::CONFLICT,
                "urn:tenax:problem:incomplete-upload",
                "Upload incomplete",
                detail,
            ),
            EngineError::ChecksumMismatch => Problem::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "urn:tenax:problem:checksum-mismatch",
                "Checksum mismatch",
                detail,
            ),
            EngineError::NotConcatenable(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:tenax:problem:not-concatenable",
                "Not a finished partial upload",
                detail,
            ),
            // The same answer as the header's malformed checksum gets.
            EngineError::ChecksumInvalid(reason) => Problem::bad_request(reason),
            EngineError::RepeatedPart(_) | EngineError::TooManyParts { .. } => Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:tenax:problem:bad-concatenation",
                "Invalid concatenation",
                detail,
            ),
            EngineError::MetadataTooLarge { limit, .. } => Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:tenax:problem:metadata-too-large",
                "Metadata too large",
                detail,
            )
            .with("limit", limit),
            EngineError::OverlapMismatch { .. } => Problem::new(
                StatusCode::CONFLICT,
                "urn:tenax:problem:overlap-mismatch",
                "Resent bytes differ from the bytes held",
                format!(
                    "{detail}: another client may be writing this upload; what is held is kept \
                     (ask for the offset, and send only what follows it)"
                ),
            ),
            EngineError::DigestMismatch { .. } => Problem::new(
                StatusCode::BAD_REQUEST,
                DIGEST_MISMATCH,
                "Digest mismatch",
                format!("{detail}; the upload was not completed, its bytes are kept"),
            ),
            EngineError::PreconditionFailed(_) => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                PRECONDITION_FAILED,
                "Precondition failed",
                detail,
            ),
            EngineError::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:tenax:problem:shutting-down",
                "Shutting down",
                detail,
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            EngineError::Quota(exceeded @ tenax_core::QuotaExceeded::ConcurrentUploads { .. }) => {
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "urn:tenax:problem:quota-exceeded",
                    "Quota exceeded",
                    exceeded.to_string(),
                )
            }
            // RFC 4331 (WebDAV quotas) answers a byte quota with 507.
            EngineError::Quota(exceeded) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "urn:tenax:problem:quota-exceeded",
                "Quota exceeded",
                exceeded.to_string(),
            ),
            EngineError::Hook(HookError::Rejected { status, message }) => Problem::new(
                StatusCode::from_u16(status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::FORBIDDEN),
                "urn:tenax:problem:rejected",
                "Upload rejected",
                message,
            ),
            EngineError::Hook(HookError::Unavailable(reason)) => {
                tracing::warn!(%reason, "pre-create hook unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:tenax:problem:hook-unavailable",
                    "Upload hook unavailable",
                    "the server could not check the upload with its pre-create hook; try again later",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
            }
            EngineError::Storage(StorageError::Full(_)) => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "urn:tenax:problem:storage-full",
                "Storage full",
                "the server has no room left; what it acknowledged is kept",
            ),
            EngineError::Storage(StorageError::NotFound) => Problem::not_found(detail),
            EngineError::Storage(StorageError::Unavailable(error)) => {
                tracing::warn!(%error, "storage unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:tenax:problem:storage-unavailable",
                    "Storage unavailable",
                    "the server cannot reach its storage right now; what it acknowledged is kept; \
                     try again later",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("2"))
            }
            EngineError::Storage(StorageError::Fenced) => Problem::new(
                StatusCode::CONFLICT,
                TAKEN_OVER,
                "Upload taken over",
                "a newer request took this upload over while this one wrote it; \
                 what this request sent after that is not kept: ask for the offset and resume",
            ),
            EngineError::Storage(StorageError::NotReadable { readable_from }) => Problem::new(
                StatusCode::CONFLICT,
                "urn:tenax:problem:not-readable-in-progress",
                "Not readable while in progress",
                format!(
                    "this storage serves an upload in progress only from offset {readable_from}; \
                     all of it once complete"
                ),
            )
            .with("readable_from", readable_from),
            EngineError::Storage(error) => {
                tracing::error!(%error, "storage failure");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "urn:tenax:problem:storage",
                    "Storage failure",
                    "the server could not access its storage; what it acknowledged is kept",
                )
            }
        }
    }
}
