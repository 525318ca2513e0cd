//! Range downloads (docs/protocol.md §4; RFC 9110 §13.1, §13.2.2, §14): the
//! `Range` header, the preconditions and `If-Range`, as pure functions.
//!
//! [`decide`] takes the request's header texts, the representation's
//! validators and the current time, and says what to answer: the whole
//! body, some ranges of it, 304, 412 or 416. [`available_ranges`] serves the
//! prefix of an upload still in progress, whose complete length may be
//! unknown.
//!
//! The `Range` parser is our own rather than `http-range-header` 1.0's: that
//! crate rejects what docs/protocol.md §4 requires us to accept or resolve, namely
//! numerals that overflow `u64` (an overflowing last-pos means "to the end",
//! an overflowing first-pos is merely unsatisfiable, not malformed),
//! overlapping ranges (RFC 9110 allows up to two; it rejects any), leading
//! zeros, optional white space and empty list elements (RFC 9110 §5.6.1), and
//! a case-insensitive unit. Its error type also does not tell an unknown unit
//! (ignored) from a malformed header (ignored too, but for another reason).
//!
//! Over 800 lines only with its unit and property tests below; the code itself
//! is about 540 lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// The most ranges one request may ask for; more and the whole body is sent
/// (docs/protocol.md §4, DoS rule).
pub const MAX_RANGES: usize = 16;

/// The most satisfiable ranges that may overlap another; more and the
/// whole body is sent (RFC 9110 §14.2: "more than two overlapping ranges").
pub const MAX_OVERLAPPING: usize = 2;

/// "Many small unordered ranges" (RFC 9110 §14.2): more than this many
/// ranges, not in ascending order, averaging fewer than
/// [`SMALL_RANGE_BYTES`] bytes each, and the whole body is sent.
pub const MANY_UNORDERED: usize = 4;

/// See [`MANY_UNORDERED`].
pub const SMALL_RANGE_BYTES: u64 = 1024;

/// One satisfiable byte range, both ends inclusive (`first <= last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// The first byte.
    pub first: u64,
    /// The last byte (inclusive).
    pub last: u64,
}

impl ByteRange {
    /// The number of bytes in the range (at least 1). Saturates at
    /// `u64::MAX` for the one range `0-(2^64-1)` that cannot exist in a
    /// representation whose length fits in a `u64`.
    pub fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }

    /// Never true: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The half-open range `first..last + 1`.
    pub fn to_std(&self) -> std::ops::Range<u64> {
        self.first..self.last.saturating_add(1)
    }

    /// `bytes f-l/LEN`, or `bytes f-l/*` without a known complete length.
    pub fn content_range(&self, complete_len: Option<u64>) -> String {
        match complete_len {
            Some(len) => format!("bytes {}-{}/{len}", self.first, self.last),
            None => format!("bytes {}-{}/*", self.first, self.last),
        }
    }
}

/// `bytes */LEN`: the `Content-Range` of a 416, naming the complete length.
pub fn unsatisfied_content_range(complete_len: u64) -> String {
    format!("bytes */{complete_len}")
}

/// A decimal numeral of a range spec: its value, or "too large for `u64`"
/// (keeping the digits, leading zeros stripped, to compare two of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numeral<'a> {
    Value(u64),
    Over(&'a str),
}

impl Numeral<'_> {
    fn less_than(&self, other: &Numeral<'_>) -> bool {
        match (self, other) {
            (Numeral::Value(a), Numeral::Value(b)) => a < b,
            (Numeral::Value(_), Numeral::Over(_)) => true,
            (Numeral::Over(_), Numeral::Value(_)) => false,
            // Same-length digit strings without leading zeros compare like numbers.
            (Numeral::Over(a), Numeral::Over(b)) => (a.len(), *a) < (b.len(), *b),
        }
    }
}

/// One `range-spec` of a `bytes=` header, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec<'a> {
    /// `f-l` or `f-` (`last` is `None`).
    FromTo {
        first: Numeral<'a>,
        last: Option<Numeral<'a>>,
    },
    /// `-s`.
    Suffix(Numeral<'a>),
}

