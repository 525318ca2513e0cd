//! The request's own `Host` (RFC 9112 §3.2): the server copies it into the
//! absolute URLs it hands out (`Location`), so it is checked as strictly as
//! a forwarded host ([`crate::forwarded::parse_host`]) on every request.

use thiserror::Error;

use crate::forwarded::parse_host;

/// Why a request's host was refused. Every case answers 400 (RFC 9112
/// §3.2: "a server MUST respond with a 400 … to any HTTP/1.1 request
/// message that lacks a Host header field and to any request message that
/// contains more than one Host header field line or a Host header field
/// with an invalid field value").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HostError {
    /// An HTTP/1.1 (or later) request names no host at all.
    #[error("the request has no Host header")]
    Missing,
    /// `Host` appears more than once.
    #[error("the request has more than one Host header")]
    Repeated,
    /// `Host` (or the request target's authority) is not `name[:port]` or
    /// `[v6][:port]`.
    #[error("invalid Host header (expected name[:port] or [v6][:port])")]
    Invalid,
}

/// Checks a request's hosts: `hosts`, the values of its `Host` lines;
/// `authority`, the request target's authority (HTTP/2's `:authority`, or
/// an absolute-form target), which wins when present (RFC 9112 §3.2.2);
/// `required`, whether the version demands a host (not HTTP/1.0).
/// Returns the host, lowercased, if the request names one.
///
/// ```
/// use tenax_protocol::host::{HostError, request_host};
/// assert_eq!(request_host(&[b"Files.Example:80"], None, true), Ok(Some("files.example:80".into())));
/// assert_eq!(request_host(&[b"evil.example/x?y#"], None, true), Err(HostError::Invalid));
/// assert_eq!(request_host(&[b"a", b"b"], None, true), Err(HostError::Repeated));
/// assert_eq!(request_host(&[], None, true), Err(HostError::Missing));
/// assert_eq!(request_host(&[], None, false), Ok(None));
/// ```
pub fn request_host(
    hosts: &[&[u8]],
    authority: Option<&str>,
    required: bool,
) -> Result<Option<String>, HostError> {
    let check = |value: &str| parse_host(value).map_err(|_| HostError::Invalid);
    let host = match hosts {
        [] => None,
        [one] => Some(check(
            std::str::from_utf8(one).map_err(|_| HostError::Invalid)?,
        )?),
        _ => return Err(HostError::Repeated),
    };
    match authority {
        Some(authority) => check(authority).map(Some),
        None if host.is_none() && required => Err(HostError::Missing),
        None => Ok(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts_are_checked() {
        assert_eq!(
            request_host(&[b"[::1]:8080"], None, true),
            Ok(Some("[::1]:8080".into()))
        );
        for bad in [
            &b"a b"[..],
            b"a@b",
            b"",
            b"x:99999",
            b"a/b",
            b"a?b",
            b"a#",
            b"\xffa",
        ] {
            assert_eq!(
                request_host(&[bad], None, true),
                Err(HostError::Invalid),
                "{bad:?}"
            );
        }
        // The authority wins, and must be valid too; so must Host then.
        assert_eq!(
            request_host(&[b"other"], Some("Up.Example"), true),
            Ok(Some("up.example".into()))
        );
        assert_eq!(
            request_host(&[], Some("user@evil"), true),
            Err(HostError::Invalid)
        );
        assert_eq!(
            request_host(&[b"a b"], Some("good"), true),
            Err(HostError::Invalid)
        );
        assert_eq!(
            request_host(&[b"a", b"a"], Some("a"), false),
            Err(HostError::Repeated)
        );
    }

    proptest! {
        #[test]
        fn an_accepted_host_is_a_plain_authority(
            hosts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..3),
            authority in proptest::option::of("\\PC{0,24}"),
            required in any::<bool>(),
        ) {
            let lines: Vec<&[u8]> = hosts.iter().map(Vec::as_slice).collect();
            match request_host(&lines, authority.as_deref(), required) {
                Ok(Some(host)) => {
                    prop_assert!(lines.len() <= 1);
                    prop_assert!(!host.is_empty());
                    prop_assert!(host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)));
                    prop_assert_eq!(host.to_ascii_lowercase(), host);
                }
                Ok(None) => prop_assert!(lines.is_empty() && authority.is_none() && !required),
                Err(HostError::Repeated) => prop_assert!(lines.len() > 1),
                Err(HostError::Missing) => prop_assert!(lines.is_empty() && authority.is_none()),
                Err(HostError::Invalid) => {}
            }
        }
    }
}
