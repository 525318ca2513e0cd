//! Upload throughput and memory benchmark for `tenax serve` (a script, not a test).
//!
//! In one run it measures, for a file of `--size` bytes (1 GiB by default):
//!
//! * the disk limit: a sequential write of the file in 8 MiB buffers into the
//!   filesystem of the data directory, then one `fdatasync` (plus, for
//!   information, the same write with an `fdatasync` after every chunk);
//! * the HTTP limit: the same upload driver, same chunking, against a hyper
//!   sink on loopback (this program, `--serve-sink -`, as a process of its
//!   own) that reads and drops the body and answers 308/200 like tenax
//!   does, without touching disk;
//! * the machine's limit for an acknowledged upload: the same driver
//!   against a durable sink (`--serve-sink DIR`), a minimal server that
//!   preallocates the file, writes each body as it arrives, starts its
//!   writeback, and `fdatasync`s before each answer (no digests, no
//!   bookkeeping), its CPU per GiB the floor of a server's own cost;
//! * tenax itself: a fresh `tenax serve` (with a fresh data directory) per
//!   run, the stored file hashed against the source, and the server's peak
//!   RSS (`VmHWM`) read just before it is stopped; uploaded with the seed
//!   protocol as `tenax upload` sends it (`Want-Repr-Digest: sha-256=10`:
//!   no MD5) and as Google's clients do (MD5 computed too), and with tus
//!   1.0.0 (`POST`, then one `PATCH` per chunk);
//! * the reference tus server `@tus/server` with `@tus/file-store` (Node,
//!   `bench/tus-server/server.mjs`, given with `--tus-server DIR`), driven
//!   by the same tus client, the stored file's sha256 checked, the node
//!   process's peak RSS.
//!
//! A warm-up repetition is discarded and every repetition rotates the order
//! of the runs. It prints a table (best, median and spread of MB/s, peak
//! RSS, server CPU per GiB), the server's CPU per GiB against the durable
//! sink's plus its digests' (target ≤ 1.15× at 8 MiB chunks; seed ≤ 1.10×
//! tus), the ratios against the limits with the targets
//! (tenax tus ≥ 0.9× the durable sink at 8 MiB chunks, peak RSS ≤ 32 MiB),
//! the ratios tenax tus / `@tus/server` with theirs (≥ 2× the MB/s at 8 MiB,
//! ≥ 3× below, ≤ 1/3 of the peak RSS), and a final JSON line. See `bench/README.md`; `bench/run` builds
//! and runs it.
//!
//! One file on purpose: a benchmark is a script that a reader should follow
//! from top to bottom; its shared pieces live in `bench_common/`.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tenax_protocol::{ContentRange, Total};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use bench_common::{
    MIB, Server, WRITE_BUFFER, client, clock_ticks, connections_on, generate, human, mb_per_s, mib,
    parse_size, process_cpu_ticks, round, settle, sha256_file, status_kib, thread_cpu_ticks,
    upload_seed, warm,
};

/// Target: tenax at 8 MiB chunks reaches this fraction of the limit.
const TARGET_RATIO: f64 = 0.9;
/// Target: the server's peak RSS.
const TARGET_RSS: u64 = 32 * MIB;
/// Target: tenax tus MB/s over `@tus/server`'s: 2× at 8 MiB chunks and
/// over, 3× below.
fn target_tus_speedup(chunk: u64) -> f64 {
    if chunk >= 8 * MIB { 2.0 } else { 3.0 }
}
/// Target: tenax peak RSS over `@tus/server`'s.
const TARGET_TUS_RSS: f64 = 1.0 / 3.0;
/// Target: the server's CPU per GiB at 8 MiB chunks at most this many times
/// the durable sink's plus the digests' its dialect computes.
const TARGET_CPU_RATIO: f64 = 1.15;
/// Target: the seed upload as `tenax upload` sends it at most this many
/// times the server CPU of the tus upload.
const TARGET_SEED_OVER_TUS_CPU: f64 = 1.10;

const USAGE: &str = "\
usage: upload_bench (--server-bin PATH | --url URL) [options]
  --server-bin PATH   the tenax binary; a fresh `tenax serve` per run
  --url URL           an already running tenax instead (no RSS figure, no
                      --no-md5 runs)
  --tus-server DIR    directory holding server.mjs and its node_modules
                      (@tus/server, @tus/file-store); without it no
                      @tus/server runs
  --node PATH         the Node binary for --tus-server (default node)
  --size SIZE         upload size (default 1GiB)
  --chunks LIST       chunk sizes, comma separated (default 8MiB,256KiB)
  --repeat N          repetitions of every measurement (default 2)
  --work-dir DIR      scratch directory, on the disk to measure
                      (default target/bench); the data dirs go below it
  --no-per-chunk-sync skip the informational fdatasync-per-chunk baselines
  --only LIST         only these servers, no baselines (for profiling and
                      A/B runs): seed, tus, seed-md5, tus-node
  --keep              keep the generated file
Sizes take a B, KiB, MiB or GiB suffix.";

#[derive(Debug)]
struct Options {
    server_bin: Option<PathBuf>,
    url: Option<String>,
    size: u64,
    chunks: Vec<u64>,
    repeat: usize,
    work_dir: PathBuf,
    per_chunk_sync: bool,
    keep: bool,
    tus_server: Option<PathBuf>,
    node: PathBuf,
    /// Slugs of the only servers to measure; no baselines then.
    only: Option<Vec<String>>,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        server_bin: None,
        url: None,
        size: 1 << 30,
        chunks: vec![8 << 20, 256 << 10],
        repeat: 2,
        work_dir: PathBuf::from("target/bench"),
        per_chunk_sync: true,
        keep: false,
        tus_server: None,
        node: PathBuf::from("node"),
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--server-bin" => options.server_bin = Some(PathBuf::from(value()?)),
            "--url" => options.url = Some(value()?.trim_end_matches('/').to_owned()),
            "--size" => options.size = parse_size(&value()?)?,
            "--chunks" => {
                options.chunks = value()?
                    .split(',')
                    .map(parse_size)
                    .collect::<anyhow::Result<_>>()?;
            }
            "--repeat" => options.repeat = value()?.parse().context("--repeat")?,
            "--work-dir" => options.work_dir = PathBuf::from(value()?),
            "--no-per-chunk-sync" => options.per_chunk_sync = false,
            "--keep" => options.keep = true,
            "--tus-server" => options.tus_server = Some(PathBuf::from(value()?)),
            "--node" => options.node = PathBuf::from(value()?),
            "--only" => {
                options.only = Some(value()?.split(',').map(str::to_owned).collect());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        options.server_bin.is_some() != options.url.is_some(),
        "give exactly one of --server-bin and --url\n{USAGE}"
    );
    ensure!(options.size > 0, "--size must be positive");
    ensure!(options.repeat > 0, "--repeat must be positive");
    ensure!(
        options.chunks.iter().all(|&chunk| chunk > 0),
        "chunk sizes must be positive"
    );
    Ok(options)
}

