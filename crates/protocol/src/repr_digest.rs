//! `Repr-Digest` and `Content-Digest` (RFC 9530): Structured Field
//! dictionaries (RFC 9651) mapping an algorithm to the digest as a byte
//! sequence, e.g. `sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:`.
//!
//! tenax produces and reads only the `sha-256` member; other members are
//! skipped, and a field that is not a valid dictionary counts as absent.

use std::fmt;

use sfv::{BareItem, Dictionary, KeyRef, ListEntry, Parser};

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
        }
    }
}
