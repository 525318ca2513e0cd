//! Issue 19, against the real binary: what an attacker probing the server
//! found, one test per finding. Credentials and signed URLs are in
//! `auth.rs`; these need no credentials.

mod support;

use reqwest::Method;
use tenax_testkit::TestServer;

use support::BIN;
use support::http::{Resp, assert_problem, client, path_of, raw_exchange, request, send};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");

/// `base64(text)`, for tus `Upload-Metadata`.
fn b64(text: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text)
}

/// A finished tus upload of `body` with `metadata`; returns its URL.
async fn tus_upload(server: &TestServer, metadata: &str, body: &[u8]) -> String {
    let created = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            TUS,
            ("upload-length", &body.len().to_string()),
            ("upload-metadata", metadata),
        ],
        vec![],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let url = server.url(&path_of(created.header("location").expect("Location")));
    let patched = request(
        Method::PATCH,
        &url,
        &[
            TUS,
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        body.to_vec(),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.describe());
    url
}

/// The headers every response carrying user content must have, so that a
/// browser never runs it as the server's origin.
fn assert_inert(what: &str, resp: &Resp) {
    let disposition = resp.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment"),
        "{what}: served inline: {}",
        resp.describe()
    );
    assert_eq!(
        resp.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {}",
        resp.describe()
    );
    let policy = resp.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.split(';').any(|part| part.trim() == "sandbox"),
        "{what}: no CSP sandbox: {}",
        resp.describe()
    );
}

/// Finding 1: uploaded HTML and SVG, named or not, from tus and seed, are
/// served as attachments with `nosniff` and a sandbox CSP, whole, ranged,
/// finished or in progress, by id and by name.
#[tokio::test]
async fn user_content_is_never_served_as_the_servers_origin() {
    let server = TestServer::start(BIN);
    let script = b"<script>alert(document.domain)</script>";
    let html = tus_upload(&server, &format!("filetype {}", b64("text/html")), script).await;
    let svg = tus_upload(
        &server,
        &format!(
            "filetype {},filename {}",
            b64("image/svg+xml"),
            b64("x.svg")
        ),
        b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    )
    .await;
    // The seed dialect: the media type from X-Upload-Content-Type.
    let initiated = request(
        Method::POST,
        &server.url("/uploads?uploadType=resumable"),
        &[
            ("x-upload-content-type", "text/html"),
            ("x-upload-content-length", &script.len().to_string()),
        ],
        vec![],
    )
    .await;
    assert_eq!(initiated.status, 200, "{}", initiated.describe());
    let seed = server.url(&path_of(initiated.header("location").expect("Location")));
    let put = request(Method::PUT, &seed, &[], script.to_vec()).await;
    assert_eq!(put.status, 200, "{}", put.describe());
    // One in progress, read by range.
    let partial = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            TUS,
            ("upload-length", "100"),
            ("upload-metadata", &format!("filetype {}", b64("text/html"))),
            ("content-type", "application/offset+octet-stream"),
        ],
        script.to_vec(),
    )
    .await;
    assert_eq!(partial.status, 201, "{}", partial.describe());
    let partial = server.url(&path_of(partial.header("location").expect("Location")));

    for (what, url) in [
        ("tus html", html.as_str()),
        ("tus svg", svg.as_str()),
        ("seed html", seed.as_str()),
    ] {
        let whole = send(client().get(url)).await;
        assert_eq!(whole.status, 200, "{what}: {}", whole.describe());
        assert_inert(what, &whole);
        let ranged = send(client().get(url).header("range", "bytes=0-3")).await;
        assert_eq!(ranged.status, 206, "{what}: {}", ranged.describe());
        assert_inert(what, &ranged);
    }
    let by_name = send(client().get(server.url("/files/x.svg"))).await;
    assert_eq!(by_name.status, 200, "{}", by_name.describe());
    assert_inert("svg by name", &by_name);
    let head = send(client().head(server.url("/files/x.svg"))).await;
    assert_eq!(head.status, 200, "{}", head.describe());
    assert_inert("svg by name, HEAD", &head);
    let in_progress = send(client().get(&partial).header("range", "bytes=0-3")).await;
    assert_eq!(in_progress.status, 206, "{}", in_progress.describe());
    assert_inert("in progress", &in_progress);
}

