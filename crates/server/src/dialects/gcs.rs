//! The Google Cloud Storage JSON API (docs/protocol.md §7) as a thin
//! front-end over the upload engine: uploads on
//! `/upload/storage/v1/b/{bucket}/o` (resumable, multipart, media), and
//! the objects of `/storage/v1/b/{bucket}/o` (get, media download, list,
//! delete). A bucket is a namespace (§7.1); an object name is kept as a
//! percent-encoded file name (`tenax_protocol::gcs`, §7.2).
//!
//! A resumable upload's session URI is the ordinary `/uploads/{id}`: its
//! chunks and status queries are the seed dialect's (§1), and tus, RUFH or
//! `tenax upload` may continue it. What GCS adds, the declared digests and
//! the preconditions, is kept with the upload's record and checked by the
//! engine when the upload completes, whoever completes it.

use std::collections::{BTreeSet, HashMap, VecDeque};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tenax_core::{
    DigestSet, Error as EngineError, FileKey, FinalInfo, NewUpload, ObjectRules, Snapshot, Status,
};
use tenax_protocol::gcs::{
    self, GoogHash, Live, Multipart, MultipartEvent, Preconditions, canonical_digest,
    object_file_name,
};
use tenax_protocol::{Namespace, parse_u64};

use crate::append::{self, Append, Caller, Finish};
use crate::auth::Access;
use crate::body::control_body;
use crate::common::{header_str, no_store};
use crate::conn::origin::Origin;
use crate::download::serve_complete;
use crate::object::{self, bucket_of};
use crate::problem::Problem;
use crate::state::AppState;

/// The query of a GCS request: every parameter, by name.
pub(crate) type Params = HashMap<String, String>;

/// The namespace a bucket is (§7.1), if the credential may use it: 400 for
/// a name that cannot be a namespace, 403 for another namespace's.
fn namespace(access: &Access, bucket: &str) -> Result<Namespace, Problem> {
    let namespace = if bucket == Namespace::DEFAULT_ALIAS {
        Namespace::default()
    } else {
        Namespace::new(bucket).map_err(|_| {
            Problem::bad_request(format!(
                "invalid bucket name {bucket:?}: a bucket is a tenax namespace (lowercase letters, \
                 digits, '-' and '_', at most 64) or 'default'"
            ))
        })?
    };
    if !access.may_use(&namespace) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "urn:tenax:problem:forbidden",
            "Forbidden",
            format!("the credential does not have storage.objects access to the bucket {bucket}"),
        ));
    }
    Ok(namespace)
}

/// The file an object of a bucket is.
fn file_key(namespace: Namespace, object: &str) -> Result<FileKey, Problem> {
    let name = object_file_name(object)
        .map_err(|error| Problem::bad_request(format!("invalid object name: {error}")))?;
    Ok(FileKey { namespace, name })
}

fn number(params: &Params, name: &str) -> Result<Option<u64>, Problem> {
    params
        .get(name)
        .map(|text| {
            parse_u64(text).map_err(|error| Problem::bad_request(format!("{name}: {error}")))
        })
        .transpose()
}

/// The generation preconditions of the query (§7.5).
fn preconditions(params: &Params) -> Result<Preconditions, Problem> {
    Ok(Preconditions {
        if_generation_match: number(params, "ifGenerationMatch")?,
        if_generation_not_match: number(params, "ifGenerationNotMatch")?,
        if_metageneration_match: number(params, "ifMetagenerationMatch")?,
        if_metageneration_not_match: number(params, "ifMetagenerationNotMatch")?,
    })
}

fn precondition_failed(error: gcs::PreconditionFailed) -> Problem {
    Problem::from(EngineError::PreconditionFailed(error))
}

/// The completed upload a name shows, if any.
async fn live(state: &AppState, file: &FileKey) -> Result<Option<(Snapshot, FinalInfo)>, Problem> {
    match state.engine.published(file).await {
        Ok(snapshot) => match &snapshot.record.status {
            Status::Complete(info) => {
                let info = info.clone();
                Ok(Some((snapshot, info)))
            }
            _ => Ok(None),
        },
        Err(EngineError::NotFound) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn live_of(found: Option<&(Snapshot, FinalInfo)>) -> Option<Live> {
    found.map(|(_, info)| Live {
        generation: info.generation(),
        metageneration: 1,
    })
}

/// The object resource JSON a client sends with an upload (§7.3).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    name: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, Option<String>>>,
    md5_hash: Option<String>,
    crc32c: Option<String>,
}

impl Resource {
    fn parse(bytes: &[u8]) -> Result<Resource, Problem> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Resource::default());
        }
        serde_json::from_slice(bytes).map_err(|error| {
            Problem::bad_request(format!("the object resource is not valid: {error}"))
        })
    }
}

