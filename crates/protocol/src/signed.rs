//! Signed URLs: a capability carried in the query string, so that a client
//! without a token (a browser handed a link, a device with no secret store)
//! can do exactly one thing until a given time.
//!
//! ```text
//! ?ns=team-a&scope=upload:0123…&exp=1767225600&sig=BASE64URL(HMAC-SHA256(key, message))
//! message = "tenax-signed-url-v1\n" ns "\n" scope "\n" exp
//! ```
//!
//! The signature covers the namespace, the scope and the expiry; the scope
//! names the resource, so the path needs no signing: a scope that does not
//! match the request's resource is refused by the server.
//!
//! Scopes: `create` (new uploads at `/uploads`), `name:NAME` (the seed
//! dialect's by-name form, `/api/upload?file=NAME`, for that one name),
//! `upload:ID` (one upload) and `file:NAME` (reading one published file).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use thiserror::Error;

use crate::name::{FileName, NameError, Namespace, UploadId};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The query parameters of a signed URL.
pub const PARAMS: [&str; 4] = ["ns", "scope", "exp", "sig"];

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignedUrlError {
    /// A parameter is missing, repeated or malformed.
    #[error("the signed URL is malformed")]
    Malformed,
    /// The signature does not match: wrong key or altered parameters.
    #[error("the signature of the URL does not match")]
    BadSignature,
    /// The URL's time is up.
    #[error("the signed URL has expired")]
    Expired,
}

/// What a signed URL allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Creating new uploads in the namespace (`POST /uploads`); never a
    /// request on an upload or a name that already exists.
    Create,
    /// The seed dialect's by-name form for this one name
    /// (`/api/upload?file=NAME`): creating, continuing, querying or
    /// cancelling the upload of that name.
    Name(FileName),
    /// Every request on one upload.
    Upload(UploadId),
    /// Reading one published file.
    File(FileName),
}

impl Scope {
    /// Parses `create`, `name:NAME`, `upload:ID` or `file:NAME`.
    pub fn parse(text: &str) -> Result<Self, SignedUrlError> {
        match text.split_once(':') {
            None if text == "create" => Ok(Scope::Create),
            Some(("upload", id)) => UploadId::parse(id)
                .map(Scope::Upload)
                .map_err(|_| SignedUrlError::Malformed),
            Some(("file", name)) => FileName::new(name)
                .map(Scope::File)
                .map_err(|_| SignedUrlError::Malformed),
            Some(("name", name)) => FileName::new(name)
                .map(Scope::Name)
                .map_err(|_| SignedUrlError::Malformed),
            _ => Err(SignedUrlError::Malformed),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Create => f.write_str("create"),
            Scope::Upload(id) => write!(f, "upload:{id}"),
            Scope::File(name) => write!(f, "file:{name}"),
            Scope::Name(name) => write!(f, "name:{name}"),
        }
    }
}

/// The `file` parameter of a query string, as the seed dialect's by-name
/// form reads it: `None` without one; an error when it is repeated or not
/// a valid name (bytes that are not UTF-8 included).
///
/// ```
/// use tenax_protocol::signed::file_param;
/// assert_eq!(file_param("file=a%20b.txt&sig=x").map(|n| n.map(|n| n.to_string())), Some(Ok("a b.txt".into())));
/// assert!(matches!(file_param("file=a&file=b"), Some(Err(_))));
/// assert!(matches!(file_param("file=%FF"), Some(Err(_))));
/// assert_eq!(file_param("sig=x"), None);
/// ```
pub fn file_param(query: &str) -> Option<Result<FileName, NameError>> {
    let mut values = form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "file")
        .map(|(_, value)| value);
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(NameError::Repeated));
    }
    Some(FileName::new(first))
}

/// What a valid signed URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The namespace acted in.
    pub namespace: Namespace,
    /// What may be done.
    pub scope: Scope,
    /// Until when, in seconds since the Unix epoch.
    pub expires: u64,
}

/// The secret that signs and checks URLs.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// A signing key shorter than [`SigningKey::MIN_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a signing key must be at least {} bytes long", SigningKey::MIN_LEN)]
pub struct ShortKey;

impl SigningKey {
    /// The shortest key accepted: HMAC-SHA256 is only as strong as 32
    /// random bytes.
    pub const MIN_LEN: usize = 32;

    /// Wraps a secret.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, ShortKey> {
        let secret = secret.into();
        if secret.len() < Self::MIN_LEN {
            return Err(ShortKey);
        }
        Ok(SigningKey(secret))
    }

    fn mac(&self, grant: &Grant) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(
            format!(
                "tenax-signed-url-v1\n{}\n{}\n{}",
                grant.namespace, grant.scope, grant.expires
            )
            .as_bytes(),
        );
        mac
    }

    /// The query string (without `?`) that grants `grant`.
    ///
    /// ```
    /// use tenax_protocol::signed::{Grant, Scope, SigningKey};
    /// use tenax_protocol::Namespace;
    /// let key = SigningKey::new([7u8; 32]).unwrap();
    /// let grant = Grant { namespace: Namespace::new("team").unwrap(), scope: Scope::Create, expires: 2_000_000_000 };
    /// let query = key.sign(&grant);
    /// assert_eq!(key.verify(&query, 1_900_000_000), Some(Ok(grant)));
    /// assert!(matches!(key.verify(&query, 2_000_000_001), Some(Err(_))));
    /// ```
    pub fn sign(&self, grant: &Grant) -> String {
        let sig = URL_SAFE_NO_PAD.encode(self.mac(grant).finalize().into_bytes());
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !grant.namespace.is_default() {
            query.append_pair("ns", grant.namespace.as_str());
        }
        query
            .append_pair("scope", &grant.scope.to_string())
            .append_pair("exp", &grant.expires.to_string())
            .append_pair("sig", &sig);
        query.finish()
    }

    /// Checks the signed-URL parameters of a query string at time `now`
    /// (seconds since the epoch). `None` when the query has no `sig`: it
    /// is not a signed URL.
    pub fn verify(&self, query: &str, now: u64) -> Option<Result<Grant, SignedUrlError>> {
        let params = SignedParams::parse(query)?;
        Some(params.and_then(|params| self.check(params, now)))
    }

    fn check(&self, params: SignedParams, now: u64) -> Result<Grant, SignedUrlError> {
        let grant = params.grant;
        let expected = self.mac(&grant);
        // `verify_slice` compares in constant time.
        expected
            .verify_slice(&params.sig)
            .map_err(|_| SignedUrlError::BadSignature)?;
        if grant.expires < now {
            return Err(SignedUrlError::Expired);
        }
        Ok(grant)
    }
}

