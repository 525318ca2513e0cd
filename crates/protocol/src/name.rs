//! Upload ids and file names (docs/protocol.md §0, cases 86 and 87).
//!
//! Ids are made by the server and matched strictly; names are opaque
//! metadata chosen by clients and validated so that, used as a file name in
//! the data directory, they can never name anything else.
//!
//! A name is Unicode text: kept in normalisation form C, so that `café`
//! typed on one system and on another (composed or decomposed é) is one
//! file; and never U+FFFD, the character that bytes which are not UTF-8
//! turn into when decoded leniently, so that such bytes are refused
//! wherever a name comes from, not stored as replacement characters.

use std::fmt;

use thiserror::Error;
use unicode_normalization::UnicodeNormalization as _;

/// Why an id or a name was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    /// An upload id must be exactly 32 lowercase hexadecimal digits.
    #[error("an upload id is 32 lowercase hexadecimal digits")]
    BadId,
    /// A name must be between 1 and 255 bytes long.
    #[error("a file name must be 1 to 255 bytes long")]
    Length,
    /// A name may not contain `/`, `\`, NUL or other control characters.
    #[error("a file name may not contain '/', '\\' or control characters")]
    Character,
    /// A name must be UTF-8; U+FFFD, what invalid UTF-8 decodes to, is
    /// refused too.
    #[error("a file name must be UTF-8 (U+FFFD included, which stands for bytes that are not)")]
    NotUtf8,
    /// A query string names the file twice.
    #[error("the file name is given more than once")]
    Repeated,
    /// A name may not start with `.` (this also rules out `.` and `..`, and
    /// keeps the server's own temporary files out of reach).
    #[error("a file name may not start with '.'")]
    LeadingDot,
    /// A namespace is 1 to 64 of `a-z`, `0-9`, `_` and `-`, starting with a
    /// letter or digit, and not `default` (the default namespace's name in
    /// configuration).
    #[error(
        "a namespace is 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit \
         (and 'default' is the default namespace)"
    )]
    BadNamespace,
}

/// The id of an upload: 128 random bits, written as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId([u8; 16]);

impl UploadId {
    /// Wraps 16 bytes, which the caller has drawn from a secure random source.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        UploadId(bytes)
    }

    /// Parses the textual form, which must be exactly 32 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(NameError::BadId);
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(UploadId(bytes))
    }
}

fn hex_digit(digit: u8) -> Result<u8, NameError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(NameError::BadId),
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// A validated file name: safe to use as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(String);

impl FileName {
    /// Validates a client-chosen name, in normalisation form C.
    ///
    /// ```
    /// use tenax_protocol::FileName;
    /// assert!(FileName::new("abc.zip").is_ok());
    /// assert!(FileName::new("../../x").is_err());
    /// assert!(FileName::new("..").is_err());
    /// assert_eq!(FileName::new("cafe\u{301}"), FileName::new("caf\u{e9}"));
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name: String = name.into();
        if name.contains('\u{FFFD}') {
            return Err(NameError::NotUtf8);
        }
        let name = if unicode_normalization::is_nfc(&name) {
            name
        } else {
            name.nfc().collect()
        };
        if name.is_empty() || name.len() > 255 {
            return Err(NameError::Length);
        }
        if name.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        if name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(NameError::Character);
        }
        Ok(FileName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The owner of uploads and files: a token's namespace. Uploads and
/// published names are visible only within their namespace.
///
/// The default namespace (empty) is the one of a server without
/// credentials; others are validated so that they, too, can name a
/// directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Validates a configured namespace.
    ///
    /// ```
    /// use tenax_protocol::Namespace;
    /// assert!(Namespace::new("team-a").is_ok());
    /// assert!(Namespace::new("../x").is_err());
    /// assert!(Namespace::new("").is_err());
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name == Self::DEFAULT_ALIAS {
            return Err(NameError::BadNamespace);
        }
        let bytes = name.as_bytes();
        let allowed =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-';
        match bytes.first() {
            Some(first)
                if bytes.len() <= 64
                    && (first.is_ascii_lowercase() || first.is_ascii_digit())
                    && bytes.iter().all(allowed) =>
            {
                Ok(Namespace(name))
            }
            _ => Err(NameError::BadNamespace),
        }
    }

    /// The word configuration uses for the default namespace; reserved, so
    /// that no other namespace can be called so.
    pub const DEFAULT_ALIAS: &'static str = "default";

    /// Whether this is the default namespace.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// The namespace as text (empty for the default one).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_strict() {
        let id = UploadId::from_bytes([0xab; 16]);
        assert_eq!(UploadId::parse(&id.to_string()), Ok(id));
        for bad in [
            "",
            "..%2F..%2Fetc",
            "ABABABABABABABABABABABABABABABAB",
            &"a".repeat(33),
            "%00",
        ] {
            assert_eq!(UploadId::parse(bad), Err(NameError::BadId), "{bad:?}");
        }
    }

    #[test]
    fn names_never_escape() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "a\0b",
            ".hidden",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(FileName::new(bad).is_err(), "{bad:?}");
        }
        for good in [
            "abc.zip",
            "report 2026 (final).pdf",
            "données.tar.gz",
            "a..b",
        ] {
            assert_eq!(
                FileName::new(good).map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
    }

    #[test]
    fn names_are_nfc_and_never_lossy() {
        let composed = FileName::new("caf\u{e9}.txt").expect("valid");
        let decomposed = FileName::new("cafe\u{301}.txt").expect("valid");
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "caf\u{e9}.txt");
        let lossy = String::from_utf8_lossy(b"\xff\xfe.bin").into_owned();
        assert_eq!(FileName::new(lossy), Err(NameError::NotUtf8));
        // Composition may not turn an invalid name into a valid one: a
        // combining mark on '.' composes with nothing, and the name keeps
        // its leading dot.
        assert!(FileName::new(".\u{301}x").is_err());
    }

    #[test]
    fn namespaces_are_plain_words() {
        for bad in [
            "",
            "-x",
            "_x",
            "A",
            "a/b",
            "a.b",
            "..",
            "default",
            &"a".repeat(65),
        ] {
            assert_eq!(Namespace::new(bad), Err(NameError::BadNamespace), "{bad:?}");
        }
        for good in ["a", "team-a", "0_x", &"z".repeat(64)] {
            assert_eq!(
                Namespace::new(good).map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
        assert!(Namespace::default().is_default());
    }

    proptest! {
        #[test]
        fn a_valid_namespace_is_one_plain_path_component(name in "[a-z0-9_./A-Z-]{0,70}") {
            if let Ok(ns) = Namespace::new(name) {
                let mut components = std::path::Path::new(ns.as_str()).components();
                prop_assert!(matches!(components.next(), Some(std::path::Component::Normal(_))));
                prop_assert!(components.next().is_none());
            }
        }

        #[test]
        fn a_valid_name_is_nfc_and_stable(name in "\\PC{0,40}") {
            if let Ok(valid) = FileName::new(name) {
                prop_assert!(unicode_normalization::is_nfc(valid.as_str()));
                prop_assert!(!valid.as_str().contains(char::REPLACEMENT_CHARACTER));
                prop_assert_eq!(FileName::new(valid.as_str()), Ok(valid.clone()));
            }
        }

        #[test]
        fn a_valid_name_is_one_plain_path_component(name in "\\PC{0,40}") {
            if let Ok(name) = FileName::new(name) {
                let path = std::path::Path::new(name.as_str());
                let mut components = path.components();
                prop_assert!(matches!(components.next(), Some(std::path::Component::Normal(_))));
                prop_assert!(components.next().is_none());
            }
        }
    }
}
