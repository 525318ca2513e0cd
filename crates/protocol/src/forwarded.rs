//! The headers a reverse proxy adds to tell the origin what the client
//! asked for: `Forwarded` (RFC 7239) and the de-facto `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `X-Forwarded-Prefix`.
//!
//! Written by hand: the grammar is RFC 9110 tokens and quoted strings, a
//! few dozen lines, and the checks that matter here (one value per
//! parameter, a strict host, a safe prefix) would sit on top of any
//! general-purpose parser anyway.
//!
//! The server only reads these headers in behind-proxy mode: they decide
//! where the absolute URLs it hands out (`Location`) point, so a client
//! must never be able to set them directly.

use std::fmt;

use thiserror::Error;

/// Why forwarding headers were rejected. Every case answers 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ForwardedError {
    /// `Forwarded` does not follow RFC 7239 §4.
    #[error("Forwarded: {0}")]
    Syntax(&'static str),
    /// A parameter appears twice in one element (RFC 7239 §4).
    #[error("Forwarded: parameter {0:?} appears twice in one element")]
    Duplicate(String),
    /// The protocol is neither `http` nor `https`.
    #[error("unsupported forwarded protocol {0:?} (only http and https)")]
    Proto(String),
    /// The host is not `name[:port]` or `[v6][:port]`.
    #[error("invalid forwarded host {0:?}")]
    Host(String),
    /// `X-Forwarded-Prefix` is not an absolute path.
    #[error("invalid X-Forwarded-Prefix {0:?} (an absolute path such as /files)")]
    Prefix(String),
}

/// One element of `Forwarded`: the parameters one proxy added (RFC 7239 §5).
/// Parameter names are matched case-insensitively; values are kept as sent
/// (without quotes). Unknown parameters are checked for syntax, then ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedElement {
    /// `by=`: the interface where the proxy received the request.
    pub by: Option<String>,
    /// `for=`: the client that made the request to the proxy.
    pub for_: Option<String>,
    /// `host=`: the `Host` the proxy received.
    pub host: Option<String>,
    /// `proto=`: the scheme the proxy was reached with.
    pub proto: Option<String>,
}

impl fmt::Display for ForwardedElement {
    /// The element as a header value (quoting where a value is not a token).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs = [
            ("by", &self.by),
            ("for", &self.for_),
            ("host", &self.host),
            ("proto", &self.proto),
        ];
        let mut first = true;
        for (name, value) in pairs {
            let Some(value) = value else { continue };
            if !first {
                f.write_str(";")?;
            }
            first = false;
            write!(f, "{name}=")?;
            if !value.is_empty() && value.bytes().all(is_tchar) {
                f.write_str(value)?;
            } else {
                f.write_str("\"")?;
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")?;
            }
        }
        Ok(())
    }
}

/// Parses a `Forwarded` header value (several header lines joined by
/// commas) into its elements, in order. Empty list elements are skipped
/// (RFC 9110 §5.6.1); whitespace is allowed around `,` and `;`.
pub fn parse_forwarded(value: &str) -> Result<Vec<ForwardedElement>, ForwardedError> {
    let mut elements = Vec::new();
    let mut rest = value.as_bytes();
    let mut element = ForwardedElement::default();
    let mut element_has_pairs = false;
    loop {
        rest = skip_ows(rest);
        match rest.first() {
            None => break,
            Some(b',') => {
                if element_has_pairs {
                    elements.push(std::mem::take(&mut element));
                    element_has_pairs = false;
                }
                rest = &rest[1..];
                continue;
            }
            Some(b';') => {
                rest = &rest[1..];
                continue;
            }
            Some(_) => {}
        }
        let name_len = rest.iter().take_while(|b| is_tchar(**b)).count();
        if name_len == 0 {
            return Err(ForwardedError::Syntax("expected a parameter name"));
        }
        let name = ascii(&rest[..name_len]).to_ascii_lowercase();
        rest = &rest[name_len..];
        if rest.first() != Some(&b'=') {
            return Err(ForwardedError::Syntax("expected = after a parameter name"));
        }
        rest = &rest[1..];
        let (parsed, after) = parse_value(rest)?;
        rest = after;
        let slot = match name.as_str() {
            "by" => Some(&mut element.by),
            "for" => Some(&mut element.for_),
            "host" => Some(&mut element.host),
            "proto" => Some(&mut element.proto),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_some() {
                return Err(ForwardedError::Duplicate(name));
            }
            *slot = Some(parsed);
        }
        element_has_pairs = true;
        let after = skip_ows(rest);
        match after.first() {
            None | Some(b',' | b';') => rest = after,
            Some(_) => {
                return Err(ForwardedError::Syntax("expected ; or , between parameters"));
            }
        }
    }
    if element_has_pairs {
        elements.push(element);
    }
    Ok(elements)
}

