//! 1xx interim responses on HTTP/1.1, which hyper (1.12) cannot send.
//!
//! The IETF resumable-upload draft answers a creation with `104 Upload
//! Resumption Supported` (carrying `Location`) before the final response, so
//! a client whose body upload breaks still learns where to resume. hyper has
//! no public API for a 1xx other than its own `100 Continue` (hyper issue
//! #2426; PR #3815 is unmerged), so this module writes them underneath it:
//! [`InterimIo`] wraps the connection's socket and slips queued 1xx heads
//! onto the wire only at moments when hyper's own output is provably
//! between messages:
//!
//! * hyper hands its bytes to the socket and then flushes; once a flush
//!   completed and before hyper's next write, nothing of hyper's is half
//!   written, so a 1xx head there is a message of its own;
//! * the request's [`Interim`] handle is closed, and its unsent heads are
//!   dropped, the moment the handler's response is ready, before hyper
//!   encodes that response, so no 1xx can land inside it;
//! * hyper reads a pipelined next request only after the previous response
//!   is encoded, so a later request's 1xx cannot land in an earlier answer.
//!
//! Whether a request gets a handle at all is [`InterimResponses`]: a
//! reverse proxy between us and the client may take a 1xx other than 100
//! for the final answer (nginx before 1.29 does, and stops forwarding the
//! body), so by default a request that came through one gets none.
//!
//! HTTP/2 gets no handle (raw bytes would break its framing) and neither
//! does HTTP/1.0 (which must not receive 1xx). Clients there use the draft's
//! other path: an empty `Upload-Complete: ?0` creation, then appends.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::http::HeaderMap;
use bytes::{Buf as _, Bytes};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::origin::TrustForwarded;

/// When interim responses (the draft's `104 Upload Resumption
/// Supported`) are sent on HTTP/1.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InterimResponses {
    /// Only to requests that did not come through a reverse proxy: none
    /// when the request carries `Forwarded`, `X-Forwarded-*` or `Via`, when
    /// every peer is a proxy (behind-proxy mode without a list of proxies)
    /// or when the peer is one of the listed proxies.
    #[default]
    Auto,
    /// Always, also through proxies (for a proxy known to pass 1xx on).
    Always,
    /// Never (clients learn the upload's URL from the final response, or
    /// create with an empty body first).
    Never,
}

impl InterimResponses {
    /// Whether a request with these headers, from this peer, may be sent
    /// interim responses.
    pub(crate) fn allows(
        self,
        trust: &TrustForwarded,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> bool {
        match self {
            InterimResponses::Always => true,
            InterimResponses::Never => false,
            InterimResponses::Auto => !came_through_proxy(trust, peer, headers),
        }
    }
}

/// Whether a request shows signs of a reverse proxy between us and the
/// client (see [`InterimResponses::Auto`]).
fn came_through_proxy(trust: &TrustForwarded, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
    let proxy_peer = match trust {
        TrustForwarded::Nobody => false,
        TrustForwarded::Anyone => true,
        TrustForwarded::Networks(_) => trust.trusts(peer),
    };
    proxy_peer
        || headers.contains_key("forwarded")
        || headers.contains_key("via")
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("x-forwarded-"))
}

/// What a connection's socket wrapper and its requests share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    /// The connection task, woken when a head is queued.
    waker: AtomicWaker,
    next_request: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Heads waiting to be written, with the request they belong to.
    heads: VecDeque<(u64, Bytes)>,
    /// Requests whose final response is on its way: their heads go.
    closed: Vec<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request's way to send interim responses. Present (as a request
/// extension) only on HTTP/1.1 connections.
#[derive(Debug, Clone)]
pub(crate) struct Interim {
    shared: Arc<Shared>,
    request: u64,
}

impl Interim {
    /// A handle for the next request on the connection; pair it with a
    /// [`CloseOnDrop`] held until the response is ready.
    pub(crate) fn open(shared: &Arc<Shared>) -> (Interim, CloseOnDrop) {
        let request = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let interim = Interim {
            shared: Arc::clone(shared),
            request,
        };
        (interim.clone(), CloseOnDrop(interim))
    }

