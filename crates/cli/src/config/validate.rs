//! The high-level configuration: every value typed and checked once,
//! with the libraries' defaults for what is missing.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use tenax_core::EngineConfig;
use tenax_hooks::{CommandLine, HookConfig, Secret};
use tenax_server::{MinTransferRate, ServerConfig, TlsConfig, TlsError, TrustForwarded};

use super::{LogFormat, ServeArgs};
use crate::credentials::{Credentials, Tables, read_signing_key};
use crate::units::{parse_duration, parse_size};

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
    pub(crate) hooks: HookConfig,
    pub(crate) hook_outbox: Option<PathBuf>,
    pub(crate) cluster: Option<String>,
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

/// The address served unless told otherwise (the binary's own default: no
/// library listens by itself).
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The data directory unless told otherwise.
const DEFAULT_DATA: &str = "./tenax-data";
/// The log filter unless told otherwise.
const DEFAULT_LOG: &str = "info";

impl ServeArgs {
    /// Defaults for what is missing (the libraries' own `Default`s), and
    /// every value checked, once.
    pub(super) fn validate(self) -> anyhow::Result<ServeConfig> {
        let engine_defaults = EngineConfig::default();
        let server_defaults = ServerConfig::default();
        let hook_defaults = HookConfig::default();
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen.trim().parse().map_err(|_| KeyError {
            key: "listen",
            message: format!("invalid address {listen:?} (try 127.0.0.1:8080 or [::]:8080)"),
        })?;
        let data = self.data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
        if data.as_os_str().is_empty() {
            return Err(KeyError {
                key: "data",
                message: "the data directory must not be empty".into(),
            }
            .into());
        }
        let max_upload_size = match self.max_upload_size.as_deref().map(str::trim) {
            None => server_defaults.max_upload_size,
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
        let upload_ttl = duration(
            "upload_ttl",
            self.upload_ttl,
            engine_defaults.upload_ttl,
            false,
        )?;
        let expiry_interval = duration(
            "expiry_interval",
            self.expiry_interval,
            tenax_core::DEFAULT_EXPIRY_INTERVAL,
            false,
        )?;
        let expired_retention = duration(
            "expired_retention",
            self.expired_retention,
            engine_defaults.expired_retention,
            true,
        )?;
        let body_idle_timeout = duration(
            "body_idle_timeout",
            self.body_idle_timeout,
            server_defaults.body_idle_timeout,
            false,
        )?;
        let header_read_timeout = duration(
            "header_read_timeout",
            self.header_read_timeout,
            server_defaults.header_read_timeout,
            false,
        )?;
        let shutdown_grace = duration(
            "shutdown_grace",
            self.shutdown_grace,
            server_defaults.shutdown_grace,
            true,
        )?;
        let edge = edge(
            &server_defaults,
            self.tls_cert,
            self.tls_key,
            self.h2c,
            self.behind_proxy,
            self.trusted_proxies,
        )?;
        let limits = limits(
            &server_defaults,
            self.max_connections,
            self.max_header_size,
            self.min_transfer_rate,
            self.min_transfer_rate_window,
        )?;
        let log = self.log.unwrap_or_else(|| DEFAULT_LOG.to_owned());
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
        let hooks = HookConfig {
            url: hook_url("hook_url", self.hook_url)?,
            command: command("hook_command", self.hook_command)?,
            secret: self
                .hook_secret_file
                .as_deref()
                .map(read_hook_secret)
                .transpose()
                .map_err(|message| KeyError {
                    key: "hook_secret_file",
                    message,
                })?,
            timeout: duration(
                "hook_timeout",
                self.hook_timeout,
                hook_defaults.timeout,
                false,
            )?,
            retry_min: duration(
                "hook_retry_min",
                self.hook_retry_min,
                hook_defaults.retry_min,
                false,
            )?,
            retry_max: duration(
                "hook_retry_max",
                self.hook_retry_max,
                hook_defaults.retry_max,
                false,
            )?,
            max_age: match self.hook_max_age.as_deref().map(str::trim) {
                None => hook_defaults.max_age,
                Some("forever") => None,
                Some(text) => Some(required_duration("hook_max_age", text, false)?),
            },
            progress_interval: duration(
                "hook_progress_interval",
                self.hook_progress_interval,
                hook_defaults.progress_interval,
                true,
            )?,
            pre_create_url: hook_url("pre_create_hook_url", self.pre_create_hook_url)?,
            pre_create_command: command("pre_create_hook_command", self.pre_create_hook_command)?,
            pre_create_fail_open: self.pre_create_hook_fail_open,
            completion_answer: self.hook_completion_response,
        };
        if hooks.completion_answer && !hooks.delivers() {
            return Err(KeyError {
                key: "hook_completion_response",
                message: "needs hook_url or hook_command".into(),
            }
            .into());
        }
        if hooks.secret.is_some() && hooks.url.is_none() && hooks.pre_create_url.is_none() {
            return Err(KeyError {
                key: "hook_secret_file",
                message: "signs webhooks, but neither hook_url nor pre_create_hook_url is set"
                    .into(),
            }
            .into());
        }
        if self.cluster.is_some() && !data.to_str().is_some_and(|data| data.starts_with("s3://")) {
            return Err(KeyError {
                key: "cluster",
                message: "the nodes of a cluster share an object store: set data = \"s3://BUCKET/PREFIX\""
                    .into(),
            }
            .into());
        }
        Ok(ServeConfig {
            hooks,
            hook_outbox: self.hook_outbox,
            cluster: self.cluster,
            credentials,
            listen,
            data,
            engine: EngineConfig {
                digests: tenax_core::DigestSet {
                    md5: self.md5.unwrap_or(engine_defaults.digests.md5),
                },
                upload_ttl,
                expired_retention,
                ..engine_defaults
            },
            expiry_interval,
            server: ServerConfig {
                body_idle_timeout,
                header_read_timeout,
                shutdown_grace,
                max_upload_size,
                tls: edge.tls,
                h2c: edge.h2c,
                trust_forwarded: edge.trust_forwarded,
                interim_responses: self
                    .interim_responses
                    .map_or(server_defaults.interim_responses, Into::into),
                max_connections: limits.max_connections,
                max_header_size: limits.max_header_size,
                min_transfer_rate: limits.min_transfer_rate,
                ..server_defaults
            },
            log,
            log_format: self.log_format.unwrap_or_default(),
        })
    }
}

/// TLS, h2c and behind-proxy settings, checked.
struct Edge {
    tls: Option<TlsConfig>,
    h2c: bool,
    trust_forwarded: TrustForwarded,
}

fn edge(
    defaults: &ServerConfig,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    h2c: Option<bool>,
    behind_proxy: Option<bool>,
    trusted_proxies: Option<String>,
) -> Result<Edge, KeyError> {
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(KeyError {
                key: "tls_key",
                message: "missing: tls_cert needs its tls_key".into(),
            });
        }
        (None, Some(_)) => {
            return Err(KeyError {
                key: "tls_cert",
                message: "missing: tls_key needs its tls_cert".into(),
            });
        }
        (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(&cert, &key).map_err(
            |error| KeyError {
                key: match error {
                    TlsError::Certificate { .. } => "tls_cert",
                    _ => "tls_key",
                },
                message: error.to_string(),
            },
        )?),
    };
    let h2c = h2c.unwrap_or(defaults.h2c);
    if h2c && tls.is_some() {
        return Err(KeyError {
            key: "h2c",
            message: "only for plain-text connections; with TLS, HTTP/2 is negotiated (ALPN)"
                .into(),
        });
    }
    let trust_forwarded = match (behind_proxy.unwrap_or(false), trusted_proxies) {
        (false, None) => TrustForwarded::Nobody,
        (false, Some(_)) => {
            return Err(KeyError {
                key: "trusted_proxies",
                message: "only means something with behind_proxy = true".into(),
            });
        }
        (true, None) => TrustForwarded::Anyone,
        (true, Some(list)) => {
            let networks = list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse::<IpNet>()
                        .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| KeyError {
                            key: "trusted_proxies",
                            message: format!(
                                "{item:?} is not an address or a network (try 10.0.0.0/8)"
                            ),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if networks.is_empty() {
                return Err(KeyError {
                    key: "trusted_proxies",
                    message: "empty list (leave it out to trust every peer)".into(),
                });
            }
            TrustForwarded::Networks(networks)
        }
    };
    Ok(Edge {
        tls,
        h2c,
        trust_forwarded,
    })
}

