//! Credentials, namespaces and quotas (issue 5), against the real binary:
//! every route of every dialect refuses a missing, wrong, tampered or
//! expired credential and hides other namespaces' uploads; signed URLs grant
//! exactly their scope; a revoked token cannot finalise; quotas hold; and
//! no secret reaches the logs.
//!
//! Long on purpose: every credential rule against every route in one test
//! binary, which builds faster than several.

mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use tenax_testkit::{Rng, TestServer};
use tokio::io::AsyncWriteExt as _;

use support::http::{
    IO_TIMEOUT, Resp, assert_problem, connect, path_of, read_response_within, request,
};
use support::process::{text, wait_output};
use support::{BIN, KIB, random_bytes, sha256_hex};

const TOKEN_A: &str = "token-of-team-a-0123456789";
const TOKEN_A2: &str = "second-token-of-team-a-xyz";
const TOKEN_B: &str = "token-of-team-b-9876543210";
const KEY: &str = "a signing key of at least thirty-two bytes";

/// A data directory's neighbours: the tokens file and the signing key.
struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    fn new(tokens: &str) -> Self {
        let secrets = Secrets {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        secrets.write_tokens(tokens);
        std::fs::write(secrets.key(), KEY).expect("write the key");
        secrets
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens.toml")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("signing.key")
    }

    fn write_tokens(&self, tokens: &str) {
        std::fs::write(self.tokens(), tokens).expect("write the tokens file");
    }

    fn start(&self, more: &[&str]) -> TestServer {
        let tokens = self.tokens();
        let key = self.key();
        let mut args = vec![
            "--tokens-file",
            path_str(&tokens),
            "--signing-key-file",
            path_str(&key),
        ];
        args.extend_from_slice(more);
        TestServer::start_with(BIN, &args)
    }

    /// `tenax sign` for `url`.
    fn sign(&self, url: &str, extra: &[&str]) -> String {
        let key = self.key();
        let mut args = vec!["sign", url, "--key-file", path_str(&key)];
        args.extend_from_slice(extra);
        let out = tenax(&args);
        assert!(out.status.success(), "tenax sign: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }
}

/// `tenax ARGS…`, waited for at most `IO_TIMEOUT`.
fn tenax(args: &[&str]) -> std::process::Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tenax");
    wait_output(child, IO_TIMEOUT)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

const TWO_TEAMS: &str = r#"
[[tokens]]
token = "token-of-team-a-0123456789"
namespace = "team-a"
name = "a"

[[tokens]]
token = "second-token-of-team-a-xyz"
namespace = "team-a"
name = "a2"

[[tokens]]
token = "token-of-team-b-9876543210"
namespace = "team-b"
name = "b"
"#;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `method url` with `headers`, plus `Authorization: Bearer token` if any.
async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let auth = token.map(bearer);
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(auth) = &auth {
        all.push(("authorization", auth));
    }
    request(method, url, &all, body).await
}

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const IETF: (&str, &str) = ("upload-draft-interop-version", "6");

/// One upload in progress per dialect, made with team a's token: the
/// upload URLs (tus, ietf, seed) and the seed by-name file.
async fn uploads_of_team_a(server: &TestServer) -> [String; 3] {
    let tus = call(
        Method::POST,
        &server.url("/uploads"),
        Some(TOKEN_A),
        &[TUS, ("upload-length", "100")],
        vec![],
    )
    .await;
    assert_eq!(tus.status, 201, "{}", tus.describe());
    let ietf = call(
        Method::POST,
        &server.url("/uploads"),
        Some(TOKEN_A),
        &[IETF, ("upload-complete", "?0")],
        vec![7; 10],
    )
    .await;
    assert_eq!(ietf.status, 201, "{}", ietf.describe());
    let seed = call(
        Method::POST,
        &server.url("/uploads?uploadType=resumable"),
        Some(TOKEN_A),
        &[("x-upload-content-length", "100")],
        vec![],
    )
    .await;
    assert_eq!(seed.status, 200, "{}", seed.describe());
    let by_name = call(
        Method::PUT,
        &server.url("/api/upload?file=a.bin"),
        Some(TOKEN_A),
        &[("content-range", "bytes 0-9/100")],
        vec![1; 10],
    )
    .await;
    assert_eq!(by_name.status, 308, "{}", by_name.describe());
    let done = call(
        Method::PUT,
        &server.url("/api/upload?file=done.bin"),
        Some(TOKEN_A),
        &[],
        b"finished".to_vec(),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.describe());
    [tus, ietf, seed].map(|resp| {
        server.url(&path_of(
            resp.header("location")
                .expect("creation answers with Location"),
        ))
    })
}

/// A request: label, method, URL, headers, body.
type Route = (
    &'static str,
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
);

/// Every route of every dialect.
fn routes(server: &TestServer, [tus, ietf, seed]: &[String; 3]) -> Vec<Route> {
    let patch_tus = vec![
        TUS,
        ("upload-offset", "0"),
        ("content-type", "application/offset+octet-stream"),
    ];
    vec![
        (
            "tus create",
            Method::POST,
            server.url("/uploads"),
            vec![TUS, ("upload-length", "5")],
            vec![],
        ),
        (
            "tus PATCH",
            Method::PATCH,
            tus.clone(),
            patch_tus,
            vec![1; 5],
        ),
        ("tus HEAD", Method::HEAD, tus.clone(), vec![TUS], vec![]),
        ("tus DELETE", Method::DELETE, tus.clone(), vec![TUS], vec![]),
        (
            "ietf create",
            Method::POST,
            server.url("/uploads"),
            vec![IETF, ("upload-complete", "?1")],
            vec![1; 5],
        ),
        ("ietf HEAD", Method::HEAD, ietf.clone(), vec![IETF], vec![]),
        (
            "ietf PATCH",
            Method::PATCH,
            ietf.clone(),
            vec![
                IETF,
                ("upload-complete", "?0"),
                ("upload-offset", "10"),
                ("content-type", "application/partial-upload"),
            ],
            vec![1; 5],
        ),
        (
            "seed initiate",
            Method::POST,
            server.url("/uploads?uploadType=resumable"),
            vec![],
            vec![],
        ),
        (
            "seed literal",
            Method::PUT,
            server.url("/api/upload?file=a.bin"),
            vec![("content-range", "bytes 10-19/100")],
            vec![1; 10],
        ),
        (
            "seed chunk",
            Method::PUT,
            seed.clone(),
            vec![("content-range", "bytes 0-9/100")],
            vec![1; 10],
        ),
        (
            "seed query",
            Method::PUT,
            seed.clone(),
            vec![("content-range", "bytes */100")],
            vec![],
        ),
        (
            "seed cancel by name",
            Method::DELETE,
            server.url("/api/upload?file=a.bin"),
            vec![],
            vec![],
        ),
        ("GET upload", Method::GET, seed.clone(), vec![], vec![]),
        (
            "GET file",
            Method::GET,
            server.url("/files/done.bin"),
            vec![],
            vec![],
        ),
        (
            "HEAD file",
            Method::HEAD,
            server.url("/files/done.bin"),
            vec![],
            vec![],
        ),
        (
            "list files",
            Method::GET,
            server.url("/api/files"),
            vec![],
            vec![],
        ),
    ]
}

/// The offsets the uploads of team a hold, seen with its token.
async fn offsets(server: &TestServer, [tus, ietf, seed]: &[String; 3]) -> [String; 4] {
    let tus = call(Method::HEAD, tus, Some(TOKEN_A), &[TUS], vec![]).await;
    let ietf = call(Method::HEAD, ietf, Some(TOKEN_A), &[IETF], vec![]).await;
    let seed = call(
        Method::PUT,
        seed,
        Some(TOKEN_A),
        &[("content-range", "bytes */100")],
        vec![],
    )
    .await;
    let by_name = call(
        Method::PUT,
        &server.url("/api/upload?file=a.bin"),
        Some(TOKEN_A),
        &[("content-range", "bytes */100")],
        vec![],
    )
    .await;
    [
        format!("{} {:?}", tus.status, tus.header("upload-offset")),
        format!("{} {:?}", ietf.status, ietf.header("upload-offset")),
        format!("{} {:?}", seed.status, seed.header("range")),
        format!("{} {:?}", by_name.status, by_name.header("range")),
    ]
}

#[tokio::test]
async fn every_route_refuses_a_bad_credential_and_hides_other_namespaces() {
    let secrets = Secrets::new(TWO_TEAMS);
    let server = secrets.start(&[]);
    let uploads = uploads_of_team_a(&server).await;
    let before = offsets(&server, &uploads).await;
    let expired = secrets.sign(
        &server.url("/uploads"),
        &["--namespace", "team-a", "--expires-in", "1s"],
    );
    std::thread::sleep(Duration::from_millis(2100));

    for (label, method, url, headers, body) in routes(&server, &uploads) {
        // No credential, a wrong token, a token in another scheme.
        for auth in [
            None,
            Some("Bearer not-a-configured-token"),
            Some("Basic dXNlcjpwYXNz"),
        ] {
            let mut all = headers.clone();
            if let Some(auth) = auth {
                all.push(("authorization", auth));
            }
            let resp = request(method.clone(), &url, &all, body.clone()).await;
            assert_eq!(
                resp.status,
                401,
                "{label} with {auth:?}: {}",
                resp.describe()
            );
            assert!(
                resp.header("www-authenticate")
                    .is_some_and(|value| value.starts_with("Bearer")),
                "{label}: {}",
                resp.describe()
            );
            if method != Method::HEAD {
                assert_problem(&resp, 401);
            }
        }
        // A signed URL: tampered (another namespace), then expired.
        let separator = if url.contains('?') { '&' } else { '?' };
        let signed = secrets.sign(&server.url("/uploads"), &["--namespace", "team-a"]);
        let query = signed.split_once('?').expect("signed URL has a query").1;
        let tampered = format!(
            "{url}{separator}{}",
            query.replace("ns=team-a", "ns=team-b")
        );
        let resp = request(method.clone(), &tampered, &headers, body.clone()).await;
        assert_eq!(resp.status, 401, "{label}, tampered: {}", resp.describe());
        let old = expired.split_once('?').expect("query").1;
        let resp = request(
            method.clone(),
            &format!("{url}{separator}{old}"),
            &headers,
            body.clone(),
        )
        .await;
        assert_eq!(resp.status, 401, "{label}, expired: {}", resp.describe());
        if method != Method::HEAD {
            let json = assert_problem(&resp, 401);
            assert!(
                json["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("expired")),
                "{json}"
            );
        }
    }
    // Team b's token: team a's uploads and files do not exist for it.
    for (label, method, url, headers, body) in routes(&server, &uploads) {
        if label.ends_with("create") || label == "seed initiate" || label == "list files" {
            continue;
        }
        let resp = call(method.clone(), &url, Some(TOKEN_B), &headers, body).await;
        // The literal form names a file in the token's own namespace, where
        // it is a new upload: the chunk at 10 is past its 0 bytes; the
        // cancel by name then cancels that upload of team b's.
        assert!(
            resp.status == 404
                || (label == "seed literal" && resp.status == 416)
                || (label == "seed cancel by name" && resp.status == 204),
            "{label} with team b's token: {}",
            resp.describe()
        );
    }
    // Team b's literal PUT on "a.bin" above started its own upload; team
    // a's list is its own.
    let list = call(
        Method::GET,
        &server.url("/api/files"),
        Some(TOKEN_B),
        &[],
        vec![],
    )
    .await;
    assert_eq!(list.json(), serde_json::json!([]), "{}", list.describe());
    let list = call(
        Method::GET,
        &server.url("/api/files"),
        Some(TOKEN_A2),
        &[],
        vec![],
    )
    .await;
    assert_eq!(list.json()[0]["name"], "done.bin", "{}", list.describe());

    // Nothing that was refused changed anything.
    assert_eq!(offsets(&server, &uploads).await, before);
    let file = call(
        Method::GET,
        &server.url("/files/done.bin"),
        Some(TOKEN_A2),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.body, b"finished");
    // The page, its assets, health and OPTIONS stay open.
    for path in ["/", "/assets/app.js", "/healthz", "/readyz"] {
        let resp = call(Method::GET, &server.url(path), None, &[], vec![]).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.describe());
    }
    let options = call(Method::OPTIONS, &server.url("/uploads"), None, &[], vec![]).await;
    assert_eq!(options.status, 204, "{}", options.describe());
}

#[tokio::test]
async fn signed_urls_grant_exactly_their_scope() {
    let secrets = Secrets::new(TWO_TEAMS);
    let server = secrets.start(&[]);
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 300 * KIB as usize);

    // A signed create URL, as a tus client would be given it.
    let create = secrets.sign(
        &server.url("/uploads"),
        &["--namespace", "team-a", "--expires-in", "10m"],
    );
    let created = call(
        Method::POST,
        &create,
        None,
        &[
            TUS,
            ("upload-length", "307200"),
            ("upload-metadata", "filename c2lnbmVkLmJpbg=="),
        ],
        vec![],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.describe());
    let location = created.header("location").expect("Location").to_owned();
    assert!(
        location.contains("scope=upload%3A"),
        "Location is signed for the upload: {location}"
    );
    // The Location alone continues the upload, in two PATCHes.
    for (offset, piece) in [(0usize, &data[..100_000]), (100_000, &data[100_000..])] {
        let resp = call(
            Method::PATCH,
            &location,
            None,
            &[
                TUS,
                ("upload-offset", &offset.to_string()),
                ("content-type", "application/offset+octet-stream"),
            ],
            piece.to_vec(),
        )
        .await;
        assert_eq!(resp.status, 204, "{}", resp.describe());
    }
    // It is team a's file, not the default namespace's or team b's.
    let file = call(
        Method::GET,
        &server.url("/files/signed.bin"),
        Some(TOKEN_A),
        &[],
        vec![],
    )
    .await;
    assert_eq!(sha256_hex(&file.body), sha256_hex(&data));
    let other = call(
        Method::GET,
        &server.url("/files/signed.bin"),
        Some(TOKEN_B),
        &[],
        vec![],
    )
    .await;
    assert_problem(&other, 404);

    // The upload's URL is good for that upload only.
    let query = location.split_once('?').expect("query").1;
    let second = call(
        Method::POST,
        &server.url("/uploads"),
        Some(TOKEN_A),
        &[TUS, ("upload-length", "1")],
        vec![],
    )
    .await;
    let second = server.url(&path_of(second.header("location").expect("Location")));
    let resp = call(
        Method::HEAD,
        &format!("{second}?{query}"),
        None,
        &[TUS],
        vec![],
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.describe());
    let resp = call(
        Method::POST,
        &format!("{}?{query}", server.url("/uploads")),
        None,
        &[TUS, ("upload-length", "1")],
        vec![],
    )
    .await;
    assert_problem(&resp, 403);
    // A create URL does not read files; a file URL reads one file.
    let resp = call(
        Method::GET,
        &format!(
            "{}?{}",
            server.url("/files/signed.bin"),
            create.split_once('?').expect("query").1
        ),
        None,
        &[],
        vec![],
    )
    .await;
    assert_problem(&resp, 403);
    let link = secrets.sign(&server.url("/files/signed.bin"), &["--namespace", "team-a"]);
    let resp = call(Method::GET, &link, None, &[("range", "bytes=0-9")], vec![]).await;
    assert_eq!(resp.status, 206, "{}", resp.describe());
    assert_eq!(resp.body, &data[..10]);
    let resp = call(
        Method::DELETE,
        &link.replace(
            "/files/signed.bin",
            path_of(&location).split('?').next().expect("a path"),
        ),
        None,
        &[TUS],
        vec![],
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.describe());
    // /api/files hands out signed links that work without a token.
    let list = call(
        Method::GET,
        &server.url("/api/files"),
        Some(TOKEN_A),
        &[],
        vec![],
    )
    .await;
    let url = list.json()[0]["url"].as_str().expect("url").to_owned();
    let resp = call(Method::GET, &server.url(&url), None, &[], vec![]).await;
    assert_eq!(resp.status, 200, "{url}: {}", resp.describe());

    // The literal seed form through a signed create URL.
    let literal = secrets.sign(
        &server.url("/api/upload?file=literal.bin"),
        &["--namespace", "team-b"],
    );
    let resp = call(
        Method::PUT,
        &literal,
        None,
        &[("content-range", "bytes 0-4/10")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(resp.status, 308, "{}", resp.describe());
    let resp = call(
        Method::PUT,
        &literal,
        None,
        &[("content-range", "bytes 5-9/10")],
        b"world".to_vec(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.describe());
    let file = call(
        Method::GET,
        &server.url("/files/literal.bin"),
        Some(TOKEN_B),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.body, b"helloworld");
}

#[tokio::test]
async fn a_token_revoked_mid_request_cannot_finalise() {
    let secrets = Secrets::new(TWO_TEAMS);
    let server = secrets.start(&[]);
    let first = call(
        Method::PUT,
        &server.url("/api/upload?file=r.bin"),
        Some(TOKEN_A),
        &[("content-range", "bytes 0-9/20")],
        vec![1; 10],
    )
    .await;
    assert_eq!(first.status, 308, "{}", first.describe());
    // The last chunk: half its body, then the token is revoked, then the rest.
    let mut stream = connect(server.addr()).await;
    let head = format!(
        "PUT /api/upload?file=r.bin HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Content-Range: bytes 10-19/20\r\nContent-Length: 10\r\n\r\n",
        server.addr()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&[2; 5]).await.expect("write");
    // Revoke only once the server is reading this body (its credential was
    // checked then): its metrics count the 10 + 5 bytes received.
    let mut reading = false;
    for _ in 0..100 {
        let metrics = call(Method::GET, &server.url("/metrics"), None, &[], vec![]).await;
        let received = String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|line| line.strip_prefix("tenax_bytes_received_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if received >= 15.0 {
            reading = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reading, "the server never read the first half of the body");
    secrets.write_tokens(&TWO_TEAMS.replace(TOKEN_A, "a-token-that-replaced-it-0"));
    server.signal("HUP");
    // The reload is asynchronous: the revoked token stops working soon.
    let mut revoked = false;
    for _ in 0..50 {
        let probe = call(
            Method::GET,
            &server.url("/api/files"),
            Some(TOKEN_A),
            &[],
            vec![],
        )
        .await;
        if probe.status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked, "SIGHUP did not reload the tokens file");
    stream.write_all(&[2; 5]).await.expect("write");
    let mut buffer = Vec::new();
    let resp = read_response_within(&mut stream, &mut buffer, IO_TIMEOUT, false)
        .await
        .expect("an answer");
    assert_problem(&resp, 401);
    // Every byte is kept; another valid token of the namespace completes it.
    let done = call(
        Method::PUT,
        &server.url("/api/upload?file=r.bin"),
        Some(TOKEN_A2),
        &[("content-range", "bytes */20")],
        vec![],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.describe());
    let file = call(
        Method::GET,
        &server.url("/files/r.bin"),
        Some(TOKEN_A2),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.body, [[1u8; 10], [2u8; 10]].concat());
}

#[tokio::test]
async fn quotas_hold_per_namespace() {
    let secrets = Secrets::new(&format!(
        r#"{TWO_TEAMS}
[[tokens]]
token = "small-uploads-only-token-0"
namespace = "team-b"
max_upload_size = "1KiB"

[namespaces.team-a]
max_concurrent_uploads = 2
max_bytes_in_progress = "10KiB"
max_bytes_stored = "3KiB"
"#
    ));
    let server = secrets.start(&[]);
    let tus_create = |token: &'static str, length: &'static str, name: Option<&'static str>| {
        let url = server.url("/uploads");
        async move {
            let mut headers = vec![TUS, ("upload-length", length)];
            if let Some(name) = name {
                headers.push(("upload-metadata", name));
            }
            call(Method::POST, &url, Some(token), &headers, vec![]).await
        }
    };
    // Declared bytes in progress: 6 + 5 KiB > 10 KiB.
    let first = tus_create(TOKEN_A, "6144", None).await;
    assert_eq!(first.status, 201, "{}", first.describe());
    let json = assert_problem(&tus_create(TOKEN_A, "5120", None).await, 507);
    assert_eq!(json["type"], "urn:tenax:problem:quota-exceeded", "{json}");
    // Concurrent uploads: 2.
    assert_eq!(tus_create(TOKEN_A, "100", None).await.status, 201);
    let json = assert_problem(&tus_create(TOKEN_A2, "100", None).await, 429);
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("2 uploads")),
        "{json}"
    );
    // Team b has no quota; its small token has its own size limit.
    for _ in 0..3 {
        assert_eq!(tus_create(TOKEN_B, "20000", None).await.status, 201);
    }
    assert_problem(
        &tus_create("small-uploads-only-token-0", "2048", None).await,
        413,
    );
    assert_eq!(
        tus_create("small-uploads-only-token-0", "1024", None)
            .await
            .status,
        201
    );
    // Finishing an upload frees its place; stored bytes count published files.
    let url = server.url(&path_of(first.header("location").expect("Location")));
    let resp = call(Method::DELETE, &url, Some(TOKEN_A), &[TUS], vec![]).await;
    assert_eq!(resp.status, 204, "{}", resp.describe());
    let put = |name: &'static str, size: usize| {
        let url = server.url(&format!("/api/upload?file={name}"));
        async move { call(Method::PUT, &url, Some(TOKEN_A), &[], vec![9; size]).await }
    };
    assert_eq!(put("one.bin", 2048).await.status, 200);
    let json = assert_problem(&put("two.bin", 2048).await, 507);
    assert!(
        json["detail"].as_str().is_some_and(|d| d.contains("3072")),
        "{json}"
    );
    assert_eq!(put("two.bin", 1024).await.status, 200);
}

