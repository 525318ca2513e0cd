//! Several stateless `tenax serve --data s3://… --cluster postgres://…`
//! nodes behind a round-robin balancer (testkit's [`Balancer`], one
//! request per node in turn): every dialect's chunks land on different
//! nodes and the file comes out byte-exact; a node killed mid-upload; two
//! writers racing on one upload through two nodes; expiry of uploads
//! begun on different nodes.
//!
//! Each test has its own bucket prefix (moto, started by `scripts/test`)
//! and its own PostgreSQL database (scripts/lib/pg.sh). Skipped, loudly,
//! only outside `scripts/test` when either server is missing. Sizes are a
//! few MiB (the S3 part is 8 MiB, so some uploads cross a part boundary on
//! another node than the one that began it); every loop is bounded.
//!
//! Long on purpose: the cluster's PostgreSQL and S3 peers are set up once for
//! one test binary.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{Client, Method};
use support::http::{
    Resp, client, in_progress_uploads, paced_request, path_of, send, tus_request as tus,
};
use support::process::{json_line, text};
use support::{BIN, MIB, random_bytes, sha256_hex};
use tenax_testkit::{Balancer, Rng, TestServer};
use tokio::io::AsyncWriteExt as _;

/// The nodes of each cluster.
const NODES: usize = 3;

/// Upper bound for a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a resuming client keeps trying after a failure (a dead node's
/// hold on an upload may have to lapse first).
const RESUME_WINDOW: Duration = Duration::from_secs(60);

const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// Three nodes on one bucket prefix and one database, and a balancer in
/// front of them.
struct Cluster {
    nodes: Vec<TestServer>,
    balancer: Balancer,
    data_url: String,
    database: String,
    /// The flags every node gets besides `--data` and `--cluster`.
    extra: Vec<String>,
}

impl Cluster {
    /// `None` (after a loud SKIPPED message) without S3 or PostgreSQL.
    async fn start(name: &str, extra: &[&str]) -> Option<Cluster> {
        let data_url = tenax_testkit::s3_url(name)?;
        let database = tenax_testkit::database_url(name)?;
        Cluster::start_on(data_url, database, extra, &[]).await
    }

