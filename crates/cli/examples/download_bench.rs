//! Download throughput benchmark for tenax (a script, not a test).
//!
//! In one run, for a file of `--size` random bytes (1 GiB by default):
//!
//! * the server: `tenax serve` (release, fresh data directory, the file
//!   uploaded into it with the seed protocol and published as
//!   `/files/NAME`) against nginx (a child process with a generated minimal
//!   configuration, `sendfile on`, serving the same file from a directory of
//!   its own), both fetched by `curl` into `/dev/null`;
//! * the client: `tenax download` with 1 and 4 connections against `curl`
//!   and `aria2c -x4 -s4`, all fetching from the tenax server into a file of
//!   the scratch directory (deleted after each run).
//!
//! Every measurement runs `--repeat` times (3 by default) after a discarded
//! warm-up, interleaved and in an order rotated each time, with the
//! served files read once and the file system synced before each run so
//! that all start from the page cache and a clean disk. curl runs twice into
//! a file: as it is (its bytes left in the page cache) and followed by an
//! fsync, the durability `tenax download` gives. It prints best and median
//! MB/s, the ratios with the targets, judged on medians (tenax server ≥ 0.9×
//! nginx, tenax client ≥ 1.0× curl), the tenax
//! server's peak RSS (`VmHWM`, reset before every run) and CPU, and a final
//! JSON line. See `bench/README.md`; `bench/download` installs the peers,
//! builds and runs it.
//!
//! One file on purpose: a benchmark is a script that a reader should follow
//! from top to bottom; its shared pieces live in `bench_common/`.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use bench_common::{
    MIB, Server, client, clock_ticks, generate, hex, human, mb_per_s, mib, parse_size,
    process_cpu_ticks, round, sha256_file, status_kib, upload, warm,
};

/// Target: curl from tenax over curl from nginx.
const TARGET_SERVER: f64 = 0.9;
/// Target: `tenax download` over curl, both into a file from tenax.
const TARGET_CLIENT: f64 = 1.0;
/// Chunk size of the upload that puts the file on the tenax server.
const UPLOAD_CHUNK: u64 = 8 * MIB;
/// The published name, and the file's name in nginx's root.
const NAME: &str = "bench.bin";

const USAGE: &str = "\
usage: download_bench --server-bin PATH [options]
  --server-bin PATH   the tenax binary (serve and download)
  --nginx PATH        nginx (default nginx)
  --curl PATH         curl (default curl)
  --aria2c PATH       aria2c (default aria2c)
  --size SIZE         file size (default 1GiB; B, KiB, MiB, GiB suffixes)
  --repeat N          repetitions of every measurement (default 3, >= 1)
  --work-dir DIR      scratch directory (default target/bench)
  --keep              keep the generated file and the data directory";

