//! Link soak for tenax (a script, not a test; `bench/soak` builds and runs it).
//!
//! For each dialect (seed, tus, ietf by default): a fresh `tenax serve`
//! (the release binary), a fault proxy (`tenax_testkit::FaultProxy`) that
//! cuts every connection after a random 1–8 MiB of request bytes, and the
//! client library's `Uploader` sending a `--size` file (1 GiB) of random
//! bytes through it. Each upload must complete with the file's sha256, and
//! the stored file must hash the same. It prints, per dialect, the time,
//! the cuts, the retries and the re-sent bytes (`bytes_sent - size`: body
//! bytes the client put on the wire more than once) and where the bytes lost
//! at each cut were, against the target for the client's own share of them
//! (at most 16 KiB per cut), then one JSON line.
//!
//! `soak_bench [--size 1GiB] [--chunk 8MiB] [--cut 1MiB,8MiB]
//! [--dialects seed,tus,ietf] [--work-dir DIR] [--bin PATH]`; the proxy's
//! random cuts come from `TENAX_TEST_SEED` when set.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bench_common::{MIB, generate, human, mb_per_s, parse_size, sha256_file};
use serde_json::json;
use tenax_client::{Protocol, Uploader};
use tenax_testkit::{FaultProxy, Rng, TestServer};

/// The bytes a cut may lose on the client's side (its socket's queue and
/// whatever it had in flight), per cut. The rest of what a cut loses sat in
/// the link (the proxy's socket, the bytes it read past the cut), which no
/// client can spare.
const TARGET_CLIENT_SIDE_PER_CUT_KIB: f64 = 16.0;

