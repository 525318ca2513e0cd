//! The data state of an upload: where its bytes are (the multipart upload
//! and its parts, the tail objects, or the sealed `data` object), stored
//! as JSON through the [`MetaStore`](crate::MetaStore).

use std::io;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tenax_core::{StorageError, UploadId};

/// Where an upload's bytes are; rewritten whole at every sync (the commit
/// point of an append).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DataState {
    /// The multipart upload into `data`, once the first part was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) multipart: Option<Multipart>,
    /// Acknowledged bytes after the parts, in order.
    #[serde(default)]
    pub(crate) tails: Vec<Tail>,
    /// The number of the next tail object: names are never reused, so a
    /// stale reader never sees a rewritten tail.
    #[serde(default)]
    pub(crate) next_tail: u64,
    /// Set when the whole data is the `data` object, of this length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Multipart {
    pub(crate) id: String,
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Part {
    pub(crate) etag: String,
    pub(crate) len: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Tail {
    pub(crate) seq: u64,
    pub(crate) len: u64,
}

impl DataState {
    pub(crate) fn parts_len(&self) -> u64 {
        self.multipart.as_ref().map_or(0, |multipart| {
            multipart.parts.iter().map(|part| part.len).sum()
        })
    }

    pub(crate) fn tails_len(&self) -> u64 {
        self.tails.iter().map(|tail| tail.len).sum()
    }

    pub(crate) fn len(&self) -> u64 {
        self.sealed
            .unwrap_or_else(|| self.parts_len() + self.tails_len())
    }
}

pub(crate) fn state_bytes(state: &DataState) -> Result<Bytes, StorageError> {
    serde_json::to_vec(state)
        .map(Bytes::from)
        .map_err(|error| StorageError::Io(io::Error::other(error)))
}

pub(crate) fn parse_state(id: UploadId, bytes: &[u8]) -> Result<DataState, StorageError> {
    parse_json(&format!("the data state of {id}"), bytes)
}

/// Parses stored JSON; `what` names it in the error.
fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|error| {
        StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: {error}"),
        ))
    })
}
