//! The HTTP front-end of tenax.
//!
//! # The path of a request
//!
//! 1. **Accept** (`conn/accept.rs`, [`serve`]): our accept loop, not
//!    `axum::serve`, so that header-read timeouts, the connection limit and
//!    graceful shutdown are under our control. It speaks TLS
//!    (`conn/tls.rs`), records the peer for `conn/origin.rs` (which builds
//!    the public URLs, behind a proxy too) and wraps the socket so that a
//!    handler can send interim 1xx answers (`conn/interim.rs`).
//! 2. **Router** ([`router`], here): request metrics (`ops.rs`), the
//!    `Host` check (`conn/host.rs`) and CORS (`cors.rs`) around everything; the tus method override; credentials
//!    (`auth.rs`) and the completion hook's answer slot (`hooks.rs`) in front
//!    of the routes. Downloads go to `files.rs`/`download.rs`, the browser
//!    page to `page.rs`, health and metrics to `ops.rs`.
//! 3. **Dialect** (`dialect.rs`): on the upload resource the request's
//!    headers alone name its dialect; `dialects/mod.rs` hands it to that
//!    adapter, and `ops.rs` labels its metrics with the same answer.
//! 4. **Adapter** (`dialects/seed.rs`, `dialects/tus.rs`,
//!    `dialects/rufh.rs`): reads its dialect's headers with
//!    `tenax-protocol`, leases the upload, and decides where the body goes.
//!    It runs in a task of its own (`body.rs`, `detached`): hyper drops an
//!    HTTP/2 handler future as soon as the client resets the stream, and
//!    the bytes already written must still be committed.
//! 5. **Shared append path** (`append.rs`): the offset check, the engine
//!    append (body paced and timed out by `body.rs`, checksums by
//!    `checksum.rs`), the finalisation once the upload is whole, and what
//!    the adapter words its answer from. Errors become RFC 9457 problems
//!    (`problem.rs`).
//! 6. **Engine** (`tenax-core`): `Lease` appends, fsyncs, and finalises.
//!
//! Shared pieces sit below: settings in `config.rs`, the handlers' state
//! in `state.rs` (lower modules take only their part of it, through
//! `FromRef`). Modules import downwards only (`tests/module_graph.rs`
//! checks that there is no cycle): `dialect.rs`, `problem.rs`, `cors.rs`,
//! `conn/interim.rs` and `conn/tls.rs` import nothing of the crate; no
//! adapter imports another or the dispatcher; nothing imports this root.

mod append;
mod auth;
mod body;
mod checksum;
mod common;
mod config;
mod conn;
mod cors;
mod dialect;
mod dialects;
mod download;
mod files;
mod hooks;
mod object;
mod ops;
mod page;
mod problem;
mod state;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef as _;
use axum::routing::{get, post, put};
use tenax_core::Engine;

use crate::state::AppState;

pub use auth::{Auth, TokenGrant};
pub use config::{MinTransferRate, ServerConfig};
pub use conn::accept::serve;
pub use conn::interim::InterimResponses;
pub use conn::origin::TrustForwarded;
pub use conn::tls::{TlsConfig, TlsError};
pub use ops::{MetricsRender, metric};
pub use problem::Problem;

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
            put(dialects::seed::put_by_name)
                .post(dialects::seed::initiate)
                .delete(dialects::seed::cancel_by_name),
        )
        .route(
            "/uploads",
            post(dialects::create).options(dialects::options),
        )
        .route(
            "/uploads/{id}",
            put(dialects::seed::put_by_id)
                .get(files::get_upload)
                .post(dialects::seed::put_by_id)
                .patch(dialects::patch)
                .head(dialects::head)
                .delete(dialects::delete)
                .options(dialects::options),
        )
        .route("/files/{name}", get(files::get_file))
        // The GCS JSON API (docs/protocol.md §7).
        .route(
            "/upload/storage/v1/b/{bucket}/o",
            post(dialects::gcs::upload),
        )
        .route("/storage/v1/b/{bucket}", get(dialects::gcs::get_bucket))
        .route("/storage/v1/b/{bucket}/o", get(dialects::gcs::list))
        .route(
            "/storage/v1/b/{bucket}/o/{*object}",
            get(dialects::gcs::get_object).delete(dialects::gcs::delete_object),
        )
        .route(
            "/download/storage/v1/b/{bucket}/o/{*object}",
            get(dialects::gcs::download),
        )
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
            auth::Gate::from_ref(&state),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(hooks::carry_answer))
        .layer(axum::middleware::from_fn(object::gcs_errors))
        .with_state(state);
    // The method override runs before routing, so the outer router only
    // rewrites the request and hands it on.
    let app = Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::map_request(dialects::override_method));
    cors::wrap(app)
        .layer(axum::middleware::from_fn(conn::host::check))
        .layer(axum::middleware::from_fn(ops::track))
}
