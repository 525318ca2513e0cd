//! The browser upload page: `GET /` and its assets, embedded in the binary
//! (nothing is fetched from elsewhere), and `GET /api/files`, the list of
//! published files the page shows.
//!
//! The page talks tus to `/uploads` like any other client; see the comment
//! at the top of `assets/app.js` for its design.

use std::sync::LazyLock;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tenax_core::Status;

use crate::auth::Access;
use crate::problem::Problem;
use crate::state::AppState;

/// One embedded file: its bytes, media type and validator.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: LazyLock<HeaderValue>,
}

/// A strong `ETag` from the first 128 bits of the SHA-256 of `body`.
fn etag_of(body: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

macro_rules! asset {
    ($file:literal, $type:literal) => {
        Asset {
            body: include_bytes!(concat!("../assets/", $file)),
            content_type: $type,
            etag: LazyLock::new(|| etag_of(include_bytes!(concat!("../assets/", $file)))),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
static APP_CSS: Asset = asset!("app.css", "text/css; charset=utf-8");
static ICON: Asset = asset!("icon.svg", "image/svg+xml");

/// The page's policy: everything from this server, nothing inline.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Answers with `asset`, or `304` when the client's copy is current. The
/// file names carry no version, so clients revalidate every time
/// (`no-cache`): a cheap `304` when nothing changed.
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = &*asset.etag;
    let current = etag.to_str().unwrap_or_default();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(',').any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == current
            })
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let out = response.headers_mut();
    out.insert(header::ETAG, etag.clone());
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if std::ptr::eq(asset, &INDEX) {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// `GET /`: the upload page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /assets/app.js`.
pub(crate) async fn app_js(headers: HeaderMap) -> Response {
    serve(&APP_JS, &headers)
}

/// `GET /assets/app.css`.
pub(crate) async fn app_css(headers: HeaderMap) -> Response {
    serve(&APP_CSS, &headers)
}

/// `GET /assets/icon.svg` (also the favicon).
pub(crate) async fn icon(headers: HeaderMap) -> Response {
    serve(&ICON, &headers)
}

/// How long the signed links of `GET /api/files` stay valid.
const LINK_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// One published file in `GET /api/files`.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    size: u64,
    sha256: String,
    completed_at: u64,
    url: String,
}

/// Everything but RFC 3986 unreserved characters.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a path segment.
fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// `GET /api/files`: the published files, by name, as JSON.
///
/// With a signing key, each `url` is signed for an hour, so that a plain
/// link downloads the file on a server that wants credentials.
pub(crate) async fn list_files(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
) -> Response {
    let auth = &state.config.auth;
    let published = match state.engine.published_files(&access.namespace).await {
        Ok(published) => published,
        Err(error) => return Problem::from(error).into_response(),
    };
    let files: Vec<Listed> = published
        .into_iter()
        .filter_map(|(name, snapshot)| match snapshot.record.status {
            Status::Complete(info) => Some(Listed {
                url: {
                    let path = format!("/files/{}", encode_segment(name.as_str()));
                    match auth.sign_file(&access.namespace, &name, LINK_LIFETIME) {
                        Some(query) => format!("{path}?{query}"),
                        None => path,
                    }
                },
                name: name.as_str().to_owned(),
                size: info.size,
                sha256: info.sha256,
                completed_at: info.completed_at,
            }),
            _ => None,
        })
        .collect();
    let mut response = axum::Json(files).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b/ü.txt"), "a%20b%2F%C3%BC.txt");
        assert_eq!(encode_segment("plain-name_1.~"), "plain-name_1.~");
    }

    #[test]
    fn a_current_etag_gets_304() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, APP_CSS.etag.clone());
        assert_eq!(serve(&APP_CSS, &headers).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve(&APP_CSS, &HeaderMap::new()).status(), StatusCode::OK);
    }
}
