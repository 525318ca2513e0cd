//! `tenax serve`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tenax_cluster::Cluster;
use tenax_core::storage::LocalDisk;
use tenax_core::{
    Catalog, CompletionAnswer, Engine, Hooks, LocalCatalog, NoHooks, Storage, metric,
};
use tenax_hooks::{Outbox, metric as hook_metric};
use tenax_objstore::{MetaStore, ObjectStorage};
use tenax_server::{Auth, MetricsRender, metric as server_metric};
use tokio::net::{TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

pub(crate) use crate::config::ServeArgs;
use crate::config::{LogFormat, ServeConfig};
use crate::credentials::Credentials;

/// `--data`: `s3://BUCKET/PREFIX` is an object store (endpoint, region and
/// credentials from the `AWS_*` environment), anything else a directory.
/// With `--cluster`, the object store's records live in the cluster's
/// database.
fn open_storage(
    data: &std::path::Path,
    cluster: Option<&Arc<Cluster>>,
) -> anyhow::Result<Arc<dyn Storage>> {
    if let Some(url) = data.to_str().filter(|_| is_object_store(data)) {
        let mut storage = ObjectStorage::from_url(url)
            .with_context(|| format!("cannot set up the object store {url}"))?;
        if let Some(cluster) = cluster {
            storage = storage.with_meta(Arc::clone(cluster) as Arc<dyn MetaStore>);
        }
        return Ok(Arc::new(storage));
    }
    let storage = LocalDisk::open(data)
        .with_context(|| format!("cannot open the data directory {}", data.display()))?;
    Ok(Arc::new(storage))
}

/// Where the hooks' outbox lives: `--hook-outbox`, else DATA/outbox on
/// local disk. It needs a local disk (it is fsync'd before answers), so
/// with object storage it must be given.
fn outbox_dir(
    data: &std::path::Path,
    configured: Option<&std::path::Path>,
) -> anyhow::Result<std::path::PathBuf> {
    match configured {
        Some(dir) => Ok(dir.to_owned()),
        None if is_object_store(data) => Err(anyhow::anyhow!(
            "config key \"hook_outbox\": hooks need a local directory for their outbox when \
             the data is in an object store"
        )),
        None => Ok(data.join("outbox")),
    }
}

fn is_object_store(data: &std::path::Path) -> bool {
    data.to_str().is_some_and(|data| data.starts_with("s3://"))
}

/// Buckets of the fsync latency histogram, in seconds.
const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Buckets of request latency: a status query answers in well under a
/// millisecond on an idle server; a chunk upload takes as long as its body.
const REQUEST_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Connections the kernel may hold for the accept loop (it caps this at
/// `net.core.somaxconn`, 4096 by default). `TcpListener::bind`'s 1024
/// overflowed when a thousand clients connected at once (`bench/load`):
/// the kernel dropped their SYNs, and each waited a second or three for
/// its retransmission.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `address` as `TcpListener::bind` does, with a deeper backlog.
fn bind(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How often the metrics recorder does its housekeeping.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeConfig {
        credentials,
        listen,
        data,
        engine: engine_config,
        expiry_interval,
        mut server,
        log,
        log_format,
        hooks,
        hook_outbox,
        cluster,
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
    let cluster = match &cluster {
        Some(url) => Some(
            Cluster::connect(url)
                .await
                .context("cannot join the cluster")?,
        ),
        None => None,
    };
    let storage = open_storage(&data, cluster.as_ref())?;
    let outbox =
        if hooks.delivers() || hooks.pre_create_url.is_some() || hooks.pre_create_command.is_some()
        {
            let completion_answer = hooks.completion_answer;
            let outbox = Outbox::open(&outbox_dir(&data, hook_outbox.as_deref())?, hooks)?;
            if completion_answer {
                server.completion_answer = Some(Arc::clone(&outbox) as Arc<dyn CompletionAnswer>);
            }
            Some(outbox)
        } else {
            None
        };
    let engine_hooks: Arc<dyn Hooks> = match &outbox {
        Some(outbox) => Arc::clone(outbox) as Arc<dyn Hooks>,
        None => Arc::new(NoHooks),
    };
    let catalog: Arc<dyn Catalog> = match &cluster {
        Some(cluster) => Arc::clone(cluster) as Arc<dyn Catalog>,
        None => Arc::new(LocalCatalog::new()),
    };
    let engine = Engine::open_with_catalog(storage, engine_config, engine_hooks, catalog)
        .await
        .context("cannot read the uploads in the data directory")?;
    // After the engine opened: recovery may have released events.
    let delivery = outbox.as_ref().map(Outbox::spawn_delivery);
    // Quotas apply to an open server too (its default namespace).
    let table = credentials.load()?;
    engine.set_quotas(table.quotas);
    if credentials.any() {
        server.auth = Arc::new(Auth::required(
            table.tokens,
            credentials.signing_key.clone(),
        ));
        reload_on_hangup(credentials, Arc::clone(&server.auth), engine.clone());
    }
    let listener = bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
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
    if let Some(delivery) = delivery {
        // Undelivered events stay in the outbox for the next start.
        delivery.abort();
    }
    Ok(())
}

/// Reads the tokens and quotas again on SIGHUP. A file that fails to load
/// leaves the credentials as they were.
fn reload_on_hangup(credentials: Credentials, auth: Arc<Auth>, engine: Engine) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; tokens will not be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match credentials.load() {
                Ok(table) => {
                    let count = table.tokens.len();
                    auth.replace_tokens(table.tokens);
                    engine.set_quotas(table.quotas);
                    tracing::info!(tokens = count, "credentials reloaded");
                }
                Err(error) => tracing::error!("credentials not reloaded: {error:#}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (credentials, auth, engine);
}

/// Installs the Prometheus recorder behind the `metrics` facade the library
/// crates feed, describes the metrics, and keeps the recorder tidy.
fn install_metrics() -> anyhow::Result<MetricsRender> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(metric::FSYNC_SECONDS.into()), &FSYNC_BUCKETS)
        .context("invalid metric buckets")?
        .set_buckets_for_metric(
            Matcher::Full(server_metric::REQUEST_SECONDS.into()),
            &REQUEST_BUCKETS,
        )
        .context("invalid metric buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    use metrics::Unit;
    metrics::describe_histogram!(
        server_metric::REQUEST_SECONDS,
        Unit::Seconds,
        "Seconds from a request's arrival to its answer, by dialect and method \
         (for an upload, its body has been read and acknowledged by then)."
    );
    metrics::describe_counter!(
        server_metric::REQUESTS,
        "HTTP requests answered, by dialect (seed, tus, ietf, download, other) and status."
    );
    metrics::describe_counter!(
        server_metric::BYTES_RECEIVED,
        Unit::Bytes,
        "Upload body bytes received."
    );
    metrics::describe_counter!(
        server_metric::BYTES_SERVED,
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
    metrics::describe_counter!(
        hook_metric::DELIVERIES,
        "Upload events accepted by a hook, by target (webhook, command) and event."
    );
    metrics::describe_counter!(
        hook_metric::FAILURES,
        "Failed hook delivery attempts, by target (webhook, command) and event."
    );
    metrics::describe_counter!(
        hook_metric::DROPPED,
        "Upload events given up after the maximum age, by event."
    );
    metrics::describe_gauge!(
        hook_metric::OUTBOX_DEPTH,
        "Upload events in the outbox waiting for delivery."
    );
    metrics::describe_counter!(
        hook_metric::PRE_CREATE,
        "Pre-create hook calls, by result (accepted, rejected, failed)."
    );
    metrics::gauge!(hook_metric::OUTBOX_DEPTH).increment(0.0);
    // Present from the first scrape on, not from the first event.
    for name in [metric::COMPLETED, metric::EXPIRED, metric::CANCELLED] {
        metrics::counter!(name).increment(0);
    }
    for name in [server_metric::BYTES_RECEIVED, server_metric::BYTES_SERVED] {
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
