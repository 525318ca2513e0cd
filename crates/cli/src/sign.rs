//! `tenax sign`: mints a signed URL, for a client that has no token.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use tenax_core::{FileName, Namespace, UploadId};
use tenax_protocol::signed::{Grant, Scope};

use crate::credentials::read_signing_key;
use crate::units::parse_duration;

/// Prints URL with a signature that lets anyone holding it create uploads
/// (`…/uploads`, `…/api/upload?file=NAME`), continue one upload
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
    /// The namespace the URL acts in. [default: the default namespace]
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
    /// What the URL allows: `create`, `upload:ID` or `file:NAME`.
    /// [default: from the URL's path]
    #[arg(long)]
    scope: Option<String>,
    /// How long the URL stays valid, e.g. `15m`, `2d`.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    expires_in: String,
}

pub(crate) fn run(args: SignArgs) -> anyhow::Result<()> {
    let key = read_signing_key(&args.key_file)?;
    let namespace = match &args.namespace {
        None => Namespace::default(),
        Some(name) => Namespace::new(name.as_str()).context("--namespace")?,
    };
    let scope = match &args.scope {
        Some(text) => Scope::parse(text)
            .map_err(|_| anyhow!("--scope {text:?}: expected create, upload:ID or file:NAME"))?,
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
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if path == "/uploads" || path == "/api/upload" {
        return Ok(Scope::Create);
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
            scope_of("https://h/api/upload?file=abc.zip").ok(),
            Some(Scope::Create)
        );
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
