//! The GCS JSON API's answers that more than one adapter gives
//! (docs/protocol.md §7): the object resource, which the GCS adapter and
//! the seed dialect's final answer on a GCS object both write, and GCS's
//! JSON error shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use tenax_core::{FinalInfo, UploadRecord};
use tenax_protocol::Namespace;
use tenax_protocol::gcs::object_name;

use crate::problem::Problem;

/// The bucket a namespace is (§7.1): its name, `default` for the default
/// namespace.
pub(crate) fn bucket_of(namespace: &Namespace) -> &str {
    if namespace.is_default() {
        Namespace::DEFAULT_ALIAS
    } else {
        namespace.as_str()
    }
}

/// What a path segment keeps unencoded: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An object name as one path segment of a URL.
pub(crate) fn encode_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// RFC 3339 with milliseconds, in UTC, of `micros` since the epoch.
pub(crate) fn rfc3339(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let millis = (micros % 1_000_000) / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The custom metadata of an upload as GCS shows it: the values that are
/// UTF-8 (upload metadata keeps values in base64).
fn custom_metadata(record: &UploadRecord) -> Map<String, Value> {
    record
        .metadata
        .iter()
        .filter_map(|(key, value)| {
            let bytes = STANDARD.decode(value).ok()?;
            Some((key.clone(), Value::String(String::from_utf8(bytes).ok()?)))
        })
        .collect()
}

/// The object resource of a completed upload, as GCS writes it (§7.6).
/// `base` is the server's public origin, for `selfLink` and `mediaLink`.
pub(crate) fn resource(base: &str, record: &UploadRecord, info: &FinalInfo) -> Value {
    let bucket = bucket_of(&record.namespace);
    let name = record.name.as_ref().map(object_name).unwrap_or_default();
    let generation = info.generation();
    let encoded = encode_segment(&name);
    let bucket_segment = encode_segment(bucket);
    let mut object = json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{name}/{generation}"),
        "selfLink": format!("{base}/storage/v1/b/{bucket_segment}/o/{encoded}"),
        "mediaLink": format!("{base}/download/storage/v1/b/{bucket_segment}/o/{encoded}?generation={generation}&alt=media"),
        "name": name,
        "bucket": bucket,
        "generation": generation.to_string(),
        "metageneration": "1",
        "contentType": record.content_type.as_deref().unwrap_or("application/octet-stream"),
        "storageClass": "STANDARD",
        "size": info.size.to_string(),
        "crc32c": info.crc32c,
        // tenax's addition (§7.6): what `tenax upload` checks.
        "sha256": info.sha256,
        "etag": STANDARD.encode(generation.to_be_bytes()),
        "timeCreated": rfc3339(generation),
        "updated": rfc3339(generation),
        "timeStorageClassUpdated": rfc3339(generation),
    });
    if let Some(md5) = &info.md5 {
        object["md5Hash"] = md5.clone().into();
    }
    let metadata = custom_metadata(record);
    if !metadata.is_empty() {
        object["metadata"] = Value::Object(metadata);
    }
    object
}

/// `x-goog-hash` of a completed upload: its CRC32C, and its MD5 if kept.
pub(crate) fn goog_hash(info: &FinalInfo) -> String {
    match &info.md5 {
        Some(md5) => format!("crc32c={},md5={md5}", info.crc32c),
        None => format!("crc32c={}", info.crc32c),
    }
}

/// GCS's reason word for a status code.
fn reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid",
        401 => "required",
        403 => "forbidden",
        404 => "notFound",
        409 => "conflict",
        410 => "gone",
        411 => "lengthRequired",
        412 => "conditionNotMet",
        413 => "uploadTooLarge",
        416 => "requestedRangeNotSatisfiable",
        429 => "rateLimitExceeded",
        503 => "backendError",
        507 => "quotaExceeded",
        _ => "backendError",
    }
}

/// A problem in GCS's JSON error shape (§7.7), with its status and headers.
pub(crate) fn gcs_error(problem: &Problem) -> Response {
    let status = problem.status();
    let message = problem.detail().to_owned();
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason(status)}],
        }
    });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().extend(problem.headers().clone());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a path is one of the GCS JSON API's.
pub(crate) fn is_gcs_path(path: &str) -> bool {
    [
        "/storage/v1/",
        "/upload/storage/v1/",
        "/download/storage/v1/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// Middleware: on the GCS JSON API's paths, every RFC 9457 problem
/// (also the credential checks' and the router's) is rewritten in GCS's
/// error shape, so that Google's libraries raise their usual exceptions.
pub(crate) async fn gcs_errors(request: Request, next: Next) -> Response {
    if !is_gcs_path(request.uri().path()) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let problem: Value = serde_json::from_slice(&collected.to_bytes()).unwrap_or_default();
    let message = problem["detail"].as_str().unwrap_or("error").to_owned();
    let body = json!({
        "error": {
            "code": parts.status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason(parts.status)}],
        }
    });
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_456), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
