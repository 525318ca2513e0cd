//! `tenax serve`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tenax_core::storage::LocalDisk;
use tenax_core::{Engine, EngineConfig};
use tenax_server::ServerConfig;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::units::{parse_duration, parse_size};

/// Options of `tenax serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. With port 0 the system picks one; the first
    /// line on stdout names it.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TENAX_LISTEN")]
    listen: SocketAddr,
    /// Data directory (created if missing).
    #[arg(long, default_value = "./tenax-data", env = "TENAX_DATA")]
    data: PathBuf,
    /// Compute no MD5 of completed uploads (their final answer then has no
    /// `md5Hash`). MD5 is the slowest digest and caps one upload near
    /// 0.7 GB/s; only GCS-style clients that validate MD5 need it.
    #[arg(long, env = "TENAX_NO_MD5")]
    no_md5: bool,
    /// The largest upload accepted (413 beyond; advertised as `Tus-Max-Size`
    /// and in `Upload-Limit`), e.g. `50GiB`.
    #[arg(long, value_name = "SIZE", default_value = "1TiB", env = "TENAX_MAX_UPLOAD_SIZE", value_parser = parse_size)]
    max_upload_size: u64,
    /// An upload that receives nothing for this long expires, e.g. `7d`.
    #[arg(long, value_name = "DURATION", default_value = "7d", env = "TENAX_UPLOAD_TTL", value_parser = parse_duration)]
    upload_ttl: std::time::Duration,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("TENAX_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let storage = LocalDisk::open(&args.data)
        .with_context(|| format!("cannot open the data directory {}", args.data.display()))?;
    let engine = Engine::open(
        Arc::new(storage),
        EngineConfig {
            md5: !args.no_md5,
            upload_ttl: args.upload_ttl,
        },
    )
    .await
    .context("cannot read the uploads in the data directory")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{address}")?;
        stdout.flush()?;
    }
    tracing::info!(%address, data = %args.data.display(), "serving");
    let config = ServerConfig {
        max_upload_size: Some(args.max_upload_size),
        ..ServerConfig::default()
    };
    let app = tenax_server::router(engine.clone(), config.clone());
    tenax_server::serve(listener, app, engine, &config, shutdown_signal()).await;
    Ok(())
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
