//! The HTTP client of uploads: hyper-util's client over sockets that keep
//! little unsent data in the kernel.
//!
//! Why not reqwest, which downloads use: every body byte handed to the HTTP
//! stack counts as sent, and whatever the stack and the kernel still hold
//! when a link dies is lost and sent again. On Linux a TCP socket's unsent
//! queue grows (autotuned) to megabytes, so a flapping link re-sent about
//! 4–11% of a file cut every 1–8 MiB (`bench/soak`). `TCP_NOTSENT_LOWAT`
//! bounds the unsent part only, so the bytes in flight can still grow to
//! the link's bandwidth-delay product and a good link loses no speed;
//! `SO_SNDBUF` (optional) bounds unsent and in-flight bytes together.
//! reqwest 0.13.5 has neither option and its `connector_layer` cannot build
//! its private connection type, so uploads are sent here with the same
//! pieces reqwest is made of: hyper-util's pooled client, hyper-rustls on
//! the process's rustls provider (aws-lc-rs unless one is installed),
//! rustls-platform-verifier with the extra roots, h2 or HTTP/1.1 by ALPN.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpStream;

use crate::error::Error;
use crate::net::{MAX_RESPONSE_BODY, Policy};

/// A request body: empty, or streamed from the file.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// The most body bytes hyper buffers above the socket on a link that has
/// dropped (HTTP/1.1; its minimum is 8 KiB): it takes one more body piece
/// (`uploader.rs`) only while it holds less. Like the kernel's queue,
/// whatever it holds when the link dies is lost. On a link that holds,
/// hyper keeps its default (about 400 KiB): on loopback 16 or 64 KiB cost
/// 7% of the speed of a 1 GiB tus upload (smaller writes).
const FLAPPING_STACK_BUFFER: usize = 8 * 1024;
/// The kernel's unsent queue on a link that has dropped, at most
/// (`TCP_NOTSENT_LOWAT`; the configured limit when it is smaller). Below
/// hyper's 8 KiB it is cheap: the link soak's loss on the client's side
/// went from a median of 17 to 15 KiB per cut against 8 KiB here, at the
/// same speed.
const FLAPPING_UNSENT_LIMIT: u32 = 4 * 1024;
/// The same for an h2 stream (hyper's default is 1 MiB).
const FLAPPING_H2_STACK_BUFFER: usize = 64 * 1024;

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from `blocks`.
pub(crate) fn streamed<S>(blocks: S) -> Body
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    StreamBody::new(blocks.map_ok(Frame::data)).boxed_unsync()
}

/// The socket options of upload connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sockets {
    /// `TCP_NOTSENT_LOWAT`: the most unsent bytes the kernel queues.
    pub(crate) unsent_limit: Option<u32>,
    /// `SO_SNDBUF`: the kernel's send buffer (unsent and unacknowledged).
    pub(crate) send_buffer: Option<usize>,
}

/// The upload client: a connection pool plus the headers every request
/// carries (user agent, bearer token).
#[derive(Clone)]
pub(crate) struct Client {
    pool: Pool<HttpsConnector<Connector>, Body>,
    defaults: HeaderMap,
    stall_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `policy`'s connect timeout, token and roots, and
    /// `sockets`' options, for a link that holds. Redirects are never
    /// followed (an upload's `308` must reach the caller).
    pub(crate) fn new(policy: &Policy, sockets: Sockets) -> Result<Self, Error> {
        let tls = tls_config(policy.extra_roots.as_deref())?;
        Self::build(policy, sockets, tls, false)
    }

    /// Two clients as [`Client::new`] sharing one TLS configuration: for a
    /// link that holds, and for one that has dropped (hyper buffering little).
    pub(crate) fn pair(policy: &Policy, sockets: Sockets) -> Result<(Self, Self), Error> {
        let tls = tls_config(policy.extra_roots.as_deref())?;
        Ok((
            Self::build(policy, sockets, tls.clone(), false)?,
            Self::build(policy, sockets, tls, true)?,
        ))
    }

