//! The IETF "Resumable Uploads for HTTP" draft (docs/protocol.md §3), interop
//! versions 5 to 9, as a thin adapter over the engine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenax_core::{
    Error as EngineError, Interruption, Lease, NewUpload, Status, UploadId, UploadRecord,
};
use tenax_protocol::rufh::{
    self, UploadLimit, parse_boolean, parse_integer, parse_interop_version,
};
use tenax_protocol::tus::{metadata_name, parse_metadata};
use tenax_protocol::{FileName, disposition};

use crate::append::{self, Append, Caller, Finish, Progress};
use crate::body::detached;
use crate::common::{file_name, has_body, header_str, invalid_name, no_store};
use crate::conn::interim::Interim;
use crate::conn::origin::Origin;
use crate::problem::Problem;
use crate::state::AppState;

/// What a request says about itself.
struct Fields {
    /// The interop version, when the client sent one we speak.
    version: Option<u32>,
    /// `Upload-Complete`.
    complete: Option<bool>,
    /// `Upload-Offset`.
    offset: Option<u64>,
    /// `Upload-Length`.
    length: Option<u64>,
    /// `Content-Length`.
    content_length: Option<u64>,
}

impl Fields {
    /// Reads the fields. A field that is not text, or not valid, counts as
    /// absent (§3.2, RFC 9651): unlike tus, no 400 for the field itself.
    fn read(headers: &HeaderMap) -> Fields {
        let field = |name: &str| header_str(headers, name).ok().flatten();
        Fields {
            version: field("upload-draft-interop-version").and_then(parse_interop_version),
            complete: field("upload-complete").and_then(parse_boolean),
            offset: field("upload-offset").and_then(parse_integer),
            length: field("upload-length").and_then(parse_integer),
            content_length: field("content-length")
                .and_then(|value| tenax_protocol::parse_u64(value).ok()),
        }
    }
}

/// A problem of the draft's registry (§3.3).
fn draft_problem(
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: impl Into<String>,
) -> Problem {
    Problem::new(status, kind, title, detail)
}

const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";
const COMPLETED_UPLOAD: &str = "https://iana.org/assignments/http-problem-types#completed-upload";

fn inconsistent(detail: impl Into<String>) -> Problem {
    draft_problem(
        StatusCode::BAD_REQUEST,
        INCONSISTENT_LENGTH,
        "Inconsistent upload length",
        detail,
    )
}

/// `Upload-Limit` as this server sets it before an upload exists (OPTIONS,
/// and the first 104 of a creation): `max-age` is the whole time to live.
pub(crate) fn upload_limit(state: &AppState) -> HeaderValue {
    limit_field(
        state.config.max_upload_size,
        Some(state.engine.config().upload_ttl.as_secs()),
    )
}

fn limit_field(max_size: Option<u64>, max_age: Option<u64>) -> HeaderValue {
    let limit = UploadLimit {
        max_size,
        min_size: 0,
        max_append_size: None,
        max_age,
    };
    HeaderValue::from_str(&limit.to_field())
        .unwrap_or_else(|_| HeaderValue::from_static("min-size=0"))
}

/// Seconds since the epoch, as the engine stamps `updated_at`.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `max-age` of an upload (§3.2, draft -12 and later): the lifetime left
/// from now, so that `now + max-age` is the upload's real end of life, the
/// last activity plus the time to live. That end only moves later (every
/// append moves the last activity), so the number may shrink between
/// answers but the end it implies never moves earlier. A completed upload
/// does not expire: no `max-age`.
fn max_age(state: &AppState, record: &UploadRecord) -> Option<u64> {
    if !matches!(record.status, Status::Active) {
        return None;
    }
    let end = record
        .updated_at
        .saturating_add(state.engine.config().upload_ttl.as_secs());
    Some(end.saturating_sub(now_secs()))
}

/// `Upload-Limit` on an answer about one upload.
fn record_limit(state: &AppState, record: &UploadRecord) -> HeaderValue {
    limit_field(state.config.max_upload_size, max_age(state, record))
}

