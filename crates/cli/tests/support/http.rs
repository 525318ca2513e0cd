//! HTTP helpers: whole responses from reqwest or a raw socket, problem+json
//! checks, upload URLs, raw HTTP/1.1 exchanges and paced raw requests.
//!
//! Every network wait is bounded by [`IO_TIMEOUT`].

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method};
use serde_json::Value;
use tenax_testkit::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Upper bound for any single network wait in these tests.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A response, read whole (from reqwest or from a raw socket).
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| {
            value
                .to_str()
                .unwrap_or_else(|_| panic!("header {name} is not ASCII: {value:?}"))
        })
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "status {} headers {:?} body {:?}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body[..self.body.len().min(600)])
        )
    }

    /// A header that must be present and a `u64`.
    pub(crate) fn number(&self, name: &str) -> u64 {
        let value = self
            .header(name)
            .unwrap_or_else(|| panic!("no {name}: {}", self.describe()));
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} {value:?} is not a number: {}", self.describe()))
    }
}

/// An RFC 9457 problem answer with `status`; returns its JSON.
pub(crate) fn assert_problem(resp: &Resp, status: u16) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected {status}: {}",
        resp.describe()
    );
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "error without application/problem+json: {}",
        resp.describe()
    );
    let json = resp.json();
    assert_eq!(json["status"], status, "problem status: {json}");
    for member in ["type", "title", "detail"] {
        assert!(
            json[member].as_str().is_some_and(|text| !text.is_empty()),
            "problem without {member}: {json}"
        );
    }
    json
}

pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(IO_TIMEOUT)
        .build()
        .expect("cannot build the HTTP client")
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Resp {
    let response = request.send().await.expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .expect("cannot read the response body")
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends `method url` with `headers` and `body` on a fresh client.
pub(crate) async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut request = client().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.body(body);
    }
    send(request).await
}

/// A tus 1.0.0 request (`Tus-Resumable` set) on `client`.
pub(crate) async fn tus_request(
    client: &Client,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut request = client
        .request(method, url)
        .header("tus-resumable", "1.0.0")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

/// The bucket's multipart uploads in progress, as S3's
/// ListMultipartUploads names them (moto checks no signature).
pub(crate) async fn in_progress_uploads(http: &Client, data_url: &str) -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL");
    let bucket = data_url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split('/').next())
        .expect("s3://BUCKET/...");
    let listed = send(http.get(format!("{endpoint}/{bucket}?uploads"))).await;
    assert_eq!(listed.status, 200, "{}", listed.describe());
    String::from_utf8(listed.body).expect("XML")
}

/// `GET /files/NAME`, which must answer 200 with the whole file.
pub(crate) async fn download(server: &TestServer, name: &str) -> Vec<u8> {
    let resp = send(client().get(server.url(&format!("/files/{name}")))).await;
    assert_eq!(resp.status, 200, "download of {name}: {}", resp.describe());
    if let Some(length) = resp.header("content-length") {
        assert_eq!(length, resp.body.len().to_string());
    }
    resp.body
}

/// Entries in the data directory's `uploads/` (records and data). The
/// server creates that directory when it opens the data directory, so a
/// missing one means the layout moved and every "no upload was created"
/// check would pass vacuously: that panics instead.
pub(crate) fn upload_entries(server: &TestServer) -> usize {
    let dir = server.data_dir().join("uploads");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .count()
}

/// The `/uploads/{id}` path of an upload URL (absolute or not).
pub(crate) fn path_of(url: &str) -> String {
    let start = url.find("/uploads/").expect("upload URL has /uploads/");
    url[start..].to_owned()
}

/// Checks that `location` is an absolute upload URL on `server`.
pub(crate) fn assert_upload_location(server: &TestServer, location: &str) {
    let prefix = server.url("/uploads/");
    let id = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("Location {location:?} is not absolute under {prefix}"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "upload id {id:?} is not 32 lowercase hex digits"
    );
}

