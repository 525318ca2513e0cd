//! SHA-256 of the local file, computed while its bytes are read for upload.
//!
//! Chunks may be re-sent and a resumed upload may start past what was read
//! so far, so the digest is fed positionally: a block only contributes the
//! part that extends the hashed prefix, and a gap is filled by reading the
//! local file ([`catch_up`]).

use std::io::SeekFrom;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A SHA-256 over the prefix `0..upto` of the file.
#[derive(Debug, Default)]
pub(crate) struct HashCursor {
    hasher: Sha256,
    upto: u64,
}

impl HashCursor {
    /// How many leading bytes are hashed.
    pub(crate) fn upto(&self) -> u64 {
        self.upto
    }

    /// Offers `data`, read from offset `pos`. Only the part extending the
    /// hashed prefix is used; data starting past the prefix is ignored.
    pub(crate) fn feed(&mut self, pos: u64, data: &[u8]) {
        let len = data.len() as u64;
        let Some(end) = pos.checked_add(len) else {
            return;
        };
        if pos > self.upto || end <= self.upto {
            return;
        }
        // `self.upto - pos < len <= usize::MAX`.
        let skip = usize::try_from(self.upto - pos).unwrap_or(data.len());
        self.hasher.update(&data[skip..]);
        self.upto = end;
    }

    /// Finishes the digest as lowercase hex.
    pub(crate) fn finish(&mut self) -> String {
        hex(&std::mem::take(&mut self.hasher).finalize())
    }
}

/// Reads and hashes `[cursor.upto(), to)` from `file`, 256 KiB at a time.
pub(crate) async fn catch_up(
    cursor: &Mutex<HashCursor>,
    file: &mut tokio::fs::File,
    to: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let upto = lock(cursor).upto();
        if upto >= to {
            return Ok(());
        }
        let want = usize::try_from(to - upto).map_or(buf.len(), |n| n.min(buf.len()));
        file.seek(SeekFrom::Start(upto)).await?;
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        lock(cursor).feed(upto, &buf[..n]);
    }
}

/// Locks the cursor, ignoring poisoning (a panicking feeder leaves a
/// consistent cursor: `update` and `upto` change together).
pub(crate) fn lock(cursor: &Mutex<HashCursor>) -> std::sync::MutexGuard<'_, HashCursor> {
    cursor
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `data` as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn data() -> Vec<u8> {
        (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn overlapping_and_repeated_blocks_hash_once() {
        let data = data();
        let mut c = HashCursor::default();
        c.feed(0, &data[..100]);
        c.feed(0, &data[..100]); // resend
        c.feed(50, &data[50..300]); // overlap
        c.feed(500, &data[500..600]); // past the prefix: ignored
        assert_eq!(c.upto(), 300);
        c.feed(300, &data[300..]);
        assert_eq!(c.finish(), sha256_hex(&data));
    }

    #[tokio::test]
    async fn gaps_are_read_from_the_file() {
        let data = data();
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(&data).expect("write");
        let mut file = tokio::fs::File::open(tmp.path()).await.expect("open");
        let cursor = Mutex::new(HashCursor::default());
        lock(&cursor).feed(0, &data[..10]);
        // A resume at 700 000: hash the gap first, then the stream goes on.
        catch_up(&cursor, &mut file, 700_000)
            .await
            .expect("catch up");
        assert_eq!(lock(&cursor).upto(), 700_000);
        lock(&cursor).feed(700_000, &data[700_000..]);
        assert_eq!(lock(&cursor).finish(), sha256_hex(&data));
        // Catching up past the end of the file is an error.
        let cursor = Mutex::new(HashCursor::default());
        let err = catch_up(&cursor, &mut file, 2_000_000)
            .await
            .expect_err("eof");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn empty_digest() {
        assert_eq!(
            HashCursor::default().finish(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