/// Why a `Range` header is ignored (the request is answered as if it had
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RangeError {
    /// The unit is not `bytes` (`items=0-5`): RFC 9110 says to ignore it.
    #[error("unknown range unit")]
    UnknownUnit,
    /// Not `unit=range-set`, a spec that is not `f-l`, `f-` or `-s`, or no
    /// spec at all.
    #[error("malformed Range header")]
    Malformed,
    /// A spec whose last-pos is below its first-pos (`bytes=5-2`).
    #[error("a range ends before it starts")]
    Reversed,
    /// More than [`MAX_RANGES`] specs.
    #[error("more than {MAX_RANGES} ranges")]
    TooMany,
}

/// The syntactically valid `bytes=` specs of a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RangeSet<'a> {
    specs: Vec<Spec<'a>>,
}

/// `[0-9]+` into a [`Numeral`]; `None` when not all ASCII digits or empty.
fn numeral(text: &str) -> Option<Numeral<'_>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = text.bytes().try_fold(0u64, |acc, byte| {
        acc.checked_mul(10)?.checked_add(u64::from(byte - b'0'))
    });
    Some(match value {
        Some(value) => Numeral::Value(value),
        None => Numeral::Over(text.trim_start_matches('0')),
    })
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Parses `bytes=` followed by a comma-separated list of `f-l`, `f-` and
/// `-s`, checking each `f <= l`.
fn parse(header: &str) -> Result<RangeSet<'_>, RangeError> {
    let header = header.trim_matches(is_ows);
    let (unit, set) = header.split_once('=').ok_or(RangeError::Malformed)?;
    if unit.is_empty() || !unit.bytes().all(is_tchar) {
        return Err(RangeError::Malformed);
    }
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(RangeError::UnknownUnit);
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches(is_ows);
        if element.is_empty() {
            // RFC 9110 §5.6.1: empty list elements are accepted and not counted.
            continue;
        }
        if specs.len() == MAX_RANGES {
            return Err(RangeError::TooMany);
        }
        let (first, last) = element.split_once('-').ok_or(RangeError::Malformed)?;
        let spec = if first.is_empty() {
            Spec::Suffix(numeral(last).ok_or(RangeError::Malformed)?)
        } else {
            let first = numeral(first).ok_or(RangeError::Malformed)?;
            let last = if last.is_empty() {
                None
            } else {
                let last = numeral(last).ok_or(RangeError::Malformed)?;
                if last.less_than(&first) {
                    return Err(RangeError::Reversed);
                }
                Some(last)
            };
            Spec::FromTo { first, last }
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(RangeError::Malformed);
    }
    Ok(RangeSet { specs })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a `Range` header asks of `available` bytes of a representation
/// whose complete length is `total` (when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// The header is absent or ignored: answer as if there were none.
    Ignored(Option<RangeError>),
    /// The abuse rule (docs/protocol.md §4): too many overlapping ranges, or many
    /// small unordered ones; send the whole body.
    Abusive,
    /// These ranges, in request order, each within `available`.
    Ranges(Vec<ByteRange>),
    /// No requested range is satisfiable: 416.
    Unsatisfiable,
}

/// Resolves a `Range` header against the first `available` bytes of a
/// representation whose complete length is `total` (`Some(available)` for a
/// complete one).
///
/// `f-l` and `f-` are satisfiable when `f < available` (`l` clamped to
/// `available - 1`, an overflowing `l` meaning "to the end", an overflowing
/// `f` never satisfiable); `-s` needs a known `total`, `s > 0`, and the last
/// `s` bytes to start below `available` (an `s >= total` is everything).
///
/// ```
/// use tenax_protocol::range::{ByteRange, RangeOutcome, available_ranges};
/// assert_eq!(
///     available_ranges(Some("bytes=-100"), 1000, Some(1000)),
///     RangeOutcome::Ranges(vec![ByteRange { first: 900, last: 999 }])
/// );
/// assert_eq!(
///     available_ranges(Some("bytes=500-"), 400, None),
///     RangeOutcome::Unsatisfiable
/// );
/// ```
pub fn available_ranges(header: Option<&str>, available: u64, total: Option<u64>) -> RangeOutcome {
    let Some(header) = header else {
        return RangeOutcome::Ignored(None);
    };
    let set = match parse(header) {
        Ok(set) => set,
        Err(error) => return RangeOutcome::Ignored(Some(error)),
    };
    let ranges: Vec<ByteRange> = set
        .specs
        .iter()
        .filter_map(|spec| resolve(spec, available, total))
        .collect();
    if ranges.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    if abusive(&ranges) {
        return RangeOutcome::Abusive;
    }
    RangeOutcome::Ranges(ranges)
}

