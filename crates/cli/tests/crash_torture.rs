//! Crash torture: many concurrent uploads (seed and tus dialects) against the
//! real server while it is killed with SIGKILL at random moments and
//! restarted on the same port and data directory; the clients resume from
//! whatever the server reports.
//!
//! Every acknowledgement a client receives (the offset of a seed `308`
//! `Range`, a tus `Upload-Offset`, a final `200`) is recorded; every offset the
//! server reports later for that upload must be at least the largest one
//! acknowledged before ("0 lost acknowledged bytes"), and every final file
//! must equal its source byte for byte ("0 corrupt files").
//!
//! Small sizes by default (CI); large ones by hand with `bench/torture`.
//! Environment:
//!
//! * `TENAX_TORTURE_UPLOADS` (100): number of uploads;
//! * `TENAX_TORTURE_MAX_SIZE` (2 MiB): largest upload, in bytes;
//! * `TENAX_TORTURE_CONCURRENCY` (12): uploads at a time;
//! * `TENAX_TORTURE_KILLS` (20): most SIGKILLs during the run;
//! * `TENAX_TORTURE_TIMEOUT_SECS` (240): bound on the whole run;
//! * `TENAX_TORTURE_DIALECTS` (`both`): `seed`, `tus` or `both` (one in three
//!   uploads then speaks tus);
//! * `TENAX_TEST_SEED`: replays a run (the seed is printed).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;
use support::SeededBytes;
use tenax_testkit::{Rng, TestServer};

/// Bytes per independently seeded block of a source.
const BLOCK: u64 = 64 * 1024;
/// Requests one upload may send before it gives up.
const MAX_REQUESTS: u32 = 20_000;
/// Timeout of one request (a killed server resets its connections at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bounds of the client's backoff after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long the killer waits between kills, in milliseconds.
const KILL_EVERY_MS: (u64, u64) = (100, 600);
/// How long the server stays dead, in milliseconds.
const DOWN_MS: (u64, u64) = (0, 50);
/// The run must have at least one kill during a chunk in flight for each
/// this long of its upload phase (and at least one): a kill in a quiet
/// moment tests nothing. The killer aims at chunks in flight; a kill cycle
/// is at most `KILL_EVERY_MS.1`, the aim and the restart, which is slow on
/// a loaded machine: this leaves room for that.
const MID_UPLOAD_KILL_EVERY: Duration = Duration::from_secs(10);

/// Chunk requests (with a body) sent and not yet answered: the killer
/// reads it at each kill to count the kills that landed mid-upload.
static CHUNKS_IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// Counts a chunk request as in flight while it lives.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        CHUNKS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        CHUNKS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Seed,
    Tus,
}

/// One upload to run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    index: usize,
    dialect: Dialect,
    source: SeededBytes,
    chunk: u64,
    backoff_seed: u64,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Outcome {
    url: Option<String>,
    done: bool,
    /// Why the upload did not complete.
    failure: Option<String>,
    /// Acknowledgements received (every offset the server reported).
    acks: u64,
    /// The largest offset acknowledged so far.
    max_ack: u64,
    /// Acknowledged bytes the server later did not report as held.
    lost: u64,
    /// Descriptions of the lost acknowledgements.
    violations: Vec<String>,
    /// Body bytes sent in chunk requests.
    sent: u64,
    requests: u32,
    errors: u32,
    final_json: Option<Value>,
    /// What told the client the upload was complete.
    completed_by: &'static str,
}

impl Outcome {
    /// Records an offset the server reported (`what` for the report).
    fn ack(&mut self, plan: &Plan, offset: u64, what: &str) {
        self.acks += 1;
        if offset < self.max_ack {
            self.lost += self.max_ack - offset;
            self.violations.push(format!(
                "upload #{} ({:?}, {} bytes, {}): {what} reported {offset} after {} had been acknowledged",
                plan.index,
                plan.dialect,
                plan.source.size,
                self.url.as_deref().unwrap_or("?"),
                self.max_ack
            ));
        }
        if offset > plan.source.size {
            self.violations.push(format!(
                "upload #{}: {what} reported {offset} > size {}",
                plan.index, plan.source.size
            ));
        }
        self.max_ack = self.max_ack.max(offset);
    }
}

