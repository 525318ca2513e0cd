//! The GCS JSON API (docs/protocol.md §7) with Google's own storage
//! libraries, unmodified, against the real `tenax serve` binary: Python's
//! `google-cloud-storage` (driver `tests/peers/gcs_client.py`, pointed at
//! the server with `STORAGE_EMULATOR_HOST` and anonymous credentials) and
//! Node's `@google-cloud/storage` (`tests/peers/gcs_node.mjs`), both
//! installed by `scripts/test` into `target/peers`.

#![allow(missing_docs)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use serde_json::Value;
use support::files::assert_same_bytes;
use support::http::{get_blocking, request};
use support::peers::{peers_dir, peers_node_modules, python_driver, script};
use support::process::{drive, json_line, run_cli};
use support::{BIN, MIB, random_bytes, sha256_hex};
use tenax_testkit::{FaultProxy, Rng, TestServer};

/// How long one run of a client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs `gcs_client.py OP BUCKET ARGS…` against `endpoint`; its JSON line.
fn python(endpoint: &str, op: &str, bucket: &str, args: &[&str]) -> Value {
    let mut command = python_driver("gcs_client.py");
    command
        .arg(op)
        .arg(bucket)
        .args(args)
        .env("STORAGE_EMULATOR_HOST", endpoint);
    drive(
        command,
        &format!("gcs_client.py {op} {args:?}"),
        CLIENT_TIMEOUT,
    )
    .succeeded()
}

/// The digests google-cloud-storage reports, as the object's bytes have them.
fn md5_b64(data: &[u8]) -> String {
    use md5::Digest as _;
    BASE64.encode(md5::Md5::digest(data))
}

fn crc32c_b64(data: &[u8]) -> String {
    BASE64.encode(crc32c::crc32c(data).to_be_bytes())
}

/// The checks every uploaded object passes: size and both digests as the
/// library saw them.
fn assert_object(described: &Value, name: &str, data: &[u8]) {
    assert_eq!(described["name"], name, "{described}");
    assert_eq!(described["size"], data.len(), "{described}");
    assert_eq!(described["md5"], md5_b64(data), "{described}");
    assert_eq!(described["crc32c"], crc32c_b64(data), "{described}");
    assert!(
        described["generation"].as_u64().is_some_and(|g| g > 0),
        "{described}"
    );
    assert_eq!(described["metageneration"], 1, "{described}");
}

