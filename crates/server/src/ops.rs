//! Operations: `/healthz`, `/readyz`, `/metrics`, and the request metrics
//! every route feeds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;

use tenax_core::Engine;

use crate::dialect::Dialect;

/// Names of the front-end's metrics.
pub mod metric {
    /// Counter: requests, by `dialect` and `status`.
    pub const REQUESTS: &str = "tenax_requests_total";
    /// Counter: upload body bytes received.
    pub const BYTES_RECEIVED: &str = "tenax_bytes_received_total";
    /// Counter: download body bytes served.
    pub const BYTES_SERVED: &str = "tenax_bytes_served_total";
    /// Histogram: seconds from a request's arrival to its answer's head,
    /// by `dialect` and `method` (an upload's body is read by then).
    pub const REQUEST_SECONDS: &str = "tenax_request_seconds";
}

/// How long a readiness answer is reused.
const READY_CACHE: Duration = Duration::from_secs(1);

/// Renders the metrics in the Prometheus text format, for `GET /metrics`
/// (the binary owns the recorder; this crate only feeds the `metrics` facade).
#[derive(Clone)]
pub struct MetricsRender(Arc<dyn Fn() -> String + Send + Sync>);

impl MetricsRender {
    /// Wraps a render function.
    pub fn new(render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        MetricsRender(Arc::new(render))
    }
}

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

/// What `/readyz` and `/metrics` need.
#[derive(Debug, Clone)]
pub(crate) struct OpsState {
    /// The engine whose storage is probed.
    pub(crate) engine: Engine,
    /// The last readiness answer.
    pub(crate) ready: Arc<ReadyCache>,
    /// The metrics render, if enabled.
    pub(crate) metrics: Option<MetricsRender>,
}

/// The last readiness answer and when it was found.
#[derive(Debug, Default)]
pub(crate) struct ReadyCache(Mutex<Option<(Instant, Result<(), String>)>>);

/// `GET /healthz`: the process serves.
pub(crate) async fn healthz() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], "ok\n").into_response()
}

/// `GET /readyz`: the storage accepts writes (checked at most once a second).
pub(crate) async fn readyz(State(state): State<OpsState>) -> Response {
    let cached = state
        .ready
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .filter(|(at, _)| at.elapsed() < READY_CACHE)
        .map(|(_, answer)| answer.clone());
    let answer = match cached {
        Some(answer) => answer,
        None => {
            let answer = state
                .engine
                .storage()
                .probe()
                .await
                .map_err(|error| error.to_string());
            if let Err(error) = &answer {
                tracing::warn!(%error, "not ready: the storage refuses writes");
            }
            *state.ready.0.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), answer.clone()));
            answer
        }
    };
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    match answer {
        Ok(()) => (no_store, "ready\n".to_owned()).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store,
            format!("not ready: {error}\n"),
        )
            .into_response(),
    }
}

/// `GET /metrics`: the Prometheus text exposition (404 when not enabled).
pub(crate) async fn metrics(State(state): State<OpsState>) -> Response {
    match &state.metrics {
        Some(render) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            (render.0)(),
        )
            .into_response(),
        None => crate::problem::Problem::not_found("metrics are not enabled").into_response(),
    }
}

/// The `dialect` label of a request, and whether its response body is a
/// download (counted as bytes served).
fn classify(method: &Method, path: &str, headers: &HeaderMap) -> (&'static str, bool) {
    let download = *method == Method::GET;
    if path == "/api/upload" {
        ("seed", false)
    } else if path.starts_with("/files/") {
        ("download", download)
    } else if path == "/uploads" || path.starts_with("/uploads/") {
        if download {
            return ("download", true);
        }
        (Dialect::of(headers).label(method), false)
    } else {
        ("other", false)
    }
}

/// Counts every request by dialect and status, times it, and counts the
/// bytes of downloads.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (dialect, download) = classify(request.method(), request.uri().path(), request.headers());
    let method = method_label(request.method());
    let response = next.run(request).await;
    metrics::histogram!(metric::REQUEST_SECONDS, "dialect" => dialect, "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        metric::REQUESTS,
        "dialect" => dialect,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    if !download {
        return response;
    }
    let served = metrics::counter!(metric::BYTES_SERVED);
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                served.increment(data.len() as u64);
            }
            frame
        }))
    })
}

/// The `method` label: the methods tenax answers, and `other`.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Counts upload body bytes as they arrive.
pub(crate) fn received(bytes: usize) {
    metrics::counter!(metric::BYTES_RECEIVED).increment(bytes as u64);
}
