//! The credentials of `tenax serve`: bearer tokens with their namespaces,
//! namespace quotas, and the key that signs URLs.
//!
//! Tokens and quotas come from `[[tokens]]` and `[namespaces.NAME]` tables
//! in the `--config` file, in a `--tokens-file` of the same shape, or both;
//! the tokens file is read again on SIGHUP.
//!
//! ```toml
//! [[tokens]]
//! token = "a long random secret"
//! namespace = "team-a"        # absent or "default": the default namespace
//! name = "anna's laptop"      # for logs; the secret is never logged
//! max_upload_size = "10GiB"
//!
//! [namespaces.team-a]            # [namespaces.default]: the default one
//! max_concurrent_uploads = 20
//! max_bytes_in_progress = "200GiB"
//! max_bytes_stored = "2TiB"
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use tenax_core::{Namespace, Quota};
use tenax_protocol::signed::SigningKey;
use tenax_server::TokenGrant;

use crate::units::parse_size;

/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// `[[tokens]]` and `[namespaces.NAME]`, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Tables {
    pub(crate) tokens: Vec<TokenEntry>,
    pub(crate) namespaces: BTreeMap<String, NamespaceEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenEntry {
    token: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "crate::units::text")]
    max_upload_size: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NamespaceEntry {
    max_concurrent_uploads: Option<u64>,
    #[serde(deserialize_with = "crate::units::text")]
    max_bytes_in_progress: Option<String>,
    #[serde(deserialize_with = "crate::units::text")]
    max_bytes_stored: Option<String>,
}

/// Tokens and quotas, checked.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) tokens: Vec<(String, TokenGrant)>,
    pub(crate) quotas: HashMap<Namespace, Quota>,
}

impl Tables {
    /// Reads a tokens file.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Tables> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
        toml::from_str(&text).map_err(|error| secret_file_error("tokens file", path, &text, &error))
    }

    /// Both sets of tables checked together: a token may not appear twice.
    pub(crate) fn check(&self, more: &Tables) -> anyhow::Result<Table> {
        let mut table = Table::default();
        let mut seen = HashSet::new();
        for (index, entry) in self.tokens.iter().chain(&more.tokens).enumerate() {
            let key = |field: &str| format!("tokens[{index}].{field}");
            if entry.token.chars().count() < MIN_TOKEN_LEN {
                bail!(
                    "config key {:?}: a token must be at least {MIN_TOKEN_LEN} characters long",
                    key("token")
                );
            }
            if !seen.insert(entry.token.as_str()) {
                bail!(
                    "config key {:?}: the same token is configured twice",
                    key("token")
                );
            }
            let namespace = namespace(entry.namespace.as_deref(), &key("namespace"))?;
            let max_upload_size = size(entry.max_upload_size.as_deref(), &key("max_upload_size"))?;
            let label = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("token #{index}"));
            table.tokens.push((
                entry.token.clone(),
                TokenGrant {
                    label,
                    namespace,
                    max_upload_size,
                },
            ));
        }
        for (name, entry) in self.namespaces.iter().chain(&more.namespaces) {
            let key = |field: &str| format!("namespaces.{name}.{field}");
            let namespace = namespace(Some(name), &format!("namespaces.{name}"))?;
            let quota = Quota {
                max_concurrent_uploads: entry.max_concurrent_uploads,
                max_bytes_in_progress: size(
                    entry.max_bytes_in_progress.as_deref(),
                    &key("max_bytes_in_progress"),
                )?,
                max_bytes_stored: size(
                    entry.max_bytes_stored.as_deref(),
                    &key("max_bytes_stored"),
                )?,
            };
            if table.quotas.insert(namespace, quota).is_some() {
                bail!(
                    "config key {:?}: the namespace is configured twice",
                    format!("namespaces.{name}")
                );
            }
        }
        Ok(table)
    }
}

/// A configured namespace: `default` (or none) is the default namespace,
/// the one of requests on an open server and of tokens without a namespace.
fn namespace(text: Option<&str>, key: &str) -> anyhow::Result<Namespace> {
    match text {
        None | Some(Namespace::DEFAULT_ALIAS) => Ok(Namespace::default()),
        Some("") => bail!(
            "config key {key:?}: the default namespace is written {:?} \
             (e.g. [namespaces.{0}])",
            Namespace::DEFAULT_ALIAS
        ),
        Some(text) => Namespace::new(text).map_err(|error| anyhow!("config key {key:?}: {error}")),
    }
}

fn size(text: Option<&str>, key: &str) -> anyhow::Result<Option<u64>> {
    text.map(|text| parse_size(text).map_err(|message| anyhow!("config key {key:?}: {message}")))
        .transpose()
}

/// Where the credentials come from, kept so that SIGHUP can read them again.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// The tables of the `--config` file.
    pub(crate) inline: Tables,
    pub(crate) tokens_file: Option<PathBuf>,
    pub(crate) signing_key: Option<SigningKey>,
}

impl Credentials {
    /// Whether any credential is configured (else the server is open).
    pub(crate) fn any(&self) -> bool {
        !self.inline.tokens.is_empty() || self.tokens_file.is_some() || self.signing_key.is_some()
    }

    /// The tokens and quotas, read now (an open server has quotas too:
    /// `[namespaces.default]`).
    pub(crate) fn load(&self) -> anyhow::Result<Table> {
        let file = match &self.tokens_file {
            Some(path) => Tables::read(path)?,
            None => Tables::default(),
        };
        self.inline.check(&file)
    }
}

