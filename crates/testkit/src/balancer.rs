//! A round-robin HTTP/1.1 reverse proxy on loopback, standing for the load
//! balancer in front of several stateless nodes.
//!
//! Each *request* (not each connection) goes to the next upstream in turn,
//! as nginx's `upstream` round-robin does with keep-alive clients. Bodies
//! stream both ways without being buffered. A request whose upstream
//! refuses the connection goes to the next one (nginx's
//! `proxy_next_upstream error`: only a failed connect is retried, since a
//! body already sent cannot be replayed); when every upstream refuses, the
//! answer is 502. When the client's connection dies, the upstream exchange
//! is dropped with it, so a cut link propagates to the node as a real one
//! would.
//!
//! Hand-written on hyper rather than driving nginx: the tests need the
//! per-upstream counters and upstream replacement in-process, and nginx is
//! not in the image.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long a connect to one upstream may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The body the balancer answers with: the upstream's, streamed, or its own
/// 502.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Shared between the accept loop and the handle.
#[derive(Debug)]
struct Upstreams {
    addrs: Mutex<Vec<SocketAddr>>,
    hits: Vec<AtomicU64>,
    next: AtomicUsize,
}

impl Upstreams {
    fn addr(&self, index: usize) -> SocketAddr {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner())[index]
    }
}

/// A running balancer; stops (with every connection through it) when
/// dropped.
#[derive(Debug)]
pub struct Balancer {
    addr: SocketAddr,
    upstreams: Arc<Upstreams>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Starts a balancer on `127.0.0.1:0` in front of `upstreams` (at least
    /// one). Must be called within a tokio runtime.
    pub async fn start(upstreams: &[SocketAddr]) -> io::Result<Self> {
        if upstreams.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a balancer needs at least one upstream",
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Upstreams {
            addrs: Mutex::new(upstreams.to_vec()),
            hits: upstreams.iter().map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Balancer {
            addr,
            upstreams: shared,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests sent to each upstream so far (in the order given to
    /// [`Balancer::start`]); a request counts once its upstream accepted
    /// the connection.
    pub fn hits(&self) -> Vec<u64> {
        self.upstreams
            .hits
            .iter()
            .map(|hits| hits.load(Ordering::SeqCst))
            .collect()
    }

    /// Points upstream `index` at a new address (a node restarted on
    /// another port). Requests already under way keep their connection.
    /// Panics when `index` is out of range.
    pub fn set_upstream(&self, index: usize, addr: SocketAddr) {
        self.upstreams
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())[index] = addr;
    }

    /// The upstreams' current addresses.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstreams: Arc<Upstreams>) {
    // Connection tasks live in the set, so aborting the loop drops them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let upstreams = Arc::clone(&upstreams);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let upstreams = Arc::clone(&upstreams);
                        async move { Ok::<_, Infallible>(forward(&upstreams, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Sends `request` to the next upstream that accepts a connection, and
/// returns its response (streamed) or a 502.
async fn forward(upstreams: &Upstreams, request: Request<Incoming>) -> Response<ProxyBody> {
    let count = upstreams.hits.len();
    let first = upstreams.next.fetch_add(1, Ordering::SeqCst) % count;
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // hyper's server side already answered `Expect: 100-continue` (when the
    // body is first read); the upstream must not wait for its own.
    parts.headers.remove(header::EXPECT);
    parts.version = Version::HTTP_11;
    if let Some(path) = parts.uri.path_and_query() {
        parts.uri = path.as_str().parse().unwrap_or_default();
    }
    let mut errors = Vec::new();
    for step in 0..count {
        let index = (first + step) % count;
        let addr = upstreams.addr(index);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                errors.push(format!("{addr}: {error}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("{addr}: connect timed out"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(error) => {
                    errors.push(format!("{addr}: {error}"));
                    continue;
                }
            };
        upstreams.hits[index].fetch_add(1, Ordering::SeqCst);
        // The upstream connection lives as long as this exchange: dropped
        // with the request (the client went away before the answer) or with
        // the response body (the client went away during it, or it ended).
        let guard = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let request = Request::from_parts(parts, body);
        return match sender.send_request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Guarded {
                    inner: body,
                    _guard: guard,
                };
                Response::from_parts(parts, body.boxed())
            }
            Err(error) => bad_gateway(&format!("{addr}: {error}")),
        };
    }
    bad_gateway(&errors.join("; "))
}

fn bad_gateway(detail: &str) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!(
            "balancer: no upstream answered: {detail}\n"
        )))
        .map_err(|never| match never {})
        .boxed(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and the
/// fields it names, plus the classic list. hyper frames each hop's body
/// itself (`Content-Length` when known, else chunked).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Aborts its task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An upstream response body that keeps its connection alive.
#[derive(Debug)]
struct Guarded {
    inner: Incoming,
    _guard: AbortOnDrop,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::mpsc;

    const LIMIT: Duration = Duration::from_secs(20);

    /// What a test upstream saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// Body bytes received so far, over every request.
        bytes: AtomicU64,
        /// Requests whose body ended early (the connection died).
        broken: AtomicU64,
        /// Requests whose body arrived whole.
        whole: AtomicU64,
        /// The last request's `Host`, and whether it had `Connection` or
        /// `X-Forwarded-For`.
        last_host: Mutex<Option<String>>,
        hop_headers: AtomicBool,
    }

    /// A hyper upstream that reads each request body (counting its bytes)
    /// and answers `tag` (or, for `GET /stream`, a body fed by `feed`).
    async fn upstream(
        tag: &'static str,
        feed: Option<Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>>,
    ) -> (SocketAddr, Arc<Seen>, JoinHandle<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, feed) = (Arc::clone(&shared), feed.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (seen, feed) = (Arc::clone(&seen), feed.clone());
                        async move {
                            let headers = request.headers();
                            *seen.last_host.lock().expect("lock") = headers
                                .get(header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_owned);
                            if headers.contains_key(header::CONNECTION)
                                || headers.contains_key("x-forwarded-for")
                                || headers.contains_key("forwarded")
                                || headers.contains_key("x-hop")
                            {
                                seen.hop_headers.store(true, Ordering::SeqCst);
                            }
                            let streamed = request.uri().path() == "/stream";
                            let mut body = request.into_body();
                            let mut ok = true;
                            while let Some(frame) = body.frame().await {
                                match frame {
                                    Ok(frame) => {
                                        if let Some(data) = frame.data_ref() {
                                            seen.bytes
                                                .fetch_add(data.len() as u64, Ordering::SeqCst);
                                        }
                                    }
                                    Err(_) => {
                                        ok = false;
                                        break;
                                    }
                                }
                            }
                            let counter = if ok { &seen.whole } else { &seen.broken };
                            counter.fetch_add(1, Ordering::SeqCst);
                            let feed = feed
                                .filter(|_| streamed)
                                .and_then(|feed| feed.lock().expect("lock").take());
                            let body: ProxyBody = match (streamed, feed) {
                                (true, Some(feed)) => ChannelBody(feed).boxed(),
                                _ => Full::new(Bytes::from(tag))
                                    .map_err(|never| match never {})
                                    .boxed(),
                            };
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen, task)
    }

    /// A response body fed from a channel, chunk by chunk.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = hyper::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
        }
    }

    /// An address nothing listens on.
    async fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        listener.local_addr().expect("addr")
    }

    /// A keep-alive client connection to `addr`.
    async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<ProxyBody> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        sender
    }