#[derive(Debug)]
struct Options {
    server_bin: PathBuf,
    nginx: PathBuf,
    curl: PathBuf,
    aria2c: PathBuf,
    size: u64,
    repeat: usize,
    work_dir: PathBuf,
    keep: bool,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut server_bin = None;
    let mut options = Options {
        server_bin: PathBuf::new(),
        nginx: PathBuf::from("nginx"),
        curl: PathBuf::from("curl"),
        aria2c: PathBuf::from("aria2c"),
        size: 1 << 30,
        repeat: 3,
        work_dir: PathBuf::from("target/bench"),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--server-bin" => server_bin = Some(PathBuf::from(value()?)),
            "--nginx" => options.nginx = PathBuf::from(value()?),
            "--curl" => options.curl = PathBuf::from(value()?),
            "--aria2c" => options.aria2c = PathBuf::from(value()?),
            "--size" => options.size = parse_size(&value()?)?,
            "--repeat" => options.repeat = value()?.parse().context("--repeat")?,
            "--work-dir" => options.work_dir = PathBuf::from(value()?),
            "--keep" => options.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    options.server_bin = server_bin.ok_or_else(|| anyhow!("--server-bin is needed\n{USAGE}"))?;
    ensure!(options.size > 0, "--size must be positive");
    ensure!(options.repeat > 0, "--repeat must be positive");
    Ok(options)
}

// ---------------------------------------------------------------------------
// nginx.

/// nginx in the foreground (`daemon off; master_process off;`): one process,
/// the child itself, stopped with SIGTERM (killed if still running when
/// dropped).
#[derive(Debug)]
struct Nginx {
    child: Child,
    url: String,
    error_log: PathBuf,
}

impl Nginx {
    /// Writes `dir/nginx.conf` serving `root` on a free loopback port and
    /// starts nginx with it; waits until the port accepts connections.
    fn start(binary: &Path, dir: &Path, root: &Path) -> anyhow::Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        // The temp paths of the modules built in (Debian's nginx-light has
        // them all; a build without uwsgi or scgi would reject theirs).
        let built = Command::new(binary)
            .arg("-V")
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let built = String::from_utf8_lossy(&built.stderr).into_owned()
            + &String::from_utf8_lossy(&built.stdout);
        let mut temp_paths = String::new();
        for (module, directive) in [
            ("", "client_body_temp_path"),
            ("http_proxy", "proxy_temp_path"),
            ("http_fastcgi", "fastcgi_temp_path"),
            ("http_uwsgi", "uwsgi_temp_path"),
            ("http_scgi", "scgi_temp_path"),
        ] {
            if module.is_empty() || !built.contains(&format!("--without-{module}_module")) {
                let path = dir.join(directive.trim_end_matches("_temp_path"));
                temp_paths += &format!("    {directive} {};\n", path.display());
            }
        }
        // A free port: bound, read, released (nginx binds it right after).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let error_log = dir.join("error.log");
        let config = format!(
            "# Generated by download_bench.\n\
             daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {pid};\n\
             error_log {log} warn;\n\
             events {{\n    worker_connections 256;\n}}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   sendfile on;\n\
             \x20   tcp_nopush on;\n\
             \x20   default_type application/octet-stream;\n\
             {temp_paths}\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       root {root};\n\
             \x20   }}\n\
             }}\n",
            pid = dir.join("nginx.pid").display(),
            log = error_log.display(),
            root = root.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                bail!("nginx exited ({status}) at start:\n{log}");
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nginx did not listen on {address} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            url: format!("http://{address}"),
            error_log,
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("nginx {pid} ignored SIGTERM; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The clients.

/// A command for a peer tool, without the proxy variables of the
/// environment (everything here is on loopback).
fn command(program: &Path) -> Command {
    let mut command = Command::new(program);
    for variable in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(variable);
    }
    command.stdin(Stdio::null());
    command
}

/// What a measured client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// `curl URL -o /dev/null` from nginx.
    CurlNginx,
    /// `curl URL -o /dev/null` from tenax.
    CurlTenax,
    /// `tenax download URL -o FILE --connections N` from tenax.
    Tenax(u16),
    /// `curl URL -o FILE` from tenax.
    CurlFile,
    /// `curl URL -o FILE` from tenax, then an fsync of FILE: the durability
    /// `tenax download` gives (it syncs before it reports success).
    CurlFileSynced,
    /// `aria2c -x4 -s4 URL` into a file, from tenax.
    Aria2,
}

impl Fetch {
    fn name(self) -> String {
        match self {
            Fetch::CurlNginx => "curl <- nginx (to /dev/null)".into(),
            Fetch::CurlTenax => "curl <- tenax (to /dev/null)".into(),
            Fetch::Tenax(n) => format!("tenax download -c{n} <- tenax"),
            Fetch::CurlFile => "curl <- tenax (to file)".into(),
            Fetch::CurlFileSynced => "curl <- tenax (to file, fsync)".into(),
            Fetch::Aria2 => "aria2c -x4 -s4 <- tenax".into(),
        }
    }

    fn is_nginx(self) -> bool {
        self == Fetch::CurlNginx
    }

