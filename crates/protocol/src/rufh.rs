//! Fields of the IETF "Resumable Uploads for HTTP" draft (docs/protocol.md §3).
//!
//! Every field is a Structured Field (RFC 9651), read with the `sfv` parser:
//! an invalid value counts as absent (§3.2), so `?1;a=b` is a true boolean
//! while `true` or a 16-digit integer is no value at all.

use sfv::{BareItem, Dictionary, Item, KeyRef, Parser};

/// The media type of an append body (interop version 6 and later).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// Prefix of the draft's problem types.
pub const PROBLEM_PREFIX: &str = "https://iana.org/assignments/http-problem-types#";

/// The interop versions served, oldest first: 5 and 6 are what
/// tus-js-client sends, 8 what recent Apple systems send, 9 the latest.
pub const INTEROP_VERSIONS: std::ops::RangeInclusive<u32> = 5..=9;

fn item(value: &str) -> Option<Item> {
    Parser::new(value).parse::<Item>().ok()
}

/// An SF Boolean (`?1`, `?0`), parameters allowed.
pub fn parse_boolean(value: &str) -> Option<bool> {
    item(value)?.bare_item.as_boolean()
}

/// An SF Integer ≥ 0 (at most 15 digits, by RFC 9651).
pub fn parse_integer(value: &str) -> Option<u64> {
    let integer = item(value)?.bare_item.as_integer()?;
    u64::try_from(i64::from(integer)).ok()
}

/// `Upload-Draft-Interop-Version`, if it is one this server speaks.
pub fn parse_interop_version(value: &str) -> Option<u32> {
    parse_integer(value)
        .and_then(|version| u32::try_from(version).ok())
        .filter(|version| INTEROP_VERSIONS.contains(version))
}

/// The limits advertised in `Upload-Limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadLimit {
    /// Largest upload accepted.
    pub max_size: Option<u64>,
    /// Smallest upload accepted.
    pub min_size: u64,
    /// Largest single append accepted.
    pub max_append_size: Option<u64>,
    /// Seconds the upload resource stays valid without activity.
    pub max_age: Option<u64>,
}

/// The largest SF Integer.
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

impl UploadLimit {
    /// The field value, e.g. `max-size=1073741824, min-size=0, max-age=604800`.
    pub fn to_field(&self) -> String {
        let members = [
            ("max-size", self.max_size),
            ("min-size", Some(self.min_size)),
            ("max-append-size", self.max_append_size),
            ("max-age", self.max_age),
        ];
        let mut serializer = sfv::DictSerializer::new();
        for (key, value) in members {
            let Some(value) = value else { continue };
            let Ok(key) = KeyRef::from_str(key) else {
                continue;
            };
            let value = i64::try_from(value.min(SF_INTEGER_MAX)).unwrap_or(i64::MAX);
            if let Ok(integer) = sfv::Integer::try_from(value) {
                serializer.bare_item(key, integer);
            }
        }
        serializer.finish().unwrap_or_default()
    }

    /// Reads an `Upload-Limit` field; unknown keys are ignored, and a known
    /// key with a value of the wrong type voids the field (§3.2).
    pub fn parse(value: &str) -> Option<UploadLimit> {
        let dictionary = Parser::new(value).parse::<Dictionary>().ok()?;
        let mut limit = UploadLimit::default();
        for (key, entry) in &dictionary {
            let slot = match key.as_str() {
                "max-size" => &mut limit.max_size,
                "max-append-size" => &mut limit.max_append_size,
                "max-age" => &mut limit.max_age,
                "min-size" => {
                    limit.min_size = integer_member(entry)?;
                    continue;
                }
                _ => continue,
            };
            *slot = Some(integer_member(entry)?);
        }
        Some(limit)
    }
}

fn integer_member(entry: &sfv::ListEntry) -> Option<u64> {
    match entry {
        sfv::ListEntry::Item(Item {
            bare_item: BareItem::Integer(integer),
            ..
        }) => u64::try_from(i64::from(*integer)).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn booleans_and_integers_are_structured() {
        assert_eq!(parse_boolean("?1"), Some(true));
        assert_eq!(parse_boolean("?0"), Some(false));
        assert_eq!(parse_boolean("?1;a=b"), Some(true));
        assert_eq!(parse_boolean("true"), None);
        assert_eq!(parse_boolean("?2"), None);
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("999999999999999"), Some(SF_INTEGER_MAX));
        assert_eq!(parse_integer("1000000000000000"), None);
        assert_eq!(parse_integer("-1"), None);
        assert_eq!(parse_integer("1.5"), None);
        assert_eq!(parse_interop_version("6"), Some(6));
        assert_eq!(parse_interop_version("3"), None);
        assert_eq!(parse_interop_version("10"), None);
    }

    #[test]
    fn upload_limit_round_trips_and_ignores_unknown_keys() {
        let limit = UploadLimit {
            max_size: Some(1 << 30),
            min_size: 0,
            max_append_size: None,
            max_age: Some(604_800),
        };
        assert_eq!(
            limit.to_field(),
            "max-size=1073741824, min-size=0, max-age=604800"
        );
        assert_eq!(UploadLimit::parse(&limit.to_field()), Some(limit));
        assert_eq!(
            UploadLimit::parse("min-size=0, future=abc").map(|l| l.min_size),
            Some(0)
        );
        assert_eq!(UploadLimit::parse("max-size=abc"), None);
    }

    proptest! {
        #[test]
        fn never_panic(text in "\\PC*") {
            let _ = parse_boolean(&text);
            let _ = parse_integer(&text);
            let _ = UploadLimit::parse(&text);
        }

        #[test]
        fn integers_round_trip(n in 0u64..=SF_INTEGER_MAX) {
            prop_assert_eq!(parse_integer(&n.to_string()), Some(n));
        }
    }
}
