//! Source files, byte-for-byte comparisons and the server's data directory.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tenax_testkit::{Rng, TestServer};

use super::{MIB, hex};

/// Writes `len` random bytes to `path` in blocks; returns their SHA-256.
pub(crate) fn write_random_file(rng: &mut Rng, path: &Path, len: u64) -> String {
    let mut file = fs::File::create(path).expect("create the source file");
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut block[..n]);
        hasher.update(&block[..n]);
        file.write_all(&block[..n]).expect("write the source file");
        left -= n as u64;
    }
    file.sync_all().expect("sync the source file");
    hex(&hasher.finalize())
}

/// Asserts that the file `stored` holds the same bytes as `source`
/// (streamed, block by block).
pub(crate) fn assert_same_file(stored: &Path, source: &Path) {
    let what = stored.display();
    let mut a = fs::File::open(stored)
        .unwrap_or_else(|e| panic!("cannot open the stored file {what}: {e}"));
    let mut b = fs::File::open(source).expect("open the source file");
    let (la, lb) = (
        a.metadata().expect("stat").len(),
        b.metadata().expect("stat").len(),
    );
    assert_eq!(la, lb, "{what}: stored size differs from the source's");
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    while offset < la {
        let n = (la - offset).min(MIB) as usize;
        a.read_exact(&mut ba[..n]).expect("read the stored file");
        b.read_exact(&mut bb[..n]).expect("read the source file");
        if let Some(at) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            panic!(
                "{what}: the stored file differs from the source at byte {}",
                offset + at as u64
            );
        }
        offset += n as u64;
    }
}

/// Asserts that `stored` (described by `what`) holds exactly `data`.
pub(crate) fn assert_same_bytes(what: &str, stored: &[u8], data: &[u8]) {
    assert_eq!(stored.len(), data.len(), "stored length of {what}");
    if let Some(at) = stored.iter().zip(data).position(|(a, b)| a != b) {
        panic!("{what} differs from the source at byte {at}");
    }
}

/// The published file of `name` in the server's data directory.
pub(crate) fn stored_path(server: &TestServer, name: &str) -> PathBuf {
    server.data_dir().join("files").join(name)
}

/// Asserts that the server published `name` with exactly the bytes of
/// `source`.
pub(crate) fn assert_stored(server: &TestServer, name: &str, source: &Path) {
    assert_same_file(&stored_path(server, name), source);
}

/// The total size of the server's in-progress data files (`uploads/*.bin`).
pub(crate) fn held_on_disk(server: &TestServer) -> u64 {
    let Ok(entries) = fs::read_dir(server.data_dir().join("uploads")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The `*.json` entries of a client journal directory (none if it is missing).
pub(crate) fn journal_entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}