/// What an upload request asks for, whatever its `uploadType`.
struct Planned {
    file: FileKey,
    content_type: Option<String>,
    metadata: std::collections::BTreeMap<String, String>,
    rules: ObjectRules,
    total: Option<u64>,
}

fn plan(
    namespace: Namespace,
    params: &Params,
    resource: Resource,
    content_type: Option<String>,
    total: Option<u64>,
) -> Result<Planned, Problem> {
    let object = resource
        .name
        .or_else(|| params.get("name").cloned())
        .ok_or_else(|| {
            Problem::bad_request("the object has no name (name= or the resource's name)")
        })?;
    let file = file_key(namespace, &object)?;
    let digest = |value: Option<String>, len: usize, what: &str| {
        value
            .map(|text| {
                canonical_digest(&text, len).ok_or_else(|| {
                    Problem::bad_request(format!("{what} is not base64 of {len} bytes"))
                })
            })
            .transpose()
    };
    let rules = ObjectRules {
        md5: digest(resource.md5_hash, 16, "md5Hash")?,
        crc32c: digest(resource.crc32c, 4, "crc32c")?,
        preconditions: preconditions(params)?,
    };
    let metadata = resource
        .metadata
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, value)| Some((key, STANDARD.encode(value?))))
        .collect();
    Ok(Planned {
        file,
        content_type: resource.content_type.or(content_type),
        metadata,
        rules,
        total,
    })
}

/// Creates the upload a plan describes, once its preconditions hold for
/// the object the name shows now (they are checked again at completion).
async fn create(
    state: &AppState,
    access: &Access,
    planned: Planned,
) -> Result<tenax_core::UploadId, Problem> {
    state.check_size(access, planned.total)?;
    let current = live(state, &planned.file).await?;
    planned
        .rules
        .preconditions
        .check(live_of(current.as_ref()))
        .map_err(precondition_failed)?;
    Ok(state
        .engine
        .create(NewUpload {
            namespace: planned.file.namespace,
            name: Some(planned.file.name),
            total: planned.total,
            content_type: planned.content_type,
            metadata: planned.metadata,
            digests: DigestSet::MD5,
            object: Some(planned.rules),
            ..NewUpload::default()
        })
        .await?)
}

/// `POST /upload/storage/v1/b/{bucket}/o?uploadType=…` (§7.3).
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(bucket): Path<String>,
    Query(params): Query<Params>,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::body::detached(async move {
        let namespace = namespace(&caller.access, &bucket)?;
        match params.get("uploadType").map(String::as_str) {
            Some("resumable") => {
                resumable(&state, &caller, namespace, &params, &origin, &headers, body).await
            }
            Some("multipart") => {
                multipart(&state, &caller, namespace, &params, &origin, &headers, body).await
            }
            Some("media") | None => {
                media(&state, &caller, namespace, &params, &origin, &headers, body).await
            }
            Some(other) => Err(Problem::bad_request(format!(
                "uploadType {other:?} is not served"
            ))),
        }
    })
    .await
}

/// `uploadType=resumable`: a session at `/uploads/{id}` (§7.3).
async fn resumable(
    state: &AppState,
    caller: &Caller,
    namespace: Namespace,
    params: &Params,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let total = header_str(headers, "x-upload-content-length")?
        .map(|text| {
            parse_u64(text)
                .map_err(|error| Problem::bad_request(format!("X-Upload-Content-Length: {error}")))
        })
        .transpose()?;
    let content_type = header_str(headers, "x-upload-content-type")?.map(str::to_owned);
    let resource = Resource::parse(&control_body(headers, body).await?)?;
    let planned = plan(namespace, params, resource, content_type, total)?;
    let id = create(state, &caller.access, planned).await?;
    let location = origin.url(&format!("/uploads/{id}"))?;
    let mut response = (
        StatusCode::OK,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, no_store()),
        ],
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-guploader-uploadid", value);
    }
    Ok(response)
}

