//! The seed dialect (Google's resumable upload, docs/protocol.md §1) as a thin
//! adapter: headers in, [`tenax_protocol::seed::decide`], engine calls, answer out.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tenax_core::{
    DigestSet, Error as EngineError, FileKey, FinalInfo, Lease, NewUpload, Snapshot, Status,
};
use tenax_protocol::gcs::GoogHash;
use tenax_protocol::repr_digest::{self, WANT_REPR_DIGEST};
use tenax_protocol::seed::{self, Phase, SeedAction, SeedRequest, UploadState};
use tenax_protocol::{FileName, parse_u64};

use crate::append::{self, Append, Caller, Finish};
use crate::auth::Access;
use crate::body::{control_body, detached};
use crate::common::{content_type, file_name, header_str, no_store, upload_id};
use crate::conn::origin::Origin;
use crate::problem::Problem;
use crate::state::AppState;

/// The `?file=NAME` query of `/api/upload`.
#[derive(Debug, Deserialize)]
pub(crate) struct NameQuery {
    file: Option<String>,
}

impl NameQuery {
    /// The file the literal form names, in the request's namespace.
    fn file_key(&self, access: &Access) -> Result<FileKey, Problem> {
        let name = self
            .file
            .as_deref()
            .ok_or_else(|| Problem::bad_request("missing ?file=NAME"))?;
        Ok(FileKey {
            namespace: access.namespace.clone(),
            name: file_name(name)?,
        })
    }
}

/// `POST /api/upload?file=NAME` and `POST /uploads`: opens a session (§1.1).
pub(crate) async fn initiate(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(query): Query<NameQuery>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let total = header_str(&headers, "x-upload-content-length")?
        .map(|text| {
            parse_u64(text)
                .map_err(|error| Problem::bad_request(format!("X-Upload-Content-Length: {error}")))
        })
        .transpose()?;
    state.check_size(&access, total)?;
    let content_type = header_str(&headers, "x-upload-content-type")?.map(str::to_owned);
    let metadata = control_body(&headers, body).await?;
    let json_name = if metadata.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        #[derive(Deserialize)]
        struct Metadata {
            name: Option<String>,
        }
        let parsed: Metadata = serde_json::from_slice(&metadata).map_err(|error| {
            Problem::bad_request(format!("metadata body is not valid JSON: {error}"))
        })?;
        parsed.name
    };
    let name = json_name
        .or(query.file)
        .as_deref()
        .map(file_name)
        .transpose()?;
    let id = state
        .engine
        .create(NewUpload {
            namespace: access.namespace,
            name,
            total,
            content_type,
            digests: digests_wanted(&headers),
            ..NewUpload::default()
        })
        .await?;
    let location = origin.url(&format!("/uploads/{id}"))?;
    Ok((
        StatusCode::OK,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, no_store()),
        ],
    )
        .into_response())
}

/// The optional digests of a seed upload: MD5 (the final answer's
/// `md5Hash`, which Google's clients validate), unless the creating
/// request's `Want-Repr-Digest` states the client's wishes without naming
/// it (`tenax upload` asks for `sha-256` alone). MD5 is the costliest
/// digest the server computes, about half its CPU per byte.
fn digests_wanted(headers: &HeaderMap) -> DigestSet {
    let stated = headers
        .get(WANT_REPR_DIGEST)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| repr_digest::wants(value, "md5"));
    match stated {
        Some(false) => DigestSet::NONE,
        Some(true) | None => DigestSet::MD5,
    }
}

/// `PUT /api/upload?file=NAME`: the literal seed form. Continues the upload
/// in progress of that name, or starts one.
pub(crate) async fn put_by_name(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<NameQuery>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    detached(async move {
        let file = query.file_key(&caller.access)?;
        let request = classify(&headers)?;
        state.check_size(&caller.access, Some(request.implied_size()))?;
        let new = || NewUpload {
            content_type: content_type(&headers),
            digests: digests_wanted(&headers),
            ..NewUpload::default()
        };
        let lease = state
            .engine
            .lease_name(&file, new, |current| starts_over(current, request))
            .await?;
        Ok::<_, Problem>(respond(&state, &caller, lease, request, &origin, &headers, body).await)
    })
    .await
}

