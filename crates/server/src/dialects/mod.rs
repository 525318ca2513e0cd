//! The dialect adapters, and the upload resource they share,
//! `/uploads` and `/uploads/{id}`: each request goes to the adapter its
//! headers name ([`crate::dialect`]).
//!
//! Each adapter only translates: its headers into a decision and an
//! [`crate::append::Append`], and the outcome into its answer. The
//! adapters import neither each other nor this dispatcher.

pub(crate) mod gcs;
pub(crate) mod rufh;
pub(crate) mod seed;
pub(crate) mod tus;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::append::Caller;
use crate::common::upload_id;
use crate::conn::interim::Interim;
use crate::conn::origin::Origin;
use crate::dialect::Dialect;
use crate::problem::Problem;
use crate::state::AppState;

/// `POST /uploads`: creation in any dialect.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    query: Query<seed::NameQuery>,
    origin: Origin,
    headers: HeaderMap,
    interim: Option<Extension<Interim>>,
    body: Body,
) -> Response {
    match Dialect::of(&headers) {
        Dialect::Tus => tus::create(state, caller, origin, headers, body).await,
        Dialect::Rufh => {
            rufh::create(
                state,
                caller,
                origin,
                headers,
                interim.map(|Extension(interim)| interim),
                body,
            )
            .await
        }
        Dialect::Seed => seed::initiate(
            State(state),
            Extension(caller.access),
            query,
            origin,
            headers,
            body,
        )
        .await
        .into_response(),
    }
}

/// `PATCH /uploads/{id}`: a tus or RUFH append.
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    interim: Option<Extension<Interim>>,
    body: Body,
) -> Response {
    let id = match upload_id(&id) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match Dialect::of(&headers) {
        Dialect::Tus => tus::patch(state, caller, id, headers, body).await,
        Dialect::Rufh | Dialect::Seed => {
            rufh::patch(
                state,
                caller,
                id,
                headers,
                interim.map(|Extension(interim)| interim),
                body,
            )
            .await
        }
    }
}

/// `HEAD /uploads/{id}`: the offset, in the request's dialect.
pub(crate) async fn head(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let id = match upload_id(&id) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match Dialect::of(&headers) {
        Dialect::Tus => tus::head(state, id, headers).await,
        Dialect::Rufh | Dialect::Seed => rufh::head(state, id, headers).await,
    }
}

/// `DELETE /uploads/{id}`: termination in every dialect.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let dialect = Dialect::of(&headers);
    if dialect == Dialect::Tus
        && let Err(problem) = tus::check_version(&headers)
    {
        return tus::resumable(problem.into_response());
    }
    let response = seed::cancel_by_id(State(state), Path(id))
        .await
        .into_response();
    match dialect {
        Dialect::Tus => tus::resumable(response),
        Dialect::Rufh => rufh::echo_version(&headers, response),
        Dialect::Seed => response,
    }
}

/// `OPTIONS`: what the server offers, for tus and RUFH clients alike, and
/// the most bytes of metadata (with the media type) an upload may carry.
pub(crate) async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus::capabilities(&state, response.headers_mut());
    rufh::capabilities(&state, response.headers_mut());
    response.headers_mut().insert(
        "tenax-max-metadata-size",
        HeaderValue::from(tenax_core::MAX_METADATA_SIZE),
    );
    response
}

/// `X-HTTP-Method-Override` on a `POST` replaces the method (tus; honoured
/// only on POST, as tusd does, so a GET can never become a DELETE).
pub(crate) async fn override_method(mut request: Request) -> Result<Request, Problem> {
    if request.method() == Method::POST
        && let Some(value) = request.headers().get("x-http-method-override")
    {
        let method = Method::from_bytes(value.as_bytes())
            .map_err(|_| Problem::bad_request("X-HTTP-Method-Override is not a method"))?;
        *request.method_mut() = method;
    }
    Ok(request)
}