/// The disk baseline: copies `source` into a new file of `dir` in
/// `WRITE_BUFFER` reads and writes, calling `fdatasync` after every
/// `sync_every` bytes (and at the end). Time includes the final sync.
fn fsync_write(source: &Path, dir: &Path, sync_every: Option<u64>) -> anyhow::Result<Duration> {
    let target = dir.join("fsync-baseline.bin");
    let _ = std::fs::remove_file(&target);
    let mut input = std::fs::File::open(source)?;
    let buffer_len =
        sync_every.map_or(WRITE_BUFFER as u64, |every| every.min(WRITE_BUFFER as u64)) as usize;
    let mut buffer = vec![0u8; buffer_len];
    let started = Instant::now();
    let mut output = std::fs::File::create(&target)?;
    let mut since_sync = 0u64;
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        output.write_all(&buffer[..n])?;
        since_sync += n as u64;
        if sync_every.is_some_and(|every| since_sync >= every) {
            output.sync_data()?;
            since_sync = 0;
        }
    }
    output.sync_data()?;
    let elapsed = started.elapsed();
    drop(output);
    std::fs::remove_file(&target)?;
    Ok(elapsed)
}

/// Hashes the (cached) file with one algorithm; returns the time taken.
fn hash_file(path: &Path, algorithm: &str) -> anyhow::Result<Duration> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; WRITE_BUFFER];
    let mut sha256 = Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut crc = 0u32;
    let started = Instant::now();
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        let data = &buffer[..n];
        match algorithm {
            "sha256" => sha256.update(data),
            "md5" => md5.update(data),
            _ => crc = crc32c::crc32c_append(crc, data),
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box((sha256.finalize(), md5.finalize(), crc));
    Ok(elapsed)
}

// ---------------------------------------------------------------------------
// The HTTP sink: answers like the seed dialect, discards the bytes.