/// Connection and request limits, checked.
struct Limits {
    max_connections: usize,
    max_header_size: usize,
    min_transfer_rate: Option<MinTransferRate>,
}

fn limits(
    defaults: &ServerConfig,
    max_connections: Option<String>,
    max_header_size: Option<String>,
    min_transfer_rate: Option<String>,
    min_transfer_rate_window: Option<String>,
) -> Result<Limits, KeyError> {
    let max_connections = match max_connections.as_deref().map(str::trim) {
        None => defaults.max_connections,
        Some(text) => match text.parse::<usize>() {
            Ok(0) | Err(_) => {
                return Err(KeyError {
                    key: "max_connections",
                    message: format!("{text:?} is not a whole number of at least 1"),
                });
            }
            Ok(count) => count,
        },
    };
    let max_header_size = match max_header_size.as_deref() {
        None => defaults.max_header_size,
        Some(text) => parse_size(text)
            .map_err(|message| KeyError {
                key: "max_header_size",
                message,
            })
            .and_then(|size| match usize::try_from(size) {
                Ok(size) if (1024..=256 * 1024).contains(&size) => Ok(size),
                _ => Err(KeyError {
                    key: "max_header_size",
                    message: format!("must be from 1KiB to 256KiB, not {text:?}"),
                }),
            })?,
    };
    // The library's rate; when it has none, a window given alone still
    // needs a rate, and a rate given alone a window: the type's defaults.
    let default_rate = defaults.min_transfer_rate;
    let rate = match min_transfer_rate.as_deref() {
        None => default_rate.map_or(0, |rate| rate.bytes_per_second),
        Some(text) => {
            parse_size(text.trim().trim_end_matches("/s")).map_err(|message| KeyError {
                key: "min_transfer_rate",
                message,
            })?
        }
    };
    let window = duration(
        "min_transfer_rate_window",
        min_transfer_rate_window,
        default_rate.unwrap_or_default().window,
        false,
    )?;
    Ok(Limits {
        max_connections,
        max_header_size,
        min_transfer_rate: (rate > 0).then_some(MinTransferRate {
            bytes_per_second: rate,
            window,
        }),
    })
}

