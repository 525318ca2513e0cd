//! Who may do what: bearer tokens and signed URLs, checked on every request
//! of every dialect before it reaches an adapter.
//!
//! [`authenticate`] runs in front of the routes. It turns the request's
//! credential into an [`Access`] (a namespace, and for a signed URL a
//! scope), refuses what the credential does not cover, and hides uploads of
//! other namespaces (404, as if they did not exist). Adapters read the
//! [`Access`] for the namespace of what they create or name, and call
//! [`Access::recheck`] before they finalise, so a credential revoked or
//! expired during a long upload cannot complete it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use tenax_core::Engine;
use tenax_protocol::signed::{Grant, Scope, SignedUrlError, SigningKey, file_param};
use tenax_protocol::{FileName, Namespace, UploadId};

use crate::problem::Problem;

/// What a bearer token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// A name for logs and metrics (never the secret).
    pub label: String,
    /// The namespace the token acts in.
    pub namespace: Namespace,
    /// The largest upload this token may create, below the server's own
    /// maximum.
    pub max_upload_size: Option<u64>,
}

/// The server's credentials. Without any, the server is open: every request
/// acts in the default namespace.
pub struct Auth {
    /// Tokens by the SHA-256 of their secret; replaced whole on reload.
    tokens: RwLock<Arc<HashMap<[u8; 32], TokenGrant>>>,
    signing_key: Option<SigningKey>,
    open: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("open", &self.open)
            .field("tokens", &self.table().len())
            .field("signing_key", &self.signing_key.is_some())
            .finish()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Auth::open()
    }
}

impl Auth {
    /// No credentials: anyone may do anything, in the default namespace.
    pub fn open() -> Self {
        Auth {
            tokens: RwLock::default(),
            signing_key: None,
            open: true,
        }
    }

    /// Every request needs a token (`Authorization: Bearer SECRET`) or a
    /// URL signed with `signing_key`.
    pub fn required(
        tokens: impl IntoIterator<Item = (String, TokenGrant)>,
        signing_key: Option<SigningKey>,
    ) -> Self {
        let auth = Auth {
            tokens: RwLock::default(),
            signing_key,
            open: false,
        };
        auth.replace_tokens(tokens);
        auth
    }

