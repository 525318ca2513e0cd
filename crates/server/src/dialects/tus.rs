//! tus 1.0.0 with its extensions (docs/protocol.md §2) as a thin adapter over the
//! engine: creation (with upload, deferred length), expiration, checksum
//! (and trailer), termination, concatenation.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tenax_core::{
    Concat, Error as EngineError, Interruption, Lease, NewUpload, Status, UploadId, UploadRecord,
};
use tenax_protocol::parse_u64;
use tenax_protocol::tus::{
    self, ChecksumAlgorithm, metadata_content_type, metadata_name, parse_checksum, parse_concat,
    parse_defer_length, parse_metadata,
};

use crate::append::{self, Append, Caller, Verify};
use crate::body::detached;
use crate::common::{has_body, header_str, invalid_name, no_store};
use crate::conn::origin::Origin;
use crate::dialect::{OFFSET_STREAM, has_offset_stream};
use crate::problem::Problem;
use crate::state::AppState;

/// The extensions offered in `Tus-Extension`.
pub(crate) const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,checksum,checksum-trailer,termination,concatenation,concatenation-unfinished";

/// Adds `Tus-Resumable` to an answer (§2.1: every response but OPTIONS').
pub(crate) fn resumable(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    response
}

/// The answer to a request without a supported `Tus-Resumable` (§2.1).
pub(crate) fn check_version(headers: &HeaderMap) -> Result<(), Problem> {
    match headers.get("tus-resumable") {
        Some(version) if version == tus::VERSION => Ok(()),
        _ => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "urn:tenax:problem:tus-version",
            "Unsupported tus version",
            "this server speaks tus 1.0.0",
        )
        .with_header(
            HeaderName::from_static("tus-version"),
            HeaderValue::from_static(tus::VERSION),
        )),
    }
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, Problem> {
    header_str(headers, name)?
        .map(|text| {
            parse_u64(text).map_err(|error| Problem::bad_request(format!("{name}: {error}")))
        })
        .transpose()
}

fn tus_problem(error: tus::TusError) -> Problem {
    Problem::bad_request(error.to_string())
}

/// Leases an existing upload for a tus request. An expired upload whose
/// record is still kept is "still tracked", so tus answers 410 (expiration
/// extension); once the collector forgot it, 404. The seed dialect and
/// RUFH answer 404 for both (see `Problem`'s conversion).
///
/// In tus an upload is complete when
/// it holds its length; one that holds it without being complete was cut
/// short by a crash between its last append and the finalisation (found by
/// the crash torture test), and is completed here, before anything reports
/// its offset.
async fn lease(state: &AppState, id: UploadId) -> Result<Lease, Problem> {
    let mut lease = state.engine.lease(id).await.map_err(|error| match error {
        EngineError::Expired => Problem::new(
            StatusCode::GONE,
            "urn:tenax:problem:expired",
            "Upload expired",
            error.to_string(),
        ),
        other => other.into(),
    })?;
    if matches!(lease.record().status, Status::Active)
        && lease.record().total == Some(lease.held())
        && !matches!(lease.record().concat, Some(Concat::Final(_)))
    {
        lease.finalize().await?;
    }
    Ok(lease)
}