/// One spec against `available` bytes (see [`available_ranges`]).
fn resolve(spec: &Spec<'_>, available: u64, total: Option<u64>) -> Option<ByteRange> {
    let end = available.checked_sub(1)?;
    match *spec {
        Spec::FromTo { first, last } => {
            let Numeral::Value(first) = first else {
                return None;
            };
            if first >= available {
                return None;
            }
            let last = match last {
                Some(Numeral::Value(last)) => last.min(end),
                Some(Numeral::Over(_)) | None => end,
            };
            Some(ByteRange { first, last })
        }
        Spec::Suffix(suffix) => {
            let total = total?;
            let first = match suffix {
                Numeral::Value(0) => return None,
                Numeral::Value(s) => total.saturating_sub(s),
                Numeral::Over(_) => 0,
            };
            (first < available).then_some(ByteRange { first, last: end })
        }
    }
}

/// The abuse rule: more than [`MAX_OVERLAPPING`] ranges overlapping another,
/// or more than [`MANY_UNORDERED`] small ranges out of order.
fn abusive(ranges: &[ByteRange]) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|range| (range.first, range.last));
    let mut overlapping = vec![false; sorted.len()];
    let mut reach: Option<(u64, usize)> = None;
    for (i, range) in sorted.iter().enumerate() {
        if let Some((last, owner)) = reach
            && range.first <= last
        {
            overlapping[i] = true;
            overlapping[owner] = true;
        }
        if reach.is_none_or(|(last, _)| range.last > last) {
            reach = Some((range.last, i));
        }
    }
    if overlapping.iter().filter(|&&o| o).count() > MAX_OVERLAPPING {
        return true;
    }
    let ordered = ranges.windows(2).all(|pair| pair[0].first <= pair[1].first);
    let bytes = ranges
        .iter()
        .fold(0u64, |sum, range| sum.saturating_add(range.len()));
    let count = ranges.len() as u64;
    ranges.len() > MANY_UNORDERED && !ordered && bytes < SMALL_RANGE_BYTES.saturating_mul(count)
}

/// The request header fields that [`decide`] reads, as text (`None` when
/// absent). A field sent several times is passed joined with `", "`, so
/// that a list field is one list and a singleton field becomes invalid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions<'a> {
    /// Whether the method is GET (`Range` is defined only for GET).
    pub get: bool,
    /// Whether the method is GET or HEAD (for `If-None-Match` → 304 and
    /// `If-Modified-Since`).
    pub safe: bool,
    /// `Range`.
    pub range: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a str>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a str>,
}

/// What the server knows of a complete representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Representation<'a> {
    /// Its length in bytes.
    pub len: u64,
    /// Its strong entity tag, quotes included (`"abc"`), if it has one.
    pub etag: Option<&'a str>,
    /// Its modification time (whole seconds since the Unix epoch), if known.
    pub last_modified: Option<u64>,
}

/// The answer to a GET or HEAD on a complete representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// 200 with the whole body.
    Full,
    /// 206 with these ranges, in request order: one range is sent with a
    /// `Content-Range`, several as `multipart/byteranges`.
    Partial(Vec<ByteRange>),
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 416 with `Content-Range: bytes */LEN`.
    Unsatisfiable,
}