/// `PUT` or `POST /uploads/{id}`: a chunk or a status query on a session.
pub(crate) async fn put_by_id(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    detached(async move {
        let id = upload_id(&id)?;
        let request = classify(&headers)?;
        state.check_size(&caller.access, Some(request.implied_size()))?;
        let lease = state.engine.lease(id).await?;
        Ok::<_, Problem>(respond(&state, &caller, lease, request, &origin, &headers, body).await)
    })
    .await
}

/// `DELETE /uploads/{id}`: cancels (§1.1: 204, then 410).
pub(crate) async fn cancel_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let mut lease = state.engine.lease(upload_id(&id)?).await?;
    lease.cancel().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/upload?file=NAME`: cancels the upload in progress of that name.
pub(crate) async fn cancel_by_name(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Query(query): Query<NameQuery>,
) -> Result<StatusCode, Problem> {
    let file = query.file_key(&access)?;
    let mut lease = state.engine.lease_current(&file).await?;
    if matches!(lease.record().status, Status::Complete(_)) {
        return Err(EngineError::Complete.into());
    }
    lease.cancel().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn classify(headers: &HeaderMap) -> Result<SeedRequest, Problem> {
    let content_range = header_str(headers, "content-range")?;
    let content_length = header_str(headers, "content-length")?;
    SeedRequest::classify(content_range, content_length).map_err(|error| {
        Problem::new(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            "urn:tenax:problem:bad-content-range",
            "Invalid Content-Range or Content-Length",
            error.to_string(),
        )
    })
}

/// Whether a literal-form request on a name whose current upload is
/// `current` begins a new upload: only a first chunk or a whole object after
/// the current one completed. Anything else on a complete upload replays its
/// final answer (its final response may have been lost).
fn starts_over(current: &Snapshot, request: SeedRequest) -> bool {
    matches!(current.record.status, Status::Complete(_))
        && matches!(
            request,
            SeedRequest::Whole { .. } | SeedRequest::Chunk { first: 0, .. }
        )
}

/// Decides (§1.3), acts, and answers.
async fn respond(
    state: &AppState,
    caller: &Caller,
    mut lease: Lease,
    request: SeedRequest,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let no_308 = headers
        .get("x-guploader-no-308")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"yes"));
    let result = async {
        // The digests a GCS client declares on the request that completes
        // the upload (docs/protocol.md §7.4), checked when it completes.
        if let Some(value) = header_str(headers, "x-goog-hash")? {
            let hash =
                GoogHash::parse(value).map_err(|error| Problem::bad_request(error.to_string()))?;
            lease.declare_digests(hash.md5, hash.crc32c).await?;
        }
        let phase = match lease.record().status {
            Status::Complete(_) => Phase::Complete,
            _ => Phase::Active,
        };
        let upload = UploadState {
            held: lease.held(),
            total: lease.record().total,
            phase,
        };
        let action = seed::decide(upload, request).map_err(|error| {
            Problem::new(
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
                "urn:tenax:problem:bad-content-range",
                "Content-Range does not fit the upload",
                error.to_string(),
            )
            .with("held", lease.held())
        })?;
        match action {
            SeedAction::ReplayFinal => Ok(None),
            SeedAction::Report { total } => {
                // Rule 7: a chunk the upload holds whole must be the bytes
                // it holds (another client on the same name, else).
                if let SeedRequest::Chunk { first, last, .. } = request {
                    append::compare_held(state, &mut lease, body, first..last + 1).await?;
                }
                if let Some(total) = total {
                    lease.set_total(total).await?;
                }
                Ok(None)
            }
            SeedAction::Finalize { total } => {
                lease.set_total(total).await?;
                append::finalize(state, caller, &mut lease).await?;
                Ok(None)
            }
            SeedAction::Gap => Err(Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "urn:tenax:problem:upload-gap",
                "Chunk starts past the bytes held",
                format!(
                    "the chunk starts past the {} bytes held; send from there",
                    lease.held()
                ),
            )
            .with("held", lease.held())),
            SeedAction::Append {
                skip,
                write,
                total,
                completes,
            } => {
                if let Some(total) = total {
                    lease.set_total(total).await?;
                }
                let request = Append {
                    skip,
                    limit: Some(write),
                    finish: if completes {
                        Finish::AtLength
                    } else {
                        Finish::Never
                    },
                    ..Append::default()
                };
                let appended = append::append(state, caller, &mut lease, body, request).await?;
                Ok(appended.interruption)
            }
        }
    }
    .await;
    let held = lease.held();
    let mut response = match result {
        // Google's client gives up on a 409 but retries a 503, then asks
        // for the offset: what a writer that lost the upload should do.
        Err(problem) if problem.kind() == crate::problem::TAKEN_OVER => problem
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response(),
        // A GCS object's errors in GCS's shape (docs/protocol.md §7.7).
        Err(problem) if lease.record().object.is_some() => crate::object::gcs_error(&problem),
        Err(problem) => problem.into_response(),
        Ok(_) if let Status::Complete(info) = &lease.record().status => {
            if lease.record().object.is_some() {
                let mut body = crate::object::resource(origin.base(), lease.record(), info);
                if let Some(answer) = caller.answer.get() {
                    body["hookResponse"] = answer;
                }
                (
                    StatusCode::OK,
                    [(header::CACHE_CONTROL, no_store())],
                    axum::Json(body),
                )
                    .into_response()
            } else {
                final_response(lease.record(), info, caller.answer.get())
            }
        }
        Ok(Some(tenax_core::Interruption::Overrun)) => Problem::bad_request(
            "the body is longer than its Content-Range; the announced bytes were kept",
        )
        .with("held", held)
        .into_response(),
        Ok(Some(tenax_core::Interruption::ShuttingDown)) => {
            Problem::from(EngineError::ShuttingDown)
                .with("held", held)
                .into_response()
        }
        Ok(_) => incomplete_response(no_308),
    };
    if let Some(range) =
        seed::held_range(held).filter(|_| !matches!(lease.record().status, Status::Complete(_)))
        && let Ok(value) = HeaderValue::from_str(&range)
    {
        response.headers_mut().insert(header::RANGE, value);
    }
    response
}

/// 308 Resume Incomplete, or 200 with the override header for clients that
/// cannot take a 308 (§1.1). Never with `Location`.
fn incomplete_response(no_308: bool) -> Response {
    let mut response = if no_308 {
        (StatusCode::OK, [("x-http-status-code-override", "308")]).into_response()
    } else {
        StatusCode::PERMANENT_REDIRECT.into_response()
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, no_store());
    response
}

/// The final 200: object JSON as GCS writes it, plus `sha256`. Without
/// MD5 (`serve --no-md5`) `md5Hash` is left out, as GCS does for composite
/// objects.
fn final_response(
    record: &tenax_core::UploadRecord,
    info: &FinalInfo,
    hook_answer: Option<serde_json::Value>,
) -> Response {
    let mut body = json!({
        "id": record.id.to_string(),
        "name": record.name.as_ref().map(FileName::as_str),
        "size": info.size.to_string(),
        "contentType": record.content_type,
        "sha256": info.sha256,
        "crc32c": info.crc32c,
    });
    if let Some(md5) = &info.md5 {
        body["md5Hash"] = md5.clone().into();
    }
    if let Some(answer) = hook_answer {
        body["hookResponse"] = answer;
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, no_store())],
        axum::Json(body),
    )
        .into_response()
}