    /// Three nodes on `data_url` and `database` (a PostgreSQL of the
    /// test's own, say), with `envs` set for each (e.g. the object store's
    /// endpoint through a proxy).
    async fn start_on(
        data_url: String,
        database: String,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Option<Cluster> {
        let (data, db) = (data_url.clone(), database.clone());
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let flags = extra.clone();
        let nodes = tokio::task::spawn_blocking(move || {
            (0..NODES)
                .map(|_| {
                    let mut args = vec!["--cluster", db.as_str()];
                    args.extend(flags.iter().map(String::as_str));
                    let envs: Vec<(&str, &str)> = envs
                        .iter()
                        .map(|(key, value)| (key.as_str(), value.as_str()))
                        .collect();
                    TestServer::start_at_with_env(BIN, &data, &args, &envs)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("start the nodes");
        let addrs: Vec<SocketAddr> = nodes.iter().map(TestServer::addr).collect();
        let balancer = Balancer::start(&addrs).await.expect("start the balancer");
        eprintln!(
            "cluster: {data_url}, {database}, nodes {addrs:?}, balancer {}",
            balancer.addr()
        );
        Some(Cluster {
            nodes,
            balancer,
            data_url,
            database,
            extra,
        })
    }

    /// One more node of this cluster (same prefix, database and flags).
    async fn start_node(&self) -> TestServer {
        let (data, db, extra) = (
            self.data_url.clone(),
            self.database.clone(),
            self.extra.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--cluster", db.as_str()];
            args.extend(extra.iter().map(String::as_str));
            TestServer::start_at(BIN, &data, &args)
        })
        .await
        .expect("start a node")
    }

    fn url(&self, path: &str) -> String {
        self.balancer.url(path)
    }

    /// Every node served at least `least` requests through the balancer.
    fn assert_spread(&self, what: &str, least: u64) {
        let hits = self.balancer.hits();
        eprintln!("{what}: requests per node {hits:?}");
        assert!(
            hits.iter().all(|&hits| hits >= least),
            "{what}: not every node served {least} requests: {hits:?}"
        );
    }

    /// The index of the node that served the request sent after `before`
    /// (a snapshot of the hits), once one did.
    async fn node_of_next_request(&self, before: &[u64]) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.balancer.hits();
            if let Some(index) = (0..NODES).find(|&i| now[i] > before[i]) {
                return index;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the request reached no node"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs `body` with the cluster test's deadline.
async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test timed out");
}

// ---------------------------------------------------------------------------
// Dialect helpers
// ---------------------------------------------------------------------------

async fn tus_create(http: &Client, collection: &str, name: &str, size: usize) -> String {
    let meta = format!("filename {}", BASE64.encode(name));
    let created = tus(
        http,
        Method::POST,
        collection,
        &[
            ("upload-length", &size.to_string()),
            ("upload-metadata", &meta),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "tus creation: {}", created.describe());
    created.header("location").expect("Location").to_owned()
}

async fn tus_patch(http: &Client, url: &str, offset: usize, body: &[u8]) -> Resp {
    tus(
        http,
        Method::PATCH,
        url,
        &[
            ("upload-offset", &offset.to_string()),
            ("content-type", "application/offset+octet-stream"),
        ],
        body.to_vec(),
    )
    .await
}

async fn tus_offset(http: &Client, url: &str) -> Resp {
    tus(http, Method::HEAD, url, &[], Vec::new()).await
}

/// A `PUT` of the seed dialect: `data` at `at`, the total named on the
/// last chunk; an empty `data` asks for the status (`bytes */TOTAL`).
async fn seed_put(http: &Client, url: &str, at: usize, data: &[u8], total: Option<usize>) -> Resp {
    let total_text = total.map_or_else(|| "*".to_owned(), |total| total.to_string());
    let range = if data.is_empty() {
        format!("bytes */{total_text}")
    } else {
        format!("bytes {at}-{}/{total_text}", at + data.len() - 1)
    };
    send(
        http.put(url)
            .header("content-range", range)
            .body(data.to_vec()),
    )
    .await
}

/// The end of the persisted prefix a seed 308 names (`Range: bytes=0-N`),
/// or 0 without a `Range`.
fn seed_persisted(resp: &Resp) -> usize {
    match resp.header("range") {
        None => 0,
        Some(range) => {
            let last: usize = range
                .strip_prefix("bytes=0-")
                .and_then(|last| last.parse().ok())
                .unwrap_or_else(|| panic!("odd Range: {}", resp.describe()));
            last + 1
        }
    }
}

async fn seed_begin(http: &Client, base: &str, name: &str) -> String {
    let resp = send(http.post(format!("{base}/api/upload?file={name}"))).await;
    assert_eq!(resp.status, 200, "seed initiation: {}", resp.describe());
    resp.header("location").expect("Location").to_owned()
}

async fn rufh(
    http: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut request = http
        .request(method, url)
        .header("upload-draft-interop-version", "9")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// Checks a download of `name` through the balancer: a few ranges (one
/// across the 8 MiB part boundary when the file has one) and the whole,
/// by SHA-256.
async fn assert_downloads(cluster: &Cluster, http: &Client, name: &str, data: &[u8]) {
    let url = cluster.url(&format!("/files/{name}"));
    let size = data.len();
    let mut ranges = vec![(0, 99), (size - 1000, size - 1), (123, size - 1)];
    if size > (8 * MIB) as usize + 10 {
        let boundary = (8 * MIB) as usize;
        ranges.push((boundary - 5, boundary + 5));
    }
    for (from, to) in ranges {
        let resp = send(http.get(&url).header("range", format!("bytes={from}-{to}"))).await;
        assert_eq!(resp.status, 206, "{name} {from}-{to}: {}", resp.describe());
        assert!(
            resp.body == data[from..=to],
            "{name}: bytes {from}-{to} differ"
        );
    }
    let whole = send(http.get(&url)).await;
    assert_eq!(whole.status, 200, "{name}: {}", whole.describe());
    assert_eq!(whole.body.len(), size, "{name}: size");
    assert_eq!(sha256_hex(&whole.body), sha256_hex(data), "{name}: SHA-256");
}

/// 12 MiB and a few odd bytes: one 8 MiB part and a tail, in 2 MiB chunks
/// (7 of them), so each node receives at least two.
fn upload_data(rng: &mut Rng) -> Vec<u8> {
    let tail = rng.between(1, 99_999) as usize;
    random_bytes(rng, (12 * MIB) as usize + tail)
}

const CHUNK: usize = (2 * MIB) as usize;

// ---------------------------------------------------------------------------
// 1. Every dialect, chunk by chunk over the three nodes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_chunks_spread_over_the_nodes() {
    let Some(cluster) = Cluster::start("cluster_seed", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let data = upload_data(&mut rng);
        let url = seed_begin(&http, &cluster.url(""), "seed.bin").await;
        assert!(
            url.starts_with(&cluster.url("/")),
            "Location not through the balancer: {url}"
        );
        let mut at = 0;
        for chunk in data.chunks(CHUNK) {
            let last = at + chunk.len() == data.len();
            let resp = seed_put(&http, &url, at, chunk, last.then_some(data.len())).await;
            at += chunk.len();
            if last {
                assert!(
                    matches!(resp.status, 200 | 201),
                    "last chunk: {}",
                    resp.describe()
                );
                assert_eq!(
                    resp.json()["sha256"],
                    sha256_hex(&data),
                    "{}",
                    resp.describe()
                );
            } else {
                assert_eq!(resp.status, 308, "chunk to {at}: {}", resp.describe());
                assert_eq!(seed_persisted(&resp), at, "{}", resp.describe());
                // Every node reports the same progress.
                if at == 3 * CHUNK {
                    for node in &cluster.nodes {
                        let direct = node.url(&path_of(&url));
                        let status = seed_put(&http, &direct, 0, &[], Some(data.len())).await;
                        assert_eq!(status.status, 308, "{}", status.describe());
                        assert_eq!(seed_persisted(&status), at, "{}", status.describe());
                    }
                }
            }
        }
        cluster.assert_spread("seed", 2);
        assert_downloads(&cluster, &http, "seed.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_chunks_spread_over_the_nodes() {
    let Some(cluster) = Cluster::start("cluster_tus", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let data = upload_data(&mut rng);
        let url = tus_create(&http, &cluster.url("/uploads"), "tus.bin", data.len()).await;
        assert!(
            url.starts_with(&cluster.url("/")),
            "Location not through the balancer: {url}"
        );
        let mut at = 0;
        for chunk in data.chunks(CHUNK) {
            let resp = tus_patch(&http, &url, at, chunk).await;
            at += chunk.len();
            assert_eq!(resp.status, 204, "PATCH to {at}: {}", resp.describe());
            assert_eq!(resp.number("upload-offset"), at as u64);
            let head = tus_offset(&http, &url).await;
            assert_eq!(head.status, 200, "HEAD: {}", head.describe());
            assert_eq!(
                head.number("upload-offset"),
                at as u64,
                "{}",
                head.describe()
            );
        }
        cluster.assert_spread("tus", 4);
        assert_downloads(&cluster, &http, "tus.bin", &data).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rufh_chunks_spread_over_the_nodes() {
    let Some(cluster) = Cluster::start("cluster_rufh", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let data = upload_data(&mut rng);
        let size = data.len().to_string();
        // Creation carries the first chunk.
        let created = rufh(
            &http,
            Method::POST,
            &cluster.url("/uploads"),
            &[
                ("upload-complete", "?0"),
                ("upload-length", &size),
                ("content-disposition", "attachment; filename=\"rufh.bin\""),
            ],
            data[..CHUNK].to_vec(),
        )
        .await;
        assert_eq!(created.status, 201, "creation: {}", created.describe());
        assert_eq!(created.number("upload-offset"), CHUNK as u64);
        let url = created.header("location").expect("Location").to_owned();
        assert!(
            url.starts_with(&cluster.url("/")),
            "Location not through the balancer: {url}"
        );
        let mut at = CHUNK;
        while at < data.len() {
            let end = (at + CHUNK).min(data.len());
            let complete = end == data.len();
            let offset = at.to_string();
            let resp = rufh(
                &http,
                Method::PATCH,
                &url,
                &[
                    ("content-type", PARTIAL_UPLOAD),
                    ("upload-offset", &offset),
                    ("upload-complete", if complete { "?1" } else { "?0" }),
                ],
                data[at..end].to_vec(),
            )
            .await;
            if complete {
                assert!(
                    matches!(resp.status, 200 | 201 | 204),
                    "{}",
                    resp.describe()
                );
            } else {
                assert_eq!(resp.status, 204, "append to {end}: {}", resp.describe());
            }
            assert_eq!(
                resp.number("upload-offset"),
                end as u64,
                "{}",
                resp.describe()
            );
            at = end;
            let head = rufh(&http, Method::HEAD, &url, &[], Vec::new()).await;
            assert!(
                matches!(head.status, 200 | 204),
                "HEAD: {}",
                head.describe()
            );
            assert_eq!(
                head.number("upload-offset"),
                end as u64,
                "{}",
                head.describe()
            );
            assert_eq!(
                head.header("upload-complete"),
                Some(if complete { "?1" } else { "?0" }),
                "{}",
                head.describe()
            );
        }
        cluster.assert_spread("rufh", 4);
        assert_downloads(&cluster, &http, "rufh.bin", &data).await;
    })
    .await;
}

/// `tenax upload` (the CLI) through the balancer, in the seed, tus and
/// IETF dialects, 2 MiB chunks; then a download of each through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_uploads_through_the_balancer() {
    let Some(cluster) = Cluster::start("cluster_cli", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let dir = tempfile::tempdir().expect("tmp");
        for protocol in ["seed", "tus", "ietf"] {
            let before = cluster.balancer.hits();
            let name = format!("cli-{protocol}.bin");
            let path = dir.path().join(&name);
            let data = upload_data(&mut rng);
            std::fs::write(&path, &data).expect("write the source");
            let base = cluster.url("");
            let out = tokio::task::spawn_blocking(move || {
                support::process::run_cli(
                    &[
                        path.to_str().expect("utf-8"),
                        &base,
                        "--protocol",
                        protocol,
                        "--chunk-size",
                        "2MiB",
                        "--stall-timeout",
                        "10s",
                        "--no-journal",
                        "--json",
                    ],
                    Duration::from_secs(120),
                )
            })
            .await
            .expect("run tenax upload");
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{name}: stderr: {stderr}");
            let json = json_line(&out);
            assert_eq!(json["sha256"], sha256_hex(&data), "{name}: {json}");
            let after = cluster.balancer.hits();
            let per_node: Vec<u64> = (0..NODES).map(|i| after[i] - before[i]).collect();
            eprintln!("{name}: requests per node {per_node:?}");
            assert!(
                per_node.iter().all(|&hits| hits >= 2),
                "{name}: not every node served two requests: {per_node:?}"
            );
            assert_downloads(&cluster, &http, &name, &data).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. A node killed mid-upload
// ---------------------------------------------------------------------------

/// tus and seed uploads through the balancer; the node receiving a chunk is
/// killed (SIGKILL) while the chunk streams. The client asks where the
/// upload stands (tus HEAD, seed `bytes */TOTAL`) through the balancer,
/// which reaches a live node, and finishes there. The killed node is then
/// replaced by a new one on another port, which serves the files too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_upload_is_survived() {
    let Some(mut cluster) = Cluster::start("cluster_kill", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let first = 3 * CHUNK / 2;
        let mut killed = Vec::new();
        for dialect in ["tus", "seed"] {
            let name = format!("killed-{dialect}.bin");
            let data = upload_data(&mut rng);
            let size = data.len();
            let url = match dialect {
                "tus" => {
                    let url = tus_create(&http, &cluster.url("/uploads"), &name, size).await;
                    let resp = tus_patch(&http, &url, 0, &data[..first]).await;
                    assert_eq!(resp.status, 204, "{}", resp.describe());
                    url
                }
                _ => {
                    let url = seed_begin(&http, &cluster.url(""), &name).await;
                    let resp = seed_put(&http, &url, 0, &data[..first], None).await;
                    assert_eq!(resp.status, 308, "{}", resp.describe());
                    url
                }
            };
            // The next chunk (6 MiB, paced), to whichever node is next.
            let head = match dialect {
                "tus" => format!(
                    "PATCH {} HTTP/1.1\r\nhost: {}\r\ntus-resumable: 1.0.0\r\n\
                     upload-offset: {first}\r\ncontent-type: application/offset+octet-stream\r\n\
                     content-length: {}\r\n\r\n",
                    path_of(&url),
                    cluster.balancer.addr(),
                    3 * CHUNK
                ),
                _ => format!(
                    "PUT {} HTTP/1.1\r\nhost: {}\r\ncontent-range: bytes {first}-{}/*\r\n\
                     content-length: {}\r\n\r\n",
                    path_of(&url),
                    cluster.balancer.addr(),
                    first + 3 * CHUNK - 1,
                    3 * CHUNK
                ),
            };
            let before = cluster.balancer.hits();
            let body = data[first..first + 3 * CHUNK].to_vec();
            let addr = cluster.balancer.addr();
            let streaming = tokio::spawn(async move {
                paced_request(
                    addr,
                    head,
                    body,
                    128 * 1024,
                    Duration::from_millis(40),
                    Duration::from_secs(20),
                )
                .await
            });
            let victim = cluster.node_of_next_request(&before).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut node = cluster.nodes.remove(victim);
            let node = tokio::task::spawn_blocking(move || {
                node.kill9();
                node
            })
            .await
            .expect("kill");
            cluster.nodes.insert(victim, node);
            killed.push(victim);
            let (sent, answer) = streaming.await.expect("the streaming request");
            eprintln!(
                "{name}: node {victim} killed after {sent} bytes of the chunk were sent; answer {:?}",
                answer.as_ref().map(|resp| resp.status)
            );
            assert!(
                sent < 3 * CHUNK,
                "{name}: the chunk was sent whole before the kill; slow it down"
            );

            // Resume through the balancer.
            let at = match dialect {
                "tus" => tus_finish(&http, &url, &data).await,
                _ => seed_finish(&http, &url, &data).await,
            };
            assert!(
                (first..=first + sent).contains(&at),
                "{name}: resumed at {at}, outside what was sent ({first} + {sent})"
            );
            assert_downloads(&cluster, &http, &name, &data).await;

            // The node comes back on another port (as a replaced instance
            // would), the balancer is pointed at it, and it serves the file.
            let node = cluster.start_node().await;
            cluster.balancer.set_upstream(victim, node.addr());
            cluster.nodes[victim] = node;
            let direct = send(http.get(cluster.nodes[victim].url(&format!("/files/{name}")))).await;
            assert_eq!(direct.status, 200, "{}", direct.describe());
            assert!(direct.body == data, "{name}: the replacement node serves other bytes");
        }
        eprintln!("killed nodes {killed:?}; hits {:?}", cluster.balancer.hits());
    })
    .await;
}

/// The tus client's resumption: HEAD, then PATCH the rest in chunks, over
/// and over while the cluster answers with a conflict or an error, within
/// [`RESUME_WINDOW`]. Returns the offset of the first successful HEAD.
async fn tus_finish(http: &Client, url: &str, data: &[u8]) -> usize {
    let deadline = tokio::time::Instant::now() + RESUME_WINDOW;
    let mut resumed_at = None;
    for attempt in 0..400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tus: not finished after {attempt} attempts"
        );
        let head = tus_offset(http, url).await;
        if head.status != 200 {
            eprintln!("tus resume: HEAD {}", head.describe());
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let at = head.number("upload-offset") as usize;
        resumed_at.get_or_insert(at);
        if at == data.len() {
            return resumed_at.unwrap_or(at);
        }
        let end = (at + CHUNK).min(data.len());
        let resp = tus_patch(http, url, at, &data[at..end]).await;
        if resp.status != 204 {
            eprintln!("tus resume: PATCH at {at}: {}", resp.describe());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!("tus: not finished after 400 attempts");
}

/// The seed client's resumption: `bytes */TOTAL`, then the rest in chunks.
async fn seed_finish(http: &Client, url: &str, data: &[u8]) -> usize {
    let deadline = tokio::time::Instant::now() + RESUME_WINDOW;
    let mut resumed_at = None;
    for attempt in 0..400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed: not finished after {attempt} attempts"
        );
        let status = seed_put(http, url, 0, &[], Some(data.len())).await;
        let at = match status.status {
            308 => seed_persisted(&status),
            200 | 201 => return resumed_at.unwrap_or(data.len()),
            _ => {
                eprintln!("seed resume: status {}", status.describe());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        resumed_at.get_or_insert(at);
        let end = (at + CHUNK).min(data.len());
        let last = end == data.len();
        let resp = seed_put(http, url, at, &data[at..end], last.then_some(data.len())).await;
        if !matches!(resp.status, 308 | 200 | 201) {
            eprintln!("seed resume: PUT at {at}: {}", resp.describe());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!("seed: not finished after 400 attempts");
}

// ---------------------------------------------------------------------------
// 3. Two writers on one upload, through two nodes
// ---------------------------------------------------------------------------

/// Two clients PATCH different bytes at offset 0 of one tus upload, at the
/// same time, each to another node (directly). At most one may succeed;
/// the other gets a conflict (or its connection ends); every node then
/// reports the same offset, and the finished file holds one writer's bytes
/// up to it, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_upload_never_corrupt_it() {
    let Some(cluster) = Cluster::start("cluster_race", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        for round in 0..3 {
            let name = format!("race-{round}.bin");
            let size = (10 * MIB) as usize + 777;
            let writers = [random_bytes(&mut rng, size), random_bytes(&mut rng, size)];
            let url = tus_create(&http, &cluster.nodes[0].url("/uploads"), &name, size).await;
            let upload_path = path_of(&url);
            let mut tasks = Vec::new();
            for (writer, data) in writers.iter().enumerate() {
                let node = &cluster.nodes[(1 + writer) % cluster.nodes.len()];
                let head = format!(
                    "PATCH {upload_path} HTTP/1.1\r\nhost: {}\r\ntus-resumable: 1.0.0\r\n\
                     upload-offset: 0\r\ncontent-type: application/offset+octet-stream\r\n\
                     content-length: {size}\r\n\r\n",
                    node.addr()
                );
                let (addr, body) = (node.addr(), data.clone());
                // Either may start first.
                let delay = Duration::from_millis(rng.between(0, 30));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    paced_request(
                        addr,
                        head,
                        body,
                        256 * 1024,
                        Duration::from_millis(5),
                        Duration::from_secs(30),
                    )
                    .await
                }));
            }
            let mut answers = Vec::new();
            for task in tasks {
                let (sent, answer) = task.await.expect("writer");
                answers.push((sent, answer));
            }
            let statuses: Vec<Option<u16>> = answers
                .iter()
                .map(|(_, a)| a.as_ref().map(|r| r.status))
                .collect();
            eprintln!("{name}: answers {statuses:?}");
            let won: Vec<usize> = (0..2)
                .filter(|&w| statuses[w].is_some_and(|s| (200..300).contains(&s)))
                .collect();
            assert!(
                won.len() <= 1,
                "{name}: both writers were acknowledged: {statuses:?}"
            );
            for (writer, status) in statuses.iter().enumerate() {
                if let Some(status) = *status {
                    assert!(
                        matches!(status, 200..=299 | 409 | 412 | 423 | 429 | 503),
                        "{name}: writer {writer}: not a conflict answer: {}",
                        answers[writer]
                            .1
                            .as_ref()
                            .map(Resp::describe)
                            .unwrap_or_default()
                    );
                }
            }
            // Every node reports the same offset.
            let mut offsets = Vec::new();
            for node in &cluster.nodes {
                let head = tus_offset(&http, &node.url(&upload_path)).await;
                assert_eq!(head.status, 200, "{name}: {}", head.describe());
                offsets.push(head.number("upload-offset") as usize);
            }
            assert!(
                offsets.windows(2).all(|w| w[0] == w[1]),
                "{name}: offsets {offsets:?}"
            );
            let at = offsets[0];
            if let Some(&winner) = won.first() {
                let acknowledged = answers[winner]
                    .1
                    .as_ref()
                    .map_or(0, |resp| resp.number("upload-offset") as usize);
                assert_eq!(at, acknowledged, "{name}: the offset is not the winner's");
            }
            // Finish with writer 0's bytes (through the balancer), then the
            // prefix must be one writer's, whole.
            if at < size {
                tus_finish(&http, &cluster.url(&upload_path), &writers[0]).await;
            }
            let stored = send(http.get(cluster.url(&format!("/files/{name}")))).await;
            assert_eq!(stored.status, 200, "{name}: {}", stored.describe());
            assert_eq!(stored.body.len(), size, "{name}: size");
            let owner = (0..2).find(|&w| stored.body[..at] == writers[w][..at]);
            let Some(owner) = owner else {
                panic!("{name}: the first {at} bytes are neither writer's: the writes mixed");
            };
            if let Some(&winner) = won.first() {
                assert_eq!(owner, winner, "{name}: the stored prefix is the loser's");
            }
            assert!(
                stored.body[at..] == writers[0][at..],
                "{name}: the rest differs"
            );
        }
    })
    .await;
}

/// The same race in the seed dialect, both writers addressing the upload
/// by its name (`PUT /api/upload?file=NAME`), each with the whole file in
/// one chunk: one completes it (200), the other is told to retry (503 with
/// `Retry-After`, which Google's client retries, where it gives up on a
/// 409), and the published file is the winner's, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seed_writers_on_one_name_never_corrupt_it() {
    let Some(cluster) = Cluster::start("cluster_seed_race", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        for round in 0..2 {
            let name = format!("seed-race-{round}.bin");
            let size = (10 * MIB) as usize + 333;
            let writers = [random_bytes(&mut rng, size), random_bytes(&mut rng, size)];
            // The name's upload exists before the race, so both continue it.
            let first = send(
                http.put(cluster.nodes[0].url(&format!("/api/upload?file={name}")))
                    .header("content-range", format!("bytes */{size}")),
            )
            .await;
            assert_eq!(first.status, 308, "{name}: {}", first.describe());
            let mut tasks = Vec::new();
            for (writer, data) in writers.iter().enumerate() {
                let node = &cluster.nodes[1 + writer];
                let head = format!(
                    "PUT /api/upload?file={name} HTTP/1.1\r\nhost: {}\r\n\
                     content-range: bytes 0-{}/{size}\r\ncontent-length: {size}\r\n\r\n",
                    node.addr(),
                    size - 1
                );
                let (addr, body) = (node.addr(), data.clone());
                let delay = Duration::from_millis(rng.between(0, 30));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    paced_request(
                        addr,
                        head,
                        body,
                        256 * 1024,
                        Duration::from_millis(5),
                        Duration::from_secs(30),
                    )
                    .await
                }));
            }
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.expect("writer").1);
            }
            let statuses: Vec<Option<u16>> = answers
                .iter()
                .map(|a| a.as_ref().map(|r| r.status))
                .collect();
            eprintln!("{name}: answers {statuses:?}");
            let won: Vec<usize> = (0..2).filter(|&w| statuses[w] == Some(200)).collect();
            assert_eq!(won.len(), 1, "{name}: not exactly one winner: {statuses:?}");
            let (winner, loser) = (won[0], 1 - won[0]);
            if let Some(answer) = &answers[loser] {
                assert!(
                    matches!(answer.status, 308 | 503),
                    "{name}: the loser got {}",
                    answer.describe()
                );
                if answer.status == 503 {
                    assert_eq!(answer.header("retry-after"), Some("1"), "{name}");
                }
            }
            let stored = send(http.get(cluster.url(&format!("/files/{name}")))).await;
            assert_eq!(stored.status, 200, "{name}: {}", stored.describe());
            assert!(
                stored.body == writers[winner],
                "{name}: the published file is not the winner's bytes"
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Expiry across the nodes
// ---------------------------------------------------------------------------

/// Three uploads begun through the balancer (so on three nodes), each past
/// one 8 MiB part, then abandoned: with a 2 s TTL they expire, and their
/// multipart uploads are aborted (S3 lists none under the prefix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_aborts_abandoned_uploads_of_every_node() {
    let Some(cluster) = Cluster::start(
        "cluster_expiry",
        &["--upload-ttl", "2s", "--expiry-interval", "500ms"],
    )
    .await
    else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let held = (8 * MIB + 100) as usize;
        let mut urls = Vec::new();
        let mut creators = Vec::new();
        for index in 0..NODES {
            let before = cluster.balancer.hits();
            let name = format!("abandoned-{index}.bin");
            let url = tus_create(&http, &cluster.url("/uploads"), &name, 2 * held).await;
            creators.push(cluster.node_of_next_request(&before).await);
            let resp = tus_patch(&http, &url, 0, &random_bytes(&mut rng, held)).await;
            assert_eq!(resp.status, 204, "{name}: {}", resp.describe());
            urls.push(url);
        }
        creators.sort_unstable();
        creators.dedup();
        assert_eq!(
            creators.len(),
            NODES,
            "not begun on every node: {creators:?}"
        );
        let prefix = cluster
            .data_url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, prefix)| prefix.to_owned())
            .expect("s3://BUCKET/PREFIX");
        let key = format!("<Key>{prefix}/");
        let listed = in_progress_uploads(&http, &cluster.data_url).await;
        let pending = listed.matches(&key).count();
        // An upload may already have expired (2 s) on a loaded machine.
        assert!(
            (1..=NODES).contains(&pending),
            "{pending} multipart uploads for {NODES} uploads: {listed}"
        );
        eprintln!("{pending} multipart uploads in progress under {prefix}");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for url in &urls {
            loop {
                let head = tus_offset(&http, url).await;
                if matches!(head.status, 404 | 410) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} did not expire: {}",
                    head.describe()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        loop {
            let listed = in_progress_uploads(&http, &cluster.data_url).await;
            if !listed.contains(&key) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "multipart uploads left under {prefix}: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("database {}", cluster.database);
    })
    .await;
}

// ---------------------------------------------------------------------------
// A node frozen past the takeover (issue 15)
// ---------------------------------------------------------------------------

/// A node frozen (SIGSTOP) while it streams an upload, for longer than a
/// taker waits for it (the lease that matters: `TAKEOVER_WAIT`, 5 s);
/// another node takes the upload over and finishes it; then the frozen
/// node is resumed (SIGCONT) and its client sends it *different* bytes for
/// the rest of the upload. Nothing it does late may change the finished
/// file: its commits name a fence that is no longer the upload's
/// (docs/cluster.md, "Leases and fencing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_cannot_change_a_file_another_node_finished() {
    let Some(cluster) = Cluster::start("cluster_frozen", &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let name = "frozen.bin";
        let data = upload_data(&mut rng);
        let size = data.len();
        // What the frozen node's client sends after SIGCONT: other bytes.
        let late = random_bytes(&mut rng, size);
        let url = tus_create(&http, &cluster.nodes[1].url("/uploads"), name, size).await;
        let upload_path = path_of(&url);
        let frozen = &cluster.nodes[0];
        let mut stream = support::http::connect(frozen.addr()).await;
        let head = format!(
            "PATCH {upload_path} HTTP/1.1\r\nhost: {}\r\ntus-resumable: 1.0.0\r\n\
             upload-offset: 0\r\ncontent-type: application/offset+octet-stream\r\n\
             content-length: {size}\r\n\r\n",
            frozen.addr()
        );
        // Past the 8 MiB part: the node has a part on its way or committed.
        let before = (9 * MIB) as usize;
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&data[..before]).await.expect("body");
        tokio::time::sleep(Duration::from_millis(500)).await;
        frozen.signal("STOP");
        let frozen_at = std::time::Instant::now();
        // Another node takes over (waiting for the frozen one at most
        // TAKEOVER_WAIT) and finishes with the right bytes.
        let resumed_at = tus_finish(&http, &cluster.nodes[1].url(&upload_path), &data).await;
        eprintln!(
            "frozen node: the other node resumed at {resumed_at} and finished {:.1?} after the freeze",
            frozen_at.elapsed()
        );
        assert_finished_everywhere_but(&cluster, &http, &upload_path, name, &data, 0).await;
        // Keep it frozen past the takeover wait in any case.
        let frozen_for = Duration::from_secs(6);
        if let Some(left) = frozen_for.checked_sub(frozen_at.elapsed()) {
            tokio::time::sleep(left).await;
        }
        frozen.signal("CONT");
        // Its client goes on with other bytes; whatever the node answers
        // must not be a success.
        let rest = late[before..].to_vec();
        let writer = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.write_all(&rest)).await;
            let mut buffer = Vec::new();
            support::http::read_response_within(&mut stream, &mut buffer, Duration::from_secs(30), false)
                .await
        });
        let answer = writer.await.expect("late writer");
        eprintln!(
            "frozen node's late answer: {}",
            answer.as_ref().map_or("none (closed)".to_owned(), Resp::describe)
        );
        if let Some(answer) = &answer {
            assert!(
                !(200..300).contains(&answer.status),
                "the frozen node acknowledged its late bytes: {}",
                answer.describe()
            );
        }
        // Give late writes time to land, then every node must still show
        // the finished file.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_finished_everywhere_but(&cluster, &http, &upload_path, name, &data, usize::MAX).await;
    })
    .await;
}