fn write_source(dir: &Path, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write the source file");
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// `/files/NAME` of an object of the bucket `default`: the file name is the
/// object name with `/` (and `%`) percent-encoded (§7.2), itself encoded
/// once more in the URL.
fn files_url(server: &TestServer, object: &str) -> String {
    let file = object.replace('%', "%25").replace('/', "%2F");
    server.url(&format!("/files/{}", file.replace('%', "%25")))
}

/// A `tenax upload` journal entry for `file` sent to `target`, naming
/// `session` (the format of crates/client/src/journal.rs).
fn write_journal_entry(dir: &Path, file: &Path, target: &str, session: &str) {
    use std::os::unix::fs::MetadataExt as _;
    let canonical = std::fs::canonicalize(file).expect("canonical path");
    let meta = std::fs::metadata(&canonical).expect("metadata");
    let mtime = meta
        .modified()
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos();
    let entry = serde_json::json!({
        "version": 1,
        "session": session,
        "protocol": "seed",
        "parts": [],
        "file": canonical.display().to_string(),
        "endpoint": target,
        "identity": {"size": meta.len(), "mtime_ns": mtime, "ino": meta.ino(), "dev": meta.dev()},
    });
    let key = sha256_hex(format!("{}\n{target}", canonical.display()).as_bytes());
    std::fs::create_dir_all(dir).expect("journal directory");
    std::fs::write(dir.join(format!("{key}.json")), entry.to_string()).expect("journal entry");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn python_resumable_upload_downloads_reload_and_generation_across_restart() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 3 * MIB as usize + 12_345);
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = write_source(dir.path(), "source.bin", &data);
    let mut server = TestServer::start(BIN);
    let endpoint = server.url("");
    let name = "logs/2026/resumable.bin";

    // chunk_size: a resumable upload, 1 MiB a request, with the library's
    // default CRC32C check of the final object (and x-goog-hash sent).
    let uploaded = python(&endpoint, "upload", "default", &[name, &source, "1048576"]);
    assert_object(&uploaded, name, &data);
    assert_eq!(uploaded["metadata"]["origin"], "gcs-test");
    assert_eq!(uploaded["content_type"], "application/x-test");

    let whole = python(&endpoint, "download", "default", &[name]);
    assert_eq!(whole["sha256"], sha256_hex(&data), "{whole}");
    let part = python(&endpoint, "download", "default", &[name, "1000", "99999"]);
    assert_eq!(part["size"], 99_000, "{part}");
    assert_eq!(part["sha256"], sha256_hex(&data[1000..100_000]), "{part}");

    // The same bytes as /files/NAME.
    let (status, stored) = get_blocking(&files_url(&server, name));
    assert_eq!(status, 200);
    assert_same_bytes(name, &stored, &data);

    // The media download's own headers, with a Range.
    let url = server.url("/download/storage/v1/b/default/o/logs%2F2026%2Fresumable.bin?alt=media");
    let rt = runtime();
    let resp = rt.block_on(request(
        Method::GET,
        &url,
        &[("range", "bytes=10-19")],
        vec![],
    ));
    assert_eq!(resp.status, 206, "{}", resp.describe());
    assert_eq!(resp.body, &data[10..20]);
    let generation = uploaded["generation"].as_u64().expect("a generation");
    assert_eq!(
        resp.header("x-goog-generation"),
        Some(generation.to_string().as_str())
    );
    let hash = resp.header("x-goog-hash").expect("x-goog-hash").to_owned();
    assert!(
        hash.contains(&format!("crc32c={}", crc32c_b64(&data))),
        "{hash}"
    );
    assert!(hash.contains(&format!("md5={}", md5_b64(&data))), "{hash}");

    // The generation is kept with the published file: a restart keeps it.
    let reloaded = python(&endpoint, "reload", "default", &[name]);
    assert_eq!(reloaded["generation"], generation);
    server.restart();
    let reloaded = python(&server.url(""), "reload", "default", &[name]);
    assert_object(&reloaded, name, &data);
    assert_eq!(reloaded["generation"], generation, "{reloaded}");
}

#[test]
fn python_multipart_uploads_list_with_prefix_and_delimiter_and_delete() {
    let mut rng = Rng::from_env_or_os();
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start(BIN);
    let endpoint = server.url("");
    let names = [
        "a.txt",
        "dir/b.txt",
        "dir/c.txt",
        "dir/sub/d.txt",
        "other/e.txt",
    ];
    for (index, name) in names.iter().enumerate() {
        let data = random_bytes(&mut rng, 1000 + index * 777);
        let source = write_source(dir.path(), &format!("{index}.bin"), &data);
        // No chunk_size: the library's multipart upload.
        let uploaded = python(&endpoint, "upload", "bucket-1", &[name, &source, "0"]);
        assert_object(&uploaded, name, &data);
        let downloaded = python(&endpoint, "download", "bucket-1", &[name]);
        assert_eq!(downloaded["sha256"], sha256_hex(&data));
    }
    let top = python(&endpoint, "list", "bucket-1", &["", "/", ""]);
    assert_eq!(top["names"], serde_json::json!(["a.txt"]), "{top}");
    assert_eq!(
        top["prefixes"],
        serde_json::json!(["dir/", "other/"]),
        "{top}"
    );
    let below = python(&endpoint, "list", "bucket-1", &["dir/", "/", ""]);
    assert_eq!(
        below["names"],
        serde_json::json!(["dir/b.txt", "dir/c.txt"]),
        "{below}"
    );
    assert_eq!(
        below["prefixes"],
        serde_json::json!(["dir/sub/"]),
        "{below}"
    );
    // Pages of two (maxResults, pageToken): every object, in order.
    let paged = python(&endpoint, "list", "bucket-1", &["", "", "2"]);
    assert_eq!(paged["names"], serde_json::json!(names), "{paged}");
    // Another bucket is another namespace.
    let other = python(&endpoint, "list", "bucket-2", &["", "", ""]);
    assert_eq!(other["names"], serde_json::json!([]), "{other}");

    python(&endpoint, "delete", "bucket-1", &["dir/c.txt"]);
    let below = python(&endpoint, "list", "bucket-1", &["dir/", "/", ""]);
    assert_eq!(below["names"], serde_json::json!(["dir/b.txt"]), "{below}");
    let gone = python(&endpoint, "reload", "bucket-1", &["dir/c.txt"]);
    assert_eq!(gone["error"], "NotFound", "{gone}");
    assert_eq!(gone["code"], 404, "{gone}");
    let gone = python(&endpoint, "delete", "bucket-1", &["dir/c.txt"]);
    assert_eq!(gone["code"], 404, "{gone}");
}

