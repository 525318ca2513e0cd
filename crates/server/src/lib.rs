//! The HTTP front-end of tenax.
//!
//! [`router`] maps the URL space onto the dialect adapters; each adapter
//! reads its dialect's headers with `tenax-protocol`, drives the upload
//! [`Engine`] and writes the answer. [`serve`] is the accept loop: ours, not
//! `axum::serve`, so that header-read timeouts and graceful shutdown are
//! under our control.
//!
//! Rule of this crate: the code that consumes an upload body runs in a task
//! of its own (see [`body::detached`]). hyper drops an HTTP/2 handler future
//! as soon as the client resets the stream, and the bytes already written
//! must still be committed.

mod accept;
mod auth;
mod body;
mod checksum;
mod common;
mod cors;
mod download;
mod files;
mod hooks;
mod host;
mod interim;
mod ops;
mod origin;
mod page;
mod problem;
mod rufh;
mod seed;
mod tls;
mod tus;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, put};
use tenax_core::{CompletionAnswer, Engine, FinalInfo, Lease};

use crate::auth::Access;

pub use accept::serve;
pub use auth::{Auth, TokenGrant};
pub use ops::{MetricsRender, metric};
pub use origin::TrustForwarded;
pub use problem::Problem;
pub use tls::{TlsConfig, TlsError};

/// Front-end settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A request body that delivers nothing for this long is cut; what it
    /// delivered before is kept.
    pub body_idle_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for open connections before closing them.
    pub shutdown_grace: Duration,
    /// The largest upload accepted (advertised as `Tus-Max-Size` and in
    /// `Upload-Limit`), if any.
    pub max_upload_size: Option<u64>,
    /// What `GET /metrics` serves; `None` answers 404.
    pub metrics: Option<MetricsRender>,
    /// The credentials requests need (none: open).
    pub auth: Arc<Auth>,
    /// When set, the request that completes an upload delivers the
    /// `completed` event itself and returns the receiver's answer
    /// (`Tenax-Hook-Response`; seed's `hookResponse`).
    pub completion_answer: Option<Arc<dyn CompletionAnswer>>,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) rather than plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Whether plain-text connections may speak HTTP/2 with prior knowledge
    /// (h2c); otherwise they are HTTP/1.1 only.
    pub h2c: bool,
    /// Whose `Forwarded` / `X-Forwarded-*` headers decide the absolute URLs
    /// handed out (behind-proxy mode).
    pub trust_forwarded: TrustForwarded,
    /// Connections served at once; further ones wait, unaccepted, in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// The largest request head: HTTP/1.1 request line and headers, HTTP/2
    /// header list. Beyond it: 431 and the connection (h1) or stream (h2)
    /// closed.
    pub max_header_size: usize,
    /// An upload body slower than this is cut (what it delivered is kept).
    pub min_transfer_rate: Option<MinTransferRate>,
}

/// The slowest an upload body may be: at least `bytes_per_second` on
/// average over each `window` of time spent waiting for it (time the server
/// itself spends, e.g. in fsync, does not count against the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinTransferRate {
    /// The rate, in bytes a second.
    pub bytes_per_second: u64,
    /// How long a stretch the rate is averaged over.
    pub window: Duration,
}

impl Default for MinTransferRate {
    /// 1 KiB a second, averaged over 30 s.
    fn default() -> Self {
        MinTransferRate {
            bytes_per_second: 1024,
            window: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            body_idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_upload_size: Some(1 << 40),
            metrics: None,
            auth: Arc::default(),
            completion_answer: None,
            tls: None,
            h2c: false,
            trust_forwarded: TrustForwarded::Nobody,
            max_connections: 4096,
            max_header_size: 64 * 1024,
            min_transfer_rate: Some(MinTransferRate::default()),
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<ServerConfig>,
    /// The last `/readyz` answer.
    pub(crate) ready: Arc<ops::ReadyCache>,
}

impl AppState {
    /// 413 for an upload larger than the configured maximum or the
    /// credential's own.
    pub(crate) fn check_size(&self, access: &Access, size: Option<u64>) -> Result<(), Problem> {
        let max = match (self.config.max_upload_size, access.max_upload_size) {
            (Some(server), Some(token)) => Some(server.min(token)),
            (server, token) => server.or(token),
        };
        match (size, max) {
            (Some(size), Some(max)) if size > max => Err(Problem::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "urn:tenax:problem:too-large",
                "Upload too large",
                format!("uploads are limited to {max} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// Finalises an upload, once the request's credential has been checked
    /// again: it may have been revoked or expired while the body arrived.
    pub(crate) async fn finalize(
        &self,
        access: &Access,
        lease: &mut Lease,
    ) -> Result<FinalInfo, Problem> {
        access.recheck(&self.config.auth)?;
        let info = lease.finalize().await?;
        if let Some(hooks) = &self.config.completion_answer
            && let Some(answer) = hooks.answer(lease.id()).await
        {
            access.hook_answer.set(answer);
        }
        Ok(info)
    }
}

/// The application: every route of every dialect.
pub fn router(engine: Engine, config: ServerConfig) -> Router {
    let state = AppState {
        engine,
        config: Arc::new(config),
        ready: Arc::default(),
    };
    let routes = Router::new()
        .route(
            "/api/upload",
            put(seed::put_by_name)
                .post(seed::initiate)
                .delete(seed::cancel_by_name),
        )
        .route("/uploads", post(uploads::create).options(uploads::options))
        .route(
            "/uploads/{id}",
            put(seed::put_by_id)
                .get(files::get_upload)
                .post(seed::put_by_id)
                .patch(uploads::patch)
                .head(uploads::head)
                .delete(uploads::delete)
                .options(uploads::options),
        )
        .route("/files/{name}", get(files::get_file))
        .route("/", get(page::index))
        .route("/index.html", get(page::index))
        .route("/favicon.ico", get(page::icon))
        .route("/assets/app.js", get(page::app_js))
        .route("/assets/app.css", get(page::app_css))
        .route("/assets/icon.svg", get(page::icon))
        .route("/api/files", get(page::list_files))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { Problem::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "urn:tenax:problem:method-not-allowed",
                "Method not allowed",
                "this resource does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    // The method override runs before routing, so the outer router only
    // rewrites the request and hands it on.
    let app = Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_request(uploads::override_method));
    cors::wrap(app)
        .layer(axum::middleware::from_fn(host::check))
        .layer(axum::middleware::from_fn(ops::track))
}