struct Options {
    size: u64,
    chunk: u64,
    cut: (u64, u64),
    dialects: Vec<(String, Protocol)>,
    work_dir: PathBuf,
    bin: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut options = Options {
        size: 1 << 30,
        chunk: 8 * MIB,
        cut: (MIB, 8 * MIB),
        dialects: Vec::new(),
        work_dir: root.join("target/bench"),
        bin: root.join("target/bench-release/tenax"),
    };
    let mut dialects = "seed,tus,ietf".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => options.size = parse_size(&value()?)?,
            "--chunk" => options.chunk = parse_size(&value()?)?,
            "--cut" => {
                let text = value()?;
                let (low, high) = text.split_once(',').context("--cut LOW,HIGH")?;
                options.cut = (parse_size(low)?, parse_size(high)?);
            }
            "--dialects" => dialects = value()?,
            "--work-dir" => options.work_dir = PathBuf::from(value()?),
            "--bin" => options.bin = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "soak_bench [--size 1GiB] [--chunk 8MiB] [--cut 1MiB,8MiB] \
                     [--dialects seed,tus,ietf] [--work-dir DIR] [--bin PATH]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    for name in dialects.split(',') {
        let protocol = match name {
            "seed" => Protocol::Seed,
            "tus" => Protocol::Tus,
            "ietf" => Protocol::Ietf,
            other => bail!("unknown dialect {other}"),
        };
        options.dialects.push((name.to_owned(), protocol));
    }
    ensure!(
        options.cut.0 >= 1 && options.cut.0 <= options.cut.1,
        "bad --cut"
    );
    ensure!(
        options.bin.is_file(),
        "no server binary at {}",
        options.bin.display()
    );
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    std::fs::create_dir_all(&options.work_dir)?;
    let file = options.work_dir.join("soak.bin");
    println!(
        "soak: {} file, {} chunks, cuts every {}..{} of request bytes, dialects {}",
        human(options.size),
        human(options.chunk),
        human(options.cut.0),
        human(options.cut.1),
        options
            .dialects
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let sha256 = generate(&file, options.size)?;
    let rng = Rng::from_env_or_os();
    let mut results = Vec::new();
    let mut met = true;
    for (name, protocol) in &options.dialects {
        let server = TestServer::start(&options.bin);
        let proxy = FaultProxy::start(server.addr(), options.cut, rng.clone()).await;
        let uploader = Uploader::new()
            .chunk_size(options.chunk)
            .protocol(*protocol)
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .stall_timeout(Duration::from_secs(10))
            .max_retries(100_000);
        let started = Instant::now();
        let report = tokio::time::timeout(
            Duration::from_secs(3600),
            uploader.upload(&file, &format!("http://{}/", proxy.addr())),
        )
        .await
        .with_context(|| format!("{name}: timed out"))?
        .with_context(|| format!("{name}: upload failed"))?;
        let elapsed = started.elapsed();
        ensure!(report.size == options.size, "{name}: size {}", report.size);
        ensure!(
            report.sha256 == sha256,
            "{name}: the client's sha256 differs"
        );
        let stored = server.data_dir().join("files").join("soak.bin");
        let stored_sha256 = sha256_file(&stored)?;
        ensure!(stored_sha256 == sha256, "{name}: the stored file differs");
        let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
        let per_cut = |bytes: u64| bytes as f64 / 1024.0 / cuts.max(1) as f64;
        // Request bytes that reached the server (headers included): what the
        // client sent beyond this was lost in the link's buffers at a cut;
        // what reached the server beyond the file's size, the server dropped.
        let forwarded = proxy.stats().client_bytes.load(Ordering::Relaxed);
        // Of what was lost in the link: what the proxy had read past the
        // cut, and what waited unread in its socket; the rest was still on
        // the client's side (its socket's queue, in transit).
        let overshoot = proxy.stats().overshoot.load(Ordering::Relaxed);
        let unread = proxy.stats().unread_at_cut.load(Ordering::Relaxed);
        let lost = report.bytes_sent.saturating_sub(forwarded);
        let client_side = lost.saturating_sub(overshoot + unread);
        let resent = report.bytes_sent - report.size;
        let share = resent as f64 / report.size as f64;
        let client_side_met = per_cut(client_side) <= TARGET_CLIENT_SIDE_PER_CUT_KIB;
        met &= client_side_met;
        println!(
            "{name:>5}: {} in {:.1} s ({:.0} MB/s), {cuts} cuts, {} retries, \
             re-sent {resent} bytes = {:.3}% of the file ({:.0} KiB per cut; \
             lost in the link {:.0} KiB per cut: {:.0} read past the cut by the proxy, \
             {:.0} unread in its socket, {:.0} on the client's side), \
             target <= {TARGET_CLIENT_SIDE_PER_CUT_KIB} KiB on the client's side per cut: {}, \
             sha256 equal ({})",
            human(report.size),
            elapsed.as_secs_f64(),
            mb_per_s(report.size, elapsed),
            report.retries,
            share * 100.0,
            per_cut(resent),
            per_cut(lost),
            per_cut(overshoot),
            per_cut(unread),
            per_cut(client_side),
            if client_side_met { "MET" } else { "MISSED" },
            &sha256[..16],
        );
        results.push(json!({
            "dialect": name,
            "size": report.size,
            "seconds": elapsed.as_secs_f64(),
            "cuts": cuts,
            "retries": report.retries,
            "bytes_sent": report.bytes_sent,
            "resent": resent,
            "resent_share": share,
            "forwarded_to_server": forwarded,
            "lost_read_past_cut": overshoot,
            "lost_unread_in_proxy": unread,
            "lost_client_side": client_side,
            "sha256_equal": true,
        }));
    }
    std::fs::remove_file(&file).ok();
    println!(
        "{}",
        json!({
            "size": options.size,
            "chunk": options.chunk,
            "cut": [options.cut.0, options.cut.1],
            "target_client_side_per_cut_kib": TARGET_CLIENT_SIDE_PER_CUT_KIB,
            "targets_met": met,
            "runs": results,
        })
    );
    Ok(())
}
