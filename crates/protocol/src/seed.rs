//! The seed dialect (Google's "308 Resume Incomplete", docs/protocol.md §1).
//!
//! [`decide`] is the decision table of §1.3 as a pure function of the
//! request's framing and the upload's state. The server's adapter reads the
//! headers into a [`SeedRequest`], asks [`decide`], performs the returned
//! [`SeedAction`] against the upload core and answers.

use thiserror::Error;

use crate::content_range::{ContentRange, Total};
use crate::number::{NumberError, parse_u64};

/// What the upload looks like when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadState {
    /// Bytes held durably (the `H` of §1.3): always the contiguous prefix.
    pub held: u64,
    /// The total size if known (`T₀`).
    pub total: Option<u64>,
    /// Whether the upload is still accepting bytes.
    pub phase: Phase,
}

/// Lifecycle of an upload as far as the seed table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting bytes.
    Active,
    /// Finalised: every request replays the final response.
    Complete,
}

/// A seed request, classified by [`SeedRequest::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedRequest {
    /// A body carrying bytes `first..=last`.
    Chunk {
        /// First offset in the body.
        first: u64,
        /// Last offset in the body (inclusive).
        last: u64,
        /// Declared total.
        total: Total,
    },
    /// An empty request with `Content-Range: bytes */TOTAL`.
    Query {
        /// Declared total.
        total: Total,
    },
    /// A `PUT` without `Content-Range`: the whole object in one body.
    Whole {
        /// Its length, from `Content-Length`.
        len: u64,
    },
}

/// Why a seed request was refused. All are client errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SeedError {
    /// `Content-Range` is malformed.
    #[error(transparent)]
    ContentRange(#[from] crate::content_range::ContentRangeError),
    /// `Content-Length` is malformed.
    #[error("Content-Length is invalid: {0}")]
    ContentLength(NumberError),
    /// `Content-Length` differs from the size the `Content-Range` announces.
    #[error(
        "Content-Length {content_length} does not match the {announced} bytes Content-Range announces"
    )]
    LengthMismatch {
        /// The `Content-Length` sent.
        content_length: u64,
        /// `LAST - FIRST + 1`.
        announced: u64,
    },
    /// A `bytes */…` request carried a body.
    #[error("a Content-Range of \"bytes */…\" must come with an empty body")]
    QueryWithBody,
    /// A whole-object `PUT` needs `Content-Length`.
    #[error("a PUT without Content-Range must carry Content-Length")]
    LengthRequired,
    /// A whole-object `PUT` arrived after bytes were already stored.
    #[error("a PUT without Content-Range is only allowed before any byte is stored")]
    WholeAfterStart,
    /// The declared total differs from the one declared before.
    #[error("the total size {declared} differs from the {known} declared earlier")]
    TotalChanged {
        /// The total in this request.
        declared: u64,
        /// The total the upload already has.
        known: u64,
    },
    /// The declared total is smaller than what is already stored.
    #[error("the total size {declared} is smaller than the {held} bytes already stored")]
    TotalBelowHeld {
        /// The total in this request.
        declared: u64,
        /// Bytes held.
        held: u64,
    },
    /// The chunk runs past the known total.
    #[error("the chunk ends at byte {last}, past the total size {total}")]
    PastTotal {
        /// The chunk's last offset.
        last: u64,
        /// The upload's total.
        total: u64,
    },
}

impl SeedError {
    /// The HTTP status code docs/protocol.md §1 gives this error.
    pub fn status(&self) -> u16 {
        match self {
            SeedError::LengthRequired => 411,
            _ => 400,
        }
    }
}

impl SeedRequest {
    /// Classifies a request from its `Content-Range` and `Content-Length`.
    ///
    /// A missing `Content-Length` (a chunked or HTTP/2 body) is allowed for
    /// chunks and queries; the server then holds the body to the announced
    /// size while reading it.
    pub fn classify(
        content_range: Option<&str>,
        content_length: Option<&str>,
    ) -> Result<Self, SeedError> {
        let content_length = content_length
            .map(parse_u64)
            .transpose()
            .map_err(SeedError::ContentLength)?;
        let Some(content_range) = content_range else {
            let len = content_length.ok_or(SeedError::LengthRequired)?;
            return Ok(SeedRequest::Whole { len });
        };
        match ContentRange::parse(content_range)? {
            ContentRange::Query { total } => match content_length {
                Some(0) | None => Ok(SeedRequest::Query { total }),
                Some(_) => Err(SeedError::QueryWithBody),
            },
            range @ ContentRange::Bytes { first, last, total } => {
                let announced = range.body_len();
                match content_length {
                    Some(content_length) if content_length != announced => {
                        Err(SeedError::LengthMismatch {
                            content_length,
                            announced,
                        })
                    }
                    _ => Ok(SeedRequest::Chunk { first, last, total }),
                }
            }
        }
    }

