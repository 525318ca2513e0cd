//! `--interim-responses auto|always|never` against the real binary over a
//! raw socket (docs/protocol.md §0 "Behind reverse proxies", §3.3): a
//! complete IETF creation (`Upload-Complete: ?1` with a body) gets its
//! `104 Upload Resumption Supported` only where the policy allows it, and
//! its final answer, with `Location`, in every case.

mod support;

use std::net::SocketAddr;

use support::http::{Resp, connect, read_all_heads};
use support::{BIN, random_bytes};
use tenax_testkit::{Rng, TestServer};
use tokio::io::AsyncWriteExt as _;

/// A complete creation with `extra` headers; its interim answers and its
/// final one.
async fn create(addr: SocketAddr, name: &str, extra: &[(&str, &str)]) -> (Vec<Resp>, Resp) {
    let body = random_bytes(&mut Rng::new(104), 20_000);
    let mut head = format!(
        "POST /uploads HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Upload-Draft-Interop-Version: 9\r\nUpload-Complete: ?1\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n",
        body.len()
    );
    for (header, value) in extra {
        head.push_str(&format!("{header}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = connect(addr).await;
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&body).await.expect("write body");
    let mut buffer = Vec::new();
    let (interim, last) = read_all_heads(&mut stream, &mut buffer).await;
    let last = last.unwrap_or_else(|| panic!("{name}: no final answer after {interim:?}"));
    assert_eq!(last.status, 201, "{name}: {}", last.describe());
    assert!(
        last.header("location").is_some(),
        "{name}: no Location: {}",
        last.describe()
    );
    (interim, last)
}

fn resumptions(interim: &[Resp]) -> usize {
    interim.iter().filter(|resp| resp.status == 104).count()
}

/// The headers that say a request came through a proxy, one at a time.
const PROXY_SIGNS: [(&str, &str); 6] = [
    ("Forwarded", "for=192.0.2.1;proto=https"),
    ("X-Forwarded-For", "192.0.2.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "files.example"),
    ("X-Forwarded-Prefix", "/transfer"),
    ("Via", "1.1 proxy.example"),
];

/// `auto` (the default): a 104 on a direct request; none when any one of
/// the proxy headers is present.
#[tokio::test]
async fn auto_sends_104_only_without_proxy_signs() {
    let server = TestServer::start(BIN);
    let (interim, _) = create(server.addr(), "direct.bin", &[]).await;
    assert!(
        resumptions(&interim) >= 1,
        "no 104 on a direct request: {interim:?}"
    );
    for (index, sign) in PROXY_SIGNS.iter().enumerate() {
        let (interim, _) = create(server.addr(), &format!("proxied{index}.bin"), &[*sign]).await;
        assert!(
            interim.is_empty(),
            "auto sent interim answers through a proxy ({}): {interim:?}",
            sign.0
        );
    }
    // The explicit default is the same.
    let server = TestServer::start_with(BIN, &["--interim-responses", "auto"]);
    let (interim, _) = create(server.addr(), "direct.bin", &[]).await;
    assert!(resumptions(&interim) >= 1, "{interim:?}");
    let (interim, _) = create(server.addr(), "via.bin", &[PROXY_SIGNS[5]]).await;
    assert!(interim.is_empty(), "{interim:?}");
}

/// `auto` with `--behind-proxy`: with no list every peer is a proxy (no
/// 104 even without headers); with `--trusted-proxies`, a listed peer gets
/// none and an unlisted one does (without proxy headers).
#[tokio::test]
async fn auto_knows_the_configured_proxies() {
    let server = TestServer::start_with(BIN, &["--behind-proxy"]);
    let (interim, _) = create(server.addr(), "anyone.bin", &[]).await;
    assert!(interim.is_empty(), "behind-proxy: {interim:?}");

    let server = TestServer::start_with(
        BIN,
        &["--behind-proxy", "--trusted-proxies", "127.0.0.0/8,::1"],
    );
    let (interim, _) = create(server.addr(), "listed.bin", &[]).await;
    assert!(interim.is_empty(), "a listed proxy peer: {interim:?}");

    let server = TestServer::start_with(
        BIN,
        &["--behind-proxy", "--trusted-proxies", "192.0.2.0/24"],
    );
    let (interim, _) = create(server.addr(), "unlisted.bin", &[]).await;
    assert!(
        resumptions(&interim) >= 1,
        "an unlisted peer without proxy headers is direct: {interim:?}"
    );
    let (interim, _) = create(server.addr(), "unlisted-xff.bin", &[PROXY_SIGNS[1]]).await;
    assert!(interim.is_empty(), "{interim:?}");
}

/// `always`: the 104 goes out with or without proxy headers (the operator
/// says the proxy passes 1xx on); `never`: no interim answer at all.
#[tokio::test]
async fn always_and_never() {
    let server = TestServer::start_with(BIN, &["--interim-responses", "always"]);
    let (interim, _) = create(server.addr(), "plain.bin", &[]).await;
    assert!(resumptions(&interim) >= 1, "{interim:?}");
    for (index, sign) in PROXY_SIGNS.iter().enumerate() {
        let (interim, _) = create(server.addr(), &format!("always{index}.bin"), &[*sign]).await;
        assert!(
            resumptions(&interim) >= 1,
            "always sent no 104 with {}: {interim:?}",
            sign.0
        );
    }
    let server = TestServer::start_with(BIN, &["--behind-proxy", "--interim-responses", "always"]);
    let (interim, _) = create(server.addr(), "behind.bin", &[]).await;
    assert!(resumptions(&interim) >= 1, "{interim:?}");

    let server = TestServer::start_with(BIN, &["--interim-responses", "never"]);
    let (interim, _) = create(server.addr(), "never.bin", &[]).await;
    assert!(interim.is_empty(), "never: {interim:?}");
}

/// A bad value is refused at start-up, naming the flag's values.
#[test]
fn bad_value_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--interim-responses", "sometimes"])
        .output()
        .expect("run tenax serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sometimes") && stderr.contains("always"),
        "{stderr}"
    );
}
