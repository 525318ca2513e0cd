//! Fuzz target `forwarded`: see `fuzz/checks.rs` for the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::forwarded(data));
