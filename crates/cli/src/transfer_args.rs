//! Options and presentation shared by `tenax upload` and `tenax download`.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::units::parse_duration;

/// How long to keep trying.
#[derive(Debug, clap::Args)]
pub(crate) struct RetryArgs {
    /// Give up after this many failed attempts in a row without progress
    /// (per connection) because of the server: errors it answers with
    /// (`5xx`, `429`, …) or TLS. Network failures (refused, reset or
    /// timed-out connections, stalls) do not count: through a link's
    /// outage the transfer probes every `--probe-interval` until
    /// `--max-time`, however long it lasts. `0` retries nothing at all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) max_retries: u32,

    /// While the link is down, probe the server this often (±10%): the
    /// transfer resumes within about this long of the link's return.
    /// Seconds, or a duration such as `500ms`, `2s`.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    pub(crate) probe_interval: Duration,

    /// Give up if the transfer takes longer than this: seconds, or a
    /// duration such as `90s`, `10m`, `1h30m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_time: Option<Duration>,

    /// Treat a connection that moves nothing for this long as dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub(crate) stall_timeout: Duration,

    /// The bearer token the server gave you (sent as `Authorization:
    /// Bearer …`). Prefer the environment variable: a flag's value shows
    /// in the process list. A signed URL needs no token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TENAX_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    /// Also trust the certificate authorities in this PEM file (a server
    /// with a private or self-signed certificate).
    #[arg(long, value_name = "FILE", env = "TENAX_CACERT")]
    pub(crate) cacert: Option<std::path::PathBuf>,
}

impl RetryArgs {
    /// The PEM bytes of `--cacert`, if given.
    pub(crate) fn cacert_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.cacert
            .as_deref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|error| anyhow::anyhow!("--cacert {}: {error}", path.display()))
            })
            .transpose()
    }
}

/// A progress bar on a terminal's stderr, hidden when `quiet`, when the
/// result goes out as JSON, or when stderr is not a terminal.
pub(crate) fn progress_bar(quiet: bool, json: bool) -> anyhow::Result<ProgressBar> {
    if quiet || json || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let style = ProgressStyle::with_template(
        "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )?
    .progress_chars("=> ");
    Ok(ProgressBar::new(0).with_style(style))
}
