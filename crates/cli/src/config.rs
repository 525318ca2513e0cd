//! The configuration of `tenax serve`: flags, environment (`TENAX_*`) and a
//! TOML file land in one [`ServeArgs`] (low level: every value optional and
//! still text), merged with precedence flags > environment > file >
//! defaults, then validated once into a [`ServeConfig`] (high level: typed,
//! complete), as ripgrep does with its LowArgs and HiArgs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;
use serde::Deserialize;
use tenax_core::EngineConfig;
use tenax_hooks::{CommandLine, HookConfig, Secret};
use tenax_server::{MinTransferRate, ServerConfig, TlsConfig, TlsError, TrustForwarded};

use crate::credentials::{
    Credentials, NamespaceEntry, Tables, TokenEntry, read_signing_key, secret_file_error,
};
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
    /// Whether completed uploads of the seed dialect carry an MD5 (their
    /// final answer then has `md5Hash`; tus and RUFH uploads never compute
    /// one). MD5 is the slowest digest and caps one upload near 0.7 GB/s;
    /// only GCS-style clients that validate MD5 need it. [default: true]
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
    /// How long a client may take to send a request's headers (and, on a
    /// new connection, to finish the TLS handshake). [default: 30s]
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
    /// Join a cluster of nodes sharing one object store (`--data s3://…`):
    /// leases, names, published files and quotas live in this PostgreSQL
    /// database (`postgres://USER@HOST:PORT/DB`), so that any node serves
    /// any request. [default: none, a single node]
    #[arg(long, value_name = "URL", env = "TENAX_CLUSTER")]
    cluster: Option<String>,
    /// The directory of the hooks' outbox (events waiting for delivery;
    /// fsync'd before answers, so on local disk). Needed when `--data` is
    /// an object store. [default: DATA/outbox]
    #[arg(long, value_name = "DIR", env = "TENAX_HOOK_OUTBOX")]
    hook_outbox: Option<PathBuf>,
    /// POST every upload event (created, progress, completed, cancelled,
    /// expired) as JSON to this URL; 2xx means delivered, anything else is
    /// retried. Events wait in DATA/outbox until delivered.
    #[arg(long, value_name = "URL", env = "TENAX_HOOK_URL")]
    hook_url: Option<String>,
    /// A file holding the secret that signs webhook bodies
    /// (`Tenax-Signature: sha256=HEX`, HMAC-SHA256 of the body).
    #[arg(long, value_name = "FILE", env = "TENAX_HOOK_SECRET_FILE")]
    hook_secret_file: Option<PathBuf>,
    /// Run this command for every upload event, the event JSON on stdin;
    /// exit 0 means delivered. Split at spaces, no shell quoting.
    #[arg(long, value_name = "COMMAND", env = "TENAX_HOOK_COMMAND")]
    hook_command: Option<String>,
    /// The longest one hook call (webhook or command) may take.
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", env = "TENAX_HOOK_TIMEOUT")]
    #[serde(deserialize_with = "text")]
    hook_timeout: Option<String>,
    /// The first retry delay after a failed delivery; it doubles (with
    /// jitter) up to `--hook-retry-max`. [default: 1s]
    #[arg(long, value_name = "DURATION", env = "TENAX_HOOK_RETRY_MIN")]
    #[serde(deserialize_with = "text")]
    hook_retry_min: Option<String>,
    /// The longest retry delay. [default: 5m]
    #[arg(long, value_name = "DURATION", env = "TENAX_HOOK_RETRY_MAX")]
    #[serde(deserialize_with = "text")]
    hook_retry_max: Option<String>,
    /// Give up an event not delivered after this long, or `forever`.
    /// [default: forever]
    #[arg(long, value_name = "DURATION", env = "TENAX_HOOK_MAX_AGE")]
    #[serde(deserialize_with = "text")]
    hook_max_age: Option<String>,
    /// At most one progress event per upload this often (`0s`: at every
    /// durable append). [default: 10s]
    #[arg(long, value_name = "DURATION", env = "TENAX_HOOK_PROGRESS_INTERVAL")]
    #[serde(deserialize_with = "text")]
    hook_progress_interval: Option<String>,
    /// Deliver the `completed` event before answering the request that
    /// completes an upload, and include the receiver's answer in that
    /// answer (`Tenax-Hook-Response` header; seed's `hookResponse`).
    #[arg(long, env = "TENAX_HOOK_COMPLETION_RESPONSE")]
    hook_completion_response: bool,
    /// Ask this URL before creating an upload (POST JSON); a 4xx refuses
    /// it (its `message` reaches the client), a 2xx may answer
    /// `{"name": …, "metadata": {…}}` to change them.
    #[arg(long, value_name = "URL", env = "TENAX_PRE_CREATE_HOOK_URL")]
    pre_create_hook_url: Option<String>,
    /// Run this command before creating an upload (JSON on stdin); a
    /// non-zero exit refuses it with 403 and its output as the message.
    #[arg(long, value_name = "COMMAND", env = "TENAX_PRE_CREATE_HOOK_COMMAND")]
    pre_create_hook_command: Option<String>,
    /// Accept uploads when the pre-create hook fails or times out (by
    /// default they are refused with 503).
    #[arg(long, env = "TENAX_PRE_CREATE_HOOK_FAIL_OPEN")]
    pre_create_hook_fail_open: bool,
    /// `[[tokens]]` of the config file.
    #[arg(skip)]
    tokens: Vec<TokenEntry>,
    /// `[namespaces.NAME]` of the config file.
    #[arg(skip)]
    namespaces: BTreeMap<String, NamespaceEntry>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs
    /// `--tls-key`. HTTP/2 and HTTP/1.1 are offered by ALPN.
    #[arg(long, value_name = "FILE", env = "TENAX_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", env = "TENAX_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Also accept HTTP/2 with prior knowledge (h2c) on plain-text
    /// connections, which are otherwise HTTP/1.1 only. [default: false]
    #[arg(long, value_name = "BOOL", env = "TENAX_H2C", num_args = 0..=1, default_missing_value = "true")]
    h2c: Option<bool>,
    /// Behind a reverse proxy: absolute URLs (`Location`) take their scheme,
    /// host and path prefix from `Forwarded` (RFC 7239) or
    /// `X-Forwarded-Proto` / `-Host` / `-Prefix` (the last element of each,
    /// the one the nearest proxy wrote). Off, those headers are ignored;
    /// never turn it on without a proxy that sets or strips them.
    /// [default: false]
    #[arg(long, value_name = "BOOL", env = "TENAX_BEHIND_PROXY", num_args = 0..=1, default_missing_value = "true")]
    behind_proxy: Option<bool>,
    /// With `--behind-proxy`: believe the forwarding headers only from these
    /// peers, a comma-separated list of addresses or networks
    /// (`10.0.0.0/8,::1`). [default: every peer]
    #[arg(long, value_name = "CIDRS", env = "TENAX_TRUSTED_PROXIES")]
    trusted_proxies: Option<String>,
    /// Connections served at once; beyond it new connections wait in the
    /// listen backlog (not accepted, not refused) until one closes.
    /// [default: 4096]
    #[arg(long, value_name = "N", env = "TENAX_MAX_CONNECTIONS")]
    #[serde(deserialize_with = "text")]
    max_connections: Option<String>,
    /// The largest request head (HTTP/1.1 request line and headers, HTTP/2
    /// header list), 1KiB to 256KiB; beyond it 431 and the connection
    /// (HTTP/1.1) or stream (HTTP/2) is closed. [default: 64KiB]
    #[arg(long, value_name = "SIZE", env = "TENAX_MAX_HEADER_SIZE")]
    #[serde(deserialize_with = "text")]
    max_header_size: Option<String>,
    /// An upload body slower than this many bytes a second, on average over
    /// `--min-transfer-rate-window`, is cut (what it delivered is kept),
    /// e.g. `1KiB`; `0` turns it off. [default: 1KiB]
    #[arg(long, value_name = "SIZE", env = "TENAX_MIN_TRANSFER_RATE")]
    #[serde(deserialize_with = "text")]
    min_transfer_rate: Option<String>,
    /// The stretch of time `--min-transfer-rate` is averaged over.
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", env = "TENAX_MIN_TRANSFER_RATE_WINDOW")]
    #[serde(deserialize_with = "text")]
    min_transfer_rate_window: Option<String>,
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
            hook_outbox: self.hook_outbox.or(lower.hook_outbox),
            cluster: self.cluster.or(lower.cluster),
            hook_url: self.hook_url.or(lower.hook_url),
            hook_secret_file: self.hook_secret_file.or(lower.hook_secret_file),
            hook_command: self.hook_command.or(lower.hook_command),
            hook_timeout: self.hook_timeout.or(lower.hook_timeout),
            hook_retry_min: self.hook_retry_min.or(lower.hook_retry_min),
            hook_retry_max: self.hook_retry_max.or(lower.hook_retry_max),
            hook_max_age: self.hook_max_age.or(lower.hook_max_age),
            hook_progress_interval: self.hook_progress_interval.or(lower.hook_progress_interval),
            hook_completion_response: self.hook_completion_response
                || lower.hook_completion_response,
            pre_create_hook_url: self.pre_create_hook_url.or(lower.pre_create_hook_url),
            pre_create_hook_command: self
                .pre_create_hook_command
                .or(lower.pre_create_hook_command),
            pre_create_hook_fail_open: self.pre_create_hook_fail_open
                || lower.pre_create_hook_fail_open,
            tokens: [self.tokens, lower.tokens].concat(),
            namespaces: lower
                .namespaces
                .into_iter()
                .chain(self.namespaces)
                .collect(),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            h2c: self.h2c.or(lower.h2c),
            behind_proxy: self.behind_proxy.or(lower.behind_proxy),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            max_connections: self.max_connections.or(lower.max_connections),
            max_header_size: self.max_header_size.or(lower.max_header_size),
            min_transfer_rate: self.min_transfer_rate.or(lower.min_transfer_rate),
            min_transfer_rate_window: self
                .min_transfer_rate_window
                .or(lower.min_transfer_rate_window),
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
        let edge = edge(
            self.tls_cert,
            self.tls_key,
            self.h2c,
            self.behind_proxy,
            self.trusted_proxies,
        )?;
        let limits = limits(
            self.max_connections,
            self.max_header_size,
            self.min_transfer_rate,
            self.min_transfer_rate_window,
        )?;
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
            timeout: duration("hook_timeout", self.hook_timeout, "10s", false)?,
            retry_min: duration("hook_retry_min", self.hook_retry_min, "1s", false)?,
            retry_max: duration("hook_retry_max", self.hook_retry_max, "5m", false)?,
            max_age: match self.hook_max_age.as_deref().map(str::trim) {
                None | Some("forever") => None,
                text => Some(duration(
                    "hook_max_age",
                    text.map(str::to_owned),
                    "0s",
                    false,
                )?),
            },
            progress_interval: duration(
                "hook_progress_interval",
                self.hook_progress_interval,
                "10s",
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
                    md5: self.md5.unwrap_or(true),
                },
                upload_ttl,
                expired_retention,
                ..EngineConfig::default()
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
                max_connections: limits.max_connections,
                max_header_size: limits.max_header_size,
                min_transfer_rate: limits.min_transfer_rate,
                ..ServerConfig::default()
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
    let h2c = h2c.unwrap_or(false);
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
    max_connections: Option<String>,
    max_header_size: Option<String>,
    min_transfer_rate: Option<String>,
    min_transfer_rate_window: Option<String>,
) -> Result<Limits, KeyError> {
    let text = max_connections.as_deref().unwrap_or("4096").trim();
    let max_connections = match text.parse::<usize>() {
        Ok(0) | Err(_) => {
            return Err(KeyError {
                key: "max_connections",
                message: format!("{text:?} is not a whole number of at least 1"),
            });
        }
        Ok(count) => count,
    };
    let text = max_header_size.as_deref().unwrap_or("64KiB");
    let max_header_size = parse_size(text)
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
        })?;
    let text = min_transfer_rate.as_deref().unwrap_or("1KiB");
    let rate = parse_size(text.trim().trim_end_matches("/s")).map_err(|message| KeyError {
        key: "min_transfer_rate",
        message,
    })?;
    let window = duration(
        "min_transfer_rate_window",
        min_transfer_rate_window,
        "30s",
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

/// The options in a TOML file.
fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
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
        assert!(config.engine.digests.md5);
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
        assert!(!config.engine.digests.md5);
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
                .digests
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
        let message = bad(ServeArgs {
            hook_url: Some("ftp://example.invalid/x".into()),
            ..ServeArgs::default()
        });
        assert!(message.starts_with(r#"config key "hook_url""#), "{message}");
        let message = bad(ServeArgs {
            hook_completion_response: true,
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "hook_completion_response""#),
            "{message}"
        );
        let message = bad(ServeArgs {
            hook_command: Some("   ".into()),
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "hook_command""#),
            "{message}"
        );
        let message = bad(ServeArgs {
            hook_max_age: Some("soon".into()),
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "hook_max_age""#),
            "{message}"
        );
        let message = bad(ServeArgs {
            hook_secret_file: Some(PathBuf::from("/nonexistent/hook.secret")),
            hook_url: Some("http://127.0.0.1:9/".into()),
            ..ServeArgs::default()
        });
        assert!(
            message.starts_with(r#"config key "hook_secret_file""#),
            "{message}"
        );
    }

    #[test]
    fn hook_keys_from_the_file() {
        let config = file(
            r#"
            hook_url = "http://127.0.0.1:9000/events"
            hook_command = "/usr/local/bin/on-upload --verbose"
            hook_timeout = "2s"
            hook_retry_min = "250ms"
            hook_retry_max = "1m"
            hook_max_age = "3d"
            hook_progress_interval = 0
            hook_completion_response = true
            pre_create_hook_command = "check-upload"
            pre_create_hook_fail_open = true
            "#,
        )
        .expect("valid file")
        .validate()
        .expect("valid");
        let hooks = config.hooks;
        assert_eq!(hooks.url.as_deref(), Some("http://127.0.0.1:9000/events"));
        assert_eq!(
            hooks.command,
            CommandLine::parse("/usr/local/bin/on-upload --verbose")
        );
        assert_eq!(hooks.timeout, Duration::from_secs(2));
        assert_eq!(hooks.retry_min, Duration::from_millis(250));
        assert_eq!(hooks.retry_max, Duration::from_secs(60));
        assert_eq!(hooks.max_age, Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(hooks.progress_interval, Duration::ZERO);
        assert!(hooks.completion_answer && hooks.pre_create_fail_open);
        assert_eq!(hooks.pre_create_command, CommandLine::parse("check-upload"));
        let defaults = ServeArgs::default().validate().expect("valid").hooks;
        assert!(!defaults.delivers());
        assert_eq!(defaults.max_age, None);
        assert_eq!(defaults.timeout, Duration::from_secs(10));
    }

    #[test]
    fn edge_settings() {
        let config = ServeArgs::default().validate().expect("defaults are valid");
        assert!(config.server.tls.is_none());
        assert!(!config.server.h2c);
        assert_eq!(config.server.trust_forwarded, TrustForwarded::Nobody);
        assert_eq!(config.server.max_connections, 4096);
        assert_eq!(config.server.max_header_size, 64 * 1024);
        assert_eq!(
            config.server.min_transfer_rate,
            Some(MinTransferRate {
                bytes_per_second: 1024,
                window: Duration::from_secs(30)
            })
        );
        let config = file(
            r#"
            h2c = true
            behind_proxy = true
            trusted_proxies = "10.0.0.0/8, ::1"
            max_connections = 3
            max_header_size = "8KiB"
            min_transfer_rate = "100/s"
            min_transfer_rate_window = "2s"
            "#,
        )
        .expect("valid file")
        .validate()
        .expect("valid");
        assert!(config.server.h2c);
        assert_eq!(
            config.server.trust_forwarded,
            TrustForwarded::Networks(vec![
                "10.0.0.0/8".parse().expect("network"),
                "::1/128".parse().expect("network")
            ])
        );
        assert_eq!(config.server.max_connections, 3);
        assert_eq!(config.server.max_header_size, 8192);
        assert_eq!(
            config.server.min_transfer_rate,
            Some(MinTransferRate {
                bytes_per_second: 100,
                window: Duration::from_secs(2)
            })
        );
        let off = ServeArgs {
            min_transfer_rate: Some("0".into()),
            behind_proxy: Some(true),
            ..ServeArgs::default()
        };
        let off = off.validate().expect("valid");
        assert_eq!(off.server.min_transfer_rate, None);
        assert_eq!(off.server.trust_forwarded, TrustForwarded::Anyone);
    }

    #[test]
    fn edge_errors_name_the_key() {
        let bad = |args: ServeArgs| args.validate().expect_err("invalid").to_string();
        let cases = [
            (
                ServeArgs {
                    tls_cert: Some("cert.pem".into()),
                    ..ServeArgs::default()
                },
                "tls_key",
            ),
            (
                ServeArgs {
                    tls_key: Some("key.pem".into()),
                    ..ServeArgs::default()
                },
                "tls_cert",
            ),
            (
                ServeArgs {
                    tls_cert: Some("/nonexistent/cert.pem".into()),
                    tls_key: Some("/nonexistent/key.pem".into()),
                    ..ServeArgs::default()
                },
                "tls_cert",
            ),
            (
                ServeArgs {
                    trusted_proxies: Some("10.0.0.0/8".into()),
                    ..ServeArgs::default()
                },
                "trusted_proxies",
            ),
            (
                ServeArgs {
                    behind_proxy: Some(true),
                    trusted_proxies: Some("10.0.0.0/33".into()),
                    ..ServeArgs::default()
                },
                "trusted_proxies",
            ),
            (
                ServeArgs {
                    max_connections: Some("0".into()),
                    ..ServeArgs::default()
                },
                "max_connections",
            ),
            (
                // A cluster shares an object store, not a directory.
                ServeArgs {
                    cluster: Some("postgres://db/tenax".into()),
                    ..ServeArgs::default()
                },
                "cluster",
            ),
            (
                ServeArgs {
                    max_header_size: Some("100".into()),
                    ..ServeArgs::default()
                },
                "max_header_size",
            ),
            (
                ServeArgs {
                    min_transfer_rate: Some("fast".into()),
                    ..ServeArgs::default()
                },
                "min_transfer_rate",
            ),
            (
                ServeArgs {
                    min_transfer_rate_window: Some("0s".into()),
                    ..ServeArgs::default()
                },
                "min_transfer_rate_window",
            ),
        ];
        for (args, key) in cases {
            let message = bad(args);
            assert!(
                message.starts_with(&format!("config key {key:?}")),
                "{key}: {message}"
            );
        }
    }
}
