//! Uploads over a weak, flapping link (a script, not a test; `bench/weaklink`
//! builds and runs it).
//!
//! Every client sends the same `--size` file (48 MiB of random bytes)
//! through a fresh `tenax_testkit::WeakLink` (2 MB/s up, 8 MB/s down, 50 ms
//! each way) in front of a fresh server, on each schedule of outages (the
//! same seed, so the same outages, for every client):
//!
//! * `flaps`: up 5–12 s, down 1–3 s (short outages), connections reset at
//!   each outage;
//! * `outages`: up 5–12 s, down 5–20 s, reset (the case of issue 21);
//! * `black-hole`: up 5–12 s, down 5–20 s, the link goes silent (open
//!   connections never move again, new ones wait for the link).
//!
//! Clients: `tenax upload` (release binary, defaults) in seed, tus and
//! ietf; tus-js-client into tenax and into `@tus/server`, both retrying
//! every 1 s (8 MiB chunks); google-resumable-media's `ResumableUpload`
//! into tenax with its own retry strategy (1 MiB chunks: it sends a failed
//! chunk again from its start). Each run must end with the stored file byte-exact
//! (its sha256); a run that fails or passes `--timeout` is reported as such.
//!
//! Per run: the time to deliver (from the client's start to its exit) and
//! the share of the link's up-time used: the time the file needs at the
//! uplink's rate over the time the link was up during the run. Then one
//! JSON line with every figure.
//!
//! `weaklink_bench [--size 48MiB] [--seed 21] [--schedules steady,flaps,outages,black-hole]
//! [--clients tenax-seed,tenax-tus,tenax-ietf,tus-js,tus-js-tus-server,google]
//! [--timeout 300] [--work-dir DIR] [--bin PATH] [--peers DIR] [--node PATH]`

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bench_common::{MIB, generate, human, parse_size, round, sha256_file};
use serde_json::json;
use tenax_testkit::{LinkConfig, Outage, Schedule, TestServer, WeakLink};
use tokio::time::Instant;

/// The link of the issue: 2 MB/s up, 50 ms one way.
const UPLINK: u64 = 2_000_000;
const DOWNLINK: u64 = 8_000_000;
const DELAY: Duration = Duration::from_millis(50);
/// The chunk of the tus-js-client runs (tenax's default too).
const CHUNK: u64 = 8 * MIB;
/// The chunk of the google-resumable-media runs: it sends a failed chunk
/// again from its start, so a chunk must fit in an up period (8 MiB takes
/// 4.2 s at 2 MB/s).
const GOOGLE_CHUNK: u64 = MIB;
/// The stored file's name.
const NAME: &str = "weaklink.bin";

struct Options {
    size: u64,
    seed: u64,
    schedules: Vec<String>,
    clients: Vec<String>,
    timeout: Duration,
    work_dir: PathBuf,
    bin: PathBuf,
    peers: PathBuf,
    node: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut options = Options {
        size: 48 * MIB,
        seed: 21,
        schedules: Vec::new(),
        clients: Vec::new(),
        timeout: Duration::from_secs(300),
        work_dir: root.join("target/bench"),
        bin: root.join("target/bench-release/tenax"),
        peers: root.join("target/peers"),
        node: PathBuf::from("node"),
    };
    let mut schedules = "steady,flaps,outages,black-hole".to_owned();
    let mut clients = "tenax-seed,tenax-tus,tenax-ietf,tus-js,tus-js-tus-server,google".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => options.size = parse_size(&value()?)?,
            "--seed" => options.seed = value()?.parse()?,
            "--schedules" => schedules = value()?,
            "--clients" => clients = value()?,
            "--timeout" => options.timeout = Duration::from_secs(value()?.parse()?),
            "--work-dir" => options.work_dir = PathBuf::from(value()?),
            "--bin" => options.bin = PathBuf::from(value()?),
            "--peers" => options.peers = PathBuf::from(value()?),
            "--node" => options.node = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "weaklink_bench [--size 48MiB] [--seed 21] [--schedules steady,flaps,outages,black-hole] \
                     [--clients tenax-seed,tenax-tus,tenax-ietf,tus-js,tus-js-tus-server,google] \
                     [--timeout 300] [--work-dir DIR] [--bin PATH] [--peers DIR] [--node PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    // Servers and clients run in other directories.
    options.peers = std::fs::canonicalize(&options.peers)
        .with_context(|| format!("no peers folder at {}", options.peers.display()))?;
    std::fs::create_dir_all(&options.work_dir)?;
    options.work_dir = std::fs::canonicalize(&options.work_dir)?;
    for name in schedules.split(',') {
        schedule(name, 0)?;
        options.schedules.push(name.to_owned());
    }
    for name in clients.split(',') {
        ensure!(
            matches!(
                name,
                "tenax-seed"
                    | "tenax-tus"
                    | "tenax-ietf"
                    | "tus-js"
                    | "tus-js-tus-server"
                    | "google"
            ),
            "unknown client {name}"
        );
        options.clients.push(name.to_owned());
    }
    ensure!(
        options.bin.is_file(),
        "no tenax binary at {}",
        options.bin.display()
    );
    Ok(options)
}