/// A RUFH error answer: the request's interop version echoed,
/// `Upload-Complete: ?0` (interop 9: the answer is the protocol's, not the
/// result of processing the upload) unless the answer already says, and on
/// a 413 the `Upload-Limit` whose `max-size` it broke (draft -12 and later:
/// a 413 caused by the upload limits carries them).
fn error_answer(
    state: &AppState,
    caller: Option<&Caller>,
    version: Option<u32>,
    problem: Problem,
) -> Response {
    let mut response = problem.into_response();
    let too_large = response.status() == StatusCode::PAYLOAD_TOO_LARGE;
    let headers = response.headers_mut();
    if let Some(version) = version {
        headers.insert("upload-draft-interop-version", HeaderValue::from(version));
    }
    if !headers.contains_key("upload-complete") {
        headers.insert("upload-complete", flag(false));
    }
    if too_large && !headers.contains_key("upload-limit") {
        let token = caller.and_then(|caller| caller.access.max_upload_size);
        let max = match (state.config.max_upload_size, token) {
            (Some(server), Some(token)) => Some(server.min(token)),
            (server, token) => server.or(token),
        };
        headers.insert(
            "upload-limit",
            limit_field(max, Some(state.engine.config().upload_ttl.as_secs())),
        );
    }
    response
}

fn flag(value: bool) -> HeaderValue {
    HeaderValue::from_static(if value { "?1" } else { "?0" })
}

/// Echoes the request's interop version on an answer (§3.2: on every response).
pub(crate) fn echo_version(headers: &HeaderMap, mut response: Response) -> Response {
    if let Some(version) = Fields::read(headers).version {
        response
            .headers_mut()
            .insert("upload-draft-interop-version", HeaderValue::from(version));
    }
    response
}

/// Headers every RUFH answer about an upload carries.
fn progress(
    state: &AppState,
    lease: &Lease,
    version: Option<u32>,
    mut response: Response,
) -> Response {
    let complete = matches!(lease.record().status, Status::Complete(_));
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(lease.held()));
    headers.insert("upload-complete", flag(complete));
    if let Some(length) = lease.record().total {
        headers.insert("upload-length", HeaderValue::from(length));
    }
    headers.insert("upload-limit", record_limit(state, lease.record()));
    headers.insert(header::CACHE_CONTROL, no_store());
    if let Some(version) = version {
        headers.insert("upload-draft-interop-version", HeaderValue::from(version));
    }
    response
}

/// The file name a `Content-Disposition` carries, if any (§3.3: `filename*`
/// before `filename`, RFC 6266 and RFC 8187); 400 when the field does not
/// parse or the name is not valid (refused, not dropped).
fn disposition_name(headers: &HeaderMap) -> Result<Option<FileName>, Problem> {
    let Some(value) = header_str(headers, header::CONTENT_DISPOSITION.as_str())? else {
        return Ok(None);
    };
    disposition::file_name(value)
        .map_err(|error| Problem::bad_request(error.to_string()))?
        .map(|name| file_name(&name))
        .transpose()
}

/// How often an append in progress reports its durable offset in a 104.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Interim answers for a request whose client speaks our interop version.
struct Interims {
    interim: Interim,
    version: u32,
}

impl Interims {
    fn new(interim: Option<Interim>, version: Option<u32>) -> Option<Interims> {
        Some(Interims {
            interim: interim?,
            version: version?,
        })
    }

    /// `104 Upload Resumption Supported` with these headers.
    fn send(&self, mut headers: HeaderMap) {
        headers.insert(
            "upload-draft-interop-version",
            HeaderValue::from(self.version),
        );
        self.interim
            .send(104, "Upload Resumption Supported", &headers);
    }
}

/// The `filename` of tus-style `Upload-Metadata`, which tus-js-client
/// sends in its draft modes too (a malformed header is ignored, as it was
/// never this dialect's; an invalid name in it is a 400).
fn upload_metadata_name(headers: &HeaderMap) -> Result<Option<FileName>, Problem> {
    let Some(Ok(metadata)) = header_str(headers, "upload-metadata")?.map(parse_metadata) else {
        return Ok(None);
    };
    metadata_name(&metadata).map_err(invalid_name)
}

/// Creation (§3.3): a request with `Upload-Complete` to the collection.
pub(crate) async fn create(
    state: AppState,
    caller: Caller,
    origin: Origin,
    headers: HeaderMap,
    interim: Option<Interim>,
    body: Body,
) -> Response {
    detached(async move {
        let version = Fields::read(&headers).version;
        let answer = create_inner(&state, &caller, origin, &headers, interim, body).await;
        answer.unwrap_or_else(|problem| error_answer(&state, Some(&caller), version, problem))
    })
    .await
}

