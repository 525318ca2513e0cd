//! Many concurrent small tus uploads from one client process, with status
//! queries timed while they run. Shared by the test `tests/load.rs` (CI
//! size) and the benchmark `examples/load_bench.rs` (`bench/load`), each
//! including this file with `#[path]` / `mod`.
//!
//! Every upload: `POST /uploads` (`Upload-Length`), one `PATCH` streaming
//! its random bytes (generated on the fly in 64 KiB frames, hashed as they
//! go, never held whole), then the seed status query (`PUT` with
//! `Content-Range: bytes */*`), whose final `sha256` must equal the bytes
//! sent. Meanwhile `pollers` tasks send `HEAD {upload}` (tus) to uploads
//! whose bytes were sent so far, as fast as answers come, and time each;
//! every answer must be 200 with an `Upload-Offset` no larger than the
//! upload's length. (Not to uploads still receiving: a tus `HEAD` takes
//! the upload over and ends the request writing it, by design.)

// The test and the benchmark each use part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use sha2::{Digest as _, Sha256};
use tenax_testkit::Rng;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    /// Concurrent uploads (all started at once).
    pub(crate) uploads: usize,
    /// Size range of each upload (inclusive).
    pub(crate) sizes: (u64, u64),
    /// Concurrent status pollers.
    pub(crate) pollers: usize,
    /// Seed of the sizes and bytes.
    pub(crate) seed: u64,
    /// The server's pid, for its RSS from `/proc` (sampled every 20 ms).
    pub(crate) server_pid: Option<u32>,
    /// Bound on the whole run.
    pub(crate) timeout: Duration,
    /// Whether each upload ends with tenax's seed status query, whose
    /// `sha256` is checked (other servers: check `LoadReport::uploaded`).
    pub(crate) tenax_final_query: bool,
}

/// What happened.
#[derive(Debug)]
pub(crate) struct LoadReport {
    /// Uploads completed with the right digest.
    pub(crate) completed: usize,
    /// Bytes uploaded.
    pub(crate) bytes: u64,
    /// Each completed upload's URL and the sha256 of the bytes sent.
    pub(crate) uploaded: Vec<(String, String)>,
    /// Every failure (uploads and status queries), described.
    pub(crate) errors: Vec<String>,
    /// Start of the first upload to the end of the last.
    pub(crate) elapsed: Duration,
    /// Latencies of the status queries made during the load, sorted.
    pub(crate) status_latencies: Vec<Duration>,
    /// Highest server RSS sampled during the run, KiB.
    pub(crate) rss_max_kib: Option<u64>,
    /// The server's `VmHWM` at the end, KiB.
    pub(crate) rss_peak_kib: Option<u64>,
    /// The status queries as the server timed them (tenax's
    /// `tenax_request_seconds` histogram, method `HEAD`): without the
    /// client's own waits on the shared CPUs.
    pub(crate) server_status: Option<ServerLatency>,
}

/// Quantiles read from a histogram of the server's: each is the upper bound
/// of the bucket it falls in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLatency {
    /// Observations.
    pub(crate) count: u64,
    /// The median is at most this.
    pub(crate) p50: Duration,
    /// The 99th percentile is at most this.
    pub(crate) p99: Duration,
}

impl ServerLatency {
    /// From Prometheus text: the `HEAD` buckets of `tenax_request_seconds`,
    /// summed over dialects (every series of one histogram has the same
    /// bounds). `None` without any.
    pub(crate) fn of_heads(metrics: &str) -> Option<ServerLatency> {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        for line in metrics.lines() {
            let Some(labels) = line.strip_prefix("tenax_request_seconds_bucket{") else {
                continue;
            };
            let Some((labels, count)) = labels.split_once("} ") else {
                continue;
            };
            if !labels.split(',').any(|label| label == "method=\"HEAD\"") {
                continue;
            }
            let le = labels
                .split(',')
                .find_map(|label| label.strip_prefix("le=\""))
                .and_then(|le| le.strip_suffix('"'))
                .and_then(|le| {
                    if le == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        le.parse().ok()
                    }
                });
            let (Some(le), Ok(count)) = (le, count.trim().parse::<u64>()) else {
                continue;
            };
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, sum)) => *sum += count,
                None => buckets.push((le, count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.last()?.1;
        let quantile = |q: f64| {
            let rank = (count as f64 * q).ceil() as u64;
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= rank)
                .map_or(Duration::MAX, |(le, _)| {
                    Duration::try_from_secs_f64(*le).unwrap_or(Duration::MAX)
                })
        };
        (count > 0).then(|| ServerLatency {
            count,
            p50: quantile(0.5),
            p99: quantile(0.99),
        })
    }
}