/// The link of schedule `name` with `seed`.
fn schedule(name: &str, seed: u64) -> anyhow::Result<(LinkConfig, &'static str)> {
    let s = Duration::from_secs;
    let (schedule, outage, what) = match name {
        // No outage: what the link model, the client and the server reach
        // together, the ceiling of the other schedules' share.
        "steady" => (Schedule::always_up(), Outage::Reset, "always up"),
        "flaps" => (
            Schedule::seeded(seed, (s(5), s(12)), (s(1), s(3))),
            Outage::Reset,
            "up 5-12 s, down 1-3 s, reset",
        ),
        "outages" => (
            Schedule::seeded(seed, (s(5), s(12)), (s(5), s(20))),
            Outage::Reset,
            "up 5-12 s, down 5-20 s, reset",
        ),
        "black-hole" => (
            Schedule::seeded(seed, (s(5), s(12)), (s(5), s(20))),
            Outage::BlackHole,
            "up 5-12 s, down 5-20 s, silent",
        ),
        other => bail!("unknown schedule {other}"),
    };
    Ok((
        LinkConfig {
            uplink: Some(UPLINK),
            downlink: Some(DOWNLINK),
            delay: DELAY,
            schedule,
            outage,
        },
        what,
    ))
}

/// The server a run uploads to.
enum Upstream {
    Tenax(TestServer),
    TusServer(bench_common::Server, PathBuf),
}

impl Upstream {
    fn addr(&self) -> anyhow::Result<SocketAddr> {
        match self {
            Upstream::Tenax(server) => Ok(server.addr()),
            Upstream::TusServer(server, _) => Ok(server
                .url
                .trim_start_matches("http://")
                .parse()
                .context("the @tus/server address")?),
        }
    }

    /// The stored file of the upload whose URL is `url`.
    fn stored(&self, url: &str) -> PathBuf {
        match self {
            Upstream::Tenax(server) => server.data_dir().join("files").join(NAME),
            Upstream::TusServer(_, dir) => dir.join(url.rsplit('/').next().unwrap_or_default()),
        }
    }
}

/// The command of `client` uploading `file` through `link`.
fn command(options: &Options, client: &str, file: &Path, link: SocketAddr) -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = format!("http://{link}");
    match client {
        "tenax-seed" | "tenax-tus" | "tenax-ietf" => {
            let mut command = Command::new(&options.bin);
            command
                .arg("upload")
                .arg(file)
                .arg(format!("{base}/"))
                .args(["--protocol", client.trim_start_matches("tenax-")])
                .args(["--no-journal", "--json"]);
            command
        }
        "tus-js" | "tus-js-tus-server" => {
            let params = json!({
                "endpoint": format!("{base}/uploads"),
                "file": file,
                "name": NAME,
                "mode": "plain",
                "chunkSize": CHUNK,
                "options": { "retryDelays": vec![1000; 1000] },
            });
            let mut command = Command::new(&options.node);
            command
                .arg(root.join("tests/peers/tus_upload.mjs"))
                .arg(params.to_string())
                .env("NODE_PATH", options.peers.join("node/node_modules"));
            command
        }
        _ => {
            let mut command = Command::new(options.peers.join("venv/bin/python"));
            command
                .arg(root.join("tests/peers/google_upload.py"))
                .arg(format!("{base}/uploads"))
                .arg(file)
                .arg(GOOGLE_CHUNK.to_string())
                .args(["plain", NAME]);
            command
        }
    }
}

