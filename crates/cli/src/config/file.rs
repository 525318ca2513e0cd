//! The `--config` file: TOML with the options' names as keys.

use std::fmt;
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

/// A size or a duration in the file: text with a unit, or a bare number
/// (bytes, seconds).
pub(crate) fn text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string such as \"8MiB\" or \"7d\", or a whole number")
        }
        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
            Ok(Some(value.to_owned()))
        }
        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map(|value| Some(value.to_string()))
                .map_err(|_| E::custom(format!("{value} is negative")))
        }
    }
    deserializer.deserialize_any(Text)
}