#[test]
fn no_secret_reaches_the_logs() {
    let secrets = Secrets::new(TWO_TEAMS);
    let data = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "trace",
            "--data",
        ])
        .arg(data.path())
        .arg("--tokens-file")
        .arg(secrets.tokens())
        .arg("--signing-key-file")
        .arg(secrets.key())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte).expect("read stdout") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).expect("UTF-8");
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    let signed = secrets.sign(&format!("{base}/uploads"), &["--namespace", "team-a"]);
    let sig = signed.rsplit_once("sig=").expect("sig").1.to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let ok = call(
            Method::PUT,
            &format!("{base}/api/upload?file=x.bin"),
            Some(TOKEN_A),
            &[],
            b"x".to_vec(),
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.describe());
        let bad = call(
            Method::GET,
            &format!("{base}/api/files"),
            Some("Bearer-wrong-secret-000000"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(bad.status, 401);
        let created = call(
            Method::POST,
            &signed,
            None,
            &[TUS, ("upload-length", "1")],
            vec![],
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.describe());
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read the logs");
    assert!(
        logs.contains("upload created"),
        "the server logged at trace level: {logs}"
    );
    for secret in [TOKEN_A, "Bearer-wrong-secret-000000", sig.as_str(), KEY] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}

#[test]
fn a_public_address_without_credentials_is_refused() {
    let data = tempfile::tempdir().expect("temporary directory");
    let data = path_str(data.path()).to_owned();
    // The refusal comes before the socket is bound.
    let out = tenax(&["serve", "--listen", "0.0.0.0:0", "--data", &data]);
    assert!(!out.status.success());
    let message = text(&out.stderr);
    assert!(
        message.contains(r#"config key "listen""#) && message.contains("--insecure-no-auth"),
        "{message}"
    );
}

#[test]
fn the_cli_uploads_and_downloads_with_a_token_or_a_signed_url() {
    let secrets = Secrets::new(TWO_TEAMS);
    let server = secrets.start(&[]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 5 * (1 << 20) + 123);
    let source = dir.path().join("cli.bin");
    std::fs::write(&source, &data).expect("write the source");
    let source = path_str(&source).to_owned();
    let base = server.url("");
    let upload = |url: &str, extra: &[&str], token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args([
                "upload",
                &source,
                url,
                "--no-journal",
                "--chunk-size",
                "1MiB",
            ])
            .args(extra)
            .env_remove("TENAX_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("TENAX_TOKEN", token);
        }
        wait_output(command.spawn().expect("start tenax upload"), IO_TIMEOUT)
    };
    // No token: refused, and the exit code says so.
    let out = upload(&base, &["--protocol", "tus"], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    // A token, in every dialect.
    for protocol in ["seed", "tus", "ietf"] {
        let out = upload(&base, &["--protocol", protocol], Some(TOKEN_A));
        assert!(out.status.success(), "{protocol}: {}", text(&out.stderr));
    }
    // A signed create URL, with parallel tus parts: no token at all.
    let signed = secrets.sign(&server.url("/uploads"), &["--namespace", "team-b"]);
    for extra in [
        &["--protocol", "tus", "--parallel", "2"][..],
        &["--protocol", "seed"],
    ] {
        let out = upload(&signed, extra, None);
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
    }
    // Each team downloads its own copy, with its token.
    for token in [TOKEN_A, TOKEN_B] {
        let target = dir.path().join(format!("down-{}.bin", &token[..10]));
        let child = Command::new(BIN)
            .args([
                "download",
                &server.url("/files/cli.bin"),
                "-o",
                path_str(&target),
            ])
            .env("TENAX_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenax download");
        let out = wait_output(child, IO_TIMEOUT);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(std::fs::read(&target).expect("downloaded"), data);
    }
}

/// Issue 19, finding 2: a URL signed for `/api/upload?file=NAME` covers
/// that name only. With its signature and another `file=`, nothing of
/// another credential's is touched: no append to an upload in progress, no
/// replacement of a published file, no cancel; and a create URL (signed for
/// `/uploads`) does not reach the by-name form at all.
#[tokio::test]
async fn a_signed_url_reaches_only_the_name_it_was_signed_for() {
    let secrets = Secrets::new(TWO_TEAMS);
    let server = secrets.start(&[]);
    let by_name = |name: &str| server.url(&format!("/api/upload?file={name}"));
    // Team a's second token: an upload in progress, one to cancel, a file.
    for (name, range, body) in [
        ("victim3", "bytes 0-4/10", &b"VICTI"[..]),
        ("victim2", "bytes 0-4/10", &b"VICTI"[..]),
        ("secret-a.txt", "bytes 0-4/5", &b"TOPSE"[..]),
    ] {
        let resp = call(
            Method::PUT,
            &by_name(name),
            Some(TOKEN_A2),
            &[("content-range", range)],
            body.to_vec(),
        )
        .await;
        assert!(matches!(resp.status, 200 | 308), "{}", resp.describe());
    }
    let signed = secrets.sign(&by_name("only-this-name"), &["--namespace", "team-a"]);
    let query = signed.split_once('?').expect("a query").1.to_owned();
    let sig_only = query
        .split('&')
        .filter(|pair| !pair.starts_with("file="))
        .collect::<Vec<_>>()
        .join("&");
    let create = secrets.sign(&server.url("/uploads"), &["--namespace", "team-a"]);
    let create_sig = create.split_once('?').expect("a query").1.to_owned();
    for sig in [&sig_only, &create_sig] {
        let with = |name: &str| format!("{}&{sig}", by_name(name));
        let append = call(
            Method::PUT,
            &with("victim3"),
            None,
            &[("content-range", "bytes 5-9/10")],
            b"EVIL!".to_vec(),
        )
        .await;
        assert_problem(&append, 403);
        let replace = call(
            Method::PUT,
            &with("secret-a.txt"),
            None,
            &[("content-range", "bytes 0-4/5")],
            b"PWNED".to_vec(),
        )
        .await;
        assert_problem(&replace, 403);
        let cancel = call(Method::DELETE, &with("victim2"), None, &[], vec![]).await;
        assert_problem(&cancel, 403);
    }
    // What the others hold is as it was.
    let file = call(
        Method::GET,
        &server.url("/files/secret-a.txt"),
        Some(TOKEN_A),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.body, b"TOPSE", "{}", file.describe());
    for name in ["victim3", "victim2"] {
        let status = call(
            Method::PUT,
            &by_name(name),
            Some(TOKEN_A),
            &[("content-range", "bytes */10")],
            vec![],
        )
        .await;
        assert_eq!(status.status, 308, "{name}: {}", status.describe());
        assert_eq!(status.header("range"), Some("bytes=0-4"), "{name}");
    }
    // The name it was signed for works, start to finish.
    for (range, body, status) in [
        ("bytes 0-4/10", &b"hello"[..], 308),
        ("bytes 5-9/10", &b"world"[..], 200),
    ] {
        let resp = call(
            Method::PUT,
            &signed,
            None,
            &[("content-range", range)],
            body.to_vec(),
        )
        .await;
        assert_eq!(resp.status, status, "{}", resp.describe());
    }
    let file = call(
        Method::GET,
        &server.url("/files/only-this-name"),
        Some(TOKEN_A),
        &[],
        vec![],
    )
    .await;
    assert_eq!(file.body, b"helloworld");
}

/// `tenax serve` with `secrets`' tokens file; its stdout and stderr lines
/// arrive on the receiver, read by threads.
fn serve_with_tokens(
    secrets: &Secrets,
    data: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--tokens-file")
        .arg(secrets.tokens())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = std::sync::mpsc::channel();
    let sender_clone = sender.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let stdout_sender = sender_clone;
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = stdout_sender.send(line);
        }
    });
    (child, lines)
}

