//! Power-cut torture: the real `tenax serve` with its data directory on a
//! forgetful file system (`tenax_testkit::ForgetfulFs`), which at each cut
//! drops what was not synced (file data until `fdatasync`, names until their
//! directory's `fsync`) or, in the harsher mode, keeps a file's new size with
//! zeros for its unsynced bytes. Uploads run in every dialect while the power
//! goes at seeded random moments: the file system fails every operation
//! (`EIO`), the server is killed, the file system is rolled back to what a
//! disk would hold and remounted, the server restarted; the clients resume
//! from what the server says it holds.
//!
//! The uploads: seed (named; several share a name, so names are published
//! and replaced), tus with a `sha1` `Upload-Checksum` on every chunk, tus
//! concatenation (two partial uploads and a final), IETF RUFH (one creation
//! request with the whole body over raw HTTP/1.1, reading its `104` progress
//! answers, then `HEAD` and `PATCH` to resume), and tus uploads abandoned half
//! way that must expire. Hooks deliver to a webhook receiver through the
//! server's outbox (on the same forgetful disk).
//!
//! Checked after every cut and at the end (docs/storage.md, "Power cuts"):
//!
//! * every acknowledgement still holds: a seed `308` `Range`, a tus or RUFH
//!   `Upload-Offset` (104 progress answers included), a completion (`200`,
//!   `204` at the size, a RUFH `Upload-Complete: ?1`): any offset the server
//!   reports later is at least the largest acknowledged;
//! * the server never resumes past what it synced: whenever it reports an
//!   offset after a failure, the bytes it holds before that offset are read
//!   back (`GET /uploads/ID` with a `Range`) and must be the source's (a
//!   zero-filled tail fails here);
//! * every completed upload reads back byte-exact by id, every published
//!   name byte-exact as one of the uploads published under it;
//! * no outbox event is lost (a `created` event for every upload created, a
//!   `completed` for every completion acknowledged, an `expired` for every
//!   abandoned upload) and none is delivered twice under two ids.
//!
//! Skipped without FUSE unless `TENAX_TEST_FUSE` is set (`scripts/test`
//! sets it as root). Environment for larger runs by hand:
//! `TENAX_POWER_UPLOADS` (32), `TENAX_POWER_MAX_SIZE` (512 KiB),
//! `TENAX_POWER_CUTS` (12), `TENAX_POWER_TIMEOUT_SECS` (150),
//! `TENAX_TEST_SEED`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::Client;
use serde_json::Value;
use sha1::Digest as _;
use support::SeededBytes;
use tenax_testkit::forgetful::mount_or_skip;
use tenax_testkit::{ForgetfulFs, Loss, Rng, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_tenax");
/// Bytes per independently seeded block of a source.
const BLOCK: u64 = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF: (u64, u64) = (20, 300);
/// The time to live of an upload that receives nothing (the abandoned
/// ones expire; the others are touched far more often).
const TTL_SECS: u64 = 5;
/// Bytes of the tail checked against the source whenever the server reports
/// an offset after a failure.
const TAIL_CHECK: u64 = 64 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
        })
        .unwrap_or(default)
}

/// A window of a source (a concatenation's part, or a whole source).
#[derive(Debug, Clone, Copy)]
struct Part {
    whole: SeededBytes,
    start: u64,
    size: u64,
}

impl Part {
    /// `[start, end)` of `whole`.
    fn of(whole: SeededBytes, start: u64, end: u64) -> Part {
        Part {
            whole,
            start,
            size: end - start,
        }
    }

    fn bytes(&self, from: u64, to: u64) -> Vec<u8> {
        self.whole.bytes(self.start + from, self.start + to)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seed,
    Tus,
    Concat,
    Rufh,
    Abandoned,
}

#[derive(Debug, Clone)]
struct Plan {
    index: usize,
    kind: Kind,
    source: SeededBytes,
    chunk: u64,
    name: String,
    rng_seed: u64,
}

/// What one client saw, for every upload id it worked on.
#[derive(Debug, Default)]
struct Seen {
    /// Upload id → largest offset acknowledged.
    acked: BTreeMap<String, u64>,
    acks: u64,
    violations: Vec<String>,
    /// Ids whose creation was acknowledged.
    created: Vec<String>,
    /// Ids whose completion was acknowledged (with their part of the source).
    completed: Vec<(String, Part)>,
    /// Ids left to expire.
    abandoned: Vec<String>,
    tail_checks: u64,
    failure: Option<String>,
}

impl Seen {
    fn ack(&mut self, id: &str, offset: u64, what: &str) {
        self.acks += 1;
        let best = self.acked.entry(id.to_owned()).or_insert(0);
        if offset < *best {
            self.violations.push(format!(
                "{id}: {what} reported {offset} after {} had been acknowledged",
                *best
            ));
        }
        *best = (*best).max(offset);
    }