/// A token or a quoted string (RFC 9110 §5.6.2, §5.6.4), and what follows.
fn parse_value(input: &[u8]) -> Result<(String, &[u8]), ForwardedError> {
    if input.first() == Some(&b'"') {
        let mut value = Vec::new();
        let mut index = 1;
        loop {
            match input.get(index) {
                None => return Err(ForwardedError::Syntax("unterminated quoted string")),
                Some(b'"') => return Ok((ascii(&value), &input[index + 1..])),
                Some(b'\\') => match input.get(index + 1) {
                    Some(&c) if c == b'\t' || (b' '..=b'~').contains(&c) => {
                        value.push(c);
                        index += 2;
                    }
                    _ => return Err(ForwardedError::Syntax("invalid escape in a quoted string")),
                },
                Some(&c) if c == b'\t' || (b' '..=b'~').contains(&c) => {
                    value.push(c);
                    index += 1;
                }
                Some(_) => {
                    return Err(ForwardedError::Syntax(
                        "invalid character in a quoted string",
                    ));
                }
            }
        }
    }
    let len = input.iter().take_while(|b| is_tchar(**b)).count();
    if len == 0 {
        return Err(ForwardedError::Syntax("expected a value after ="));
    }
    Ok((ascii(&input[..len]), &input[len..]))
}

/// Text made of bytes already checked to be ASCII.
fn ascii(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn skip_ows(mut input: &[u8]) -> &[u8] {
    while let Some(b' ' | b'\t') = input.first() {
        input = &input[1..];
    }
    input
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The scheme of the URLs the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// `http` or `https`, case-insensitively; anything else is refused
    /// (a `Location` on another scheme would be useless to an HTTP client).
    pub fn parse(value: &str) -> Result<Scheme, ForwardedError> {
        if value.eq_ignore_ascii_case("http") {
            Ok(Scheme::Http)
        } else if value.eq_ignore_ascii_case("https") {
            Ok(Scheme::Https)
        } else {
            Err(ForwardedError::Proto(value.to_owned()))
        }
    }

    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Checks a forwarded host: a DNS name or IPv4 address (letters, digits,
/// `-`, `.`, `_`) or a bracketed IPv6 literal, with an optional port.
/// Stricter than RFC 3986's `reg-name` on purpose: the value is copied into
/// `Location`, and sub-delimiters or percent signs there only serve tricks.
/// Returns the host lowercased.
pub fn parse_host(value: &str) -> Result<String, ForwardedError> {
    let bad = || ForwardedError::Host(value.to_owned());
    let (name, port) = if let Some(literal) = value.strip_prefix('[') {
        let (inside, after) = literal.split_once(']').ok_or_else(bad)?;
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        (&value[..inside.len() + 2], port)
    } else {
        let (name, port) = match value.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        };
        if name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(bad());
        }
        (name, port)
    };
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |port| port > 65_535))
    {
        return Err(bad());
    }
    let mut host = name.to_ascii_lowercase();
    if let Some(port) = port {
        host.push(':');
        host.push_str(port);
    }
    Ok(host)
}

