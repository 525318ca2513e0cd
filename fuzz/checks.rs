//! Invariant checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`)
//! and the corpus replay test (`crates/protocol/tests/fuzz_corpus.rs`).
//!
//! Both include this file with `#[path = ...] mod checks;`, so a corpus or
//! regression file goes through exactly the same code whether libFuzzer or
//! `cargo test` feeds it. Every check panics on a violation; inputs that are
//! not meaningful (not UTF-8, too short for `arbitrary`) are skipped.
//!
//! One file on purpose: the fuzz targets and the corpus replay test include it
//! by path (`#[path]`), so each parser's invariants sit together and are
//! compiled the same way in both.

// Each fuzz target uses only one entry point.
#![allow(dead_code)]

use std::path::{Component, Path};

use arbitrary::{Arbitrary, Unstructured};
use tenax_protocol::forwarded::{self, ForwardedElement};
use tenax_protocol::range::{
    self as ranges, Conditions, Decision, MAX_RANGES, RangeOutcome, Representation,
    available_ranges,
};
use tenax_protocol::repr_digest;
use tenax_protocol::rufh::{self, UploadLimit};
use tenax_protocol::seed::{
    Phase, SeedAction, SeedRequest, UploadState, decide, held_range, parse_held_range,
};
use tenax_protocol::signed::{Grant, Scope, SigningKey};
use tenax_protocol::tus::{self, Concat};
use tenax_protocol::{ContentRange, FileName, Namespace, Total, UploadId, parse_u64};

// ---------------------------------------------------------------------------
// content_range

/// `ContentRange::parse` on arbitrary bytes (when UTF-8), plus `parse_u64`
/// against `str::parse`.
pub(crate) fn content_range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    number(text);
    let Ok(range) = ContentRange::parse(text) else {
        return;
    };
    if let ContentRange::Bytes { first, last, total } = range {
        assert!(first <= last, "{text:?}: first > last");
        assert!(last != u64::MAX, "{text:?}: last == u64::MAX");
        if let Total::Known(total) = total {
            assert!(last < total, "{text:?}: last >= total");
        }
        assert_eq!(range.body_len(), last - first + 1, "{text:?}: body_len");
    } else {
        assert_eq!(range.body_len(), 0, "{text:?}: query with a body");
    }
    let formatted = range.to_string();
    assert_eq!(
        ContentRange::parse(&formatted),
        Ok(range),
        "{text:?}: parse(to_string()) does not round-trip via {formatted:?}"
    );
    // What was accepted is exactly the canonical form up to leading zeros:
    // no stray characters, no alternative spellings.
    assert_eq!(
        strip_leading_zeros(text),
        formatted,
        "{text:?}: accepted a non-canonical spelling"
    );
}

/// `parse_u64` agrees with `str::parse::<u64>` except for the sign that
/// std accepts and the wire grammar does not.
fn number(text: &str) {
    let expected = if text.starts_with('+') {
        None
    } else {
        text.parse::<u64>().ok()
    };
    assert_eq!(parse_u64(text).ok(), expected, "parse_u64({text:?})");
    if let Ok(n) = parse_u64(text) {
        assert_eq!(parse_u64(&n.to_string()), Ok(n));
    }
}

/// Drops the leading zeros of every run of ASCII digits (keeping one `0`).
fn strip_leading_zeros(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_number = false;
    while let Some(c) = chars.next() {
        if c == '0' && !in_number && chars.peek().is_some_and(char::is_ascii_digit) {
            continue;
        }
        in_number = c.is_ascii_digit();
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// seed_decide

/// Interesting 64-bit values, picked by [`Num::Edge`].
const EDGES: [u64; 12] = [
    0,
    1,
    2,
    9,
    10,
    262_143,
    262_144,
    1 << 32,
    1 << 63,
    u64::MAX - 2,
    u64::MAX - 1,
    u64::MAX,
];

/// A number, biased towards small and edge values.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(crate) enum Num {
    Small(u8),
    Edge(u8),
    Any(u64),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Num::Small(n) => u64::from(n),
            Num::Edge(i) => EDGES[usize::from(i) % EDGES.len()],
            Num::Any(n) => n,
        }
    }
}