    /// An offset reported after a failure: must cover the acknowledgements.
    fn check(&mut self, id: &str, offset: u64, what: &str) {
        let best = self.acked.get(id).copied().unwrap_or(0);
        if offset < best {
            self.violations.push(format!(
                "{id}: {what} reported {offset} after {best} had been acknowledged"
            ));
        }
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn id_of(location: &str) -> String {
    let path = location.split('?').next().unwrap_or_default();
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

fn header_u64(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// The offset in a seed `Range: bytes=0-N` (none: 0).
fn seed_range(response: &reqwest::Response) -> Option<u64> {
    match response.headers().get("range") {
        None => Some(0),
        Some(value) => value
            .to_str()
            .ok()?
            .strip_prefix("bytes=0-")?
            .parse::<u64>()
            .ok()
            .map(|last| last + 1),
    }
}

/// One upload's session: its URL, what it sent, its backoff.
struct Session<'a> {
    base: &'a str,
    client: Client,
    rng: Rng,
    deadline: Instant,
}

/// The server's word after a request.
enum Word {
    Held(u64),
    Complete,
    Retry(String),
    Gone(u16),
}

impl Session<'_> {
    async fn backoff(&mut self) {
        self.client = client();
        tokio::time::sleep(Duration::from_millis(
            self.rng.between(BACKOFF.0, BACKOFF.1),
        ))
        .await;
    }

    fn late(&self) -> bool {
        Instant::now() > self.deadline
    }

    /// Creates an upload until an answer comes; returns the URL.
    async fn create(
        &mut self,
        request: impl Fn(&Client) -> reqwest::RequestBuilder,
        ok: u16,
    ) -> Result<String, String> {
        loop {
            if self.late() {
                return Err("creation never answered".into());
            }
            match request(&self.client).send().await {
                Ok(response) if response.status().as_u16() == ok => {
                    let location = response
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .ok_or("no Location")?;
                    return Ok(if location.starts_with('/') {
                        format!("{}{location}", self.base)
                    } else {
                        location.to_owned()
                    });
                }
                _ => self.backoff().await,
            }
        }
    }

    /// Reads back the last bytes the server says it holds and compares
    /// them with the source: a server that resumed past what it synced
    /// (a zero-filled tail) fails here.
    async fn tail_check(&mut self, id: &str, part: &Part, held: u64, seen: &mut Seen) {
        if held == 0 {
            return;
        }
        let from = held.saturating_sub(TAIL_CHECK);
        let url = format!("{}/uploads/{id}", self.base);
        let Ok(response) = self
            .client
            .get(&url)
            .header("range", format!("bytes={from}-{}", held - 1))
            .send()
            .await
        else {
            return;
        };
        if !matches!(response.status().as_u16(), 200 | 206) {
            return;
        }
        let whole = response.status().as_u16() == 200;
        let Ok(body) = response.bytes().await else {
            return;
        };
        let start = if whole { 0 } else { from };
        let end = start + body.len() as u64;
        if end > part.size || body.as_ref() != part.bytes(start, end).as_slice() {
            seen.violations.push(format!(
                "{id}: the server holds {held} bytes but bytes {start}..{end} are not the source's"
            ));
        }
        seen.tail_checks += 1;
    }
}

async fn seed_word(result: reqwest::Result<reqwest::Response>) -> Word {
    match result {
        Ok(response) => match response.status().as_u16() {
            308 => seed_range(&response).map_or(Word::Retry("bad Range".into()), Word::Held),
            200 | 201 => Word::Complete,
            status @ (404 | 410) => Word::Gone(status),
            status => Word::Retry(format!("status {status}")),
        },
        Err(error) => Word::Retry(error.to_string()),
    }
}

fn tus_word(result: reqwest::Result<reqwest::Response>, size: u64) -> Word {
    match result {
        Ok(response) => match response.status().as_u16() {
            200 | 204 => match header_u64(&response, "upload-offset") {
                Some(offset) if offset == size => Word::Complete,
                Some(offset) => Word::Held(offset),
                None => Word::Retry("no Upload-Offset".into()),
            },
            status @ (404 | 410) => Word::Gone(status),
            status => Word::Retry(format!("status {status}")),
        },
        Err(error) => Word::Retry(error.to_string()),
    }
}

/// Seed or tus appends (tus with a checksum per chunk) until complete, or
/// until `stop_at` bytes (abandoned uploads).
async fn append_loop(
    session: &mut Session<'_>,
    seen: &mut Seen,
    kind: Kind,
    url: &str,
    part: Part,
    chunk: u64,
    stop_at: Option<u64>,
) -> Result<(), String> {
    let id = id_of(url);
    let size = part.size;
    let mut offset = Some(0u64);
    let mut last_error = String::new();
    loop {
        if session.late() {
            return Err(format!(
                "{id}: incomplete at the deadline (last error: {last_error})"
            ));
        }
        let (word, after_failure) = match offset {
            Some(at) if stop_at.is_some_and(|stop| at >= stop) => return Ok(()),
            Some(at) if kind == Kind::Seed || at < size => {
                // An abandoned upload never sends past its stop.
                let end = (at + chunk).min(stop_at.unwrap_or(size)).min(size);
                let body = part.bytes(at, end);
                let word = if kind == Kind::Seed {
                    let range = if at == end {
                        format!("bytes */{size}")
                    } else {
                        format!("bytes {at}-{}/{size}", end - 1)
                    };
                    seed_word(
                        session
                            .client
                            .put(url)
                            .header("content-range", range)
                            .body(body)
                            .send()
                            .await,
                    )
                    .await
                } else {
                    let checksum = format!("sha1 {}", BASE64.encode(sha1::Sha1::digest(&body)));
                    tus_word(
                        session
                            .client
                            .patch(url)
                            .header("tus-resumable", "1.0.0")
                            .header("upload-offset", at.to_string())
                            .header("upload-checksum", checksum)
                            .header("content-type", "application/offset+octet-stream")
                            .body(body)
                            .send()
                            .await,
                        size,
                    )
                };
                (word, false)
            }
            _ => {
                let word = if kind == Kind::Seed {
                    seed_word(
                        session
                            .client
                            .put(url)
                            .header("content-range", format!("bytes */{size}"))
                            .send()
                            .await,
                    )
                    .await
                } else {
                    tus_word(
                        session
                            .client
                            .head(url)
                            .header("tus-resumable", "1.0.0")
                            .send()
                            .await,
                        size,
                    )
                };
                (word, true)
            }
        };
        match word {
            Word::Held(held) => {
                if after_failure {
                    seen.check(&id, held, "a status query");
                    session.tail_check(&id, &part, held, seen).await;
                }
                seen.ack(&id, held, "an answer");
                offset = Some(held);
            }
            Word::Complete => {
                seen.ack(&id, size, "a completion");
                seen.completed.push((id, part));
                return Ok(());
            }
            Word::Gone(status) => {
                seen.violations
                    .push(format!("{id}: gone ({status}) while uploading"));
                return Err(format!("{id} gone"));
            }
            Word::Retry(error) => {
                last_error = error;
                offset = None;
                session.backoff().await;
            }
        }
    }
}

fn tus_create(
    base: &str,
    size: u64,
    name: &str,
    concat: Option<&str>,
) -> impl Fn(&Client) -> reqwest::RequestBuilder {
    let (url, size, metadata, concat) = (
        format!("{base}/uploads"),
        size.to_string(),
        format!("filename {}", BASE64.encode(name)),
        concat.map(str::to_owned),
    );
    move |client: &Client| {
        let request = client
            .post(&url)
            .header("tus-resumable", "1.0.0")
            .header("upload-length", &size)
            .header("upload-metadata", &metadata);
        match &concat {
            Some(concat) => request.header("upload-concat", concat),
            None => request,
        }
    }
}

/// RUFH creation with the whole body over raw HTTP/1.1, reading every
/// `104` (its `Upload-Offset` is an acknowledgement) until the final
/// answer. Returns the upload URL if a `104` or the final answer gave it.
async fn rufh_post(base: &str, name: &str, part: &Part, seen: &mut Seen) -> (Option<String>, bool) {
    let addr = base.trim_start_matches("http://").to_owned();
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    else {
        return (None, false);
    };
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: {addr}\r\nUpload-Draft-Interop-Version: 9\r\n\
         Upload-Complete: ?1\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        part.size
    );
    let body_part = *part;
    let send = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let mut at = 0;
        while at < body_part.size {
            let end = (at + 32 * 1024).min(body_part.size);
            writer.write_all(&body_part.bytes(at, end)).await?;
            at = end;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.flush().await?;
        // Keep the write half open until the answer is read.
        tokio::time::sleep(REQUEST_TIMEOUT).await;
        Ok::<_, std::io::Error>(())
    });
    let mut buffer = Vec::new();
    let mut url = None;
    let mut complete = false;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    'answers: loop {
        // One answer's head.
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, reader.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => break 'answers,
            }
        };
        let text = String::from_utf8_lossy(&buffer[..end]).into_owned();
        buffer.drain(..end + 4);
        let mut lines = text.lines();
        let status: u16 = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let mut offset = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "location" => {
                    let value = value.trim();
                    url = Some(if value.starts_with('/') {
                        format!("{base}{value}")
                    } else {
                        value.to_owned()
                    });
                }
                "upload-offset" => offset = value.trim().parse::<u64>().ok(),
                "upload-complete" => complete = value.trim() == "?1",
                _ => {}
            }
        }
        if let (Some(url), Some(offset)) = (&url, offset) {
            let what = if status == 104 {
                "a 104 progress answer"
            } else {
                "the creation answer"
            };
            seen.ack(&id_of(url), offset, what);
        }
        if status != 104 && status >= 200 {
            complete = complete && status == 201;
            break;
        }
        if status == 0 {
            break;
        }
        if status != 104 {
            continue;
        }
    }
    send.abort();
    (url, complete)
}

