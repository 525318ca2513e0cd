//! Request bodies: idle timeouts, and running body consumers detached from
//! the handler future.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::BodyExt as _;

use crate::problem::Problem;

/// Runs `work` in its own task and waits for it. If the handler future is
/// dropped (HTTP/2 drops it when the client resets the stream), the task
/// still runs to its end, so what it wrote gets committed.
pub(crate) async fn detached<F, R>(work: F) -> Response
where
    F: Future<Output = R> + Send + 'static,
    R: IntoResponse,
{
    match tokio::spawn(async move { work.await.into_response() }).await {
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

/// Trailers of a body, filled in when the body ends.
pub(crate) type TrailerSlot = Arc<Mutex<Option<HeaderMap>>>;

/// The body's data frames, failing when none arrives within `idle`.
/// Trailers, if any, are put into `trailers`.
pub(crate) fn data_stream(
    body: Body,
    idle: Duration,
    trailers: Option<TrailerSlot>,
) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static {
    futures_util::stream::unfold(Some(body), move |body| {
        let trailers = trailers.clone();
        async move {
            let mut body = body?;
            loop {
                return match tokio::time::timeout(idle, body.frame()).await {
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(bytes) => {
                            crate::ops::received(bytes.len());
                            Some((Ok(bytes), Some(body)))
                        }
                        Err(frame) => {
                            if let (Ok(map), Some(slot)) = (frame.into_trailers(), &trailers)
                                && let Ok(mut slot) = slot.lock()
                            {
                                *slot = Some(map);
                            }
                            continue;
                        }
                    },
                    Ok(Some(Err(error))) => Some((Err(error.to_string()), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(format!("no body bytes for {idle:?}")), None)),
                };
            }
        }
    })
    .boxed()
}