/// The server's word on an upload after a request.
enum Reply {
    /// Holds this many bytes, not complete.
    Held(u64),
    /// Complete (with the seed dialect's final JSON).
    Complete(Option<Value>),
    /// The upload is gone (404/410): everything acknowledged is lost.
    Gone(u16),
    /// Any other answer or a transport error: back off and ask again.
    Retry(String),
}

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(1)
        .build()
        .expect("cannot build the HTTP client")
}

/// The held length from a seed `Range: bytes=0-N` (absent: 0).
fn seed_range(response: &reqwest::Response) -> Result<u64, String> {
    let Some(value) = response.headers().get("range") else {
        return Ok(0);
    };
    let text = value.to_str().map_err(|e| e.to_string())?;
    text.strip_prefix("bytes=0-")
        .and_then(|last| last.parse::<u64>().ok())
        .map(|last| last + 1)
        .ok_or_else(|| format!("bad Range {text:?}"))
}

fn upload_offset(response: &reqwest::Response) -> Result<u64, String> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{} without a valid Upload-Offset", response.status()))
}

/// Reads a seed answer (308, 200, 404/410, other).
async fn seed_reply(result: reqwest::Result<reqwest::Response>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(error) => return Reply::Retry(format!("transport: {error}")),
    };
    match response.status().as_u16() {
        308 => match seed_range(&response) {
            Ok(held) => Reply::Held(held),
            Err(error) => Reply::Retry(error),
        },
        200 => match response.bytes().await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(json) => Reply::Complete(Some(json)),
                Err(error) => Reply::Retry(format!("200 with a bad JSON body: {error}")),
            },
            Err(error) => Reply::Retry(format!("200 body: {error}")),
        },
        status @ (404 | 410) => Reply::Gone(status),
        status => Reply::Retry(format!("status {status}")),
    }
}

/// Reads a tus answer to PATCH (204) or HEAD (200).
fn tus_reply(result: reqwest::Result<reqwest::Response>, size: u64) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(error) => return Reply::Retry(format!("transport: {error}")),
    };
    match response.status().as_u16() {
        200 | 204 => match upload_offset(&response) {
            Ok(offset) if offset == size => Reply::Complete(None),
            Ok(offset) => Reply::Held(offset),
            Err(error) => Reply::Retry(error),
        },
        status @ (404 | 410) => Reply::Gone(status),
        status => Reply::Retry(format!("status {status}")),
    }
}

/// Exponential backoff between `BACKOFF_MIN` and `BACKOFF_MAX`, jittered.
struct Backoff {
    next: Duration,
    rng: Rng,
}

impl Backoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    async fn wait(&mut self) {
        let ms = u64::try_from(self.next.as_millis()).expect("small");
        tokio::time::sleep(Duration::from_millis(self.rng.between(ms / 2, ms))).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }
}

/// Creates the upload; returns its URL.
async fn create(client: &Client, base: &str, plan: &Plan) -> Result<String, String> {
    let size = plan.source.size.to_string();
    let request = match plan.dialect {
        Dialect::Seed => client
            .post(format!("{base}/uploads"))
            .header("content-type", "application/json; charset=UTF-8")
            .header("x-upload-content-type", "application/octet-stream")
            .header("x-upload-content-length", &size)
            .body(serde_json::json!({ "name": format!("torture-{}.bin", plan.index) }).to_string()),
        Dialect::Tus => client
            .post(format!("{base}/uploads"))
            .header("tus-resumable", "1.0.0")
            .header("upload-length", &size),
    };
    let response = request
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let expected = match plan.dialect {
        Dialect::Seed => 200,
        Dialect::Tus => 201,
    };
    if response.status().as_u16() != expected {
        return Err(format!("creation answered {}", response.status()));
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or("creation without Location")?;
    Ok(if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_owned()
    })
}

/// Asks the server what it holds.
async fn query(client: &Client, url: &str, plan: &Plan) -> Reply {
    match plan.dialect {
        Dialect::Seed => {
            seed_reply(
                client
                    .put(url)
                    .header("content-range", "bytes */*")
                    .send()
                    .await,
            )
            .await
        }
        Dialect::Tus => tus_reply(
            client
                .head(url)
                .header("tus-resumable", "1.0.0")
                .send()
                .await,
            plan.source.size,
        ),
    }
}

