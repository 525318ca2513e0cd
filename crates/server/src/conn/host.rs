//! Refuses a request whose `Host` is missing, repeated or invalid (RFC
//! 9112 §3.2) before anything else sees it: the host is copied into the
//! `Location` of every creation, so it must be a plain `name[:port]`.

use axum::extract::Request;
use axum::http::{Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tenax_protocol::host::request_host;

use crate::problem::Problem;

/// The middleware: 400 problem for a bad host, else the request goes on.
pub(crate) async fn check(request: Request, next: Next) -> Response {
    let hosts: Vec<&[u8]> = request
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str());
    let required = request.version() > Version::HTTP_10;
    if let Err(error) = request_host(&hosts, authority, required) {
        return Problem::bad_request(error.to_string()).into_response();
    }
    next.run(request).await
}
