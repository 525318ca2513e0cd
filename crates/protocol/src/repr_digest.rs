//! `Repr-Digest` and `Content-Digest` (RFC 9530): Structured Field
//! dictionaries (RFC 9651) mapping an algorithm to the digest as a byte
//! sequence, e.g. `sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:`.
//!
//! tenax produces and reads only the `sha-256` member; other members are
//! skipped, and a field that is not a valid dictionary counts as absent.
//! It also reads `Want-Repr-Digest` (RFC 9530 §4), where a client states
//! which digests it wants: [`wants`].

use std::fmt;

use sfv::{BareItem, Dictionary, KeyRef, ListEntry, Parser};

/// The field in which a client states which representation digests it
/// wants (lowercase, as `http::HeaderName` wants it).
pub const WANT_REPR_DIGEST: &str = "want-repr-digest";

/// The dictionary key of a SHA-256 digest.
pub const SHA_256: &str = "sha-256";

/// A SHA-256 digest (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Reads 64 hexadecimal digits (either case).
    ///
    /// ```
    /// use tenax_protocol::repr_digest::Sha256Digest;
    /// let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// assert_eq!(Sha256Digest::from_hex(hex).map(|d| d.to_hex()).as_deref(), Some(hex));
    /// assert_eq!(Sha256Digest::from_hex("e3b0"), None);
    /// ```
    pub fn from_hex(hex: &str) -> Option<Self> {
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let (high, low) = (hex_value(pair[0])?, hex_value(pair[1])?);
            *byte = (high << 4) | low;
        }
        Some(Sha256Digest(bytes))
    }

    /// The digest as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The field value holding this digest alone: `sha-256=:BASE64:`.
    ///
    /// ```
    /// use tenax_protocol::repr_digest::Sha256Digest;
    /// let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    /// let digest = Sha256Digest::from_hex(empty).expect("hex");
    /// assert_eq!(digest.to_field(), "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
    /// ```
    pub fn to_field(&self) -> String {
        let mut serializer = sfv::DictSerializer::new();
        if let Ok(key) = KeyRef::from_str(SHA_256) {
            serializer.bare_item(key, &self.0[..]);
        }
        serializer.finish().unwrap_or_default()
    }

    /// The `sha-256` member of a `Repr-Digest` or `Content-Digest` field
    /// value, if the value is a valid dictionary whose `sha-256` member is a
    /// 32-byte byte sequence (parameters allowed).
    ///
    /// ```
    /// use tenax_protocol::repr_digest::Sha256Digest;
    /// let field = "sha-512=:AAAA:, sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";
    /// assert!(Sha256Digest::from_field(field).is_some());
    /// assert_eq!(Sha256Digest::from_field("sha-256=:AAAA:"), None);
    /// ```
    pub fn from_field(value: &str) -> Option<Self> {
        let dictionary = Parser::new(value).parse::<Dictionary>().ok()?;
        match dictionary.get(SHA_256)? {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::ByteSequence(bytes) => bytes.as_slice().try_into().ok().map(Sha256Digest),
                _ => None,
            },
            ListEntry::InnerList(_) => None,
        }
    }
}

/// What a `Want-Repr-Digest` (or `Want-Content-Digest`) field value says
/// of `algorithm`: `Some(true)` if it names it with a preference above 0,
/// `Some(false)` if it names it with 0 (not acceptable) or names only
/// others, `None` if the value is not a dictionary of preferences (0 to 10),
/// which states nothing.
///
/// ```
/// use tenax_protocol::repr_digest::wants;
/// assert_eq!(wants("sha-256=10, md5=3", "md5"), Some(true));
/// assert_eq!(wants("sha-256=10", "md5"), Some(false));
/// assert_eq!(wants("md5=0", "md5"), Some(false));
/// assert_eq!(wants("md5=11", "md5"), None);
/// ```
pub fn wants(value: &str, algorithm: &str) -> Option<bool> {
    let dictionary = Parser::new(value).parse::<Dictionary>().ok()?;
    let mut named = false;
    for (key, entry) in &dictionary {
        let ListEntry::Item(item) = entry else {
            return None;
        };
        let preference = item.bare_item.as_integer().map(i64::from)?;
        if !(0..=10).contains(&preference) {
            return None;
        }
        named |= key.as_str() == algorithm && preference > 0;
    }
    Some(named)
}

impl fmt::Display for Sha256Digest {
    /// Lowercase hexadecimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use proptest::prelude::*;

    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_B64: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    fn empty() -> Sha256Digest {
        Sha256Digest::from_hex(EMPTY_HEX).expect("hex")
    }

    #[test]
    fn reads_the_sha256_member() {
        let cases = [
            format!("sha-256=:{EMPTY_B64}:"),
            format!("sha-512=:AAAA:, sha-256=:{EMPTY_B64}:"),
            format!("sha-256=:{EMPTY_B64}:;note=1, md5=:AAAA:"),
            format!("  sha-256=:{EMPTY_B64}:  "),
        ];
        for field in cases {
            assert_eq!(Sha256Digest::from_field(&field), Some(empty()), "{field}");
        }
    }

