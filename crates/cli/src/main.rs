//! `tenax`: the server and the client command line.
//!
//! A thin shell: argument parsing and presentation here, the work in the
//! `tenax-server`, `tenax-core` and `tenax-client` crates.

mod config;
mod credentials;
mod download;
mod manual;
mod serve;
mod sign;
mod transfer_args;
mod units;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Resumable file transfers over plain HTTP.
#[derive(Debug, Parser)]
#[command(name = "tenax", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    #[command(
        after_help = "Every option can also be set by its environment variable, or in the \
        TOML file of --config under its name with '_' for '-' (max_upload_size = \"50GiB\"). \
        Flags win over the environment, which wins over the file. Sizes take units \
        (1048576, 256KiB, 8MiB, 10MB); durations too (90, 90s, 10m, 1h30m, 7d)."
    )]
    // Boxed: by far the largest variant (clippy::large_enum_variant).
    Serve(Box<serve::ServeArgs>),
    /// Upload a file, resuming across dropped connections and restarts.
    Upload(upload::UploadArgs),
    /// Download a file with range requests, resuming across dropped
    /// connections and runs (optionally over several connections, or
    /// following an upload in progress).
    Download(download::DownloadArgs),
    /// Print a signed URL: a time-limited credential for one kind of request.
    Sign(sign::SignArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "bash: tenax completions bash > ~/.local/share/bash-completion/completions/tenax\n\
        zsh: tenax completions zsh > \"${fpath[1]}/_tenax\"\n\
        fish: tenax completions fish > ~/.config/fish/completions/tenax.fish"
    )]
    Completions(manual::CompletionsArgs),
    /// Print the man page (roff): `tenax man | man -l -`, or install it with
    /// `tenax man > tenax.1`.
    Man(manual::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Neither needs the async runtime.
    let printed = match &cli.command {
        Command::Completions(args) => Some(manual::completions::<Cli>(args)),
        Command::Man(args) => Some(manual::man::<Cli>(args)),
        _ => None,
    };
    if let Some(result) = printed {
        return result.map_or_else(
            |error| {
                eprintln!("tenax: error: {error:#}");
                ExitCode::FAILURE
            },
            |()| ExitCode::SUCCESS,
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tenax: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Upload(args) => upload::run(args).await,
            Command::Download(args) => download::run(args).await,
            Command::Sign(args) => sign::run(args).map(|()| ExitCode::SUCCESS),
            Command::Completions(_) | Command::Man(_) => Ok(ExitCode::SUCCESS),
        }
    });
    result.unwrap_or_else(|error| {
        eprintln!("tenax: error: {error:#}");
        ExitCode::FAILURE
    })
}
