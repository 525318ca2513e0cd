//! `tenax upload`: send a file to a tenax server, resuming after failures.
//!
//! Exit codes (see [`tenax_client::Error::exit_code`]): 0 success, 1 other
//! error, 2 usage error (clap), 3 rejected by the server or a bad URL,
//! 4 gave up (retries or `--max-time` exhausted), 5 the server's SHA-256 or
//! size differs from the local file's, 6 the local file is unreadable or
//! changed during the upload.

use std::path::PathBuf;
use std::process::ExitCode;

use tenax_client::{Event, Progress, Protocol, Uploader};

use crate::transfer_args::{RetryArgs, progress_bar};
use crate::units::parse_size;

/// Arguments of `tenax upload`.
#[derive(clap::Args, Debug)]
pub(crate) struct UploadArgs {
    /// The file to upload.
    pub(crate) file: PathBuf,

    /// The server: `http://host:port` (the upload is named after the file)
    /// or `http://host:port/api/upload?file=NAME`.
    pub(crate) url: String,

    /// The upload protocol: `seed` (Google-style "308 Resume Incomplete"),
    /// `tus` (tus 1.0.0 at `{base}/uploads`), `ietf` (the IETF resumable
    /// upload draft, interop 9, at `{base}/uploads`) or `auto` (ask the
    /// server with `OPTIONS {base}/uploads`: tus if offered, else ietf, else
    /// seed).
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value = "seed")]
    pub(crate) protocol: ProtocolArg,

    /// Upload the file as N parts over N connections at once (tus
    /// concatenation; needs `--protocol tus` or `auto` and a server that
    /// offers it, otherwise a warning and one connection).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) parallel: u16,

    /// The most bytes one request carries: a number of bytes or a size such
    /// as `256KiB`, `8MiB`, `1GiB` (`KB`, `MB`, `GB` are powers of 1000)
    /// [default: no limit, the rest of the file in one request]. The server
    /// keeps what arrives of a cut request, so a limit only helps with a
    /// server or proxy that caps request bodies.
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size)]
    pub(crate) chunk_size: Option<u64>,

    /// The most bytes each connection lets the kernel hold unsent
    /// (`TCP_NOTSENT_LOWAT`, Linux): what the kernel holds when a link drops
    /// is lost and sent again, so keep it small on flapping links; `0` leaves
    /// the system's default (unlimited).
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_unsent_limit)]
    pub(crate) unsent_limit: u32,

    /// A fixed kernel send buffer for each connection (`SO_SNDBUF`: unsent
    /// and in-flight bytes together; it also caps the speed at about SIZE
    /// per round trip) [default: autotuned by the system].
    #[arg(long, value_name = "SIZE", value_parser = parse_send_buffer)]
    pub(crate) send_buffer: Option<usize>,

    #[command(flatten)]
    pub(crate) retry: RetryArgs,

    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Print the result as one JSON line on stdout (url, protocol, parts,
    /// name, size, sha256, verified, bytes_sent, retries, seconds).
    #[arg(long)]
    pub(crate) json: bool,

    /// Where to remember interrupted uploads so the next run resumes them
    /// [default: $XDG_STATE_HOME/tenax or ~/.local/state/tenax].
    #[arg(long, value_name = "DIR", env = "TENAX_JOURNAL_DIR")]
    pub(crate) journal_dir: Option<PathBuf>,

    /// Do not keep a resume journal.
    #[arg(long, conflicts_with = "journal_dir")]
    pub(crate) no_journal: bool,
}

/// The values of `--protocol`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtocolArg {
    /// Google-style "308 Resume Incomplete" at `/api/upload?file=NAME`.
    Seed,
    /// tus 1.0.0 at `/uploads`.
    Tus,
    /// The IETF resumable upload draft (interop 9) at `/uploads`.
    Ietf,
    /// Ask the server which one it speaks.
    Auto,
}

impl From<ProtocolArg> for Protocol {
    fn from(arg: ProtocolArg) -> Self {
        match arg {
            ProtocolArg::Seed => Protocol::Seed,
            ProtocolArg::Tus => Protocol::Tus,
            ProtocolArg::Ietf => Protocol::Ietf,
            ProtocolArg::Auto => Protocol::Auto,
        }
    }
}

