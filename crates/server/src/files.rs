//! `GET /files/NAME`: completed files.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenax_core::StorageError;
use tenax_protocol::FileName;

use crate::AppState;
use crate::problem::Problem;

/// Serves a published file whole (ranges arrive with the download work).
pub(crate) async fn get_file(
    State(state): State<AppState>,
    method: Method,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let name = FileName::new(name).map_err(|_| Problem::not_found("no such file"))?;
    let storage = state.engine.storage();
    let len = storage.file_len(&name).await.map_err(|error| match error {
        StorageError::NotFound => Problem::not_found("no such file"),
        other => tenax_core::Error::from(other).into(),
    })?;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(
            storage
                .read_file(&name, 0..len)
                .await
                .map_err(tenax_core::Error::from)?,
        )
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}