    /// Whether requests need no credential.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Replaces the tokens (a reloaded tokens file). Requests in flight
    /// keep going; a revoked token cannot finalise an upload afterwards.
    pub fn replace_tokens(&self, tokens: impl IntoIterator<Item = (String, TokenGrant)>) {
        let table = tokens
            .into_iter()
            .map(|(secret, grant)| (digest(&secret), grant))
            .collect();
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// The query of a URL that downloads `name` for `lifetime`, if the
    /// server signs URLs.
    pub(crate) fn sign_file(
        &self,
        namespace: &Namespace,
        name: &FileName,
        lifetime: std::time::Duration,
    ) -> Option<String> {
        let key = self.signing_key.as_ref()?;
        Some(key.sign(&Grant {
            namespace: namespace.clone(),
            scope: Scope::File(name.clone()),
            expires: now().saturating_add(lifetime.as_secs()),
        }))
    }

    fn table(&self) -> Arc<HashMap<[u8; 32], TokenGrant>> {
        Arc::clone(&self.tokens.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The access a request's credential gives.
    fn access(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Access, Problem> {
        if self.open {
            return Ok(Access::open());
        }
        if let Some(secret) = bearer(headers)? {
            let digest = digest(secret);
            // Looked up by the SHA-256 of the secret: the time a lookup
            // takes depends on the digest, which tells nothing about the
            // secrets that are configured.
            let grant = self
                .table()
                .get(&digest)
                .cloned()
                .ok_or_else(|| unauthorized("the token is not valid", true))?;
            return Ok(Access {
                namespace: grant.namespace,
                scope: None,
                max_upload_size: grant.max_upload_size,
                credential: Credential::Token(digest),
            });
        }
        let signed = match (&self.signing_key, query) {
            (Some(key), Some(query)) => key.verify(query, now()),
            _ => None,
        };
        match signed {
            Some(Ok(grant)) => Ok(Access {
                namespace: grant.namespace,
                scope: Some(grant.scope),
                max_upload_size: None,
                credential: Credential::Signed {
                    expires: grant.expires,
                },
            }),
            Some(Err(error)) => Err(unauthorized(
                match error {
                    SignedUrlError::Expired => "the signed URL has expired",
                    SignedUrlError::BadSignature => "the signature of the URL does not match",
                    SignedUrlError::Malformed => "the signed URL is malformed",
                },
                true,
            )),
            None => Err(unauthorized(
                "this server needs a bearer token or a signed URL",
                false,
            )),
        }
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The secret of `Authorization: Bearer SECRET`, if the request has one.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text", true))?;
    match text.split_once(' ') {
        Some((scheme, secret))
            if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() =>
        {
            Ok(Some(secret.trim()))
        }
        _ => Err(unauthorized("only Bearer tokens are accepted", true)),
    }
}

/// 401 with the challenge of RFC 6750.
fn unauthorized(detail: &'static str, presented: bool) -> Problem {
    let challenge = if presented {
        r#"Bearer realm="tenax", error="invalid_token""#
    } else {
        r#"Bearer realm="tenax""#
    };
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "urn:tenax:problem:unauthorized",
        "Unauthorized",
        detail,
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    )
}

fn forbidden(detail: &'static str) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "urn:tenax:problem:forbidden",
        "Forbidden",
        detail,
    )
}

/// What one request may do.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// The namespace it acts in.
    pub(crate) namespace: Namespace,
    /// A signed URL's scope; `None` for a token (its whole namespace).
    scope: Option<Scope>,
    /// The token's own upload size limit.
    pub(crate) max_upload_size: Option<u64>,
    credential: Credential,
}

#[derive(Debug, Clone)]
enum Credential {
    Open,
    Token([u8; 32]),
    Signed { expires: u64 },
}

impl Access {
    fn open() -> Self {
        Access {
            namespace: Namespace::default(),
            scope: None,
            max_upload_size: None,
            credential: Credential::Open,
        }
    }

    /// Checks the credential again, for a finalisation: the token must
    /// still be configured, the signed URL not expired.
    pub(crate) fn recheck(&self, auth: &Auth) -> Result<(), Problem> {
        match &self.credential {
            Credential::Open => Ok(()),
            Credential::Token(digest) if auth.table().contains_key(digest) => Ok(()),
            Credential::Token(_) => Err(unauthorized("the token was revoked", true)),
            Credential::Signed { expires } if *expires >= now() => Ok(()),
            Credential::Signed { .. } => Err(unauthorized("the signed URL has expired", true)),
        }
    }

    /// Whether the credential may act in `namespace` (a GCS bucket,
    /// docs/protocol.md §7.1): an open server's requests in any, a token's
    /// in its own.
    pub(crate) fn may_use(&self, namespace: &Namespace) -> bool {
        matches!(self.credential, Credential::Open) || self.namespace == *namespace
    }

    /// Whether the credential covers `target`.
    fn permits(&self, method: &Method, target: &Target) -> bool {
        match (&self.scope, target) {
            (None, _) => true,
            (Some(Scope::Create), Target::Create) => true,
            (Some(Scope::Name(granted)), Target::Name(name)) => granted == name,
            (Some(Scope::Upload(granted)), Target::Upload(id)) => granted == id,
            (Some(Scope::File(granted)), Target::File(name)) => {
                granted == name && (method == Method::GET || method == Method::HEAD)
            }
            _ => false,
        }
    }
}

/// The resource a request is about, as far as credentials go.
#[derive(Debug)]
enum Target {
    /// Open to all: the page and its assets, health and metrics, OPTIONS.
    Public,
    /// Creating an upload (`/uploads`).
    Create,
    /// The seed dialect's by-name form on one name (`/api/upload?file=NAME`).
    Name(FileName),
    /// One upload.
    Upload(UploadId),
    /// One published file.
    File(FileName),
    /// Anything else (listing files, unknown paths): tokens only.
    Other,
}

impl Target {
    fn of(method: &Method, path: &str, query: Option<&str>) -> Target {
        if method == Method::OPTIONS {
            return Target::Public;
        }
        match path {
            "/" | "/index.html" | "/favicon.ico" | "/healthz" | "/readyz" | "/metrics" => {
                return Target::Public;
            }
            "/uploads" => return Target::Create,
            // Names are shared by the namespace: a request by name reaches
            // whatever any credential of the namespace did under it.
            "/api/upload" => {
                return match query.and_then(file_param) {
                    Some(Ok(name)) => Target::Name(name),
                    _ => Target::Other,
                };
            }
            _ => {}
        }
        if path.starts_with("/assets/") {
            return Target::Public;
        }
        if let Some(id) = path.strip_prefix("/uploads/") {
            return UploadId::parse(id).map_or(Target::Other, Target::Upload);
        }
        if let Some(name) = path.strip_prefix("/files/") {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            return FileName::new(name).map_or(Target::Other, Target::File);
        }
        Target::Other
    }
}

/// What the middleware needs: the credentials, and the engine to tell
/// whose an upload is.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// The server's credentials.
    pub(crate) auth: Arc<Auth>,
    /// The upload engine.
    pub(crate) engine: Engine,
}

/// The middleware: see the module documentation.
pub(crate) async fn authenticate(
    State(state): State<Gate>,
    mut request: Request,
    next: Next,
) -> Response {
    let target = Target::of(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    if matches!(target, Target::Public) {
        return next.run(request).await;
    }
    let auth = &state.auth;
    let access = match auth.access(request.headers(), request.uri().query()) {
        Ok(access) => access,
        Err(problem) => return problem.into_response(),
    };
    if !access.permits(request.method(), &target) {
        return forbidden("the signed URL does not grant this request").into_response();
    }
    if let Target::Upload(id) = target
        && !auth.is_open()
    {
        // Another namespace's upload does not exist, as far as this
        // credential can tell. An unknown id goes on to the adapter's 404.
        match state.engine.owner(id).await {
            Ok(owner) if owner != access.namespace => {
                return Problem::not_found("no such upload").into_response();
            }
            _ => {}
        }
    }
    let resign = match (&access.scope, &access.credential, &auth.signing_key) {
        (Some(Scope::Create | Scope::Name(_)), Credential::Signed { expires }, Some(key)) => {
            Some((key.clone(), access.namespace.clone(), *expires))
        }
        _ => None,
    };
    request.extensions_mut().insert(access);
    let mut response = next.run(request).await;
    if let Some((key, namespace, expires)) = resign {
        sign_location(&mut response, &key, namespace, expires);
    }
    response
}

/// An upload created through a signed `create` or `name:` URL is continued through
/// its `Location`, which carries no credential of its own: sign it for that
/// one upload, until the same time.
fn sign_location(response: &mut Response, key: &SigningKey, namespace: Namespace, expires: u64) {
    let Some(location) = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
    else {
        return;
    };
    let path = location.split('?').next().unwrap_or(location);
    let Some(Ok(id)) = path.rsplit('/').next().map(UploadId::parse) else {
        return;
    };
    let query = key.sign(&Grant {
        namespace,
        scope: Scope::Upload(id),
        expires,
    });
    let separator = if location.contains('?') { '&' } else { '?' };
    if let Ok(value) = HeaderValue::from_str(&format!("{location}{separator}{query}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn authorization(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn bearer_reads_only_the_bearer_scheme() {
        let read =
            |value: &str| bearer(&authorization(value.as_bytes())).map(|s| s.map(str::to_owned));
        assert_eq!(read("Bearer abc").ok(), Some(Some("abc".to_owned())));
        assert_eq!(read("bEaReR  abc ").ok(), Some(Some("abc".to_owned())));
        for refused in ["Bearer", "Bearer ", "Basic dXNlcg==", "abc", "Bearerabc"] {
            assert!(read(refused).is_err(), "{refused:?}");
        }
        assert_eq!(bearer(&HeaderMap::new()).ok(), Some(None));
    }

    proptest! {
        #[test]
        fn any_authorization_header_is_read_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let headers = authorization(&value);
            if let Ok(Some(secret)) = bearer(&headers) {
                prop_assert!(!secret.is_empty());
                let text = String::from_utf8_lossy(&value).to_ascii_lowercase();
                prop_assert!(text.starts_with("bearer "));
            }
        }

        #[test]
        fn any_path_maps_to_one_target(path in "(/uploads/|/files/|/assets/|/)?[a-f0-9%/. A-Z]{0,40}") {
            let target = Target::of(&Method::GET, &path, None);
            match target {
                Target::Upload(id) => prop_assert_eq!(format!("/uploads/{id}"), path),
                Target::File(name) => prop_assert!(path.starts_with("/files/") && !name.as_str().contains('/')),
                _ => {}
            }
        }

        #[test]
        fn a_by_name_request_targets_its_one_name(query in "(file=|sig=|&|%[0-9A-F]{2}|[a-z.])*") {
            match Target::of(&Method::PUT, "/api/upload", Some(&query)) {
                Target::Name(name) => prop_assert_eq!(file_param(&query), Some(Ok(name))),
                Target::Other => prop_assert!(!matches!(file_param(&query), Some(Ok(_)))),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