    /// Queues an interim response; it is dropped if the final response is
    /// ready before the connection could write it.
    pub(crate) fn send(&self, status: u16, reason: &str, headers: &HeaderMap) {
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        {
            let mut queue = self.shared.lock();
            if queue.closed.contains(&self.request) {
                return;
            }
            queue.heads.push_back((self.request, Bytes::from(head)));
        }
        self.shared.waker.wake();
    }
}

/// Closes a request's [`Interim`] handle when dropped: unsent heads are
/// discarded and later sends ignored.
#[derive(Debug)]
pub(crate) struct CloseOnDrop(Interim);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let mut queue = self.0.shared.lock();
        let request = self.0.request;
        queue.heads.retain(|(owner, _)| *owner != request);
        queue.closed.push(request);
        // Only the most recent requests can still try to send.
        if queue.closed.len() > 64 {
            queue.closed.remove(0);
        }
    }
}

/// The socket of one connection, with 1xx heads slipped in between hyper's
/// messages.
#[derive(Debug)]
pub(crate) struct InterimIo<T> {
    inner: T,
    shared: Arc<Shared>,
    /// The head being written (a socket may take part of it).
    current: Option<Bytes>,
    /// hyper wrote since the last completed flush.
    hyper_dirty: bool,
}

impl<T> InterimIo<T> {
    pub(crate) fn new(inner: T, shared: Arc<Shared>) -> Self {
        InterimIo {
            inner,
            shared,
            current: None,
            hyper_dirty: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> InterimIo<T> {
    /// Writes queued heads while hyper is between messages. Ready once
    /// nothing is left to write.
    fn poll_heads(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.hyper_dirty {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.current.is_none() {
                self.current = self.shared.lock().heads.pop_front().map(|(_, head)| head);
            }
            let Some(head) = self.current.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, head))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            head.advance(written);
            if head.is_empty() {
                self.current = None;
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for InterimIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.shared.waker.register(cx.waker());
        // While hyper reads a body it may not write for a long time: send
        // what is queued now. A socket that cannot take it yet is retried on
        // the next wake-up; reading goes on meanwhile.
        if let Poll::Ready(Err(error)) = this.poll_heads(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for InterimIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_heads(cx))?;
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.hyper_dirty |= written > 0;
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_heads(cx))?;
        let written = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.hyper_dirty |= written > 0;
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.shared.waker.register(cx.waker());
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        // hyper only flushes once its buffer is drained: it is between writes.
        this.hyper_dirty = false;
        std::task::ready!(this.poll_heads(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn auto_sends_only_to_requests_that_skipped_proxies() {
        let local: Option<IpAddr> = "127.0.0.1".parse().ok();
        let elsewhere: Option<IpAddr> = "192.0.2.7".parse().ok();
        let listed = TrustForwarded::Networks(vec!["127.0.0.0/8".parse().expect("network")]);
        let auto = InterimResponses::Auto;
        assert!(auto.allows(&TrustForwarded::Nobody, local, &headers(&[])));
        assert!(auto.allows(
            &TrustForwarded::Nobody,
            local,
            &headers(&[("x-forwarded", "not a proxy header")])
        ));
        for sign in [
            ("forwarded", "for=192.0.2.1"),
            ("via", "1.1 proxy"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-prefix", "/p"),
            ("x-forwarded-port", "443"),
        ] {
            assert!(
                !auto.allows(&TrustForwarded::Nobody, local, &headers(&[sign])),
                "{sign:?}"
            );
            assert!(InterimResponses::Always.allows(
                &TrustForwarded::Nobody,
                local,
                &headers(&[sign])
            ));
        }
        assert!(!auto.allows(&TrustForwarded::Anyone, local, &headers(&[])));
        assert!(!auto.allows(&listed, local, &headers(&[])));
        assert!(auto.allows(&listed, elsewhere, &headers(&[])));
        assert!(!auto.allows(&listed, None, &headers(&[("via", "1.1 p")])));
        assert!(InterimResponses::Always.allows(&TrustForwarded::Anyone, local, &headers(&[])));
        assert!(!InterimResponses::Never.allows(&TrustForwarded::Nobody, local, &headers(&[])));
    }
}