/// The object bytes of a `multipart/related` body, streamed on as the
/// reader finds them; an error when the body breaks or ends before its
/// closing boundary (then the upload is not completed).
fn media_stream(
    reader: Multipart,
    pending: VecDeque<Bytes>,
    ended: bool,
    rest: axum::body::BodyDataStream,
) -> Body {
    struct State {
        reader: Multipart,
        pending: VecDeque<Bytes>,
        ended: bool,
        failed: bool,
        rest: axum::body::BodyDataStream,
    }
    let start = State {
        reader,
        pending,
        ended,
        failed: false,
        rest,
    };
    let stream = futures_util::stream::unfold(start, |mut state| async move {
        loop {
            if let Some(bytes) = state.pending.pop_front() {
                return Some((Ok(bytes), state));
            }
            if state.ended || state.failed {
                return None;
            }
            let failure = match state.rest.next().await {
                Some(Ok(frame)) => match state.reader.push(&frame) {
                    Ok(events) => {
                        for event in events {
                            match event {
                                MultipartEvent::Data(bytes) => {
                                    state.pending.push_back(Bytes::from(bytes))
                                }
                                MultipartEvent::End => state.ended = true,
                                _ => {}
                            }
                        }
                        continue;
                    }
                    Err(error) => error.to_string(),
                },
                Some(Err(error)) => error.to_string(),
                None => match state.reader.finish() {
                    Ok(()) => {
                        state.ended = true;
                        continue;
                    }
                    Err(error) => error.to_string(),
                },
            };
            state.failed = true;
            return Some((Err(std::io::Error::other(failure)), state));
        }
    });
    Body::from_stream(stream)
}

/// `uploadType=multipart`: the resource and the bytes in one body (§7.3).
async fn multipart(
    state: &AppState,
    caller: &Caller,
    namespace: Namespace,
    params: &Params,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let boundary = gcs::multipart_boundary(
        header_str(headers, header::CONTENT_TYPE.as_str())?.unwrap_or_default(),
    )
    .map_err(|error| Problem::bad_request(error.to_string()))?;
    let mut reader = Multipart::new(&boundary);
    let mut rest = body.into_data_stream();
    let (mut metadata, mut media_type, mut pending, mut ended) =
        (None, None, VecDeque::new(), false);
    // Read up to the start of the object's bytes: only the resource is
    // held in memory (at most MAX_MULTIPART_METADATA).
    while media_type.is_none() {
        let frame = match rest.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Err(Problem::bad_request(format!("request body: {error}"))),
            None => {
                return Err(Problem::bad_request(
                    "the multipart body ended before the object's bytes",
                ));
            }
        };
        let events = reader
            .push(&frame)
            .map_err(|error| Problem::bad_request(error.to_string()))?;
        for event in events {
            match event {
                MultipartEvent::Metadata { body, .. } => metadata = Some(body),
                MultipartEvent::Media { content_type } => {
                    media_type = Some(content_type);
                }
                MultipartEvent::Data(bytes) => pending.push_back(Bytes::from(bytes)),
                MultipartEvent::End => ended = true,
            }
        }
    }
    let resource = Resource::parse(&metadata.unwrap_or_default())?;
    let planned = plan(namespace, params, resource, media_type.flatten(), None)?;
    let body = media_stream(reader, pending, ended, rest);
    single_request(state, caller, origin, planned, body).await
}

/// `uploadType=media`: the bytes alone, the name in the query (§7.3).
async fn media(
    state: &AppState,
    caller: &Caller,
    namespace: Namespace,
    params: &Params,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let total = header_str(headers, header::CONTENT_LENGTH.as_str())?
        .map(|text| {
            parse_u64(text)
                .map_err(|error| Problem::bad_request(format!("Content-Length: {error}")))
        })
        .transpose()?;
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str())?.map(str::to_owned);
    let mut planned = plan(namespace, params, Resource::default(), content_type, total)?;
    if let Some(value) = header_str(headers, "x-goog-hash")? {
        let hash =
            GoogHash::parse(value).map_err(|error| Problem::bad_request(error.to_string()))?;
        planned.rules.md5 = hash.md5.or(planned.rules.md5);
        planned.rules.crc32c = hash.crc32c.or(planned.rules.crc32c);
    }
    single_request(state, caller, origin, planned, body).await
}