    fn is_to_file(self) -> bool {
        !matches!(self, Fetch::CurlNginx | Fetch::CurlTenax)
    }
}

/// One finished fetch: wall time, and what the client said, if anything.
#[derive(Debug)]
struct Fetched {
    elapsed: Duration,
    report: Option<Value>,
}

/// Runs `fetch` of `url`; a file goes to `out`. Checks the exit status and
/// the size; the content is checked by the caller.
fn run_fetch(
    options: &Options,
    fetch: Fetch,
    url: &str,
    out: &Path,
    size: u64,
) -> anyhow::Result<Fetched> {
    let mut cmd = match fetch {
        Fetch::CurlNginx | Fetch::CurlTenax | Fetch::CurlFile | Fetch::CurlFileSynced => {
            let mut cmd = command(&options.curl);
            let target = if fetch.is_to_file() {
                out.as_os_str().to_owned()
            } else {
                "/dev/null".into()
            };
            cmd.args(["-q", "-s", "-S", "--fail", "--noproxy", "*", "-o"])
                .arg(target)
                .args(["-w", "%{http_code} %{size_download}", url]);
            cmd
        }
        Fetch::Tenax(connections) => {
            let mut cmd = command(&options.server_bin);
            cmd.args(["download", url, "--json", "--connections"])
                .arg(connections.to_string())
                .arg("-o")
                .arg(out);
            cmd
        }
        Fetch::Aria2 => {
            let mut cmd = command(&options.aria2c);
            let dir = out.parent().ok_or_else(|| anyhow!("no parent"))?;
            let name = out.file_name().ok_or_else(|| anyhow!("no file name"))?;
            cmd.args([
                "--no-conf",
                "-x4",
                "-s4",
                "--file-allocation=none",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--check-certificate=false",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--download-result=hide",
                "--all-proxy=",
                "-d",
            ])
            .arg(dir)
            .arg("-o")
            .arg(name)
            .arg(url);
            cmd
        }
    };
    let started = Instant::now();
    let output = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if fetch == Fetch::CurlFileSynced && output.status.success() {
        std::fs::File::open(out)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("cannot fsync {}", out.display()))?;
    }
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{} failed ({}): {}{}",
        fetch.name(),
        output.status,
        stdout.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let report = match fetch {
        Fetch::CurlNginx | Fetch::CurlTenax | Fetch::CurlFile | Fetch::CurlFileSynced => {
            let expected = format!("200 {size}");
            ensure!(
                stdout.trim() == expected,
                "{}: curl reports {:?} (status, bytes), expected {expected:?}",
                fetch.name(),
                stdout.trim()
            );
            None
        }
        Fetch::Tenax(_) => stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Value>(line).ok()),
        Fetch::Aria2 => None,
    };
    if fetch.is_to_file() {
        let len = std::fs::metadata(out)
            .with_context(|| format!("{}: no {}", fetch.name(), out.display()))?
            .len();
        ensure!(
            len == size,
            "{}: wrote {len} bytes, not {size}",
            fetch.name()
        );
    }
    Ok(Fetched { elapsed, report })
}