    fn empty() -> ProxyBody {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    }

    async fn get_text(
        sender: &mut hyper::client::conn::http1::SendRequest<ProxyBody>,
        host: &str,
    ) -> (StatusCode, String) {
        sender.ready().await.expect("ready");
        let request = Request::get("/")
            .header(header::HOST, host)
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "1")
            .body(empty())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn requests_go_round_robin_even_on_one_connection() {
        tokio::time::timeout(LIMIT, async {
            let (a, seen_a, _ta) = upstream("a", None).await;
            let (b, _, _tb) = upstream("b", None).await;
            let (c, _, _tc) = upstream("c", None).await;
            let balancer = Balancer::start(&[a, b, c]).await.expect("start");
            let mut sender = connect(balancer.addr()).await;
            let mut tags = String::new();
            for _ in 0..7 {
                let (status, tag) = get_text(&mut sender, "files.example").await;
                assert_eq!(status, StatusCode::OK);
                tags.push_str(&tag);
            }
            assert_eq!(tags, "abcabca");
            assert_eq!(balancer.hits(), vec![3, 2, 2]);
            assert_eq!(
                seen_a.last_host.lock().expect("lock").as_deref(),
                Some("files.example")
            );
            assert!(
                !seen_a.hop_headers.load(Ordering::SeqCst),
                "a hop-by-hop or forwarding header reached the upstream"
            );
        })
        .await
        .expect("timed out");
    }

