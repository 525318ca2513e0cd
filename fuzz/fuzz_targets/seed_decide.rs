//! Fuzz target `seed_decide`: an upload state and a header pair, built with
//! `arbitrary` (`checks::SeedInput`), through `SeedRequest::classify` and
//! `seed::decide`; see `fuzz/checks.rs` for the invariants.
//!
//! It takes raw bytes and decodes them itself (as libFuzzer's typed targets
//! do, with `arbitrary_take_rest`) so that the corpus replay test runs the
//! very same function.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::seed_decide_bytes(data));