impl LoadReport {
    /// The `q` quantile (0..=1) of the status query latencies.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.status_latencies.len();
        (n > 0).then(|| self.status_latencies[((n - 1) as f64 * q).round() as usize])
    }

    /// One line for humans.
    pub(crate) fn summary(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        format!(
            "{} uploads ({:.1} MB) in {:.2} s, {} errors; {} status queries during the load: \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server RSS max {} KiB (VmHWM {} KiB)",
            self.completed,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.errors.len(),
            self.status_latencies.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.status_latencies.last().copied()),
            self.rss_max_kib.map_or("?".into(), |k| k.to_string()),
            self.rss_peak_kib.map_or("?".into(), |k| k.to_string()),
        ) + &self.server_status.map_or(String::new(), |server| {
            format!(
                "; as the server timed its {} status queries: p50 <= {:.2} ms, p99 <= {:.2} ms",
                server.count,
                server.p50.as_secs_f64() * 1e3,
                server.p99.as_secs_f64() * 1e3,
            )
        })
    }
}

/// A `/proc/PID/status` figure in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// An HTTP/1.1 client with a connection per concurrent request.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client")
}

/// Runs the load against `base` (`http://HOST:PORT`).
pub(crate) async fn run(base: &str, config: &LoadConfig) -> LoadReport {
    let client = client();
    let mut rng = Rng::new(config.seed);
    let locations: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let rss_max = Arc::new(AtomicU64::new(0));

    let sampler = config.server_pid.map(|pid| {
        let (done, rss_max) = (Arc::clone(&done), Arc::clone(&rss_max));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS") {
                    rss_max.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });

    let pollers: Vec<_> = (0..config.pollers)
        .map(|index| {
            let (client, locations, errors, done) = (
                client.clone(),
                Arc::clone(&locations),
                Arc::clone(&errors),
                Arc::clone(&done),
            );
            let mut rng = Rng::new(config.seed ^ (index as u64 + 1) << 32);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let pick = {
                        let locations = locations.lock().expect("locations");
                        (!locations.is_empty()).then(|| {
                            locations[rng.between(0, locations.len() as u64 - 1) as usize].clone()
                        })
                    };
                    let Some((location, size)) = pick else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    let started = Instant::now();
                    let answer = client
                        .head(&location)
                        .header("tus-resumable", "1.0.0")
                        .send()
                        .await;
                    let took = started.elapsed();
                    let offset = answer.as_ref().ok().and_then(|response| {
                        response
                            .headers()
                            .get("upload-offset")?
                            .to_str()
                            .ok()?
                            .parse::<u64>()
                            .ok()
                    });
                    match answer {
                        Ok(response)
                            if response.status() == 200 && offset.is_some_and(|o| o <= size) =>
                        {
                            latencies.push(took);
                        }
                        Ok(response) => errors.lock().expect("errors").push(format!(
                            "HEAD {location}: {} offset {offset:?} of {size}",
                            response.status()
                        )),
                        Err(error) => errors
                            .lock()
                            .expect("errors")
                            .push(format!("HEAD {location}: {error}")),
                    }
                }
                latencies
            })
        })
        .collect();

    let started = Instant::now();
    let uploads: Vec<_> = (0..config.uploads)
        .map(|index| {
            let size = rng.between(config.sizes.0, config.sizes.1);
            let seed = rng.next_u64();
            let (client, base, locations) =
                (client.clone(), base.to_owned(), Arc::clone(&locations));
            let tenax = config.tenax_final_query;
            tokio::spawn(async move {
                upload(&client, &base, size, seed, &locations, tenax)
                    .await
                    .map(|done| (size, done))
                    .map_err(|error| format!("upload {index} ({size} bytes): {error}"))
            })
        })
        .collect();
    let mut completed = 0;
    let mut bytes = 0;
    let mut uploaded = Vec::new();
    let deadline = tokio::time::Instant::now() + config.timeout;
    for upload in uploads {
        match tokio::time::timeout_at(deadline, upload).await {
            Ok(Ok(Ok((size, done)))) => {
                completed += 1;
                bytes += size;
                uploaded.push(done);
            }
            Ok(Ok(Err(error))) => errors.lock().expect("errors").push(error),
            Ok(Err(join)) => errors.lock().expect("errors").push(format!("task: {join}")),
            Err(_) => {
                errors
                    .lock()
                    .expect("errors")
                    .push(format!("timed out after {:?}", config.timeout));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut status_latencies = Vec::new();
    for poller in pollers {
        if let Ok(latencies) = poller.await {
            status_latencies.extend(latencies);
        }
    }
    status_latencies.sort();
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let errors = std::mem::take(&mut *errors.lock().expect("errors"));
    let server_status = match client.get(format!("{base}/metrics")).send().await {
        Ok(response) if response.status() == 200 => response
            .text()
            .await
            .ok()
            .and_then(|text| ServerLatency::of_heads(&text)),
        _ => None,
    };
    LoadReport {
        completed,
        bytes,
        uploaded,
        errors,
        elapsed,
        status_latencies,
        rss_max_kib: config.server_pid.map(|_| rss_max.load(Ordering::Relaxed)),
        rss_peak_kib: config.server_pid.and_then(|pid| status_kib(pid, "VmHWM")),
        server_status,
    }
}

/// One tus upload of `size` random bytes, checked by the final sha256.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    size: u64,
    seed: u64,
    locations: &Mutex<Vec<(String, u64)>>,
    tenax_final_query: bool,
) -> Result<(String, String), String> {
    let response = client
        .post(format!("{base}/uploads"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", size.to_string())
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| format!("POST: {e}"))?;
    if response.status() != 201 {
        return Err(format!("POST answered {}", response.status()));
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .ok_or("POST answered no Location")?;
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_owned()
    };
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let body = stream::unfold(
        (Rng::new(seed), size, Arc::clone(&hasher)),
        |(mut rng, left, hasher)| async move {
            if left == 0 {
                return None;
            }
            let mut frame = vec![0u8; left.min(64 * 1024) as usize];
            rng.fill(&mut frame);
            hasher.lock().expect("hasher").update(&frame);
            let left = left - frame.len() as u64;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(frame)),
                (rng, left, hasher),
            ))
        },
    );
    let response = client
        .patch(&location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .header("content-length", size.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| format!("PATCH: {e}"))?;
    let offset = response
        .headers()
        .get("upload-offset")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if response.status() != 204 || offset.as_deref() != Some(&size.to_string()) {
        return Err(format!(
            "PATCH answered {} with Upload-Offset {offset:?}",
            response.status()
        ));
    }
    // Only now may pollers ask about it: a tus `HEAD` takes the upload over
    // (one writer per upload: a client back from a lost link must not wait
    // for its dead request), which would end this PATCH early.
    locations
        .lock()
        .expect("locations")
        .push((location.clone(), size));
    let expected: String = hasher
        .lock()
        .expect("hasher")
        .clone()
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    if !tenax_final_query {
        return Ok((location, expected));
    }
    let response = client
        .put(&location)
        .header("content-range", "bytes */*")
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| format!("status query: {e}"))?;
    if response.status() != 200 {
        return Err(format!("final status query answered {}", response.status()));
    }
    let json: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("final JSON: {e}"))?;
    if json["sha256"].as_str() != Some(expected.as_str()) {
        return Err(format!("sha256 {} != {expected}", json["sha256"]));
    }
    Ok((location, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_latency_reads_only_well_formed_head_buckets() {
        let text = "\
# TYPE tenax_request_seconds histogram
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEAD\",le=\"0.001\"} 90
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEAD\",le=\"0.01\"} 99
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEAD\",le=\"+Inf\"} 100
tenax_request_seconds_bucket{dialect=\"ietf\",method=\"HEAD\",le=\"0.001\"} 10
tenax_request_seconds_bucket{dialect=\"ietf\",method=\"HEAD\",le=\"0.01\"} 10
tenax_request_seconds_bucket{dialect=\"ietf\",method=\"HEAD\",le=\"+Inf\"} 10
tenax_request_seconds_bucket{dialect=\"tus\",method=\"PATCH\",le=\"0.001\"} 5000
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEAD\",le=\"oops\"} 7
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEAD\",le=\"0.5\"} many
tenax_request_seconds_bucket{method=\"HEAD\" 3
tenax_request_seconds_bucket{dialect=\"tus\",method=\"HEADER\",le=\"0.001\"} 9
tenax_request_seconds_sum{dialect=\"tus\",method=\"HEAD\"} 0.05
";
        let latency = ServerLatency::of_heads(text).expect("HEAD buckets");
        // 110 HEADs over two dialects (every series has the same buckets):
        // 100 within 1 ms; the 99th percentile (rank 109) within 10 ms.
        assert_eq!(latency.count, 110);
        assert_eq!(latency.p50, Duration::from_millis(1));
        assert_eq!(latency.p99, Duration::from_millis(10));
        for garbage in ["", "tenax_request_seconds_bucket{", "{}", "\u{0}\u{ff}"] {
            assert!(ServerLatency::of_heads(garbage).is_none(), "{garbage:?}");
        }
    }
}