/// Evaluates a GET or HEAD on a complete representation, `now` being the
/// current time in seconds since the Unix epoch.
///
/// The order is RFC 9110 §13.2.2: `If-Match` (else `If-Unmodified-Since`)
/// → 412; `If-None-Match` (else `If-Modified-Since`) → 304 (412 for other
/// methods); then, for a GET with `Range`, `If-Range` (false → 200 whole),
/// then the `Range` itself (see [`available_ranges`]; ignored or abusive →
/// 200 whole; a zero-length representation → 200 empty).
///
/// ```
/// use tenax_protocol::range::{ByteRange, Conditions, Decision, Representation, decide};
/// let repr = Representation { len: 1000, etag: Some("\"x\""), last_modified: Some(0) };
/// let get = Conditions { get: true, safe: true, ..Conditions::default() };
/// let ranged = Conditions { range: Some("bytes=0-99"), ..get };
/// assert_eq!(
///     decide(&ranged, &repr, 100),
///     Decision::Partial(vec![ByteRange { first: 0, last: 99 }])
/// );
/// let weak = Conditions { if_range: Some("W/\"x\""), ..ranged };
/// assert_eq!(decide(&weak, &repr, 100), Decision::Full);
/// let cached = Conditions { if_none_match: Some("\"x\""), ..ranged };
/// assert_eq!(decide(&cached, &repr, 100), Decision::NotModified);
/// ```
pub fn decide(request: &Conditions<'_>, repr: &Representation<'_>, now: u64) -> Decision {
    if let Some(decision) = preconditions(request, repr, now) {
        return decision;
    }
    if !request.get {
        return Decision::Full;
    }
    let Some(range) = request.range else {
        return Decision::Full;
    };
    if let Some(if_range) = request.if_range
        && !if_range_holds(if_range, repr, now)
    {
        return Decision::Full;
    }
    if repr.len == 0 {
        return Decision::Full;
    }
    match available_ranges(Some(range), repr.len, Some(repr.len)) {
        RangeOutcome::Ignored(_) | RangeOutcome::Abusive => Decision::Full,
        RangeOutcome::Ranges(ranges) => Decision::Partial(ranges),
        RangeOutcome::Unsatisfiable => Decision::Unsatisfiable,
    }
}

/// Steps 1–4 of RFC 9110 §13.2.2: `Some` when a precondition decides.
fn preconditions(
    request: &Conditions<'_>,
    repr: &Representation<'_>,
    now: u64,
) -> Option<Decision> {
    if let Some(if_match) = request.if_match {
        if !etag_list_matches(if_match, repr.etag, Comparison::Strong) {
            return Some(Decision::PreconditionFailed);
        }
    } else if let Some(since) = request.if_unmodified_since.and_then(parse_date) {
        // An invalid date is ignored; without Last-Modified the condition
        // cannot be evaluated and is ignored too.
        if repr.last_modified.is_some_and(|modified| modified > since) {
            return Some(Decision::PreconditionFailed);
        }
    }
    if let Some(if_none_match) = request.if_none_match {
        if etag_list_matches(if_none_match, repr.etag, Comparison::Weak) {
            return Some(if request.safe {
                Decision::NotModified
            } else {
                Decision::PreconditionFailed
            });
        }
    } else if request.safe {
        // A date in the future is invalid (RFC 9110 §13.1.3).
        let since = request
            .if_modified_since
            .and_then(parse_date)
            .filter(|&since| since <= now);
        if let (Some(since), Some(modified)) = (since, repr.last_modified)
            && modified <= since
        {
            return Some(Decision::NotModified);
        }
    }
    None
}

