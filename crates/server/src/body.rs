//! Request bodies: idle timeouts, and running body consumers detached from
//! the handler future.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::BodyExt as _;

use crate::config::{MinTransferRate, ServerConfig};
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

/// The largest body that is not upload data (e.g. the seed dialect's JSON
/// metadata on initiation); 413 beyond.
pub(crate) const MAX_CONTROL_BODY: usize = 64 * 1024;

/// A body that is not upload data, read whole: 413 when it is (or
/// announces to be) over [`MAX_CONTROL_BODY`], 400 when it breaks off.
pub(crate) async fn control_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "urn:tenax:problem:body-too-large",
            "Request body too large",
            format!("this request takes a body of at most {MAX_CONTROL_BODY} bytes"),
        )
    };
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_CONTROL_BODY as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, MAX_CONTROL_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(Problem::bad_request(format!("request body: {error}"))),
    }
}

/// Trailers of a body, filled in when the body ends.
pub(crate) type TrailerSlot = Arc<Mutex<Option<HeaderMap>>>;

/// The body's data frames, failing when none arrives within the idle
/// timeout, or when the body is slower than the minimum transfer rate
/// (both from `config`). Either way, every frame that arrived before has
/// been yielded, so the engine keeps it. Trailers, if any, are put into
/// `trailers`.
pub(crate) fn data_stream(
    body: Body,
    config: &ServerConfig,
    trailers: Option<TrailerSlot>,
) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static {
    let idle = config.body_idle_timeout;
    let min_rate = config.min_transfer_rate;
    let start = Pace {
        body,
        idle_waited: Duration::ZERO,
        window_waited: Duration::ZERO,
        window_bytes: 0,
    };
    futures_util::stream::unfold(Some(start), move |pace| {
        let trailers = trailers.clone();
        async move {
            let mut pace = pace?;
            loop {
                // Only time spent waiting for the client counts: while the
                // consumer writes or fsyncs, the body is not polled.
                let mut wait = idle.saturating_sub(pace.idle_waited);
                if let Some(rate) = min_rate {
                    if pace.window_waited >= rate.window
                        && let Err(message) = pace.close_window(rate)
                    {
                        return Some((Err(message), None));
                    }
                    wait = wait.min(rate.window - pace.window_waited);
                }
                let started = Instant::now();
                let polled = tokio::time::timeout(wait, pace.body.frame()).await;
                let waited = started.elapsed();
                pace.idle_waited += waited;
                pace.window_waited += waited;
                return match polled {
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(bytes) => {
                            crate::ops::received(bytes.len());
                            pace.idle_waited = Duration::ZERO;
                            pace.window_bytes += bytes.len() as u64;
                            Some((Ok(bytes), Some(pace)))
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
                    Err(_) if pace.idle_waited >= idle => {
                        Some((Err(format!("no body bytes for {idle:?}")), None))
                    }
                    // The end of a rate window: checked at the top.
                    Err(_) => continue,
                };
            }
        }
    })
    .boxed()
}

/// A body and how fast it has been arriving.
struct Pace {
    body: Body,
    /// Waited since the last data frame.
    idle_waited: Duration,
    /// Waited in the current rate window.
    window_waited: Duration,
    /// Received in the current rate window.
    window_bytes: u64,
}

impl Pace {
    /// Ends a full rate window: an error if it carried too few bytes.
    fn close_window(&mut self, rate: MinTransferRate) -> Result<(), String> {
        let needed = (rate.bytes_per_second as f64 * self.window_waited.as_secs_f64()) as u64;
        if self.window_bytes < needed {
            return Err(format!(
                "slower than the minimum transfer rate: {} bytes in {:?} (at least {} bytes/s)",
                self.window_bytes, self.window_waited, rate.bytes_per_second
            ));
        }
        self.window_waited = Duration::ZERO;
        self.window_bytes = 0;
        Ok(())
    }
}
