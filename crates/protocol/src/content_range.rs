//! `Content-Range` as sent by seed-protocol clients (docs/protocol.md §1.2).
//!
//! Written by hand because the crates that parse this header follow
//! RFC 9110 §14.4 leniently in the wrong places: `headers::ContentRange`
//! accepts `bytes 0-9/5`, and none of them accepts Google's `bytes A-B/*`
//! and `bytes */*` forms, which every Google client sends.

use std::fmt;

use thiserror::Error;

use crate::number::{NumberError, parse_u64};

/// The complete length after the `/`: a number, or `*` when the client does
/// not know it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Total {
    /// The total size of the upload, in bytes.
    Known(u64),
    /// `*`: the client does not know the total size yet.
    Unknown,
}

impl Total {
    /// The known total, if any.
    pub fn known(self) -> Option<u64> {
        match self {
            Total::Known(total) => Some(total),
            Total::Unknown => None,
        }
    }
}

impl fmt::Display for Total {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Total::Known(total) => write!(f, "{total}"),
            Total::Unknown => f.write_str("*"),
        }
    }
}

/// A parsed, validated `Content-Range` header of an upload request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentRange {
    /// `bytes FIRST-LAST/TOTAL`: the body carries bytes `FIRST..=LAST`.
    ///
    /// Guaranteed: `first <= last`, `last < total` when the total is known,
    /// and `last + 1` does not overflow.
    Bytes {
        /// Offset of the first byte in the body.
        first: u64,
        /// Offset of the last byte in the body (inclusive).
        last: u64,
        /// The total size, if the client knows it.
        total: Total,
    },
    /// `bytes */TOTAL`: no body; a status query (or a final, empty request).
    Query {
        /// The total size, if the client knows it.
        total: Total,
    },
}

/// Why a `Content-Range` header was rejected. Every case answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ContentRangeError {
    /// The unit is not `bytes` followed by one space.
    #[error("Content-Range must start with the unit \"bytes \"")]
    Unit,
    /// The value does not have the form `FIRST-LAST/TOTAL` or `*/TOTAL`.
    #[error("Content-Range must have the form \"bytes FIRST-LAST/TOTAL\" or \"bytes */TOTAL\"")]
    Syntax,
    /// A number in the header is malformed or too large.
    #[error("Content-Range contains an invalid number: {0}")]
    Number(NumberError),
    /// `LAST` is smaller than `FIRST`.
    #[error("Content-Range ends before it starts")]
    Reversed,
    /// `LAST` is not below the total.
    #[error("Content-Range ends at or past the total size")]
    PastTotal,
    /// `LAST + 1` does not fit in 64 bits.
    #[error("Content-Range end overflows")]
    Overflow,
}

impl From<NumberError> for ContentRangeError {
    fn from(error: NumberError) -> Self {
        ContentRangeError::Number(error)
    }
}