/// Issue 19, finding 6: a tokens file with a syntax error on a token's
/// line is reported by file and line, at start and on SIGHUP, and the
/// report never quotes the line (a token).
#[test]
fn a_malformed_tokens_file_is_reported_by_line_not_by_content() {
    const LEAKED: &str = "tokenAAAAAAAAAAAAAAAAAAAAAAA1";
    let malformed =
        format!("[[tokens]]\nname = \"a\"\ntoken = \"{LEAKED}\" namespace = \"team-a\"\n");
    let assert_reported = |report: &str, secrets: &Secrets| {
        assert!(!report.contains(LEAKED), "the token was logged: {report}");
        assert!(!report.contains("team-a"), "the line was quoted: {report}");
        assert!(
            report.contains(path_str(&secrets.tokens())) && report.contains("line 3"),
            "the file and line are not named: {report}"
        );
    };

    // At start: the server refuses to start.
    let secrets = Secrets::new(&malformed);
    let data = tempfile::tempdir().expect("temporary directory");
    let (mut child, lines) = serve_with_tokens(&secrets, data.path());
    let status = {
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "the server started");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(!status.success());
    let report: Vec<String> = lines.iter().collect();
    assert_reported(&report.join("\n"), &secrets);

    // On SIGHUP: the old tokens stay.
    let secrets = Secrets::new(TWO_TEAMS);
    let (mut child, lines) = serve_with_tokens(&secrets, data.path());
    let listening = lines
        .iter()
        .take(50)
        .find(|line| line.starts_with("listening on"));
    assert!(listening.is_some(), "the server did not start");
    // The SIGHUP handler is installed by a task spawned before the bind.
    std::thread::sleep(Duration::from_millis(300));
    secrets.write_tokens(&malformed);
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let mut seen = Vec::new();
    let report = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("not reloaded") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no reload error within {IO_TIMEOUT:?}: {seen:?}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_reported(&report, &secrets);
}