/// Whether this tenax binary has the `download` command.
fn has_download(binary: &Path) -> bool {
    Command::new(binary)
        .args(["download", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The first line of `program --version` (`-v` for nginx, on stderr).
fn version(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            text.lines().next().map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// GETs `url` whole (reqwest), returns the body's sha256 and length.
async fn fetch_sha256(client: &reqwest::Client, url: &str) -> anyhow::Result<(String, u64)> {
    let mut response = client.get(url).send().await?;
    ensure!(
        response.status() == reqwest::StatusCode::OK,
        "GET {url} answered {}",
        response.status()
    );
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = response.chunk().await? {
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hex(&hasher.finalize()), len))
}

/// The files of `dir` (recursively) of exactly `size` bytes: the tenax
/// server's stored copy, to read into the page cache before each run.
fn files_of_size(dir: &Path, size: u64) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.metadata().is_ok_and(|meta| meta.len() == size) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Counts the TCP connections accepted on `port` while it runs: polls
/// `/proc/net/tcp` every 5 ms for established server-side sockets (each
/// has an inode of its own while open). Peer ports alone would miss
/// connections, as Linux reuses ports in TIME_WAIT on loopback.
#[derive(Debug)]
struct ConnectionCounter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<BTreeSet<u64>>,
}

impl ConnectionCounter {
    fn start(port: u16) -> ConnectionCounter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            loop {
                // Once more after the stop, for a connection of the end.
                let last = flag.load(std::sync::atomic::Ordering::Relaxed);
                established_inodes(port, &mut seen);
                if last {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        ConnectionCounter { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().map_or(0, |seen| seen.len())
    }
}

/// Adds the inodes of the established sockets whose local port is `port`.
fn established_inodes(port: u16, seen: &mut BTreeSet<u64>) {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields
                .get(1)
                .and_then(|address| address.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            // state 01 is ESTABLISHED; field 10 the inode.
            if local == Some(port)
                && fields.get(3) == Some(&"01")
                && let Some(inode) = fields.get(9).and_then(|inode| inode.parse().ok())
            {
                seen.insert(inode);
            }
        }
    }
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS; false if the
/// kernel refuses.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU ticks of this process's waited-for children (`cutime + cstime`).
fn children_cpu_ticks() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(close) = text.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After "pid (comm) ": cutime is field 16, cstime 17 (1-based).
    let get = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(13) + get(14)
}

// ---------------------------------------------------------------------------
// Results.

#[derive(Debug, Clone)]
struct Run {
    seconds: f64,
    mb_s: f64,
    /// Peak RSS of the serving process during the run (reset before it).
    server_peak_rss: Option<u64>,
    /// CPU seconds of the serving process during the run.
    server_cpu: f64,
    /// CPU seconds of the client process.
    client_cpu: f64,
    /// TCP connections the client opened to the server.
    connections: usize,
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
        let mut values: Vec<f64> = self.runs.iter().map(|run| run.mb_s).collect();
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

    fn max_rss(&self) -> Option<u64> {
        self.runs.iter().filter_map(|run| run.server_peak_rss).max()
    }

    /// The smallest of the runs' figures.
    fn min_of(&self, figure: impl Fn(&Run) -> f64) -> f64 {
        self.runs.iter().map(figure).fold(f64::INFINITY, f64::min)
    }

    fn json(&self) -> Value {
        json!({
            "best_mb_s": round(self.best()),
            "median_mb_s": round(self.median()),
            "runs_mb_s": self.runs.iter().map(|run| round(run.mb_s)).collect::<Vec<_>>(),
            "runs_seconds": self.runs.iter().map(|run| round(run.seconds)).collect::<Vec<_>>(),
            "server_peak_rss_bytes": self.runs.iter().map(|run| run.server_peak_rss).collect::<Vec<_>>(),
            "server_cpu_seconds": self.runs.iter().map(|run| round(run.server_cpu)).collect::<Vec<_>>(),
            "client_cpu_seconds": self.runs.iter().map(|run| round(run.client_cpu)).collect::<Vec<_>>(),
            "connections": self.runs.iter().map(|run| run.connections).collect::<Vec<_>>(),
        })
    }
}

/// A ratio of best figures with the median ratio, and its verdict.
#[derive(Debug)]
struct Ratio {
    label: String,
    best: Option<f64>,
    median: Option<f64>,
    target: Option<f64>,
}

impl Ratio {
    fn new(
        label: &str,
        series: &BTreeMap<String, Series>,
        over: Fetch,
        under: Fetch,
        target: Option<f64>,
    ) -> Ratio {
        let pair = series.get(&over.name()).zip(series.get(&under.name()));
        Ratio {
            label: label.to_owned(),
            best: pair.map(|(a, b)| a.best() / b.best()),
            median: pair.map(|(a, b)| a.median() / b.median()),
            target,
        }
    }

    /// Judged on the medians: a best run is the luckiest, not the usual.
    fn met(&self) -> Option<bool> {
        self.target
            .map(|target| self.median.is_some_and(|median| median >= target))
    }

    fn verdict(&self) -> String {
        match (self.target, self.best) {
            (None, _) => "(info)".into(),
            (Some(target), None) => format!("target >= {target:.1} (medians): n/a"),
            (Some(target), Some(_)) => format!(
                "target >= {target:.1} (medians): {}",
                if self.met() == Some(true) {
                    "MET"
                } else {
                    "MISSED"
                }
            ),
        }
    }

    fn json(&self) -> Value {
        json!({
            "best": self.best.map(|r| (r * 1000.0).round() / 1000.0),
            "median": self.median.map(|r| (r * 1000.0).round() / 1000.0),
            "target": self.target,
            "met": self.met(),
        })
    }
}

// ---------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    // One thread, like upload_bench: the upload's chunks share one
    // connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let started_all = Instant::now();
    let ticks = clock_ticks();
    let size = options.size;
    std::fs::create_dir_all(&options.work_dir)
        .with_context(|| format!("cannot create {}", options.work_dir.display()))?;
    let work = options.work_dir.canonicalize()?;
    // nginx's root holds the test file; tenax gets its own copy by upload.
    let www = work.join("download-www");
    let data = work.join("download-data");
    let out_dir = work.join("download-out");
    let nginx_dir = work.join("download-nginx");
    for dir in [&www, &data, &out_dir, &nginx_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(&www)?;
    std::fs::create_dir_all(&out_dir)?;
    let file = www.join(NAME);
    let out = out_dir.join(NAME);

    let tools = json!({
        "nginx": version(&options.nginx, "-v"),
        "curl": version(&options.curl, "--version"),
        "aria2c": version(&options.aria2c, "--version"),
    });
    let tenax_download = has_download(&options.server_bin);
    if !tenax_download {
        println!(
            "note: {} has no `download` command; its rows are skipped",
            options.server_bin.display()
        );
    }

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

    // The tenax server, the file uploaded and published under NAME.
    let server = Server::tenax(
        &options.server_bin,
        &data,
        &[],
        &work.join("server-download.log"),
    )?;
    let server_pid = server.child.id();
    let upload_client = client()?;
    let (elapsed, info) = upload(
        &upload_client,
        &format!("{}/api/upload?file={NAME}", server.url),
        &file,
        size,
        UPLOAD_CHUNK,
    )
    .await
    .context("uploading the file to tenax")?;
    let stored = info.get("sha256").and_then(Value::as_str).unwrap_or("");
    ensure!(
        stored == sha256,
        "tenax stored sha256 {stored:?}, the file's is {sha256}"
    );
    println!(
        "  uploaded to {} in {:.1} s ({:.1} MB/s, {} chunks); server peak RSS so far {}",
        server.url,
        elapsed.as_secs_f64(),
        mb_per_s(size, elapsed),
        human(UPLOAD_CHUNK),
        status_kib(server_pid, "VmHWM").map_or("n/a".into(), |kib| mib(kib * 1024)),
    );
    drop(upload_client);

    let nginx = Nginx::start(&options.nginx, &nginx_dir, &www)?;
    let nginx_pid = nginx.child.id();
    let tenax_url = format!("{}/files/{NAME}", server.url);
    let nginx_url = format!("{}/{NAME}", nginx.url);
    println!("  nginx on {} (root {})", nginx.url, www.display());

    // Both serve the same bytes; this also reads both copies once.
    let check_client = client()?;
    for url in [&tenax_url, &nginx_url] {
        let (got, len) = fetch_sha256(&check_client, url).await?;
        ensure!(
            got == sha256 && len == size,
            "GET {url}: sha256 {got} of {len} bytes, expected {sha256} of {size}"
        );
        println!("  GET {url}: sha256 ok");
    }
    drop(check_client);

    let stored_copies = files_of_size(&data, size);
    let rss_resettable = reset_peak_rss(server_pid);
    if !rss_resettable {
        println!("note: cannot reset VmHWM; the server's peak RSS includes the upload");
    }

    let mut fetches = vec![Fetch::CurlNginx, Fetch::CurlTenax];
    if tenax_download {
        fetches.extend([Fetch::Tenax(1), Fetch::Tenax(4)]);
    }
    fetches.extend([Fetch::CurlFile, Fetch::CurlFileSynced, Fetch::Aria2]);

    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut client_reports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let tenax_port = server
        .url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok());
    let nginx_port = nginx
        .url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok());
    let mut failure = None;
    let mut hash_mb_s: Vec<f64> = Vec::new();
    // Repetition 0 is a warm-up whose figures are discarded; each later one
    // starts the series one further along, so none always runs first.
    'repetitions: for repetition in 0..=options.repeat {
        if repetition == 0 {
            println!("warm-up (discarded)");
        } else {
            println!("repetition {repetition}/{}", options.repeat);
        }
        let mut order = fetches.clone();
        order.rotate_left(repetition % fetches.len());
        // For scale: the tenax client hashes what it downloads (curl and
        // aria2c do not); what one thread does from the page cache.
        let hashed = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                sha256_file(&file).map(|_| started.elapsed())
            })
            .await??
        };
        if repetition > 0 {
            hash_mb_s.push(mb_per_s(size, hashed));
        }
        println!(
            "  {:<34} {:>8.1} MB/s  (for scale)",
            "sha256, 1 thread, from cache",
            mb_per_s(size, hashed)
        );
        for &fetch in &order {
            let name = fetch.name();
            let (url, pid, port) = if fetch.is_nginx() {
                (&nginx_url, nginx_pid, nginx_port)
            } else {
                (&tenax_url, server_pid, tenax_port)
            };
            // Equal start: the served copy read just before.
            let warm_files = if fetch.is_nginx() {
                vec![file.clone()]
            } else {
                stored_copies.clone()
            };
            tokio::task::spawn_blocking(move || warm_files.iter().try_for_each(|path| warm(path)))
                .await??;
            let _ = std::fs::remove_file(&out);
            // The last run's dirty pages (curl leaves 1 GiB of them) must
            // not be written back during this one.
            rustix::fs::sync();
            let counter = port.map(ConnectionCounter::start);
            if fetch.is_nginx() || rss_resettable {
                reset_peak_rss(pid);
            }
            let server_cpu = process_cpu_ticks(&pid.to_string());
            let client_cpu = children_cpu_ticks();
            // Blocking is fine: nothing else runs on this runtime now.
            let fetched = match run_fetch(&options, fetch, url, &out, size) {
                Ok(fetched) => fetched,
                Err(error) => {
                    failure = Some(error);
                    break 'repetitions;
                }
            };
            let server_cpu = (process_cpu_ticks(&pid.to_string()) - server_cpu) as f64 / ticks;
            let client_cpu = (children_cpu_ticks() - client_cpu) as f64 / ticks;
            let server_peak_rss = status_kib(pid, "VmHWM").map(|kib| kib * 1024);
            let connections = counter.map_or(0, ConnectionCounter::finish);
            // The content: the client's own sha256 if it gives one, and ours
            // of the stored file, every run (after the timing).
            let checked = if fetch.is_to_file() {
                if let Some(reported) = fetched
                    .report
                    .as_ref()
                    .and_then(|report| report.get("sha256"))
                    .and_then(Value::as_str)
                {
                    ensure!(
                        reported == sha256,
                        "{name}: the client reports sha256 {reported}, expected {sha256}"
                    );
                }
                let got = {
                    let out = out.clone();
                    tokio::task::spawn_blocking(move || sha256_file(&out)).await??
                };
                ensure!(
                    got == sha256,
                    "{name}: wrote sha256 {got}, expected {sha256}"
                );
                std::fs::remove_file(&out)?;
                "sha256 ok"
            } else {
                "size ok"
            };
            let run = Run {
                seconds: fetched.elapsed.as_secs_f64(),
                mb_s: mb_per_s(size, fetched.elapsed),
                server_peak_rss,
                server_cpu,
                client_cpu,
                connections,
            };
            println!(
                "  {name:<34} {:>8.1} MB/s  ({checked}, {} connection(s), server CPU {:.2} s, peak RSS {}, client CPU {:.2} s)",
                run.mb_s,
                run.connections,
                run.server_cpu,
                run.server_peak_rss.map_or("n/a".into(), mib),
                run.client_cpu,
            );
            if repetition == 0 {
                continue;
            }
            if let Some(report) = fetched.report {
                client_reports.entry(name.clone()).or_default().push(report);
            }
            series.entry(name).or_default().runs.push(run);
        }
    }
    let server_peak_rss = status_kib(server_pid, "VmHWM").map(|kib| kib * 1024);
    server.stop()?;
    let nginx_log = std::fs::read_to_string(&nginx.error_log).unwrap_or_default();
    nginx.stop()?;
    if !nginx_log.trim().is_empty() {
        println!("nginx error log:\n{}", nginx_log.trim_end());
    }
    if !options.keep {
        let _ = std::fs::remove_dir_all(&www);
        let _ = std::fs::remove_dir_all(&data);
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    if let Some(error) = failure {
        return Err(error);
    }

    // The table.
    println!();
    println!(
        "{} download, {} repetition(s); MB = 10^6 bytes; best / median; server = the process serving \
         (peak RSS: highest of the runs; CPU: least of the runs)",
        human(size),
        options.repeat
    );
    println!(
        "{:<34} {:>9} {:>9} {:>13} {:>11} {:>11} {:>6}",
        "measurement", "best", "median", "server RSS", "server CPU", "client CPU", "conns"
    );
    for fetch in &fetches {
        let Some(s) = series.get(&fetch.name()) else {
            continue;
        };
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>13} {:>11} {:>11} {:>6}",
            fetch.name(),
            s.best(),
            s.median(),
            s.max_rss().map_or("".into(), mib),
            format!("{:.2} s", s.min_of(|run| run.server_cpu)),
            format!("{:.2} s", s.min_of(|run| run.client_cpu)),
            s.runs.iter().map(|run| run.connections).max().unwrap_or(0),
        );
    }

    println!(
        "{:<34} {:>9.1}   (for scale: the tenax client computes the sha256 of the file; \
         curl and aria2c compute none)",
        "sha256, 1 thread, from cache",
        hash_mb_s.iter().copied().fold(0.0, f64::max),
    );

    // Ratios.
    println!();
    let ratios = [
        Ratio::new(
            "server: curl<-tenax / curl<-nginx",
            &series,
            Fetch::CurlTenax,
            Fetch::CurlNginx,
            Some(TARGET_SERVER),
        ),
        Ratio::new(
            "client: tenax -c1 / curl (to file)",
            &series,
            Fetch::Tenax(1),
            Fetch::CurlFile,
            Some(TARGET_CLIENT),
        ),
        Ratio::new(
            "client: tenax -c4 / curl (to file)",
            &series,
            Fetch::Tenax(4),
            Fetch::CurlFile,
            Some(TARGET_CLIENT),
        ),
        Ratio::new(
            "client: tenax -c1 / curl+fsync",
            &series,
            Fetch::Tenax(1),
            Fetch::CurlFileSynced,
            None,
        ),
        Ratio::new(
            "client: tenax -c4 / aria2c -x4",
            &series,
            Fetch::Tenax(4),
            Fetch::Aria2,
            None,
        ),
    ];
    println!(
        "{:<36} {:>7} {:>8}  (ratios of best MB/s; of medians)",
        "ratio", "best", "median"
    );
    for ratio in &ratios {
        let show = |value: Option<f64>| value.map_or("n/a".into(), |v| format!("{v:.2}"));
        println!(
            "{:<36} {:>7} {:>8}  {}",
            ratio.label,
            show(ratio.best),
            show(ratio.median),
            ratio.verdict()
        );
    }
    let judged: Vec<Option<bool>> = ratios
        .iter()
        .filter_map(|ratio| ratio.target.map(|_| ratio.met()))
        .collect();
    let targets_met = if judged.iter().all(Option::is_some) {
        Some(judged.iter().all(|met| *met == Some(true)))
    } else {
        None
    };
    println!(
        "targets (server >= {TARGET_SERVER:.1}x nginx, client >= {TARGET_CLIENT:.1}x curl): {}",
        match targets_met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "incomplete (no tenax download)",
        }
    );
    println!(
        "tenax server peak RSS during the downloads: {}{}",
        server_peak_rss.map_or("n/a".into(), mib),
        if rss_resettable {
            ""
        } else {
            " (including the upload)"
        }
    );
    println!(
        "total bench time {:.0} s",
        started_all.elapsed().as_secs_f64()
    );

    let results: serde_json::Map<String, Value> = fetches
        .iter()
        .filter_map(|fetch| series.get(&fetch.name()).map(|s| (fetch.name(), s.json())))
        .collect();
    let ratios_json: serde_json::Map<String, Value> = ratios
        .iter()
        .map(|ratio| (ratio.label.clone(), ratio.json()))
        .collect();
    let line = json!({
        "bench": "download_bench",
        "size_bytes": size,
        "repeat": options.repeat,
        "work_dir": work.display().to_string(),
        "tools": tools,
        "tenax_download": tenax_download,
        "results": results,
        "ratios": ratios_json,
        "server_peak_rss_bytes": server_peak_rss,
        "server_peak_rss_excludes_upload": rss_resettable,
        "targets": { "server_over_nginx": TARGET_SERVER, "client_over_curl": TARGET_CLIENT },
        "targets_met": targets_met,
        "tenax_download_reports": client_reports,
        "sha256_one_thread_mb_s": hash_mb_s.iter().map(|v| round(*v)).collect::<Vec<_>>(),
    });
    println!("{line}");
    Ok(())
}
