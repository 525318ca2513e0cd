//! tus 1.0.0 headers (docs/protocol.md §2).
//!
//! Parsers for the tus request headers whose grammar is more than a number:
//! `Upload-Metadata`, `Upload-Checksum`, `Upload-Concat` and
//! `Upload-Defer-Length`. Numbers use [`crate::parse_u64`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

use crate::{FileName, NameError};

/// The protocol version this server speaks.
pub const VERSION: &str = "1.0.0";

/// Why a tus header was rejected (400 unless said otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TusError {
    /// A metadata pair is malformed.
    #[error("Upload-Metadata: {0}")]
    Metadata(&'static str),
    /// A metadata key appears twice.
    #[error("Upload-Metadata: duplicate key {0:?}")]
    DuplicateKey(String),
    /// `Upload-Checksum` is not `<algorithm> <base64>`.
    #[error("Upload-Checksum must be \"<algorithm> <base64 digest>\"")]
    ChecksumSyntax,
    /// The checksum algorithm is not supported.
    #[error("unsupported checksum algorithm {0:?}")]
    ChecksumAlgorithm(String),
    /// `Upload-Concat` is malformed.
    #[error("Upload-Concat must be \"partial\" or \"final;<url> <url>…\"")]
    Concat,
    /// `Upload-Defer-Length` is not `1`.
    #[error("Upload-Defer-Length must be 1")]
    DeferLength,
}

/// Decoded `Upload-Metadata`: keys to values (absent when the pair had none).
pub type Metadata = BTreeMap<String, Option<Vec<u8>>>;

/// Parses `Upload-Metadata`: comma-separated `key base64` pairs. An empty
/// header is an empty map; a bare `key` or `key ` has no value.
pub fn parse_metadata(value: &str) -> Result<Metadata, TusError> {
    let mut metadata = Metadata::new();
    if value.trim().is_empty() {
        return Ok(metadata);
    }
    for pair in value.split(',') {
        let pair = pair.trim_start_matches([' ', '\t']);
        let (key, encoded) = match pair.split_once(' ') {
            Some((key, encoded)) => (key, encoded.trim_end_matches([' ', '\t'])),
            None => (pair.trim_end_matches([' ', '\t']), ""),
        };
        if key.is_empty() {
            return Err(TusError::Metadata("empty key"));
        }
        if key.contains(char::is_whitespace) || encoded.contains(' ') {
            return Err(TusError::Metadata("a key or value contains a space"));
        }
        let decoded = if encoded.is_empty() {
            None
        } else {
            Some(
                STANDARD
                    .decode(encoded)
                    .map_err(|_| TusError::Metadata("a value is not valid base64"))?,
            )
        };
        if metadata.insert(key.to_owned(), decoded).is_some() {
            return Err(TusError::DuplicateKey(key.to_owned()));
        }
    }
    Ok(metadata)
}

/// The file name an upload's metadata gives (`filename`): `None` without
/// one (or with an empty one), an error when it is not a valid
/// [`FileName`] (bytes that are not UTF-8 included), so that an invalid name
/// is refused rather than dropped. tus-js-client sends this metadata in its
/// draft (RUFH) modes too.
pub fn metadata_name(metadata: &Metadata) -> Result<Option<FileName>, NameError> {
    let Some(Some(name)) = metadata.get("filename") else {
        return Ok(None);
    };
    if name.is_empty() {
        return Ok(None);
    }
    let name = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    FileName::new(name).map(Some)
}

/// The media type an upload's metadata gives: the first UTF-8 value of
/// `filetype` (tus-js-client, Uppy), `contentType` or `type`.
pub fn metadata_content_type(metadata: &Metadata) -> Option<String> {
    ["filetype", "contentType", "type"]
        .iter()
        .find_map(|key| metadata.get(*key).and_then(Option::as_ref))
        .and_then(|bytes| String::from_utf8(bytes.clone()).ok())
}

/// Writes metadata back in the header's form (for `HEAD`).
pub fn format_metadata(metadata: &Metadata) -> String {
    metadata
        .iter()
        .map(|(key, value)| match value {
            Some(value) => format!("{key} {}", STANDARD.encode(value)),
            None => key.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checksum algorithms offered by the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// SHA-1 (mandatory in tus).
    Sha1,
    /// MD5.
    Md5,
    /// SHA-256.
    Sha256,
    /// CRC-32 (IEEE), big-endian.
    Crc32,
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order advertised by `Tus-Checksum-Algorithm`.
    pub const ALL: [ChecksumAlgorithm; 4] = [
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Crc32,
    ];

    /// The lowercase name tus uses.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Md5 => "md5",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Crc32 => "crc32",
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Md5 => 16,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Crc32 => 4,
        }
    }
}

/// A parsed `Upload-Checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The expected digest.
    pub digest: Vec<u8>,
}