/// Every node but `skip` (frozen) reports the tus upload complete at its
/// size, and shows `data` as the published file.
async fn assert_finished_everywhere_but(
    cluster: &Cluster,
    http: &Client,
    url_path: &str,
    name: &str,
    data: &[u8],
    skip: usize,
) {
    for (index, node) in cluster.nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
        let head = tus_offset(http, &node.url(url_path)).await;
        assert_eq!(head.status, 200, "node {index}: {}", head.describe());
        assert_eq!(
            head.number("upload-offset") as usize,
            data.len(),
            "node {index}"
        );
        let file = send(http.get(node.url(&format!("/files/{name}")))).await;
        assert_eq!(file.status, 200, "node {index}: {}", file.describe());
        assert_eq!(sha256_hex(&file.body), sha256_hex(data), "node {index}");
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL stopped and restarted mid-upload (issue 15)
// ---------------------------------------------------------------------------

/// PostgreSQL (a server of this test's own: the shared one must stay up
/// for the other tests) stopped in the middle of a tus upload and started
/// again: while it is down every request answers 503 with `Retry-After`
/// (docs/cluster.md, "Failure modes"), nothing acknowledged is lost, and the
/// upload then finishes byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_pause_with_503_while_postgresql_is_down_then_finish() {
    let Some(data_url) = tenax_testkit::s3_url("cluster_pg_restart") else {
        return;
    };
    let Some(pg) = tokio::task::spawn_blocking(|| {
        tenax_testkit::DedicatedPg::start("uploads_pause_with_503_while_postgresql_is_down")
    })
    .await
    .expect("start PostgreSQL") else {
        return;
    };
    let pg = std::sync::Arc::new(pg);
    let Some(cluster) = Cluster::start_on(data_url, pg.url(), &[], &[]).await else {
        return;
    };
    bounded(async {
        let mut rng = Rng::from_env_or_os();
        let http = client();
        let name = "pg-restart.bin";
        let data = upload_data(&mut rng);
        let url = tus_create(&http, &cluster.url("/uploads"), name, data.len()).await;
        let upload = cluster.url(&path_of(&url));
        let mut at = 0;
        for _ in 0..2 {
            let resp = tus_patch(&http, &upload, at, &data[at..at + CHUNK]).await;
            assert_eq!(resp.status, 204, "{}", resp.describe());
            at = resp.number("upload-offset") as usize;
        }
        let acknowledged = at;
        let stopping = std::sync::Arc::clone(&pg);
        tokio::task::spawn_blocking(move || stopping.stop(true))
            .await
            .expect("stop PostgreSQL");
        // Down: requests on every node are told to come back later (each
        // waits for the pool's acquire timeout, 10 s, first).
        let down = std::time::Instant::now();
        let node_url = |index: usize| cluster.nodes[index].url(&path_of(&url));
        let answers = [
            (
                "PATCH",
                tus_patch(&http, &node_url(0), at, &data[at..at + CHUNK]).await,
            ),
            ("HEAD", tus_offset(&http, &node_url(1)).await),
            (
                "PATCH",
                tus_patch(&http, &node_url(2), at, &data[at..at + CHUNK]).await,
            ),
        ];
        for (index, (method, resp)) in answers.iter().enumerate() {
            assert_eq!(
                resp.status,
                503,
                "{method} on node {index}, PostgreSQL down: {}",
                resp.describe()
            );
            assert!(
                resp.header("retry-after")
                    .is_some_and(|value| value.parse::<u64>().is_ok()),
                "{method} on node {index}: a 503 without a Retry-After in seconds: {}",
                resp.describe()
            );
        }
        eprintln!(
            "PostgreSQL down: 3 requests answered 503 in {:.1?}",
            down.elapsed()
        );
        let starting = std::sync::Arc::clone(&pg);
        tokio::task::spawn_blocking(move || starting.start_again())
            .await
            .expect("start PostgreSQL again");
        // Back: the upload goes on from what was acknowledged.
        let back = std::time::Instant::now();
        let resumed_at = tus_finish(&http, &upload, &data).await;
        eprintln!(
            "PostgreSQL back: finished from {resumed_at} in {:.1?}",
            back.elapsed()
        );
        assert!(
            resumed_at >= acknowledged,
            "resumed at {resumed_at} after {acknowledged} had been acknowledged"
        );
        assert_downloads(&cluster, &http, name, &data).await;
    })
    .await;
    drop(cluster);
}

