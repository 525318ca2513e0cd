//! `tenax serve`'s configuration (TOML file, environment, flags and their
//! precedence; invalid values refused at start, naming the key) and its
//! operations endpoints (`/healthz`, `/readyz`, `/metrics` checked against
//! the traffic sent, JSON logs), against the real binary over loopback.

mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use support::BIN;
use support::http::client;
use support::process::{text, wait_output};
use tenax_testkit::Rng;

/// Upper bound for a server to start or a child to end.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `tenax serve ARGS…` with `envs` and no other `TENAX_*` variable.
fn serve_command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("serve").args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("TENAX_") {
            command.env_remove(key);
        }
    }
    command.env("TENAX_LOG", "warn");
    for (key, value) in envs {
        command.env(key, value);
    }
    command
}

/// A running server, killed when dropped; its stderr lines are collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts `tenax serve ARGS…` (with a fresh data directory unless the
    /// arguments or the configuration name one) and waits for its address.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temporary directory");
        let mut command = serve_command(args, envs);
        if !args.contains(&"--data") && !envs.iter().any(|(key, _)| *key == "TENAX_DATA") {
            command.arg("--data").arg(data.path());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start tenax serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().expect("stderr lines").push(line);
            }
        });
        let Ok(line) = receiver.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server did not print its address; stderr: {:?}",
                stderr.lock().expect("stderr lines")
            );
        };
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        Server {
            child,
            addr,
            stderr,
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tenax serve ARGS…`, which must fail at start; returns its stderr.
fn start_fails(args: &[&str], envs: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().expect("temporary directory");
    let child = serve_command(args, envs)
        .env("TENAX_DATA", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start tenax serve");
    let out = wait_output(child, START_TIMEOUT);
    assert!(
        !out.status.success(),
        "tenax serve {args:?} started; stdout: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).is_empty(),
        "it printed an address: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A TOML file with `body` in a fresh directory.
fn config_file(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tenax.toml");
    std::fs::write(&path, body).expect("write the config file");
    (dir, path)
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

/// The `Tus-Max-Size` the server advertises on `OPTIONS /uploads`.
async fn tus_max_size(server: &Server) -> u64 {
    let response = client()
        .request(reqwest::Method::OPTIONS, server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("OPTIONS");
    response
        .headers()
        .get("tus-max-size")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a numeric Tus-Max-Size")
}

/// Creates a tus upload of `length` bytes; returns the status and Location.
async fn tus_create(server: &Server, length: u64) -> (u16, Option<String>) {
    let response = client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .send()
        .await
        .expect("tus POST");
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), location)
}

/// A tus upload of `data` in one PATCH.
async fn tus_upload(server: &Server, data: &[u8]) {
    let (status, location) = tus_create(server, data.len() as u64).await;
    assert_eq!(status, 201, "tus creation");
    let location = location.expect("a Location");
    let url = if location.starts_with("http") {
        location
    } else {
        server.url(&location)
    };
    let response = client()
        .patch(url)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("tus PATCH");
    assert_eq!(response.status().as_u16(), 204, "tus PATCH");
}

/// A seed upload of `data` under `name` in one literal PUT.
async fn seed_upload(server: &Server, name: &str, data: &[u8]) {
    let last = data.len() - 1;
    let response = client()
        .put(server.url(&format!("/api/upload?file={name}")))
        .header("Content-Range", format!("bytes 0-{last}/{}", data.len()))
        .body(data.to_vec())
        .send()
        .await
        .expect("seed PUT");
    assert_eq!(response.status().as_u16(), 200, "seed PUT");
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = client().get(server.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A small parser of the Prometheus text exposition format (0.0.4):
/// comments and blank lines skipped, `name{label="value",…} value [ts]`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let name = line[..name_end].to_owned();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = HashMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let (at, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
                match c {
                    '}' => break at,
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                        let mut value = String::new();
                        loop {
                            match chars.next().map(|(_, c)| c) {
                                Some('"') => break,
                                Some('\\') => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(other) => value.push(other),
                                    None => panic!("bad escape: {line:?}"),
                                },
                                Some(other) => value.push(other),
                                None => panic!("unterminated label value: {line:?}"),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`, summed
/// over the others (0 when there is none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
        .sum()
}