impl ContentRange {
    /// Parses a `Content-Range` value.
    ///
    /// ```
    /// use tenax_protocol::{ContentRange, Total};
    /// assert_eq!(
    ///     ContentRange::parse("bytes 0-9/100"),
    ///     Ok(ContentRange::Bytes { first: 0, last: 9, total: Total::Known(100) }),
    /// );
    /// assert_eq!(ContentRange::parse("bytes */*"), Ok(ContentRange::Query { total: Total::Unknown }));
    /// assert!(ContentRange::parse("bytes 0-10/10").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, ContentRangeError> {
        let rest = value
            .strip_prefix("bytes ")
            .ok_or(ContentRangeError::Unit)?;
        let (range, total) = rest.split_once('/').ok_or(ContentRangeError::Syntax)?;
        let total = match total {
            "*" => Total::Unknown,
            digits => Total::Known(parse_u64(digits)?),
        };
        if range == "*" {
            return Ok(ContentRange::Query { total });
        }
        let (first, last) = range.split_once('-').ok_or(ContentRangeError::Syntax)?;
        let (first, last) = (parse_u64(first)?, parse_u64(last)?);
        if last < first {
            return Err(ContentRangeError::Reversed);
        }
        if last == u64::MAX {
            return Err(ContentRangeError::Overflow);
        }
        if let Total::Known(total) = total
            && last >= total
        {
            return Err(ContentRangeError::PastTotal);
        }
        Ok(ContentRange::Bytes { first, last, total })
    }

    /// The total size the header declares, if any.
    pub fn total(&self) -> Total {
        match *self {
            ContentRange::Bytes { total, .. } | ContentRange::Query { total } => total,
        }
    }

    /// The number of body bytes this header announces (0 for a query).
    pub fn body_len(&self) -> u64 {
        match *self {
            // Cannot overflow: `parse` rejects `last == u64::MAX`.
            ContentRange::Bytes { first, last, .. } => last - first + 1,
            ContentRange::Query { .. } => 0,
        }
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentRange::Bytes { first, last, total } => write!(f, "bytes {first}-{last}/{total}"),
            ContentRange::Query { total } => write!(f, "bytes */{total}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_every_seed_form() {
        use ContentRange::*;
        use Total::*;
        let cases = [
            (
                "bytes 0-262143/1000000",
                Bytes {
                    first: 0,
                    last: 262_143,
                    total: Known(1_000_000),
                },
            ),
            (
                "bytes 5-9/*",
                Bytes {
                    first: 5,
                    last: 9,
                    total: Unknown,
                },
            ),
            (
                "bytes */1000000",
                Query {
                    total: Known(1_000_000),
                },
            ),
            ("bytes */*", Query { total: Unknown }),
            ("bytes */0", Query { total: Known(0) }),
        ];
        for (text, expected) in cases {
            assert_eq!(ContentRange::parse(text), Ok(expected), "{text}");
            assert_eq!(expected.to_string(), text);
        }
    }

    #[test]
    fn rejects_conformance_cases() {
        use ContentRangeError::*;
        let cases = [
            ("bytes 5-2/10", Reversed),
            ("bytes 0-10/10", PastTotal),
            ("bites 0-1/2", Unit),
            ("bytes 0-1", Syntax),
            ("bytes=0-1/2", Unit),
            (
                "bytes 18446744073709551615-18446744073709551615/*",
                Overflow,
            ),
            (
                "bytes 0-99999999999999999999/*",
                Number(NumberError::Overflow),
            ),
            ("bytes -1-2/3", Number(NumberError::Empty)),
            ("bytes 0-+1/3", Number(NumberError::NotDigits)),
            ("bytes  0-1/3", Number(NumberError::NotDigits)),
            ("bytes 0-1/3 ", Number(NumberError::NotDigits)),
            ("bytes 0-1-2/3", Number(NumberError::NotDigits)),
            ("bytes */", Number(NumberError::Empty)),
            ("", Unit),
        ];
        for (text, expected) in cases {
            assert_eq!(ContentRange::parse(text), Err(expected), "{text}");
        }
    }

    fn total() -> impl Strategy<Value = Total> {
        prop_oneof![Just(Total::Unknown), any::<u64>().prop_map(Total::Known)]
    }

    fn valid_range() -> impl Strategy<Value = ContentRange> {
        let bytes = (0..u64::MAX - 1, any::<u64>(), total()).prop_filter_map(
            "last must stay below the total",
            |(first, len, total)| {
                let last = first.checked_add(len % (u64::MAX - first))?;
                match total {
                    Total::Known(t) if last >= t => None,
                    _ => Some(ContentRange::Bytes { first, last, total }),
                }
            },
        );
        prop_oneof![
            bytes,
            total().prop_map(|total| ContentRange::Query { total })
        ]
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(range in valid_range()) {
            prop_assert_eq!(ContentRange::parse(&range.to_string()), Ok(range));
        }

        #[test]
        fn parsed_ranges_uphold_their_invariants(text in "bytes [0-9*]{0,4}-?[0-9]{0,4}/[0-9*]{0,4}") {
            if let Ok(range) = ContentRange::parse(&text) {
                if let ContentRange::Bytes { first, last, total } = range {
                    prop_assert!(first <= last);
                    prop_assert!(last < u64::MAX);
                    if let Total::Known(total) = total {
                        prop_assert!(last < total);
                    }
                }
                prop_assert_eq!(range.to_string().len() <= text.len(), true);
            }
        }

        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = ContentRange::parse(&text);
        }
    }
}