#[test]
fn python_if_generation_match_zero_twice_refuses_the_second() {
    let mut rng = Rng::from_env_or_os();
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = TestServer::start(BIN);
    let endpoint = server.url("");
    let first = random_bytes(&mut rng, 5000);
    let second = random_bytes(&mut rng, 6000);
    let (one, two) = (
        write_source(dir.path(), "1.bin", &first),
        write_source(dir.path(), "2.bin", &second),
    );
    let uploaded = python(
        &endpoint,
        "upload",
        "default",
        &["once.bin", &one, "0", "0"],
    );
    assert_object(&uploaded, "once.bin", &first);
    let refused = python(
        &endpoint,
        "upload",
        "default",
        &["once.bin", &two, "0", "0"],
    );
    assert_eq!(refused["error"], "PreconditionFailed", "{refused}");
    assert_eq!(refused["code"], 412, "{refused}");
    // The same with a resumable upload: refused too (§7.5).
    let refused = python(
        &endpoint,
        "upload",
        "default",
        &["once.bin", &two, "262144", "0"],
    );
    assert_eq!(refused["code"], 412, "{refused}");
    // The first object stays, generation and bytes.
    let reloaded = python(&endpoint, "reload", "default", &["once.bin"]);
    assert_eq!(reloaded["generation"], uploaded["generation"]);
    let (_, stored) = get_blocking(&files_url(&server, "once.bin"));
    assert_same_bytes("once.bin", &stored, &first);
    // Its own generation matches; another does not.
    let generation = uploaded["generation"]
        .as_u64()
        .expect("generation")
        .to_string();
    let replaced = python(
        &endpoint,
        "upload",
        "default",
        &["once.bin", &two, "0", &generation],
    );
    assert_object(&replaced, "once.bin", &second);
    assert!(replaced["generation"].as_u64() > uploaded["generation"].as_u64());
}

#[test]
fn python_session_finished_by_another_process_after_a_status_query() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 2 * MIB as usize + 777);
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = write_source(dir.path(), "source.bin", &data);
    let server = TestServer::start(BIN);
    let endpoint = server.url("");
    // create_resumable_upload_session, and its first MiB sent.
    let session = python(
        &endpoint,
        "session",
        "default",
        &["handed-over.bin", &source, "1048576"],
    );
    let url = session["url"].as_str().expect("a session URL").to_owned();
    assert!(url.contains("/uploads/"), "{url}");
    // Another process: recover() (a `bytes */*` query), then the rest,
    // with x-goog-hash covering the whole object on the last chunk.
    let finished = python(&endpoint, "finish", "default", &[&url, &source, "524288"]);
    assert_eq!(finished["resumed_at"], MIB, "{finished}");
    let object = &finished["object"];
    assert_eq!(object["kind"], "storage#object", "{object}");
    assert_eq!(object["name"], "handed-over.bin");
    assert_eq!(object["bucket"], "default");
    assert_eq!(object["size"], data.len().to_string());
    assert_eq!(object["crc32c"], crc32c_b64(&data));
    assert_eq!(object["md5Hash"], md5_b64(&data));
    let (_, stored) = get_blocking(&files_url(&server, "handed-over.bin"));
    assert_same_bytes("handed-over.bin", &stored, &data);
}

