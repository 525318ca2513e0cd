//! The configuration's parsing, precedence, defaults and errors.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as _, FromArgMatches as _};
use tenax_core::EngineConfig;
use tenax_hooks::{CommandLine, HookConfig};
use tenax_server::{MinTransferRate, ServerConfig, TrustForwarded};

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
    assert_eq!(
        config.server.interim_responses,
        tenax_server::InterimResponses::Auto
    );
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
        interim_responses = "always"
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
    assert_eq!(
        config.server.interim_responses,
        tenax_server::InterimResponses::Always
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

/// `tenax serve` with no flags (and no environment), as clap parses it.
fn no_flags() -> ServeArgs {
    let command =
        ServeArgs::augment_args(clap::Command::new("tenax-serve")).mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(["tenax-serve"])
        .expect("no flags parse");
    ServeArgs::from_arg_matches(&matches).expect("no flags are arguments")
}

#[test]
fn unset_options_take_the_libraries_defaults() {
    let sources = [
        ("no flags", no_flags()),
        ("an empty file", file("").expect("an empty file parses")),
        ("both", no_flags().over(file("").expect("empty"))),
    ];
    for (source, args) in sources {
        let config = args.validate().expect("the defaults are valid");
        // Debug output covers every field, those added later included.
        assert_eq!(
            format!("{:?}", config.engine),
            format!("{:?}", EngineConfig::default()),
            "{source}"
        );
        assert_eq!(
            format!("{:?}", config.server),
            format!("{:?}", ServerConfig::default()),
            "{source}"
        );
        assert_eq!(
            format!("{:?}", config.hooks),
            format!("{:?}", HookConfig::default()),
            "{source}"
        );
        assert_eq!(
            config.expiry_interval,
            tenax_core::DEFAULT_EXPIRY_INTERVAL,
            "{source}"
        );
        assert_eq!(config.log_format, LogFormat::default(), "{source}");
    }
}
