//! Completed files: `GET /files/NAME` and `GET /uploads/{id}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenax_core::{Snapshot, Status};
use tenax_protocol::FileName;

use crate::AppState;
use crate::common::upload_id;
use crate::problem::Problem;

/// Serves a published file whole (ranges arrive with the download work):
/// the bytes of the upload last completed under that name.
pub(crate) async fn get_file(
    State(state): State<AppState>,
    method: Method,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let name = FileName::new(name).map_err(|_| Problem::not_found("no such file"))?;
    let snapshot = state
        .engine
        .published(&name)
        .await
        .map_err(|error| match error {
            tenax_core::Error::NotFound => Problem::not_found("no such file"),
            other => other.into(),
        })?;
    serve_complete(&state, &method, &snapshot).await
}

/// Serves a completed upload by id, whatever its dialect or name. An upload
/// still in progress is not served as if it were complete (PROTOCOLS case
/// 85): 409, naming the bytes held.
pub(crate) async fn get_upload(
    State(state): State<AppState>,
    method: Method,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let snapshot = state.engine.peek(upload_id(&id)?).await?;
    match &snapshot.record.status {
        Status::Complete(_) => serve_complete(&state, &method, &snapshot).await,
        Status::Cancelled => Err(tenax_core::Error::Gone.into()),
        Status::Active => Err(Problem::new(
            StatusCode::CONFLICT,
            "urn:tenax:problem:incomplete-upload",
            "Upload incomplete",
            format!(
                "the upload holds {} bytes and is not complete",
                snapshot.held
            ),
        )
        .with("held", snapshot.held)),
    }
}

async fn serve_complete(
    state: &AppState,
    method: &Method,
    snapshot: &Snapshot,
) -> Result<Response, Problem> {
    let len = snapshot.held;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let stream = state
            .engine
            .storage()
            .read(&snapshot.record, 0..len)
            .await
            .map_err(tenax_core::Error::from)?;
        Body::from_stream(stream)
    };
    Ok(whole(body, len, snapshot.record.content_type.as_deref()))
}

fn whole(body: Body, len: u64, content_type: Option<&str>) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let content_type = content_type
        .and_then(|value| HeaderValue::from_str(value).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    response
}
