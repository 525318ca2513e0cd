//! The Google Cloud Storage JSON API's pure parts (docs/protocol.md §7):
//! object names as file names, `x-goog-hash`, the generation
//! preconditions, and a streaming reader of `multipart/related` upload
//! bodies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::name::{FileName, NameError};

/// What a GCS request carries that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GcsError {
    /// `x-goog-hash` is malformed, or a digest in it has the wrong length.
    #[error("x-goog-hash: {0}")]
    BadHash(&'static str),
    /// The `multipart/related` body or its media type is malformed.
    #[error("multipart body: {0}")]
    BadMultipart(&'static str),
}

/// The file name an object name is kept under (§7.2): the object name with
/// `%`, `/`, `\`, control characters and a leading `.` percent-encoded, so
/// that it is one path component and [`object_name`] gives it back.
///
/// ```
/// use tenax_protocol::gcs::{object_file_name, object_name};
/// let file = object_file_name("logs/2024/a.txt").unwrap();
/// assert_eq!(file.as_str(), "logs%2F2024%2Fa.txt");
/// assert_eq!(object_name(&file), "logs/2024/a.txt");
/// ```
pub fn object_file_name(object: &str) -> Result<FileName, NameError> {
    let mut encoded = String::with_capacity(object.len());
    for (index, c) in object.char_indices() {
        if c == '%' || c == '/' || c == '\\' || c.is_control() || (index == 0 && c == '.') {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        } else {
            encoded.push(c);
        }
    }
    FileName::new(encoded)
}

/// The object name a file name stands for (§7.2): its `%XX` sequences
/// decoded. A name whose decoding is not UTF-8 is shown as it is.
pub fn object_name(file: &FileName) -> String {
    let text = file.as_str();
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(index + 1).and_then(|b| hex(*b)),
                bytes.get(index + 2).and_then(|b| hex(*b)),
            )
        {
            out.push(high << 4 | low);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The digests an `x-goog-hash` header declares (§7.4), in GCS's base64
/// forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoogHash {
    /// CRC32C: base64 of its four big-endian bytes.
    pub crc32c: Option<String>,
    /// MD5: base64 of its sixteen bytes.
    pub md5: Option<String>,
}

impl GoogHash {
    /// Reads `crc32c=…,md5=…` (members in any order, separated by commas,
    /// several header lines joined by commas). Members of other
    /// algorithms are ignored; a `crc32c` or `md5` member that is not
    /// base64 of the right length, or one named twice with two values, is
    /// an error.
    ///
    /// ```
    /// use tenax_protocol::gcs::GoogHash;
    /// let hash = GoogHash::parse("crc32c=n03x6A==, md5=XrY7u+Ae7tCTyyK7j1rNww==").unwrap();
    /// assert_eq!(hash.crc32c.as_deref(), Some("n03x6A=="));
    /// assert!(GoogHash::parse("crc32c=abc").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<GoogHash, GcsError> {
        let mut hash = GoogHash::default();
        for member in value.split(',') {
            let member = member.trim();
            if member.is_empty() {
                continue;
            }
            let (name, digest) = member
                .split_once('=')
                .ok_or(GcsError::BadHash("a member is not NAME=VALUE"))?;
            let (slot, len) = match name.trim().to_ascii_lowercase().as_str() {
                "crc32c" => (&mut hash.crc32c, 4),
                "md5" => (&mut hash.md5, 16),
                _ => continue,
            };
            let canonical = canonical_digest(digest.trim(), len)
                .ok_or(GcsError::BadHash("a digest is not base64 of its length"))?;
            match slot {
                Some(held) if *held != canonical => {
                    return Err(GcsError::BadHash("a digest is named twice"));
                }
                _ => *slot = Some(canonical),
            }
        }
        Ok(hash)
    }
}

/// `text` as canonical base64 if it is base64 of exactly `len` bytes.
pub fn canonical_digest(text: &str, len: usize) -> Option<String> {
    let bytes = STANDARD.decode(text).ok()?;
    (bytes.len() == len).then(|| STANDARD.encode(bytes))
}

