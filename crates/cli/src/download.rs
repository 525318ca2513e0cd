//! `tenax download`: fetch a file with range requests, resuming after
//! failures and across runs.
//!
//! Exit codes (see [`tenax_client::Error::exit_code`]): 0 success, 1 other
//! error, 2 usage error (clap), 3 rejected by the server or a bad URL,
//! 4 gave up (retries or `--max-time` exhausted), 5 the file's SHA-256
//! differs from the server's `Repr-Digest`, 6 the file cannot be written.

use std::path::PathBuf;
use std::process::ExitCode;

use tenax_client::{DownloadProgress, Downloader, Event};

use crate::transfer_args::{RetryArgs, progress_bar};

/// Arguments of `tenax download`.
#[derive(clap::Args, Debug)]
pub(crate) struct DownloadArgs {
    /// What to download: `http://host:port/files/NAME`, or
    /// `http://host:port/uploads/ID` (with `--follow`, even while the upload
    /// is in progress).
    pub(crate) url: String,

    /// Where to write it [default: the last segment of the URL's path, in
    /// the current directory]. A partial FILE is resumed; its progress is
    /// kept in `FILE.tenax-download` until the download is complete.
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Fetch up to N segments over N connections at once (one connection if
    /// the server does not serve ranges).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) connections: u16,

    /// Follow an upload still in progress: fetch what the server holds, then
    /// poll for more until the upload is complete.
    #[arg(long)]
    pub(crate) follow: bool,

    #[command(flatten)]
    pub(crate) retry: RetryArgs,

    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Print the result as one JSON line on stdout (url, file, size,
    /// sha256, verified, bytes_received, retries, restarts, connections,
    /// seconds).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `tenax download`. Download failures are reported on stderr and
/// turned into the documented exit codes; `Err` is left for failures of the
/// command itself.
pub(crate) async fn run(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let output = match args.output.clone() {
        Some(path) => path,
        None => match default_output(&args.url) {
            Some(path) => path,
            None => {
                eprintln!(
                    "tenax: error: cannot name the file after {:?}; use -o FILE",
                    args.url
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    let bar = progress_bar(args.quiet, args.json)?;
    let (reporter, talk) = (bar.clone(), !args.quiet);
    let downloader = Downloader::new()
        .connections(usize::from(args.connections))
        .follow(args.follow)
        .max_retries(args.retry.max_retries)
        .probe_interval(args.retry.probe_interval)
        .max_time(args.retry.max_time)
        .stall_timeout(args.retry.stall_timeout)
        .bearer_token(args.retry.token.clone())
        .extra_root_certificates(args.retry.cacert_pem()?)
        .on_progress(move |progress: DownloadProgress| {
            match progress.total {
                Some(total) => reporter.set_length(total),
                None => reporter.set_length(progress.on_disk),
            }
            reporter.set_position(progress.on_disk);
            if let Some(line) = talk.then(|| describe(&progress)).flatten() {
                if reporter.is_hidden() {
                    eprintln!("tenax: {line}");
                } else {
                    reporter.println(format!("tenax: {line}"));
                }
            }
        });
    let result = downloader.download(&args.url, &output).await;
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let seconds = report.elapsed.as_secs_f64();
            if args.json {
                let line = serde_json::json!({
                    "url": report.url,
                    "file": report.file,
                    "size": report.size,
                    "sha256": report.sha256,
                    "verified": report.verified,
                    "bytes_received": report.bytes_received,
                    "retries": report.retries,
                    "restarts": report.restarts,
                    "connections": report.connections,
                    "seconds": seconds,
                });
                println!("{line}");
            } else if !args.quiet {
                let check = if report.verified {
                    "verified against Repr-Digest"
                } else {
                    "not verified: the server sent no Repr-Digest"
                };
                println!(
                    "downloaded {} ({} bytes) in {seconds:.1}s: sha256 {} ({check}); {} bytes received, {} retries, {} restarts",
                    report.file.display(),
                    report.size,
                    report.sha256,
                    report.bytes_received,
                    report.retries,
                    report.restarts,
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

/// The file named after the last segment of the URL's path.
fn default_output(url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next()?;
    let (_, rest) = path.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let name = path.rsplit('/').next()?;
    let name = percent_decode(name)?;
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return None;
    }
    Some(PathBuf::from(name))
}

/// Decodes `%XX` escapes (UTF-8 required).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The line printed for a progress report, if any.
fn describe(progress: &DownloadProgress) -> Option<String> {
    match &progress.event {
        Event::Retrying { after, reason } => {
            Some(format!("{reason}; retrying in {:.1}s", after.as_secs_f64()))
        }
        Event::Resumed { from } => Some(format!("resuming with {from} bytes on disk")),
        Event::Restarted { reason } => Some(format!("starting over: {reason}")),
        Event::Warning { message } => Some(format!("warning: {message}")),
        Event::Started {
            connections,
            total: Some(total),
        } if *connections > 1 => Some(format!(
            "fetching {total} bytes over {connections} connections"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        assert_eq!(
            default_output("http://h:1/files/a%20b.bin?x=1"),
            Some(PathBuf::from("a b.bin"))
        );
        assert_eq!(
            default_output("http://h/uploads/abc"),
            Some(PathBuf::from("abc"))
        );
        for bad in [
            "http://h/",
            "http://h",
            "http://h/files/..",
            "http://h/a%2Fb",
            "x",
        ] {
            assert_eq!(default_output(bad), None, "{bad}");
        }
    }
}