/// Checks `X-Forwarded-Prefix`: empty or an absolute path of RFC 3986
/// `pchar`s, without `.` or `..` segments, query or fragment. Returns it
/// without its trailing `/` (so `/` is the empty prefix).
pub fn parse_prefix(value: &str) -> Result<String, ForwardedError> {
    let bad = || ForwardedError::Prefix(value.to_owned());
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return if value.is_empty() || value.starts_with('/') {
            Ok(String::new())
        } else {
            Err(bad())
        };
    }
    let path = trimmed.strip_prefix('/').ok_or_else(bad)?;
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad());
        }
        let bytes = segment.as_bytes();
        let mut index = 0;
        while index < bytes.len() {
            let b = bytes[index];
            if b == b'%' {
                let hex = bytes.get(index + 1..index + 3).ok_or_else(bad)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                index += 3;
                continue;
            }
            if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)) {
                return Err(bad());
            }
            index += 1;
        }
    }
    Ok(trimmed.to_owned())
}

/// Where the client reached the server, as the proxy reports it. `None`
/// where the headers say nothing (the connection's own value applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicOrigin {
    /// The scheme the client used.
    pub scheme: Option<Scheme>,
    /// The host (and port) the client asked for, lowercased.
    pub host: Option<String>,
    /// The path under which the proxy mounts the server; never ends in `/`.
    pub prefix: Option<String>,
}

