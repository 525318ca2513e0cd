//! Issue 19, against the real binary: what an attacker probing the server
//! found, one test per finding. Credentials and signed URLs are in
//! `auth.rs`; these need no credentials.

mod support;

use reqwest::Method;
use tenax_testkit::TestServer;

use support::BIN;
use support::http::{assert_problem, client, request, send};

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