/// `upload_bench --serve-sink DIR|-`: the sink as a process of its own, so
/// that its CPU and memory are measured as a server's are. Prints
/// `listening on URL` (as `tenax serve` does) and serves until killed.
/// With `DIR`, it stores each upload there as a minimal durable server
/// would: the file preallocated (as tenax does), bodies written as they
/// arrive (1 MiB at a time, off the async threads), one `fdatasync` before
/// each answer. With `-`, it drops the bytes.
fn serve_sink(durable: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sink")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let next_id = Arc::new(AtomicU64::new(1));
        let offsets: TusOffsets = Arc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (next_id, offsets) = (Arc::clone(&next_id), Arc::clone(&offsets));
            let durable = durable.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (next_id, durable) = (Arc::clone(&next_id), durable.clone());
                    let offsets = Arc::clone(&offsets);
                    async move {
                        if request.headers().contains_key("tus-resumable") {
                            sink_tus(request, next_id, durable, offsets).await
                        } else {
                            sink_handle(request, next_id, durable).await
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The offset of each tus upload of the sink.
type TusOffsets = Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>;

/// The sink's tus 1.0.0 (creation, `HEAD`, `PATCH`), for the tus clients
/// of `bench/clients`: what a tus server that does nothing but store (and,
/// durable, sync before each `204`) lets them reach.
async fn sink_tus(
    request: Request<Incoming>,
    next_id: Arc<AtomicU64>,
    durable: Option<PathBuf>,
    offsets: TusOffsets,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let number = |name: &str| header(name).and_then(|value| value.parse::<u64>().ok());
    let (host, length, offset) = (
        header("host").unwrap_or_default(),
        number("upload-length"),
        number("upload-offset"),
    );
    let method = request.method().clone();
    let id = request
        .uri()
        .path()
        .strip_prefix("/uploads/")
        .unwrap_or_default()
        .to_owned();
    let held = |id: &str| offsets.lock().ok().and_then(|map| map.get(id).copied());
    let tus = |status: StatusCode, offset: Option<u64>| {
        let mut response = sink_response(status, "");
        let headers = response.headers_mut();
        headers.insert(
            "tus-resumable",
            hyper::header::HeaderValue::from_static("1.0.0"),
        );
        if let Some(offset) = offset.and_then(|o| o.to_string().parse().ok()) {
            headers.insert("upload-offset", offset);
        }
        response
    };
    match method {
        hyper::Method::POST => {
            let Some(length) = length else {
                return Ok(sink_response(StatusCode::BAD_REQUEST, "no Upload-Length"));
            };
            let id = format!("tus{}", next_id.fetch_add(1, Ordering::Relaxed));
            if let Some(dir) = &durable {
                let created = std::fs::File::create(dir.join(&id)).and_then(|file| {
                    use rustix::fs::FallocateFlags;
                    Ok(rustix::fs::fallocate(
                        &file,
                        FallocateFlags::KEEP_SIZE,
                        0,
                        length,
                    )?)
                });
                if let Err(error) = created {
                    return Ok(sink_failure(error));
                }
            }
            if let Ok(mut map) = offsets.lock() {
                map.insert(id.clone(), 0);
            }
            let mut response = tus(StatusCode::CREATED, None);
            if let Ok(location) = format!("http://{host}/uploads/{id}").parse() {
                response.headers_mut().insert("location", location);
            }
            Ok(response)
        }
        hyper::Method::HEAD => Ok(match held(&id) {
            Some(held) => tus(StatusCode::OK, Some(held)),
            None => tus(StatusCode::NOT_FOUND, None),
        }),
        hyper::Method::PATCH => {
            let (Some(at), Some(held)) = (offset, held(&id)) else {
                return Ok(tus(StatusCode::NOT_FOUND, None));
            };
            if at != held {
                return Ok(tus(StatusCode::CONFLICT, Some(held)));
            }
            let file = match &durable {
                Some(dir) => match std::fs::OpenOptions::new().write(true).open(dir.join(&id)) {
                    Ok(file) => Some((Arc::new(file), at)),
                    Err(error) => {
                        return Ok(sink_failure(error));
                    }
                },
                None => None,
            };
            let received = match sink_body(request.into_body(), file).await {
                Ok(received) => received,
                Err(error) => {
                    return Ok(sink_failure(error));
                }
            };
            if let Ok(mut map) = offsets.lock() {
                map.insert(id, at + received);
            }
            Ok(tus(StatusCode::NO_CONTENT, Some(at + received)))
        }
        _ => Ok(tus(StatusCode::METHOD_NOT_ALLOWED, None)),
    }
}

/// The sink's `500`, the error as its body.
fn sink_failure(error: impl std::fmt::Display) -> Response<Full<Bytes>> {
    sink_response(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
}

fn sink_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

/// Writes `chunks` at `offset` of `file`, then syncs it if `sync`, else
/// starts writing it back (as tenax does, so that the sync before the
/// answer waits only for the tail); blocking.
fn sink_write(
    file: &std::fs::File,
    offset: u64,
    chunks: &[Bytes],
    sync: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut end = offset;
    for chunk in chunks {
        file.write_all_at(chunk, end)?;
        end += chunk.len() as u64;
    }
    if sync {
        file.sync_data()?;
    } else {
        let _ = rustix::fs::fadvise(
            file,
            offset,
            std::num::NonZeroU64::new(end - offset),
            rustix::fs::Advice::DontNeed,
        );
    }
    Ok(())
}

/// Reads the body; with `file`, writes it at `offset` there and syncs it.
/// Returns the bytes received.
async fn sink_body(
    mut body: Incoming,
    file: Option<(Arc<std::fs::File>, u64)>,
) -> anyhow::Result<u64> {
    let mut received = 0u64;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        received += data.len() as u64;
        let Some((file, offset)) = &file else {
            continue;
        };
        batched += data.len() as u64;
        batch.push(data);
        if batched >= MIB {
            let (file, at, chunks) = (Arc::clone(file), offset + received - batched, batch);
            tokio::task::spawn_blocking(move || sink_write(&file, at, &chunks, false)).await??;
            (batch, batched) = (Vec::new(), 0);
        }
    }
    if let Some((file, offset)) = file {
        let at = offset + received - batched;
        tokio::task::spawn_blocking(move || sink_write(&file, at, &batch, true)).await??;
    }
    Ok(received)
}

async fn sink_handle(
    request: Request<Incoming>,
    next_id: Arc<AtomicU64>,
    durable: Option<PathBuf>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let host = header("host").unwrap_or_default();
    let content_range = header("content-range");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // "bytes A-B/N", with the server's own parser.
    let span = match content_range.as_deref().map(ContentRange::parse) {
        Some(Ok(ContentRange::Bytes {
            first,
            last,
            total: Total::Known(total),
        })) => Some((first, last, total)),
        _ => None,
    };
    let file = match (&durable, span) {
        (Some(dir), Some((first, _, total))) if method == hyper::Method::PUT => {
            let name = path.rsplit('/').next().unwrap_or_default();
            let opened = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(dir.join(name));
            // Preallocated at the first chunk, as tenax does: each sync
            // then has no block allocation to write.
            let opened = opened.and_then(|file| {
                if first == 0 {
                    use rustix::fs::FallocateFlags;
                    rustix::fs::fallocate(&file, FallocateFlags::KEEP_SIZE, 0, total)?;
                }
                Ok(file)
            });
            match opened {
                Ok(file) => Some((Arc::new(file), first)),
                Err(error) => {
                    return Ok(sink_failure(error));
                }
            }
        }
        _ => None,
    };
    let received = match sink_body(request.into_body(), file).await {
        Ok(received) => received,
        Err(error) => {
            return Ok(sink_failure(error));
        }
    };
    if method == hyper::Method::POST && path == "/uploads" {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let mut response = sink_response(StatusCode::OK, "");
        if let Ok(location) = format!("http://{host}/uploads/sink{id}").parse() {
            response.headers_mut().insert("location", location);
        }
        return Ok(response);
    }
    if method != hyper::Method::PUT || !path.starts_with("/uploads/") {
        return Ok(sink_response(StatusCode::NOT_FOUND, "no such resource"));
    }
    let Some((first, last, total)) = span else {
        return Ok(sink_response(StatusCode::BAD_REQUEST, "bad Content-Range"));
    };
    if received != last - first + 1 {
        return Ok(sink_response(StatusCode::BAD_REQUEST, "length mismatch"));
    }
    if last + 1 == total {
        let body = json!({ "size": total.to_string() }).to_string();
        return Ok(sink_response(StatusCode::OK, &body));
    }
    let mut response = sink_response(StatusCode::PERMANENT_REDIRECT, "");
    if let Ok(range) = format!("bytes=0-{last}").parse() {
        response.headers_mut().insert("range", range);
    }
    Ok(response)
}

/// Uploads `path` (of `size` bytes) to `base` with tus 1.0.0: `POST
/// {base}/uploads` with `Upload-Length` (201 + `Location`), then one `PATCH`
/// per `chunk` bytes, each answered 204 with the new `Upload-Offset`.
/// Returns the elapsed time (creation to the last 204) and the upload's URL.
async fn tus_upload(
    client: &reqwest::Client,
    base: &str,
    path: &Path,
    size: u64,
    chunk: u64,
) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", size.to_string())
        .header("content-length", "0")
        .send()
        .await
        .context("tus creation")?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    settle().await;
    ensure!(
        status == reqwest::StatusCode::CREATED,
        "tus creation answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let location = location.ok_or_else(|| anyhow!("tus creation answered no Location"))?;
    // A relative Location is relative to the server's origin.
    let location = if location.starts_with('/') {
        let origin = base
            .find("://")
            .and_then(|scheme| base[scheme + 3..].find('/').map(|path| scheme + 3 + path))
            .map_or(base, |path| &base[..path]);
        format!("{origin}{location}")
    } else {
        location
    };
    let read_capacity = chunk.min(MIB) as usize;
    let mut offset = 0u64;
    while offset < size {
        let len = chunk.min(size - offset);
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let stream = ReaderStream::with_capacity(file.take(len), read_capacity);
        let response = client
            .patch(&location)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("PATCH at offset {offset}"))?;
        let status = response.status();
        let new_offset = response
            .headers()
            .get("upload-offset")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        settle().await;
        ensure!(
            status == reqwest::StatusCode::NO_CONTENT,
            "PATCH at offset {offset} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        offset += len;
        let expected = offset.to_string();
        ensure!(
            new_offset.as_deref() == Some(expected.as_str()),
            "PATCH answered Upload-Offset {new_offset:?}, expected {expected}"
        );
    }
    Ok((started.elapsed(), location))
}

// ---------------------------------------------------------------------------
// What is measured.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The HTTP sink (its own process): the seed dialect's answers, the
    /// bytes dropped.
    HttpSink,
    /// The durable HTTP sink (its own process): each body written, its
    /// writeback started, `fdatasync` before each answer.
    DurableSink,
    /// tenax with the seed protocol. `md5: false` asks for SHA-256 alone
    /// with `Want-Repr-Digest`, as `tenax upload` does; `md5: true` sends
    /// no such field, as Google's clients, and gets MD5 computed too.
    TenaxSeed { md5: bool },
    /// tenax with tus 1.0.0.
    TenaxTus,
    /// `@tus/server` with `@tus/file-store` under Node.
    TusServer,
}

impl Target {
    /// The series name; `tenax @ X` is the seed upload, as before.
    fn name(self, chunk: u64) -> String {
        let what = match self {
            Target::HttpSink => "HTTP sink",
            Target::DurableSink => "durable HTTP sink",
            Target::TenaxSeed { md5: false } => "tenax",
            Target::TenaxSeed { md5: true } => "tenax seed+md5",
            Target::TenaxTus => "tenax tus",
            Target::TusServer => "@tus/server",
        };
        format!("{what} @ {}", human(chunk))
    }

    /// For file names.
    fn slug(self) -> &'static str {
        match self {
            Target::HttpSink => "sink",
            Target::DurableSink => "durable-sink",
            Target::TenaxSeed { md5: false } => "seed",
            Target::TenaxSeed { md5: true } => "seed-md5",
            Target::TenaxTus => "tus",
            Target::TusServer => "tus-node",
        }
    }

    /// Whether this is one of the machine's limits rather than a server.
    fn is_sink(self) -> bool {
        matches!(self, Target::HttpSink | Target::DurableSink)
    }

    /// The `Want-Repr-Digest` of a seed upload's initiation.
    fn want_digest(self) -> Option<&'static str> {
        match self {
            Target::TenaxSeed { md5: true } => None,
            _ => Some("sha-256=10"),
        }
    }
}

