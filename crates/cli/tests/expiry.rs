//! Expiry against the real `tenax serve` binary: with a 2 s time to live and
//! a collector every 500 ms, idle uploads (seed and tus) expire — seed
//! status query 404, tus HEAD 410 (the record is still tracked), data
//! removed — while an upload receiving a chunk every 500 ms lives on, and
//! `tenax_uploads_expired_total` counts the expired ones. Every loop is
//! bounded in count and time.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use support::BIN;
use support::http::client;
use tenax_testkit::TestServer;

const TTL_ARGS: [&str; 4] = ["--upload-ttl", "2s", "--expiry-interval", "500ms"];

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = client().request(method, url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let _ = response.bytes().await;
    Answer { status, headers }
}

fn location(answer: &Answer, server: &TestServer) -> String {
    let location = answer
        .headers
        .get("location")
        .and_then(|value| value.to_str().ok())
        .expect("Location")
        .to_owned();
    if location.starts_with("http") {
        location
    } else {
        server.url(&location)
    }
}

fn upload_id(url: &str) -> String {
    url.rsplit('/').next().expect("id").to_owned()
}

/// A seed session of `total` bytes; returns its URL.
async fn seed_session(server: &TestServer, name: &str, total: u64) -> String {
    let answer = send(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("content-type", "application/json"),
            ("x-upload-content-length", &total.to_string()),
        ],
        serde_json::json!({ "name": name }).to_string().into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "seed initiation");
    location(&answer, server)
}

/// Sends `len` bytes at `offset` of a seed session of `total` bytes.
async fn seed_chunk(url: &str, offset: u64, len: u64, total: u64) -> Answer {
    let range = format!("bytes {offset}-{}/{total}", offset + len - 1);
    send(
        Method::PUT,
        url,
        &[("content-range", &range)],
        vec![b'x'; len as usize],
    )
    .await
}

async fn seed_query(url: &str) -> u16 {
    send(
        Method::PUT,
        url,
        &[("content-range", "bytes */*")],
        Vec::new(),
    )
    .await
    .status
}

async fn tus_head(url: &str) -> u16 {
    send(Method::HEAD, url, &[("tus-resumable", "1.0.0")], Vec::new())
        .await
        .status
}

async fn expired_total(server: &TestServer) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|line| line.starts_with("tenax_uploads_expired_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn idle_uploads_expire_and_busy_ones_do_not() {
    let server = TestServer::start_with(BIN, &TTL_ARGS);
    let uploads = server.data_dir().join("uploads");

    // An idle seed session holding some bytes.
    let seed = seed_session(&server, "idle-seed.bin", 1000).await;
    assert_eq!(seed_chunk(&seed, 0, 256, 1000).await.status, 308);
    // An idle tus upload holding some bytes.
    let created = send(
        Method::POST,
        &server.url("/uploads"),
        &[("tus-resumable", "1.0.0"), ("upload-length", "1000")],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "tus creation");
    let tus = location(&created, &server);
    let patched = send(
        Method::PATCH,
        &tus,
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        vec![b'y'; 100],
    )
    .await;
    assert_eq!(patched.status, 204, "tus PATCH");
    assert!(patched.headers.get("upload-expires").is_some());
    let seed_data = uploads.join(format!("{}.bin", upload_id(&seed)));
    let tus_data = uploads.join(format!("{}.bin", upload_id(&tus)));
    assert!(seed_data.exists() && tus_data.exists());

    // A busy seed session: a chunk every 500 ms for 6 s, twice the TTL
    // and more, each one accepted in full.
    let busy_total = 13 * 100;
    let busy = seed_session(&server, "busy.bin", busy_total).await;
    for round in 0..12u64 {
        let answer = seed_chunk(&busy, round * 100, 100, busy_total).await;
        assert_eq!(answer.status, 308, "busy chunk {round}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // It is alive: its last chunk completes it.
    let last = seed_chunk(&busy, 1200, 100, busy_total).await;
    assert_eq!(last.status, 200, "busy upload's last chunk");

    // The idle ones expired (the collector runs every 500 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..100 {
        if (seed_query(&seed).await, tus_head(&tus).await) == (404, 410)
            && !seed_data.exists()
            && !tus_data.exists()
        {
            break;
        }
        assert!(Instant::now() < deadline, "idle uploads did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seed_query(&seed).await,
        404,
        "seed status of an expired session"
    );
    assert_eq!(tus_head(&tus).await, 410, "tus HEAD of an expired upload");
    assert!(!seed_data.exists(), "expired seed data left behind");
    assert!(!tus_data.exists(), "expired tus data left behind");
    // A tus PATCH is refused the same way.
    let refused = send(
        Method::PATCH,
        &tus,
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", "100"),
            ("content-type", "application/offset+octet-stream"),
        ],
        vec![b'y'; 10],
    )
    .await;
    assert_eq!(refused.status, 410, "tus PATCH of an expired upload");
    // The completed upload is untouched.
    let file = server.data_dir().join("files/busy.bin");
    assert_eq!(
        std::fs::metadata(&file).expect("published").len(),
        busy_total
    );

    // Exactly the two idle uploads were counted.
    assert_eq!(expired_total(&server).await, 2.0);
}