/// Smaller finding: a name that is not UTF-8 is refused (not stored as
/// U+FFFD), and the NFC and NFD spellings of one name are one file.
#[tokio::test]
async fn names_are_utf8_and_normalised() {
    let server = TestServer::start(BIN);
    for query in ["%FF%FE", "a%C3", "%EF%BF%BD"] {
        let resp = request(
            Method::PUT,
            &server.url(&format!("/api/upload?file={query}")),
            &[],
            b"x".to_vec(),
        )
        .await;
        assert_problem(&resp, 400);
    }
    let listed = send(client().get(server.url("/api/files"))).await;
    assert_eq!(listed.status, 200, "{}", listed.describe());
    assert!(
        !String::from_utf8_lossy(&listed.body).contains('\u{FFFD}'),
        "a lossy name was stored: {}",
        listed.describe()
    );

    let nfc = "caf%C3%A9";
    let nfd = "cafe%CC%81";
    for (query, body) in [(nfc, "one"), (nfd, "two")] {
        let resp = request(
            Method::PUT,
            &server.url(&format!("/api/upload?file={query}")),
            &[],
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.describe());
    }
    for query in [nfc, nfd] {
        let got = send(client().get(server.url(&format!("/files/{query}")))).await;
        assert_eq!(got.status, 200, "{}", got.describe());
        assert_eq!(got.body, b"two", "{query}: two spellings, two files");
    }
    let listed = send(client().get(server.url("/api/files"))).await;
    let files = listed.json();
    let names: Vec<&str> = files
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|file| file["name"].as_str())
        .collect();
    assert_eq!(names, ["caf\u{e9}"], "{}", listed.describe());
}

/// Finding 7 (RFC 9112 §3.2): a missing, repeated or invalid `Host` is a
/// 400, and never reaches `Location`; a valid one does.
#[tokio::test]
async fn the_host_header_is_checked() {
    let server = TestServer::start(BIN);
    let create = |hosts: &str| {
        format!(
            "POST /uploads HTTP/1.1\r\n{hosts}Tus-Resumable: 1.0.0\r\nUpload-Length: 3\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    for hosts in [
        "Host: evil.example/x?y#\r\n",
        "Host: a b\r\n",
        "Host: a@b\r\n",
        "Host: x:99999\r\n",
        "Host: a\r\nHost: b\r\n",
        "",
    ] {
        let resp = raw_exchange(server.addr(), create(hosts).as_bytes())
            .await
            .expect("an answer");
        assert_eq!(resp.status, 400, "{hosts:?}: {}", resp.describe());
        assert!(resp.header("location").is_none(), "{}", resp.describe());
    }
    // Any request, not only those that answer with a Location.
    let health = raw_exchange(
        server.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(health.status, 400, "{}", health.describe());
    let port = server.addr().port();
    let good = raw_exchange(
        server.addr(),
        create(&format!("Host: localhost:{port}\r\n")).as_bytes(),
    )
    .await
    .expect("an answer");
    assert_eq!(good.status, 201, "{}", good.describe());
    let location = good.header("location").expect("Location");
    assert!(
        location.starts_with(&format!("http://localhost:{port}/uploads/")),
        "{location}"
    );
}

/// Finding 4: the default namespace (an open server's) has quotas like any
/// other, written `[namespaces.default]`.
#[tokio::test]
async fn the_default_namespace_has_quotas() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = quota_server(
        dir.path(),
        "max_concurrent_uploads = 1\nmax_bytes_in_progress = \"1KiB\"",
    );
    let url = server.url("/uploads");
    let create = async |length: &str| {
        request(
            Method::POST,
            &url,
            &[TUS, ("upload-length", length)],
            vec![],
        )
        .await
    };
    assert_problem(&create("2048").await, 507);
    let first = create("10").await;
    assert_eq!(first.status, 201, "{}", first.describe());
    assert_problem(&create("10").await, 429);
}

/// `[namespaces.default]` with `quota` lines, in a config file under `dir`.
fn quota_server(dir: &std::path::Path, quota: &str) -> TestServer {
    let config = dir.join("tenax.toml");
    std::fs::write(&config, format!("[namespaces.default]\n{quota}\n")).expect("write the config");
    TestServer::start_with(BIN, &["--config", config.to_str().expect("UTF-8")])
}

/// Finding 3: an upload of undeclared length counts the bytes it holds
/// against `max_bytes_in_progress`: tus deferred length, seed `/*` and RUFH
/// without `Upload-Length` each stop at the quota with 507, and the server
/// never holds more than the quota.
#[tokio::test]
async fn quotas_count_the_bytes_of_uploads_without_a_length() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = quota_server(dir.path(), "max_bytes_in_progress = \"1MiB\"");
    let body = vec![7u8; 1536 * 1024];
    let tus = request(
        Method::POST,
        &server.url("/uploads"),
        &[TUS, ("upload-defer-length", "1")],
        vec![],
    )
    .await;
    assert_eq!(tus.status, 201, "{}", tus.describe());
    let tus = server.url(&path_of(tus.header("location").expect("Location")));
    let patched = request(
        Method::PATCH,
        &tus,
        &[
            TUS,
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        body.clone(),
    )
    .await;
    assert_problem(&patched, 507);
    let seed = request(
        Method::PUT,
        &server.url("/api/upload?file=undeclared.bin"),
        &[("content-range", "bytes 0-1572863/*")],
        body.clone(),
    )
    .await;
    assert_problem(&seed, 507);
    let ietf = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("upload-draft-interop-version", "6"),
            ("upload-complete", "?0"),
        ],
        body.clone(),
    )
    .await;
    assert_problem(&ietf, 507);
    let held = support::files::held_on_disk(&server);
    assert!(
        held <= 1 << 20,
        "the server holds {held} bytes over a 1 MiB quota"
    );
}

