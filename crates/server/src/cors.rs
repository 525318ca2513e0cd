//! CORS for browser clients (docs/protocol.md §0): every protocol header may be
//! sent and read. `Range` and `Upload-Offset` are not safelisted, so without
//! this a script could not read a 308's progress.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, Method, header};
use axum::middleware::Next;
use axum::response::IntoResponse as _;
use tower::ServiceExt as _;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers of every dialect.
const REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-range",
    "content-disposition",
    "x-upload-content-type",
    "x-upload-content-length",
    "x-guploader-no-308",
    "x-http-method-override",
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-checksum",
    "upload-complete",
    "upload-incomplete",
    "upload-draft-interop-version",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
];

/// Response headers of every dialect.
const RESPONSE_HEADERS: &[&str] = &[
    "location",
    "range",
    "content-range",
    "x-http-status-code-override",
    "tus-resumable",
    "tus-version",
    "tus-extension",
    "tus-max-size",
    "tenax-max-metadata-size",
    "tus-checksum-algorithm",
    "upload-offset",
    "upload-length",
    "upload-metadata",
    "upload-defer-length",
    "upload-concat",
    "upload-expires",
    "upload-complete",
    "upload-limit",
    "upload-draft-interop-version",
    "accept-ranges",
    "etag",
    "repr-digest",
    // The completion hook's answer (`--hook-completion-response`).
    "tenax-hook-response",
];

/// Puts `app` behind CORS. tower-http answers every `OPTIONS` as a
/// preflight; a plain `OPTIONS` (no `Access-Control-Request-Method`) is a tus
/// or RUFH capability query and goes to `app` itself.
pub(crate) fn wrap(app: Router) -> Router {
    let plain = app.clone();
    app.layer(layer()).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let plain = plain.clone();
            async move {
                if request.method() == Method::OPTIONS
                    && !request
                        .headers()
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
                {
                    plain.oneshot(request).await.into_response()
                } else {
                    next.run(request).await
                }
            }
        },
    ))
}

/// The CORS layer: any origin (uploads are authorised by credentials, not
/// by origin), every protocol header both ways.
fn layer() -> CorsLayer {
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|name| HeaderName::from_static(name))
            .collect::<Vec<_>>()
    };
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(REQUEST_HEADERS))
        .expose_headers(names(RESPONSE_HEADERS))
        .max_age(Duration::from_secs(86_400))
}