/// A duration under `key`, `default` when absent; zero only if `zero_ok`.
fn duration(
    key: &'static str,
    value: Option<String>,
    default: Duration,
    zero_ok: bool,
) -> Result<Duration, KeyError> {
    match value {
        None => Ok(default),
        Some(text) => required_duration(key, &text, zero_ok),
    }
}

/// The duration `text` under `key`; zero only if `zero_ok`.
fn required_duration(key: &'static str, text: &str, zero_ok: bool) -> Result<Duration, KeyError> {
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() && !zero_ok => Err(KeyError {
            key,
            message: format!("must be longer than zero, not {text:?}"),
        }),
        Ok(duration) => Ok(duration),
        Err(message) => Err(KeyError { key, message }),
    }
}

/// A webhook URL under `key`: absolute `http` or `https`.
fn hook_url(key: &'static str, value: Option<String>) -> Result<Option<String>, KeyError> {
    let Some(text) = value else { return Ok(None) };
    let text = text.trim();
    match text.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Ok(Some(text.to_owned()))
        }
        _ => Err(KeyError {
            key,
            message: format!("{text:?} is not an http:// or https:// URL"),
        }),
    }
}

/// A hook command under `key`: not blank.
fn command(key: &'static str, value: Option<String>) -> Result<Option<CommandLine>, KeyError> {
    let Some(text) = value else { return Ok(None) };
    CommandLine::parse(&text).map(Some).ok_or(KeyError {
        key,
        message: "the command is empty".into(),
    })
}

/// The webhook signing secret: the file's text, trimmed, not empty.
fn read_hook_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(format!(
            "{} holds {} bytes; a webhook secret needs at least 16",
            path.display(),
            secret.len()
        ));
    }
    Ok(Secret(secret.as_bytes().to_vec()))
}