async fn scrape(server: &Server) -> Vec<Sample> {
    let response = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_prometheus(&response.text().await.expect("metrics body"))
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The file sets the address and the size limit; the environment overrides
/// the file and a flag overrides both.
#[tokio::test]
async fn file_then_env_then_flags() {
    let port = free_port();
    let (_dir, path) = config_file(&format!(
        "# tenax serve\nlisten = \"127.0.0.1:{port}\"\nmax_upload_size = \"1KiB\"\nupload_ttl = \"1h\"\nmd5 = false\n"
    ));
    let config = path.to_str().expect("UTF-8 path");

    let server = Server::start(&["--config", config], &[]);
    assert_eq!(server.addr, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(tus_max_size(&server).await, 1024);
    assert_eq!(tus_create(&server, 1025).await.0, 413);
    assert_eq!(tus_create(&server, 1024).await.0, 201);
    drop(server);

    // The file through the environment too; the environment over the file.
    let server = Server::start(
        &["--listen", "127.0.0.1:0"],
        &[("TENAX_CONFIG", config), ("TENAX_MAX_UPLOAD_SIZE", "3000")],
    );
    assert_ne!(server.addr.port(), port, "the flag overrides the file");
    assert_eq!(tus_max_size(&server).await, 3000);
    assert_eq!(tus_create(&server, 3001).await.0, 413);
    assert_eq!(tus_create(&server, 3000).await.0, 201);
    drop(server);

    // A flag over both.
    let server = Server::start(
        &[
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--max-upload-size",
            "5000",
        ],
        &[("TENAX_MAX_UPLOAD_SIZE", "3000")],
    );
    assert_eq!(tus_max_size(&server).await, 5000);
    assert_eq!(tus_create(&server, 5001).await.0, 413);
    assert_eq!(tus_create(&server, 4000).await.0, 201);
    drop(server);

    // Environment alone.
    let server = Server::start(
        &[],
        &[
            ("TENAX_LISTEN", "127.0.0.1:0"),
            ("TENAX_MAX_UPLOAD_SIZE", "2KiB"),
        ],
    );
    assert_eq!(tus_max_size(&server).await, 2048);
}

/// A file's `md5 = false` shows in the final answer, and `--md5 true`
/// overrides it.
#[tokio::test]
async fn md5_from_file_and_flag() {
    let (_dir, path) = config_file("listen = \"127.0.0.1:0\"\nmd5 = false\n");
    let config = path.to_str().expect("UTF-8 path");
    let data = vec![7u8; 1000];
    for (args, expect_md5) in [
        (vec!["--config", config], false),
        (vec!["--config", config, "--md5", "true"], true),
    ] {
        let server = Server::start(&args, &[]);
        let response = client()
            .put(server.url("/api/upload?file=x.bin"))
            .header("Content-Range", "bytes 0-999/1000")
            .body(data.clone())
            .send()
            .await
            .expect("seed PUT");
        assert_eq!(response.status().as_u16(), 200);
        let json: serde_json::Value = response.json().await.expect("JSON answer");
        assert_eq!(
            json.get("md5Hash").is_some(),
            expect_md5,
            "{args:?}: {json}"
        );
    }
}

/// Invalid values and unknown keys stop the server at start, with a message
/// that names the key, wherever the value came from.
#[test]
fn invalid_configuration_fails_naming_the_key() {
    let (_dir, path) = config_file("listen = \"127.0.0.1:0\"\nmax_upload_size = \"12XB\"\n");
    let stderr = start_fails(&["--config", path.to_str().expect("UTF-8")], &[]);
    assert!(
        stderr.contains(r#"tenax: error: config key "max_upload_size": invalid size "12XB""#),
        "{stderr}"
    );

    let (_dir, path) = config_file("listen = \"127.0.0.1:0\"\nmax_upload_sise = \"1GiB\"\n");
    let stderr = start_fails(&["--config", path.to_str().expect("UTF-8")], &[]);
    assert!(stderr.contains("max_upload_sise"), "{stderr}");
    assert!(stderr.contains("tenax.toml"), "names the file: {stderr}");

    let (_dir, path) = config_file("listen = \"127.0.0.1:0\"\nupload_ttl = true\n");
    let stderr = start_fails(&["--config", path.to_str().expect("UTF-8")], &[]);
    assert!(stderr.contains("upload_ttl"), "{stderr}");

    let stderr = start_fails(
        &["--listen", "127.0.0.1:0"],
        &[("TENAX_HEADER_READ_TIMEOUT", "soon")],
    );
    assert!(
        stderr.contains(r#"config key "header_read_timeout": invalid duration "soon""#),
        "{stderr}"
    );

    let stderr = start_fails(&["--listen", "localhost"], &[]);
    assert!(stderr.contains(r#"config key "listen""#), "{stderr}");

    let stderr = start_fails(
        &["--listen", "127.0.0.1:0", "--body-idle-timeout", "0s"],
        &[],
    );
    assert!(
        stderr.contains(r#"config key "body_idle_timeout""#),
        "{stderr}"
    );

    let stderr = start_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            "/nonexistent/tenax.toml",
        ],
        &[],
    );
    assert!(stderr.contains("/nonexistent/tenax.toml"), "{stderr}");
}

/// `--help` documents every option with its environment variable.
#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("tenax serve --help");
    assert!(out.status.success());
    let help = text(&out.stdout);
    for (flag, env) in [
        ("--config", "TENAX_CONFIG"),
        ("--listen", "TENAX_LISTEN"),
        ("--data", "TENAX_DATA"),
        ("--md5", "TENAX_MD5"),
        ("--no-md5", "TENAX_NO_MD5"),
        ("--max-upload-size", "TENAX_MAX_UPLOAD_SIZE"),
        ("--upload-ttl", "TENAX_UPLOAD_TTL"),
        ("--body-idle-timeout", "TENAX_BODY_IDLE_TIMEOUT"),
        ("--header-read-timeout", "TENAX_HEADER_READ_TIMEOUT"),
        ("--shutdown-grace", "TENAX_SHUTDOWN_GRACE"),
        ("--log", "TENAX_LOG"),
        ("--log-format", "TENAX_LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
}

// ---------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------

/// `/healthz` answers while the process serves; `/readyz` follows whether
/// the data directory accepts writes.
#[tokio::test]
async fn health_and_readiness() {
    let data = tempfile::tempdir().expect("temporary directory");
    let data_arg = data.path().to_str().expect("UTF-8");
    let server = Server::start(&["--listen", "127.0.0.1:0", "--data", data_arg], &[]);
    assert_eq!(get(&server, "/healthz").await.0, 200);
    assert_eq!(get(&server, "/readyz").await.0, 200);

    // Replace the uploads directory by a file: nothing can be written
    // (this holds for root too, unlike a chmod).
    let uploads = data.path().join("uploads");
    let aside = data.path().join("uploads.aside");
    std::fs::rename(&uploads, &aside).expect("move uploads aside");
    std::fs::write(&uploads, b"not a directory").expect("block uploads");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&server, "/readyz").await;
        if status == 503 {
            assert!(body.contains("not ready"), "{body}");
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&server, "/healthz").await.0,
        200,
        "alive though not ready"
    );

    std::fs::remove_file(&uploads).expect("unblock");
    std::fs::rename(&aside, &uploads).expect("move uploads back");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&server, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A scrape after known traffic: requests by dialect and status, bytes
/// received and served, uploads completed, fsync latencies.
#[tokio::test]
async fn metrics_follow_the_traffic() {
    let mut rng = Rng::from_env_or_os();
    let server = Server::start(&["--listen", "127.0.0.1:0"], &[]);
    let before = scrape(&server).await;
    assert_eq!(value(&before, "tenax_uploads_completed_total", &[]), 0.0);
    assert_eq!(value(&before, "tenax_bytes_received_total", &[]), 0.0);

    let seed_sizes = [rng.between(1, 300_000), rng.between(1, 300_000)];
    let tus_sizes = [
        rng.between(1, 300_000),
        rng.between(1, 300_000),
        rng.between(1, 300_000),
    ];
    let mut sent = 0;
    for (index, size) in seed_sizes.iter().enumerate() {
        let data = support::random_bytes(&mut rng, *size as usize);
        seed_upload(&server, &format!("seed-{index}.bin"), &data).await;
        sent += size;
    }
    for size in tus_sizes {
        let data = support::random_bytes(&mut rng, size as usize);
        tus_upload(&server, &data).await;
        sent += size;
    }
    // One upload left open, one cancelled.
    assert_eq!(tus_create(&server, 10).await.0, 201);
    let (_, location) = tus_create(&server, 10).await;
    let location = location.expect("a Location");
    let url = if location.starts_with("http") {
        location
    } else {
        server.url(&location)
    };
    let response = client()
        .delete(url)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("tus DELETE");
    assert_eq!(response.status().as_u16(), 204);
    // An unknown upload: 404.
    let response = client()
        .head(server.url("/uploads/nonexistent"))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("tus HEAD");
    let not_found = response.status().as_u16().to_string();
    assert!(not_found.starts_with('4'), "{not_found}");
    // A download of a seed file.
    let (status, _) = get(&server, "/files/seed-0.bin").await;
    assert_eq!(status, 200);

    let samples = scrape(&server).await;
    let received = value(&samples, "tenax_bytes_received_total", &[]);
    assert!(received >= sent as f64, "received {received} < sent {sent}");
    let served = value(&samples, "tenax_bytes_served_total", &[]);
    assert!(served >= seed_sizes[0] as f64, "served {served}");
    let requests = |dialect: &str, status: &str| {
        value(
            &samples,
            "tenax_requests_total",
            &[("dialect", dialect), ("status", status)],
        )
    };
    assert_eq!(requests("seed", "200"), seed_sizes.len() as f64);
    assert_eq!(requests("tus", "201"), tus_sizes.len() as f64 + 2.0);
    assert_eq!(requests("tus", "204"), tus_sizes.len() as f64 + 1.0);
    assert_eq!(requests("tus", &not_found), 1.0);
    assert_eq!(requests("download", "200"), 1.0);
    assert!(requests("other", "200") >= 1.0, "the first scrape");
    assert_eq!(
        value(&samples, "tenax_uploads_completed_total", &[]),
        (seed_sizes.len() + tus_sizes.len()) as f64
    );
    assert_eq!(value(&samples, "tenax_uploads_cancelled_total", &[]), 1.0);
    assert_eq!(value(&samples, "tenax_uploads_active", &[]), 1.0);
    assert_eq!(value(&samples, "tenax_uploads_expired_total", &[]), 0.0);
    let fsyncs = value(&samples, "tenax_fsync_seconds_count", &[]);
    assert!(fsyncs >= 1.0, "fsync count {fsyncs}");
    let in_buckets = value(&samples, "tenax_fsync_seconds_bucket", &[("le", "+Inf")]);
    assert_eq!(in_buckets, fsyncs, "a histogram with buckets");
    assert!(value(&samples, "tenax_fsync_seconds_sum", &[]) > 0.0);
}

/// `--log-format json`: every stderr line is a JSON object.
#[test]
fn json_logs_on_request() {
    let server = Server::start(
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[("TENAX_LOG", "info")],
    );
    let deadline = Instant::now() + START_TIMEOUT;
    let lines = loop {
        let lines = server.stderr.lock().expect("stderr lines").clone();
        if lines.iter().any(|line| line.contains("serving")) {
            break lines;
        }
        assert!(Instant::now() < deadline, "no log line: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for line in &lines {
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}"));
        assert!(json.get("level").is_some(), "{line}");
        assert!(json.get("timestamp").is_some(), "{line}");
    }
    let serving = lines
        .iter()
        .find(|line| line.contains("serving"))
        .expect("the serving line");
    let json: serde_json::Value = serde_json::from_str(serving).expect("JSON");
    assert_eq!(json["fields"]["message"], "serving");
    assert_eq!(
        json["fields"]["address"].as_str(),
        Some(server.addr.to_string().as_str())
    );
}

/// `--log tenax::timeline=debug`: one event per append, with its offset,
/// its bytes and its phases in order (the figures `bench/clients
/// --timeline` reads).
#[tokio::test]
async fn the_timeline_log_times_every_append() {
    let server = Server::start(
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
        &[("TENAX_LOG", "tenax::timeline=debug,info")],
    );
    let http = client();
    let created = support::http::tus_request(
        &http,
        reqwest::Method::POST,
        &server.url("/uploads"),
        &[("upload-length", "300")],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let location = created.header("location").expect("Location");
    let upload = if location.starts_with("http") {
        location.to_owned()
    } else {
        server.url(location)
    };
    for (offset, piece) in [(0u64, 100usize), (100, 200)] {
        let answer = support::http::tus_request(
            &http,
            reqwest::Method::PATCH,
            &upload,
            &[
                ("upload-offset", &offset.to_string()),
                ("content-type", "application/offset+octet-stream"),
            ],
            vec![7; piece],
        )
        .await;
        assert_eq!(answer.status, 204, "{}", answer.describe());
    }
    let deadline = Instant::now() + START_TIMEOUT;
    let events = loop {
        let events: Vec<serde_json::Value> = server
            .stderr
            .lock()
            .expect("stderr lines")
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|json| json["target"] == "tenax::timeline")
            .collect();
        if events.len() >= 2 {
            break events;
        }
        assert!(Instant::now() < deadline, "timeline events: {events:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(events.len(), 2, "{events:?}");
    let mut previous_start = 0;
    for (event, (offset, bytes)) in events.iter().zip([(0, 100), (100, 200)]) {
        let fields = &event["fields"];
        assert_eq!(fields["offset"], offset, "{event}");
        assert_eq!(fields["bytes"], bytes, "{event}");
        let phase = |name: &str| {
            fields[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} in {event}"))
        };
        // Making the bytes durable (a write, an fdatasync, a hand-off to a
        // blocking thread) takes some microseconds at least.
        assert!(
            phase("to_first_byte_us") <= phase("to_last_byte_us")
                && phase("to_last_byte_us") < phase("to_durable_us")
                && phase("to_durable_us") <= phase("to_end_us"),
            "phases out of order: {event}"
        );
        let start = phase("start_unix_us");
        assert!(start > previous_start, "{event}");
        previous_start = start + phase("to_end_us");
    }
}
