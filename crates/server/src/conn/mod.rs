//! Connection plumbing, below the router: the accept loop
//! ([`accept`]), TLS ([`tls`]), interim 1xx answers ([`interim`]), the
//! public origin of a request ([`origin`]) and the check of its `Host`
//! ([`host`]).

pub(crate) mod accept;
pub(crate) mod host;
pub(crate) mod interim;
pub(crate) mod origin;
pub(crate) mod tls;
