//! Integers on the wire (docs/protocol.md §0).
//!
//! Only ASCII digits are accepted, parsed into a `u64`. `str::parse::<u64>`
//! alone is not enough: it accepts a leading `+`.

use thiserror::Error;

/// Why a header value is not a valid non-negative integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NumberError {
    /// The value is empty.
    #[error("empty number")]
    Empty,
    /// The value contains something other than ASCII digits (a sign, hex,
    /// an exponent, a decimal point, white space).
    #[error("not a decimal number of ASCII digits")]
    NotDigits,
    /// The value does not fit in 64 bits.
    #[error("number too large")]
    Overflow,
}

/// Parses a non-negative decimal integer made of ASCII digits only.
///
/// ```
/// use tenax_protocol::{parse_u64, NumberError};
/// assert_eq!(parse_u64("1024"), Ok(1024));
/// assert_eq!(parse_u64("+5"), Err(NumberError::NotDigits));
/// assert_eq!(parse_u64("18446744073709551616"), Err(NumberError::Overflow));
/// ```
pub fn parse_u64(text: &str) -> Result<u64, NumberError> {
    if text.is_empty() {
        return Err(NumberError::Empty);
    }
    text.bytes().try_fold(0u64, |acc, byte| {
        if !byte.is_ascii_digit() {
            return Err(NumberError::NotDigits);
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(byte - b'0')))
            .ok_or(NumberError::Overflow)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_everything_but_digits() {
        for bad in ["-1", "+5", "0x5", "5.0", "1e3", " 5", "5 ", "abc", "٣"] {
            assert_eq!(parse_u64(bad), Err(NumberError::NotDigits), "{bad:?}");
        }
        assert_eq!(parse_u64(""), Err(NumberError::Empty));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_u64("18446744073709551616"),
            Err(NumberError::Overflow)
        );
        assert_eq!(parse_u64("007"), Ok(7));
    }

    proptest! {
        #[test]
        fn round_trips(n: u64) {
            prop_assert_eq!(parse_u64(&n.to_string()), Ok(n));
        }

        #[test]
        fn agrees_with_std_on_digit_strings(s in "[0-9]{1,25}") {
            prop_assert_eq!(parse_u64(&s).ok(), s.parse::<u64>().ok());
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_u64(&s);
        }
    }
}