/// A multipart or media upload: created, written and completed by one
/// request. A refused precondition cancels it (nothing to keep); a digest
/// mismatch keeps its bytes (§7.4).
async fn single_request(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    planned: Planned,
    body: Body,
) -> Result<Response, Problem> {
    let id = create(state, &caller.access, planned).await?;
    let mut lease = state.engine.lease(id).await?;
    let request = Append {
        finish: Finish::Declared,
        ..Append::default()
    };
    let appended = append::append(state, caller, &mut lease, body, request).await;
    match appended {
        Err(problem) if problem.kind() == crate::problem::PRECONDITION_FAILED => {
            lease.cancel().await?;
            Err(problem)
        }
        Err(problem) => Err(problem),
        Ok(appended) => match &lease.record().status {
            Status::Complete(info) => Ok(object_answer(origin, lease.record(), info, caller)),
            _ => Err(Problem::bad_request(match appended.interruption {
                Some(interruption) => format!(
                    "the body broke off after {} bytes ({interruption:?})",
                    lease.held()
                ),
                None => format!(
                    "the body holds {} bytes, not the {} announced",
                    lease.held(),
                    appended.short_of_length.unwrap_or_default()
                ),
            })),
        },
    }
}

/// 200 with the object resource (§7.6), and the completion hook's answer.
pub(crate) fn object_answer(
    origin: &Origin,
    record: &tenax_core::UploadRecord,
    info: &FinalInfo,
    caller: &Caller,
) -> Response {
    let mut body = object::resource(origin.base(), record, info);
    if let Some(answer) = caller.answer.get() {
        body["hookResponse"] = answer;
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, no_store())],
        axum::Json(body),
    )
        .into_response()
}

/// The object of a request, with its query's preconditions and
/// `generation` applied: 404 when the name shows none (or another
/// generation), 412 when a precondition does not hold.
async fn found(
    state: &AppState,
    access: &Access,
    bucket: &str,
    object: &str,
    params: &Params,
) -> Result<(Snapshot, FinalInfo), Problem> {
    let file = file_key(namespace(access, bucket)?, object)?;
    let not_found = || Problem::not_found(format!("No such object: {bucket}/{object}"));
    let found = live(state, &file).await?.ok_or_else(not_found)?;
    if let Some(generation) = number(params, "generation")?
        && generation != found.1.generation()
    {
        return Err(not_found());
    }
    preconditions(params)?
        .check(live_of(Some(&found)))
        .map_err(precondition_failed)?;
    Ok(found)
}

/// `GET /storage/v1/b/{bucket}/o/{object}`: the object resource, or with
/// `alt=media` its bytes (§7.6).
pub(crate) async fn get_object(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path((bucket, object)): Path<(String, String)>,
    Query(params): Query<Params>,
    origin: Origin,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (snapshot, info) = found(&state, &access, &bucket, &object, &params).await?;
    if params.get("alt").map(String::as_str) == Some("media") {
        return media_answer(&state, &method, &headers, &snapshot, &info).await;
    }
    Ok((
        StatusCode::OK,
        axum::Json(object::resource(origin.base(), &snapshot.record, &info)),
    )
        .into_response())
}

/// `GET /download/storage/v1/b/{bucket}/o/{object}`: the object's bytes
/// (§7.6).
pub(crate) async fn download(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path((bucket, object)): Path<(String, String)>,
    Query(params): Query<Params>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (snapshot, info) = found(&state, &access, &bucket, &object, &params).await?;
    media_answer(&state, &method, &headers, &snapshot, &info).await
}

/// The bytes, as `/files/NAME` serves them (§4: `Range`, validators),
/// with GCS's `x-goog-*` headers.
async fn media_answer(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    snapshot: &Snapshot,
    info: &FinalInfo,
) -> Result<Response, Problem> {
    let mut response = serve_complete(
        state.engine.storage(),
        method,
        headers,
        &snapshot.record,
        info,
    )
    .await?;
    let answer = response.headers_mut();
    for (name, value) in [
        ("x-goog-hash", object::goog_hash(info)),
        ("x-goog-generation", info.generation().to_string()),
        ("x-goog-metageneration", "1".to_owned()),
        ("x-goog-stored-content-length", info.size.to_string()),
        ("x-goog-stored-content-encoding", "identity".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            answer.insert(name, value);
        }
    }
    Ok(response)
}

