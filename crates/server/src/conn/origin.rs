//! Where the client reached us: the base of the absolute URLs the server
//! hands out (`Location`, docs/protocol.md §1.1). From the connection (TLS or
//! not) and the `Host` the client sent; in behind-proxy mode, from the
//! proxy's `Forwarded` / `X-Forwarded-*` headers instead, and only then: a
//! client that could set them would send uploads wherever it likes.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use tenax_protocol::forwarded::{Scheme, public_origin};

use crate::problem::Problem;

/// What the accept loop knows about a request's connection (a request
/// extension on every request).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The address of the other end (the proxy, behind one).
    pub(crate) addr: SocketAddr,
    /// Whether the connection is TLS.
    pub(crate) tls: bool,
}

/// Whose forwarding headers (`Forwarded`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `X-Forwarded-Prefix`) are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TrustForwarded {
    /// Nobody's: the headers are ignored (not behind a proxy).
    #[default]
    Nobody,
    /// Every peer's: every connection comes through the proxy.
    Anyone,
    /// Only connections from these networks (the proxies' addresses).
    Networks(Vec<IpNet>),
}

impl TrustForwarded {
    pub(crate) fn trusts(&self, peer: Option<IpAddr>) -> bool {
        match self {
            TrustForwarded::Nobody => false,
            TrustForwarded::Anyone => true,
            TrustForwarded::Networks(networks) => peer.is_some_and(|ip| {
                // An IPv4 proxy reaching a dual-stack socket shows as ::ffff:a.b.c.d.
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    IpAddr::V4(_) => ip,
                };
                networks.iter().any(|network| network.contains(&ip))
            }),
        }
    }
}

/// The public base URL of a request: `scheme://host` and the proxy's path
/// prefix.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    base: String,
    prefix_len: usize,
}

impl Origin {
    /// The absolute URL of `path` (which starts with `/`).
    /// The base itself: `scheme://host` and the proxy's path prefix.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> Result<HeaderValue, Problem> {
        HeaderValue::from_str(&format!("{}{path}", self.base))
            .map_err(|_| Problem::bad_request("invalid Host header"))
    }

    /// The path prefix the proxy adds (empty when none), without a
    /// trailing `/`.
    pub(crate) fn prefix(&self) -> &str {
        &self.base[self.base.len() - self.prefix_len..]
    }
}

impl<S> FromRequestParts<S> for Origin
where
    TrustForwarded: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let peer = parts.extensions.get::<Peer>().copied();
        let forwarded = if TrustForwarded::from_ref(state).trusts(peer.map(|peer| peer.addr.ip())) {
            let headers = &parts.headers;
            public_origin(
                joined(headers, "forwarded")?.as_deref(),
                joined(headers, "x-forwarded-proto")?.as_deref(),
                joined(headers, "x-forwarded-host")?.as_deref(),
                joined(headers, "x-forwarded-prefix")?.as_deref(),
            )
            .map_err(|error| Problem::bad_request(error.to_string()))?
        } else {
            Default::default()
        };
        let scheme = forwarded
            .scheme
            .unwrap_or(if peer.is_some_and(|peer| peer.tls) {
                Scheme::Https
            } else {
                Scheme::Http
            });
        let host = match forwarded.host {
            Some(host) => host,
            None => parts
                .uri
                .authority()
                .map(|authority| authority.as_str())
                .or_else(|| {
                    parts
                        .headers
                        .get(header::HOST)
                        .and_then(|host| host.to_str().ok())
                })
                .ok_or_else(|| Problem::bad_request("the request names no host"))?
                .to_owned(),
        };
        let prefix = forwarded.prefix.unwrap_or_default();
        Ok(Origin {
            base: format!("{}://{host}{prefix}", scheme.as_str()),
            prefix_len: prefix.len(),
        })
    }
}

/// Every line of a header joined by `, ` (RFC 9110 §5.3), if any.
fn joined(headers: &HeaderMap, name: &str) -> Result<Option<String>, Problem> {
    let mut lines = Vec::new();
    for value in headers.get_all(name) {
        lines.push(
            value
                .to_str()
                .map_err(|_| Problem::bad_request(format!("{name} is not ASCII")))?,
        );
    }
    Ok((!lines.is_empty()).then(|| lines.join(", ")))
}
