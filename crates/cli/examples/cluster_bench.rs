//! Cluster benchmark (a script, not a test; `bench/cluster` builds and runs
//! it with moto and PostgreSQL started): `--uploads` (32) concurrent tus
//! uploads of `--size` (32 MiB) each, in `--chunk` (8 MiB) PATCHes, through
//! testkit's round-robin [`Balancer`] in front of 1, 2 and 3 release
//! `tenax serve --data s3://… --cluster postgres://…` nodes (`--nodes`,
//! default `1,2,3`), one configuration after the other, each on a fresh
//! bucket prefix and database. Prints the aggregate MB/s of each and its
//! ratio to the first, then a JSON line.
//!
//! The uploads are unnamed, so they are completed but not copied to
//! `files/NAME` (that server-side copy is bench/s3's subject). The body is
//! one random buffer sent by every upload (slices of it, no copies). Each
//! configuration checks the last 4 KiB of one upload through the balancer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use serde_json::json;
use tenax_testkit::{Balancer, Rng, TestServer};

/// One configuration's outcome.
struct Outcome {
    nodes: usize,
    elapsed: Duration,
    hits: Vec<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut bin = root.join("target/bench-release/tenax");
    let mut uploads = 32usize;
    let mut size = 32usize << 20;
    let mut chunk = 8usize << 20;
    let mut configs = vec![1usize, 2, 3];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--uploads" => uploads = value()?.parse()?,
            "--size" => size = parse_mib(&value()?)?,
            "--chunk" => chunk = parse_mib(&value()?)?,
            "--nodes" => {
                configs = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--bin" => bin = PathBuf::from(value()?),
            "--help" | "-h" => {
                println!(
                    "cluster_bench [--uploads 32] [--size 32MiB] [--chunk 8MiB] [--nodes 1,2,3] \
                     [--bin PATH]\nNeeds TENAX_TEST_S3_URL (with the AWS_* variables) and \
                     TENAX_TEST_DATABASE_URL, as bench/cluster sets them."
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        size > 0 && chunk > 0 && uploads > 0,
        "sizes and counts must be positive"
    );
    ensure!(
        configs.iter().all(|&n| (1..=16).contains(&n)),
        "--nodes: 1 to 16 each"
    );
    let mut buffer = vec![0u8; size];
    Rng::new(7).fill(&mut buffer);
    let data = Bytes::from(buffer);
    let total = (uploads * size) as u64;
    println!(
        "cluster_bench: {uploads} uploads x {} MiB in {} MiB chunks (tus, unnamed), nodes {configs:?}",
        size >> 20,
        chunk >> 20
    );

    let mut outcomes = Vec::new();
    for &nodes in &configs {
        let name = format!("bench{nodes}");
        let data_url = tenax_testkit::s3_url(&name).context("TENAX_TEST_S3_URL is not set")?;
        let database =
            tenax_testkit::database_url(&name).context("TENAX_TEST_DATABASE_URL is not set")?;
        let (bin, data_dir, db) = (bin.clone(), data_url.clone(), database.clone());
        let servers = tokio::task::spawn_blocking(move || {
            (0..nodes)
                .map(|_| TestServer::start_at(&bin, &data_dir, &["--cluster", db.as_str()]))
                .collect::<Vec<_>>()
        })
        .await?;
        let addrs: Vec<_> = servers.iter().map(TestServer::addr).collect();
        let balancer = Balancer::start(&addrs).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..uploads {
            let (http, data, collection) = (http.clone(), data.clone(), balancer.url("/uploads"));
            tasks.push(tokio::spawn(async move {
                upload(&http, &collection, data, chunk).await
            }));
        }
        let mut urls = Vec::new();
        for task in tasks {
            urls.push(task.await??);
        }
        let elapsed = started.elapsed();
        let check = http
            .get(&urls[0])
            .header(
                "range",
                format!("bytes={}-{}", size.saturating_sub(4096), size - 1),
            )
            .send()
            .await?;
        ensure!(
            check.status() == 206,
            "read-back answered {}",
            check.status()
        );
        let tail = check.bytes().await?;
        ensure!(
            tail == data.slice(size.saturating_sub(4096)..),
            "read-back mismatch"
        );
        let outcome = Outcome {
            nodes,
            elapsed,
            hits: balancer.hits(),
        };
        println!(
            "{nodes} node(s): {:.1} s  {:.1} MB/s  (requests per node {:?}; {data_url}, {database})",
            elapsed.as_secs_f64(),
            total as f64 / 1e6 / elapsed.as_secs_f64(),
            outcome.hits
        );
        outcomes.push(outcome);
        drop(balancer);
        drop(servers);
    }
    let base = total as f64 / 1e6 / outcomes[0].elapsed.as_secs_f64();
    let mut rows = Vec::new();
    for outcome in &outcomes {
        let rate = total as f64 / 1e6 / outcome.elapsed.as_secs_f64();
        println!(
            "{} node(s): {rate:.1} MB/s, ratio to {} node(s) {:.2}",
            outcome.nodes,
            outcomes[0].nodes,
            rate / base
        );
        rows.push(json!({
            "nodes": outcome.nodes,
            "seconds": outcome.elapsed.as_secs_f64(),
            "mb_per_s": rate,
            "ratio": rate / base,
            "requests_per_node": outcome.hits,
        }));
    }
    println!(
        "{}",
        json!({
            "bench": "cluster",
            "uploads": uploads,
            "size": size,
            "chunk": chunk,
            "results": rows,
        })
    );
    Ok(())
}

/// One tus upload: creation, then PATCHes of `chunk` bytes; returns its URL.
async fn upload(
    http: &reqwest::Client,
    collection: &str,
    data: Bytes,
    chunk: usize,
) -> anyhow::Result<String> {
    let created = http
        .post(collection)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", data.len().to_string())
        .send()
        .await?;
    ensure!(
        created.status() == 201,
        "creation answered {}",
        created.status()
    );
    let url = created
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .context("creation without Location")?
        .to_owned();
    let mut at = 0;
    while at < data.len() {
        let end = (at + chunk).min(data.len());
        let resp = http
            .patch(&url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", at.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(data.slice(at..end))
            .send()
            .await?;
        ensure!(
            resp.status() == 204,
            "PATCH at {at} answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        at = end;
    }
    Ok(url)
}

/// `32MiB` or `32` (MiB).
fn parse_mib(text: &str) -> anyhow::Result<usize> {
    let number = text
        .trim()
        .trim_end_matches("MiB")
        .trim_end_matches('M')
        .parse::<usize>()
        .with_context(|| format!("bad size {text:?} (MiB)"))?;
    Ok(number << 20)
}
