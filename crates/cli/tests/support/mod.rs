//! Helpers shared by the integration tests of `tenax`, by concern:
//!
//! - [`http`]: whole responses from reqwest or a raw socket, problem+json
//!   checks, raw HTTP/1.1 exchanges;
//! - [`downloads`]: files put with the literal seed form, `tenax download`
//!   runs (whole or killed), the client library's `Downloader`;
//! - [`files`]: random source files, byte-for-byte comparisons, the server's
//!   data directory;
//! - [`process`]: `tenax upload` runs with deadlines, killed runs, peer
//!   clients' processes;
//! - [`uploads`]: the client library's `Uploader`, set up for tests;
//! - [`peers`]: the Python and Node peers that `scripts/test` installs.
//!
//! Every test binary compiles this module on its own (`mod support;`) and
//! uses only part of it, so the rest would warn as dead code.
#![allow(dead_code)]

pub(crate) mod downloads;
pub(crate) mod files;
pub(crate) mod http;
pub(crate) mod peers;
pub(crate) mod process;
pub(crate) mod uploads;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Md5;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tenax_testkit::Rng;

/// The server binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tenax");

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;

/// Deterministic test data.
pub(crate) fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// An upload's content generated on demand from a seed, in blocks of
/// `block` bytes seeded independently, so that any range can be produced
/// without holding the whole file in memory (the torture tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededBytes {
    pub(crate) seed: u64,
    pub(crate) size: u64,
    pub(crate) block: u64,
}

impl SeededBytes {
    /// Bytes `start..end`.
    pub(crate) fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        assert!(start <= end && end <= self.size, "range {start}..{end}");
        let block_len = self.block;
        let mut out = Vec::with_capacity(usize::try_from(end - start).expect("fits"));
        let mut block = start / block_len;
        let mut buffer = vec![0u8; usize::try_from(block_len).expect("fits")];
        while block * block_len < end {
            let base = block * block_len;
            Rng::new(self.seed ^ (block + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).fill(&mut buffer);
            let from = (start.max(base) - base) as usize;
            let to = (end.min(base + block_len) - base) as usize;
            out.extend_from_slice(&buffer[from..to]);
            block += 1;
        }
        out
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The seed dialect's final object JSON for `data` published as `name`:
/// `name`, `size` (a string), `sha256`, `md5Hash` and `crc32c` (base64, CRC
/// big-endian).
pub(crate) fn assert_object_json(json: &Value, name: &str, data: &[u8]) {
    assert_eq!(json["name"], name, "{json}");
    assert_eq!(
        json["size"],
        Value::String(data.len().to_string()),
        "{json}"
    );
    assert_eq!(json["sha256"], sha256_hex(data), "{json}");
    assert_eq!(json["md5Hash"], BASE64.encode(Md5::digest(data)), "{json}");
    assert_eq!(
        json["crc32c"],
        BASE64.encode(crc32c::crc32c(data).to_be_bytes()),
        "{json}"
    );
}

/// Three MiB of random bytes and a random tail of 1 to `tail_bound - 1`
/// bytes, so that the last chunk of an upload is short.
pub(crate) fn odd_sized_data(rng: &mut Rng, tail_bound: u64) -> Vec<u8> {
    let len = 3 * MIB + rng.between(1, tail_bound - 1);
    random_bytes(rng, len as usize)
}
