//! The upload resource, `/uploads` and `/uploads/{id}`, shared by every
//! dialect: each request goes to the adapter its headers name
//! (PROTOCOLS §0, "Routing").

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Access;
use crate::common::upload_id;
use crate::interim::Interim;
use crate::origin::Origin;
use crate::problem::Problem;
use crate::{AppState, rufh, seed, tus};

/// The dialect of a request, told by its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `Tus-Resumable`.
    Tus,
    /// `Upload-Draft-Interop-Version`, `Upload-Complete` or `Upload-Incomplete`.
    Rufh,
    /// Everything else: Google's shape.
    Seed,
}

impl Dialect {
    pub(crate) fn of(headers: &HeaderMap) -> Dialect {
        let has = |name: &str| headers.contains_key(name);
        if has("tus-resumable") {
            Dialect::Tus
        } else if [
            "upload-draft-interop-version",
            "upload-complete",
            "upload-incomplete",
        ]
        .into_iter()
        .any(has)
        {
            Dialect::Rufh
        } else if [
            "upload-length",
            "upload-offset",
            "upload-defer-length",
            "upload-metadata",
            "upload-concat",
            "upload-checksum",
        ]
        .into_iter()
        .any(has)
            || tus::has_offset_stream(headers)
        {
            // tus headers without `Tus-Resumable`: the tus adapter answers
            // 412 (PROTOCOLS §2.1) rather than another dialect guessing.
            Dialect::Tus
        } else {
            Dialect::Seed
        }
    }
}

/// `POST /uploads`: creation in any dialect.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    query: Query<seed::NameQuery>,
    origin: Origin,
    headers: HeaderMap,
    interim: Option<Extension<Interim>>,
    body: Body,
) -> Response {
    match Dialect::of(&headers) {
        Dialect::Tus => tus::create(state, access, origin, headers, body).await,
        Dialect::Rufh => {
            rufh::create(
                state,
                access,
                origin,
                headers,
                interim.map(|Extension(interim)| interim),
                body,
            )
            .await
        }
        Dialect::Seed => seed::initiate(
            State(state),
            Extension(access),
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
    Extension(access): Extension<Access>,
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
        Dialect::Tus => tus::patch(state, access, id, headers, body).await,
        Dialect::Rufh | Dialect::Seed => {
            rufh::patch(
                state,
                access,
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

/// `OPTIONS`: what the server offers, for tus and RUFH clients alike.
pub(crate) async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus::capabilities(&state, response.headers_mut());
    rufh::capabilities(&state, response.headers_mut());
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
