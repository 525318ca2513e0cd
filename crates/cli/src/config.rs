//! The configuration of `tenax serve`: flags, environment (`TENAX_*`) and a
//! TOML file land in one [`ServeArgs`] (low level: every value optional and
//! still text), merged with precedence flags > environment > file >
//! defaults, then validated once into a [`ServeConfig`] (high level: typed,
//! complete), as ripgrep does with its LowArgs and HiArgs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use serde::Deserialize;
use tenax_core::EngineConfig;
use tenax_server::ServerConfig;

use crate::credentials::{Credentials, NamespaceEntry, Tables, TokenEntry, read_signing_key};
use crate::units::{parse_duration, parse_size};

/// Options of `tenax serve`. Each can also be set by the environment
/// variable shown, or in the `--config` file under the option's name with
/// `_` for `-` (`max_upload_size = "50GiB"`); flags win over the
/// environment, which wins over the file.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServeArgs {
    /// Read options from this TOML file.
    #[arg(long, value_name = "FILE", env = "TENAX_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on. With port 0 the system picks one; the first
    /// line on stdout names it. [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", env = "TENAX_LISTEN")]
    listen: Option<String>,
    /// Data directory (created if missing), or `s3://BUCKET/PREFIX` for an
    /// S3-compatible object store (endpoint, region and credentials from
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP; see docs/storage.md). [default: ./tenax-data]
    #[arg(long, value_name = "DIR", env = "TENAX_DATA")]
    data: Option<PathBuf>,
    /// Whether completed uploads carry an MD5 (their final answer then has
    /// `md5Hash`). MD5 is the slowest digest and caps one upload near
    /// 0.7 GB/s; only GCS-style clients that validate MD5 need it.
    /// [default: true]
    #[arg(long, value_name = "BOOL", env = "TENAX_MD5")]
    md5: Option<bool>,
    /// Same as `--md5 false`.
    #[arg(long, env = "TENAX_NO_MD5")]
    #[serde(skip)]
    no_md5: bool,
    /// The largest upload accepted (413 beyond; advertised as `Tus-Max-Size`
    /// and in `Upload-Limit`), e.g. `50GiB`, or `unlimited`. [default: 1TiB]
    #[arg(long, value_name = "SIZE", env = "TENAX_MAX_UPLOAD_SIZE")]
    #[serde(deserialize_with = "text")]
    max_upload_size: Option<String>,
    /// An upload that receives nothing for this long expires, e.g. `7d`.
    /// [default: 7d]
    #[arg(long, value_name = "DURATION", env = "TENAX_UPLOAD_TTL")]
    #[serde(deserialize_with = "text")]
    upload_ttl: Option<String>,
    /// How often the collector looks for expired uploads and removes their
    /// data. [default: 1h]
    #[arg(long, value_name = "DURATION", env = "TENAX_EXPIRY_INTERVAL")]
    #[serde(deserialize_with = "text")]
    expiry_interval: Option<String>,
    /// How long an expired upload is remembered (tus answers 410 rather
    /// than 404) before its record is removed too. [default: 7d]
    #[arg(long, value_name = "DURATION", env = "TENAX_EXPIRED_RETENTION")]
    #[serde(deserialize_with = "text")]
    expired_retention: Option<String>,
    /// A request body that delivers nothing for this long is cut (what it
    /// delivered is kept). [default: 60s]
    #[arg(long, value_name = "DURATION", env = "TENAX_BODY_IDLE_TIMEOUT")]
    #[serde(deserialize_with = "text")]
    body_idle_timeout: Option<String>,
    /// How long a client may take to send a request's headers.
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", env = "TENAX_HEADER_READ_TIMEOUT")]
    #[serde(deserialize_with = "text")]
    header_read_timeout: Option<String>,
    /// How long shutdown (SIGINT, SIGTERM) waits for open connections
    /// before closing them. [default: 10s]
    #[arg(long, value_name = "DURATION", env = "TENAX_SHUTDOWN_GRACE")]
    #[serde(deserialize_with = "text")]
    shutdown_grace: Option<String>,
    /// Which log events to write to stderr, as a tracing filter
    /// (`info`, `tenax_core=debug,info`). [default: info]
    #[arg(long, value_name = "FILTER", env = "TENAX_LOG")]
    log: Option<String>,
    /// Log lines as human-readable text or as JSON objects, one a line.
    /// [default: text]
    #[arg(long, value_name = "FORMAT", env = "TENAX_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// A TOML file of `[[tokens]]` (token, namespace, name,
    /// max_upload_size) and `[namespaces.NAME]` quotas
    /// (max_concurrent_uploads, max_bytes_in_progress, max_bytes_stored);
    /// read again on SIGHUP. The `--config` file may hold the same tables.
    /// With any token or signing key, every request needs a credential.
    #[arg(long, value_name = "FILE", env = "TENAX_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// A file holding the secret (at least 32 bytes) that signs URLs
    /// (`tenax sign`). [default: none, no signed URLs]
    #[arg(long, value_name = "FILE", env = "TENAX_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Serve without credentials on an address other than loopback (by
    /// default the server refuses to start that way).
    #[arg(long, env = "TENAX_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// `[[tokens]]` of the config file.
    #[arg(skip)]
    tokens: Vec<TokenEntry>,
    /// `[namespaces.NAME]` of the config file.
    #[arg(skip)]
    namespaces: BTreeMap<String, NamespaceEntry>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// The validated configuration of `tenax serve`.