/// A TOML error in a file that holds secrets (the tokens file, or a config
/// file with `[[tokens]]`): the file, line and column, the key of that line,
/// and toml's message with its quoted pieces left out unless they are
/// plain key names. toml's own rendering quotes the line, and its messages
/// quote values; either may be a token.
pub(crate) fn secret_file_error(
    what: &str,
    path: &Path,
    text: &str,
    error: &toml::de::Error,
) -> anyhow::Error {
    let place = match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|line| line.split_once('='))
                .map(|(key, _)| key.trim())
                .filter(|key| is_key_name(key))
                .map_or_else(String::new, |key| format!(" (key {key})"));
            format!(", line {line}, column {column}{key}")
        }
        None => String::new(),
    };
    anyhow!(
        "{what} {}{place}: {} (values left out: the file holds secrets)",
        path.display(),
        redact_quotes(error.message().trim_end())
    )
}

/// Whether `text` is shaped like one of our keys (lowercase letters and
/// `_`), which a token, random and with digits, is not.
fn is_key_name(text: &str) -> bool {
    (2..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `message` with the text between backticks or double quotes replaced by
/// `…`, unless it is a key name or a single character (`#`, `=`: grammar,
/// not content).
fn redact_quotes(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            // An unclosed quote: everything after it is content.
            out.push('…');
            return out;
        };
        let inside = &after[..close];
        out.push_str(if inside.chars().count() <= 1 || is_key_name(inside) {
            inside
        } else {
            "…"
        });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Reads a signing key: the file's content, without surrounding whitespace.
pub(crate) fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    SigningKey::new(text.trim().as_bytes().to_vec())
        .map_err(|error| anyhow!("signing key {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Tables {
        toml::from_str(text).expect("valid TOML")
    }

    #[test]
    fn tokens_and_quotas_are_checked() {
        let inline = tables(
            r#"
            [[tokens]]
            token = "0123456789abcdef"
            namespace = "team-a"
            max_upload_size = "1MiB"
            [namespaces.team-a]
            max_concurrent_uploads = 2
            max_bytes_stored = "1GiB"
            "#,
        );
        let file = tables("[[tokens]]\ntoken = \"fedcba9876543210\"\nname = \"ci\"");
        let table = inline.check(&file).expect("valid");
        assert_eq!(table.tokens.len(), 2);
        assert_eq!(table.tokens[0].1.namespace.as_str(), "team-a");
        assert_eq!(table.tokens[0].1.max_upload_size, Some(1 << 20));
        assert!(table.tokens[1].1.namespace.is_default());
        assert_eq!(table.tokens[1].1.label, "ci");
        let quota = table.quotas[&Namespace::new("team-a").expect("valid")];
        assert_eq!(quota.max_concurrent_uploads, Some(2));
        assert_eq!(quota.max_bytes_stored, Some(1 << 30));
        assert_eq!(quota.max_bytes_in_progress, None);
    }

    #[test]
    fn errors_name_the_key() {
        let error = |text: &str| {
            tables(text)
                .check(&Tables::default())
                .expect_err("invalid")
                .to_string()
        };
        assert!(error("[[tokens]]\ntoken = \"short\"").contains("tokens[0].token"));
        assert!(
            error("[[tokens]]\ntoken = \"0123456789abcdef\"\nnamespace = \"A/B\"")
                .contains("tokens[0].namespace")
        );
        assert!(
            error(
                "[[tokens]]\ntoken = \"0123456789abcdef\"\n[[tokens]]\ntoken = \"0123456789abcdef\""
            )
            .contains("tokens[1].token")
        );
        assert!(
            error("[namespaces.x]\nmax_bytes_stored = \"lots\"")
                .contains("namespaces.x.max_bytes_stored")
        );
        assert!(toml::from_str::<Tables>("[[tokens]]\ntokn = \"x\"").is_err());
        assert!(
            error("[namespaces.\"\"]\nmax_concurrent_uploads = 1").contains("[namespaces.default]")
        );
    }

    #[test]
    fn default_names_the_default_namespace() {
        let table = tables(
            "[[tokens]]\ntoken = \"0123456789abcdef\"\nnamespace = \"default\"\n\
             [namespaces.default]\nmax_concurrent_uploads = 1",
        )
        .check(&Tables::default())
        .expect("valid");
        assert!(table.tokens[0].1.namespace.is_default());
        assert_eq!(
            table.quotas[&Namespace::default()].max_concurrent_uploads,
            Some(1)
        );
    }

    #[test]
    fn toml_errors_name_the_line_and_quote_nothing() {
        let path = Path::new("/etc/tenax/tokens.toml");
        for text in [
            "[[tokens]]\ntoken = \"SECRET-0123456789\" namespace = \"n\"\n",
            "[[tokens]]\nSECRET-0123456789 = \"x\"\n",
            "[[tokens]]\ntoken = 'SECRET-0123456789\n",
            "[[tokens]]\ntoken = 12345678901234567890123\n",
        ] {
            let error = toml::from_str::<Tables>(text).expect_err("invalid");
            let message = secret_file_error("tokens file", path, text, &error).to_string();
            assert!(
                message.contains("/etc/tenax/tokens.toml, line 2,"),
                "{message}"
            );
            for secret in ["SECRET", "0123456789"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
        assert_eq!(
            redact_quotes("expected `=`, `max_size`, found `a1c` or \"xy-z\" and `open"),
            "expected `=`, `max_size`, found `…` or \"…\" and `…"
        );
        let text = "[[tokens]]\nmax_upload_size = true\n";
        let error = toml::from_str::<Tables>(text).expect_err("invalid");
        let message = secret_file_error("tokens file", path, text, &error).to_string();
        assert!(message.contains("(key max_upload_size)"), "{message}");
    }
}
