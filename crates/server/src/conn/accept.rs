//! The accept loop: hyper's HTTP/1.1 and HTTP/2 connection builders with
//! the limits `axum::serve` does not set (header-read timeout, head size,
//! connection cap), TLS with ALPN, h2c only on request, and a graceful
//! shutdown that keeps the bytes in flight.
//!
//! hyper-util's `auto::Builder` is not used: it cannot cap the size of an
//! HTTP/1.1 head without also capping the read buffer for bodies
//! (`max_buf_size`), and it always accepts h2c. The protocol is known
//! before hyper sees the connection anyway: from ALPN under TLS, from the
//! first 24 bytes (the HTTP/2 preface) with `--h2c`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{Request, Version};
use bytes::{Buf as _, Bytes};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tenax_core::Engine;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::config::ServerConfig;
use crate::conn::interim::{self, Interim, InterimResponses};
use crate::conn::origin::{Peer, TrustForwarded};

/// What every connection of one server shares.
struct Settings {
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    h2c: bool,
    header_read_timeout: Duration,
    max_header_size: usize,
    interim: InterimPolicy,
}

/// Which HTTP/1.1 requests get an [`Interim`] handle.
#[derive(Debug, Clone)]
struct InterimPolicy {
    responses: InterimResponses,
    trust: TrustForwarded,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, tells the engine to stop every append (each keeps and commits
/// what it received) and gives open connections `config.shutdown_grace` to
/// finish their answers.
///
/// At most `config.max_connections` connections are served at once; the
/// loop does not accept more until one closes, so further clients wait in
/// the kernel's listen backlog (and see a connect timeout if it is full or
/// they give up first) rather than being refused.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    engine: Engine,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(Settings {
        app,
        tls: config
            .tls
            .as_ref()
            .map(crate::conn::tls::TlsConfig::acceptor),
        h2c: config.h2c,
        header_read_timeout: config.header_read_timeout,
        max_header_size: config.max_header_size,
        interim: InterimPolicy {
            responses: config.interim_responses,
            trust: config.trust_forwarded.clone(),
        },
    });
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed; nothing left to serve with if it were.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
        let settings = Arc::clone(&settings);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Err(error) = connection(&settings, stream, peer, watcher).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One connection, from the TLS handshake or protocol sniff to its end.
async fn connection(
    settings: &Settings,
    stream: TcpStream,
    addr: SocketAddr,
    watcher: Watcher,
) -> Result<(), BoxError> {
    // The handshake and the preface count against the header-read timeout:
    // a client that opens a connection and sends nothing must not hold a
    // slot for long.
    let deadline = settings.header_read_timeout;
    if let Some(acceptor) = &settings.tls {
        let stream = tokio::time::timeout(deadline, acceptor.accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out")??;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let peer = Peer { addr, tls: true };
        return if h2 {
            serve_h2(settings, stream, peer, watcher).await
        } else {
            serve_h1(settings, stream, peer, watcher).await
        };
    }
    let peer = Peer { addr, tls: false };
    if !settings.h2c {
        return serve_h1(settings, stream, peer, watcher).await;
    }
    let (h2, stream) = tokio::time::timeout(deadline, sniff_preface(stream))
        .await
        .map_err(|_| "no request before the header-read timeout")??;
    if h2 {
        serve_h2(settings, stream, peer, watcher).await
    } else {
        serve_h1(settings, stream, peer, watcher).await
    }
}

async fn serve_h1<I>(
    settings: &Settings,
    io: I,
    peer: Peer,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(interim::Shared::default());
    let service = app_service(
        settings.app.clone(),
        peer,
        Some((Arc::clone(&shared), settings.interim.clone())),
    );
    let io = TokioIo::new(interim::InterimIo::new(io, shared));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_header_size)
        // hyper lets each connection's read buffer grow to ~400 KiB while a
        // body streams: with a thousand uploads at once that alone is
        // 400 MiB. 128 KiB reads cost a few more syscalls per MiB.
        .max_buf_size(settings.max_header_size.max(H1_READ_BUFFER));
    watcher
        .watch(builder.serve_connection(io, service))
        .await
        .map_err(Into::into)
}

/// The largest HTTP/1.1 read buffer of a connection (unless the head
/// limit is larger).
const H1_READ_BUFFER: usize = 128 * 1024;

async fn serve_h2<I>(
    settings: &Settings,
    io: I,
    peer: Peer,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app_service(settings.app.clone(), peer, None);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        // Uploads are long one-way streams and the body is not read while
        // the engine writes and fsyncs: windows of a few MiB let the client
        // keep sending meanwhile, as TCP's buffers do for HTTP/1.1 (hyper's
        // default is 1 MiB); larger DATA frames mean fewer trips through
        // the body stream than the 16 KiB default.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
    watcher
        .watch(builder.serve_connection(TokioIo::new(io), service))
        .await
        .map_err(Into::into)
}

/// The application as a hyper service: every request learns its
/// connection ([`Peer`]); on HTTP/1.1 each the policy allows also gets an
/// [`Interim`] handle, closed as soon as its response is ready.
fn app_service(
    app: Router,
    peer: Peer,
    interims: Option<(Arc<interim::Shared>, InterimPolicy)>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer);
        let guard = interims
            .as_ref()
            .filter(|(_, policy)| {
                request.version() == Version::HTTP_11
                    && policy.responses.allows(
                        &policy.trust,
                        Some(peer.addr.ip()),
                        request.headers(),
                    )
            })
            .map(|(shared, _)| {
                let (handle, guard) = Interim::open(shared);
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

/// The largest HTTP/2 DATA frame a client may send us.
const H2_MAX_FRAME: u32 = 256 * 1024;

/// HTTP/2 flow-control windows: what one stream, and one connection, may
/// have in flight unread (so also the most buffered for it).
const H2_STREAM_WINDOW: u32 = 4 << 20;
const H2_CONNECTION_WINDOW: u32 = 8 << 20;

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes are, or cannot become, the HTTP/2 preface;
/// returns which, and the stream with those bytes put back.
async fn sniff_preface(mut stream: TcpStream) -> io::Result<(bool, Rewound<TcpStream>)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0; H2_PREFACE.len()];
    while seen.len() < H2_PREFACE.len() {
        let read = stream
            .read(&mut chunk[..H2_PREFACE.len() - seen.len()])
            .await?;
        if read == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..read]);
        if !H2_PREFACE.starts_with(&seen) {
            break;
        }
    }
    let h2 = seen == H2_PREFACE;
    Ok((
        h2,
        Rewound {
            prefix: Bytes::from(seen),
            inner: stream,
        },
    ))
}

/// A stream whose first bytes were read already and are served again.
/// (hyper-util has the same type, private.)
#[derive(Debug)]
struct Rewound<T> {
    prefix: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