// ---------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone)]
struct Run {
    seconds: f64,
    mb_s: f64,
    /// Server peak RSS in bytes (tenax runs started here).
    peak_rss: Option<u64>,
    /// CPU seconds of the server process (tenax runs started here).
    server_cpu: Option<f64>,
    /// CPU seconds of this process (driver, plus the sink for sink runs).
    driver_cpu: f64,
    /// Server CPU seconds per thread name.
    threads: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
struct Series {
    runs: Vec<Run>,
}

impl Series {
    fn best(&self) -> f64 {
        self.runs.iter().map(|run| run.mb_s).fold(0.0, f64::max)
    }

    fn median(&self) -> f64 {
        median(self.runs.iter().map(|run| run.mb_s).collect())
    }

    /// The slowest run's MB/s (with [`best`](Self::best), the spread).
    fn worst(&self) -> f64 {
        self.runs
            .iter()
            .map(|run| run.mb_s)
            .fold(f64::MAX, f64::min)
    }

    /// The median CPU seconds of the server (or sink) process.
    fn server_cpu(&self) -> Option<f64> {
        let values: Vec<f64> = self.runs.iter().filter_map(|run| run.server_cpu).collect();
        (!values.is_empty()).then(|| median(values))
    }

    /// The median CPU seconds of this process.
    fn driver_cpu(&self) -> f64 {
        median(self.runs.iter().map(|run| run.driver_cpu).collect())
    }

    fn max_rss(&self) -> Option<u64> {
        self.runs.iter().filter_map(|run| run.peak_rss).max()
    }

    fn json(&self) -> Value {
        json!({
            "best_mb_s": round(self.best()),
            "median_mb_s": round(self.median()),
            "runs_mb_s": self.runs.iter().map(|run| round(run.mb_s)).collect::<Vec<_>>(),
            "runs_seconds": self.runs.iter().map(|run| round(run.seconds)).collect::<Vec<_>>(),
            "peak_rss_bytes": self.runs.iter().map(|run| run.peak_rss).collect::<Vec<_>>(),
            "server_cpu_seconds": self.runs.iter().map(|run| run.server_cpu.map(round)).collect::<Vec<_>>(),
            "driver_cpu_seconds": self.runs.iter().map(|run| round(run.driver_cpu)).collect::<Vec<_>>(),
        })
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--serve-sink") {
        let dir = args.next().filter(|dir| dir != "-").map(PathBuf::from);
        return serve_sink(dir);
    }
    let options = parse_options()?;
    // One thread: the connection goes back to reqwest's pool in a task of
    // its own; on one thread `settle` below lets it run before the next
    // request, so that every chunk goes over the same connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(mut options: Options) -> anyhow::Result<()> {
    if let Some(dir) = &options.tus_server {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--tus-server {}", dir.display()))?;
        ensure!(
            dir.join("server.mjs").is_file() && dir.join("node_modules/@tus/server").is_dir(),
            "--tus-server {}: no server.mjs with node_modules/@tus/server there",
            dir.display()
        );
        options.tus_server = Some(dir);
    }
    let ticks = clock_ticks();
    let self_pid = std::process::id().to_string();
    let work = options.work_dir.clone();
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let work = work.canonicalize()?;
    let file = work.join("upload.bin");
    let size = options.size;