/// An offset, absolute or close to the upload's `held`.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(crate) enum Pos {
    Abs(Num),
    HeldMinus(u8),
    HeldPlus(u8),
}

impl Pos {
    fn get(self, held: u64) -> u64 {
        match self {
            Pos::Abs(n) => n.get(),
            Pos::HeldMinus(d) => held.saturating_sub(u64::from(d)),
            Pos::HeldPlus(d) => held.saturating_add(u64::from(d)),
        }
    }
}

/// The `Content-Length` header.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) enum LengthHeader {
    Absent,
    /// The length the `Content-Range` announces (or, without one, the
    /// upload's known total: a whole-object PUT of the right size).
    Matching,
    Value(Num),
    Text(String),
}

/// The `Content-Range` header.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) enum RangeHeader {
    Absent,
    Bytes {
        first: Pos,
        last: Pos,
        total: Option<Pos>,
    },
    Query {
        total: Option<Pos>,
    },
    Text(String),
}

/// One request against one upload state.
#[derive(Debug, Clone, Arbitrary)]
pub(crate) struct SeedInput {
    pub held: Num,
    /// The known total, as an excess over `held` (so always `>= held`).
    pub total_over_held: Option<Num>,
    pub complete: bool,
    pub content_length: LengthHeader,
    pub content_range: RangeHeader,
}

impl SeedInput {
    pub(crate) fn state(&self) -> UploadState {
        let held = self.held.get();
        UploadState {
            held,
            total: self.total_over_held.map(|n| held.saturating_add(n.get())),
            phase: if self.complete {
                Phase::Complete
            } else {
                Phase::Active
            },
        }
    }

    /// The header texts `(Content-Range, Content-Length)`.
    pub(crate) fn headers(&self) -> (Option<String>, Option<String>) {
        let state = self.state();
        let held = state.held;
        let total = |t: Option<Pos>| t.map_or_else(|| "*".to_owned(), |t| t.get(held).to_string());
        let (range, announced) = match &self.content_range {
            RangeHeader::Absent => (None, state.total.unwrap_or(0)),
            RangeHeader::Bytes {
                first,
                last,
                total: t,
            } => {
                let (first, last) = (first.get(held), last.get(held));
                (
                    Some(format!("bytes {first}-{last}/{}", total(*t))),
                    last.wrapping_sub(first).wrapping_add(1),
                )
            }
            RangeHeader::Query { total: t } => (Some(format!("bytes */{}", total(*t))), 0),
            RangeHeader::Text(text) => (Some(text.clone()), 0),
        };
        let length = match &self.content_length {
            LengthHeader::Absent => None,
            LengthHeader::Matching => Some(announced.to_string()),
            LengthHeader::Value(n) => Some(n.get().to_string()),
            LengthHeader::Text(text) => Some(text.clone()),
        };
        (range, length)
    }
}

/// Decodes `data` the way libFuzzer's typed targets do and checks it.
pub(crate) fn seed_decide_bytes(data: &[u8]) {
    if let Ok(input) = SeedInput::arbitrary_take_rest(Unstructured::new(data)) {
        seed_decide(&input);
    }
}