#[test]
fn one_session_continued_by_tus_and_by_tenax_upload() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 3 * MIB as usize + 99);
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = write_source(dir.path(), "continued.bin", &data);
    let server = TestServer::start(BIN);
    let endpoint = server.url("");
    let rt = runtime();

    // tus: HEAD for the offset, PATCH the rest.
    let session = python(
        &endpoint,
        "session",
        "default",
        &["by-tus.bin", &source, "1048576"],
    );
    let url = session["url"].as_str().expect("a session URL");
    let head = rt.block_on(request(
        Method::HEAD,
        url,
        &[("tus-resumable", "1.0.0")],
        vec![],
    ));
    assert_eq!(
        head.header("upload-offset"),
        Some("1048576"),
        "{}",
        head.describe()
    );
    let patch = rt.block_on(request(
        Method::PATCH,
        url,
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", "1048576"),
            ("content-type", "application/offset+octet-stream"),
        ],
        data[MIB as usize..].to_vec(),
    ));
    assert_eq!(patch.status, 204, "{}", patch.describe());
    let reloaded = python(&endpoint, "reload", "default", &["by-tus.bin"]);
    assert_object(&reloaded, "by-tus.bin", &data);

    // `tenax upload` resumes what its journal names (crates/client's
    // journal.rs): an entry that names the GCS session, as a `tenax upload`
    // cut off after it created the session would have left.
    let session = python(
        &endpoint,
        "session",
        "default",
        &["continued.bin", &source, "2097152"],
    );
    let url = session["url"].as_str().expect("a session URL");
    let target = server.url("/api/upload?file=continued.bin");
    let journal = dir.path().join("journal");
    write_journal_entry(&journal, Path::new(&source), &target, url);
    let out = run_cli(
        &[
            &source,
            &target,
            "--json",
            "--journal-dir",
            journal.to_str().expect("UTF-8"),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "tenax upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_line(&out);
    assert_eq!(report["sha256"], sha256_hex(&data), "{report}");
    let sent = report["bytes_sent"].as_u64().expect("bytes_sent");
    assert!(
        sent <= data.len() as u64 - 2 * MIB,
        "tenax upload sent {sent} bytes: it did not resume the session"
    );
    // The session itself completed, with what the GCS client gave it.
    let (status, stored) = get_blocking(url);
    assert_eq!(status, 200, "the GCS session did not complete");
    assert_same_bytes("continued.bin", &stored, &data);
    let reloaded = python(&endpoint, "reload", "default", &["continued.bin"]);
    assert_object(&reloaded, "continued.bin", &data);
    assert_eq!(reloaded["content_type"], "application/x-test", "{reloaded}");
}

#[test]
fn a_declared_digest_that_does_not_match_refuses_completion_and_keeps_the_bytes() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 100_000);
    let server = TestServer::start(BIN);
    let rt = runtime();
    let total = data.len();
    let range = format!("bytes 0-{}/{total}", total - 1);
    for (resource, hash) in [
        // md5Hash in the initiation's metadata…
        (
            serde_json::json!({"name": "declared.bin", "md5Hash": md5_b64(b"other")}),
            None,
        ),
        // …or x-goog-hash on the request that completes it.
        (
            serde_json::json!({"name": "hashed.bin"}),
            Some(format!("crc32c={}", crc32c_b64(b"other"))),
        ),
    ] {
        let name = resource["name"].as_str().expect("name").to_owned();
        let init = rt.block_on(request(
            Method::POST,
            &server.url("/upload/storage/v1/b/default/o?uploadType=resumable"),
            &[("content-type", "application/json")],
            resource.to_string().into_bytes(),
        ));
        assert_eq!(init.status, 200, "{}", init.describe());
        let session = init.header("location").expect("Location").to_owned();
        let mut headers = vec![("content-range", range.as_str())];
        if let Some(hash) = &hash {
            headers.push(("x-goog-hash", hash.as_str()));
        }
        let put = rt.block_on(request(Method::PUT, &session, &headers, data.clone()));
        assert_eq!(put.status, 400, "{}", put.describe());
        let error = put.json();
        assert_eq!(error["error"]["code"], 400, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not match")),
            "{error}"
        );
        // The bytes are kept: a status query reports them all, and the
        // object is not published.
        let query = rt.block_on(request(
            Method::PUT,
            &session,
            &[("content-range", "bytes */*")],
            vec![],
        ));
        // Completion is still refused (a query may complete, §1.3 rule 4),
        // and every byte is still held.
        assert_eq!(query.status, 400, "{}", query.describe());
        let held = format!("bytes=0-{}", total - 1);
        assert_eq!(query.header("range"), Some(held.as_str()));
        let (status, _) = get_blocking(&files_url(&server, &name));
        assert_eq!(status, 404, "{name} was published");
    }
    // A malformed x-goog-hash is a 400 in GCS's shape, the object unmade.
    let media = rt.block_on(request(
        Method::POST,
        &server.url("/upload/storage/v1/b/default/o?uploadType=media&name=m.bin"),
        &[("x-goog-hash", "crc32c=abc")],
        data.clone(),
    ));
    assert_eq!(media.status, 400, "{}", media.describe());
    assert_eq!(media.json()["error"]["errors"][0]["reason"], "invalid");
    // A media upload with the right one completes.
    let hash = format!("crc32c={},md5={}", crc32c_b64(&data), md5_b64(&data));
    let media = rt.block_on(request(
        Method::POST,
        &server.url("/upload/storage/v1/b/default/o?uploadType=media&name=m.bin"),
        &[("x-goog-hash", hash.as_str())],
        data.clone(),
    ));
    assert_eq!(media.status, 200, "{}", media.describe());
    assert_eq!(media.json()["size"], total.to_string());
}