async fn create_inner(
    state: &AppState,
    caller: &Caller,
    origin: Origin,
    headers: &HeaderMap,
    interim: Option<Interim>,
    body: Body,
) -> Result<Response, Problem> {
    if headers.contains_key("upload-incomplete") {
        return Err(Problem::bad_request(
            "Upload-Incomplete (interop version 3) is not supported; send Upload-Complete (interop 5 to 9)",
        ));
    }
    let fields = Fields::read(headers);
    let complete = fields
        .complete
        .ok_or_else(|| Problem::bad_request("Upload-Complete must be ?0 or ?1"))?;
    let announced_version = headers.contains_key("upload-draft-interop-version");
    if announced_version && fields.version.is_none() && !complete {
        return Err(Problem::bad_request(format!(
            "unsupported Upload-Draft-Interop-Version; this server speaks {} to {}",
            rufh::INTEROP_VERSIONS.start(),
            rufh::INTEROP_VERSIONS.end()
        )));
    }
    let mut length = fields.length;
    if complete && let Some(content_length) = fields.content_length {
        if length.is_some_and(|length| length != content_length) {
            return Err(inconsistent(
                "Upload-Length differs from the Content-Length of a complete upload",
            ));
        }
        length = Some(content_length);
    }
    state.check_size(&caller.access, length)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let new = NewUpload {
        namespace: caller.access.namespace.clone(),
        name: match disposition_name(headers)? {
            Some(name) => Some(name),
            None => upload_metadata_name(headers)?,
        },
        total: length,
        content_type,
        ..NewUpload::default()
    };
    let id = state.engine.create(new).await?;
    let location = origin.url(&format!("/uploads/{id}"))?;
    let interims = Interims::new(interim, fields.version);
    if let Some(interims) = &interims {
        let mut resumption = HeaderMap::new();
        resumption.insert(header::LOCATION, location.clone());
        resumption.insert("upload-limit", upload_limit(state));
        interims.send(resumption);
    }
    let mut lease = state.engine.lease(id).await?;
    let result = write(state, caller, &mut lease, complete, body, interims.as_ref()).await;
    let mut response = result.map_or_else(IntoResponse::into_response, |()| {
        StatusCode::CREATED.into_response()
    });
    response.headers_mut().insert(header::LOCATION, location);
    Ok(progress(state, &lease, fields.version, response))
}

/// Appends a body at the held offset; completes the upload when the client
/// said the request completes it and every byte arrived.
async fn write(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
    complete: bool,
    body: Body,
    interims: Option<&Interims>,
) -> Result<(), Problem> {
    let mut report = |held: u64| {
        if let Some(interims) = interims {
            let mut progress = HeaderMap::new();
            progress.insert("upload-offset", HeaderValue::from(held));
            interims.send(progress);
        }
    };
    let request = Append {
        progress: interims.map(|_| Progress {
            every: PROGRESS_EVERY,
            report: &mut report,
        }),
        finish: if complete {
            Finish::Declared
        } else {
            Finish::Never
        },
        ..Append::default()
    };
    let appended = append::append(state, caller, lease, body, request).await?;
    if appended.short_of_length.is_some() {
        return Err(inconsistent(format!(
            "the upload completed at {} bytes, short of its length",
            lease.held()
        )));
    }
    match appended.interruption {
        None | Some(Interruption::Body(_) | Interruption::Superseded) => Ok(()),
        Some(Interruption::Overrun) => {
            // Past a known length the upload can never become valid (§3.3).
            lease.cancel().await?;
            Err(inconsistent(
                "the body runs past the upload's length; the upload is void",
            ))
        }
        Some(Interruption::ShuttingDown) => Err(EngineError::ShuttingDown.into()),
    }
}

/// Whether a `GET` on an upload is the draft's offset retrieval (§3.3, draft
/// -12 and later): it names an interop version and asks for no range. Any
/// other `GET` is a download (§4).
pub(crate) fn is_offset_retrieval(headers: &HeaderMap) -> bool {
    headers.contains_key("upload-draft-interop-version") && !headers.contains_key(header::RANGE)
}

