//! The server's edge against the real binary over loopback: TLS with
//! HTTP/2 and HTTP/1.1 (certificate made by the test), h2c only on request,
//! `Forwarded` / `X-Forwarded-*` honoured only in behind-proxy mode, the
//! head-size and control-body limits, the minimum transfer rate and the
//! connection cap.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, Version};
use support::http::{IO_TIMEOUT, Resp, assert_problem, connect, paced_request, raw_exchange};
use support::{BIN, random_bytes};
use tenax_testkit::{Rng, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as
/// PEM files into `dir`; returns the certificate's PEM.
fn self_signed(dir: &Path) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("cannot make a certificate");
    let cert = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
        .expect("write key.pem");
    cert
}

/// A TLS server with a fresh certificate; returns it with the
/// certificate's PEM (the temporary directory must outlive the start).
fn tls_server(extra: &[&str]) -> (TestServer, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cert = self_signed(dir.path());
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let mut args = vec![
        "--tls-cert",
        cert_path.to_str().expect("UTF-8 path"),
        "--tls-key",
        key_path.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    (TestServer::start_with(BIN, &args), cert)
}

/// A client that trusts only `cert`, without redirects.
fn tls_client(cert: &str, h1_only: bool) -> Client {
    let root = reqwest::Certificate::from_pem(cert.as_bytes()).expect("PEM certificate");
    let builder = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(IO_TIMEOUT)
        .tls_certs_only([root]);
    let builder = if h1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().expect("cannot build the HTTPS client")
}

/// Sends a request; returns the whole response and its HTTP version.
async fn send(request: reqwest::RequestBuilder) -> (Resp, Version) {
    let response = request.send().await.expect("request failed");
    let version = response.version();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("response body").to_vec();
    (
        Resp {
            status,
            headers,
            body,
        },
        version,
    )
}

/// Creates a tus upload of `len` bytes named `name`; returns the answer.
async fn tus_create(
    client: &Client,
    server: &TestServer,
    name: &str,
    len: usize,
) -> (Resp, Version) {
    let metadata = format!(
        "filename {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, name)
    );
    send(
        client
            .post(server.url("/uploads"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", metadata),
    )
    .await
}

/// A tus upload of `data` through `client` (create, one PATCH), then a
/// download of it compared byte for byte; every exchange on `version`.
async fn tus_round_trip(
    client: &Client,
    server: &TestServer,
    name: &str,
    data: &[u8],
    version: Version,
) {
    let (created, got) = tus_create(client, server, name, data.len()).await;
    assert_eq!(created.status, 201, "{}", created.describe());
    assert_eq!(got, version, "creation");
    let location = created.header("location").expect("Location").to_owned();
    assert!(
        location.starts_with(&server.url("/uploads/")),
        "Location {location:?} is not an upload URL of {}",
        server.url("")
    );
    let (patched, got) = send(
        client
            .patch(&location)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(data.to_vec()),
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.describe());
    assert_eq!(got, version, "append");
    assert_eq!(patched.number("upload-offset"), data.len() as u64);
    let (file, got) = send(client.get(server.url(&format!("/files/{name}")))).await;
    assert_eq!(file.status, 200, "{}", file.describe());
    assert_eq!(got, version, "download");
    assert!(
        file.body == data,
        "the downloaded file differs from the upload"
    );
}

/// A tus creation with `headers`; returns its `Location`.
async fn tus_location(server: &TestServer, headers: &[(&str, &str)]) -> String {
    let mut request = support::http::client()
        .post(server.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "3");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = support::http::send(request).await;
    assert_eq!(resp.status, 201, "{}", resp.describe());
    resp.header("location").expect("Location").to_owned()
}

// ---------------------------------------------------------------------------
// TLS, HTTP/2, h2c
// ---------------------------------------------------------------------------

/// Over TLS, a client offering h2 gets HTTP/2 (ALPN), one that offers only
/// http/1.1 gets HTTP/1.1; both upload and download the same bytes, and
/// `Location` says `https`.
#[tokio::test]
async fn tls_round_trips_over_h2_and_h1() {
    let (server, cert) = tls_server(&[]);
    assert!(server.url("").starts_with("https://"), "{}", server.url(""));
    let mut rng = Rng::new(501);
    let data = random_bytes(&mut rng, 300_000);
    tus_round_trip(
        &tls_client(&cert, false),
        &server,
        "h2.bin",
        &data,
        Version::HTTP_2,
    )
    .await;
    let data = random_bytes(&mut rng, 200_000);
    tus_round_trip(
        &tls_client(&cert, true),
        &server,
        "h1.bin",
        &data,
        Version::HTTP_11,
    )
    .await;
    // The head-size limit holds on HTTP/2 too (the header list): 431.
    let (big, version) = send(
        tls_client(&cert, false)
            .get(server.url("/healthz"))
            .header("x-filler", "a".repeat(100_000)),
    )
    .await;
    assert_eq!((big.status, version), (431, Version::HTTP_2));
    // A client that does not trust the certificate gets no answer at all.
    let untrusting = Client::builder()
        .timeout(IO_TIMEOUT)
        .tls_certs_only([])
        .build()
        .expect("client");
    assert!(untrusting.get(server.url("/healthz")).send().await.is_err());
}

/// The IETF draft's 104 interim answer still goes out over HTTP/1.1 on
/// TLS (the interim machinery sits above the TLS stream), with an https
/// `Location`, before the final answer.
#[tokio::test]
async fn tls_h1_sends_104_interim() {
    let (server, cert) = tls_server(&[]);
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
        .expect("certificate DER");
    roots.add(der).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = connect(server.addr()).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let body = random_bytes(&mut Rng::new(502), 20_000);
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\
         Upload-Draft-Interop-Version: 9\r\nUpload-Complete: ?1\r\n\
         Content-Disposition: attachment; filename=\"tls104.bin\"\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr().port(),
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("head");
    tls.write_all(&body).await.expect("body");
    let mut answer = Vec::new();
    // A peer that closes without close_notify is fine: what was read counts.
    let _ = tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&answer);
    let interim = text
        .find("HTTP/1.1 104 ")
        .unwrap_or_else(|| panic!("no 104 over TLS: {text:?}"));
    let last = text
        .find("HTTP/1.1 201 ")
        .unwrap_or_else(|| panic!("no 201: {text:?}"));
    assert!(interim < last, "{text:?}");
    let location = format!(
        "location: https://localhost:{}/uploads/",
        server.addr().port()
    );
    assert!(
        text[interim..last].to_ascii_lowercase().contains(&location),
        "104 without an https Location: {text:?}"
    );
}

/// Plain-text connections are HTTP/1.1 only unless `--h2c`: HTTP/2 with
/// prior knowledge fails by default and works with the flag; HTTP/1.1
/// keeps working with it.
#[tokio::test]
async fn h2c_only_when_asked() {
    let prior_knowledge = || {
        Client::builder()
            .http2_prior_knowledge()
            .timeout(IO_TIMEOUT)
            .build()
            .expect("client")
    };
    let server = TestServer::start(BIN);
    let refused = prior_knowledge().get(server.url("/healthz")).send().await;
    assert!(refused.is_err(), "h2c answered without --h2c: {refused:?}");
    let (resp, version) = send(support::http::client().get(server.url("/healthz"))).await;
    assert_eq!((resp.status, version), (200, Version::HTTP_11));

    let server = TestServer::start_with(BIN, &["--h2c"]);
    let data = random_bytes(&mut Rng::new(503), 100_000);
    tus_round_trip(
        &prior_knowledge(),
        &server,
        "h2c.bin",
        &data,
        Version::HTTP_2,
    )
    .await;
    let (resp, version) = send(support::http::client().get(server.url("/healthz"))).await;
    assert_eq!((resp.status, version), (200, Version::HTTP_11));
}

// ---------------------------------------------------------------------------
// Behind a proxy
// ---------------------------------------------------------------------------

const FORGED: [(&str, &str); 4] = [
    ("Forwarded", "for=192.0.2.1;proto=https;host=evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Prefix", "/evil"),
];

/// Without `--behind-proxy` the forwarding headers change nothing: a
/// client cannot send uploads elsewhere.
#[tokio::test]
async fn forwarding_headers_ignored_by_default() {
    let server = TestServer::start(BIN);
    let location = tus_location(&server, &FORGED).await;
    assert!(
        location.starts_with(&server.url("/uploads/")),
        "a client redirected the upload: {location}"
    );
    // Nor with --behind-proxy when the peer is not a trusted proxy.
    let server = TestServer::start_with(
        BIN,
        &["--behind-proxy", "--trusted-proxies", "192.0.2.0/24"],
    );
    let location = tus_location(&server, &FORGED).await;
    assert!(location.starts_with(&server.url("/uploads/")), "{location}");
}

/// With `--behind-proxy`, every dialect's `Location` takes the scheme,
/// host and prefix from `Forwarded` (its last element) or
/// `X-Forwarded-*`; a tus final concatenation accepts the prefixed URLs;
/// a malformed header is a 400 problem.
#[tokio::test]
async fn forwarding_headers_honoured_behind_a_proxy() {
    let server = TestServer::start_with(
        BIN,
        &["--behind-proxy", "--trusted-proxies", "127.0.0.0/8,::1"],
    );
    let forwarded = [
        (
            "Forwarded",
            "for=192.0.2.1;host=evil.example, for=10.1.2.3;proto=https;host=files.example",
        ),
        ("X-Forwarded-Prefix", "/tenax/"),
    ];
    let tus = tus_location(&server, &forwarded).await;
    let base = "https://files.example/tenax/uploads/";
    assert!(tus.starts_with(base), "tus Location {tus}");

    let seed = support::http::request(
        Method::POST,
        &server.url("/api/upload?file=proxied.bin"),
        &forwarded,
        Vec::new(),
    )
    .await;
    assert_eq!(seed.status, 200, "{}", seed.describe());
    assert!(
        seed.header("location").is_some_and(|l| l.starts_with(base)),
        "{}",
        seed.describe()
    );

    let rufh = support::http::request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("Upload-Draft-Interop-Version", "9"),
            ("Upload-Complete", "?0"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "proxy.example:8443"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(rufh.status, 201, "{}", rufh.describe());
    assert!(
        rufh.header("location")
            .is_some_and(|l| l.starts_with("https://proxy.example:8443/uploads/")),
        "{}",
        rufh.describe()
    );

    // tus concatenation: the parts named by the URLs handed out.
    let mut parts = Vec::new();
    for piece in ["abc", "def"] {
        let url = tus_location(
            &server,
            &[forwarded[0], forwarded[1], ("Upload-Concat", "partial")],
        )
        .await;
        let path = url
            .strip_prefix("https://files.example/tenax")
            .expect("prefixed");
        let resp = support::http::request(
            Method::PATCH,
            &server.url(path),
            &[
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Offset", "0"),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            piece.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(resp.status, 204, "{}", resp.describe());
        parts.push(url);
    }
    let concat = format!("final;{} {}", parts[0], parts[1]);
    let metadata = "filename Y29uY2F0LmJpbg==";
    let resp = support::http::request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Concat", &concat),
            ("Upload-Metadata", metadata),
            forwarded[0],
            forwarded[1],
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.describe());
    assert_eq!(
        support::http::download(&server, "concat.bin").await,
        b"abcdef"
    );

    let bad = support::http::request(
        Method::POST,
        &server.url("/uploads"),
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Length", "3"),
            ("Forwarded", "host=\"unterminated"),
        ],
        Vec::new(),
    )
    .await;
    assert_problem(&bad, 400);
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// A request head over `--max-header-size` gets 431; one under it is
/// served.
#[tokio::test]
async fn large_head_gets_431() {
    let server = TestServer::start_with(BIN, &["--max-header-size", "8KiB"]);
    let request = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(filler)
        )
    };
    let small = raw_exchange(server.addr(), request(6 * 1024).as_bytes())
        .await
        .expect("an answer");
    assert_eq!(small.status, 200, "{}", small.describe());
    let large = raw_exchange(server.addr(), request(16 * 1024).as_bytes())
        .await
        .expect("an answer");
    assert_eq!(large.status, 431, "{}", large.describe());
}

/// A control body (the seed dialect's JSON metadata) over 64 KiB gets a
/// 413 problem, announced by `Content-Length` or streamed without one.
#[tokio::test]
async fn large_control_body_gets_413() {
    let server = TestServer::start(BIN);
    let url = server.url("/api/upload?file=meta.bin");
    let small = support::http::request(
        Method::POST,
        &url,
        &[("Content-Type", "application/json")],
        br#"{"name": "meta.bin"}"#.to_vec(),
    )
    .await;
    assert_eq!(small.status, 200, "{}", small.describe());
    let big = format!(r#"{{"name": "meta.bin", "pad": "{}"}}"#, "x".repeat(70_000));
    let resp = support::http::request(
        Method::POST,
        &url,
        &[("Content-Type", "application/json")],
        big.clone().into_bytes(),
    )
    .await;
    assert_problem(&resp, 413);
    // Chunked: no length to judge by, the cap applies while reading.
    let mut raw = format!(
        "POST /api/upload?file=meta.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    raw.extend_from_slice(big.as_bytes());
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = raw_exchange(server.addr(), &raw).await.expect("an answer");
    assert_problem(&resp, 413);
}

/// With a minimum rate of 200 bytes/s over 1 s windows: a body dripping
/// 50 bytes/s is cut within a few windows and keeps what it delivered; one
/// steady at 500 bytes/s runs to its end.
#[tokio::test]
async fn slow_drip_cut_steady_kept() {
    let server = TestServer::start_with(
        BIN,
        &[
            "--min-transfer-rate",
            "200",
            "--min-transfer-rate-window",
            "1s",
        ],
    );
    let len = 1_200;
    let client = support::http::client();
    let mut uploads = Vec::new();
    for name in ["drip.bin", "steady.bin"] {
        let (created, _) = tus_create(&client, &server, name, len).await;
        assert_eq!(created.status, 201, "{}", created.describe());
        let location = created.header("location").expect("Location").to_owned();
        uploads.push(support::http::path_of(&location));
    }
    let head = |path: &str| {
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let body = random_bytes(&mut Rng::new(504), len);
    let started = Instant::now();
    let drip = tokio::spawn(paced_request(
        server.addr(),
        head(&uploads[0]),
        body.clone(),
        10,
        Duration::from_millis(200),
        IO_TIMEOUT,
    ));
    let steady = tokio::spawn(paced_request(
        server.addr(),
        head(&uploads[1]),
        body.clone(),
        100,
        Duration::from_millis(200),
        IO_TIMEOUT,
    ));
    let (drip_sent, drip_resp) = drip.await.expect("drip task");
    let cut_after = started.elapsed();
    let (steady_sent, steady_resp) = steady.await.expect("steady task");

    assert!(
        drip_sent < len,
        "the slow body was not cut ({drip_sent} bytes sent)"
    );
    assert!(
        cut_after < Duration::from_secs(6),
        "cut only after {cut_after:?}"
    );
    let drip_resp = drip_resp.expect("an answer to the cut body");
    assert_eq!(drip_resp.status, 204, "{}", drip_resp.describe());
    let kept = drip_resp.number("upload-offset");
    assert!(
        kept > 0 && kept <= drip_sent as u64,
        "kept {kept} of {drip_sent}"
    );
    let status = support::http::request(
        Method::HEAD,
        &server.url(&uploads[0]),
        &[("Tus-Resumable", "1.0.0")],
        Vec::new(),
    )
    .await;
    assert_eq!(
        status.number("upload-offset"),
        kept,
        "{}",
        status.describe()
    );

    assert_eq!(steady_sent, len);
    let steady_resp = steady_resp.expect("an answer to the steady body");
    assert_eq!(steady_resp.status, 204, "{}", steady_resp.describe());
    assert_eq!(steady_resp.number("upload-offset"), len as u64);
    assert_eq!(support::http::download(&server, "steady.bin").await, body);
}

/// With `--max-connections 2`, a third connection is not served while two
/// are open (it waits unaccepted), and is served as soon as one closes.
#[tokio::test]
async fn connection_cap_makes_the_next_wait() {
    let server = TestServer::start_with(BIN, &["--max-connections", "2"]);
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(server.addr()).await;
        stream.write_all(request).await.expect("write");
        let mut buffer = Vec::new();
        let resp = support::http::read_response(&mut stream, &mut buffer)
            .await
            .expect("an answer within the cap");
        assert_eq!(resp.status, 200);
        open.push(stream);
    }
    let mut third = connect(server.addr()).await;
    third.write_all(request).await.expect("write");
    let mut buffer = Vec::new();
    let early = support::http::read_response_within(
        &mut third,
        &mut buffer,
        Duration::from_millis(1500),
        false,
    )
    .await;
    assert!(early.is_none(), "served beyond the cap: {early:?}");
    drop(open.remove(0));
    let started = Instant::now();
    let resp = support::http::read_response(&mut third, &mut buffer)
        .await
        .expect("served once a slot freed");
    assert_eq!(resp.status, 200, "{}", resp.describe());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_cli_trusts_a_private_certificate_authority_when_told() {
    let (server, cert) = tls_server(&[]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).expect("write the certificate");
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 3 << 20);
    let source = dir.path().join("tls.bin");
    std::fs::write(&source, &data).expect("write the source");
    let run = |args: &[&str]| {
        let child = std::process::Command::new(BIN)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tenax");
        support::process::wait_output(child, IO_TIMEOUT)
    };
    let (source, ca) = (source.to_str().expect("UTF-8"), ca.to_str().expect("UTF-8"));
    let base = server.url("");
    assert!(base.starts_with("https://"), "{base}");
    // Without the authority the certificate is refused; with it, both ways work.
    let out = run(&[
        "upload",
        source,
        &base,
        "--no-journal",
        "--max-retries",
        "1",
    ]);
    assert!(
        !out.status.success(),
        "a self-signed certificate was trusted"
    );
    for protocol in ["seed", "tus"] {
        let out = run(&[
            "upload",
            source,
            &base,
            "--no-journal",
            "--protocol",
            protocol,
            "--cacert",
            ca,
        ]);
        assert!(
            out.status.success(),
            "{protocol}: {}",
            support::process::text(&out.stderr)
        );
    }
    let target = dir.path().join("back.bin");
    let out = run(&[
        "download",
        &server.url("/files/tls.bin"),
        "-o",
        target.to_str().expect("UTF-8"),
        "--cacert",
        ca,
    ]);
    assert!(
        out.status.success(),
        "{}",
        support::process::text(&out.stderr)
    );
    assert_eq!(std::fs::read(&target).expect("downloaded"), data);
}