/// Sends `[at, at + chunk)` (or, with the seed dialect at the end, the
/// empty finalising `bytes */T`).
async fn send_chunk(client: &Client, url: &str, plan: &Plan, at: u64, out: &mut Outcome) -> Reply {
    let size = plan.source.size;
    let end = (at + plan.chunk).min(size);
    let body = plan.source.bytes(at, end);
    out.sent += end - at;
    let _in_flight = (end > at).then(InFlight::start);
    match plan.dialect {
        Dialect::Seed => {
            let range = if at == end {
                format!("bytes */{size}")
            } else {
                format!("bytes {at}-{}/{size}", end - 1)
            };
            seed_reply(
                client
                    .put(url)
                    .header("content-range", range)
                    .body(body)
                    .send()
                    .await,
            )
            .await
        }
        Dialect::Tus => tus_reply(
            client
                .patch(url)
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", at.to_string())
                .header("content-type", "application/offset+octet-stream")
                .body(body)
                .send()
                .await,
            size,
        ),
    }
}

/// Runs one upload to completion (or to its bounds), resuming after every error.
async fn run_upload(base: String, plan: Plan, deadline: Instant) -> Outcome {
    let mut out = Outcome::default();
    let mut client = client();
    let mut backoff = Backoff {
        next: BACKOFF_MIN,
        rng: Rng::new(plan.backoff_seed),
    };
    // Creation (a lost answer leaves an orphan session behind; harmless).
    let url = loop {
        if Instant::now() > deadline || out.requests >= MAX_REQUESTS {
            out.failure = Some("could not create the upload".into());
            return out;
        }
        out.requests += 1;
        match create(&client, &base, &plan).await {
            Ok(url) => break url,
            Err(_) => {
                out.errors += 1;
                client = self::client();
                backoff.wait().await;
            }
        }
    };
    out.url = Some(url.clone());
    backoff.reset();
    // The offset to send from; `None` after an error: ask the server.
    let mut offset = Some(0u64);
    let mut last_error = String::new();
    loop {
        if Instant::now() > deadline || out.requests >= MAX_REQUESTS {
            out.failure = Some(format!(
                "incomplete after {} requests, {} acknowledged of {}; last error: {last_error}",
                out.requests, out.max_ack, plan.source.size
            ));
            return out;
        }
        out.requests += 1;
        let (reply, what) = match offset {
            None => (query(&client, &url, &plan).await, "a status query"),
            Some(at) if plan.dialect == Dialect::Tus && at == plan.source.size => {
                // Only a zero-byte tus upload gets here: complete at creation.
                (query(&client, &url, &plan).await, "a status query")
            }
            Some(at) => (
                send_chunk(&client, &url, &plan, at, &mut out).await,
                "a chunk's answer",
            ),
        };
        match reply {
            Reply::Held(held) => {
                out.ack(&plan, held, what);
                offset = Some(held);
                backoff.reset();
            }
            Reply::Complete(json) => {
                out.ack(&plan, plan.source.size, what);
                if json.is_some() {
                    out.final_json = json;
                }
                out.done = true;
                out.completed_by = what;
                return out;
            }
            Reply::Gone(status) => {
                out.lost += out.max_ack;
                out.violations.push(format!(
                    "upload #{} ({url}): {what} answered {status} after {} bytes had been acknowledged",
                    plan.index, out.max_ack
                ));
                out.failure = Some(format!("the upload is gone ({status})"));
                return out;
            }
            Reply::Retry(error) => {
                last_error = error;
                out.errors += 1;
                offset = None;
                client = self::client();
                backoff.wait().await;
            }
        }
    }
}

/// What the killer did.
struct Kills {
    /// Kills before `stop`.
    total: u64,
    /// Those that found a chunk request in flight.
    mid_upload: u64,
}

/// Kills and restarts the server at random moments until `stop` or `max`.
fn killer(
    mut server: TestServer,
    seed: u64,
    max: u64,
    stop: Arc<AtomicBool>,
) -> (TestServer, Kills) {
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    let mut mid_upload = 0;
    while kills < max {
        let wait = Duration::from_millis(rng.between(KILL_EVERY_MS.0, KILL_EVERY_MS.1));
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Aim at a chunk in flight (for at most a second), then a random
        // moment of its life: left to chance alone, most kills found only
        // queries and backoffs (a loaded run landed 0 of 20 mid-chunk).
        let until = Instant::now() + Duration::from_secs(1);
        while CHUNKS_IN_FLIGHT.load(Ordering::SeqCst) == 0
            && Instant::now() < until
            && !stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.between(0, 20)));
        let in_flight = CHUNKS_IN_FLIGHT.load(Ordering::SeqCst);
        server.kill9();
        kills += 1;
        if in_flight > 0 {
            mid_upload += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.between(DOWN_MS.0, DOWN_MS.1)));
        server.restart();
    }
    (
        server,
        Kills {
            total: kills,
            mid_upload,
        },
    )
}

