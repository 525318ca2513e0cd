//! The configuration of `tenax serve`: flags, environment (`TENAX_*`) and a
//! TOML file land in one [`ServeArgs`] (low level: every value optional and
//! still text), merged with precedence flags > environment > file >
//! defaults, then validated once into a [`ServeConfig`] (high level: typed,
//! complete), as ripgrep does with its LowArgs and HiArgs.
//!
//! * this module: the options themselves ([`ServeArgs`], one field per
//!   flag, environment variable and file key) and their merging;
//! * [`file`](mod@file): reading the TOML file into a [`ServeArgs`];
//! * [`validate`]: the typed [`ServeConfig`], its defaults (the libraries'
//!   own) and the checks, each error naming its key.

mod file;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::credentials::{NamespaceEntry, TokenEntry};

pub(crate) use self::validate::ServeConfig;
use crate::units::text;

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
    /// one), unless the client's `Want-Repr-Digest` leaves it out, as
    /// `tenax upload` does. MD5 is the slowest digest and caps one upload
    /// near 0.7 GB/s; only GCS-style clients that validate MD5 need it.
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
    /// When the IETF draft's `104 Upload Resumption Supported` interim
    /// response is sent: `auto` only to requests that did not come through
    /// a reverse proxy (none with `Forwarded`, `X-Forwarded-*` or `Via`,
    /// from a `--trusted-proxies` peer, or with `--behind-proxy` and no
    /// list), since nginx before 1.29 takes a 104 for the final answer and
    /// stalls the upload; `always` for a proxy known to pass 1xx on;
    /// `never`. [default: auto]
    #[arg(long, value_name = "WHEN", env = "TENAX_INTERIM_RESPONSES")]
    interim_responses: Option<InterimMode>,
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

/// When 104 interim responses are sent (`--interim-responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum InterimMode {
    /// Not through a reverse proxy.
    Auto,
    /// Always, also through proxies.
    Always,
    /// Never.
    Never,
}

impl From<InterimMode> for tenax_server::InterimResponses {
    fn from(mode: InterimMode) -> Self {
        match mode {
            InterimMode::Auto => tenax_server::InterimResponses::Auto,
            InterimMode::Always => tenax_server::InterimResponses::Always,
            InterimMode::Never => tenax_server::InterimResponses::Never,
        }
    }
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

impl ServeArgs {
    /// Flags and environment (as parsed by clap), then the `--config` file
    /// under them, validated.
    pub(crate) fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => file::read_file(path)?,
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
            interim_responses: self.interim_responses.or(lower.interim_responses),
            max_connections: self.max_connections.or(lower.max_connections),
            max_header_size: self.max_header_size.or(lower.max_header_size),
            min_transfer_rate: self.min_transfer_rate.or(lower.min_transfer_rate),
            min_transfer_rate_window: self
                .min_transfer_rate_window
                .or(lower.min_transfer_rate_window),
        }
    }
}

#[cfg(test)]
mod tests;