// ---------------------------------------------------------------------------
// The object store down and back mid-upload (issue 15)
// ---------------------------------------------------------------------------

/// The S3 server gone in the middle of a tus upload and back: the nodes
/// reach it through a proxy of this test's own, which is dropped (its
/// listener and every connection through it closed: to the nodes, the
/// server was killed) and started again on the same port. moto keeps its
/// objects in memory, so killing moto itself would lose the upload's
/// parts, which a real S3 server keeps across a restart; the proxy models
/// the restart without the loss, and the shared moto stays up for the
/// other tests. While it is down, requests that need it answer 503 with
/// `Retry-After`; nothing acknowledged is lost; the upload then finishes
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_pause_with_503_while_the_object_store_is_down_then_finish() {
    let Some(data_url) = tenax_testkit::s3_url("cluster_s3_restart") else {
        return;
    };
    let Some(database) = tenax_testkit::database_url("cluster_s3_restart") else {
        return;
    };
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL of the test S3 server");
    let upstream: SocketAddr = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL {endpoint:?} is not http://IP:PORT"));
    let rng = Rng::from_env_or_os();
    let proxy =
        tenax_testkit::FaultProxy::start_with(upstream, tenax_testkit::Cut::default(), rng.clone())
            .await;
    let listen = proxy.addr();
    let proxied = format!("http://{listen}");
    let Some(cluster) =
        Cluster::start_on(data_url, database, &[], &[("AWS_ENDPOINT_URL", &proxied)]).await
    else {
        return;
    };
    bounded(async {
        let mut rng = rng.clone();
        let http = client();
        let name = "s3-restart.bin";
        let data = upload_data(&mut rng);
        let url = tus_create(&http, &cluster.url("/uploads"), name, data.len()).await;
        let upload = cluster.url(&path_of(&url));
        let mut at = 0;
        // Past the first 8 MiB part.
        for _ in 0..5 {
            let resp = tus_patch(&http, &upload, at, &data[at..at + CHUNK]).await;
            assert_eq!(resp.status, 204, "{}", resp.describe());
            at = resp.number("upload-offset") as usize;
        }
        let acknowledged = at;
        drop(proxy);
        let down = std::time::Instant::now();
        let node_url = |index: usize| cluster.nodes[index].url(&path_of(&url));
        let answers = [
            tus_patch(&http, &node_url(0), at, &data[at..at + CHUNK]).await,
            tus_patch(&http, &node_url(1), at, &data[at..at + CHUNK]).await,
        ];
        eprintln!(
            "object store down: 2 appends answered in {:.1?}",
            down.elapsed()
        );
        for (index, resp) in answers.iter().enumerate() {
            assert_eq!(
                resp.status,
                503,
                "append on node {index}, object store down: {}",
                resp.describe()
            );
            assert!(
                resp.header("retry-after")
                    .is_some_and(|value| value.parse::<u64>().is_ok()),
                "node {index}: a 503 without a Retry-After in seconds: {}",
                resp.describe()
            );
        }
        let proxy = tenax_testkit::FaultProxy::start_at(
            listen,
            upstream,
            tenax_testkit::Cut::default(),
            rng.clone(),
        )
        .await;
        let back = std::time::Instant::now();
        let resumed_at = tus_finish(&http, &upload, &data).await;
        eprintln!(
            "object store back: finished from {resumed_at} in {:.1?}",
            back.elapsed()
        );
        assert!(
            resumed_at >= acknowledged,
            "resumed at {resumed_at} after {acknowledged} had been acknowledged"
        );
        assert_downloads(&cluster, &http, name, &data).await;
        drop(proxy);
    })
    .await;
}