/// Offset retrieval (§3.3): `HEAD` on the upload, or a `GET` that
/// [`is_offset_retrieval`]; the same 204 for both.
pub(crate) async fn head(state: AppState, id: UploadId, headers: HeaderMap) -> Response {
    let fields = Fields::read(&headers);
    match state.engine.lease(id).await {
        Ok(lease) => progress(
            &state,
            &lease,
            fields.version,
            StatusCode::NO_CONTENT.into_response(),
        ),
        Err(error) => echo_version(&headers, Problem::from(error).into_response()),
    }
}

/// Append (§3.3): `PATCH` with `application/partial-upload`.
pub(crate) async fn patch(
    state: AppState,
    caller: Caller,
    id: UploadId,
    headers: HeaderMap,
    interim: Option<Interim>,
    body: Body,
) -> Response {
    detached(async move {
        let fields = Fields::read(&headers);
        let result = async {
            if headers.contains_key("upload-incomplete") {
                return Err(Problem::bad_request(
                    "Upload-Incomplete (interop version 3) is not supported; send Upload-Complete (interop 5 to 9)",
                ));
            }
            let media = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            if fields.version.is_none_or(|version| version >= 6)
                && !media.starts_with(rufh::PARTIAL_UPLOAD)
            {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "urn:tenax:problem:media-type",
                    "Unsupported media type",
                    format!("an append carries {}", rufh::PARTIAL_UPLOAD),
                ));
            }
            let offset = fields
                .offset
                .ok_or_else(|| Problem::bad_request("Upload-Offset is required"))?;
            let complete = fields
                .complete
                .ok_or_else(|| Problem::bad_request("Upload-Complete is required"))?;
            let mut lease = state.engine.lease(id).await?;
            if matches!(lease.record().status, Status::Complete(_)) {
                if has_body(&headers, &body) {
                    return Err(draft_problem(
                        StatusCode::BAD_REQUEST,
                        COMPLETED_UPLOAD,
                        "Upload already complete",
                        "the upload is complete",
                    ));
                }
                return Ok(progress(
                    &state,
                    &lease,
                    fields.version,
                    StatusCode::OK.into_response(),
                ));
            }
            if let Err(mismatch) = append::check_offset(&lease, offset) {
                let problem = mismatch.problem(MISMATCHING_OFFSET, "Mismatching upload offset");
                return Ok(progress(
                    &state,
                    &lease,
                    fields.version,
                    problem.into_response(),
                ));
            }
            let known = lease.record().total;
            let mut length = fields.length;
            if let (Some(known), Some(given)) = (known, length)
                && known != given
            {
                return Err(inconsistent(format!(
                    "Upload-Length {given} differs from the {known} given before"
                )));
            }
            if complete && let Some(content_length) = fields.content_length {
                let end = offset + content_length;
                if length.or(known).is_some_and(|length| length != end) {
                    return Err(inconsistent(
                        "this request completes the upload at a size other than its length",
                    ));
                }
                length = Some(end);
            }
            let limit = length.or(known).map(|length| length.saturating_sub(offset));
            if let (Some(limit), Some(content_length)) = (limit, fields.content_length)
                && content_length > limit
            {
                // Past a known length: the upload cannot become valid any more.
                lease.cancel().await?;
                return Err(inconsistent(
                    "the append runs past the upload's length; the upload is void",
                ));
            }
            if let Some(length) = length {
                state.check_size(&caller.access, Some(length))?;
                lease.set_total(length).await?;
            }
            let interims = Interims::new(interim, fields.version);
            let result = write(&state, &caller, &mut lease, complete, body, interims.as_ref()).await;
            let status = if matches!(lease.record().status, Status::Complete(_)) {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            let response =
                result.map_or_else(IntoResponse::into_response, |()| status.into_response());
            Ok(progress(&state, &lease, fields.version, response))
        };
        result
            .await
            .unwrap_or_else(|problem| error_answer(&state, Some(&caller), fields.version, problem))
    })
    .await
}

/// The RUFH part of an `OPTIONS` answer (§3.3).
pub(crate) fn capabilities(state: &AppState, headers: &mut HeaderMap) {
    headers.insert("upload-limit", upload_limit(state));
    headers.insert(
        "accept-patch",
        HeaderValue::from_static(rufh::PARTIAL_UPLOAD),
    );
}
