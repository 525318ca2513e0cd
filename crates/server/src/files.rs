//! Downloads, by name and by id: `GET`/`HEAD /files/NAME` and
//! `GET /uploads/{id}`. This module finds what to serve; [`crate::download`]
//! answers (ranges, preconditions, streaming).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use tenax_core::{FileKey, Status};
use tenax_protocol::FileName;

use crate::auth::Access;
use crate::common::upload_id;
use crate::download::{serve_complete, serve_in_progress};
use crate::problem::Problem;
use crate::state::AppState;

/// Serves a published file: the bytes of the upload last completed under
/// that name.
pub(crate) async fn get_file(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let file = FileKey {
        namespace: access.namespace,
        name: FileName::new(name).map_err(|_| Problem::not_found("no such file"))?,
    };
    let snapshot = state
        .engine
        .published(&file)
        .await
        .map_err(|error| match error {
            tenax_core::Error::NotFound => Problem::not_found("no such file"),
            other => other.into(),
        })?;
    let Status::Complete(info) = &snapshot.record.status else {
        return Err(Problem::not_found("no such file"));
    };
    serve_complete(
        state.engine.storage(),
        &method,
        &headers,
        &snapshot.record,
        info,
    )
    .await
}

/// Serves an upload by id, whatever its dialect or name. An upload still
/// in progress is never served as if it were complete (docs/protocol.md case 85):
/// only ranges below the offset held, else 409 naming it.
pub(crate) async fn get_upload(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = upload_id(&id)?;
    if method == Method::GET && crate::dialects::rufh::is_offset_retrieval(&headers) {
        return Ok(crate::dialects::rufh::head(state, id, headers).await);
    }
    let snapshot = state.engine.peek(id).await?;
    match &snapshot.record.status {
        Status::Complete(info) => {
            serve_complete(
                state.engine.storage(),
                &method,
                &headers,
                &snapshot.record,
                info,
            )
            .await
        }
        Status::Cancelled => Err(tenax_core::Error::Gone.into()),
        Status::Expired => Err(tenax_core::Error::Expired.into()),
        Status::Active => serve_in_progress(state.engine.storage(), &headers, &snapshot).await,
    }
}
