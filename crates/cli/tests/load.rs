//! Load at CI size: 200 concurrent tus uploads of 64 KiB–1 MiB from one
//! process against the real binary, with status queries (`HEAD`) timed
//! during the load (`bench/load` runs 1,000 uploads of 64 KiB–4 MiB on a
//! release build). Zero errors, every digest right, every status answer
//! sane; the latencies and the server's RSS are printed.

mod load_run;
mod support;

use std::time::Duration;

use load_run::{LoadConfig, run};
use support::{BIN, KIB, MIB};
use tenax_testkit::{Rng, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_uploads_with_status_queries() {
    let mut rng = Rng::from_env_or_os();
    let server = TestServer::start(BIN);
    let config = LoadConfig {
        uploads: 200,
        sizes: (64 * KIB, MIB),
        pollers: 4,
        seed: rng.next_u64(),
        server_pid: None,
        timeout: Duration::from_secs(120),
        tenax_final_query: true,
    };
    let report = run(&format!("http://{}", server.addr()), &config).await;
    eprintln!("load: {}", report.summary());
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    assert_eq!(report.completed, config.uploads);
    assert!(
        report.status_latencies.len() >= 4,
        "only {} status queries ran during the load",
        report.status_latencies.len()
    );
    // The server timed every status query it answered.
    let timed = report
        .server_status
        .expect("tenax_request_seconds has the HEADs");
    assert!(
        timed.count >= report.status_latencies.len() as u64,
        "the server timed {} status queries, the client got {} answers",
        timed.count,
        report.status_latencies.len()
    );
    assert!(timed.p50 <= timed.p99);
}