/// `DELETE /storage/v1/b/{bucket}/o/{object}`: the object withdrawn and
/// its bytes removed (§7.6).
pub(crate) async fn delete_object(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path((bucket, object)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Result<Response, Problem> {
    let (snapshot, _) = found(&state, &access, &bucket, &object, &params).await?;
    let mut lease = state.engine.lease(snapshot.record.id).await?;
    lease.cancel().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One entry of a listing: an object, or a prefix standing for those
/// below a delimiter.
enum Entry {
    Object(Box<(Snapshot, FinalInfo)>),
    Prefix(String),
}

/// `GET /storage/v1/b/{bucket}/o`: the objects, by name, with `prefix`,
/// `delimiter`, `maxResults` and `pageToken` (§7.6).
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    Path(bucket): Path<String>,
    Query(params): Query<Params>,
    origin: Origin,
) -> Result<Response, Problem> {
    let namespace = namespace(&access, &bucket)?;
    let prefix = params.get("prefix").map(String::as_str).unwrap_or_default();
    let delimiter = params
        .get("delimiter")
        .map(String::as_str)
        .filter(|d| !d.is_empty());
    let max = number(&params, "maxResults")?
        .unwrap_or(1000)
        .clamp(1, 1000);
    let after = match params.get("pageToken") {
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| Problem::bad_request("invalid pageToken"))?,
        ),
        None => None,
    };
    let mut entries: std::collections::BTreeMap<String, Entry> = std::collections::BTreeMap::new();
    for (file, snapshot) in state.engine.published_files(&namespace).await? {
        let name = gcs::object_name(&file);
        let Some(below) = name.strip_prefix(prefix) else {
            continue;
        };
        let Status::Complete(info) = &snapshot.record.status else {
            continue;
        };
        let entry = match delimiter
            .and_then(|delimiter| below.find(delimiter).map(|at| at + delimiter.len()))
        {
            Some(end) => {
                let folded = format!("{prefix}{}", &below[..end]);
                (folded.clone(), Entry::Prefix(folded))
            }
            None => (
                name.clone(),
                Entry::Object(Box::new((snapshot.clone(), info.clone()))),
            ),
        };
        entries.entry(entry.0).or_insert(entry.1);
    }
    let mut items = Vec::new();
    let mut prefixes = BTreeSet::new();
    let mut last = None;
    let mut more = false;
    let mut count = 0;
    for (key, entry) in entries {
        if after.as_ref().is_some_and(|after| key <= *after) {
            continue;
        }
        if count == max {
            more = true;
            break;
        }
        count += 1;
        match entry {
            Entry::Object(found) => {
                let (snapshot, info) = *found;
                items.push(object::resource(origin.base(), &snapshot.record, &info));
            }
            Entry::Prefix(prefix) => {
                prefixes.insert(prefix);
            }
        }
        last = Some(key);
    }
    let mut body = json!({"kind": "storage#objects"});
    if !items.is_empty() {
        body["items"] = Value::Array(items);
    }
    if !prefixes.is_empty() {
        body["prefixes"] = prefixes.into_iter().map(Value::String).collect();
    }
    if more && let Some(last) = last {
        body["nextPageToken"] = URL_SAFE_NO_PAD.encode(last).into();
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `GET /storage/v1/b/{bucket}`: the bucket resource, for clients that
/// look a bucket up before using it (§7.1).
pub(crate) async fn get_bucket(
    Extension(access): Extension<Access>,
    Path(bucket): Path<String>,
    origin: Origin,
) -> Result<Response, Problem> {
    let namespace = namespace(&access, &bucket)?;
    let name = bucket_of(&namespace).to_owned();
    Ok(axum::Json(json!({
        "kind": "storage#bucket",
        "id": name,
        "name": name,
        "selfLink": format!("{}/storage/v1/b/{}", origin.base(), object::encode_segment(&name)),
        "location": "LOCAL",
        "storageClass": "STANDARD",
        "metageneration": "1",
    }))
    .into_response())
}