fn describe(reply: Reply) -> String {
    match reply {
        Reply::Held(held) => format!("holds {held}"),
        Reply::Complete(_) => "complete".into(),
        Reply::Gone(status) => format!("gone ({status})"),
        Reply::Retry(error) => error,
    }
}

/// Checks a completed upload after the final restart: its status still
/// covers every acknowledgement, and its content equals the source.
/// Returns whether the file is corrupt (with a description).
async fn verify(client: &Client, plan: &Plan, out: &mut Outcome) -> Option<String> {
    let url = out.url.clone().expect("a completed upload has a URL");
    let size = plan.source.size;
    match query(client, &url, plan).await {
        Reply::Complete(_) => out.ack(plan, size, "the status query after the last restart"),
        Reply::Held(held) => out.ack(plan, held, "the status query after the last restart"),
        Reply::Gone(status) => {
            out.lost += out.max_ack;
            out.violations.push(format!(
                "upload #{} ({url}): gone ({status}) after the last restart",
                plan.index
            ));
        }
        Reply::Retry(error) => {
            return Some(format!("status query after the last restart: {error}"));
        }
    }
    if let Some(json) = &out.final_json
        && json["size"] != Value::String(size.to_string())
    {
        return Some(format!("final JSON size {} != {size}", json["size"]));
    }
    let mut response = match client.get(&url).send().await {
        Ok(response) if response.status().as_u16() == 200 => response,
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            // Diagnose: does it become readable a little later?
            tokio::time::sleep(Duration::from_secs(2)).await;
            let later = match client.get(&url).send().await {
                Ok(r) => r.status().to_string(),
                Err(error) => error.to_string(),
            };
            return Some(format!(
                "GET answered {status} ({body}); 2 s later: {later}; status query: {}",
                describe(query(client, &url, plan).await)
            ));
        }
        Err(error) => return Some(format!("GET: {error}")),
    };
    let mut at = 0u64;
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                let end = at + bytes.len() as u64;
                if end > size {
                    return Some(format!("GET returned more than {size} bytes"));
                }
                if plan.source.bytes(at, end) != bytes.as_ref() {
                    return Some(format!("content differs in bytes {at}..{end}"));
                }
                at = end;
            }
            Ok(None) => break,
            Err(error) => return Some(format!("GET body: {error}")),
        }
    }
    (at != size).then(|| format!("GET returned {at} bytes of {size}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_bytes_survive_sigkill() {
    let uploads = env_u64("TENAX_TORTURE_UPLOADS", 100) as usize;
    let max_size = env_u64("TENAX_TORTURE_MAX_SIZE", 2 << 20);
    let concurrency = env_u64("TENAX_TORTURE_CONCURRENCY", 12).max(1) as usize;
    let max_kills = env_u64("TENAX_TORTURE_KILLS", 20);
    let timeout = Duration::from_secs(env_u64("TENAX_TORTURE_TIMEOUT_SECS", 240));
    let dialects = std::env::var("TENAX_TORTURE_DIALECTS").unwrap_or_else(|_| "both".into());
    assert!(
        ["seed", "tus", "both"].contains(&dialects.as_str()),
        "TENAX_TORTURE_DIALECTS must be seed, tus or both"
    );
    let mut rng = Rng::from_env_or_os();

    let plans: Vec<Plan> = (0..uploads)
        .map(|index| {
            let size = match index % 20 {
                0 | 1 => 0,
                2 | 3 => 1.min(max_size),
                _ => rng.between(0, max_size),
            };
            let dialect = match dialects.as_str() {
                "seed" => Dialect::Seed,
                "tus" => Dialect::Tus,
                _ if index % 3 == 2 => Dialect::Tus,
                _ => Dialect::Seed,
            };
            Plan {
                index,
                dialect,
                source: SeededBytes {
                    seed: rng.next_u64(),
                    size,
                    block: BLOCK,
                },
                chunk: rng.between(16 << 10, (1 << 20).max(max_size / 16)),
                backoff_seed: rng.next_u64(),
            }
        })
        .collect();
    let total_bytes: u64 = plans.iter().map(|p| p.source.size).sum();

    let server = TestServer::start(env!("CARGO_BIN_EXE_tenax"));
    let base = server.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let killer_seed = rng.next_u64();
    let killer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || killer(server, killer_seed, max_kills, stop))
    };

    let started = Instant::now();
    let deadline = started + timeout;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let outcomes: Arc<Mutex<Vec<Option<Outcome>>>> =
        Arc::new(Mutex::new((0..uploads).map(|_| None).collect()));
    let mut tasks = Vec::with_capacity(uploads);
    for plan in plans.iter().copied() {
        let semaphore = Arc::clone(&semaphore);
        let outcomes = Arc::clone(&outcomes);
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore");
            let outcome = run_upload(base, plan, deadline).await;
            outcomes.lock().expect("lock")[plan.index] = Some(outcome);
        }));
    }
    for task in tasks {
        task.await.expect("an upload task panicked");
    }
    let upload_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (mut server, run_kills) = killer.join().expect("the killer thread panicked");
    let mut kills = run_kills.total;
    // One last crash after every upload completed: completions must be durable too.
    server.kill9();
    kills += 1;
    server.restart();

    let mut outcomes: Vec<Outcome> = std::mem::take(&mut *outcomes.lock().expect("lock"))
        .into_iter()
        .map(|o| o.expect("every task stored its outcome"))
        .collect();
    let client = client();
    let mut corrupt = Vec::new();
    let mut incomplete = Vec::new();
    for (plan, out) in plans.iter().zip(outcomes.iter_mut()) {
        if !out.done {
            incomplete.push(format!(
                "upload #{} ({:?}, {} bytes, {}): {}",
                plan.index,
                plan.dialect,
                plan.source.size,
                out.url.as_deref().unwrap_or("not created"),
                out.failure.as_deref().unwrap_or("?")
            ));
            continue;
        }
        if let Some(problem) = verify(&client, plan, out).await {
            corrupt.push(format!(
                "upload #{} ({:?}, {} bytes, {}, completion seen in {}): {problem}",
                plan.index,
                plan.dialect,
                plan.source.size,
                out.url.as_deref().unwrap_or("?"),
                out.completed_by
            ));
        }
    }

    let acks: u64 = outcomes.iter().map(|o| o.acks).sum();
    let lost: u64 = outcomes.iter().map(|o| o.lost).sum();
    let sent: u64 = outcomes.iter().map(|o| o.sent).sum();
    let errors: u32 = outcomes.iter().map(|o| o.errors).sum();
    let requests: u32 = outcomes.iter().map(|o| o.requests).sum();
    let violations: Vec<&String> = outcomes.iter().flat_map(|o| &o.violations).collect();
    let completed = outcomes.iter().filter(|o| o.done).count();
    println!(
        "crash torture: uploads {completed}/{uploads} ({total_bytes} bytes, max {max_size}), \
         kills {kills} ({} mid-upload), acknowledgements checked {acks}, lost acknowledged bytes {lost}, \
         corrupt files {}, bytes re-sent {}, requests {requests}, client errors {errors}, \
         {:.1} s",
        run_kills.mid_upload,
        corrupt.len(),
        sent.saturating_sub(total_bytes),
        upload_time.as_secs_f64()
    );
    let mut report = String::new();
    for line in violations.iter().map(|s| s.as_str()) {
        report.push_str(&format!("\n  lost acknowledgement: {line}"));
    }
    for line in &corrupt {
        report.push_str(&format!("\n  corrupt: {line}"));
    }
    for line in &incomplete {
        report.push_str(&format!("\n  incomplete: {line}"));
    }
    assert!(
        report.is_empty(),
        "crash torture failed (replay with the TENAX_TEST_SEED printed above):{report}"
    );
    assert_eq!(lost, 0, "lost acknowledged bytes");
    // The kills must have landed during uploads, in proportion to the run
    // (unless the run asked for fewer kills).
    let wanted = (upload_time.as_secs_f64() / MID_UPLOAD_KILL_EVERY.as_secs_f64()) as u64;
    let wanted = wanted.max(1).min(max_kills);
    assert!(
        run_kills.mid_upload >= wanted,
        "only {} of {} kills landed while a chunk was in flight, in {:.1} s of uploads \
         (at least {wanted} wanted: one per {:?})",
        run_kills.mid_upload,
        run_kills.total,
        upload_time.as_secs_f64(),
        MID_UPLOAD_KILL_EVERY
    );
    drop(server);
}
