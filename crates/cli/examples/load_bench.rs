//! Load benchmark for tenax (a script, not a test; `bench/load` builds and
//! runs it): `--uploads` (1,000) concurrent tus uploads of `--min`..`--max`
//! (64 KiB–4 MiB) random bytes from this one process against a fresh
//! release `tenax serve`, with `--pollers` (4) tasks timing status queries
//! (`HEAD`) during the load. Prints the errors (there must be none), the
//! status latency p50/p99/max, the server's RSS (sampled every 20 ms, and
//! `VmHWM`), and a JSON line. The logic is `crates/cli/tests/load_run/`,
//! shared with the CI-size test `tests/load.rs`.
//!
//! Each upload holds a connection (and the server one more), so the open
//! file limit must allow about twice `--uploads`: `bench/load` raises the
//! soft limit to the hard one.

#[path = "bench_common/mod.rs"]
mod bench_common;
#[path = "../tests/load_run/mod.rs"]
mod load_run;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bench_common::{Server, parse_size};
use load_run::{LoadConfig, run};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut bin = root.join("target/bench-release/tenax");
    let mut work = root.join("target/bench");
    let mut config = LoadConfig {
        uploads: 1000,
        sizes: (64 << 10, 4 << 20),
        pollers: 4,
        seed: 1,
        server_pid: None,
        timeout: Duration::from_secs(600),
        tenax_final_query: true,
    };
    let mut tus_server: Option<PathBuf> = None;
    let mut node = PathBuf::from("node");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--uploads" => config.uploads = value()?.parse()?,
            "--min" => config.sizes.0 = parse_size(&value()?)?,
            "--max" => config.sizes.1 = parse_size(&value()?)?,
            "--pollers" => config.pollers = value()?.parse()?,
            "--seed" => config.seed = value()?.parse()?,
            "--bin" => bin = PathBuf::from(value()?),
            "--work-dir" => work = PathBuf::from(value()?),
            "--tus-server" => {
                // The server runs with its directory as working directory.
                let dir = PathBuf::from(value()?);
                tus_server = Some(
                    dir.canonicalize()
                        .with_context(|| dir.display().to_string())?,
                );
            }
            "--node" => node = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "load_bench [--uploads 1000] [--min 64KiB] [--max 4MiB] [--pollers 4] \
                     [--seed N] [--bin PATH] [--work-dir DIR] [--tus-server DIR --node PATH]\n\
                     With --tus-server (a directory with server.mjs and node_modules), the \
                     same load runs against @tus/server instead; the stored files' sha256 \
                     are checked."
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(config.sizes.0 <= config.sizes.1, "--min above --max");
    std::fs::create_dir_all(&work)?;
    // Absolute: @tus/server runs in a working directory of its own.
    let work = work.canonicalize()?;
    let data = work.join("load-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let server = match &tus_server {
        Some(dir) => {
            config.tenax_final_query = false;
            Server::tus_node(&node, dir, &data, &work.join("server-load-tus.log"))?
        }
        None => Server::tenax(&bin, &data, &[], &work.join("server-load.log"))?,
    };
    let name = if tus_server.is_some() {
        "@tus/server"
    } else {
        "tenax"
    };
    config.server_pid = Some(server.child.id());
    println!(
        "load: {} concurrent tus uploads of {}..{} bytes, {} status pollers, {name} at {}",
        config.uploads, config.sizes.0, config.sizes.1, config.pollers, server.url
    );
    let mut report = run(&server.url, &config).await;
    server.stop()?;
    if tus_server.is_some() {
        // @tus/file-store keeps each upload at DIR/<id>.
        for (location, sha256) in &report.uploaded {
            let id = location.rsplit('/').next().unwrap_or_default();
            match bench_common::sha256_file(&data.join(id)) {
                Ok(stored) if stored == *sha256 => {}
                Ok(_) => report
                    .errors
                    .push(format!("{location}: stored sha256 differs")),
                Err(error) => report.errors.push(format!("{location}: {error}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    println!("{name}: {}", report.summary());
    for error in report.errors.iter().take(20) {
        println!("error: {error}");
    }
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    println!(
        "{}",
        json!({
            "server": name,
            "mb_per_s": report.bytes as f64 / 1e6 / report.elapsed.as_secs_f64(),
            "uploads": config.uploads,
            "completed": report.completed,
            "bytes": report.bytes,
            "errors": report.errors.len(),
            "seconds": report.elapsed.as_secs_f64(),
            "status_queries": report.status_latencies.len(),
            "status_p50_ms": ms(report.quantile(0.5)),
            "status_p99_ms": ms(report.quantile(0.99)),
            "status_max_ms": ms(report.status_latencies.last().copied()),
            "server_status_p50_ms_at_most": ms(report.server_status.map(|s| s.p50)),
            "server_status_p99_ms_at_most": ms(report.server_status.map(|s| s.p99)),
            "server_rss_max_kib": report.rss_max_kib,
            "server_vmhwm_kib": report.rss_peak_kib,
        })
    );
    ensure!(report.errors.is_empty(), "{} errors", report.errors.len());
    Ok(())
}
