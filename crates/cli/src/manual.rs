//! `tenax completions SHELL` and `tenax man`: shell completion scripts and a
//! roff man page, both generated from the same clap command the binary
//! parses, so they never drift from the options it takes.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// `tenax completions SHELL`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// `tenax man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// A subcommand's page (`tenax-serve(1)`, …) rather than the top-level
    /// `tenax(1)`.
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "out_dir")]
    subcommand: Option<String>,
    /// Write every page (`tenax.1`, `tenax-serve.1`, …) into this directory
    /// instead of printing one, e.g. `--out-dir /usr/local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<std::path::PathBuf>,
}

/// A reader that stopped reading (`tenax man | head`) is not a failure.
fn quiet_pipe(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes the completion script for `args.shell` to standard output.
pub(crate) fn completions<C: CommandFactory>(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = C::command();
    let name = command.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, name, &mut out);
    quiet_pipe(out.flush())?;
    Ok(())
}

/// Writes the man page (roff) to standard output.
pub(crate) fn man<C: CommandFactory>(args: &ManArgs) -> anyhow::Result<()> {
    let mut command = C::command();
    command.build();
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)?;
        let mut pages = vec![("tenax".to_owned(), command.clone())];
        for sub in command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
        {
            pages.push((format!("tenax-{}", sub.get_name()), sub.clone()));
        }
        for (title, page) in pages {
            let mut file = std::fs::File::create(dir.join(format!("{title}.1")))?;
            clap_mangen::Man::new(page).title(title).render(&mut file)?;
            file.sync_all()?;
        }
        return Ok(());
    }
    let man = match &args.subcommand {
        None => clap_mangen::Man::new(command),
        Some(name) => {
            let sub = command
                .find_subcommand(name)
                .ok_or_else(|| anyhow::anyhow!("no subcommand {name:?}"))?
                .clone();
            // The page is `tenax-serve(1)`, as git and cargo name theirs.
            let title = format!("tenax-{}", sub.get_name());
            clap_mangen::Man::new(sub).title(title)
        }
    };
    let mut out = std::io::stdout().lock();
    quiet_pipe(man.render(&mut out).and_then(|()| out.flush()))?;
    Ok(())
}