/// Classifies the headers, applies the decision table and checks the
/// invariants of docs/protocol.md §1.3 on the result.
pub(crate) fn seed_decide(input: &SeedInput) {
    let state = input.state();
    let held = state.held;
    if let Some(total) = state.total {
        assert!(total >= held, "bad generator: total < held");
    }
    held_range_round_trip(held);

    let (range, length) = input.headers();
    if let Some(range) = &range {
        // Whatever text is there, a progress header that parses must be
        // one `held_range` can produce again.
        if let Ok(h) = parse_held_range(range) {
            assert!(h > 0, "parse_held_range({range:?}) == 0");
            held_range_round_trip(h);
        }
    }
    let ctx = format!("{state:?} {range:?} {length:?}");

    let request = match SeedRequest::classify(range.as_deref(), length.as_deref()) {
        Ok(request) => request,
        Err(error) => {
            assert!(matches!(error.status(), 400 | 411), "{ctx}: {error:?}");
            return;
        }
    };
    match request {
        SeedRequest::Chunk { first, last, total } => {
            assert!(range.is_some(), "{ctx}: chunk without Content-Range");
            assert!(first <= last && last != u64::MAX, "{ctx}: {request:?}");
            if let Total::Known(total) = total {
                assert!(last < total, "{ctx}: {request:?}");
            }
        }
        SeedRequest::Query { .. } => {
            assert!(range.is_some(), "{ctx}: query without Content-Range");
        }
        SeedRequest::Whole { .. } => {
            assert!(range.is_none(), "{ctx}: whole PUT with Content-Range");
        }
    }
    if let Some(length) = length.as_deref() {
        assert_eq!(
            parse_u64(length).ok(),
            Some(request.body_len()),
            "{ctx}: Content-Length vs {request:?}"
        );
    }

    let action = match decide(state, request) {
        Ok(action) => action,
        Err(error) => {
            assert!(
                state.phase == Phase::Active,
                "{ctx}: error on a final upload"
            );
            assert!(matches!(error.status(), 400 | 411), "{ctx}: {error:?}");
            return;
        }
    };
    let ctx = format!("{ctx} {request:?} -> {action:?}");
    assert_eq!(
        action == SeedAction::ReplayFinal,
        state.phase == Phase::Complete,
        "{ctx}: ReplayFinal iff complete"
    );
    match action {
        SeedAction::ReplayFinal => {}
        SeedAction::Append {
            skip,
            write,
            total,
            completes,
        } => {
            let first = match request {
                SeedRequest::Chunk { first, .. } => first,
                SeedRequest::Whole { .. } => 0,
                SeedRequest::Query { .. } => panic!("{ctx}: append without a body"),
            };
            assert_eq!(first.checked_add(skip), Some(held), "{ctx}: first + skip");
            assert_eq!(
                skip.checked_add(write),
                Some(request.body_len()),
                "{ctx}: skip + write"
            );
            assert!(write > 0, "{ctx}: empty append");
            let end = held
                .checked_add(write)
                .unwrap_or_else(|| panic!("{ctx}: held + write overflows"));
            if let Some(known) = state.total {
                assert_eq!(total, Some(known), "{ctx}: total changed");
            }
            match total {
                Some(total) => {
                    assert!(end <= total, "{ctx}: writes past the total");
                    assert_eq!(completes, end == total, "{ctx}: completes");
                }
                None => assert!(!completes, "{ctx}: completes without a total"),
            }
        }
        SeedAction::Finalize { total } => {
            assert_eq!(total, held, "{ctx}: finalize at a size other than held");
            if let Some(known) = state.total {
                assert_eq!(known, total, "{ctx}: finalize at another total");
            }
        }
        SeedAction::Report { total } => {
            if let Some(total) = total {
                assert!(total >= held, "{ctx}: reported total below held");
            }
            if let Some(known) = state.total {
                assert_eq!(total, Some(known), "{ctx}: reported total changed");
            }
        }
        SeedAction::Gap => match request {
            SeedRequest::Chunk { first, .. } => assert!(first > held, "{ctx}: not a gap"),
            _ => panic!("{ctx}: gap without a chunk"),
        },
    }
}