    #[tokio::test]
    async fn a_refused_upstream_is_skipped_and_all_refused_is_502() {
        tokio::time::timeout(LIMIT, async {
            let (a, _, _ta) = upstream("a", None).await;
            let dead = dead_addr().await;
            let (c, _, _tc) = upstream("c", None).await;
            let balancer = Balancer::start(&[a, dead, c]).await.expect("start");
            let mut sender = connect(balancer.addr()).await;
            let mut tags = String::new();
            for _ in 0..4 {
                let (status, tag) = get_text(&mut sender, "h").await;
                assert_eq!(status, StatusCode::OK);
                tags.push_str(&tag);
            }
            // a, (dead →) c, c, a.
            assert_eq!(tags, "acca");
            assert_eq!(balancer.hits(), vec![2, 0, 2]);

            // The node comes back on another port.
            let (b, _, _tb) = upstream("b", None).await;
            balancer.set_upstream(1, b);
            let (_, tag) = get_text(&mut sender, "h").await;
            assert_eq!(tag, "b");

            let everyone_dead = Balancer::start(&[dead, dead_addr().await])
                .await
                .expect("start");
            let mut sender = connect(everyone_dead.addr()).await;
            let (status, _) = get_text(&mut sender, "h").await;
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            assert_eq!(everyone_dead.hits(), vec![0, 0]);
        })
        .await
        .expect("timed out");
    }

    /// The upstream sees the first MiB of a request body before the client
    /// sends the rest, and the client reads the first MiB of a response
    /// before the upstream produces the rest: nothing waits for a whole body.
    #[tokio::test]
    async fn bodies_stream_both_ways() {
        tokio::time::timeout(LIMIT, async {
            let (feed_tx, feed_rx) = mpsc::channel::<Bytes>(4);
            let feed = Arc::new(Mutex::new(Some(feed_rx)));
            let (a, seen, _ta) = upstream("a", Some(feed)).await;
            let balancer = Balancer::start(&[a]).await.expect("start");
            const MIB: usize = 1 << 20;
            let total = 64 * MIB;

            let mut stream = TcpStream::connect(balancer.addr()).await.expect("connect");
            stream
                .write_all(
                    format!("PUT /up HTTP/1.1\r\nhost: h\r\ncontent-length: {total}\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("head");
            let chunk = vec![7u8; MIB];
            stream.write_all(&chunk).await.expect("first MiB");
            wait_until("the first MiB reaches the upstream", || {
                seen.bytes.load(Ordering::SeqCst) >= MIB as u64
            })
            .await;
            for _ in 1..64 {
                stream.write_all(&chunk).await.expect("more");
            }
            let mut answer = vec![0u8; 4096];
            let read = stream.read(&mut answer).await.expect("answer");
            let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert_eq!(seen.bytes.load(Ordering::SeqCst), total as u64);
            assert_eq!(seen.whole.load(Ordering::SeqCst), 1);

            // The response: one MiB, then (only once the client has it) the rest.
            let mut sender = connect(balancer.addr()).await;
            let request = Request::get("/stream")
                .header(header::HOST, "h")
                .body(empty())
                .expect("request");
            feed_tx
                .send(Bytes::from(vec![1u8; MIB]))
                .await
                .expect("feed");
            let response = sender.send_request(request).await.expect("response");
            let mut body = response.into_body();
            let mut received = 0;
            while received < MIB {
                let frame = body.frame().await.expect("a frame").expect("data");
                received += frame.data_ref().map_or(0, Bytes::len);
            }
            assert_eq!(received, MIB);
            for _ in 0..3 {
                feed_tx
                    .send(Bytes::from(vec![2u8; MIB]))
                    .await
                    .expect("feed");
            }
            drop(feed_tx);
            let rest = body.collect().await.expect("rest").to_bytes();
            assert_eq!(received + rest.len(), 4 * MIB);
        })
        .await
        .expect("timed out");
    }

    /// A client that dies mid-body: the upstream's request body breaks too
    /// (it does not wait for bytes that will never come).
    #[tokio::test]
    async fn a_client_cut_reaches_the_upstream() {
        tokio::time::timeout(LIMIT, async {
            let (a, seen, _ta) = upstream("a", None).await;
            let balancer = Balancer::start(&[a]).await.expect("start");
            let mut stream = TcpStream::connect(balancer.addr()).await.expect("connect");
            stream
                .write_all(b"PUT /up HTTP/1.1\r\nhost: h\r\ncontent-length: 10000000\r\n\r\n")
                .await
                .expect("head");
            stream.write_all(&[3u8; 100_000]).await.expect("part");
            wait_until("the bytes reach the upstream", || {
                seen.bytes.load(Ordering::SeqCst) == 100_000
            })
            .await;
            drop(stream);
            wait_until("the upstream sees the cut", || {
                seen.broken.load(Ordering::SeqCst) == 1
            })
            .await;
            assert_eq!(seen.whole.load(Ordering::SeqCst), 0);
        })
        .await
        .expect("timed out");
    }
}
