//! The `--config` file: TOML with the options' names as keys.

use std::path::Path;

use anyhow::Context as _;

use super::ServeArgs;
use crate::credentials::secret_file_error;

/// The options in a TOML file.
pub(super) fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    // The file may hold `[[tokens]]`: the error never quotes it.
    toml::from_str(&text).map_err(|error| secret_file_error("config file", path, &text, &error))
}