/// `Upload-Expires` of an active upload.
fn expires(state: &AppState, record: &UploadRecord) -> Option<HeaderValue> {
    if !matches!(record.status, Status::Active) {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_secs(record.updated_at) + state.engine.config().upload_ttl;
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

/// `POST /uploads` with `Tus-Resumable`: creation (§2.3).
pub(crate) async fn create(
    state: AppState,
    caller: Caller,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    detached(async move {
        resumable(
            create_inner(&state, &caller, &origin, &headers, body)
                .await
                .unwrap_or_else(IntoResponse::into_response),
        )
    })
    .await
}

async fn create_inner(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    check_version(headers)?;
    let length = number(headers, "upload-length")?;
    let deferred = header_str(headers, "upload-defer-length")?
        .map(parse_defer_length)
        .transpose()
        .map_err(tus_problem)?
        .is_some();
    let concat = header_str(headers, "upload-concat")?
        .map(parse_concat)
        .transpose()
        .map_err(tus_problem)?;
    let metadata = header_str(headers, "upload-metadata")?
        .map(parse_metadata)
        .transpose()
        .map_err(tus_problem)?
        .unwrap_or_default();
    let name = metadata_name(&metadata).map_err(invalid_name)?;
    let content_type = metadata_content_type(&metadata);
    let new = NewUpload {
        namespace: caller.access.namespace.clone(),
        name,
        total: length,
        content_type,
        metadata: metadata
            .into_iter()
            .map(|(key, value)| (key, value.map(|v| STANDARD.encode(v)).unwrap_or_default()))
            .collect(),
        ..NewUpload::default()
    };

    if let Some(tus::Concat::Final(urls)) = concat {
        if length.is_some() || deferred {
            return Err(Problem::bad_request(
                "a final upload takes its length from its parts",
            ));
        }
        if has_body(headers, &body) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "urn:tenax:problem:final-upload",
                "Final upload",
                "a final upload takes no body",
            ));
        }
        let parts = urls
            .iter()
            .map(|url| part_id(url, origin.prefix()))
            .collect::<Result<Vec<_>, _>>()?;
        // concatenation-unfinished: parts may still be in progress.
        let id = state.engine.concatenate(parts, new, true).await?;
        let location = origin.url(&format!("/uploads/{id}"))?;
        return Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response());
    }
    if length.is_some() == deferred {
        return Err(Problem::bad_request(
            "send exactly one of Upload-Length and Upload-Defer-Length: 1",
        ));
    }
    state.check_size(&caller.access, length)?;
    let new = NewUpload {
        concat: concat.map(|_| Concat::Partial),
        ..new
    };
    let id = state.engine.create(new).await?;
    let location = origin.url(&format!("/uploads/{id}"))?;
    let mut lease = state.engine.lease(id).await?;
    if length == Some(0) {
        append::finalize(state, caller, &mut lease).await?;
    } else if has_offset_stream(headers) && has_body(headers, &body) {
        // creation-with-upload: the body is the first chunk, at offset 0.
        if let Err(problem) = write(state, caller, &mut lease, headers, body).await {
            // The upload exists; tell the client where, with the problem.
            return Ok(with_offset(state, &lease, problem.into_response()));
        }
    }
    let response = (StatusCode::CREATED, [(header::LOCATION, location)]).into_response();
    Ok(with_offset(state, &lease, response))
}

/// The id of a partial upload named in `Upload-Concat: final;…`: an
/// absolute URL or a path, which must be one of our upload URLs (under the
/// proxy's `prefix`, behind one, as the `Location`s we handed out are).
fn part_id(url: &str, prefix: &str) -> Result<UploadId, Problem> {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |slash| &rest[slash..]),
        None => url,
    };
    // A signed URL's query is not part of the upload's path.
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.strip_prefix(prefix).unwrap_or(path);
    let id = path
        .strip_prefix("/uploads/")
        .ok_or_else(|| Problem::bad_request(format!("{url} is not an upload of this server")))?;
    UploadId::parse(id).map_err(|_| Problem::not_found(format!("no upload at {url}")))
}

/// `Upload-Offset` (and `Upload-Expires`) on an answer.
fn with_offset(state: &AppState, lease: &Lease, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(lease.held()));
    if let Some(expires) = expires(state, lease.record()) {
        headers.insert("upload-expires", expires);
    }
    response
}

/// Appends the request body at the upload's offset, checking a checksum if
/// one was given, and finalises when the length is reached.
async fn write(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Problem> {
    let limit = append::remaining(lease);
    if let Some(length) = number(headers, header::CONTENT_LENGTH.as_str())?
        && length > limit
    {
        return Err(past_length(format!("the upload takes {limit} more bytes")));
    }
    let checksum = header_str(headers, "upload-checksum")?
        .map(parse_checksum)
        .transpose()
        .map_err(tus_problem)?;
    let trailer_announced = headers
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .any(|name| name.trim().eq_ignore_ascii_case("upload-checksum"))
        });
    let verify = match checksum {
        Some(checksum) => Verify::Checksum(checksum),
        None if trailer_announced => Verify::TrailerChecksum,
        None => Verify::Nothing,
    };
    let request = Append {
        verify,
        ..Append::default()
    };
    let appended = append::append(state, caller, lease, body, request).await?;
    match appended.interruption {
        Some(Interruption::Overrun) => Err(past_length(
            "the body ran past the upload's length; the bytes up to it were kept",
        )),
        Some(Interruption::ShuttingDown) => Err(EngineError::ShuttingDown.into()),
        _ => Ok(()),
    }
}

/// 413: a chunk that runs past the upload's length.
fn past_length(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "urn:tenax:problem:past-length",
        "Chunk past the upload's length",
        detail,
    )
}

