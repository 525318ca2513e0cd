//! tus checksums (docs/protocol.md §2.3, checksum and checksum-trailer) as
//! [`ChunkCheck`]s for the engine's staged appends.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use tenax_core::{ChunkCheck, Error as EngineError};
use tenax_protocol::tus::{ChecksumAlgorithm, parse_checksum};

use crate::body::TrailerSlot;

/// One running hash.
#[derive(Clone)]
enum Hasher {
    Sha1(Sha1),
    Md5(Md5),
    Sha256(Sha256),
    Crc32(crc32fast::Hasher),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            ChecksumAlgorithm::Md5 => Hasher::Md5(Md5::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            ChecksumAlgorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(hasher) => hasher.update(bytes),
            Hasher::Md5(hasher) => hasher.update(bytes),
            Hasher::Sha256(hasher) => hasher.update(bytes),
            Hasher::Crc32(hasher) => hasher.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(hasher) => hasher.finalize().to_vec(),
            Hasher::Md5(hasher) => hasher.finalize().to_vec(),
            Hasher::Sha256(hasher) => hasher.finalize().to_vec(),
            Hasher::Crc32(hasher) => hasher.finalize().to_be_bytes().to_vec(),
        }
    }
}

/// A checksum given in the `Upload-Checksum` header.
pub(crate) struct HeaderChecksum {
    hasher: Hasher,
    expected: Vec<u8>,
}

impl HeaderChecksum {
    pub(crate) fn new(algorithm: ChecksumAlgorithm, expected: Vec<u8>) -> Self {
        HeaderChecksum {
            hasher: Hasher::new(algorithm),
            expected,
        }
    }
}

impl ChunkCheck for HeaderChecksum {
    fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    fn verify(self: Box<Self>) -> Result<(), EngineError> {
        if self.hasher.finish() == self.expected {
            Ok(())
        } else {
            Err(EngineError::ChecksumMismatch)
        }
    }
}

/// A checksum that arrives as a trailer: the algorithm is known only at the
/// end, so every offered algorithm runs. Only announced trailers
/// (`Trailer: Upload-Checksum`) pay for this.
pub(crate) struct TrailerChecksum {
    hashers: Vec<(ChecksumAlgorithm, Hasher)>,
    trailers: TrailerSlot,
}

impl TrailerChecksum {
    pub(crate) fn new(trailers: TrailerSlot) -> Self {
        let hashers = ChecksumAlgorithm::ALL
            .into_iter()
            .map(|algorithm| (algorithm, Hasher::new(algorithm)))
            .collect();
        TrailerChecksum { hashers, trailers }
    }
}

impl ChunkCheck for TrailerChecksum {
    fn update(&mut self, bytes: &[u8]) {
        self.hashers
            .iter_mut()
            .for_each(|(_, hasher)| hasher.update(bytes));
    }

    fn verify(self: Box<Self>) -> Result<(), EngineError> {
        let trailer = self.trailers.lock().ok().and_then(|slot| {
            slot.as_ref()?
                .get("upload-checksum")
                .map(|value| value.to_str().map(str::to_owned))
        });
        // No trailer means no check (docs/protocol.md §2.3). A malformed one,
        // or an algorithm not offered, is the same 400 as in the header.
        let trailer = match trailer {
            None => return Ok(()),
            Some(Ok(trailer)) => trailer,
            Some(Err(_)) => {
                return Err(EngineError::ChecksumInvalid(
                    "Upload-Checksum is not ASCII".into(),
                ));
            }
        };
        let checksum = parse_checksum(&trailer)
            .map_err(|error| EngineError::ChecksumInvalid(error.to_string()))?;
        let matches = self
            .hashers
            .into_iter()
            .find(|(algorithm, _)| *algorithm == checksum.algorithm)
            .is_some_and(|(_, hasher)| hasher.finish() == checksum.digest);
        if matches {
            Ok(())
        } else {
            Err(EngineError::ChecksumMismatch)
        }
    }
}