    let started_all = Instant::now();
    println!(
        "generating {} of random data in {}",
        human(size),
        file.display()
    );
    let generated = Instant::now();
    let sha256 = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || generate(&file, size)).await??
    };
    println!(
        "  done in {:.1} s, sha256 {sha256}",
        generated.elapsed().as_secs_f64()
    );

    let warm_up =
        |file: PathBuf| async move { tokio::task::spawn_blocking(move || warm(&file)).await? };

    // Series keyed by name, in the order they are printed.
    let mut names: Vec<String> = Vec::new();
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut record = |name: String, run: Run| {
        if !names.contains(&name) {
            names.push(name.clone());
        }
        series.entry(name).or_default().runs.push(run);
    };
    let cpu_now = |pid: &str| process_cpu_ticks(pid) as f64 / ticks;

    // The servers measured at every chunk size (the sinks: the limits).
    let mut targets = vec![
        Target::HttpSink,
        Target::DurableSink,
        Target::TenaxSeed { md5: false },
        Target::TenaxTus,
        Target::TenaxSeed { md5: true },
    ];
    if options.tus_server.is_some() {
        targets.push(Target::TusServer);
    }
    if options.url.is_some() {
        // Only the running server is measured.
        targets.retain(|target| matches!(target, Target::TenaxSeed { .. } | Target::TenaxTus));
    }
    if let Some(only) = &options.only {
        targets.retain(|target| only.iter().any(|slug| slug == target.slug()));
        ensure!(
            !targets.is_empty(),
            "--only {}: no such server",
            only.join(",")
        );
    }
    let baselines = options.only.is_none();
    let sink_bin = std::env::current_exe()?;

    // Repetition 0 warms up (files, page cache, CPU frequency) and is
    // discarded; each repetition rotates the order of the runs, so that
    // none always comes first or after the same neighbour.
    for repetition in 0..=options.repeat {
        if repetition == 0 {
            println!("warm-up repetition (discarded)");
        } else {
            println!("repetition {repetition}/{}", options.repeat);
        }
        let mut record = |name: String, run: Run| {
            if repetition > 0 {
                record(name, run);
            }
        };

        // (a) fsync'd sequential write.
        let mut syncs: Vec<(String, Option<u64>)> = Vec::new();
        if baselines {
            syncs.push(("fsync write".into(), None));
        }
        if baselines && options.per_chunk_sync {
            for &chunk in &options.chunks {
                syncs.push((
                    format!("fsync write, fdatasync every {}", human(chunk)),
                    Some(chunk),
                ));
            }
        }
        if !syncs.is_empty() {
            let turn = repetition % syncs.len();
            syncs.rotate_left(turn);
        }
        for (name, every) in syncs {
            warm_up(file.clone()).await?;
            let cpu = cpu_now(&self_pid);
            let elapsed = {
                let (file, work) = (file.clone(), work.clone());
                tokio::task::spawn_blocking(move || fsync_write(&file, &work, every)).await??
            };
            let run = Run {
                seconds: elapsed.as_secs_f64(),
                mb_s: mb_per_s(size, elapsed),
                peak_rss: None,
                server_cpu: None,
                driver_cpu: cpu_now(&self_pid) - cpu,
                threads: BTreeMap::new(),
            };
            println!("  {name:<40} {:>8.1} MB/s", run.mb_s);
            record(name, run);
        }

        // For information: what the server's digests cost on one thread.
        for algorithm in ["sha256", "md5", "crc32c"]
            .into_iter()
            .filter(|_| baselines)
        {
            let name = format!("hash {algorithm} (1 thread, from cache)");
            let cpu = cpu_now(&self_pid);
            let elapsed = {
                let file = file.clone();
                tokio::task::spawn_blocking(move || hash_file(&file, algorithm)).await??
            };
            let run = Run {
                seconds: elapsed.as_secs_f64(),
                mb_s: mb_per_s(size, elapsed),
                peak_rss: None,
                server_cpu: None,
                driver_cpu: cpu_now(&self_pid) - cpu,
                threads: BTreeMap::new(),
            };
            println!("  {name:<40} {:>8.1} MB/s", run.mb_s);
            record(name, run);
        }

        // The sinks, tenax (seed, tus, seed with MD5) and @tus/server, a
        // fresh process per run.
        let mut runs: Vec<(u64, Target)> = options
            .chunks
            .iter()
            .flat_map(|&chunk| targets.iter().map(move |&target| (chunk, target)))
            .filter(|(_, target)| baselines || !target.is_sink())
            .collect();
        if !runs.is_empty() {
            let turn = repetition % runs.len();
            runs.rotate_left(turn);
        }
        for (chunk, target) in runs {
            {
                let name = target.name(chunk);
                warm_up(file.clone()).await?;
                let label = format!("{}-{}", target.slug(), human(chunk));
                let data = work.join(format!("data-{label}"));
                let _ = std::fs::remove_dir_all(&data);
                let log = work.join(format!("server-{label}.log"));
                let server = match (target, &options.server_bin, &options.tus_server) {
                    (Target::HttpSink | Target::DurableSink, _, _) => {
                        let mut command = std::process::Command::new(&sink_bin);
                        command.arg("--serve-sink");
                        if target == Target::DurableSink {
                            std::fs::create_dir_all(&data)?;
                            command.arg(&data);
                        } else {
                            command.arg("-");
                        }
                        Some(Server::start(command, &log)?)
                    }
                    (Target::TusServer, _, Some(dir)) => {
                        Some(Server::tus_node(&options.node, dir, &data, &log)?)
                    }
                    (Target::TusServer, _, None) => bail!("no --tus-server"),
                    (_, Some(binary), _) => Some(Server::tenax(binary, &data, &[], &log)?),
                    _ => None,
                };
                let base = server
                    .as_ref()
                    .map(|server| server.url.clone())
                    .or_else(|| options.url.clone())
                    .ok_or_else(|| anyhow!("no server"))?;
                let pid = server.as_ref().map(|server| server.child.id());
                let server_cpu = pid.map(|pid| process_cpu_ticks(&pid.to_string()));
                // A fresh client: a fresh connection per server.
                let client = self::client()?;
                let cpu = cpu_now(&self_pid);
                // The time, and where the stored bytes are (none: a sink
                // that drops them).
                let outcome = async {
                    match target {
                        Target::HttpSink | Target::DurableSink | Target::TenaxSeed { .. } => {
                            let initiate = format!("{base}/uploads");
                            let want = target.want_digest();
                            let (elapsed, location, _) =
                                upload_seed(&client, &initiate, &file, size, chunk, want).await?;
                            let id = location.rsplit('/').next().unwrap_or_default();
                            let stored = match target {
                                Target::HttpSink => None,
                                Target::DurableSink => Some(data.join(id)),
                                _ => Some(data.join("uploads").join(format!("{id}.bin"))),
                            };
                            Ok((elapsed, stored))
                        }
                        Target::TenaxTus | Target::TusServer => {
                            let (elapsed, location) =
                                tus_upload(&client, &base, &file, size, chunk).await?;
                            let id = location.rsplit('/').next().unwrap_or_default();
                            let stored = match target {
                                // @tus/file-store keeps the upload as DIR/<id>.
                                Target::TusServer => data.join(id),
                                _ => data.join("uploads").join(format!("{id}.bin")),
                            };
                            Ok::<_, anyhow::Error>((elapsed, Some(stored)))
                        }
                    }
                }
                .await;
                let driver_cpu = cpu_now(&self_pid) - cpu;
                let peak_rss = pid
                    .and_then(|pid| status_kib(pid, "VmHWM"))
                    .map(|kib| kib * 1024);
                let server_cpu = pid.zip(server_cpu).map(|(pid, before)| {
                    (process_cpu_ticks(&pid.to_string()) - before) as f64 / ticks
                });
                let threads = pid.map_or_else(BTreeMap::new, |pid| {
                    let live = thread_cpu_ticks(pid);
                    let total = process_cpu_ticks(&pid.to_string());
                    let exited = total.saturating_sub(live.values().sum());
                    live.into_iter()
                        .chain([("(exited threads)".to_owned(), exited)])
                        .map(|(name, t)| (name, t as f64 / ticks))
                        .collect()
                });
                let connections = server
                    .as_ref()
                    .and_then(|server| server.url.rsplit(':').next()?.parse::<u16>().ok())
                    .map(connections_on);
                if let Some(server) = server {
                    server.stop()?;
                }
                // Integrity from the stored bytes, never from what the
                // server reports.
                let checked = match outcome {
                    Ok((elapsed, Some(stored))) => {
                        let hashed = tokio::task::spawn_blocking(move || {
                            let len = std::fs::metadata(&stored)
                                .with_context(|| format!("{}", stored.display()))?
                                .len();
                            Ok::<_, anyhow::Error>((Some(sha256_file(&stored)?), len))
                        })
                        .await?;
                        hashed.map(|(got, len)| (elapsed, got, len))
                    }
                    Ok((elapsed, None)) => Ok((elapsed, None, size)),
                    Err(error) => Err(error),
                };
                let _ = std::fs::remove_dir_all(&data);
                let (elapsed, got, got_size) = checked.with_context(|| name.clone())?;
                ensure!(
                    got.as_ref().is_none_or(|got| *got == sha256),
                    "{name}: the stored file's sha256 {got:?} differs from the source's {sha256}"
                );
                ensure!(
                    got_size == size,
                    "{name}: the stored file has {got_size} bytes, not {size}"
                );
                let run = Run {
                    seconds: elapsed.as_secs_f64(),
                    mb_s: mb_per_s(size, elapsed),
                    peak_rss,
                    server_cpu,
                    driver_cpu,
                    threads,
                };
                println!(
                    "  {name:<40} {:>8.1} MB/s  ({}, peak RSS {}, server CPU {}, driver CPU {:.1} s, {} connection(s))",
                    run.mb_s,
                    if got.is_some() {
                        "stored sha256 ok"
                    } else {
                        "bytes dropped"
                    },
                    run.peak_rss.map_or("n/a".into(), mib),
                    run.server_cpu
                        .map_or("n/a".into(), |cpu| format!("{cpu:.1} s")),
                    run.driver_cpu,
                    connections.map_or("?".into(), |n| n.to_string()),
                );
                record(name, run);
            }
        }
    }
    if !options.keep {
        let _ = std::fs::remove_file(&file);
    }

    // The table.
    println!();
    println!(
        "{} upload, {} repetition(s); MB = 10^6 bytes; best / median",
        human(size),
        options.repeat
    );
    let gib = size as f64 / (1u64 << 30) as f64;
    println!(
        "{:<40} {:>9} {:>9} {:>15} {:>12} {:>15}",
        "measurement", "best", "median", "spread", "peak RSS", "server CPU/GiB"
    );
    for name in &names {
        let s = &series[name];
        println!(
            "{name:<40} {:>9.1} {:>9.1} {:>15} {:>12} {:>15}",
            s.best(),
            s.median(),
            format!("{:.1}-{:.1}", s.worst(), s.best()),
            s.max_rss().map_or("".into(), mib),
            s.server_cpu()
                .map_or("".into(), |cpu| format!("{:.2} s", cpu / gib)),
        );
    }

    // Ratios: tenax tus (the default configuration; tus is also what
    // `@tus/server` speaks) over the machine's limit for an acknowledged
    // upload, the durable sink at the same chunk size.
    println!();
    let best = |name: &str| series.get(name).map(Series::best);
    let mut ratios = serde_json::Map::new();
    let mut all_ok = true;
    for &chunk in &options.chunks {
        let label = human(chunk);
        let (Some(tenax), Some(limit)) = (
            best(&Target::TenaxTus.name(chunk)),
            best(&format!("durable HTTP sink @ {label}")),
        ) else {
            continue;
        };
        let ratio = tenax / limit;
        let target = chunk == 8 * MIB;
        let verdict = if target {
            let ok = ratio >= TARGET_RATIO;
            all_ok &= ok;
            format!(
                "   target >= {TARGET_RATIO:.1}: {}",
                if ok { "MET" } else { "MISSED" }
            )
        } else {
            String::new()
        };
        println!(
            "tenax tus@{label} / limit (durable HTTP sink @ {label}, {limit:.1} MB/s): {ratio:.2}{verdict}"
        );
        let over = |name: String| best(&name).map(|other| tenax / other);
        let (http, fsync) = (
            over(format!("HTTP sink @ {label}")),
            over(format!("fsync write, fdatasync every {label}")),
        );
        let shown = |ratio: Option<f64>| ratio.map_or("n/a".into(), |r| format!("{r:.2}"));
        println!(
            "    over the HTTP sink (no disk): {}   over the file written with fdatasync every {label} (no HTTP): {}",
            shown(http),
            shown(fsync),
        );
        ratios.insert(
            label,
            json!({
                "tenax_tus_mb_s": round(tenax),
                "limit_mb_s": round(limit),
                "over_limit": round(ratio),
                "over_http_sink": http.map(round),
                "over_fdatasync_every_chunk": fsync.map(round),
                "target": if target { Some(TARGET_RATIO) } else { None },
            }),
        );
    }
    let mut rss = serde_json::Map::new();
    for &chunk in &options.chunks {
        let label = human(chunk);
        if let Some(peak) = targets
            .iter()
            .filter(|target| matches!(target, Target::TenaxSeed { .. } | Target::TenaxTus))
            .filter_map(|target| series.get(&target.name(chunk))?.max_rss())
            .max()
        {
            let ok = peak <= TARGET_RSS;
            all_ok &= ok;
            println!(
                "server peak RSS @ {label}: {} (highest of {} run(s))   target <= {}: {}",
                mib(peak),
                options.repeat,
                mib(TARGET_RSS),
                if ok { "MET" } else { "MISSED" }
            );
            rss.insert(label, json!(peak));
        }
    }

    // The server's own cost: its CPU per GiB against what the work needs,
    // the durable sink's CPU per GiB plus the digests its dialect computes
    // (one thread each, from the page cache), all medians of this run.
    let mut cpu_budget = serde_json::Map::new();
    let mut cpu_all_ok = true;
    let per_gib = |name: &str| {
        series
            .get(name)
            .and_then(Series::server_cpu)
            .map(|cpu| cpu / gib)
    };
    let digest_per_gib = |algorithm: &str| {
        series
            .get(&format!("hash {algorithm} (1 thread, from cache)"))
            .map(|s| s.driver_cpu() / gib)
    };
    println!();
    for &chunk in &options.chunks {
        let label = human(chunk);
        let Some(sink) = per_gib(&Target::DurableSink.name(chunk)) else {
            continue;
        };
        let judged = chunk == 8 * MIB;
        let mut rows = serde_json::Map::new();
        for (target, digests) in [
            (Target::TenaxTus, &["sha256", "crc32c"][..]),
            (Target::TenaxSeed { md5: false }, &["sha256", "crc32c"][..]),
            (
                Target::TenaxSeed { md5: true },
                &["sha256", "crc32c", "md5"][..],
            ),
        ] {
            let name = target.name(chunk);
            let (Some(cpu), Some(hashing)) = (
                per_gib(&name),
                digests
                    .iter()
                    .map(|a| digest_per_gib(a))
                    .sum::<Option<f64>>(),
            ) else {
                continue;
            };
            let budget = sink + hashing;
            let ratio = cpu / budget;
            let ok = ratio <= TARGET_CPU_RATIO;
            if judged {
                cpu_all_ok &= ok;
            }
            println!(
                "server CPU/GiB, {name}: {cpu:.2} s = {ratio:.2}x (durable sink {sink:.2} s + {} {hashing:.2} s){}",
                digests.join("+"),
                if judged {
                    format!(
                        "   target <= {TARGET_CPU_RATIO:.2}x: {}",
                        if ok { "MET" } else { "MISSED" }
                    )
                } else {
                    String::new()
                }
            );
            rows.insert(
                name,
                json!({ "cpu_s_per_gib": round(cpu), "budget_s_per_gib": round(budget), "over_budget": round(ratio) }),
            );
        }
        if let (Some(seed), Some(tus)) = (
            per_gib(&Target::TenaxSeed { md5: false }.name(chunk)),
            per_gib(&Target::TenaxTus.name(chunk)),
        ) {
            let ratio = seed / tus;
            let ok = ratio <= TARGET_SEED_OVER_TUS_CPU;
            if judged {
                cpu_all_ok &= ok;
            }
            println!(
                "server CPU/GiB, seed as tenax upload sends it / tus @ {label}: {ratio:.2}{}",
                if judged {
                    format!(
                        "   target <= {TARGET_SEED_OVER_TUS_CPU:.2}: {}",
                        if ok { "MET" } else { "MISSED" }
                    )
                } else {
                    String::new()
                }
            );
            rows.insert("seed_over_tus".into(), json!(round(ratio)));
        }
        cpu_budget.insert(label, Value::Object(rows));
    }

    // tenax against @tus/server, same tus client, same chunks.
    let mut tus_comparison = serde_json::Map::new();
    let mut tus_all_ok = true;
    if options.tus_server.is_some() {
        println!();
        println!(
            "tenax / @tus/server, same tus client (ratios of best MB/s, median in brackets; \
             targets: >= 2x the MB/s at 8 MiB, >= 3x below, <= 1/3 of the peak RSS)"
        );
        println!(
            "(@tus/file-store answers each PATCH once written to the page cache, without fsync; \
             tenax answers after fdatasync)"
        );
        println!(
            "{:<30} {:>18} {:>16} {:>9} {:>12} {:>7} {:>9}",
            "", "MB/s best (med)", "ratio (med)", "target", "peak RSS", "ratio", "target"
        );
        for &chunk in &options.chunks {
            let label = human(chunk);
            let Some(reference) = series.get(&Target::TusServer.name(chunk)) else {
                continue;
            };
            let (ref_best, ref_median, ref_rss) =
                (reference.best(), reference.median(), reference.max_rss());
            println!(
                "{:<30} {:>18} {:>16} {:>9} {:>12}",
                Target::TusServer.name(chunk),
                format!("{ref_best:.1} ({ref_median:.1})"),
                "",
                "",
                ref_rss.map_or("".into(), mib),
            );
            // For scale: what the target asks against the machine's limits.
            let limit = |name: String| {
                series
                    .get(&name)
                    .map_or("n/a".into(), |s| format!("{:.1}", s.best()))
            };
            println!(
                "    ({:.0}x = {:.1} MB/s; limits: durable HTTP sink {}, HTTP sink {}, fsync write {}, \
                 fdatasync every {label} {} MB/s)",
                target_tus_speedup(chunk),
                ref_best * target_tus_speedup(chunk),
                limit(format!("durable HTTP sink @ {label}")),
                limit(format!("HTTP sink @ {label}")),
                limit("fsync write".into()),
                limit(format!("fsync write, fdatasync every {label}")),
            );
            let mut variants = serde_json::Map::new();
            for target in [
                Target::TenaxTus,
                Target::TenaxSeed { md5: true },
                Target::TenaxSeed { md5: false },
            ] {
                let name = target.name(chunk);
                let Some(tenax) = series.get(&name) else {
                    continue;
                };
                let ratio = tenax.best() / ref_best;
                let ratio_median = tenax.median() / ref_median;
                let rss_ratio = tenax
                    .max_rss()
                    .zip(ref_rss)
                    .map(|(ours, theirs)| ours as f64 / theirs as f64);
                // The targets are for tus; the seed row is for information.
                let judged = target == Target::TenaxTus;
                let speed_ok = ratio >= target_tus_speedup(chunk);
                let rss_ok = rss_ratio.is_some_and(|r| r <= TARGET_TUS_RSS);
                if judged {
                    tus_all_ok &= speed_ok && rss_ok;
                }
                let verdict = |ok: bool| {
                    if !judged {
                        "(info)"
                    } else if ok {
                        "MET"
                    } else {
                        "MISSED"
                    }
                };
                println!(
                    "  {:<28} {:>18} {:>16} {:>9} {:>12} {:>7} {:>9}",
                    name,
                    format!("{:.1} ({:.1})", tenax.best(), tenax.median()),
                    format!("{ratio:.2}x ({ratio_median:.2}x)"),
                    verdict(speed_ok),
                    tenax.max_rss().map_or("".into(), mib),
                    rss_ratio.map_or("".into(), |r| format!("{r:.2}")),
                    verdict(rss_ok),
                );
                variants.insert(
                    name,
                    json!({
                        "best_mb_s": round(tenax.best()),
                        "median_mb_s": round(tenax.median()),
                        "over_tus_server": round(ratio),
                        "over_tus_server_median": round(ratio_median),
                        "peak_rss_bytes": tenax.max_rss(),
                        "rss_over_tus_server": rss_ratio.map(|r| (r * 1000.0).round() / 1000.0),
                        "judged": judged,
                        "speed_met": speed_ok,
                        "rss_met": rss_ok,
                    }),
                );
            }
            tus_comparison.insert(
                label,
                json!({
                    "tus_server_best_mb_s": round(ref_best),
                    "tus_server_median_mb_s": round(ref_median),
                    "tus_server_peak_rss_bytes": ref_rss,
                    "tenax": variants,
                }),
            );
        }
        println!(
            "tenax tus vs @tus/server targets: {}",
            if tus_all_ok { "MET" } else { "MISSED" }
        );
    }

    // Per-thread server CPU of the last run of every server and chunk size.
    println!();
    for &chunk in &options.chunks {
        for &target in &targets {
            let name = target.name(chunk);
            let Some(run) = series
                .get(&name)
                .and_then(|s| s.runs.last())
                .filter(|run| !run.threads.is_empty())
            else {
                continue;
            };
            let mut threads: Vec<_> = run.threads.iter().collect();
            threads.sort_by(|a, b| b.1.total_cmp(a.1));
            let list: Vec<String> = threads
                .iter()
                .filter(|(_, cpu)| **cpu >= 0.05)
                .map(|(name, cpu)| format!("{name} {cpu:.1} s"))
                .collect();
            println!(
                "server CPU by thread, {name} (last run, {:.1} s wall): {}",
                run.seconds,
                list.join(", ")
            );
        }
    }
    println!(
        "total bench time {:.0} s",
        started_all.elapsed().as_secs_f64()
    );

    let results: serde_json::Map<String, Value> = names
        .iter()
        .map(|name| (name.clone(), series[name].json()))
        .collect();
    let line = json!({
        "bench": "upload_bench",
        "size_bytes": size,
        "chunks_bytes": options.chunks,
        "repeat": options.repeat,
        "work_dir": work.display().to_string(),
        "results": results,
        "ratios": ratios,
        "server_peak_rss_bytes": rss,
        "targets": { "ratio_at_8MiB": TARGET_RATIO, "peak_rss_bytes": TARGET_RSS },
        "targets_met": all_ok,
        "tus_vs_tus_server": tus_comparison,
        "tus_targets": {
            "speedup_over_tus_server": { "8MiB": 2.0, "smaller": 3.0 },
            "rss_over_tus_server": round(TARGET_TUS_RSS),
        },
        "tus_targets_met": options.tus_server.as_ref().map(|_| tus_all_ok),
        "server_cpu": cpu_budget,
        "server_cpu_targets": { "over_budget_at_8MiB": TARGET_CPU_RATIO, "seed_over_tus_at_8MiB": TARGET_SEED_OVER_TUS_CPU },
        "server_cpu_targets_met": cpu_all_ok,
    });
    println!("{line}");
    Ok(())
}