    /// The smallest upload size this request implies: its declared total,
    /// or else the end of its chunk (for checks against a size limit).
    pub fn implied_size(&self) -> u64 {
        match *self {
            SeedRequest::Chunk { last, total, .. } => total.known().unwrap_or(last + 1),
            SeedRequest::Query { total } => total.known().unwrap_or(0),
            SeedRequest::Whole { len } => len,
        }
    }

    /// How many body bytes the request announces.
    pub fn body_len(&self) -> u64 {
        match *self {
            SeedRequest::Chunk { first, last, .. } => last - first + 1,
            SeedRequest::Query { .. } => 0,
            SeedRequest::Whole { len } => len,
        }
    }
}

/// What the upload core has to do for a request (docs/protocol.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedAction {
    /// The upload is final: answer 200 with the stored final response.
    /// Any body is drained and ignored.
    ReplayFinal,
    /// Answer with the progress (308), after recording `total` as the
    /// upload's total if it was not known. Any body is drained and ignored
    /// (a resend of bytes already held, rule 7).
    Report {
        /// The total to record, if this request declared one.
        total: Option<u64>,
    },
    /// Every byte is there: finalise the upload at `total` and answer 200.
    Finalize {
        /// The final size.
        total: u64,
    },
    /// The chunk starts past what is held: change nothing, answer 416.
    Gap,
    /// Skip the first `skip` bytes of the body, append the next `write`
    /// bytes at offset `held`, then finalise if `completes`.
    Append {
        /// Body bytes already held, to drain without writing.
        skip: u64,
        /// Body bytes to append.
        write: u64,
        /// The total to record, if known after this request.
        total: Option<u64>,
        /// Whether the upload is complete once the bytes are appended.
        completes: bool,
    },
}

/// Applies the decision table of docs/protocol.md §1.3 (rules 2 to 9; rule 1,
/// unknown or cancelled uploads, is the lookup's business).
pub fn decide(state: UploadState, request: SeedRequest) -> Result<SeedAction, SeedError> {
    if state.phase == Phase::Complete {
        return Ok(SeedAction::ReplayFinal);
    }
    let held = state.held;
    let (first, last, total) = match request {
        SeedRequest::Whole { len } => {
            if held > 0 {
                return Err(SeedError::WholeAfterStart);
            }
            let total = check_total(state, Total::Known(len))?;
            if len == 0 {
                return Ok(SeedAction::Finalize { total: 0 });
            }
            (0, len - 1, total)
        }
        SeedRequest::Query { total } => {
            return Ok(match check_total(state, total)? {
                Some(total) if total == held => SeedAction::Finalize { total },
                total => SeedAction::Report { total },
            });
        }
        SeedRequest::Chunk { first, last, total } => (first, last, check_total(state, total)?),
    };
    if let Some(total) = total
        && last >= total
    {
        return Err(SeedError::PastTotal { last, total });
    }
    if first > held {
        return Ok(SeedAction::Gap);
    }
    if last < held {
        return Ok(SeedAction::Report { total });
    }
    // A ≤ H ≤ B: append the unseen tail. `last + 1` cannot overflow (the
    // parser rejects `u64::MAX`).
    let end = last + 1;
    Ok(SeedAction::Append {
        skip: held - first,
        write: end - held,
        total,
        completes: total == Some(end),
    })
}

/// Rule 3: a declared total must agree with the known one and cover `held`.
/// Returns the total that holds after this request.
fn check_total(state: UploadState, declared: Total) -> Result<Option<u64>, SeedError> {
    let Total::Known(declared) = declared else {
        return Ok(state.total);
    };
    if let Some(known) = state.total
        && known != declared
    {
        return Err(SeedError::TotalChanged { declared, known });
    }
    if declared < state.held {
        return Err(SeedError::TotalBelowHeld {
            declared,
            held: state.held,
        });
    }
    Ok(Some(declared))
}

/// The `Range` header of a 308 answer: `bytes=0-LAST` for what is held, or
/// `None` when nothing is held (§1.1: no `Range` header at all then).
pub fn held_range(held: u64) -> Option<String> {
    held.checked_sub(1).map(|last| format!("bytes=0-{last}"))
}

/// Why a 308's `Range` header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a progress Range must be \"bytes=0-LAST\"")]
pub struct HeldRangeError;

