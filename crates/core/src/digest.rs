//! Content digests computed while bytes are written.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use md5::Md5;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Which optional digests to compute, beside SHA-256 and CRC32C, which are
/// always computed. An optional digest is computed for an upload only when
/// both the engine ([`EngineConfig`](crate::EngineConfig)) and the upload
/// ([`NewUpload`](crate::NewUpload)) ask for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DigestSet {
    /// MD5, base64 in [`FinalInfo::md5`](crate::FinalInfo::md5). The slowest
    /// digest by far (~0.7 GB/s on one core): it caps a single upload's speed.
    pub md5: bool,
}

impl DigestSet {
    /// No optional digest.
    pub const NONE: DigestSet = DigestSet { md5: false };
    /// MD5 only.
    pub const MD5: DigestSet = DigestSet { md5: true };

    /// The digests asked for by both sets.
    pub fn intersection(self, other: DigestSet) -> DigestSet {
        DigestSet {
            md5: self.md5 && other.md5,
        }
    }
}

/// Running SHA-256, CRC32C and the optional digests of a [`DigestSet`] over
/// an upload's prefix `0..upto`.
#[derive(Debug, Clone, Default)]
pub struct Digests {
    sha256: Sha256,
    md5: Option<Md5>,
    crc32c: u32,
    upto: u64,
}

/// Finished digests in the encodings the final response uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestValues {
    pub(crate) sha256: String,
    pub(crate) md5: Option<String>,
    pub(crate) crc32c: String,
}

impl Digests {
    /// Empty digests, computing the optional ones in `set`.
    pub fn new(set: DigestSet) -> Self {
        Digests {
            md5: set.md5.then(Md5::default),
            ..Digests::default()
        }
    }

    /// How many leading bytes of the upload these digests cover.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// Feeds the next bytes of the upload.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
        self.upto += bytes.len() as u64;
    }

    /// Feeds a batch of chunks on blocking threads: SHA-256 on one, MD5 (if
    /// computed) and CRC32C on another at once. Each hash is strictly
    /// sequential, and together they cost more than the disk write. Without
    /// MD5, CRC32C (~16 GB/s) rides along with SHA-256: a second thread to
    /// wake would cost more than it saves.
    pub(crate) async fn update_concurrently(
        mut self,
        batch: Vec<Bytes>,
    ) -> Result<Digests, tokio::task::JoinError> {
        let Some(mut md5) = self.md5.take() else {
            return on_a_core(move || {
                batch.iter().for_each(|chunk| self.update(chunk));
                self
            })
            .await;
        };
        let Digests {
            mut sha256,
            mut crc32c,
            upto,
            ..
        } = self;
        let len: u64 = batch.iter().map(|chunk| chunk.len() as u64).sum();
        let for_rest = batch.clone();
        let sha = on_a_core(move || {
            batch.iter().for_each(|chunk| sha256.update(chunk));
            sha256
        });
        let rest = on_a_core(move || {
            for chunk in &for_rest {
                md5.update(chunk);
                crc32c = crc32c::crc32c_append(crc32c, chunk);
            }
            (md5, crc32c)
        });
        let (sha256, (md5, crc32c)) = (sha.await?, rest.await?);
        Ok(Digests {
            sha256,
            md5: Some(md5),
            crc32c,
            upto: upto + len,
        })
    }

    pub(crate) fn finish(self) -> DigestValues {
        DigestValues {
            sha256: hex(&self.sha256.finalize()),
            md5: self.md5.map(|md5| STANDARD.encode(md5.finalize())),
            crc32c: STANDARD.encode(self.crc32c.to_be_bytes()),
        }
    }
}

/// Hashing jobs running at once, at most: one per core. More would not
/// hash faster, and every runnable hashing thread takes its share of the
/// CPU from the async threads that answer requests: with 1,000 uploads at
/// once (`bench/load`), up to 32 ran, and status queries' p99 was 68-613 ms
/// where it is 3-5 ms with this limit.
static CORES: std::sync::LazyLock<Arc<Semaphore>> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    Arc::new(Semaphore::new(cores.max(2)))
});

/// Runs CPU-bound work on a blocking thread once a core is free for it.
async fn on_a_core<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    // The semaphore is never closed: no permit only if it were.
    let permit = Arc::clone(&CORES).acquire_owned().await.ok();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_values_and_split_invariance() {
        let data = b"The quick brown fox jumps over the lazy dog";
        let halves = [
            Bytes::from_static(&data[..7]),
            Bytes::from_static(&data[7..]),
        ];
        let mut without_md5 = Digests::new(DigestSet::NONE);
        without_md5.update(data);
        let split = Digests::new(DigestSet::NONE)
            .update_concurrently(halves.to_vec())
            .await
            .expect("hashing thread");
        assert_eq!(split.upto(), data.len() as u64);
        let (without_md5, split) = (without_md5.finish(), split.finish());
        assert_eq!(without_md5, split);
        assert_eq!(split.md5, None);
        let mut whole = Digests::new(DigestSet::MD5);
        whole.update(data);
        let split = Digests::new(DigestSet::MD5)
            .update_concurrently(halves.to_vec())
            .await
            .expect("hashing threads");
        assert_eq!(split.upto(), data.len() as u64);
        let (whole, split) = (whole.finish(), split.finish());
        assert_eq!(whole, split);
        assert_eq!(
            (&whole.sha256, &whole.crc32c),
            (&without_md5.sha256, &without_md5.crc32c)
        );
        assert_eq!(
            whole.sha256,
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
        assert_eq!(whole.md5.as_deref(), Some("nhB9nTcrtoJr2B01QqQZ1g=="));
        assert_eq!(Digests::new(DigestSet::NONE).finish().md5, None);
        // CRC32C of the empty input is 0, written as four zero bytes.
        assert_eq!(Digests::default().finish().crc32c, "AAAAAA==");
    }
}
