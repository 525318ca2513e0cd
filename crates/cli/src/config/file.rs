//! The `--config` file: TOML with the options' names as keys.

use std::path::Path;

use anyhow::{Context as _, anyhow};

use super::ServeArgs;

/// The options in a TOML file.
pub(super) fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        // toml's message names the key and shows the line.
        anyhow!(
            "config file {}: {}",
            path.display(),
            error.to_string().trim_end()
        )
    })
}
