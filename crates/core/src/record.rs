//! The persistent description of an upload.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenax_protocol::gcs::Preconditions;
use tenax_protocol::{FileName, Namespace, UploadId};

use crate::digest::DigestSet;

/// What a client asks for when it creates an upload.
#[derive(Debug, Clone, Default)]
pub struct NewUpload {
    /// The namespace that owns the upload.
    pub namespace: Namespace,
    /// The name under which the completed file is published, if any.
    pub name: Option<FileName>,
    /// The total size, if the client knows it.
    pub total: Option<u64>,
    /// The media type of the content, if the client said.
    pub content_type: Option<String>,
    /// Free-form metadata: keys to base64-encoded values.
    pub metadata: BTreeMap<String, String>,
    /// The upload's part in a concatenation, if any.
    pub concat: Option<Concat>,
    /// The optional digests the completed upload carries (if the engine
    /// computes them too): each costs time, so ask only for those the
    /// final answer shows.
    pub digests: DigestSet,
    /// Set for an object of the GCS JSON API: what its completion must
    /// satisfy, and the final answer's shape.
    pub object: Option<ObjectRules>,
}

/// The most bytes of metadata an upload may carry: its keys and (encoded)
/// values and its media type. Metadata stays in memory while the upload is
/// loaded, so this bounds what an idle upload costs.
pub const MAX_METADATA_SIZE: usize = 8 * 1024;

impl NewUpload {
    /// The bytes of metadata this upload would carry (see
    /// [`MAX_METADATA_SIZE`]).
    pub fn metadata_size(&self) -> usize {
        let pairs: usize = self
            .metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        pairs + self.content_type.as_ref().map_or(0, String::len)
    }
}

/// Everything the server stores about an upload except its bytes.
///
/// The number of bytes held is deliberately *not* part of the record: it is
/// the durable length of the upload's data, so that a record can never claim
/// bytes the data does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The upload's id.
    #[serde(with = "id_text")]
    pub id: UploadId,
    /// The namespace that owns the upload (absent: the default one).
    #[serde(
        default,
        with = "namespace_text",
        skip_serializing_if = "Namespace::is_default"
    )]
    pub namespace: Namespace,
    /// The name under which the completed file is published.
    #[serde(default, with = "name_text")]
    pub name: Option<FileName>,
    /// The total size, once known. Never changes once set.
    pub total: Option<u64>,
    /// The content's media type.
    pub content_type: Option<String>,
    /// Free-form metadata: keys to base64-encoded values.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The upload's part in a concatenation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<Concat>,
    /// Set while a checksummed append runs: bytes past this offset are not
    /// verified yet, and are cut off if the server restarts before they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_from: Option<u64>,
    /// The optional digests computed for it, stored as the field `md5`
    /// (records from before this field: MD5).
    #[serde(rename = "md5", default = "md5_set", with = "digest_set_md5")]
    pub digests: DigestSet,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
    /// The upload's place in the order of creation (docs/protocol.md §1.1,
    /// "which upload a name addresses"): nanoseconds since the Unix epoch,
    /// raised where needed so that it is greater than that of every upload
    /// the storage held when this one was created. Records written before
    /// the field existed have none; [`UploadRecord::creation_order`] then
    /// uses `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ns: Option<u64>,
    /// Last time the upload received bytes or changed, seconds since the Unix epoch.
    pub updated_at: u64,
    /// Where the upload is in its life.
    pub status: Status,
    /// Set for an upload created as an object of the GCS JSON API
    /// (docs/protocol.md §7): the digests and preconditions its completion
    /// must satisfy. Its presence also makes the final answer of every
    /// dialect's completing request the GCS object resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRules>,
}

/// What a client of the GCS JSON API asked of an object's completion
/// (docs/protocol.md §7.4): the digests it declared and the preconditions
/// on the generation the name shows. Checked by [`crate::Lease::finalize`]
/// before anything is published; a refusal keeps the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRules {
    /// The MD5 the client declared, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The CRC32C the client declared, base64 of its big-endian bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// The preconditions on the object the name shows when it completes.
    #[serde(default, skip_serializing_if = "is_unconditional")]
    pub preconditions: Preconditions,
}

fn is_unconditional(preconditions: &Preconditions) -> bool {
    *preconditions == Preconditions::default()
}

fn md5_set() -> DigestSet {
    DigestSet::MD5
}