#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) credentials: Credentials,
    pub(crate) listen: SocketAddr,
    pub(crate) data: PathBuf,
    pub(crate) engine: EngineConfig,
    pub(crate) expiry_interval: Duration,
    pub(crate) server: ServerConfig,
    pub(crate) log: String,
    pub(crate) log_format: LogFormat,
}

/// A configuration value that is wrong, with the key it came under.
#[derive(Debug)]
struct KeyError {
    key: &'static str,
    message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key {:?}: {}", self.key, self.message)
    }
}

impl std::error::Error for KeyError {}

impl ServeArgs {
    /// Flags and environment (as parsed by clap), then the `--config` file
    /// under them, validated.
    pub(crate) fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        self.over(file).validate()
    }

    /// `self` where it has a value, else `lower`.
    fn over(self, lower: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            listen: self.listen.or(lower.listen),
            data: self.data.or(lower.data),
            md5: if self.no_md5 {
                Some(false)
            } else {
                self.md5.or(lower.md5)
            },
            no_md5: false,
            max_upload_size: self.max_upload_size.or(lower.max_upload_size),
            upload_ttl: self.upload_ttl.or(lower.upload_ttl),
            expiry_interval: self.expiry_interval.or(lower.expiry_interval),
            expired_retention: self.expired_retention.or(lower.expired_retention),
            body_idle_timeout: self.body_idle_timeout.or(lower.body_idle_timeout),
            header_read_timeout: self.header_read_timeout.or(lower.header_read_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            log: self.log.or(lower.log),
            log_format: self.log_format.or(lower.log_format),
            tokens_file: self.tokens_file.or(lower.tokens_file),
            signing_key_file: self.signing_key_file.or(lower.signing_key_file),
            insecure_no_auth: self.insecure_no_auth || lower.insecure_no_auth,
            tokens: [self.tokens, lower.tokens].concat(),
            namespaces: lower
                .namespaces
                .into_iter()
                .chain(self.namespaces)
                .collect(),
        }
    }

    /// Defaults for what is missing, and every value checked, once.
    fn validate(self) -> anyhow::Result<ServeConfig> {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen.trim().parse().map_err(|_| KeyError {
            key: "listen",
            message: format!("invalid address {listen:?} (try 127.0.0.1:8080 or [::]:8080)"),
        })?;
        let data = self.data.unwrap_or_else(|| PathBuf::from("./tenax-data"));
        if data.as_os_str().is_empty() {
            return Err(KeyError {
                key: "data",
                message: "the data directory must not be empty".into(),
            }
            .into());
        }
        let max_upload_size = match self.max_upload_size.as_deref().map(str::trim) {
            None => Some(1 << 40),
            Some("unlimited") => None,
            Some(text) => match parse_size(text) {
                Ok(0) => {
                    return Err(KeyError {
                        key: "max_upload_size",
                        message: "must be at least 1 byte (or `unlimited`)".into(),
                    }
                    .into());
                }
                Ok(size) => Some(size),
                Err(message) => {
                    return Err(KeyError {
                        key: "max_upload_size",
                        message,
                    }
                    .into());
                }
            },
        };
        let upload_ttl = duration("upload_ttl", self.upload_ttl, "7d", false)?;
        let expiry_interval = duration("expiry_interval", self.expiry_interval, "1h", false)?;
        let expired_retention = duration("expired_retention", self.expired_retention, "7d", true)?;
        let body_idle_timeout =
            duration("body_idle_timeout", self.body_idle_timeout, "60s", false)?;
        let header_read_timeout = duration(
            "header_read_timeout",
            self.header_read_timeout,
            "30s",
            false,
        )?;
        let shutdown_grace = duration("shutdown_grace", self.shutdown_grace, "10s", true)?;
        let log = self.log.unwrap_or_else(|| "info".to_owned());
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(KeyError {
                key: "log",
                message: format!("invalid filter {log:?}: {error}"),
            }
            .into());
        }
        let credentials = Credentials {
            inline: Tables {
                tokens: self.tokens,
                namespaces: self.namespaces,
            },
            tokens_file: self.tokens_file,
            signing_key: self
                .signing_key_file
                .as_deref()
                .map(read_signing_key)
                .transpose()
                .map_err(|error| KeyError {
                    key: "signing_key_file",
                    message: format!("{error:#}"),
                })?,
        };
        // Checked now, so that a mistake fails the start, naming its key.
        credentials.load()?;
        if !listen.ip().is_loopback() && !credentials.any() && !self.insecure_no_auth {
            return Err(KeyError {
                key: "listen",
                message: format!(
                    "{listen} is reachable from other machines, and no credentials are \
                     configured: set tokens_file or signing_key_file, or pass \
                     --insecure-no-auth to serve anyone"
                ),
            }
            .into());
        }
        Ok(ServeConfig {
            credentials,
            listen,
            data,
            engine: EngineConfig {
                md5: self.md5.unwrap_or(true),
                upload_ttl,
                expired_retention,
            },
            expiry_interval,
            server: ServerConfig {
                body_idle_timeout,
                header_read_timeout,
                shutdown_grace,
                max_upload_size,
                ..ServerConfig::default()
            },
            log,
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

/// A duration under `key`, `default` when absent; zero only if `zero_ok`.
fn duration(
    key: &'static str,
    value: Option<String>,
    default: &str,
    zero_ok: bool,
) -> Result<Duration, KeyError> {
    let text = value.as_deref().unwrap_or(default);
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() && !zero_ok => Err(KeyError {
            key,
            message: format!("must be longer than zero, not {text:?}"),
        }),
        Ok(duration) => Ok(duration),
        Err(message) => Err(KeyError { key, message }),
    }
}

/// The options in a TOML file.
fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<ServeArgs, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults() {
        let config = ServeArgs::default().validate().expect("defaults are valid");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(config.data, PathBuf::from("./tenax-data"));
        assert!(config.engine.md5);
        assert_eq!(config.engine.upload_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(config.expiry_interval, Duration::from_secs(3600));
        assert_eq!(
            config.engine.expired_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(config.server.max_upload_size, Some(1 << 40));
        assert_eq!(config.server.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(30));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn file_values_and_precedence() {
        let lower = file(
            r#"
            listen = "127.0.0.1:9000"
            md5 = false
            max_upload_size = "5MiB"
            upload_ttl = 3600
            expiry_interval = "500ms"
            expired_retention = "1d"
            shutdown_grace = "0s"
            log_format = "json"
            "#,
        )
        .expect("valid file");
        let upper = ServeArgs {
            max_upload_size: Some("1000".into()),
            ..ServeArgs::default()
        };
        let config = upper.over(lower).validate().expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert!(!config.engine.md5);
        assert_eq!(config.server.max_upload_size, Some(1000));
        assert_eq!(config.engine.upload_ttl, Duration::from_secs(3600));
        assert_eq!(config.expiry_interval, Duration::from_millis(500));
        assert_eq!(config.engine.expired_retention, Duration::from_secs(86_400));
        assert_eq!(config.server.shutdown_grace, Duration::ZERO);
        assert_eq!(config.log_format, LogFormat::Json);
        let upper = ServeArgs {
            no_md5: true,
            md5: Some(true),
            ..ServeArgs::default()
        };
        assert!(
            !upper
                .over(ServeArgs::default())
                .validate()
                .expect("valid")
                .engine
                .md5
        );
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |args: ServeArgs| args.validate().expect_err("invalid").to_string();
        let message = bad(ServeArgs {
            max_upload_size: Some("12XB".into()),
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "max_upload_size": invalid size "12XB""#),
            "{message}"
        );
        let message = bad(ServeArgs {
            listen: Some("nowhere".into()),
            ..ServeArgs::default()
        });
        assert!(message.starts_with(r#"config key "listen""#), "{message}");
        let message = bad(ServeArgs {
            header_read_timeout: Some("0".into()),
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "header_read_timeout""#),
            "{message}"
        );
        let message = bad(ServeArgs {
            log: Some("[[".into()),
            ..ServeArgs::default()
        });
        assert!(message.starts_with(r#"config key "log""#), "{message}");
        assert!(
            file("max_upload_sise = 3")
                .expect_err("unknown key")
                .to_string()
                .contains("max_upload_sise")
        );
        assert!(file("config = \"x.toml\"").is_err());
        assert!(file("upload_ttl = -3").is_err());
        let zero = ServeArgs {
            expiry_interval: Some("0s".into()),
            ..ServeArgs::default()
        };
        assert!(zero.validate().is_err());
        assert!(file("log_format = \"xml\"").is_err());
    }
}