    #[test]
    fn ignores_what_is_not_a_sha256_byte_sequence() {
        let cases = [
            "sha-256=:!!:".to_owned(),
            "md5=:AAAA:".to_owned(),
            "sha-256=:AAAA:".to_owned(),
            "sha-256=42".to_owned(),
            "sha-256".to_owned(),
            format!("sha-256=(:{EMPTY_B64}:)"),
            format!("SHA-256=:{EMPTY_B64}:"),
            format!("sha-256=:{EMPTY_B64}: garbage"),
            format!("sha-256={EMPTY_B64}"),
            String::new(),
        ];
        for field in cases {
            assert_eq!(Sha256Digest::from_field(&field), None, "{field}");
        }
    }

    #[test]
    fn hex_is_strict() {
        assert_eq!(
            Sha256Digest::from_hex(&EMPTY_HEX.to_uppercase()),
            Some(empty())
        );
        for bad in [
            "",
            "zz",
            &EMPTY_HEX[..62],
            &format!("{EMPTY_HEX}00"),
            &format!("+{}", &EMPTY_HEX[1..]),
            &format!("{}g", &EMPTY_HEX[..63]),
        ] {
            assert_eq!(Sha256Digest::from_hex(bad), None, "{bad}");
        }
        assert_eq!(empty().to_hex(), EMPTY_HEX);
        assert_eq!(empty().to_field(), format!("sha-256=:{EMPTY_B64}:"));
    }

    /// Another dictionary member: a key other than `sha-256` and a value.
    fn other_member() -> impl Strategy<Value = String> {
        let key = "[a-z*][a-z0-9_*.-]{0,8}".prop_filter("not sha-256", |key| key != SHA_256);
        let value = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80)
                .prop_map(|bytes| format!(":{}:", BASE64.encode(bytes))),
            (0u32..1_000_000).prop_map(|n| n.to_string()),
            Just("?1".to_owned()),
        ];
        (key, value).prop_map(|(key, value)| format!("{key}={value}"))
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(bytes in any::<[u8; 32]>()) {
            let digest = Sha256Digest(bytes);
            let field = digest.to_field();
            prop_assert_eq!(&field, &format!("sha-256=:{}:", BASE64.encode(bytes)));
            prop_assert_eq!(Sha256Digest::from_field(&field), Some(digest));
            prop_assert_eq!(Sha256Digest::from_hex(&digest.to_hex()), Some(digest));
            prop_assert_eq!(Sha256Digest::from_hex(&digest.to_hex().to_uppercase()), Some(digest));
        }

        #[test]
        fn found_among_other_members(
            bytes in any::<[u8; 32]>(),
            before in proptest::collection::vec(other_member(), 0..3),
            after in proptest::collection::vec(other_member(), 0..3),
        ) {
            let digest = Sha256Digest(bytes);
            let members: Vec<String> = before
                .into_iter()
                .chain(std::iter::once(digest.to_field()))
                .chain(after)
                .collect();
            let field = members.join(", ");
            prop_assert_eq!(Sha256Digest::from_field(&field), Some(digest), "{}", field);
        }

        #[test]
        fn other_lengths_are_no_sha256(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assume!(bytes.len() != 32);
            let field = format!("sha-256=:{}:", BASE64.encode(&bytes));
            prop_assert_eq!(Sha256Digest::from_field(&field), None);
        }

        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = Sha256Digest::from_field(&text);
            let _ = Sha256Digest::from_hex(&text);
            let _ = wants(&text, "md5");
        }

        /// A generated preference list is read as written: the algorithm
        /// is wanted if and only if it is listed above 0.
        #[test]
        fn preferences_are_read_as_written(
            listed in proptest::collection::btree_map("[a-z][a-z0-9-]{0,8}", 0i64..=10, 0..5),
            spaced in any::<bool>(),
        ) {
            let field = listed
                .iter()
                .map(|(key, weight)| format!("{key}={weight}"))
                .collect::<Vec<_>>()
                .join(if spaced { ", " } else { "," });
            for algorithm in ["md5", "sha-256"] {
                let expected = listed.get(algorithm).is_some_and(|weight| *weight > 0);
                prop_assert_eq!(wants(&field, algorithm), Some(expected), "{}", field);
            }
        }

        /// A preference out of 0..=10, or a value that is not an integer,
        /// makes the whole field state nothing.
        #[test]
        fn a_bad_preference_states_nothing(weight in prop_oneof![
            (11i64..1_000_000).prop_map(|n| n.to_string()),
            (1i64..1_000_000).prop_map(|n| format!("-{n}")),
            Just(":AAAA:".to_owned()),
            Just("?1".to_owned()),
            Just("(1 2)".to_owned()),
            Just("1.5".to_owned()),
        ]) {
            let field = format!("sha-256=10, md5={weight}");
            prop_assert_eq!(wants(&field, "md5"), None, "{}", field);
        }
    }
}