/// `parse_held_range(held_range(h)) == h` for `h > 0`; no header for 0.
fn held_range_round_trip(h: u64) {
    match held_range(h) {
        None => assert_eq!(h, 0, "held_range({h}) is None"),
        Some(header) => {
            assert!(h > 0, "held_range(0) is {header:?}");
            assert_eq!(parse_held_range(&header), Ok(h), "{header:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// names

/// `UploadId::parse` round-trips; an accepted `FileName` is one plain path
/// component, in NFC.
pub(crate) fn names(data: &[u8]) {
    if let Ok(bytes) = <[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
        let id = UploadId::from_bytes(bytes);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(UploadId::parse(&text), Ok(id), "{text:?}");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = UploadId::parse(text) {
        assert_eq!(id.to_string(), text, "id {text:?} is not canonical");
        assert_eq!(UploadId::parse(&id.to_string()), Ok(id));
    }
    // Also try every line on its own, so one input exercises several names.
    for name in std::iter::once(text).chain(text.lines()) {
        file_name(name);
        namespace(name);
    }
    signed_url(text);
}

fn namespace(text: &str) {
    let Ok(namespace) = Namespace::new(text) else {
        return;
    };
    assert_eq!(namespace.as_str(), text);
    assert!((1..=64).contains(&text.len()), "{text:?}: length");
    let mut components = Path::new(text).components();
    assert_eq!(
        components.next(),
        Some(Component::Normal(text.as_ref())),
        "{text:?}"
    );
    assert_eq!(components.next(), None, "{text:?}: several components");
}

/// A query string is never a valid signed URL unless signed with the key;
/// the text as a namespace, scope or name signs and verifies back.
fn signed_url(text: &str) {
    let key = SigningKey::new([0x42; 32]).expect("32 bytes");
    if let Some(Ok(grant)) = key.verify(text, 0) {
        // Only possible if the input carries a real signature: check it.
        assert_eq!(
            key.verify(&key.sign(&grant), 0),
            Some(Ok(grant)),
            "{text:?}"
        );
    }
    let scopes = [
        Scope::parse(text).ok(),
        FileName::new(text).ok().map(Scope::File),
    ];
    for scope in scopes.into_iter().flatten() {
        assert_eq!(
            Scope::parse(&scope.to_string()).as_ref(),
            Ok(&scope),
            "{text:?}"
        );
        let grant = Grant {
            namespace: Namespace::new(text).unwrap_or_default(),
            scope,
            expires: text.len() as u64,
        };
        let query = key.sign(&grant);
        assert_eq!(key.verify(&query, 0), Some(Ok(grant.clone())), "{query}");
        let other = SigningKey::new([0x43; 32]).expect("32 bytes");
        assert!(matches!(other.verify(&query, 0), Some(Err(_))), "{query}");
    }
}

fn file_name(text: &str) {
    let Ok(name) = FileName::new(text) else {
        return;
    };
    // A name is kept in NFC: the same name again, however it was spelled.
    assert_eq!(FileName::new(name.as_str()).as_ref(), Ok(&name), "{text:?}");
    assert_eq!(name.to_string(), name.as_str());
    assert!(!name.as_str().contains('\u{FFFD}'), "{text:?}: U+FFFD");
    let text = name.as_str();
    assert!((1..=255).contains(&text.len()), "{text:?}: length");
    assert!(!text.starts_with('.'), "{text:?}: leading dot");
    assert!(
        !text.contains(['/', '\\', '\0']),
        "{text:?}: separator or NUL"
    );
    assert!(!text.chars().any(char::is_control), "{text:?}: control");
    let mut components = Path::new(text).components();
    assert_eq!(
        components.next(),
        Some(Component::Normal(text.as_ref())),
        "{text:?}: not a plain component"
    );
    assert_eq!(components.next(), None, "{text:?}: several components");
    assert_eq!(Path::new(text).file_name(), Some(text.as_ref()));
}

// ---------------------------------------------------------------------------
// tus_headers

/// The tus header parsers (`Upload-Metadata`, `Upload-Checksum`,
/// `Upload-Concat`, `Upload-Defer-Length`) on the whole input and on every
/// line of it.
pub(crate) fn tus_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for value in std::iter::once(text).chain(text.lines()) {
        metadata(value);
        checksum(value);
        concat(value);
        if tus::parse_defer_length(value).is_ok() {
            assert_eq!(value.trim(), "1", "{value:?}: Upload-Defer-Length");
        }
    }
}

/// Accepted keys are plain tokens, and `format_metadata` writes a header
/// that parses back to the same map.
fn metadata(value: &str) {
    let Ok(metadata) = tus::parse_metadata(value) else {
        return;
    };
    for key in metadata.keys() {
        assert!(!key.is_empty(), "{value:?}: empty key");
        assert!(
            !key.contains(|c: char| c.is_whitespace() || c == ','),
            "{value:?}: key {key:?} contains whitespace or a comma"
        );
    }
    let formatted = tus::format_metadata(&metadata);
    assert_eq!(
        tus::parse_metadata(&formatted),
        Ok(metadata),
        "{value:?}: parse_metadata(format_metadata()) does not round-trip via {formatted:?}"
    );
}

/// An accepted digest has the algorithm's length.
fn checksum(value: &str) {
    let Ok(checksum) = tus::parse_checksum(value) else {
        return;
    };
    assert_eq!(
        checksum.digest.len(),
        checksum.algorithm.digest_len(),
        "{value:?}: digest length of {}",
        checksum.algorithm.name()
    );
}

/// `final;` lists at least one URL, none empty or containing a space.
fn concat(value: &str) {
    match tus::parse_concat(value) {
        Ok(Concat::Partial) => assert_eq!(value.trim(), "partial", "{value:?}"),
        Ok(Concat::Final(urls)) => {
            assert!(!urls.is_empty(), "{value:?}: final without URLs");
            for url in &urls {
                assert!(
                    !url.is_empty() && !url.contains(' '),
                    "{value:?}: bad URL {url:?}"
                );
            }
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------
// structured_fields

/// The largest SF Integer (RFC 9651 §3.3.1).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// The RUFH Structured Field readers on the whole input and on every line
/// of it, plus `UploadLimit::to_field` on a limit built from the first
/// bytes.
pub(crate) fn structured_fields(data: &[u8]) {
    if let Some(limit) = limit_from_bytes(data) {
        limit_to_field(limit);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for value in std::iter::once(text).chain(text.lines()) {
        let _ = rufh::parse_boolean(value);
        if let Some(n) = rufh::parse_integer(value) {
            assert!(n <= SF_INTEGER_MAX, "{value:?}: integer {n} too large");
            assert_eq!(rufh::parse_integer(&n.to_string()), Some(n), "{value:?}");
        }
        if let Some(version) = rufh::parse_interop_version(value) {
            assert!((5..=9).contains(&version), "{value:?}: version {version}");
            assert_eq!(
                rufh::parse_integer(value),
                Some(u64::from(version)),
                "{value:?}: version vs integer"
            );
        }
        if let Some(limit) = UploadLimit::parse(value) {
            limit_to_field(limit);
        }
        if repr_digest::wants(value, "md5") == Some(true) {
            assert!(value.contains("md5"), "{value:?}: md5 wanted, not named");
        }
    }
}

/// A limit from the first 33 bytes: a byte of flags (which optional members
/// are present, which values are reduced into the SF Integer range), then
/// four little-endian `u64`.
fn limit_from_bytes(data: &[u8]) -> Option<UploadLimit> {
    let (&flags, rest) = data.split_first()?;
    let words: [u8; 32] = rest.get(..32)?.try_into().ok()?;
    let value = |i: usize| {
        let word: [u8; 8] = words[i * 8..][..8].try_into().unwrap_or_default();
        let n = u64::from_le_bytes(word);
        if flags & (0x10 << i) == 0 {
            n % (SF_INTEGER_MAX + 1)
        } else {
            n
        }
    };
    let present = |i: usize| flags & (1 << i) != 0;
    Some(UploadLimit {
        max_size: present(0).then(|| value(0)),
        min_size: value(1),
        max_append_size: present(2).then(|| value(2)),
        max_age: present(3).then(|| value(3)),
    })
}

/// `to_field` always writes a field that parses: the same limit when every
/// value is an SF Integer, else the limit with its values capped.
fn limit_to_field(limit: UploadLimit) {
    let field = limit.to_field();
    let cap = |n: u64| n.min(SF_INTEGER_MAX);
    let capped = UploadLimit {
        max_size: limit.max_size.map(cap),
        min_size: cap(limit.min_size),
        max_append_size: limit.max_append_size.map(cap),
        max_age: limit.max_age.map(cap),
    };
    let reparsed = UploadLimit::parse(&field);
    assert!(
        reparsed.is_some(),
        "{limit:?}: to_field() {field:?} does not parse"
    );
    if capped == limit {
        assert_eq!(
            reparsed,
            Some(limit),
            "{limit:?}: parse(to_field()) does not round-trip via {field:?}"
        );
    } else {
        assert_eq!(reparsed, Some(capped), "{limit:?}: not capped in {field:?}");
    }
}

// ---------------------------------------------------------------------------
// range

/// Representation lengths picked by the first input byte.
const RANGE_LENS: [u64; 10] = [0, 1, 2, 10, 100, 1000, 1 << 32, u64::MAX - 1, u64::MAX, 999];

/// `Range` and the download preconditions (`tenax_protocol::range`). The
/// first byte picks the representation's length, the second how long ago
/// it completed; the rest is text whose lines are `Range`, `If-Range`,
/// `If-Match`, `If-None-Match`, `If-Modified-Since` and
/// `If-Unmodified-Since` (an empty line is an absent header).
pub(crate) fn range(data: &[u8]) {
    let [len_pick, age, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let len = RANGE_LENS[usize::from(*len_pick) % RANGE_LENS.len()];
    let modified = 1_700_000_000u64;
    let now = modified + u64::from(*age % 4);
    let mut lines = text.split('\n');
    let mut next = || lines.next().filter(|line| !line.is_empty());
    let request = Conditions {
        get: true,
        safe: true,
        range: next(),
        if_range: next(),
        if_match: next(),
        if_none_match: next(),
        if_modified_since: next(),
        if_unmodified_since: next(),
    };
    let etag = "\"0123abcd\"";
    let repr = Representation {
        len,
        etag: Some(etag),
        last_modified: Some(modified),
    };
    let ctx = format!("len {len} now {now} {request:?}");

    // The Range header on its own, whole text and line by line.
    for header in std::iter::once(text).chain(request.range) {
        range_outcome(header, len, &ctx);
    }

    let decision = ranges::decide(&request, &repr, now);
    let ctx = format!("{ctx} -> {decision:?}");
    match &decision {
        Decision::Partial(ranges) => {
            assert!(len > 0, "{ctx}: 206 of an empty representation");
            assert!(request.range.is_some(), "{ctx}: 206 without Range");
            for r in ranges {
                assert!(
                    r.first <= r.last && r.last < len,
                    "{ctx}: {r:?} out of bounds"
                );
            }
            // Without conditionals the same ranges come from the header alone.
            if request.if_range.is_none()
                && request.if_match.is_none()
                && request.if_none_match.is_none()
                && request.if_modified_since.is_none()
                && request.if_unmodified_since.is_none()
            {
                assert_eq!(
                    available_ranges(request.range, len, Some(len)),
                    RangeOutcome::Ranges(ranges.clone()),
                    "{ctx}"
                );
            }
        }
        Decision::Unsatisfiable => {
            assert!(len > 0, "{ctx}: 416 of an empty representation");
            assert_eq!(
                available_ranges(request.range, len, Some(len)),
                RangeOutcome::Unsatisfiable,
                "{ctx}"
            );
        }
        Decision::Full | Decision::NotModified | Decision::PreconditionFailed => {}
    }
    // A HEAD never gets a partial answer, and reaches the same 304/412.
    let head = Conditions {
        get: false,
        ..request
    };
    let head_decision = ranges::decide(&head, &repr, now);
    assert!(
        !matches!(
            head_decision,
            Decision::Partial(_) | Decision::Unsatisfiable
        ),
        "{ctx}: HEAD -> {head_decision:?}"
    );
    if matches!(
        decision,
        Decision::NotModified | Decision::PreconditionFailed
    ) {
        assert_eq!(head_decision, decision, "{ctx}: HEAD differs");
    }
    // Preconditions come before Range: 304 and 412 whatever the Range.
    let no_range = Conditions {
        range: None,
        if_range: None,
        ..request
    };
    let plain = ranges::decide(&no_range, &repr, now);
    match plain {
        Decision::NotModified | Decision::PreconditionFailed => {
            assert_eq!(decision, plain, "{ctx}: precondition vs Range")
        }
        _ => assert!(
            !matches!(
                decision,
                Decision::NotModified | Decision::PreconditionFailed
            ),
            "{ctx}: Range changed a precondition"
        ),
    }
    // A weak If-Range never yields a 206.
    if request.if_range.is_some_and(|v| v.trim().starts_with("W/")) {
        assert!(
            !matches!(decision, Decision::Partial(_)),
            "{ctx}: weak If-Range"
        );
    }
}

/// One `Range` header against `len` bytes: resolved ranges lie within the
/// representation, number at most `MAX_RANGES`, and formatting them as a
/// header parses back to the same ranges. The prefix of an upload in
/// progress (`available < len`) never yields a byte at or past `available`.
fn range_outcome(header: &str, len: u64, ctx: &str) {
    match available_ranges(Some(header), len, Some(len)) {
        RangeOutcome::Ranges(ranges) => {
            assert!(
                !ranges.is_empty() && ranges.len() <= MAX_RANGES,
                "{ctx}: {header:?}"
            );
            for r in &ranges {
                assert!(
                    r.first <= r.last && r.last < len,
                    "{ctx}: {header:?} -> {r:?}"
                );
            }
            let formatted = format!(
                "bytes={}",
                ranges
                    .iter()
                    .map(|r| format!("{}-{}", r.first, r.last))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert_eq!(
                available_ranges(Some(&formatted), len, Some(len)),
                RangeOutcome::Ranges(ranges),
                "{ctx}: {header:?} does not round-trip via {formatted:?}"
            );
        }
        RangeOutcome::Ignored(error) => assert!(error.is_some(), "{ctx}: {header:?}"),
        RangeOutcome::Abusive | RangeOutcome::Unsatisfiable => {}
    }
    let available = len / 2;
    for total in [Some(len), None] {
        if let RangeOutcome::Ranges(ranges) = available_ranges(Some(header), available, total) {
            for r in &ranges {
                assert!(
                    r.first <= r.last && r.last < available,
                    "{ctx}: {header:?} past the {available} bytes available -> {r:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// forwarded

/// The forwarding-header parsers (`Forwarded`, hosts, prefixes, and the
/// origin built from all four headers) on the whole input and on every line
/// of it.
pub(crate) fn forwarded(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    for value in std::iter::once(text).chain(lines.iter().copied()) {
        forwarded_elements(value);
        forwarded_host(value);
        forwarded_prefix(value);
    }
    // The first four lines as Forwarded, X-Forwarded-Proto, -Host, -Prefix.
    let header = |index: usize| lines.get(index).copied().filter(|line| !line.is_empty());
    if let Ok(origin) = forwarded::public_origin(header(0), header(1), header(2), header(3)) {
        if let Some(host) = &origin.host {
            assert_eq!(forwarded::parse_host(host).as_ref(), Ok(host), "{text:?}");
        }
        if let Some(prefix) = &origin.prefix {
            assert_eq!(
                forwarded::parse_prefix(prefix).as_ref(),
                Ok(prefix),
                "{text:?}"
            );
        }
    }
}

/// Accepted elements print back to the same elements. (An element of
/// unknown parameters only is kept, empty, so that "the last element" stays
/// the last proxy's; it has nothing to print.)
fn forwarded_elements(value: &str) {
    let Ok(mut elements) = forwarded::parse_forwarded(value) else {
        return;
    };
    elements.retain(|element| *element != ForwardedElement::default());
    let printed = elements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        forwarded::parse_forwarded(&printed),
        Ok(elements),
        "{value:?}: does not round-trip via {printed:?}"
    );
}

/// An accepted host is lowercase `name[:port]` or `[v6][:port]` of safe
/// characters, and a fixed point.
fn forwarded_host(value: &str) {
    let Ok(host) = forwarded::parse_host(value) else {
        return;
    };
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._:[]".contains(&b)),
        "{value:?}: host {host:?}"
    );
    assert_eq!(
        forwarded::parse_host(&host).as_ref(),
        Ok(&host),
        "{value:?}"
    );
}

/// An accepted prefix is empty or an absolute path without a trailing `/`,
/// query, fragment or dot segment, and a fixed point.
fn forwarded_prefix(value: &str) {
    let Ok(prefix) = forwarded::parse_prefix(value) else {
        return;
    };
    if !prefix.is_empty() {
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "{value:?}"
        );
        assert!(!prefix.contains(['?', '#', ' ', '"', '\\']), "{value:?}");
        assert!(
            prefix
                .split('/')
                .skip(1)
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{value:?}"
        );
    }
    assert_eq!(
        forwarded::parse_prefix(&prefix).as_ref(),
        Ok(&prefix),
        "{value:?}"
    );
}
