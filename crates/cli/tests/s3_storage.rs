//! `tenax serve --data s3://...` against the S3 server that `scripts/test`
//! starts (moto): a tus and a seed upload, each cut by a SIGKILL of the
//! server and finished after its restart, then downloaded with `Range`.
//! Skipped, loudly, only outside `scripts/test` when no S3 server is set.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Client;
use support::http::{Resp, client, in_progress_uploads, send, tus_request as tus};
use support::{BIN, MIB, random_bytes};
use tenax_testkit::{Rng, TestServer};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn get_range(client: &Client, url: &str, first: usize, last: usize) -> Resp {
    send(
        client
            .get(url)
            .header("range", format!("bytes={first}-{last}")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_and_seed_on_s3_survive_a_kill9() {
    let Some(data_url) = tenax_testkit::s3_url("e2e") else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, run(data_url))
        .await
        .expect("the test timed out");
}

async fn run(data_url: String) {
    let mut rng = Rng::from_env_or_os();
    let server = tokio::task::spawn_blocking(move || TestServer::start_at(BIN, &data_url, &[]))
        .await
        .expect("start");
    // Past one 8 MiB part, with a tail on either side of the kill.
    let size = (12 * MIB + 12_345) as usize;
    let first = (9 * MIB) as usize;
    let tus_data = random_bytes(&mut rng, size);
    let seed_data = random_bytes(&mut rng, size);
    let http = client();

    // tus: create, append the first 9 MiB.
    let meta = format!("filename {}", BASE64.encode("tus.bin"));
    let created = tus(
        &http,
        reqwest::Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-length", &size.to_string()),
            ("upload-metadata", &meta),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let tus_url = created.header("location").expect("Location").to_owned();
    let patched = tus(
        &http,
        reqwest::Method::PATCH,
        &tus_url,
        &[
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        tus_data[..first].to_vec(),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.describe());
    assert_eq!(patched.number("upload-offset"), first as u64);

    // In progress: the parts cannot be read back (typed 409), the tail can.
    let early = get_range(&http, &tus_url, 0, 99).await;
    assert_eq!(early.status, 409, "{}", early.describe());
    assert_eq!(
        early.json()["type"],
        "urn:tenax:problem:not-readable-in-progress",
        "{}",
        early.describe()
    );
    let tail = get_range(&http, &tus_url, first - 10, first - 1).await;
    assert_eq!(tail.status, 206, "{}", tail.describe());
    assert_eq!(tail.body, &tus_data[first - 10..first]);

    // seed: initiate, put the first 9 MiB.
    let initiated = send(
        http.post(server.url("/uploads"))
            .header("content-type", "application/json; charset=UTF-8")
            .header("x-upload-content-length", size.to_string())
            .body(serde_json::json!({ "name": "seed.bin" }).to_string()),
    )
    .await;
    assert_eq!(initiated.status, 200, "{}", initiated.describe());
    let seed_url = initiated.header("location").expect("Location").to_owned();
    let put = send(
        http.put(&seed_url)
            .header("content-range", format!("bytes 0-{}/{size}", first - 1))
            .body(seed_data[..first].to_vec()),
    )
    .await;
    assert_eq!(put.status, 308, "{}", put.describe());

    // kill -9, restart on the same bucket and port.
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.kill9();
        server.restart();
        server
    })
    .await
    .expect("restart");
    let http = client();

    // tus: the offset survived; finish.
    let head = tus(&http, reqwest::Method::HEAD, &tus_url, &[], Vec::new()).await;
    assert_eq!(head.status, 200, "{}", head.describe());
    assert_eq!(head.number("upload-offset"), first as u64);
    let patched = tus(
        &http,
        reqwest::Method::PATCH,
        &tus_url,
        &[
            ("upload-offset", &first.to_string()),
            ("content-type", "application/offset+octet-stream"),
        ],
        tus_data[first..].to_vec(),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.describe());
    assert_eq!(patched.number("upload-offset"), size as u64);

    // seed: ask where it stands, finish.
    let status = send(
        http.put(&seed_url)
            .header("content-range", format!("bytes */{size}"))
            .body(Vec::new()),
    )
    .await;
    assert_eq!(status.status, 308, "{}", status.describe());
    assert_eq!(
        status.header("range"),
        Some(&*format!("bytes=0-{}", first - 1))
    );
    let done = send(
        http.put(&seed_url)
            .header(
                "content-range",
                format!("bytes {first}-{}/{size}", size - 1),
            )
            .body(seed_data[first..].to_vec()),
    )
    .await;
    assert!(matches!(done.status, 200 | 201), "{}", done.describe());

    // Downloads with Range, from the object store.
    for (name, data) in [("tus.bin", &tus_data), ("seed.bin", &seed_data)] {
        let url = server.url(&format!("/files/{name}"));
        for (from, to) in [
            (0, 99),
            (first - 5, first + 5),
            (size - 1000, size - 1),
            (123, size - 1),
        ] {
            let resp = get_range(&http, &url, from, to).await;
            assert_eq!(resp.status, 206, "{name} {from}-{to}: {}", resp.describe());
            assert_eq!(resp.body, &data[from..=to], "{name} bytes {from}-{to}");
        }
        let whole = send(http.get(&url)).await;
        assert_eq!(whole.status, 200, "{}", whole.describe());
        assert!(whole.body == **data, "{name} whole");
    }
    // By id too, now that it is complete.
    let by_id = get_range(&http, &tus_url, 0, 99).await;
    assert_eq!(by_id.status, 206, "{}", by_id.describe());
    assert_eq!(by_id.body, &tus_data[..100]);
}

/// An abandoned upload on S3: the expiry collector discards it, which
/// aborts its multipart upload (no parts are left to pay for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_aborts_the_multipart_upload() {
    let Some(data_url) = tenax_testkit::s3_url("expiry") else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, expire(data_url))
        .await
        .expect("the test timed out");
}