/// Parses `Upload-Checksum: <algorithm> <base64>`.
pub fn parse_checksum(value: &str) -> Result<Checksum, TusError> {
    let (name, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or(TusError::ChecksumSyntax)?;
    let algorithm = ChecksumAlgorithm::ALL
        .into_iter()
        .find(|algorithm| algorithm.name() == name)
        .ok_or_else(|| TusError::ChecksumAlgorithm(name.to_owned()))?;
    let digest = STANDARD
        .decode(encoded.trim())
        .map_err(|_| TusError::ChecksumSyntax)?;
    if digest.len() != algorithm.digest_len() {
        return Err(TusError::ChecksumSyntax);
    }
    Ok(Checksum { algorithm, digest })
}

/// A parsed `Upload-Concat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concat {
    /// `partial`: this upload is a part of a later final upload.
    Partial,
    /// `final;<url> <url>…`: the concatenation of these partial uploads.
    Final(Vec<String>),
}

/// Parses `Upload-Concat`.
pub fn parse_concat(value: &str) -> Result<Concat, TusError> {
    let value = value.trim();
    if value == "partial" {
        return Ok(Concat::Partial);
    }
    let urls = value.strip_prefix("final;").ok_or(TusError::Concat)?;
    let urls: Vec<String> = urls
        .split(' ')
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        return Err(TusError::Concat);
    }
    Ok(Concat::Final(urls))
}

/// Checks `Upload-Defer-Length`, whose only valid value is `1`.
pub fn parse_defer_length(value: &str) -> Result<(), TusError> {
    if value.trim() == "1" {
        Ok(())
    } else {
        Err(TusError::DeferLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_name_takes_a_valid_filename_only() {
        let name = |header: &str| {
            metadata_name(&parse_metadata(header).expect("valid metadata"))
                .map(|name| name.map(|name| name.as_str().to_owned()))
        };
        // "report.pdf", "a/b" and "\xff" in base64.
        assert_eq!(
            name("filename cmVwb3J0LnBkZg=="),
            Ok(Some("report.pdf".to_owned()))
        );
        assert_eq!(
            name("filename YS9i"),
            Err(NameError::Character),
            "a path is not a file name"
        );
        assert_eq!(name("filename /w=="), Err(NameError::NotUtf8));
        assert_eq!(name("filename"), Ok(None), "no value");
        assert_eq!(name("name cmVwb3J0LnBkZg=="), Ok(None), "another key");
    }

    #[test]
    fn metadata_content_type_prefers_filetype() {
        // "a/b" and "c/d".
        let of = |header: &str| metadata_content_type(&parse_metadata(header).expect("valid"));
        assert_eq!(of("type Yy9k,filetype YS9i"), Some("a/b".to_owned()));
        assert_eq!(of("contentType Yy9k"), Some("c/d".to_owned()));
        assert_eq!(
            of("filetype /w==,type Yy9k"),
            None,
            "the first present key decides"
        );
        assert_eq!(of("filename Yy9k"), None);
    }

    #[test]
    fn metadata_forms_clients_send() {
        assert_eq!(parse_metadata(""), Ok(Metadata::new()));
        let parsed =
            parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,empty ")
                .expect("valid");
        assert_eq!(
            parsed["filename"].as_deref(),
            Some(&b"world_domination_plan.pdf"[..])
        );
        assert_eq!(parsed["is_confidential"], None);
        assert_eq!(parsed["empty"], None);
    }

    #[test]
    fn metadata_rejections() {
        assert_eq!(
            parse_metadata("a YQ==,a Yg=="),
            Err(TusError::DuplicateKey("a".into()))
        );
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ== Yg==").is_err());
        assert!(parse_metadata(",").is_err());
    }

    #[test]
    fn checksums() {
        let sha1 = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").expect("valid");
        assert_eq!(
            (sha1.algorithm, sha1.digest.len()),
            (ChecksumAlgorithm::Sha1, 20)
        );
        assert_eq!(
            parse_checksum("sha512 AAAA"),
            Err(TusError::ChecksumAlgorithm("sha512".into()))
        );
        assert_eq!(parse_checksum("sha1"), Err(TusError::ChecksumSyntax));
        assert_eq!(parse_checksum("sha1 AAAA"), Err(TusError::ChecksumSyntax));
    }

    #[test]
    fn concat_and_defer() {
        assert_eq!(parse_concat("partial"), Ok(Concat::Partial));
        assert_eq!(
            parse_concat("final;/uploads/a http://x/uploads/b"),
            Ok(Concat::Final(vec![
                "/uploads/a".into(),
                "http://x/uploads/b".into()
            ]))
        );
        assert_eq!(parse_concat("final;"), Err(TusError::Concat));
        assert_eq!(parse_concat("whole"), Err(TusError::Concat));
        assert_eq!(parse_defer_length("1"), Ok(()));
        assert_eq!(parse_defer_length("2"), Err(TusError::DeferLength));
    }

    proptest! {
        #[test]
        fn metadata_round_trips(map in proptest::collection::btree_map("[a-z_]{1,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 1..20)), 0..5)) {
            prop_assert_eq!(parse_metadata(&format_metadata(&map)), Ok(map));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = parse_metadata(&text);
            let _ = parse_checksum(&text);
            let _ = parse_concat(&text);
        }
    }
}