/// A RUFH upload: the creation with everything, then `HEAD` + `PATCH`.
async fn rufh_upload(
    session: &mut Session<'_>,
    seen: &mut Seen,
    plan: &Plan,
) -> Result<(), String> {
    let part = Part::of(plan.source, 0, plan.source.size);
    let url = loop {
        if session.late() {
            return Err("RUFH creation never answered".into());
        }
        let (url, complete) = rufh_post(session.base, &plan.name, &part, seen).await;
        if let Some(url) = url {
            let id = id_of(&url);
            seen.created.push(id.clone());
            if complete {
                seen.ack(&id, part.size, "a completion");
                seen.completed.push((id, part));
                return Ok(());
            }
            break url;
        }
        session.backoff().await;
    };
    let id = id_of(&url);
    loop {
        if session.late() {
            return Err(format!("{id}: RUFH upload incomplete at the deadline"));
        }
        let head = session
            .client
            .head(&url)
            .header("upload-draft-interop-version", "9")
            .send()
            .await;
        let held = match head {
            Ok(response) if response.status().as_u16() == 204 => {
                let complete = response
                    .headers()
                    .get("upload-complete")
                    .is_some_and(|v| v.as_bytes() == b"?1");
                match header_u64(&response, "upload-offset") {
                    Some(offset) if complete && offset == part.size => {
                        seen.check(&id, offset, "a HEAD");
                        seen.ack(&id, offset, "a completion");
                        seen.completed.push((id, part));
                        return Ok(());
                    }
                    Some(offset) => offset,
                    None => {
                        session.backoff().await;
                        continue;
                    }
                }
            }
            Ok(response) if matches!(response.status().as_u16(), 404 | 410) => {
                seen.violations.push(format!(
                    "{id}: gone ({}) while uploading",
                    response.status()
                ));
                return Err(format!("{id} gone"));
            }
            _ => {
                session.backoff().await;
                continue;
            }
        };
        seen.check(&id, held, "a HEAD");
        session.tail_check(&id, &part, held, seen).await;
        seen.ack(&id, held, "a HEAD");
        let answer = session
            .client
            .patch(&url)
            .header("upload-draft-interop-version", "9")
            .header("content-type", "application/partial-upload")
            .header("upload-offset", held.to_string())
            .header("upload-complete", "?1")
            .body(part.bytes(held, part.size))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().as_u16() == 200 => {
                seen.ack(&id, part.size, "a completion");
                seen.completed.push((id, part));
                return Ok(());
            }
            _ => session.backoff().await,
        }
    }
}