/// The signed-URL parameters of a query string, not yet checked.
struct SignedParams {
    grant: Grant,
    sig: Vec<u8>,
}

impl SignedParams {
    fn parse(query: &str) -> Option<Result<Self, SignedUrlError>> {
        let mut values: [Option<String>; 4] = Default::default();
        let mut repeated = false;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if let Some(slot) = PARAMS.iter().position(|name| *name == key) {
                repeated |= values[slot].is_some();
                values[slot] = Some(value.into_owned());
            }
        }
        let [ns, scope, exp, sig] = values;
        let sig = sig?;
        Some((|| {
            if repeated {
                return Err(SignedUrlError::Malformed);
            }
            let namespace = match ns {
                None => Namespace::default(),
                Some(ns) => Namespace::new(ns).map_err(|_| SignedUrlError::Malformed)?,
            };
            let scope = Scope::parse(&scope.ok_or(SignedUrlError::Malformed)?)?;
            let expires = crate::number::parse_u64(&exp.ok_or(SignedUrlError::Malformed)?)
                .map_err(|_| SignedUrlError::Malformed)?;
            let sig = URL_SAFE_NO_PAD
                .decode(sig)
                .map_err(|_| SignedUrlError::Malformed)?;
            Ok(SignedParams {
                grant: Grant {
                    namespace,
                    scope,
                    expires,
                },
                sig,
            })
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::new(*b"0123456789abcdef0123456789abcdef").expect("32 bytes")
    }

    fn grant(scope: Scope) -> Grant {
        Grant {
            namespace: Namespace::new("team-a").expect("valid"),
            scope,
            expires: 1_800_000_000,
        }
    }

    #[test]
    fn every_scope_round_trips() {
        let scopes = [
            Scope::Create,
            Scope::Upload(UploadId::from_bytes([0x5a; 16])),
            Scope::File(FileName::new("report & data=1.pdf").expect("valid")),
            Scope::Name(FileName::new("a:b & c=1.bin").expect("valid")),
        ];
        for scope in scopes {
            let grant = grant(scope);
            let query = key().sign(&grant);
            assert_eq!(key().verify(&query, 1_700_000_000), Some(Ok(grant.clone())));
            // Other parameters around it do not matter.
            let query = format!("file=abc.zip&{query}&x=1");
            assert_eq!(key().verify(&query, 1_700_000_000), Some(Ok(grant)));
        }
    }

    #[test]
    fn tampering_expiry_and_other_keys_are_refused() {
        let query = key().sign(&grant(Scope::Create));
        assert_eq!(key().verify("file=abc.zip", 0), None);
        assert_eq!(
            key().verify(&query, 1_800_000_001),
            Some(Err(SignedUrlError::Expired))
        );
        let other = SigningKey::new([1u8; 40]).expect("long enough");
        assert_eq!(
            other.verify(&query, 0),
            Some(Err(SignedUrlError::BadSignature))
        );
        for (from, to) in [
            ("ns=team-a", "ns=team-b"),
            ("scope=create", "scope=file%3Ax"),
            ("scope=create", "scope=name%3Ax"),
            ("exp=1800000000", "exp=1900000000"),
        ] {
            let altered = query.replace(from, to);
            assert_ne!(altered, query);
            assert_eq!(
                key().verify(&altered, 0),
                Some(Err(SignedUrlError::BadSignature)),
                "{altered}"
            );
        }
        let dropped_ns = query.replace("ns=team-a&", "");
        assert_eq!(
            key().verify(&dropped_ns, 0),
            Some(Err(SignedUrlError::BadSignature))
        );
        for malformed in [
            format!("{query}&sig=AAAA"),
            query.replace("exp=1800000000", "exp=-1"),
            query.replace("scope=create", "scope=upload%3Axyz"),
            query.replace("ns=team-a", "ns=..%2F"),
            "sig=***".to_owned(),
        ] {
            assert_eq!(
                key().verify(&malformed, 0),
                Some(Err(SignedUrlError::Malformed)),
                "{malformed}"
            );
        }
        assert_eq!(SigningKey::new([0u8; 31]).map(|_| ()), Err(ShortKey));
    }

    proptest! {
        #[test]
        fn arbitrary_queries_never_verify(query in "\\PC{0,200}") {
            prop_assert!(!matches!(key().verify(&query, 0), Some(Ok(_))));
        }

        #[test]
        fn a_flipped_signature_byte_is_refused(byte in 0usize..32, bit in 0u8..8) {
            let grant = grant(Scope::Create);
            let mut mac = key().mac(&grant).finalize().into_bytes().to_vec();
            mac[byte] ^= 1 << bit;
            let query = format!("ns=team-a&scope=create&exp=1800000000&sig={}", URL_SAFE_NO_PAD.encode(mac));
            prop_assert_eq!(key().verify(&query, 0), Some(Err(SignedUrlError::BadSignature)));
        }
    }
}
