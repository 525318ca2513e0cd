//! Helpers shared by the benchmark drivers `upload_bench` and
//! `download_bench` (each includes this file with `#[path]`): sizes and
//! rates, `/proc` figures, the random test file, the seed upload driver, and
//! a `tenax serve` child process.

// Each driver uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

pub(crate) const MIB: u64 = 1 << 20;
/// Buffer of file reads and writes (and of the sequential-write baseline).
pub(crate) const WRITE_BUFFER: usize = 8 << 20;

pub(crate) fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("bad size {text:?}"))?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => bail!("bad size unit in {text:?}"),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| anyhow!("size {text:?} too large"))
}

/// `8MiB`, `256KiB`, `1GiB`.
pub(crate) fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}GiB", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------
// Process statistics from /proc.

/// Clock ticks per second for /proc CPU times.
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(comm, utime + stime in ticks)` from a `/proc/.../stat` file.
pub(crate) fn stat_cpu(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

pub(crate) fn process_cpu_ticks(pid: &str) -> u64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |(_, ticks)| ticks)
}

/// CPU ticks per thread name (threads of the same name summed).
pub(crate) fn thread_cpu_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut threads = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in entries.flatten() {
            if let Some((comm, ticks)) = stat_cpu(&entry.path().join("stat")) {
                *threads.entry(comm).or_insert(0) += ticks;
            }
        }
    }
    threads
}

pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

// ---------------------------------------------------------------------------
// The test file.

/// Writes `size` random bytes to `path`, returns their sha256.
pub(crate) fn generate(path: &Path, size: u64) -> anyhow::Result<String> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64);
    let mut rng = tenax_testkit::Rng::new(seed);
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; WRITE_BUFFER];
    let mut left = size;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        rng.fill(&mut buffer[..n]);
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the whole file, so every timed run starts with it in page cache.
pub(crate) fn warm(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; WRITE_BUFFER];
    while file.read(&mut buffer)? > 0 {}
    Ok(())
}

// ---------------------------------------------------------------------------
// The upload driver.

/// Uploads `path` (of `size` bytes) with the seed protocol: `POST
/// initiate` (`{base}/uploads`, or `{base}/api/upload?file=NAME` to publish
/// it under NAME), then `chunk`-byte PUTs to the `Location`; returns the
/// elapsed time (initiation to final answer) and the final JSON.
pub(crate) async fn upload(
    client: &reqwest::Client,
    initiate: &str,
    path: &Path,
    size: u64,
    chunk: u64,
) -> anyhow::Result<(Duration, Value)> {
    let (elapsed, _, info) = upload_seed(client, initiate, path, size, chunk, None).await?;
    Ok((elapsed, info))
}

/// [`upload`], the initiation with `Want-Repr-Digest: WANT` if given;
/// returns the upload's URL too.
pub(crate) async fn upload_seed(
    client: &reqwest::Client,
    initiate: &str,
    path: &Path,
    size: u64,
    chunk: u64,
    want: Option<&str>,
) -> anyhow::Result<(Duration, String, Value)> {
    let started = Instant::now();
    let mut request = client
        .post(initiate)
        .header("x-upload-content-length", size.to_string())
        .header("content-length", "0");
    if let Some(want) = want {
        request = request.header("want-repr-digest", want);
    }
    let response = request.send().await.context("initiation")?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "initiation answered {}",
        response.status()
    );
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| anyhow!("initiation answered no Location"))?
        .to_owned();
    response.bytes().await?;
    settle().await;
    let read_capacity = chunk.min(MIB) as usize;
    let mut offset = 0u64;
    loop {
        let len = chunk.min(size - offset);
        let last = offset + len - 1;
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let stream = ReaderStream::with_capacity(file.take(len), read_capacity);
        let response = client
            .put(&location)
            .header("content-range", format!("bytes {offset}-{last}/{size}"))
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .with_context(|| format!("PUT bytes {offset}-{last}"))?;
        let status = response.status();
        let range = response
            .headers()
            .get("range")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        settle().await;
        offset = last + 1;
        if offset == size {
            ensure!(
                status == reqwest::StatusCode::OK,
                "last chunk answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            let info: Value = serde_json::from_slice(&body).context("final JSON")?;
            return Ok((started.elapsed(), location, info));
        }
        ensure!(
            status == reqwest::StatusCode::PERMANENT_REDIRECT,
            "PUT bytes {}-{last} answered {status}: {}",
            offset - len,
            String::from_utf8_lossy(&body)
        );
        let expected = format!("bytes=0-{last}");
        ensure!(
            range.as_deref() == Some(expected.as_str()),
            "PUT answered Range {range:?}, expected {expected}"
        );
    }
}

/// sha256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buffer = vec![0u8; WRITE_BUFFER];
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lets the finished connection return to the client's pool.
pub(crate) async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Distinct TCP connections to or from `port` on loopback that the kernel
/// still knows of (established or in TIME_WAIT): how many connections an
/// upload used, if the server listens on a port of its own.
pub(crate) fn connections_on(port: u16) -> usize {
    connection_peers(port).len()
}

/// The peer ports of the TCP connections to or from `port` on loopback
/// that the kernel still knows of (established or in TIME_WAIT).
pub(crate) fn connection_peers(port: u16) -> std::collections::BTreeSet<u16> {
    let mut peers = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port_of = |field: Option<&&str>| {
                field
                    .and_then(|address| address.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            let (local, remote) = (port_of(fields.get(1)), port_of(fields.get(2)));
            // state 0A is LISTEN.
            if fields.get(3) == Some(&"0A") {
                continue;
            }
            if local == Some(port) {
                peers.extend(remote);
            } else if remote == Some(port) {
                peers.extend(local);
            }
        }
    }
    peers
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()?)
}

// ---------------------------------------------------------------------------
// The tenax server.

#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    /// `tenax serve` on a free loopback port, plus `extra` arguments.
    pub(crate) fn tenax(
        binary: &Path,
        data: &Path,
        extra: &[&str],
        log: &Path,
    ) -> anyhow::Result<Server> {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra);
        Server::start(command, log)
    }

    /// `node server.mjs DATA 0` in `dir` (`@tus/server` with
    /// `@tus/file-store`): the child is the node process itself.
    pub(crate) fn tus_node(
        node: &Path,
        dir: &Path,
        data: &Path,
        log: &Path,
    ) -> anyhow::Result<Server> {
        let mut command = Command::new(node);
        command
            .arg(dir.join("server.mjs"))
            .arg(data)
            .arg("0")
            .current_dir(dir);
        Server::start(command, log)
    }

    /// Starts `command`, whose first stdout line is `listening on URL`.
    pub(crate) fn start(mut command: Command, log: &Path) -> anyhow::Result<Server> {
        let log = std::fs::File::create(log)?;
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Server {
            child,
            url,
            _stdout: stdout,
        })
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("server {pid} ignored SIGTERM; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    /// A server not stopped (the driver failed) is killed.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}