/// Ages an upload's record past any time to live (the server must be down).
pub(crate) fn age_record(server: &TestServer, url: &str) {
    let id = path_of(url).trim_start_matches("/uploads/").to_owned();
    let record = server.data_dir().join("uploads").join(format!("{id}.json"));
    let text = std::fs::read(&record).expect("the upload's record exists");
    let mut json: Value = serde_json::from_slice(&text).expect("the record is JSON");
    json["updated_at"] = Value::from(1u64);
    std::fs::write(&record, serde_json::to_vec(&json).expect("JSON")).expect("rewrite the record");
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over a TcpStream, for exact framing
// ---------------------------------------------------------------------------

pub(crate) async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("cannot connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads one response (a 1xx head counts as one) from `stream`, within
/// `timeout`; `buffer` keeps bytes read past it. `None` when the connection
/// ends (or fails, or times out) first. `head_only`: the answer to a HEAD.
pub(crate) async fn read_response_within(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    timeout: Duration,
    head_only: bool,
) -> Option<Resp> {
    let deadline = tokio::time::Instant::now() + timeout;
    let fill = async |stream: &mut TcpStream, buffer: &mut Vec<u8>| -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => false,
            Ok(Ok(n)) => {
                buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    };
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at;
        }
        if !fill(stream, buffer).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    buffer.drain(..head_end + 4);
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(buffer, b"\r\n") {
                    break at;
                }
                if !fill(stream, buffer).await {
                    return None;
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buffer[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim(),
                16,
            )
            .expect("chunk size");
            while buffer.len() < line_end + 2 + size + 2 {
                if !fill(stream, buffer).await {
                    return None;
                }
            }
            body.extend_from_slice(&buffer[line_end + 2..line_end + 2 + size]);
            buffer.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else if let Some(length) = length {
        while buffer.len() < length {
            if !fill(stream, buffer).await {
                return None;
            }
        }
        buffer.drain(..length).collect()
    } else {
        while fill(stream, buffer).await {}
        std::mem::take(buffer)
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// [`read_response_within`] with [`IO_TIMEOUT`].
pub(crate) async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Resp> {
    read_response_within(stream, buffer, IO_TIMEOUT, false).await
}

/// Reads every interim (1xx) head and then the final response. `None` for
/// the final response when the connection ends first.
pub(crate) async fn read_all_heads(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> (Vec<Resp>, Option<Resp>) {
    let mut interim = Vec::new();
    for _ in 0..64 {
        match read_response(stream, buffer).await {
            Some(resp) if (100..200).contains(&resp.status) => interim.push(resp),
            other => return (interim, other),
        }
    }
    panic!("more than 64 interim responses");
}

/// Writes `head` and then `body` at `pace`: pieces of `piece` bytes with a
/// sleep between them, for at most `max_time`. Stops quietly on a write
/// error (the server may end the request) or when `stop` says so. Then
/// reads the answer, if any (within `read_timeout`). Returns the bytes sent
/// and the answer.
pub(crate) async fn paced_request(
    addr: SocketAddr,
    head: String,
    body: Vec<u8>,
    piece: usize,
    pace: Duration,
    read_timeout: Duration,
) -> (usize, Option<Resp>) {
    let mut stream = connect(addr).await;
    stream
        .write_all(head.as_bytes())
        .await
        .expect("cannot write the head");
    let mut sent = 0;
    let mut buffer = Vec::new();
    for piece in body.chunks(piece) {
        match tokio::time::timeout(IO_TIMEOUT, stream.write_all(piece)).await {
            Ok(Ok(())) => sent += piece.len(),
            Ok(Err(_)) | Err(_) => break,
        }
        // An early answer (or a close) ends the stream.
        let mut probe = [0u8; 4096];
        match tokio::time::timeout(pace, stream.read(&mut probe)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buffer.extend_from_slice(&probe[..n]);
                break;
            }
        }
    }
    let resp = read_response_within(&mut stream, &mut buffer, read_timeout, false).await;
    (sent, resp)
}

/// Writes `bytes` on a fresh connection to `addr` and reads one answer.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Resp> {
    let mut stream = connect(addr).await;
    stream.write_all(bytes).await.expect("write");
    let mut buffer = Vec::new();
    read_response(&mut stream, &mut buffer).await
}

/// A chunked body: the pieces, the last chunk and the trailer section.
pub(crate) fn chunked(pieces: &[&[u8]], trailers: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether the server closes the connection within `timeout` (EOF or reset)
/// without sending anything more; `Err` holds what came instead.
pub(crate) async fn closed_within(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(), Vec<u8>> {
    let mut extra = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if extra.is_empty() { Ok(()) } else { Err(extra) };
            }
            Ok(Ok(n)) => extra.extend_from_slice(&chunk[..n]),
            Err(_) => {
                extra.extend_from_slice(b"<still open>");
                return Err(extra);
            }
        }
    }
}

/// A plain `GET url` (default reqwest client): the status and the body.
pub(crate) async fn get(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body.to_vec())
}

/// [`get`] on a runtime of its own, for synchronous tests.
pub(crate) fn get_blocking(url: &str) -> (u16, Vec<u8>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a runtime")
        .block_on(get(url))
}

/// `GET /files/NAME` must answer 404: nothing is published under `name`.
pub(crate) async fn assert_not_published(server: &TestServer, name: &str) {
    let resp = request(
        Method::GET,
        &server.url(&format!("/files/{name}")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(resp.status, 404, "GET /files/{name}: {}", resp.describe());
}
