//! Test support for tenax's end-to-end tests.
//!
//! * [`TestServer`]: the real `tenax serve` binary on `127.0.0.1:0`, with a
//!   temporary data directory, that can be killed with SIGKILL and restarted.
//! * [`FaultProxy`]: a TCP proxy on loopback that cuts connections after a
//!   random number of client (or server, see [`Cut`]) bytes, to model a
//!   flapping link.
//! * [`WeakLink`]: a TCP proxy that models a weak link: a rate per
//!   direction, a one-way delay, and a seeded [`Schedule`] of outages that
//!   reset connections or silence them ([`Outage`]).
//! * [`Balancer`]: a round-robin HTTP/1.1 reverse proxy in front of several
//!   nodes, per request, with per-node counters.
//! * [`ForgetfulFs`]: a FUSE file system that forgets, at a simulated power
//!   cut, what was not synced (module [`forgetful`]).
//! * [`s3_url`] and [`database_url`]: a fresh bucket prefix and a fresh
//!   PostgreSQL database on the servers `scripts/test` starts.

mod balancer;
pub mod forgetful;
mod link;
mod pg;
mod proxy;
mod s3;
mod server;

pub use balancer::Balancer;
pub use forgetful::{ForgetfulFs, Forgotten, Loss};
pub use link::{LinkConfig, LinkStats, Outage, Schedule, WeakLink};
pub use pg::{DedicatedPg, REQUIRED_VAR as PG_REQUIRED_VAR, URL_VAR as PG_URL_VAR, database_url};
pub use proxy::{Cut, Fault, FaultProxy, ProxyStats};
pub use s3::{REQUIRED_VAR as S3_REQUIRED_VAR, URL_VAR as S3_URL_VAR, s3_url};
pub use server::TestServer;

/// A small deterministic random generator (xorshift64*), so that a failing
/// run can be replayed from the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a fixed seed (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A generator seeded from `TENAX_TEST_SEED` if set, else from the OS.
    /// The seed is printed so a failure can be replayed.
    pub fn from_env_or_os() -> Self {
        let seed = std::env::var("TENAX_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).expect("the OS has no random source");
                u64::from_le_bytes(bytes)
            });
        eprintln!("test seed: TENAX_TEST_SEED={seed}");
        Rng::new(seed)
    }

    /// The next random 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// Fills `buffer` with random bytes.
    pub fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let value = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
        }
    }
}
