//! Interpretation of the URL the user gives.
//!
//! Two forms are accepted:
//!
//! * `http://host:port/api/upload?file=NAME`: used as is, `NAME` (decoded)
//!   names the upload;
//! * `http://host:port` (optionally with a path prefix and/or a trailing
//!   `/`): the upload goes to `…/api/upload?file=NAME` where `NAME` is the
//!   local file's base name; a collection URL `…/uploads` (a URL signed
//!   for creating uploads) opens seed sessions at `…/uploads?file=NAME`.
//!
//! The tus and IETF dialects create uploads at the collection `{base}/uploads`
//! instead, where `{base}` is the URL without `/api/upload` and its query; the
//! name travels in `Upload-Metadata` or `Content-Disposition`.

use std::path::Path;

use reqwest::Url;

use crate::error::Error;

/// Where and under which name sessions are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The URL to `POST` to create a session (always carries `file=`).
    pub(crate) endpoint: Url,
    /// The upload's name on the server.
    pub(crate) name: String,
    /// The tus / IETF collection, `{base}/uploads`.
    pub(crate) collection: Url,
}

/// The collection path appended to a bare server URL.
const COLLECTION: &str = "api/upload";

/// Interprets `url` for uploading `file` (see the module docs).
pub(crate) fn interpret(url: &str, file: &Path) -> Result<Target, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    parsed.set_fragment(None);
    if let Some((_, name)) = parsed.query_pairs().find(|(key, _)| key == "file") {
        let name = name.into_owned();
        if name.is_empty() {
            return Err(invalid("the file= parameter is empty"));
        }
        return Ok(Target {
            collection: collection_of(&parsed),
            endpoint: parsed,
            name,
        });
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::InvalidUrl {
            url: url.to_owned(),
            reason: format!("{} has no file name to upload under", file.display()),
        })?;
    let path = parsed.path().trim_end_matches('/').to_owned();
    // A collection URL (`…/uploads`, a signed one, say) stays: a seed
    // session is opened there too, and a URL signed for creating uploads
    // does not reach the by-name form.
    if !path.ends_with(&format!("/{COLLECTION}")) && !path.ends_with("/uploads") {
        parsed.set_path(&format!("{path}/{COLLECTION}"));
    }
    let query = match parsed.query() {
        Some(q) if !q.is_empty() => format!("{q}&file={}", encode_component(&name)),
        _ => format!("file={}", encode_component(&name)),
    };
    parsed.set_query(Some(&query));
    Ok(Target {
        collection: collection_of(&parsed),
        endpoint: parsed,
        name,
    })
}

/// `{base}/uploads` for a seed endpoint: its path without a trailing
/// `/api/upload`, then `/uploads`, with its query but for `file=`.
fn collection_of(endpoint: &Url) -> Url {
    let mut collection = endpoint.clone();
    let path = endpoint.path().trim_end_matches('/');
    let base = path
        .strip_suffix(&format!("/{COLLECTION}"))
        .or_else(|| path.strip_suffix("/uploads"))
        .unwrap_or(path);
    collection.set_path(&format!("{base}/uploads"));
    // Everything but the name stays: a signed URL's signature is in its query.
    let kept: Vec<(String, String)> = endpoint
        .query_pairs()
        .filter(|(key, _)| key != "file")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if kept.is_empty() {
        collection.set_query(None);
    } else {
        collection.query_pairs_mut().clear().extend_pairs(kept);
    }
    collection
}

/// Everything but RFC 3986 unreserved characters.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters (a space
/// becomes `%20`, which form and plain percent decoders both read back).
fn encode_component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, file: &str) -> Target {
        interpret(url, Path::new(file)).expect("valid")
    }

    #[test]
    fn a_signed_collection_url_keeps_its_signature() {
        let t = target(
            "http://h:8080/uploads?ns=team&scope=create&exp=9&sig=AbC-_",
            "/tmp/r.bin",
        );
        assert_eq!(
            t.endpoint.as_str(),
            "http://h:8080/uploads?ns=team&scope=create&exp=9&sig=AbC-_&file=r.bin"
        );
        assert_eq!(
            t.collection.as_str(),
            "http://h:8080/uploads?ns=team&scope=create&exp=9&sig=AbC-_"
        );
    }

    #[test]
    fn bare_server_url_uses_the_base_name() {
        for url in ["http://h:8080", "http://h:8080/"] {
            let t = target(url, "/tmp/dir/report.pdf");
            assert_eq!(t.name, "report.pdf");
            assert_eq!(
                t.endpoint.as_str(),
                "http://h:8080/api/upload?file=report.pdf"
            );
        }
    }

    #[test]
    fn collections_for_tus_and_ietf() {
        let cases = [
            ("http://h:8080", "http://h:8080/uploads"),
            ("http://h:8080/", "http://h:8080/uploads"),
            ("http://h/tenax/", "http://h/tenax/uploads"),
            ("http://h/api/upload?file=x", "http://h/uploads"),
            ("http://h/p/api/upload?file=x&y=1", "http://h/p/uploads?y=1"),
            ("http://h/uploads", "http://h/uploads"),
        ];
        for (url, collection) in cases {
            assert_eq!(
                target(url, "a.bin").collection.as_str(),
                collection,
                "{url}"
            );
        }
    }

    #[test]
    fn path_prefix_is_kept() {
        let t = target("http://h/tenax/", "a.bin");
        assert_eq!(t.endpoint.as_str(), "http://h/tenax/api/upload?file=a.bin");
        let t = target("http://h/api/upload", "a.bin");
        assert_eq!(t.endpoint.as_str(), "http://h/api/upload?file=a.bin");
    }

    #[test]
    fn names_are_percent_encoded() {
        let t = target("http://h:1/", "/x/my file+ü&=.txt");
        assert_eq!(t.name, "my file+ü&=.txt");
        assert_eq!(
            t.endpoint.as_str(),
            "http://h:1/api/upload?file=my%20file%2B%C3%BC%26%3D.txt"
        );
        // It round-trips through a form decoder.
        let (_, back) = t.endpoint.query_pairs().next().expect("pair");
        assert_eq!(back, "my file+ü&=.txt");
    }

    #[test]
    fn explicit_name_wins() {
        let t = target(
            "http://h:1/api/upload?file=other%20name.txt",
            "/x/local.txt",
        );
        assert_eq!(t.name, "other name.txt");
        assert_eq!(
            t.endpoint.as_str(),
            "http://h:1/api/upload?file=other%20name.txt"
        );
        let t = target("http://h:1/api/upload?file=a+b", "/x/local.txt");
        assert_eq!(t.name, "a b");
    }

    #[test]
    fn bad_urls_are_rejected() {
        for url in ["ftp://h/", "not a url", "http://h/api/upload?file="] {
            let err = interpret(url, Path::new("f")).expect_err(url);
            assert_eq!(err.exit_code(), 3, "{url}");
        }
        assert!(interpret("http://h/", Path::new("/")).is_err());
    }
}