/// Finding 5: a tus final upload may name a part once, names a bounded
/// number of parts, and counts its size against the quota before it
/// assembles anything.
#[tokio::test]
async fn concatenation_cannot_multiply_writes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = quota_server(dir.path(), "max_bytes_in_progress = \"1MiB\"");
    let mut parts = Vec::new();
    for _ in 0..3 {
        let created = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                TUS,
                ("upload-length", "409600"),
                ("upload-concat", "partial"),
                ("content-type", "application/offset+octet-stream"),
            ],
            vec![1u8; 409_600],
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.describe());
        parts.push(path_of(created.header("location").expect("Location")));
    }
    let final_of = async |urls: &[&str]| {
        request(
            Method::POST,
            &server.url("/uploads"),
            &[TUS, ("upload-concat", &format!("final;{}", urls.join(" ")))],
            vec![],
        )
        .await
    };
    // The same part twice.
    assert_problem(&final_of(&[&parts[0], &parts[0]]).await, 400);
    // Many references.
    let many: Vec<&str> = std::iter::repeat_n(parts[0].as_str(), 1400).collect();
    assert_problem(&final_of(&many).await, 400);
    // 1.2 MiB of parts over a 1 MiB quota: refused before assembly.
    let all: Vec<&str> = parts.iter().map(String::as_str).collect();
    assert_problem(&final_of(&all).await, 507);
    // Two parts fit.
    let two = final_of(&all[..2]).await;
    assert_eq!(two.status, 201, "{}", two.describe());
}

/// Finding 8: two clients `PUT` the same name at once with different bytes.
/// The second overlaps what the first made durable; its overlap is compared
/// with the bytes held and refused with 409, and what is held stays: the
/// file is never a mix of the two.
#[tokio::test]
async fn two_writers_on_one_name_never_mix() {
    let server = TestServer::start(BIN);
    let url = server.url("/api/upload?file=race.bin");
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let first = tokio::spawn(send(
        client()
            .put(&url)
            .header("content-range", "bytes 0-99999/100000")
            .header("content-length", "100000")
            .body(reqwest::Body::wrap_stream(stream)),
    ));
    sender.send(Ok(vec![b'1'; 70_000])).await.expect("send");
    let deadline = std::time::Instant::now() + support::http::IO_TIMEOUT;
    while support::files::held_on_disk(&server) < 70_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first writer wrote nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let second = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 0-99999/100000")],
        vec![b'2'; 100_000],
    )
    .await;
    let json = assert_problem(&second, 409);
    assert_eq!(json["type"], "urn:tenax:problem:overlap-mismatch", "{json}");
    drop(sender);
    let _ = first.await;
    // A chunk the upload holds whole (rule 7) is compared too.
    let inside = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 0-49999/100000")],
        vec![b'2'; 50_000],
    )
    .await;
    assert_problem(&inside, 409);
    // What is held is the first writer's, and it completes.
    let status = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes */100000")],
        vec![],
    )
    .await;
    assert_eq!(status.status, 308, "{}", status.describe());
    let held: usize = status
        .header("range")
        .and_then(|range| range.strip_prefix("bytes=0-"))
        .and_then(|last| last.parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    assert!(held >= 70_000, "{}", status.describe());
    let rest = request(
        Method::PUT,
        &url,
        &[("content-range", "bytes 0-99999/100000")],
        vec![b'1'; 100_000],
    )
    .await;
    assert_eq!(rest.status, 200, "{}", rest.describe());
    let file = send(client().get(server.url("/files/race.bin"))).await;
    assert!(
        file.body.len() == 100_000 && file.body.iter().all(|byte| *byte == b'1'),
        "a mixed file: {} bytes, {} of them '2'",
        file.body.len(),
        file.body.iter().filter(|byte| **byte == b'2').count()
    );
}