#[test]
fn a_bucket_the_token_may_not_use_answers_403_in_gcs_shape() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\ntoken = \"gcs-token-of-team-a-0123\"\nnamespace = \"team-a\"\nname = \"a\"\n",
    )
    .expect("write the tokens file");
    let server = TestServer::start_with(BIN, &["--tokens-file", tokens.to_str().expect("UTF-8")]);
    let rt = runtime();
    let bearer = [("authorization", "Bearer gcs-token-of-team-a-0123")];
    let own = rt.block_on(request(
        Method::GET,
        &server.url("/storage/v1/b/team-a/o"),
        &bearer,
        vec![],
    ));
    assert_eq!(own.status, 200, "{}", own.describe());
    let other = rt.block_on(request(
        Method::GET,
        &server.url("/storage/v1/b/team-b/o"),
        &bearer,
        vec![],
    ));
    assert_eq!(other.status, 403, "{}", other.describe());
    assert_eq!(other.json()["error"]["errors"][0]["reason"], "forbidden");
    let upload = rt.block_on(request(
        Method::POST,
        &server.url("/upload/storage/v1/b/team-b/o?uploadType=media&name=x"),
        &bearer,
        b"x".to_vec(),
    ));
    assert_eq!(upload.status, 403, "{}", upload.describe());
    // No credential: 401, in GCS's shape too.
    let anonymous = rt.block_on(request(
        Method::GET,
        &server.url("/storage/v1/b/team-a/o"),
        &[],
        vec![],
    ));
    assert_eq!(anonymous.status, 401, "{}", anonymous.describe());
    assert_eq!(anonymous.json()["error"]["code"], 401);
}