/// Runs `tenax upload`. Upload failures are reported on stderr and turned
/// into the documented exit codes; `Err` is left for failures of the
/// command itself.
pub(crate) async fn run(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let bar = progress_bar(args.quiet, args.json)?;
    let journal_dir = if args.no_journal {
        None
    } else {
        args.journal_dir.clone().or_else(default_journal_dir)
    };
    let (reporter, talk) = (bar.clone(), !args.quiet);
    let uploader = Uploader::new()
        .chunk_size(args.chunk_size.unwrap_or(u64::MAX))
        .unsent_limit((args.unsent_limit > 0).then_some(args.unsent_limit))
        .send_buffer(args.send_buffer)
        .max_retries(args.retry.max_retries)
        .probe_interval(args.retry.probe_interval)
        .max_time(args.retry.max_time)
        .stall_timeout(args.retry.stall_timeout)
        .bearer_token(args.retry.token.clone())
        .extra_root_certificates(args.retry.cacert_pem()?)
        .journal_dir(journal_dir)
        .protocol(args.protocol.into())
        .parallel(usize::from(args.parallel))
        .on_progress(move |progress: Progress| {
            reporter.set_length(progress.total);
            // Sent bytes count before the server acknowledges them (a request
            // may carry the whole file); after a drop the bar steps back to
            // what the server kept.
            let shown = progress.acknowledged.saturating_add(progress.sending);
            reporter.set_position(shown.min(progress.total));
            if let Some(line) = talk
                .then(|| describe(&progress.event, progress.total))
                .flatten()
            {
                if reporter.is_hidden() {
                    eprintln!("tenax: {line}");
                } else {
                    reporter.println(format!("tenax: {line}"));
                }
            }
        });
    let result = uploader.upload(&args.file, &args.url).await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let seconds = report.elapsed.as_secs_f64();
            if args.json {
                let line = serde_json::json!({
                    "url": report.url,
                    "protocol": report.protocol,
                    "parts": report.parts,
                    "name": report.name,
                    "size": report.size,
                    "sha256": report.sha256,
                    "verified": report.verified,
                    "bytes_sent": report.bytes_sent,
                    "retries": report.retries,
                    "seconds": seconds,
                });
                println!("{line}");
            } else if !args.quiet {
                let extra = report.bytes_sent.saturating_sub(report.size);
                let checked = if report.verified {
                    ""
                } else {
                    " (the server reports no digest: unverified)"
                };
                println!(
                    "uploaded {} ({} bytes) in {seconds:.1}s: sha256 {}{checked}; {} bytes sent ({extra} re-sent), {} retries\n{}",
                    report.name,
                    report.size,
                    report.sha256,
                    report.bytes_sent,
                    report.retries,
                    report.url
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let code = error.exit_code();
            eprintln!("tenax: error: {:#}", anyhow::Error::new(error));
            Ok(ExitCode::from(code))
        }
    }
}

/// The line printed for an event of an upload of `total` bytes, if any.
fn describe(event: &Event, total: u64) -> Option<String> {
    match event {
        Event::Retrying { after, reason } => {
            Some(format!("{reason}; retrying in {:.1}s", after.as_secs_f64()))
        }
        Event::Resumed { from } => Some(format!("resuming at byte {from} of {total}")),
        Event::Restarted { reason } => Some(format!("starting over: {reason}")),
        Event::Warning { message } => Some(format!("warning: {message}")),
        Event::ProtocolChosen { protocol } => Some(format!("the server speaks {protocol}")),
        _ => None,
    }
}

/// `$XDG_STATE_HOME/tenax`, else `~/.local/state/tenax`.
fn default_journal_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state")))
        .map(|state| state.join("tenax"))
}

/// A positive size (see [`parse_size`]).
fn parse_chunk_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("the chunk size must be at least 1 byte".to_owned()),
        n => Ok(n),
    }
}

/// A size that fits `TCP_NOTSENT_LOWAT` (see [`parse_size`]).
fn parse_unsent_limit(text: &str) -> Result<u32, String> {
    u32::try_from(parse_size(text)?).map_err(|_| "the unsent limit must be below 4GiB".to_owned())
}

/// A positive size that fits `SO_SNDBUF` (see [`parse_size`]).
fn parse_send_buffer(text: &str) -> Result<usize, String> {
    match i32::try_from(parse_size(text)?) {
        Ok(0) => Err("the send buffer must be at least 1 byte".to_owned()),
        Ok(n) => usize::try_from(n).map_err(|e| e.to_string()),
        Err(_) => Err("the send buffer must be below 2GiB".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn chunk_sizes_are_positive() {
        assert!(parse_chunk_size("0").is_err());
        assert_eq!(parse_chunk_size("1"), Ok(1));
        assert_eq!(parse_chunk_size("8MiB"), Ok(8 << 20));
    }

    #[test]
    fn socket_sizes_fit_their_options() {
        assert_eq!(parse_unsent_limit("16KiB"), Ok(16 << 10));
        assert_eq!(parse_unsent_limit("0"), Ok(0));
        assert!(parse_unsent_limit("4GiB").is_err());
        assert_eq!(parse_send_buffer("256KiB"), Ok(256 << 10));
        assert!(parse_send_buffer("0").is_err());
        assert!(parse_send_buffer("2GiB").is_err());
    }

    #[test]
    fn event_lines() {
        let line = describe(
            &Event::Retrying {
                after: Duration::from_millis(2500),
                reason: "HTTP 503: busy".into(),
            },
            10,
        );
        assert_eq!(line.as_deref(), Some("HTTP 503: busy; retrying in 2.5s"));
        let line = describe(&Event::Resumed { from: 4 }, 10);
        assert_eq!(line.as_deref(), Some("resuming at byte 4 of 10"));
        assert_eq!(describe(&Event::Acknowledged, 10), None);
        let line = describe(
            &Event::Warning {
                message: "no concatenation".into(),
            },
            10,
        );
        assert_eq!(line.as_deref(), Some("warning: no concatenation"));
    }
}
