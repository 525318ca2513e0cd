//! The accept loop: hyper's connection builder with the timeouts
//! `axum::serve` does not set, and a graceful shutdown that keeps the bytes
//! in flight.

use std::future::Future;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;

use axum::http::{Request, Version};
use hyper::body::Incoming;
use tenax_core::Engine;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::ServerConfig;
use crate::interim::{self, Interim};

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, tells the engine to stop every append (each keeps and commits
/// what it received) and gives open connections `config.shutdown_grace` to
/// finish their answers.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    engine: Engine,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
        let shared = Arc::new(interim::Shared::default());
        let service = interim_service(app.clone(), Arc::clone(&shared));
        let io = TokioIo::new(interim::InterimIo::new(stream, shared));
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down");
    engine.shutdown();
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
}

/// The application as a hyper service that gives each HTTP/1.1 request an
/// [`Interim`] handle, closed as soon as its response is ready.
fn interim_service(
    app: Router,
    shared: Arc<interim::Shared>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let guard = (request.version() == Version::HTTP_11).then(|| {
            let (handle, guard) = Interim::open(&shared);
            request.extensions_mut().insert(handle);
            guard
        });
        let response = app.clone().oneshot(request);
        async move {
            let response = response.await;
            drop(guard);
            response
        }
    })
}
