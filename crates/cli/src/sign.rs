//! `tenax sign`: mints a signed URL, for a client that has no token.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use tenax_core::{FileName, Namespace, UploadId};
use tenax_protocol::signed::{Grant, Scope, file_param};

use crate::credentials::read_signing_key;
use crate::units::parse_duration;

/// Prints URL with a signature that lets anyone holding it create uploads
/// (`…/uploads`), upload under one name with the by-name form
/// (`…/api/upload?file=NAME`, that name only), continue one upload
/// (`…/uploads/ID`) or download one file (`…/files/NAME`), until it expires.
/// An upload created through a signed URL answers with a `Location` signed
/// for that upload, until the same time.
#[derive(Debug, clap::Args)]
pub(crate) struct SignArgs {
    /// The URL to sign.
    url: String,
    /// The file with the server's signing key (its `--signing-key-file`).
    #[arg(long, value_name = "FILE", env = "TENAX_SIGNING_KEY_FILE")]
    key_file: PathBuf,
    /// The namespace the URL acts in (`default`: the default namespace).
    /// [default: the default namespace]
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
    /// What the URL allows: `create`, `name:NAME`, `upload:ID` or `file:NAME`.
    /// [default: from the URL's path]
    #[arg(long)]
    scope: Option<String>,
    /// How long the URL stays valid, e.g. `15m`, `2d`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    expires_in: String,
}

pub(crate) fn run(args: SignArgs) -> anyhow::Result<()> {
    let key = read_signing_key(&args.key_file)?;
    let namespace = match args.namespace.as_deref() {
        None | Some(Namespace::DEFAULT_ALIAS) => Namespace::default(),
        Some(name) => Namespace::new(name).context("--namespace")?,
    };
    let scope = match &args.scope {
        Some(text) => Scope::parse(text).map_err(|_| {
            anyhow!("--scope {text:?}: expected create, name:NAME, upload:ID or file:NAME")
        })?,
        None => scope_of(&args.url)?,
    };
    let lifetime =
        parse_duration(&args.expires_in).map_err(|message| anyhow!("--expires-in: {message}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let query = key.sign(&Grant {
        namespace,
        scope,
        expires: (now + lifetime).as_secs(),
    });
    let separator = if args.url.contains('?') { '&' } else { '?' };
    println!("{}{separator}{query}", args.url);
    Ok(())
}

/// The scope a URL's path calls for.
fn scope_of(url: &str) -> anyhow::Result<Scope> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("/", |slash| &rest[slash..]);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.split('#').next().unwrap_or(path);
    let query = query.split('#').next().unwrap_or(query);
    if path == "/uploads" {
        return Ok(Scope::Create);
    }
    if path == "/api/upload" {
        return match file_param(query) {
            Some(Ok(name)) => Ok(Scope::Name(name)),
            Some(Err(error)) => Err(anyhow!("{url}: {error}")),
            None => Err(anyhow!("{url}: the by-name form needs ?file=NAME")),
        };
    }
    if let Some(id) = path.strip_prefix("/uploads/") {
        return Ok(Scope::Upload(
            UploadId::parse(id).map_err(|error| anyhow!("{url}: {error}"))?,
        ));
    }
    if let Some(name) = path.strip_prefix("/files/") {
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .map_err(|_| anyhow!("{url}: the file name is not UTF-8"))?;
        return Ok(Scope::File(
            FileName::new(name).map_err(|error| anyhow!("{url}: {error}"))?,
        ));
    }
    bail!("{url}: not an upload or file URL of tenax; say what it allows with --scope")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_follows_the_path() {
        assert_eq!(scope_of("http://h:1/uploads").ok(), Some(Scope::Create));
        assert_eq!(
            scope_of("https://h/api/upload?file=abc.zip&x=1#f").ok(),
            Some(Scope::Name(FileName::new("abc.zip").expect("valid")))
        );
        for unnamed in [
            "https://h/api/upload",
            "https://h/api/upload?file=a&file=b",
            "https://h/api/upload?file=%FF",
        ] {
            assert!(scope_of(unnamed).is_err(), "{unnamed}");
        }
        let id = UploadId::from_bytes([0xab; 16]);
        assert_eq!(
            scope_of(&format!("http://h/uploads/{id}")).ok(),
            Some(Scope::Upload(id))
        );
        assert_eq!(
            scope_of("http://h/files/a%20b.txt").ok(),
            Some(Scope::File(FileName::new("a b.txt").expect("valid")))
        );
        assert!(scope_of("http://h/metrics").is_err());
        assert!(scope_of("http://h/uploads/xyz").is_err());
    }
}
