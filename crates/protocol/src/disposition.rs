//! The file name a `Content-Disposition` request field carries (RFC 6266,
//! with RFC 8187's `filename*`), as the IETF draft's creation request sends
//! it (docs/protocol.md §3.3): `inline; filename="a b.jpg";
//! filename*=UTF-8''a%20b.jpg`.
//!
//! `filename*` wins over `filename` when both are present and its charset is
//! one this parser knows (UTF-8, ISO-8859-1); a `filename*` in another
//! charset is skipped, as RFC 6266 §4.3 lets a recipient do. The name comes
//! back as text: checking it as a file name is `FileName`'s work.

use std::fmt;

/// Why a `Content-Disposition` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispositionError {
    /// Not `type *( ; param=value )`: a missing type, a parameter without
    /// `=`, an unterminated quoted string, text after a value.
    #[error("Content-Disposition is malformed: {0}")]
    Malformed(&'static str),
    /// The same parameter twice (RFC 6266 §4.1: invalid).
    #[error("Content-Disposition repeats its {0} parameter")]
    Repeated(Param),
    /// A `filename*` whose percent-encoding, or whose bytes in its charset,
    /// do not decode.
    #[error("Content-Disposition filename* does not decode: {0}")]
    Encoding(&'static str),
}

/// A file-name parameter, as named in [`DispositionError::Repeated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `filename`.
    FileName,
    /// `filename*`.
    FileNameExt,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Param::FileName => "filename",
            Param::FileNameExt => "filename*",
        })
    }
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 8187 `attr-char`.
fn is_attr_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte)
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn skip_ows(&mut self) {
        while let [b' ' | b'\t', rest @ ..] = self.rest {
            self.rest = rest;
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let len = self.rest.iter().take_while(|&&b| is_tchar(b)).count();
        let (token, rest) = self.rest.split_at(len);
        self.rest = rest;
        token
    }

    fn eat(&mut self, byte: u8) -> bool {
        match self.rest.split_first() {
            Some((&first, rest)) if first == byte => {
                self.rest = rest;
                true
            }
            _ => false,
        }
    }

    /// A `quoted-string` (RFC 9110 §5.6.4), the opening quote already seen.
    fn quoted(&mut self) -> Result<Vec<u8>, DispositionError> {
        let mut out = Vec::new();
        loop {
            match self.rest.split_first() {
                None => return Err(DispositionError::Malformed("unterminated quoted string")),
                Some((b'"', rest)) => {
                    self.rest = rest;
                    return Ok(out);
                }
                Some((b'\\', rest)) => {
                    let Some((&escaped, rest)) = rest.split_first() else {
                        return Err(DispositionError::Malformed("unterminated quoted pair"));
                    };
                    if escaped < 0x20 && escaped != b'\t' || escaped == 0x7f {
                        return Err(DispositionError::Malformed("control in a quoted pair"));
                    }
                    out.push(escaped);
                    self.rest = rest;
                }
                Some((&byte, rest)) => {
                    if byte < 0x20 && byte != b'\t' || byte == 0x7f {
                        return Err(DispositionError::Malformed("control in a quoted string"));
                    }
                    out.push(byte);
                    self.rest = rest;
                }
            }
        }
    }
}

/// A `filename*` value: `charset'[language]'value-chars`. `Ok(None)` for a
/// charset other than UTF-8 and ISO-8859-1 (skipped).
fn ext_value(raw: &[u8]) -> Result<Option<String>, DispositionError> {
    let mut parts = raw.splitn(3, |&b| b == b'\'');
    let (Some(charset), Some(_language), Some(chars)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(DispositionError::Encoding("not charset'language'value"));
    };
    let mut bytes = Vec::with_capacity(chars.len());
    let mut rest = chars;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(DispositionError::Encoding("bad percent-encoding"))?;
            bytes.push(hex);
            rest = tail.get(2..).unwrap_or_default();
        } else if is_attr_char(byte) {
            bytes.push(byte);
            rest = tail;
        } else {
            return Err(DispositionError::Encoding(
                "a character that must be encoded",
            ));
        }
    }
    if charset.eq_ignore_ascii_case(b"utf-8") {
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| DispositionError::Encoding("not UTF-8"))
    } else if charset.eq_ignore_ascii_case(b"iso-8859-1") {
        Ok(Some(bytes.into_iter().map(char::from).collect()))
    } else {
        Ok(None)
    }
}