/// Reads the `Range` header of a 308 answer back into the number of bytes
/// held (the client side of [`held_range`]).
pub fn parse_held_range(value: &str) -> Result<u64, HeldRangeError> {
    let last = value.strip_prefix("bytes=0-").ok_or(HeldRangeError)?;
    parse_u64(last)
        .ok()
        .and_then(|last| last.checked_add(1))
        .ok_or(HeldRangeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn active(held: u64, total: Option<u64>) -> UploadState {
        UploadState {
            held,
            total,
            phase: Phase::Active,
        }
    }

    fn chunk(first: u64, last: u64, total: Total) -> SeedRequest {
        SeedRequest::Chunk { first, last, total }
    }

    #[test]
    fn classify_checks_framing() {
        use SeedError::*;
        assert_eq!(
            SeedRequest::classify(Some("bytes 0-9/10"), Some("5")),
            Err(LengthMismatch {
                content_length: 5,
                announced: 10
            })
        );
        assert_eq!(
            SeedRequest::classify(Some("bytes */*"), Some("3")),
            Err(QueryWithBody)
        );
        assert_eq!(SeedRequest::classify(None, None), Err(LengthRequired));
        assert_eq!(
            SeedRequest::classify(None, Some("-1")),
            Err(ContentLength(NumberError::NotDigits))
        );
        assert_eq!(
            SeedRequest::classify(None, Some("7")),
            Ok(SeedRequest::Whole { len: 7 })
        );
        assert_eq!(
            SeedRequest::classify(Some("bytes 0-9/10"), None),
            Ok(chunk(0, 9, Total::Known(10)))
        );
    }

    #[test]
    fn the_decision_table() {
        use SeedAction::*;
        use Total::*;
        let complete = UploadState {
            held: 10,
            total: Some(10),
            phase: Phase::Complete,
        };
        let cases: Vec<(UploadState, SeedRequest, Result<SeedAction, SeedError>)> = vec![
            // Rule 2: final uploads replay, whatever comes.
            (complete, chunk(0, 9, Known(99)), Ok(ReplayFinal)),
            // Rule 3: total changes or shrinks below what is held.
            (
                active(0, Some(1000)),
                chunk(0, 9, Known(2000)),
                Err(SeedError::TotalChanged {
                    declared: 2000,
                    known: 1000,
                }),
            ),
            (
                active(10, None),
                SeedRequest::Query { total: Known(5) },
                Err(SeedError::TotalBelowHeld {
                    declared: 5,
                    held: 10,
                }),
            ),
            // Rule 4: queries.
            (
                active(0, None),
                SeedRequest::Query { total: Unknown },
                Ok(Report { total: None }),
            ),
            (
                active(5, None),
                SeedRequest::Query { total: Known(5) },
                Ok(Finalize { total: 5 }),
            ),
            (
                active(0, None),
                SeedRequest::Query { total: Known(0) },
                Ok(Finalize { total: 0 }),
            ),
            (
                active(5, None),
                SeedRequest::Query { total: Known(9) },
                Ok(Report { total: Some(9) }),
            ),
            // Rule 5: past the declared size.
            (
                active(0, Some(10)),
                chunk(5, 10, Unknown),
                Err(SeedError::PastTotal {
                    last: 10,
                    total: 10,
                }),
            ),
            // Rule 6: gap.
            (active(5, None), chunk(6, 9, Unknown), Ok(Gap)),
            // Rule 7: resend of held bytes.
            (
                active(10, Some(20)),
                chunk(0, 9, Known(20)),
                Ok(Report { total: Some(20) }),
            ),
            // Rule 8: overlap and plain append.
            (
                active(10, Some(20)),
                chunk(5, 14, Known(20)),
                Ok(Append {
                    skip: 5,
                    write: 5,
                    total: Some(20),
                    completes: false,
                }),
            ),
            (
                active(0, None),
                chunk(0, 9, Unknown),
                Ok(Append {
                    skip: 0,
                    write: 10,
                    total: None,
                    completes: false,
                }),
            ),
            // Rule 9: the last chunk completes, also with `/*` once T₀ is known.
            (
                active(10, Some(20)),
                chunk(10, 19, Unknown),
                Ok(Append {
                    skip: 0,
                    write: 10,
                    total: Some(20),
                    completes: true,
                }),
            ),
            (
                active(10, None),
                chunk(10, 19, Known(20)),
                Ok(Append {
                    skip: 0,
                    write: 10,
                    total: Some(20),
                    completes: true,
                }),
            ),
            // Whole-object PUTs.
            (
                active(0, None),
                SeedRequest::Whole { len: 0 },
                Ok(Finalize { total: 0 }),
            ),
            (
                active(0, None),
                SeedRequest::Whole { len: 4 },
                Ok(Append {
                    skip: 0,
                    write: 4,
                    total: Some(4),
                    completes: true,
                }),
            ),
            (
                active(1, None),
                SeedRequest::Whole { len: 4 },
                Err(SeedError::WholeAfterStart),
            ),
        ];
        for (state, request, expected) in cases {
            assert_eq!(decide(state, request), expected, "{state:?} {request:?}");
        }
    }

    #[test]
    fn held_range_matches_googles_regex() {
        assert_eq!(held_range(0), None);
        assert_eq!(held_range(262_144).as_deref(), Some("bytes=0-262143"));
        assert_eq!(parse_held_range("bytes=0-262143"), Ok(262_144));
        for bad in [
            "bytes 0-1",
            "bytes=1-2",
            "bytes=0-",
            "bytes=0-18446744073709551615",
        ] {
            assert_eq!(parse_held_range(bad), Err(HeldRangeError), "{bad}");
        }
    }

    /// Uploads of up to `max` bytes.
    fn state(max: u64) -> impl Strategy<Value = UploadState> {
        (0..max, proptest::option::of(0..max)).prop_map(|(held, total)| {
            let total = total.map(|t| t.max(held));
            active(held, total)
        })
    }

    /// Requests around an upload of up to `max` bytes.
    fn request(max: u64) -> impl Strategy<Value = SeedRequest> {
        let total = prop_oneof![
            Just(Total::Unknown),
            (0..max + max / 5).prop_map(Total::Known)
        ];
        prop_oneof![
            (0..max + max / 10, 0..max / 5 + 2, total.clone())
                .prop_map(|(first, len, total)| chunk(first, first + len, total)),
            total.prop_map(|total| SeedRequest::Query { total }),
            (0..max + max / 10).prop_map(|len| SeedRequest::Whole { len }),
        ]
    }

    proptest! {
        /// Whatever the table says, the offset never moves backwards, never
        /// runs past the total, and a gap or error changes nothing: neither
        /// carries a write, and each is raised only for the conflict it names.
        #[test]
        fn offsets_only_grow_within_the_total(
            (state, request) in prop_oneof![
                (state(1000), request(1000)),
                // Small numbers, so that every boundary (A = H, B = T - 1, …) is hit.
                (state(8), request(8)),
            ]
        ) {
            match decide(state, request) {
                Ok(SeedAction::Append { skip, write, total, completes }) => {
                    let first = match request {
                        SeedRequest::Chunk { first, .. } => first,
                        SeedRequest::Whole { .. } => 0,
                        SeedRequest::Query { .. } => return Err(TestCaseError::fail("append without a body")),
                    };
                    prop_assert_eq!(first + skip, state.held);
                    prop_assert_eq!(skip + write, request.body_len());
                    prop_assert!(write > 0);
                    let end = state.held + write;
                    if let Some(total) = total {
                        prop_assert!(end <= total);
                        prop_assert_eq!(completes, end == total);
                    }
                    if let Some(known) = state.total {
                        prop_assert_eq!(total, Some(known));
                    }
                }
                Ok(SeedAction::Finalize { total }) => prop_assert_eq!(total, state.held),
                Ok(SeedAction::Report { total: Some(total) }) => prop_assert!(total >= state.held),
                // Reporting without a total leaves the upload's unknown one alone.
                Ok(SeedAction::Report { total: None }) => prop_assert_eq!(state.total, None),
                Ok(SeedAction::ReplayFinal) => {
                    return Err(TestCaseError::fail("an active upload replayed a final answer"));
                }
                // A gap writes nothing and is only ever a chunk starting past
                // the held bytes that would otherwise fit the total.
                Ok(SeedAction::Gap) => {
                    let SeedRequest::Chunk { first, last, .. } = request else {
                        return Err(TestCaseError::fail("a gap without a chunk"));
                    };
                    prop_assert!(first > state.held);
                    if let Some(known) = state.total {
                        prop_assert!(last < known);
                    }
                }
                // An error writes nothing, and each names a real conflict.
                Err(error) => match error {
                    SeedError::TotalChanged { declared, known } => {
                        prop_assert_eq!(state.total, Some(known));
                        prop_assert_ne!(declared, known);
                    }
                    SeedError::TotalBelowHeld { declared, held } => {
                        prop_assert_eq!(held, state.held);
                        prop_assert!(declared < held);
                    }
                    SeedError::PastTotal { last, total } => prop_assert!(last >= total),
                    SeedError::WholeAfterStart => {
                        let whole = matches!(request, SeedRequest::Whole { .. });
                        prop_assert!(whole && state.held > 0);
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "decide raised a framing error: {other}"
                        )));
                    }
                },
            }
        }
    }
}