/// One client's upload on one schedule.
async fn run(
    options: &Options,
    schedule_name: &str,
    client: &str,
    file: &Path,
    sha256: &str,
) -> anyhow::Result<serde_json::Value> {
    let scratch = options.work_dir.join("weaklink");
    std::fs::create_dir_all(&scratch)?;
    let upstream = if client == "tus-js-tus-server" {
        let dir = options.peers.join("tus-server");
        let data = scratch.join("tus-data");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let server = bench_common::Server::tus_node(
            &options.node,
            &dir,
            &data,
            &scratch.join("tus-server.log"),
        )?;
        Upstream::TusServer(server, data)
    } else {
        Upstream::Tenax(TestServer::start(&options.bin))
    };
    let (config, _) = schedule(schedule_name, options.seed)?;
    let uptime_of = config.schedule.clone();
    let link = WeakLink::start(upstream.addr()?, config).await;
    let log_path = scratch.join(format!("{schedule_name}-{client}.log"));
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let child = command(options, client, file, link.addr())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {client}"))?;
    let pid = child.id();
    let (sampler, samples) = sample_delivery(&link);
    let waited = tokio::time::timeout(
        options.timeout,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let ended = Instant::now();
    let elapsed = ended - started;
    let uptime = uptime_of.uptime(started - link.started(), ended - link.started());
    let ideal = Duration::from_secs_f64(options.size as f64 / UPLINK as f64);
    sampler.abort();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let transitions = link.stats().transitions();
    let outages = transitions
        .iter()
        .filter(|(at, up)| !up && *at <= elapsed + (started - link.started()))
        .count();
    let back_on_wire: Vec<f64> = transitions
        .iter()
        .filter(|(_, up)| *up)
        .filter_map(|(at, _)| moving_again(&samples, *at))
        .map(|d| round(d.as_secs_f64()))
        .collect();
    let mut result = json!({
        "schedule": schedule_name,
        "client": client,
        "size": options.size,
        "seconds": round(elapsed.as_secs_f64()),
        "uptime_seconds": round(uptime.as_secs_f64()),
        "ideal_seconds": round(ideal.as_secs_f64()),
        "uptime_used": round(ideal.as_secs_f64() / uptime.as_secs_f64().max(1e-9)),
        "outages": outages,
        "back_on_wire_seconds": back_on_wire,
        "connections": link.stats().connections.load(Ordering::Relaxed),
        "delivered_bytes": link.stats().client_bytes.load(Ordering::Relaxed),
        "log": log_path,
    });
    let outcome = match waited {
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Err(format!("did not finish in {} s", options.timeout.as_secs()))
        }
        Ok(joined) => {
            let output = joined??;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            if !output.status.success() {
                Err(format!(
                    "failed ({}): {}",
                    output.status,
                    stdout.lines().last().unwrap_or_default()
                ))
            } else {
                let url = serde_json::from_str::<serde_json::Value>(
                    stdout.lines().last().unwrap_or_default(),
                )
                .ok()
                .and_then(|v| v["url"].as_str().map(str::to_owned))
                .unwrap_or_default();
                let stored = upstream.stored(&url);
                match sha256_file(&stored) {
                    Ok(hash) if hash == sha256 => Ok(()),
                    Ok(_) => Err(format!("the stored file {} differs", stored.display())),
                    Err(e) => Err(format!("no stored file {}: {e}", stored.display())),
                }
            }
        }
    };
    result["ok"] = json!(outcome.is_ok());
    if let Err(error) = outcome {
        result["error"] = json!(error);
    }
    if let Upstream::TusServer(server, _) = upstream {
        server.stop()?;
    }
    Ok(result)
}

/// Body bytes beyond a status query or a probe: the upload is moving.
const MOVING: u64 = 64 * 1024;