#[test]
fn python_resumable_upload_through_a_link_cut_every_few_mib() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 24 * MIB as usize + 4321);
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = write_source(dir.path(), "source.bin", &data);
    let server = TestServer::start(BIN);
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::start(
        server.addr(),
        (2 * MIB, 5 * MIB),
        Rng::new(rng.next_u64()),
    ));
    let endpoint = format!("http://{}", proxy.addr());
    let uploaded = python(
        &endpoint,
        "upload",
        "default",
        &["cut.bin", &source, "1048576"],
    );
    assert_object(&uploaded, "cut.bin", &data);
    let stats = proxy.stats();
    let sent = stats.client_bytes.load(Ordering::Relaxed);
    let cuts = stats.cuts.load(Ordering::Relaxed);
    let resent = sent.saturating_sub(data.len() as u64);
    eprintln!(
        "google-cloud-storage through the cutting proxy: {} bytes, {cuts} cuts, \
         {sent} bytes forwarded, {resent} re-sent ({:.1}%)",
        data.len(),
        resent as f64 * 100.0 / data.len() as f64
    );
    assert!(cuts >= 3, "the link was cut {cuts} times");
    let (_, stored) = get_blocking(&files_url(&server, "cut.bin"));
    assert_same_bytes("cut.bin", &stored, &data);
}

#[test]
fn node_resumable_write_stream_and_download() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 3 * MIB as usize + 5);
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = write_source(dir.path(), "source.bin", &data);
    let server = TestServer::start(BIN);
    let modules = peers_node_modules();
    let storage = modules.join("@google-cloud/storage/package.json");
    assert!(
        storage.exists(),
        "{} is missing: run scripts/test",
        storage.display()
    );
    // The driver runs from the peers folder, where its imports resolve.
    let driver = peers_dir().join("node/gcs_node.mjs");
    std::fs::copy(script("gcs_node.mjs"), &driver).expect("copy the Node driver");
    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    let mut command = Command::new(node);
    command
        .arg(&driver)
        .args(["default", "node/object.bin", &source, "1048576"])
        .env("TENAX_URL", server.url(""))
        .env_remove("STORAGE_EMULATOR_HOST");
    let result = drive(command, "gcs_node.mjs", CLIENT_TIMEOUT).succeeded();
    let metadata = &result["metadata"];
    assert_eq!(metadata["name"], "node/object.bin", "{metadata}");
    assert_eq!(metadata["size"], data.len().to_string());
    assert_eq!(metadata["crc32c"], crc32c_b64(&data));
    assert_eq!(metadata["md5Hash"], md5_b64(&data));
    assert_eq!(metadata["metadata"]["origin"], "node");
    assert_eq!(result["sha256"], sha256_hex(&data));
    let (_, stored) = get_blocking(&files_url(&server, "node/object.bin"));
    assert_same_bytes("node/object.bin", &stored, &data);
}

#[test]
fn a_precondition_is_checked_again_when_the_session_completes() {
    let mut rng = Rng::from_env_or_os();
    let data = random_bytes(&mut rng, 70_000);
    let server = TestServer::start(BIN);
    let rt = runtime();
    // A session that may only create the object (ifGenerationMatch=0)…
    let init = rt.block_on(request(
        Method::POST,
        &server.url(
            "/upload/storage/v1/b/default/o?uploadType=resumable&name=race.bin&ifGenerationMatch=0",
        ),
        &[],
        vec![],
    ));
    assert_eq!(init.status, 200, "{}", init.describe());
    let session = init.header("location").expect("Location").to_owned();
    // …then another client publishes it first…
    let other = rt.block_on(request(
        Method::POST,
        &server.url("/upload/storage/v1/b/default/o?uploadType=media&name=race.bin"),
        &[],
        b"first".to_vec(),
    ));
    assert_eq!(other.status, 200, "{}", other.describe());
    // …so the session's completion is refused with 412 (§7.5), and the
    // object stays the other client's.
    let range = format!("bytes 0-{}/{}", data.len() - 1, data.len());
    let put = rt.block_on(request(
        Method::PUT,
        &session,
        &[("content-range", range.as_str())],
        data.clone(),
    ));
    assert_eq!(put.status, 412, "{}", put.describe());
    assert_eq!(
        put.json()["error"]["errors"][0]["reason"],
        "conditionNotMet"
    );
    let (status, stored) = get_blocking(&files_url(&server, "race.bin"));
    assert_eq!(status, 200);
    assert_eq!(stored, b"first");
}