impl UploadRecord {
    /// Orders uploads by creation: the later created compares greater.
    /// The stored `created_ns`, else `created_at` in nanoseconds; two
    /// records that tie (only old ones can) are told apart by their ids,
    /// so that the order never depends on the order records are read in.
    pub fn creation_order(&self) -> (u64, UploadId) {
        let ns = self
            .created_ns
            .unwrap_or_else(|| self.created_at.saturating_mul(1_000_000_000));
        (ns, self.id)
    }

    /// Where the completed upload is published, if it has a name.
    pub fn file_key(&self) -> Option<FileKey> {
        self.name.as_ref().map(|name| FileKey {
            namespace: self.namespace.clone(),
            name: name.clone(),
        })
    }
}

/// A published name: a file name within a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// The namespace.
    pub namespace: Namespace,
    /// The name within it.
    pub name: FileName,
}

/// The role of an upload in a concatenation: partial uploads, each written
/// on its own, joined in order into a final upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// A part, to be concatenated into a final upload later.
    Partial,
    /// The concatenation of these parts, in order.
    Final(#[serde(with = "ids_text")] Vec<UploadId>),
}

/// The life of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Accepting bytes.
    Active,
    /// Every byte arrived; the file is published.
    Complete(FinalInfo),
    /// Cancelled by the client: the data is gone, the record stays so that
    /// later requests get 410 rather than 404.
    Cancelled,
    /// Idle for longer than the time to live: the expiry collector removed
    /// the data; the record stays as a tombstone (so that later requests can
    /// learn that it expired) until it too is removed after a grace period.
    /// `updated_at` is when the upload was found expired.
    Expired,
}

/// The digests and size of a completed upload, as the final response shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalInfo {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// MD5, base64, when it was computed (see [`DigestSet`]).
    #[serde(default)]
    pub md5: Option<String>,
    /// CRC32C, its four bytes big-endian, base64.
    pub crc32c: String,
    /// Completion time, seconds since the Unix epoch.
    pub completed_at: u64,
    /// Whether the file is published under the upload's name (set once the
    /// publication is durable; a crash before that publishes again).
    #[serde(default)]
    pub published: bool,
    /// Set once a later upload of the same name took the name over (or
    /// the name was withdrawn from it): a restart must not show this
    /// upload under the name again. Completion times are in seconds, so
    /// they cannot tell two uploads finished within the same second apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    /// The object's generation (docs/protocol.md §7.5): its publication
    /// time in microseconds since the Unix epoch, above the generation the
    /// name showed before. `None` in records from before generations,
    /// which count `completed_at` in microseconds instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl FinalInfo {
    /// The generation of the object this upload published
    /// (docs/protocol.md §7.5).
    pub fn generation(&self) -> u64 {
        self.generation
            .unwrap_or_else(|| self.completed_at.saturating_mul(1_000_000))
    }
}

/// A [`DigestSet`] as the stored `md5` flag (the only optional digest).
mod digest_set_md5 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::digest::DigestSet;

    pub(super) fn serialize<S: Serializer>(
        set: &DigestSet,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(set.md5)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DigestSet, D::Error> {
        Ok(DigestSet {
            md5: bool::deserialize(deserializer)?,
        })
    }
}

mod id_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use tenax_protocol::UploadId;

    pub(super) fn serialize<S: Serializer>(
        id: &UploadId,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(id)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<UploadId, D::Error> {
        let text = String::deserialize(deserializer)?;
        UploadId::parse(&text).map_err(D::Error::custom)
    }
}

mod name_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use tenax_protocol::FileName;

    pub(super) fn serialize<S: Serializer>(
        name: &Option<FileName>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match name {
            Some(name) => serializer.serialize_some(name.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<FileName>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|name| FileName::new(name).map_err(D::Error::custom))
            .transpose()
    }
}

mod namespace_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use tenax_protocol::Namespace;

    pub(super) fn serialize<S: Serializer>(
        namespace: &Namespace,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(namespace.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Namespace, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(Namespace::default());
        }
        Namespace::new(text).map_err(D::Error::custom)
    }
}

mod ids_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use tenax_protocol::UploadId;

    pub(super) fn serialize<S: Serializer>(
        ids: &[UploadId],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(ids.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<UploadId>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| UploadId::parse(text).map_err(D::Error::custom))
            .collect()
    }
}