/// Smaller finding: an unknown checksum algorithm is the same 400 in a tus
/// header and in a trailer, and the chunk is not kept either way.
#[tokio::test]
async fn an_unknown_checksum_algorithm_is_one_answer() {
    let server = TestServer::start(BIN);
    let created = request(
        Method::POST,
        &server.url("/uploads"),
        &[TUS, ("upload-length", "10")],
        vec![],
    )
    .await;
    let path = path_of(created.header("location").expect("Location"));
    let head = |extra: &str| {
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n\
             Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
             Connection: close\r\n{extra}\r\n"
        )
    };
    let mut in_header =
        head("Upload-Checksum: whirlpool AAAA\r\nContent-Length: 5\r\n").into_bytes();
    in_header.extend_from_slice(b"hello");
    let header_answer = raw_exchange(server.addr(), &in_header)
        .await
        .expect("an answer");
    let mut in_trailer =
        head("Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\n").into_bytes();
    in_trailer.extend_from_slice(&support::http::chunked(
        &[b"hello"],
        "Upload-Checksum: whirlpool AAAA\r\n",
    ));
    let trailer_answer = raw_exchange(server.addr(), &in_trailer)
        .await
        .expect("an answer");
    assert_problem(&header_answer, 400);
    assert_problem(&trailer_answer, 400);
    let offset = request(Method::HEAD, &server.url(&path), &[TUS], vec![]).await;
    assert_eq!(
        offset.header("upload-offset"),
        Some("0"),
        "{}",
        offset.describe()
    );
}
/// Finding 4: metadata (tus `Upload-Metadata`, and the media type) has a
/// cap, said in OPTIONS; over it, creation is a 400 and nothing is created.
#[tokio::test]
async fn metadata_is_capped() {
    let server = TestServer::start(BIN);
    let options = request(Method::OPTIONS, &server.url("/uploads"), &[TUS], vec![]).await;
    let cap: usize = options
        .header("tenax-max-metadata-size")
        .unwrap_or_else(|| panic!("OPTIONS does not say the cap: {}", options.describe()))
        .parse()
        .expect("a number");
    assert!((1024..=64 * 1024).contains(&cap), "{cap}");
    let big = format!("note {}", b64(&"x".repeat(cap)));
    let tus = request(
        Method::POST,
        &server.url("/uploads"),
        &[TUS, ("upload-length", "1"), ("upload-metadata", &big)],
        vec![],
    )
    .await;
    assert_problem(&tus, 400);
    // The media type counts too (a seed client's X-Upload-Content-Type).
    let seed = request(
        Method::POST,
        &server.url("/uploads?uploadType=resumable"),
        &[(
            "x-upload-content-type",
            &format!("text/plain; x={}", "y".repeat(cap)),
        )],
        vec![],
    )
    .await;
    assert_problem(&seed, 400);
    assert_eq!(support::files::held_on_disk(&server), 0);
    let small = format!("note {}", b64("fine"));
    let ok = request(
        Method::POST,
        &server.url("/uploads"),
        &[TUS, ("upload-length", "1"), ("upload-metadata", &small)],
        vec![],
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.describe());
}
/// Finding 1, adapters: a tus or RUFH name that fails validation is refused
/// with 400, not dropped (an unnamed upload).
#[tokio::test]
async fn an_invalid_name_is_refused_not_dropped() {
    let server = TestServer::start(BIN);
    for name in ["../evil.html", ".hidden", "a/b"] {
        let tus = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                TUS,
                ("upload-length", "1"),
                ("upload-metadata", &format!("filename {}", b64(name))),
            ],
            vec![],
        )
        .await;
        assert_problem(&tus, 400);
        let ietf = request(
            Method::POST,
            &server.url("/uploads"),
            &[
                ("upload-draft-interop-version", "6"),
                ("upload-complete", "?1"),
                (
                    "content-disposition",
                    &format!("attachment; filename=\"{name}\""),
                ),
            ],
            b"x".to_vec(),
        )
        .await;
        assert_problem(&ietf, 400);
    }
    let not_utf8 = request(
        Method::POST,
        &server.url("/uploads"),
        &[
            TUS,
            ("upload-length", "1"),
            ("upload-metadata", "filename //4="),
        ],
        vec![],
    )
    .await;
    assert_problem(&not_utf8, 400);
    assert_eq!(support::files::held_on_disk(&server), 0);
}