/// `If-Range`: an entity tag matches only by strong comparison (so a `W/`
/// tag never does); a date must equal Last-Modified exactly, and
/// Last-Modified counts as a strong validator only once the second it
/// names is over and a full second has passed since (docs/protocol.md §4: the
/// object is immutable and completed at least 1 s ago; completion times
/// are truncated to the second, so that is `now >= last_modified + 2`).
fn if_range_holds(value: &str, repr: &Representation<'_>, now: u64) -> bool {
    let value = value.trim_matches(is_ows);
    if value.starts_with('"') || value.starts_with("W/") {
        return match (parse_etag(value), repr.etag.and_then(parse_etag)) {
            (Some((tag, ETagKind::Strong)), Some((current, ETagKind::Strong))) => tag == current,
            _ => false,
        };
    }
    match (parse_date(value), repr.last_modified) {
        (Some(date), Some(modified)) => date == modified && now >= modified.saturating_add(2),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ETagKind {
    Strong,
    Weak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// One `entity-tag` (`"opaque"` or `W/"opaque"`): its opaque part (quotes
/// included) and kind. `None` unless the whole text is one valid tag.
fn parse_etag(text: &str) -> Option<(&str, ETagKind)> {
    let (kind, tag) = match text.strip_prefix("W/") {
        Some(rest) => (ETagKind::Weak, rest),
        None => (ETagKind::Strong, text),
    };
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    // etagc = %x21 / %x23-7E / obs-text
    inner
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        .then_some((tag, kind))
}

/// `*` or a comma-separated list of entity tags, against the current tag.
/// `*` matches any current representation; a list that does not parse
/// matches nothing.
fn etag_list_matches(list: &str, current: Option<&str>, comparison: Comparison) -> bool {
    if list.trim_matches(is_ows) == "*" {
        return true;
    }
    let Some((current, current_kind)) = current.and_then(parse_etag) else {
        return false;
    };
    list.split(',')
        .map(|item| item.trim_matches(is_ows))
        .filter(|item| !item.is_empty())
        .filter_map(parse_etag)
        .any(|(tag, kind)| {
            tag == current
                && (comparison == Comparison::Weak
                    || (kind == ETagKind::Strong && current_kind == ETagKind::Strong))
        })
}

/// An HTTP-date (IMF-fixdate or one of the two obsolete forms) as seconds
/// since the Unix epoch; `None` when invalid or before 1970.
pub fn parse_date(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text.trim_matches(is_ows)).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// `secs` since the Unix epoch as an IMF-fixdate (`Last-Modified`).
pub fn format_date(secs: u64) -> String {
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now);
    httpdate::fmt_http_date(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LEN: u64 = 1000;

    fn ranges(header: &str, len: u64) -> RangeOutcome {
        available_ranges(Some(header), len, Some(len))
    }

    fn one(first: u64, last: u64) -> RangeOutcome {
        RangeOutcome::Ranges(vec![ByteRange { first, last }])
    }

    #[test]
    fn case_73_74_75_single_ranges() {
        assert_eq!(ranges("bytes=0-99", LEN), one(0, 99));
        assert_eq!(ranges("bytes=-100", LEN), one(900, 999));
        assert_eq!(ranges("bytes=100-", LEN), one(100, 999));
        assert_eq!(ranges("bytes=0-99999999999999999999999", LEN), one(0, 999));
        assert_eq!(ranges("bytes=-99999999999999999999999", LEN), one(0, 999));
        assert_eq!(ranges("bytes=-1000", LEN), one(0, 999));
        assert_eq!(ranges("bytes=990-5000", LEN), one(990, 999));
        assert_eq!(ranges("bytes=1000-", LEN), RangeOutcome::Unsatisfiable);
        assert_eq!(ranges("bytes=-0", LEN), RangeOutcome::Unsatisfiable);
        assert_eq!(
            ranges("bytes=99999999999999999999999-", LEN),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            ranges("bytes=99999999999999999999999-99999999999999999999999", LEN),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            ranges("BYTES = 0-1", LEN),
            RangeOutcome::Ignored(Some(RangeError::Malformed))
        );
        assert_eq!(ranges("Bytes=0-1", LEN), one(0, 1));
        assert_eq!(ranges("bytes=0001-0002", LEN), one(1, 2));
        assert_eq!(ranges("bytes= 0-1 , ,", LEN), one(0, 1));
    }

    #[test]
    fn case_76_ignored_headers() {
        for (header, error) in [
            ("bytes=5-2", RangeError::Reversed),
            ("bytes=", RangeError::Malformed),
            ("bytes=abc", RangeError::Malformed),
            ("bytes=0-1,abc", RangeError::Malformed),
            ("bytes=1-2-3", RangeError::Malformed),
            ("bytes=+1-2", RangeError::Malformed),
            ("bytes=-", RangeError::Malformed),
            ("bytes 0-1", RangeError::Malformed),
            ("bytes=99999999999999999999999-5", RangeError::Reversed),
            (
                "bytes=99999999999999999999999-99999999999999999999998",
                RangeError::Reversed,
            ),
            ("items=0-5", RangeError::UnknownUnit),
        ] {
            assert_eq!(
                ranges(header, LEN),
                RangeOutcome::Ignored(Some(error)),
                "{header}"
            );
        }
    }

    #[test]
    fn case_77_78_several_and_abusive() {
        assert_eq!(
            ranges("bytes=0-0,-1", LEN),
            RangeOutcome::Ranges(vec![
                ByteRange { first: 0, last: 0 },
                ByteRange {
                    first: 999,
                    last: 999
                }
            ])
        );
        let tiny: Vec<String> = (0..50).map(|i| format!("{i}-{}", i + 2)).collect();
        assert_eq!(
            ranges(&format!("bytes={}", tiny.join(",")), LEN),
            RangeOutcome::Ignored(Some(RangeError::TooMany))
        );
        assert_eq!(ranges("bytes=0-10,5-15,8-20", LEN), RangeOutcome::Abusive);
        assert!(matches!(
            ranges("bytes=0-10,5-15", LEN),
            RangeOutcome::Ranges(r) if r.len() == 2
        ));
        assert_eq!(
            ranges("bytes=50-51,40-41,30-31,20-21,10-11", LEN),
            RangeOutcome::Abusive
        );
        assert!(matches!(
            ranges("bytes=10-11,20-21,30-31,40-41,50-51", LEN),
            RangeOutcome::Ranges(r) if r.len() == 5
        ));
        // Unsatisfiable specs are dropped; one left is a single range.
        assert_eq!(ranges("bytes=5000-6000,0-1", LEN), one(0, 1));
    }

    #[test]
    fn in_progress_prefix() {
        assert_eq!(available_ranges(Some("bytes=0-"), 400, None), one(0, 399));
        assert_eq!(
            available_ranges(Some("bytes=-10"), 400, None),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            available_ranges(Some("bytes=-700"), 400, Some(1000)),
            one(300, 399)
        );
        assert_eq!(
            available_ranges(Some("bytes=-600"), 400, Some(1000)),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            available_ranges(Some("bytes=0-"), 0, None),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            available_ranges(None, 10, None),
            RangeOutcome::Ignored(None)
        );
    }

    const ETAG: &str = "\"abc\"";
    const MODIFIED: u64 = 1_700_000_000;
    const NOW: u64 = MODIFIED + 60;

    fn repr(len: u64) -> Representation<'static> {
        Representation {
            len,
            etag: Some(ETAG),
            last_modified: Some(MODIFIED),
        }
    }

    fn get<'a>() -> Conditions<'a> {
        Conditions {
            get: true,
            safe: true,
            ..Conditions::default()
        }
    }

    #[test]
    fn case_79_80_if_range() {
        let ranged = Conditions {
            range: Some("bytes=0-9"),
            ..get()
        };
        let partial = Decision::Partial(vec![ByteRange { first: 0, last: 9 }]);
        fn with<'a>(ranged: Conditions<'a>, value: &'a str) -> Conditions<'a> {
            Conditions {
                if_range: Some(value),
                ..ranged
            }
        }
        assert_eq!(decide(&with(ranged, ETAG), &repr(LEN), NOW), partial);
        assert_eq!(
            decide(&with(ranged, "W/\"abc\""), &repr(LEN), NOW),
            Decision::Full
        );
        assert_eq!(
            decide(&with(ranged, "\"old\""), &repr(LEN), NOW),
            Decision::Full
        );
        let date = format_date(MODIFIED);
        assert_eq!(decide(&with(ranged, &date), &repr(LEN), NOW), partial);
        assert_eq!(
            decide(&with(ranged, &date), &repr(LEN), MODIFIED + 1),
            Decision::Full,
            "Last-Modified is not strong within a second of completion"
        );
        assert_eq!(
            decide(&with(ranged, &format_date(MODIFIED + 1)), &repr(LEN), NOW),
            Decision::Full
        );
        assert_eq!(
            decide(&with(ranged, &format_date(MODIFIED - 1)), &repr(LEN), NOW),
            Decision::Full
        );
        assert_eq!(
            decide(&with(ranged, "garbage"), &repr(LEN), NOW),
            Decision::Full
        );
        // If-Range without Range is ignored.
        let bare = Conditions {
            if_range: Some("\"old\""),
            ..get()
        };
        assert_eq!(decide(&bare, &repr(LEN), NOW), Decision::Full);
    }

    #[test]
    fn case_81_preconditions() {
        let ranged = Conditions {
            range: Some("bytes=0-9"),
            ..get()
        };
        let hit = Conditions {
            if_none_match: Some("\"zzz\", W/\"abc\""),
            ..ranged
        };
        assert_eq!(decide(&hit, &repr(LEN), NOW), Decision::NotModified);
        let star = Conditions {
            if_none_match: Some("*"),
            ..ranged
        };
        assert_eq!(decide(&star, &repr(LEN), NOW), Decision::NotModified);
        let put = Conditions {
            get: false,
            safe: false,
            ..hit
        };
        assert_eq!(decide(&put, &repr(LEN), NOW), Decision::PreconditionFailed);
        let head = Conditions {
            get: false,
            ..ranged
        };
        assert_eq!(decide(&head, &repr(LEN), NOW), Decision::Full);
        // If-Match: strong comparison.
        let weak_match = Conditions {
            if_match: Some("W/\"abc\""),
            ..ranged
        };
        assert_eq!(
            decide(&weak_match, &repr(LEN), NOW),
            Decision::PreconditionFailed
        );
        let strong_match = Conditions {
            if_match: Some("\"x\", \"abc\""),
            if_unmodified_since: Some("Thu, 01 Jan 1970 00:00:00 GMT"),
            ..ranged
        };
        assert!(matches!(
            decide(&strong_match, &repr(LEN), NOW),
            Decision::Partial(_)
        ));
        let unmodified = Conditions {
            if_unmodified_since: Some("Thu, 01 Jan 1970 00:00:00 GMT"),
            ..ranged
        };
        assert_eq!(
            decide(&unmodified, &repr(LEN), NOW),
            Decision::PreconditionFailed
        );
        // If-Match wins over If-None-Match's 304 only when it fails.
        let both = Conditions {
            if_match: Some("\"nope\""),
            if_none_match: Some(ETAG),
            ..ranged
        };
        assert_eq!(decide(&both, &repr(LEN), NOW), Decision::PreconditionFailed);
        let modified = Conditions {
            if_modified_since: Some(&format_date(MODIFIED)),
            ..get()
        };
        assert_eq!(decide(&modified, &repr(LEN), NOW), Decision::NotModified);
        let earlier = format_date(MODIFIED - 1);
        let modified = Conditions {
            if_modified_since: Some(&earlier),
            ..get()
        };
        assert_eq!(decide(&modified, &repr(LEN), NOW), Decision::Full);
        // If-None-Match present: If-Modified-Since is not evaluated.
        let date = format_date(MODIFIED);
        let both = Conditions {
            if_none_match: Some("\"other\""),
            if_modified_since: Some(&date),
            ..get()
        };
        assert_eq!(decide(&both, &repr(LEN), NOW), Decision::Full);
    }

    #[test]
    fn case_82_zero_length() {
        let ranged = Conditions {
            range: Some("bytes=0-"),
            ..get()
        };
        assert_eq!(decide(&ranged, &repr(0), NOW), Decision::Full);
        let suffix = Conditions {
            range: Some("bytes=-5"),
            ..get()
        };
        assert_eq!(decide(&suffix, &repr(0), NOW), Decision::Full);
    }

    /// A spec text biased towards edge values around `len`.
    fn spec(len: u64) -> impl Strategy<Value = String> {
        let number = prop_oneof![0..=len.saturating_add(2), Just(u64::MAX), any::<u64>(),]
            .prop_map(|n| n.to_string());
        let numeral = prop_oneof![
            4 => number,
            1 => Just("99999999999999999999999".to_owned()),
        ];
        prop_oneof![
            (numeral.clone(), numeral.clone()).prop_map(|(f, l)| format!("{f}-{l}")),
            numeral.clone().prop_map(|f| format!("{f}-")),
            numeral.prop_map(|s| format!("-{s}")),
        ]
    }

    fn header() -> impl Strategy<Value = (u64, String)> {
        (0u64..3000).prop_flat_map(|len| {
            (
                Just(len),
                prop::collection::vec(spec(len), 1..20)
                    .prop_map(|specs| format!("bytes={}", specs.join(","))),
            )
        })
    }

    proptest! {
        #[test]
        fn unsatisfied_content_range_reads_back_as_the_length(len in any::<u64>()) {
            let text = unsatisfied_content_range(len);
            prop_assert_eq!(
                crate::ContentRange::parse(&text),
                Ok(crate::ContentRange::Query { total: crate::Total::Known(len) })
            );
        }

        /// Every resolved range lies within the representation, in request
        /// order, and each corresponds to a spec that is satisfiable.
        #[test]
        fn resolved_ranges_are_within((len, header) in header()) {
            match ranges(&header, len) {
                RangeOutcome::Ranges(ranges) => {
                    prop_assert!(!ranges.is_empty());
                    prop_assert!(ranges.len() <= MAX_RANGES);
                    for range in &ranges {
                        prop_assert!(range.first <= range.last);
                        prop_assert!(range.last < len);
                    }
                }
                RangeOutcome::Unsatisfiable | RangeOutcome::Abusive => {}
                RangeOutcome::Ignored(error) => prop_assert!(error.is_some()),
            }
        }

        /// `decide` never answers 206 with a range outside the body, and a
        /// 416 only when no spec is satisfiable.
        #[test]
        fn decide_is_consistent((len, header) in header(), now in 0u64..4_000_000_000) {
            let request = Conditions { range: Some(&header), ..get() };
            let representation = repr(len);
            match decide(&request, &representation, now) {
                Decision::Partial(ranges) => {
                    prop_assert!(len > 0);
                    for range in ranges {
                        prop_assert!(range.last < len);
                    }
                }
                Decision::Unsatisfiable => prop_assert!(len > 0),
                Decision::Full => {}
                other => prop_assert!(false, "{other:?}"),
            }
            // HEAD ignores Range.
            let head = Conditions { get: false, ..request };
            prop_assert_eq!(decide(&head, &representation, now), Decision::Full);
        }

        /// A single `f-l` agrees with plain arithmetic.
        #[test]
        fn single_from_to(len in 0u64..10_000, f in 0u64..12_000, l in 0u64..12_000) {
            let outcome = ranges(&format!("bytes={f}-{l}"), len);
            if l < f {
                prop_assert_eq!(outcome, RangeOutcome::Ignored(Some(RangeError::Reversed)));
            } else if f >= len {
                prop_assert_eq!(outcome, RangeOutcome::Unsatisfiable);
            } else {
                prop_assert_eq!(outcome, one(f, l.min(len - 1)));
            }
        }

        /// A suffix `-s` is the last `min(s, len)` bytes.
        #[test]
        fn single_suffix(len in 1u64..10_000, s in 0u64..12_000) {
            let outcome = ranges(&format!("bytes=-{s}"), len);
            if s == 0 {
                prop_assert_eq!(outcome, RangeOutcome::Unsatisfiable);
            } else {
                prop_assert_eq!(outcome, one(len - s.min(len), len - 1));
            }
        }

        /// Resuming like curl/wget (`bytes=N-`): a range that starts
        /// exactly at N, or 416 once N reaches the length.
        #[test]
        fn resume_starts_at_n(len in 1u64..1_000_000, n in 0u64..1_100_000) {
            let request = Conditions { range: Some(&format!("bytes={n}-")), ..get() };
            let decision = decide(&request, &repr(len), NOW);
            if n >= len {
                prop_assert_eq!(decision, Decision::Unsatisfiable);
            } else {
                prop_assert_eq!(decision, Decision::Partial(vec![ByteRange { first: n, last: len - 1 }]));
            }
        }

        /// Arbitrary text never panics.
        #[test]
        fn any_text(text in ".{0,80}", len in 0u64..100) {
            let _ = ranges(&text, len);
            let request = Conditions {
                range: Some(&text),
                if_range: Some(&text),
                if_match: Some(&text),
                if_modified_since: Some(&text),
                ..get()
            };
            let _ = decide(&request, &repr(len), NOW);
        }
    }
}
