//! Connection plumbing, below the router: the accept loop
//! ([`accept`]), TLS ([`tls`]), interim 1xx answers ([`interim`]) and the
//! public origin of a request ([`origin`]).

pub(crate) mod accept;
pub(crate) mod interim;
pub(crate) mod origin;
pub(crate) mod tls;