async fn run(base: String, plan: Plan, deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut session = Session {
        base: &base,
        client: client(),
        rng: Rng::new(plan.rng_seed),
        deadline,
    };
    let size = plan.source.size;
    let whole = Part::of(plan.source, 0, size);
    let result = match plan.kind {
        Kind::Seed => {
            let url = format!("{base}/api/upload?file={}", plan.name);
            let length = size.to_string();
            match session
                .create(
                    |client| client.post(&url).header("x-upload-content-length", &length),
                    200,
                )
                .await
            {
                Ok(location) => {
                    seen.created.push(id_of(&location));
                    append_loop(
                        &mut session,
                        &mut seen,
                        Kind::Seed,
                        &location,
                        whole,
                        plan.chunk,
                        None,
                    )
                    .await
                }
                Err(error) => Err(error),
            }
        }
        Kind::Tus | Kind::Abandoned => {
            match session
                .create(tus_create(&base, size, &plan.name, None), 201)
                .await
            {
                Ok(location) => {
                    let id = id_of(&location);
                    seen.created.push(id.clone());
                    let stop = (plan.kind == Kind::Abandoned).then_some(size / 2);
                    let result = append_loop(
                        &mut session,
                        &mut seen,
                        Kind::Tus,
                        &location,
                        whole,
                        plan.chunk,
                        stop,
                    )
                    .await;
                    if plan.kind == Kind::Abandoned {
                        seen.abandoned.push(id);
                    }
                    result
                }
                Err(error) => Err(error),
            }
        }
        Kind::Concat => {
            let middle = size / 2;
            let mut parts = Vec::new();
            let mut result = Ok(());
            for (from, to) in [(0, middle), (middle, size)] {
                let part = Part::of(plan.source, from, to);
                match session
                    .create(
                        tus_create(&base, to - from, &plan.name, Some("partial")),
                        201,
                    )
                    .await
                {
                    Ok(location) => {
                        seen.created.push(id_of(&location));
                        if let Err(error) = append_loop(
                            &mut session,
                            &mut seen,
                            Kind::Tus,
                            &location,
                            part,
                            plan.chunk,
                            None,
                        )
                        .await
                        {
                            result = Err(error);
                        }
                        parts.push(location);
                    }
                    Err(error) => result = Err(error),
                }
            }
            if result.is_ok() {
                let concat = format!("final;{}", parts.join(" "));
                let (url, metadata) = (
                    format!("{base}/uploads"),
                    format!("filename {}", BASE64.encode(&plan.name)),
                );
                match session
                    .create(
                        |client| {
                            client
                                .post(&url)
                                .header("tus-resumable", "1.0.0")
                                .header("upload-concat", &concat)
                                .header("upload-metadata", &metadata)
                        },
                        201,
                    )
                    .await
                {
                    Ok(location) => {
                        let id = id_of(&location);
                        seen.created.push(id.clone());
                        // Assembled by the server: wait for the offset.
                        result = loop {
                            if session.late() {
                                break Err(format!("{id}: final never assembled"));
                            }
                            match tus_word(
                                session
                                    .client
                                    .head(&location)
                                    .header("tus-resumable", "1.0.0")
                                    .send()
                                    .await,
                                size,
                            ) {
                                Word::Complete => {
                                    seen.ack(&id, size, "a completion");
                                    seen.completed.push((id, whole));
                                    break Ok(());
                                }
                                Word::Gone(status) => {
                                    seen.violations.push(format!("{id}: final gone ({status})"));
                                    break Err("final gone".into());
                                }
                                _ => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        };
                    }
                    Err(error) => result = Err(error),
                }
            }
            result
        }
        Kind::Rufh => rufh_upload(&mut session, &mut seen, &plan).await,
    };
    if let Err(error) = result {
        seen.failure = Some(format!("upload #{} ({:?}): {error}", plan.index, plan.kind));
    }
    seen
}

/// Cuts the power at random moments until `stop` or `max`: the disk fails,
/// the server is killed, the disk is rolled back (one cut in three in the
/// zero-tail mode) and remounted, the server restarted.
fn cutter(
    mut fs: ForgetfulFs,
    mut server: TestServer,
    seed: u64,
    max: u64,
    stop: Arc<AtomicBool>,
) -> (ForgetfulFs, TestServer, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut log = Vec::new();
    while (log.len() as u64) < max {
        let until = Instant::now() + Duration::from_millis(rng.between(100, 800));
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        log.push(power_cut(&mut fs, &mut server, &mut rng));
    }
    (fs, server, log)
}

fn power_cut(fs: &mut ForgetfulFs, server: &mut TestServer, rng: &mut Rng) -> String {
    // One cut in two lands at the worst moment for data: on the next sync
    // of unsynced writes (if one comes within a second), so that what the
    // server wrote but had not synced is lost or, in the zero-tail mode,
    // zeros under the file's new length.
    let mut at = "a random moment";
    if rng.between(0, 1) == 0 {
        fs.cut_at_next_sync();
        let until = Instant::now() + Duration::from_secs(1);
        while !fs.is_cut() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if fs.is_cut() {
            at = "a sync of unsynced data";
        }
    }
    fs.cut();
    // The dead disk for a moment, as the process sees it before it dies.
    std::thread::sleep(Duration::from_millis(rng.between(0, 30)));
    server.kill9();
    let loss = if rng.between(0, 2) == 0 {
        Loss::ZeroTail
    } else {
        Loss::Unsynced
    };
    let forgotten = fs.restore(loss).expect("the file system comes back");
    server.restart();
    format!("{loss:?} at {at}: {forgotten:?}")
}

/// The webhook receiver: every delivery, as received.
#[derive(Debug, Default)]
struct Deliveries(Mutex<Vec<Value>>);

async fn on_event(
    State(deliveries): State<Arc<Deliveries>>,
    body: Bytes,
) -> axum::http::StatusCode {
    if let Ok(event) = serde_json::from_slice::<Value>(&body) {
        deliveries.0.lock().expect("lock").push(event);
    }
    axum::http::StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_bytes_survive_power_cuts() {
    let Some(fs) = mount_or_skip("acknowledged_bytes_survive_power_cuts") else {
        return;
    };
    let uploads = env_u64("TENAX_POWER_UPLOADS", 32) as usize;
    let max_size = env_u64("TENAX_POWER_MAX_SIZE", 512 << 10);
    let max_cuts = env_u64("TENAX_POWER_CUTS", 12);
    let timeout = Duration::from_secs(env_u64("TENAX_POWER_TIMEOUT_SECS", 150));
    let mut rng = Rng::from_env_or_os();

    let deliveries = Arc::new(Deliveries::default());
    let app = axum::Router::new()
        .route("/events", axum::routing::post(on_event))
        .with_state(Arc::clone(&deliveries));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let kinds = [
        Kind::Seed,
        Kind::Tus,
        Kind::Rufh,
        Kind::Seed,
        Kind::Concat,
        Kind::Tus,
        Kind::Rufh,
        Kind::Abandoned,
    ];
    let plans: Vec<Plan> = (0..uploads)
        .map(|index| {
            let kind = kinds[index % kinds.len()];
            let size = match (index % 10, kind) {
                (_, Kind::Abandoned | Kind::Concat) => rng.between(2, max_size.max(2)),
                (0, _) => 0,
                _ => rng.between(1, max_size.max(1)),
            };
            Plan {
                index,
                kind,
                source: SeededBytes {
                    seed: rng.next_u64(),
                    size,
                    block: BLOCK,
                },
                chunk: rng.between(8 << 10, (max_size / 4).max(16 << 10)),
                // Seed uploads share four names: published and replaced.
                name: if kind == Kind::Seed {
                    format!("shared-{}.bin", index % 4)
                } else {
                    format!("power-{index}.bin")
                },
                rng_seed: rng.next_u64(),
            }
        })
        .collect();

    let data = fs.path().join("data");
    let ttl = format!("{TTL_SECS}s");
    let args = [
        "--hook-url",
        hook_url.as_str(),
        "--hook-retry-min",
        "50ms",
        "--hook-retry-max",
        "500ms",
        "--upload-ttl",
        ttl.as_str(),
        "--expiry-interval",
        "500ms",
        "--expired-retention",
        "1h",
    ];
    let server = TestServer::start_at(BIN, &data, &args);
    let base = server.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let cutter_seed = rng.next_u64();
    let cutter = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || cutter(fs, server, cutter_seed, max_cuts, stop))
    };

    let started = Instant::now();
    let deadline = started + timeout;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for plan in plans.iter().cloned() {
        let (semaphore, base) = (Arc::clone(&semaphore), base.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore");
            run(base, plan, deadline).await
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.expect("an upload task panicked"));
    }
    stop.store(true, Ordering::SeqCst);
    let (mut fs, mut server, mut cuts) = cutter.join().expect("the cutter panicked");
    // A last cut once everything is acknowledged: completions must be durable.
    let mut last = Rng::new(cutter_seed ^ 1);
    cuts.push(power_cut(&mut fs, &mut server, &mut last));
    let upload_time = started.elapsed();

    let mut problems: Vec<String> = Vec::new();
    let client = client();
    // Every acknowledgement still holds; every completed upload is exact.
    let mut acks = 0;
    let mut checked_bytes = 0;
    let mut corrupt = 0;
    for (plan, seen) in plans.iter().zip(&mut seen) {
        acks += seen.acks;
        problems.extend(
            seen.violations
                .iter()
                .map(|v| format!("upload #{}: {v}", plan.index)),
        );
        if let Some(failure) = &seen.failure {
            problems.push(format!("incomplete: {failure}"));
        }
        for (id, part) in seen.completed.clone() {
            let url = format!("{base}/uploads/{id}");
            match client.get(&url).send().await {
                Ok(response) if response.status().as_u16() == 200 => {
                    let body = response.bytes().await.unwrap_or_default();
                    checked_bytes += body.len() as u64;
                    if body.as_ref() != part.bytes(0, part.size).as_slice() {
                        corrupt += 1;
                        problems.push(format!(
                            "corrupt: upload #{} {id}: {} bytes read back, {} expected, first difference at {:?}",
                            plan.index,
                            body.len(),
                            part.size,
                            body.iter().zip(part.bytes(0, part.size)).position(|(a, b)| *a != b)
                        ));
                    }
                }
                Ok(response) => problems.push(format!(
                    "lost: upload #{} {id}: acknowledged complete, now {}",
                    plan.index,
                    response.status()
                )),
                Err(error) => problems.push(format!("upload #{} {id}: GET: {error}", plan.index)),
            }
        }
    }
    // Every published name holds, whole, one of the uploads published under it.
    let mut names: BTreeMap<&str, Vec<Part>> = BTreeMap::new();
    for (plan, seen) in plans.iter().zip(&seen) {
        if plan.kind != Kind::Abandoned {
            for (_, part) in &seen.completed {
                if part.size == plan.source.size {
                    names.entry(plan.name.as_str()).or_default().push(*part);
                }
            }
        }
    }
    for (name, parts) in &names {
        match client.get(format!("{base}/files/{name}")).send().await {
            Ok(response) if response.status().as_u16() == 200 => {
                let body = response.bytes().await.unwrap_or_default();
                checked_bytes += body.len() as u64;
                if !parts
                    .iter()
                    .any(|part| body.as_ref() == part.bytes(0, part.size).as_slice())
                {
                    corrupt += 1;
                    problems.push(format!(
                        "corrupt: /files/{name} ({} bytes) is none of its uploads",
                        body.len()
                    ));
                }
                // The published file on disk (what anything reading the data
                // directory sees) is the one the server serves.
                match std::fs::read(data.join("files").join(name)) {
                    Ok(on_disk) if on_disk == body.as_ref() => {}
                    Ok(on_disk) => problems.push(format!(
                        "files/{name} on disk ({} bytes) is not what the server serves ({} bytes)",
                        on_disk.len(),
                        body.len()
                    )),
                    Err(error) => problems.push(format!("files/{name} on disk: {error}")),
                }
            }
            Ok(response) => problems.push(format!(
                "lost: /files/{name} answered {}",
                response.status()
            )),
            Err(error) => problems.push(format!("/files/{name}: {error}")),
        }
    }
    // The abandoned uploads expire (410 while remembered).
    // (A status query counts as activity: wait out the time to live first.)
    let abandoned: Vec<String> = seen.iter().flat_map(|s| s.abandoned.clone()).collect();
    if !abandoned.is_empty() {
        tokio::time::sleep(Duration::from_secs(TTL_SECS * 2)).await;
    }
    let expire_by = Instant::now() + Duration::from_secs(TTL_SECS * 4);
    for id in &abandoned {
        loop {
            let status = client
                .head(format!("{base}/uploads/{id}"))
                .header("tus-resumable", "1.0.0")
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if matches!(status, 404 | 410) {
                break;
            }
            if Instant::now() > expire_by {
                problems.push(format!(
                    "abandoned upload {id} did not expire (status {status})"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_secs(TTL_SECS * 2)).await;
        }
    }
    // Events: none lost, none twice under two ids.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for seen in &seen {
        expected.extend(
            seen.completed
                .iter()
                .map(|(id, _)| format!("{id}.completed")),
        );
        expected.extend(seen.abandoned.iter().map(|id| format!("{id}.expired")));
    }
    let events_by = Instant::now() + Duration::from_secs(30);
    let (delivered, events_lost) = loop {
        let delivered: Vec<Value> = deliveries.0.lock().expect("lock").clone();
        let ids: BTreeSet<String> = delivered
            .iter()
            .filter_map(|event| event["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<String> = expected.difference(&ids).cloned().collect();
        if missing.is_empty() || Instant::now() > events_by {
            break (delivered, missing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in &events_lost {
        problems.push(format!("event lost: {id}"));
    }
    // Per upload and type, one event id (stable ids make a redelivery a
    // duplicate the receiver drops); every `completed` at the full size.
    let mut by_kind: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut doubled = 0;
    for event in &delivered {
        let (Some(id), Some(kind), Some(upload)) = (
            event["id"].as_str(),
            event["type"].as_str(),
            event["upload"]["id"].as_str(),
        ) else {
            problems.push(format!("malformed event {event}"));
            continue;
        };
        if kind != "progress" {
            by_kind
                .entry((upload.to_owned(), kind.to_owned()))
                .or_default()
                .insert(id.to_owned());
        }
        if kind == "completed" && event["upload"]["offset"] != event["upload"]["size"] {
            problems.push(format!("completed event short of its size: {event}"));
        }
    }
    for ((upload, kind), ids) in &by_kind {
        if ids.len() > 1 {
            doubled += 1;
            problems.push(format!(
                "{upload}: {kind} delivered under {} ids",
                ids.len()
            ));
        }
    }
    let unique: BTreeSet<&str> = delivered.iter().filter_map(|e| e["id"].as_str()).collect();
    let tail_checks: u64 = seen.iter().map(|s| s.tail_checks).sum();
    let completed: usize = seen.iter().map(|s| s.completed.len()).sum();
    println!(
        "power-cut torture: uploads {uploads} ({completed} completions), cuts {}, acknowledgements \
         checked {acks}, tail read-backs {tail_checks}, bytes read back {checked_bytes}, \
         corrupt files {corrupt}, events {} delivered ({} unique), events lost {}, doubled {doubled}, \
         problems {}, {:.1} s",
        cuts.len(),
        delivered.len(),
        unique.len(),
        events_lost.len(),
        problems.len(),
        upload_time.as_secs_f64()
    );
    for (n, cut) in cuts.iter().enumerate() {
        println!("  cut {n}: {cut}");
    }
    receiver.abort();
    drop(server);
    drop(fs);
    assert!(
        problems.is_empty(),
        "power-cut torture failed (replay with the TENAX_TEST_SEED printed above):\n  {}",
        problems.join("\n  ")
    );
}
