//! Which dialect a request speaks, told by its headers alone (docs/protocol.md §0,
//! "Routing"). The router (`dialects/mod.rs`) and the request metrics
//! (`ops.rs`) both ask here, so the two can never disagree.
//!
//! A leaf: this module imports nothing of the crate.

use axum::http::{HeaderMap, Method, header};

/// The media type of tus chunks.
pub(crate) const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// The dialect of a request on the upload resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `Tus-Resumable`, or tus headers without it (the tus adapter then
    /// answers 412 rather than another dialect guessing).
    Tus,
    /// `Upload-Draft-Interop-Version`, `Upload-Complete` or `Upload-Incomplete`.
    Rufh,
    /// Everything else: Google's shape.
    Seed,
}

impl Dialect {
    /// The dialect `headers` name.
    pub(crate) fn of(headers: &HeaderMap) -> Dialect {
        let has = |name: &str| headers.contains_key(name);
        if has("tus-resumable") {
            Dialect::Tus
        } else if [
            "upload-draft-interop-version",
            "upload-complete",
            "upload-incomplete",
        ]
        .into_iter()
        .any(has)
        {
            Dialect::Rufh
        } else if [
            "upload-length",
            "upload-offset",
            "upload-defer-length",
            "upload-metadata",
            "upload-concat",
            "upload-checksum",
        ]
        .into_iter()
        .any(has)
            || has_offset_stream(headers)
        {
            Dialect::Tus
        } else {
            Dialect::Seed
        }
    }

    /// The `dialect` label of a request to `/uploads…` that is not a
    /// download. A bodiless `PATCH`/`HEAD` without dialect headers goes to
    /// the RUFH adapter, so it is counted as `ietf`; a bare `OPTIONS`
    /// answers every dialect at once (`other`).
    pub(crate) fn label(self, method: &Method) -> &'static str {
        match self {
            Dialect::Tus => "tus",
            Dialect::Rufh => "ietf",
            Dialect::Seed if *method == Method::PATCH || *method == Method::HEAD => "ietf",
            Dialect::Seed if *method == Method::OPTIONS => "other",
            Dialect::Seed => "seed",
        }
    }
}

/// Whether the request carries a tus offset stream (creation-with-upload,
/// PATCH).
pub(crate) fn has_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case(OFFSET_STREAM))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_headers_name_the_dialect() {
        let cases: &[(&[(&str, &str)], Dialect)] = &[
            (&[("tus-resumable", "1.0.0")], Dialect::Tus),
            // tus-resumable wins over draft headers.
            (
                &[("tus-resumable", "1.0.0"), ("upload-complete", "?1")],
                Dialect::Tus,
            ),
            (&[("upload-complete", "?0")], Dialect::Rufh),
            (&[("upload-draft-interop-version", "6")], Dialect::Rufh),
            (&[("upload-incomplete", "?0")], Dialect::Rufh),
            // Draft headers win over tus headers without Tus-Resumable.
            (
                &[("upload-complete", "?1"), ("upload-offset", "0")],
                Dialect::Rufh,
            ),
            (&[("upload-length", "5")], Dialect::Tus),
            (&[("upload-metadata", "")], Dialect::Tus),
            (
                &[("content-type", "Application/Offset+Octet-Stream; x=y")],
                Dialect::Tus,
            ),
            (&[("content-range", "bytes 0-4/5")], Dialect::Seed),
            (
                &[("content-type", "application/partial-upload")],
                Dialect::Seed,
            ),
            (&[], Dialect::Seed),
        ];
        for (pairs, dialect) in cases {
            assert_eq!(Dialect::of(&headers(pairs)), *dialect, "{pairs:?}");
        }
    }

    #[test]
    fn labels_follow_the_adapter_that_answers() {
        assert_eq!(Dialect::Tus.label(&Method::PATCH), "tus");
        assert_eq!(Dialect::Rufh.label(&Method::POST), "ietf");
        assert_eq!(Dialect::Seed.label(&Method::PATCH), "ietf");
        assert_eq!(Dialect::Seed.label(&Method::HEAD), "ietf");
        assert_eq!(Dialect::Seed.label(&Method::OPTIONS), "other");
        assert_eq!(Dialect::Seed.label(&Method::PUT), "seed");
    }
}