async fn expire(data_url: String) {
    let mut rng = Rng::from_env_or_os();
    let url = data_url.clone();
    let server = tokio::task::spawn_blocking(move || {
        TestServer::start_at(
            BIN,
            &url,
            &["--upload-ttl", "2s", "--expiry-interval", "500ms"],
        )
    })
    .await
    .expect("start");
    let http = client();
    let held = (8 * MIB + 100) as usize;
    let created = tus(
        &http,
        reqwest::Method::POST,
        &server.url("/uploads"),
        &[("upload-length", &(2 * held).to_string())],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let tus_url = created.header("location").expect("Location").to_owned();
    let patched = tus(
        &http,
        reqwest::Method::PATCH,
        &tus_url,
        &[
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        random_bytes(&mut rng, held),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.describe());
    let id = tus_url
        .rsplit('/')
        .next()
        .and_then(|id| tenax_core::UploadId::parse(id).ok())
        .expect("an upload id in the URL");
    // What another node would see in the bucket.
    let storage =
        tenax_objstore::ObjectStorage::from_url(&data_url).expect("S3 from the environment");
    let multipart = storage
        .pending_multipart(id)
        .await
        .expect("state")
        .expect("a part was uploaded");
    assert!(
        in_progress_uploads(&http, &data_url)
            .await
            .contains(&multipart)
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let head = tus(&http, reqwest::Method::HEAD, &tus_url, &[], Vec::new()).await;
        if head.status == 410 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload did not expire"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The collector marks it expired, then discards it: the abort, then the
    // state that named the multipart upload (deleted last).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while in_progress_uploads(&http, &data_url)
        .await
        .contains(&multipart)
        || storage
            .pending_multipart(id)
            .await
            .expect("state")
            .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the multipart upload was not aborted and forgotten"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A tus chunk larger than a part whose checksum does not match: the
/// engine cuts the upload back to where the chunk began, which on S3 is
/// inside the parts (sealed, then rebuilt); the right chunk then completes
/// the upload with exactly the bytes sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_across_parts_is_cut_off() {
    let Some(data_url) = tenax_testkit::s3_url("checksum") else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, checksum_mismatch(data_url))
        .await
        .expect("the test timed out");
}

async fn checksum_mismatch(data_url: String) {
    use sha1::Digest as _;
    let mut rng = Rng::from_env_or_os();
    let server = tokio::task::spawn_blocking(move || TestServer::start_at(BIN, &data_url, &[]))
        .await
        .expect("start");
    let http = client();
    let size = (20 * MIB) as usize;
    let first = (3 * MIB) as usize;
    let data = random_bytes(&mut rng, size);
    let meta = format!("filename {}", BASE64.encode("checked.bin"));
    let created = tus(
        &http,
        reqwest::Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-length", &size.to_string()),
            ("upload-metadata", &meta),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let url = created.header("location").expect("Location").to_owned();
    let patch = |from: usize, to: usize, checksum: Option<String>| {
        let (http, url, body) = (http.clone(), url.clone(), data[from..to].to_vec());
        async move {
            let offset = from.to_string();
            let mut headers = vec![
                ("upload-offset", offset.as_str()),
                ("content-type", "application/offset+octet-stream"),
            ];
            let checksum = checksum.map(|sum| format!("sha1 {sum}"));
            if let Some(checksum) = &checksum {
                headers.push(("upload-checksum", checksum));
            }
            tus(&http, reqwest::Method::PATCH, &url, &headers, body).await
        }
    };
    let sha1 = |bytes: &[u8]| BASE64.encode(sha1::Sha1::digest(bytes));
    // 3 MiB: a tail only. Then 12 MiB with a wrong checksum: a part goes
    // up before the mismatch shows.
    assert_eq!(patch(0, first, None).await.status, 204);
    let wrong = patch(first, first + (12 * MIB) as usize, Some(sha1(b"not this"))).await;
    assert_eq!(wrong.status, 460, "{}", wrong.describe());
    let head = tus(&http, reqwest::Method::HEAD, &url, &[], Vec::new()).await;
    assert_eq!(
        head.number("upload-offset"),
        first as u64,
        "{}",
        head.describe()
    );
    let right = patch(first, size, Some(sha1(&data[first..]))).await;
    assert_eq!(right.status, 204, "{}", right.describe());
    assert_eq!(right.number("upload-offset"), size as u64);
    let whole = send(http.get(server.url("/files/checked.bin"))).await;
    assert_eq!(whole.status, 200, "{}", whole.describe());
    assert!(whole.body == data, "the bytes differ");
}
