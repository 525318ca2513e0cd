//! Request bodies: idle timeouts, and running body consumers detached from
//! the handler future.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};

use crate::problem::Problem;

/// Runs `work` in its own task and waits for it. If the handler future is
/// dropped (HTTP/2 drops it when the client resets the stream), the task
/// still runs to its end, so what it wrote gets committed.
pub(crate) async fn detached<F>(work: F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "request task failed");
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "urn:tenax:problem:internal",
                "Internal error",
                "the request failed inside the server",
            )
            .into_response()
        }
    }
}

/// The body's data frames, failing when none arrives within `idle`.
pub(crate) fn data_stream(
    body: Body,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static {
    futures_util::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(stream))),
            Ok(Some(Err(error))) => Some((Err(error.to_string()), None)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("no body bytes for {idle:?}")), None)),
        }
    })
    .boxed()
}