/// The public origin from the forwarding headers (each argument is the
/// header's lines joined by `, `, or `None` when absent).
///
/// Per field, `Forwarded` wins over its `X-Forwarded-*` counterpart. Of a
/// list (several proxies), the **last** element is used: it is the one the
/// proxy that talks to us wrote, so a client cannot forge it through a
/// proxy that appends to the headers instead of replacing them; a proxy
/// that replaces them writes a single element anyway.
pub fn public_origin(
    forwarded: Option<&str>,
    x_proto: Option<&str>,
    x_host: Option<&str>,
    x_prefix: Option<&str>,
) -> Result<PublicOrigin, ForwardedError> {
    let element = match forwarded {
        Some(value) => parse_forwarded(value)?.pop().unwrap_or_default(),
        None => ForwardedElement::default(),
    };
    let last = |value: Option<&str>| {
        value
            .and_then(|value| value.rsplit(',').map(str::trim).find(|v| !v.is_empty()))
            .map(str::to_owned)
    };
    let scheme = element
        .proto
        .or_else(|| last(x_proto))
        .map(|proto| Scheme::parse(&proto))
        .transpose()?;
    let host = element
        .host
        .or_else(|| last(x_host))
        .map(|host| parse_host(&host))
        .transpose()?;
    let prefix = x_prefix
        .map(|prefix| parse_prefix(prefix.rsplit(',').next().unwrap_or("").trim()))
        .transpose()?;
    Ok(PublicOrigin {
        scheme,
        host,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn element(for_: Option<&str>, host: Option<&str>, proto: Option<&str>) -> ForwardedElement {
        ForwardedElement {
            by: None,
            for_: for_.map(str::to_owned),
            host: host.map(str::to_owned),
            proto: proto.map(str::to_owned),
        }
    }

    #[test]
    fn rfc_7239_examples() {
        assert_eq!(
            parse_forwarded(r#"for="_gazonk""#),
            Ok(vec![element(Some("_gazonk"), None, None)])
        );
        assert_eq!(
            parse_forwarded(r#"For="[2001:db8:cafe::17]:4711""#),
            Ok(vec![element(Some("[2001:db8:cafe::17]:4711"), None, None)])
        );
        assert_eq!(
            parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Ok(vec![ForwardedElement {
                by: Some("203.0.113.43".into()),
                ..element(Some("192.0.2.60"), None, Some("http"))
            }])
        );
        assert_eq!(
            parse_forwarded("for=192.0.2.43, for=198.51.100.17"),
            Ok(vec![
                element(Some("192.0.2.43"), None, None),
                element(Some("198.51.100.17"), None, None)
            ])
        );
    }

    #[test]
    fn lenient_where_proxies_are() {
        assert_eq!(
            parse_forwarded("for=a; proto=https ;host=x.example , ,"),
            Ok(vec![element(Some("a"), Some("x.example"), Some("https"))])
        );
        assert_eq!(parse_forwarded(""), Ok(vec![]));
        assert_eq!(
            parse_forwarded("secret=\"x\";proto=https"),
            Ok(vec![element(None, None, Some("https"))])
        );
        // An element of unknown parameters still counts as the last one.
        assert_eq!(
            parse_forwarded("host=a.example, secret=x"),
            Ok(vec![
                element(None, Some("a.example"), None),
                ForwardedElement::default()
            ])
        );
        let origin = public_origin(
            Some("host=a.example, secret=x"),
            None,
            Some("b.example"),
            None,
        );
        assert_eq!(
            origin.map(|origin| origin.host),
            Ok(Some("b.example".into()))
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "for",
            "for=",
            "=x",
            "for=a b",
            "for=\"a",
            "for=\"a\\\u{1}\"",
            "for=a;for=b",
            "PROTO=http;proto=https",
            "host=é",
        ] {
            assert!(parse_forwarded(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("Files.Example:8443"),
            Ok("files.example:8443".into())
        );
        assert_eq!(parse_host("[::1]:80"), Ok("[::1]:80".into()));
        assert_eq!(parse_host("[::1]"), Ok("[::1]".into()));
        for bad in [
            "", ":80", "a:", "a:99999", "a:1:2", "a/b", "a@b", "[]", "[::1", "[::1]x", "[g::]",
            "a b", "a%20", "a,b",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("/files/"), Ok("/files".into()));
        assert_eq!(parse_prefix("/"), Ok(String::new()));
        assert_eq!(parse_prefix(""), Ok(String::new()));
        assert_eq!(parse_prefix("/a%20b/c"), Ok("/a%20b/c".into()));
        for bad in [
            "files", "/a//b", "/a/../b", "/./a", "/a?x", "/a#x", "/a%2", "/a b",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origin_prefers_forwarded_and_the_last_element() {
        let origin = public_origin(
            Some("proto=http;host=evil.example, proto=https;host=files.example"),
            Some("http"),
            Some("other.example"),
            Some("/up/"),
        )
        .expect("valid");
        assert_eq!(
            origin,
            PublicOrigin {
                scheme: Some(Scheme::Https),
                host: Some("files.example".into()),
                prefix: Some("/up".into()),
            }
        );
        let origin = public_origin(
            Some("for=1.2.3.4"),
            Some("http, HTTPS"),
            Some("evil.example,files.example:8443"),
            None,
        )
        .expect("valid");
        assert_eq!(origin.scheme, Some(Scheme::Https));
        assert_eq!(origin.host.as_deref(), Some("files.example:8443"));
        assert_eq!(origin.prefix, None);
        assert_eq!(
            public_origin(None, None, None, None),
            Ok(PublicOrigin::default())
        );
        assert!(public_origin(Some("proto=ftp"), None, None, None).is_err());
        assert!(public_origin(None, None, Some("a/b"), None).is_err());
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9._:-]{1,12}", "[ -~\t]{0,12}"]
    }

    proptest! {
        #[test]
        fn elements_round_trip(
            elements in proptest::collection::vec(
                (
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                ),
                0..4,
            )
        ) {
            let elements: Vec<ForwardedElement> = elements
                .into_iter()
                .map(|(by, for_, host, proto)| ForwardedElement { by, for_, host, proto })
                .filter(|e| *e != ForwardedElement::default())
                .collect();
            let header = elements.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            prop_assert_eq!(parse_forwarded(&header), Ok(elements));
        }

        #[test]
        fn parsers_never_panic_and_accept_only_safe_text(text in "\\PC*") {
            let _ = parse_forwarded(&text);
            if let Ok(host) = parse_host(&text) {
                prop_assert!(host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)));
            }
            if let Ok(prefix) = parse_prefix(&text) {
                prop_assert!(prefix.is_empty() || (prefix.starts_with('/') && !prefix.ends_with('/')));
                prop_assert!(!prefix.contains(['?', '#', ' ', '"', '\\']));
            }
            let _ = public_origin(Some(&text), Some(&text), Some(&text), Some(&text));
        }
    }
}
