//! Reading a response to a range request: its status and
//! `Content-Range` (with `tenax_protocol`'s parser), and the validators and
//! `Repr-Digest` that tell which version of the file it is.

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, LAST_MODIFIED};
use tenax_protocol::repr_digest::Sha256Digest;
use tenax_protocol::{ContentRange, parse_u64};

use super::Job;
use crate::net::lock;

/// An answer to a range request, read from its status and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// `206`: bytes `first..=last` of `total` (`None`: `*`, in progress).
    Partial {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    /// `200`: the whole representation (`Content-Length` if given).
    Full { length: Option<u64> },
    /// `416`: nothing at or past the position; the length if given.
    Unsatisfiable { total: Option<u64> },
    /// `409`: an upload in progress served without a range.
    InProgress,
}

/// A header's value as text, trimmed (`None` if absent or not text).
pub(super) fn header(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The answer of a response, or why it cannot be used.
pub(super) fn answer_of(status: u16, headers: &HeaderMap) -> Result<Answer, String> {
    let content_range = header(headers, CONTENT_RANGE);
    match status {
        206 => {
            let value = content_range.ok_or("a 206 answer without Content-Range")?;
            match ContentRange::parse(value) {
                Ok(ContentRange::Bytes { first, last, total }) => Ok(Answer::Partial {
                    first,
                    last,
                    total: total.known(),
                }),
                _ => Err(format!(
                    "a 206 answer with an unusable Content-Range {value:?} (multipart answers are not requested)"
                )),
            }
        }
        200 => Ok(Answer::Full {
            length: header(headers, CONTENT_LENGTH).and_then(|v| parse_u64(v).ok()),
        }),
        416 => Ok(Answer::Unsatisfiable {
            total: content_range
                .and_then(|value| ContentRange::parse(value).ok())
                .and_then(|range| range.total().known()),
        }),
        409 => Ok(Answer::InProgress),
        _ => Err(format!("unexpected status {status}")),
    }
}

impl Job<'_> {
    /// Whether a response's validators agree with the known ones.
    pub(super) fn validators_agree(&self, headers: &HeaderMap) -> bool {
        self.change(headers).is_none()
    }

    /// Why a response is of another version than the one on disk, if it is.
    pub(super) fn change(&self, headers: &HeaderMap) -> Option<String> {
        let meta = lock(&self.meta);
        if !meta.known {
            return None;
        }
        if let (Some(ours), Some(theirs)) = (meta.etag.as_deref(), header(headers, ETAG))
            && ours != theirs
        {
            return Some(format!(
                "the file changed on the server (ETag {ours} became {theirs})"
            ));
        }
        if meta.etag.is_none()
            && let (Some(ours), Some(theirs)) = (
                meta.last_modified.as_deref(),
                header(headers, LAST_MODIFIED),
            )
            && ours != theirs
        {
            return Some(format!(
                "the file changed on the server (Last-Modified {ours} became {theirs})"
            ));
        }
        None
    }

    /// Records the validators and length of a response (first answer, or
    /// fields that were missing so far, as when a followed upload ends).
    pub(super) fn learn(&self, headers: &HeaderMap, total: Option<u64>) {
        let mut meta = lock(&self.meta);
        meta.known = true;
        if meta.etag.is_none() {
            meta.etag = header(headers, ETAG).map(str::to_owned);
        }
        if meta.last_modified.is_none() {
            meta.last_modified = header(headers, LAST_MODIFIED).map(str::to_owned);
        }
        if meta.sha256.is_none() {
            meta.sha256 = header(headers, "repr-digest")
                .and_then(Sha256Digest::from_field)
                .map(|digest| digest.to_hex());
        }
        if meta.length.is_none() {
            meta.length = total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a 206 or 416 answer's `Content-Range` says, if it is usable.
    fn range_of(status: u16, value: &str) -> Result<Answer, String> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, value.parse().expect("value"));
        answer_of(status, &headers)
    }

    #[test]
    fn content_ranges() {
        let partial = |first, last, total| Ok(Answer::Partial { first, last, total });
        assert_eq!(range_of(206, "bytes 0-99/1000"), partial(0, 99, Some(1000)));
        assert_eq!(range_of(206, "bytes 5-9/*"), partial(5, 9, None));
        assert_eq!(
            range_of(416, "bytes */1000"),
            Ok(Answer::Unsatisfiable { total: Some(1000) })
        );
        assert_eq!(
            range_of(416, "bytes */*"),
            Ok(Answer::Unsatisfiable { total: None })
        );
        for unusable in [
            "bytes */1000",
            "bytes */*",
            "bytes 9-5/1000",
            "bytes 0-1000/1000",
            "items 0-1/2",
            "bytes 0-99999999999999999999/*",
        ] {
            assert!(range_of(206, unusable).is_err(), "{unusable}");
        }
        for lengthless in [
            "bytes 9-5/1000",
            "items 0-1/2",
            "bytes 0-99999999999999999999/*",
        ] {
            assert_eq!(
                range_of(416, lengthless),
                Ok(Answer::Unsatisfiable { total: None }),
                "{lengthless}"
            );
        }
    }

    #[test]
    fn answers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_RANGE, "bytes 10-19/*".parse().expect("value"));
        assert_eq!(
            answer_of(206, &headers),
            Ok(Answer::Partial {
                first: 10,
                last: 19,
                total: None
            })
        );
        headers.insert(CONTENT_RANGE, "bytes */30".parse().expect("value"));
        assert_eq!(
            answer_of(416, &headers),
            Ok(Answer::Unsatisfiable { total: Some(30) })
        );
        assert!(answer_of(206, &headers).is_err());
        assert!(answer_of(206, &HeaderMap::new()).is_err());
    }
}
