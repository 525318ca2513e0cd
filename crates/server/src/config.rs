//! The front-end's settings, [`ServerConfig`].

use std::sync::Arc;
use std::time::Duration;

use tenax_core::CompletionAnswer;

use crate::auth::Auth;
use crate::conn::interim::InterimResponses;
use crate::conn::origin::TrustForwarded;
use crate::conn::tls::TlsConfig;
use crate::ops::MetricsRender;

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
    /// When the IETF draft's `104 Upload Resumption Supported` is sent
    /// (docs/protocol.md §3.3): by default not through a reverse proxy,
    /// which may take it for the final answer.
    pub interim_responses: InterimResponses,
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
            interim_responses: InterimResponses::Auto,
            max_connections: 4096,
            max_header_size: 64 * 1024,
            min_transfer_rate: Some(MinTransferRate::default()),
        }
    }
}