/// Samples the link's delivered client bytes every 10 ms, as offsets from
/// the link's start, into the returned list until the task is aborted.
fn sample_delivery(link: &WeakLink) -> (tokio::task::JoinHandle<()>, Samples) {
    let samples = Samples::default();
    let (writer, stats, origin) = (samples.clone(), link.stats_handle(), link.started());
    let task = tokio::spawn(async move {
        loop {
            let bytes = stats.client_bytes.load(Ordering::Relaxed);
            if let Ok(mut samples) = writer.lock() {
                samples.push((origin.elapsed(), bytes));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (task, samples)
}

/// Delivered client bytes over time.
type Samples = std::sync::Arc<std::sync::Mutex<Vec<(Duration, u64)>>>;

/// How long after `back` (the link's return) the delivered bytes grew by
/// [`MOVING`]; `None` if they never did.
fn moving_again(samples: &[(Duration, u64)], back: Duration) -> Option<Duration> {
    let from = samples.iter().find(|(at, _)| *at >= back)?.1;
    samples
        .iter()
        .find(|(at, bytes)| *at >= back && *bytes >= from + MOVING)
        .map(|(at, _)| *at - back)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    std::fs::create_dir_all(&options.work_dir)?;
    let file = options.work_dir.join(NAME);
    println!(
        "weaklink: {} file, link {} MB/s up, {} MB/s down, {} ms each way, seed {}",
        human(options.size),
        UPLINK as f64 / 1e6,
        DOWNLINK as f64 / 1e6,
        DELAY.as_millis(),
        options.seed
    );
    let sha256 = generate(&file, options.size)?;
    let mut results = Vec::new();
    for schedule_name in &options.schedules {
        let (_, what) = schedule(schedule_name, options.seed)?;
        println!("== {schedule_name}: {what}");
        for client in &options.clients {
            let result = run(&options, schedule_name, client, &file, &sha256).await?;
            println!(
                "{client:>18}: {:>6.1} s, up-time {:>5.1} s, used {:.2}, {} outages, {} connections{}",
                result["seconds"].as_f64().unwrap_or_default(),
                result["uptime_seconds"].as_f64().unwrap_or_default(),
                result["uptime_used"].as_f64().unwrap_or_default(),
                result["outages"],
                result["connections"],
                result["error"]
                    .as_str()
                    .map(|e| format!(", FAILED: {e}"))
                    .unwrap_or_default(),
            );
            results.push(result);
        }
    }
    std::fs::remove_file(&file).ok();
    // The targets: tenax upload (seed, defaults) uses >= 0.9 of the
    // up-time and is never slower than tus-js-client into tenax.
    let mut targets = Vec::new();
    for schedule_name in &options.schedules {
        let find = |client: &str| {
            results
                .iter()
                .find(|r| r["schedule"] == schedule_name.as_str() && r["client"] == client)
        };
        if let Some(seed) = find("tenax-seed") {
            let used = seed["uptime_used"].as_f64().unwrap_or_default();
            let ok = seed["ok"] == true;
            let tus_js = find("tus-js").and_then(|r| r["seconds"].as_f64());
            let seconds = seed["seconds"].as_f64().unwrap_or(f64::MAX);
            targets.push(json!({
                "schedule": schedule_name,
                "uptime_used": used,
                "uptime_met": ok && used >= 0.9,
                "tus_js_seconds": tus_js,
                "not_slower_met": ok && tus_js.is_none_or(|t| seconds <= t),
            }));
        }
    }
    for target in &targets {
        println!(
            "target {}: tenax upload used {:.2} of the up-time (>= 0.9: {}), {} than tus-js-client ({})",
            target["schedule"].as_str().unwrap_or_default(),
            target["uptime_used"].as_f64().unwrap_or_default(),
            if target["uptime_met"] == true {
                "MET"
            } else {
                "MISSED"
            },
            if target["not_slower_met"] == true {
                "not slower"
            } else {
                "SLOWER"
            },
            target["tus_js_seconds"]
        );
    }
    println!(
        "{}",
        json!({
            "size": options.size,
            "seed": options.seed,
            "uplink": UPLINK,
            "downlink": DOWNLINK,
            "delay_ms": DELAY.as_millis() as u64,
            "chunk": CHUNK,
            "google_chunk": GOOGLE_CHUNK,
            "schedules": options.schedules.iter().map(|s| {
                json!({"name": s, "what": schedule(s, options.seed).map(|(_, w)| w).unwrap_or_default()})
            }).collect::<Vec<_>>(),
            "runs": results,
            "targets": targets,
        })
    );
    Ok(())
}