/// The file name of a `Content-Disposition` value: `filename*` if present
/// and decodable in a known charset, else `filename`, else `None`.
///
/// The disposition type is not checked beyond being a token: the draft
/// recommends `inline`, browsers send `attachment` or `form-data`, and the
/// name means the same in each.
pub fn file_name(value: &str) -> Result<Option<String>, DispositionError> {
    let mut cursor = Cursor {
        rest: value.as_bytes(),
    };
    cursor.skip_ows();
    if cursor.token().is_empty() {
        return Err(DispositionError::Malformed("no disposition type"));
    }
    let mut plain: Option<String> = None;
    let mut extended: Option<Option<String>> = None;
    loop {
        cursor.skip_ows();
        if cursor.rest.is_empty() {
            break;
        }
        if !cursor.eat(b';') {
            return Err(DispositionError::Malformed("text after a parameter"));
        }
        cursor.skip_ows();
        if cursor.rest.is_empty() {
            // A trailing `;` is common enough to forgive.
            break;
        }
        let name = cursor.token();
        if name.is_empty() {
            return Err(DispositionError::Malformed("a parameter without a name"));
        }
        cursor.skip_ows();
        if !cursor.eat(b'=') {
            return Err(DispositionError::Malformed("a parameter without ="));
        }
        cursor.skip_ows();
        let raw = if cursor.eat(b'"') {
            cursor.quoted()?
        } else {
            let token = cursor.token();
            if token.is_empty() {
                return Err(DispositionError::Malformed("a parameter without a value"));
            }
            token.to_vec()
        };
        if name.eq_ignore_ascii_case(b"filename") {
            if plain.is_some() {
                return Err(DispositionError::Repeated(Param::FileName));
            }
            // A quoted string is ISO-8859-1 by the grammar, but clients
            // send UTF-8 there; bytes that are neither ASCII nor UTF-8 are
            // refused rather than guessed.
            let text = String::from_utf8(raw)
                .map_err(|_| DispositionError::Encoding("filename is not UTF-8"))?;
            plain = Some(text);
        } else if name.eq_ignore_ascii_case(b"filename*") {
            if extended.is_some() {
                return Err(DispositionError::Repeated(Param::FileNameExt));
            }
            extended = Some(ext_value(&raw)?);
        }
    }
    Ok(extended.flatten().or(plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_drafts_example_prefers_filename_star() {
        assert_eq!(
            file_name("inline; filename=\"file name.jpg\"; filename*=UTF-8''file%20name.jpg"),
            Ok(Some("file name.jpg".to_owned()))
        );
        assert_eq!(
            file_name("attachment; filename=\"fallback.txt\"; filename*=utf-8'en'caf%C3%A9.txt"),
            Ok(Some("café.txt".to_owned()))
        );
        assert_eq!(
            file_name("inline;filename*=iso-8859-1''caf%E9.txt"),
            Ok(Some("café.txt".to_owned()))
        );
    }

    #[test]
    fn plain_forms() {
        assert_eq!(file_name("inline"), Ok(None));
        assert_eq!(file_name("inline;"), Ok(None));
        assert_eq!(
            file_name("attachment; filename=a.bin"),
            Ok(Some("a.bin".into()))
        );
        assert_eq!(
            file_name("form-data; name=\"f\"; FILENAME=\"a;b \\\"c\\\".txt\""),
            Ok(Some("a;b \"c\".txt".into()))
        );
        // An unknown charset is skipped for the plain name.
        assert_eq!(
            file_name("inline; filename*=koi8-r''%C1; filename=b.txt"),
            Ok(Some("b.txt".into()))
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(file_name(""), Err(DispositionError::Malformed(_))));
        assert!(matches!(
            file_name("; filename=a"),
            Err(DispositionError::Malformed(_))
        ));
        assert!(matches!(
            file_name("inline; filename"),
            Err(DispositionError::Malformed(_))
        ));
        assert!(matches!(
            file_name("inline; filename=\"open"),
            Err(DispositionError::Malformed(_))
        ));
        assert!(matches!(
            file_name("inline; filename=a b"),
            Err(DispositionError::Malformed(_))
        ));
        assert_eq!(
            file_name("inline; filename=a; filename=b"),
            Err(DispositionError::Repeated(Param::FileName))
        );
        assert!(matches!(
            file_name("inline; filename*=UTF-8''%FF"),
            Err(DispositionError::Encoding(_))
        ));
        assert!(matches!(
            file_name("inline; filename*=UTF-8''%G0"),
            Err(DispositionError::Encoding(_))
        ));
        assert!(matches!(
            file_name("inline; filename*=a.txt"),
            Err(DispositionError::Encoding(_))
        ));
    }

    fn encode(name: &str) -> String {
        name.bytes()
            .map(|b| {
                if is_attr_char(b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn quote(name: &str) -> String {
        let mut out = String::from("\"");
        for c in name.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = file_name(&text);
        }

        #[test]
        fn extended_names_round_trip(name in "\\PC{1,40}", fallback in "[ -~&&[^\"\\\\]]{0,20}") {
            let value = format!("inline; filename={}; filename*=UTF-8''{}", quote(&fallback), encode(&name));
            prop_assert_eq!(file_name(&value), Ok(Some(name)));
        }

        #[test]
        fn quoted_names_round_trip(name in "[^\\x00-\\x1f\\x7f]{1,40}") {
            let value = format!("attachment ; filename = {}", quote(&name));
            prop_assert_eq!(file_name(&value), Ok(Some(name)));
        }
    }
}
