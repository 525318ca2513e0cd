//! Fuzz target `engine_model`: random op sequences against the upload
//! engine and a plain model, which must never disagree; see `fuzz/model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../model.rs"]
mod model;

fuzz_target!(|data: &[u8]| model::run_bytes(data));