/// The generation preconditions of a request (§7.5): `ifGenerationMatch`
/// (0: only if no object shows under the name), `ifGenerationNotMatch`,
/// `ifMetagenerationMatch`, `ifMetagenerationNotMatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preconditions {
    /// `ifGenerationMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_generation_match: Option<u64>,
    /// `ifGenerationNotMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_generation_not_match: Option<u64>,
    /// `ifMetagenerationMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_metageneration_match: Option<u64>,
    /// `ifMetagenerationNotMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_metageneration_not_match: Option<u64>,
}

/// The object a name shows: its generation and metageneration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Its generation.
    pub generation: u64,
    /// Its metageneration.
    pub metageneration: u64,
}

/// A precondition that does not hold: which one, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the precondition {0} does not hold")]
pub struct PreconditionFailed(pub &'static str);

impl Preconditions {
    /// Whether the preconditions hold for `live`, the object the name
    /// shows (`None`: no object). Without an object, a generation match
    /// holds only for 0 and a generation mismatch only for a value other
    /// than 0; a metageneration match never holds and a mismatch always
    /// does.
    pub fn check(&self, live: Option<Live>) -> Result<(), PreconditionFailed> {
        let generation = live.map_or(0, |live| live.generation);
        if let Some(wanted) = self.if_generation_match
            && wanted != generation
        {
            return Err(PreconditionFailed("ifGenerationMatch"));
        }
        if let Some(unwanted) = self.if_generation_not_match
            && unwanted == generation
        {
            return Err(PreconditionFailed("ifGenerationNotMatch"));
        }
        if let Some(wanted) = self.if_metageneration_match
            && live.is_none_or(|live| live.metageneration != wanted)
        {
            return Err(PreconditionFailed("ifMetagenerationMatch"));
        }
        if let Some(unwanted) = self.if_metageneration_not_match
            && live.is_some_and(|live| live.metageneration == unwanted)
        {
            return Err(PreconditionFailed("ifMetagenerationNotMatch"));
        }
        Ok(())
    }
}

/// The boundary of a `multipart/related` media type (§7.3).
///
/// ```
/// use tenax_protocol::gcs::multipart_boundary;
/// assert_eq!(multipart_boundary("multipart/related; boundary=\"==abc==\"").unwrap(), "==abc==");
/// assert!(multipart_boundary("text/plain").is_err());
/// ```
pub fn multipart_boundary(content_type: &str) -> Result<String, GcsError> {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/related") {
        return Err(GcsError::BadMultipart(
            "the media type is not multipart/related",
        ));
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|inner| inner.strip_suffix('"'))
            .unwrap_or(value);
        // RFC 2046 §5.1.1: 1 to 70 characters, none of them control ones.
        if value.is_empty() || value.len() > 70 || value.bytes().any(|b| b.is_ascii_control()) {
            return Err(GcsError::BadMultipart(
                "the boundary is not 1 to 70 characters",
            ));
        }
        return Ok(value.to_owned());
    }
    Err(GcsError::BadMultipart("the media type has no boundary"))
}

/// The most bytes of the metadata part, and of one part's headers.
pub const MAX_MULTIPART_METADATA: usize = 64 * 1024;

/// What the [`Multipart`] reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartEvent {
    /// The first part, whole: its media type and its bytes (the object
    /// resource JSON).
    Metadata {
        /// Its `Content-Type`.
        content_type: Option<String>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The second part begins: its `Content-Type`, the object's media type.
    Media {
        /// Its `Content-Type`.
        content_type: Option<String>,
    },
    /// The next bytes of the second part (the object's bytes).
    Data(Vec<u8>),
    /// The closing delimiter: the object's bytes are complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` closes, else the line ends.
    AfterDelimiter,
    /// A part's headers, up to the empty line.
    Headers,
    /// The metadata part's body.
    MetadataBody,
    /// The media part's body.
    MediaBody,
    /// After the closing delimiter: ignored.
    Epilogue,
}