    fn build(
        policy: &Policy,
        sockets: Sockets,
        tls: rustls::ClientConfig,
        flapping: bool,
    ) -> Result<Self, Error> {
        let sockets = if flapping {
            Sockets {
                unsent_limit: sockets
                    .unsent_limit
                    .map(|limit| limit.min(FLAPPING_UNSENT_LIMIT)),
                ..sockets
            }
        } else {
            sockets
        };
        let mut defaults = HeaderMap::new();
        defaults.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tenax/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(token) = &policy.bearer_token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::InvalidToken)?;
            // Kept out of debug output.
            value.set_sensitive(true);
            defaults.insert(AUTHORIZATION, value);
        }
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(Connector::new(policy, sockets));
        let mut pool = Pool::builder(TokioExecutor::new());
        pool.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90));
        if flapping {
            pool.http1_max_buf_size(FLAPPING_STACK_BUFFER)
                .http2_max_send_buf_size(FLAPPING_H2_STACK_BUFFER);
        }
        Ok(Client {
            pool: pool.build(connector),
            defaults,
            stall_timeout: policy.stall_timeout,
        })
    }

    /// A `method` request to `url`.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            url,
            headers: self.defaults.clone(),
            body: None,
            timeout: None,
            invalid: None,
        }
    }

    /// A `POST` to `url`.
    pub(crate) fn post(&self, url: Url) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    /// A `PUT` to `url`.
    pub(crate) fn put(&self, url: Url) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    /// A `PATCH` to `url`.
    pub(crate) fn patch(&self, url: Url) -> RequestBuilder {
        self.request(Method::PATCH, url)
    }

    /// A `DELETE` of `url`.
    pub(crate) fn delete(&self, url: Url) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }
}

/// The rustls configuration reqwest builds: the installed provider (else
/// aws-lc-rs), the platform's verifier plus `extra_roots` (PEM), TLS 1.2 and
/// 1.3. ALPN is set by the connector.
fn tls_config(extra_roots: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = match extra_roots {
        None => rustls_platform_verifier::Verifier::new(provider.clone()),
        Some(pem) => {
            // reqwest parses the bundle first, so a bad one fails the same
            // way for uploads and downloads.
            reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)?;
            let roots = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
        }
    }
    .map_err(Error::Tls)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// hyper-util's TCP connector, then `TCP_NOTSENT_LOWAT` on the new socket
/// (the connector sets `SO_SNDBUF` itself, before connecting).
#[derive(Debug, Clone)]
struct Connector {
    http: HttpConnector,
    unsent_limit: Option<u32>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<TcpStream>, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

impl Connector {
    /// The TCP settings reqwest uses for downloads, plus `sockets`.
    fn new(policy: &Policy, sockets: Sockets) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(policy.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        http.set_send_buffer_size(sockets.send_buffer);
        Connector {
            http,
            unsent_limit: sockets.unsent_limit,
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let unsent_limit = self.unsent_limit;
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(limit) = unsent_limit {
                limit_unsent(io.inner(), limit);
            }
            Ok(io)
        })
    }
}

/// Sets `TCP_NOTSENT_LOWAT` (Linux and Android; elsewhere the kernel's
/// default stays). A socket that refuses it still works, only with the
/// kernel's larger queue, so the upload goes on.
fn limit_unsent(stream: &TcpStream, limit: u32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(limit) {
        tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, limit);
}

/// A request being built, after reqwest's builder (header errors surface
/// when it is sent).
pub(crate) struct RequestBuilder {
    client: Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Body>,
    timeout: Option<Duration>,
    invalid: Option<http::Error>,
}