/// `PATCH /uploads/{id}` with `Tus-Resumable` (§2.2).
pub(crate) async fn patch(
    state: AppState,
    caller: Caller,
    id: UploadId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    detached(async move {
        let result = async {
            check_version(&headers)?;
            if !has_offset_stream(&headers) {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "urn:tenax:problem:media-type",
                    "Unsupported media type",
                    format!("a tus PATCH carries {OFFSET_STREAM}"),
                ));
            }
            let offset = number(&headers, "upload-offset")?
                .ok_or_else(|| Problem::bad_request("Upload-Offset is required"))?;
            let length = number(&headers, "upload-length")?;
            // Reject a malformed checksum before touching the upload.
            if let Some(value) = header_str(&headers, "upload-checksum")? {
                parse_checksum(value).map_err(tus_problem)?;
            }
            let mut lease = lease(&state, id).await?;
            let answer =
                patch_upload(&state, &caller, &mut lease, offset, length, &headers, body).await;
            // Every PATCH answer carries the offset and expiry, errors too.
            Ok(with_offset(
                &state,
                &lease,
                answer.unwrap_or_else(IntoResponse::into_response),
            ))
        };
        resumable(result.await.unwrap_or_else(IntoResponse::into_response))
    })
    .await
}

/// The part of a PATCH that runs on the leased upload.
async fn patch_upload(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
    offset: u64,
    length: Option<u64>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    if matches!(lease.record().concat, Some(Concat::Final(_))) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "urn:tenax:problem:final-upload",
            "Final upload",
            "a final upload cannot be patched",
        ));
    }
    append::check_offset(lease, offset).map_err(|mismatch| {
        mismatch.problem(
            "urn:tenax:problem:offset-mismatch",
            "Upload-Offset mismatch",
        )
    })?;
    if let Status::Complete(_) = lease.record().status {
        return if has_body(headers, &body) {
            Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:tenax:problem:complete",
                "Upload complete",
                "the upload is already complete",
            ))
        } else {
            Ok(StatusCode::NO_CONTENT.into_response())
        };
    }
    if let Some(length) = length {
        match lease.record().total {
            Some(total) if total != length => {
                return Err(Problem::bad_request(format!(
                    "Upload-Length {length} differs from the {total} set before"
                )));
            }
            Some(_) => {}
            None if length < lease.held() => {
                return Err(Problem::bad_request(format!(
                    "Upload-Length {length} is below the {} bytes held",
                    lease.held()
                )));
            }
            None => {
                state.check_size(&caller.access, Some(length))?;
                lease.set_total(length).await?;
            }
        }
    }
    write(state, caller, lease, headers, body).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `HEAD /uploads/{id}` with `Tus-Resumable` (§2.2).
pub(crate) async fn head(state: AppState, id: UploadId, headers: HeaderMap) -> Response {
    let result = async {
        check_version(&headers)?;
        let lease = lease(&state, id).await?;
        let record = lease.record();
        let mut response = with_offset(&state, &lease, StatusCode::OK.into_response());
        let out = response.headers_mut();
        if matches!(
            (&record.status, &record.concat),
            (Status::Active, Some(Concat::Final(_)))
        ) {
            // A final upload shows an offset only once it is assembled (§2.3).
            out.remove("upload-offset");
        }
        out.insert(header::CACHE_CONTROL, no_store());
        match record.total {
            Some(total) => out.insert("upload-length", HeaderValue::from(total)),
            None => out.insert("upload-defer-length", HeaderValue::from_static("1")),
        };
        if !record.metadata.is_empty() {
            let metadata = record
                .metadata
                .iter()
                .map(|(key, value)| {
                    if value.is_empty() {
                        key.clone()
                    } else {
                        format!("{key} {value}")
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            if let Ok(value) = HeaderValue::from_str(&metadata) {
                out.insert("upload-metadata", value);
            }
        }
        let concat = match &record.concat {
            Some(Concat::Partial) => Some("partial".to_owned()),
            Some(Concat::Final(parts)) => Some(format!(
                "final;{}",
                parts
                    .iter()
                    .map(|part| format!("/uploads/{part}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            None => None,
        };
        if let Some(value) = concat.and_then(|concat| HeaderValue::from_str(&concat).ok()) {
            out.insert("upload-concat", value);
        }
        Ok::<_, Problem>(response)
    };
    resumable(result.await.unwrap_or_else(IntoResponse::into_response))
}

/// The tus part of an `OPTIONS` answer (§2.2).
pub(crate) fn capabilities(state: &AppState, headers: &mut HeaderMap) {
    headers.insert("tus-resumable", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-version", HeaderValue::from_static(tus::VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    let algorithms = ChecksumAlgorithm::ALL
        .iter()
        .map(|algorithm| algorithm.name())
        .collect::<Vec<_>>()
        .join(",");
    if let Ok(value) = HeaderValue::from_str(&algorithms) {
        headers.insert("tus-checksum-algorithm", value);
    }
    if let Some(max) = state.config.max_upload_size {
        headers.insert("tus-max-size", HeaderValue::from(max));
    }
}