/// A streaming reader of a GCS `multipart/related` upload body (§7.3):
/// exactly two parts, the object resource JSON then the object's bytes.
/// Only the metadata part and the headers are kept in memory (at most
/// [`MAX_MULTIPART_METADATA`] each); the object's bytes are handed on as
/// they come, holding back at most one delimiter's length.
#[derive(Debug, Clone)]
pub struct Multipart {
    /// `\r\n--BOUNDARY`.
    delimiter: Vec<u8>,
    buffer: Vec<u8>,
    stage: Stage,
    parts: usize,
    content_type: Option<String>,
}

impl Multipart {
    /// A reader for the parts between `boundary`s.
    pub fn new(boundary: &str) -> Multipart {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Multipart {
            delimiter,
            // The first delimiter need not follow a line break.
            buffer: b"\r\n".to_vec(),
            stage: Stage::Preamble,
            parts: 0,
            content_type: None,
        }
    }

    /// Reads the next piece of the body, and says what it completed.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<MultipartEvent>, GcsError> {
        self.buffer.extend_from_slice(input);
        let mut events = Vec::new();
        loop {
            let progressed = match self.stage {
                Stage::Preamble => match find(&self.buffer, &self.delimiter) {
                    Some(at) => {
                        self.buffer.drain(..at + self.delimiter.len());
                        self.stage = Stage::AfterDelimiter;
                        true
                    }
                    None => {
                        if self.buffer.len() > MAX_MULTIPART_METADATA {
                            return Err(GcsError::BadMultipart("no boundary in the body"));
                        }
                        false
                    }
                },
                Stage::AfterDelimiter => self.after_delimiter(&mut events)?,
                Stage::Headers => self.headers(&mut events)?,
                Stage::MetadataBody => match find(&self.buffer, &self.delimiter) {
                    Some(at) => {
                        let body: Vec<u8> = self.buffer.drain(..at).collect();
                        self.buffer.drain(..self.delimiter.len());
                        events.push(MultipartEvent::Metadata {
                            content_type: self.content_type.take(),
                            body,
                        });
                        self.stage = Stage::AfterDelimiter;
                        true
                    }
                    None => {
                        if self.buffer.len() > MAX_MULTIPART_METADATA + self.delimiter.len() {
                            return Err(GcsError::BadMultipart("the metadata part is too large"));
                        }
                        false
                    }
                },
                Stage::MediaBody => match find(&self.buffer, &self.delimiter) {
                    Some(at) => {
                        if at > 0 {
                            events.push(MultipartEvent::Data(self.buffer.drain(..at).collect()));
                        }
                        self.buffer.drain(..self.delimiter.len());
                        self.stage = Stage::AfterDelimiter;
                        true
                    }
                    None => {
                        // Hand on all but what could start a delimiter.
                        let keep = self.delimiter.len() - 1;
                        if self.buffer.len() > keep {
                            let ready = self.buffer.len() - keep;
                            events.push(MultipartEvent::Data(self.buffer.drain(..ready).collect()));
                        }
                        false
                    }
                },
                Stage::Epilogue => {
                    self.buffer.clear();
                    false
                }
            };
            if !progressed {
                return Ok(events);
            }
        }
    }

    /// At the end of the body: whether the closing delimiter was read.
    pub fn finish(&self) -> Result<(), GcsError> {
        match self.stage {
            Stage::Epilogue => Ok(()),
            _ => Err(GcsError::BadMultipart(
                "the body ended before its closing boundary",
            )),
        }
    }

    fn after_delimiter(&mut self, events: &mut Vec<MultipartEvent>) -> Result<bool, GcsError> {
        if self.buffer.len() < 2 {
            return Ok(false);
        }
        if self.buffer.starts_with(b"--") {
            if self.parts != 2 {
                return Err(GcsError::BadMultipart("the body has not two parts"));
            }
            self.buffer.clear();
            self.stage = Stage::Epilogue;
            events.push(MultipartEvent::End);
            return Ok(true);
        }
        // Transport padding, then the line break.
        let Some(end) = find(&self.buffer, b"\r\n") else {
            if self.buffer.len() > 1024 {
                return Err(GcsError::BadMultipart("a boundary line does not end"));
            }
            return Ok(false);
        };
        if self.buffer[..end].iter().any(|b| *b != b' ' && *b != b'\t') {
            return Err(GcsError::BadMultipart("text after a boundary"));
        }
        self.buffer.drain(..end + 2);
        if self.parts == 2 {
            return Err(GcsError::BadMultipart("the body has more than two parts"));
        }
        self.stage = Stage::Headers;
        Ok(true)
    }

    fn headers(&mut self, events: &mut Vec<MultipartEvent>) -> Result<bool, GcsError> {
        // A part without headers starts with the empty line at once.
        let (end, skip) = if self.buffer.starts_with(b"\r\n") {
            (0, 2)
        } else {
            match find(&self.buffer, b"\r\n\r\n") {
                Some(end) => (end, 4),
                None => {
                    if self.buffer.len() > MAX_MULTIPART_METADATA {
                        return Err(GcsError::BadMultipart("a part's headers are too large"));
                    }
                    return Ok(false);
                }
            }
        };
        let block: Vec<u8> = self.buffer.drain(..end + skip).collect();
        let text = std::str::from_utf8(&block[..end])
            .map_err(|_| GcsError::BadMultipart("a part's headers are not UTF-8"))?;
        let mut content_type = None;
        for line in text.split("\r\n") {
            let (name, value) = line
                .split_once(':')
                .ok_or(GcsError::BadMultipart("a part's header line has no colon"))?;
            if name.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.trim().to_owned());
            }
        }
        self.parts += 1;
        if self.parts == 1 {
            self.content_type = content_type;
            self.stage = Stage::MetadataBody;
        } else {
            events.push(MultipartEvent::Media { content_type });
            self.stage = Stage::MediaBody;
        }
        Ok(true)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(boundary: &str, metadata: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(metadata);
        out.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    /// What a body read gives: (metadata, media type, data).
    type Read = (Vec<u8>, Option<String>, Vec<u8>);

    /// Reads `input` in pieces cut at `cuts`.
    fn read(boundary: &str, input: &[u8], cuts: &[usize]) -> Result<Read, GcsError> {
        let mut reader = Multipart::new(boundary);
        let (mut metadata, mut media_type, mut data) = (Vec::new(), None, Vec::new());
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        for cut in cuts {
            for event in reader.push(&input[start..cut])? {
                match event {
                    MultipartEvent::Metadata { body, .. } => metadata = body,
                    MultipartEvent::Media { content_type } => media_type = content_type,
                    MultipartEvent::Data(bytes) => data.extend_from_slice(&bytes),
                    MultipartEvent::End => {}
                }
            }
            start = cut;
        }
        reader.finish()?;
        Ok((metadata, media_type, data))
    }

    #[test]
    fn a_library_body_gives_its_metadata_and_bytes() {
        let input = body(
            "===============7330845974216740156==",
            b"{\"name\": \"a\"}",
            b"hello\r\n--x",
        );
        let (metadata, media_type, data) =
            read("===============7330845974216740156==", &input, &[]).expect("a valid body");
        assert_eq!(metadata, b"{\"name\": \"a\"}");
        assert_eq!(media_type.as_deref(), Some("text/plain"));
        assert_eq!(data, b"hello\r\n--x");
    }

    #[test]
    fn a_body_cut_short_or_with_three_parts_is_refused() {
        let input = body("b", b"{}", b"data");
        assert!(read("b", &input[..input.len() - 6], &[]).is_err());
        let mut three = input[..input.len() - 4].to_vec();
        three.extend_from_slice(b"\r\n\r\nmore\r\n--b--");
        assert!(read("b", &three, &[]).is_err());
        assert!(read("b", b"no boundary at all", &[]).is_err());
    }

    #[test]
    fn object_names_with_every_special_character_round_trip() {
        for object in [
            "a/b/c",
            "100%",
            ".hidden",
            "a\\b",
            "tab\there",
            "..",
            "ü/ß",
            "%2F",
        ] {
            let file = object_file_name(object).expect("encodable");
            assert!(!file.as_str().contains('/'));
            assert_eq!(object_name(&file), object, "{object}");
        }
        assert!(object_file_name("").is_err());
        assert!(object_file_name(&"x".repeat(300)).is_err());
    }

    #[test]
    fn preconditions_follow_gcs() {
        let live = Some(Live {
            generation: 7,
            metageneration: 1,
        });
        let only_absent = Preconditions {
            if_generation_match: Some(0),
            ..Preconditions::default()
        };
        assert!(only_absent.check(None).is_ok());
        assert!(only_absent.check(live).is_err());
        let exact = Preconditions {
            if_generation_match: Some(7),
            ..Preconditions::default()
        };
        assert!(exact.check(live).is_ok());
        assert!(exact.check(None).is_err());
        let meta = Preconditions {
            if_metageneration_match: Some(1),
            ..Preconditions::default()
        };
        assert!(meta.check(live).is_ok());
        assert!(meta.check(None).is_err());
        let not = Preconditions {
            if_generation_not_match: Some(7),
            ..Preconditions::default()
        };
        assert!(not.check(live).is_err());
        assert!(not.check(None).is_ok());
    }

    proptest! {
        #[test]
        fn any_split_of_a_body_reads_the_same(
            metadata in proptest::collection::vec(any::<u8>(), 0..200),
            data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'b'), any::<u8>()], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            // The metadata may not contain the delimiter; the data may hold
            // anything but it, and here often nearly does.
            prop_assume!(!metadata.windows(5).any(|w| w == b"\r\n--b"));
            prop_assume!(!data.windows(5).any(|w| w == b"\r\n--b"));
            let input = body("bb", &metadata, &data);
            let (got_metadata, _, got_data) = read("bb", &input, &cuts).expect("a valid body");
            prop_assert_eq!(got_metadata, metadata);
            prop_assert_eq!(got_data, data);
        }

        #[test]
        fn any_bytes_are_read_without_panicking(
            input in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'b'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let _ = read("b", &input, &cuts);
        }

        #[test]
        fn a_goog_hash_parses_only_to_canonical_digests(value in "[a-z0-9=+/, ]{0,60}") {
            if let Ok(hash) = GoogHash::parse(&value) {
                if let Some(crc) = hash.crc32c {
                    prop_assert_eq!(STANDARD.decode(&crc).map(|b| b.len()).ok(), Some(4));
                }
                if let Some(md5) = hash.md5 {
                    prop_assert_eq!(STANDARD.decode(&md5).map(|b| b.len()).ok(), Some(16));
                }
            }
        }

        #[test]
        fn a_goog_hash_of_real_digests_round_trips(crc in any::<[u8; 4]>(), md5 in any::<[u8; 16]>(), swap in any::<bool>()) {
            let (c, m) = (STANDARD.encode(crc), STANDARD.encode(md5));
            let value = if swap { format!("md5={m},crc32c={c}") } else { format!("crc32c={c}, md5={m}") };
            let hash = GoogHash::parse(&value).expect("valid");
            prop_assert_eq!(hash.crc32c, Some(c));
            prop_assert_eq!(hash.md5, Some(m));
        }

        #[test]
        fn any_object_name_round_trips(object in "\\PC{1,60}") {
            // Names are kept in normalisation form C (§0).
            use unicode_normalization::UnicodeNormalization as _;
            if let Ok(file) = object_file_name(&object) {
                prop_assert_eq!(object_name(&file), object.nfc().collect::<String>());
            }
        }
    }
}