impl RequestBuilder {
    /// Sets header `name` (replacing any earlier value).
    pub(crate) fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            (Err(e), _) => self.invalid = Some(e.into()),
            (_, Err(e)) => self.invalid = Some(e.into()),
        }
        self
    }

    /// The request body (default: empty).
    pub(crate) fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }

    /// Gives up on the whole exchange (up to the response head) after
    /// `timeout`.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request; resolves with the response head.
    pub(crate) async fn send(self) -> Result<Response, SendError> {
        if let Some(e) = self.invalid {
            return Err(SendError::Invalid(e));
        }
        let uri: Uri = self
            .url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| SendError::Invalid(e.into()))?;
        let mut request = http::Request::builder()
            .method(self.method)
            .uri(uri)
            .body(self.body.unwrap_or_else(empty))
            .map_err(SendError::Invalid)?;
        *request.headers_mut() = self.headers;
        let sending = self.client.pool.request(request);
        let response = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, sending)
                .await
                .map_err(|_| SendError::TimedOut)?,
            None => sending.await,
        }
        .map_err(SendError::Failed)?;
        let (head, body) = response.into_parts();
        Ok(Response {
            status: head.status,
            headers: head.headers,
            url: self.url,
            body,
            stall_timeout: self.client.stall_timeout,
        })
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The request could not be built (a header or the URL).
    #[error("invalid request: {0}")]
    Invalid(#[source] http::Error),
    /// The connection failed or dropped before the response head.
    #[error("{0}")]
    Failed(#[source] hyper_util::client::legacy::Error),
    /// The request's own timeout passed.
    #[error("timed out")]
    TimedOut,
}

/// A response head with its body still to read.
#[derive(Debug)]
pub(crate) struct Response {
    status: StatusCode,
    headers: HeaderMap,
    url: Url,
    body: Incoming,
    stall_timeout: Duration,
}

impl Response {
    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL requested (redirects are never followed).
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The next block of the body (`None` at its end).
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        while let Some(frame) = self.body.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// Up to [`MAX_RESPONSE_BODY`] bytes of the body, within the stall
    /// timeout; empty on any error.
    pub(crate) async fn read_capped(mut self) -> Vec<u8> {
        let stall_timeout = self.stall_timeout;
        let read = async {
            let mut body = Vec::new();
            while let Ok(Some(block)) = self.chunk().await {
                body.extend_from_slice(&block);
                if body.len() >= MAX_RESPONSE_BODY {
                    break;
                }
            }
            body
        };
        tokio::time::timeout(stall_timeout, read)
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use tower::ServiceExt as _;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A TLS server on loopback (h2 and HTTP/1.1 by ALPN) answering every
    /// request with its HTTP version; returns its URL and its certificate.
    async fn tls_server() -> (Url, String) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(|request: http::Request<Incoming>| {
                        let version = format!("{:?}", request.version());
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                version,
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let url = Url::parse(&format!("https://127.0.0.1:{port}/")).expect("URL");
        (url, certified.cert.pem())
    }

    fn sockets() -> Sockets {
        Sockets {
            unsent_limit: Some(16 * 1024),
            send_buffer: None,
        }
    }

    #[tokio::test]
    async fn uploads_speak_h2_over_tls_trusting_the_extra_roots_only() {
        let (url, pem) = tls_server().await;
        let policy = Policy {
            extra_roots: Some(pem.into_bytes()),
            ..Policy::default()
        };
        let client = Client::new(&policy, sockets()).expect("client");
        let mut response = client
            .put(url.clone())
            .body(streamed(futures_util::stream::iter([Ok(
                Bytes::from_static(b"body"),
            )])))
            .timeout(TIMEOUT)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.url(), &url);
        let body = response.chunk().await.expect("body").expect("a block");
        assert_eq!(&body[..], b"HTTP/2.0");
        // Without the extra root the self-signed certificate is refused.
        let untrusting = Client::new(&Policy::default(), sockets()).expect("client");
        let refused = untrusting.put(url).timeout(TIMEOUT).send().await;
        assert!(matches!(refused, Err(SendError::Failed(_))), "{refused:?}");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn upload_sockets_get_the_unsent_limit_and_the_send_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri: Uri = format!("http://{}/", listener.local_addr().expect("address"))
            .parse()
            .expect("URI");
        let options = Sockets {
            unsent_limit: Some(12_345),
            send_buffer: Some(64 * 1024),
        };
        let io = Connector::new(&Policy::default(), options)
            .oneshot(uri.clone())
            .await
            .expect("connect");
        let socket = socket2::SockRef::from(io.inner());
        assert_eq!(socket.tcp_notsent_lowat().expect("lowat"), 12_345);
        // Linux doubles what it is given (for its bookkeeping); autotuning
        // would start at 16 KiB and grow to megabytes.
        assert_eq!(socket.send_buffer_size().expect("sndbuf"), 128 * 1024);
        let io = Connector::new(
            &Policy::default(),
            Sockets {
                unsent_limit: None,
                send_buffer: None,
            },
        )
        .oneshot(uri)
        .await
        .expect("connect");
        let socket = socket2::SockRef::from(io.inner());
        // Unset: the system-wide default applies.
        assert_eq!(socket.tcp_notsent_lowat().expect("lowat"), 0);
    }
}
