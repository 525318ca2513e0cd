//! `tenax serve`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tenax_core::storage::LocalDisk;
use tenax_core::{Engine, metric};
use tenax_server::MetricsRender;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

pub(crate) use crate::config::ServeArgs;
use crate::config::{LogFormat, ServeConfig};

/// Buckets of the fsync latency histogram, in seconds.
const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// How often the metrics recorder does its housekeeping.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeConfig {
        listen,
        data,
        engine: engine_config,
        expiry_interval,
        mut server,
        log,
        log_format,
    } = args.resolve()?;
    let filter = EnvFilter::try_new(&log).context("invalid log filter")?;
    match log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    server.metrics = Some(install_metrics()?);
    let storage = LocalDisk::open(&data)
        .with_context(|| format!("cannot open the data directory {}", data.display()))?;
    let engine = Engine::open(Arc::new(storage), engine_config)
        .await
        .context("cannot read the uploads in the data directory")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        let scheme = if server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        writeln!(stdout, "listening on {scheme}://{address}")?;
        stdout.flush()?;
    }
    tracing::info!(%address, data = %data.display(), "serving");
    let collector = engine.spawn_collector(expiry_interval);
    let app = tenax_server::router(engine.clone(), server.clone());
    tenax_server::serve(listener, app, engine, &server, shutdown_signal()).await;
    // `serve` shut the engine down, which ends the collector.
    collector.abort();
    Ok(())
}

/// Installs the Prometheus recorder behind the `metrics` facade the library
/// crates feed, describes the metrics, and keeps the recorder tidy.
fn install_metrics() -> anyhow::Result<MetricsRender> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(metric::FSYNC_SECONDS.into()), &FSYNC_BUCKETS)
        .context("invalid metric buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    use metrics::Unit;
    metrics::describe_counter!(
        "tenax_requests_total",
        "HTTP requests answered, by dialect (seed, tus, ietf, download, other) and status."
    );
    metrics::describe_counter!(
        "tenax_bytes_received_total",
        Unit::Bytes,
        "Upload body bytes received."
    );
    metrics::describe_counter!(
        "tenax_bytes_served_total",
        Unit::Bytes,
        "Download body bytes served."
    );
    metrics::describe_gauge!(metric::ACTIVE, "Uploads in progress.");
    metrics::describe_counter!(metric::COMPLETED, "Uploads completed.");
    metrics::describe_counter!(metric::EXPIRED, "Uploads that expired unfinished.");
    metrics::describe_counter!(metric::CANCELLED, "Uploads cancelled.");
    metrics::describe_histogram!(
        metric::FSYNC_SECONDS,
        Unit::Seconds,
        "Latency of each fsync of upload data."
    );
    // Present from the first scrape on, not from the first event.
    for name in [metric::COMPLETED, metric::EXPIRED, metric::CANCELLED] {
        metrics::counter!(name).increment(0);
    }
    for name in ["tenax_bytes_received_total", "tenax_bytes_served_total"] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(metric::ACTIVE).increment(0.0);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(MetricsRender::new(move || handle.render()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
}
