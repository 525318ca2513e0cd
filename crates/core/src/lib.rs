//! The tenax upload core.
//!
//! One engine serves every protocol dialect: it creates uploads, hands out
//! exclusive [`Lease`]s on them (a newer request ends an older one, which
//! keeps the prefix it wrote), appends byte streams durably, finalises and
//! cancels. Where the bytes live is the business of a [`Storage`] backend;
//! [`storage::LocalDisk`] is the embedded default.
//!
//! The engine knows nothing about HTTP or about any dialect's headers: the
//! server's adapters translate requests with `tenax-protocol` and call in.

pub mod catalog;
mod digest;
mod engine;
mod error;
pub mod events;
mod hasher;
pub mod layout;
pub mod metric;
mod quota;
mod record;
pub mod storage;

pub use catalog::{Catalog, LocalCatalog};
pub use digest::{DigestSet, Digests};
pub use engine::{
    AppendOptions, AppendOutcome, ChunkCheck, CollectReport, Engine, EngineConfig, Interruption,
    Lease, MAX_CONCAT_PARTS, Progress, Snapshot,
};
pub use error::Error;
pub use events::{CompletionAnswer, Event, EventKind, HookError, Hooks, NoHooks};
pub use quota::{Quota, QuotaExceeded, Usage};
pub use record::{
    Concat, FileKey, FinalInfo, MAX_METADATA_SIZE, NewUpload, ObjectRules, Status, UploadRecord,
};
pub use storage::{Storage, StorageError};
pub use tenax_protocol::{FileName, Namespace, UploadId};

/// How often the expiry collector ([`Engine::spawn_collector`]) looks for
/// expired uploads unless told otherwise.
pub const DEFAULT_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
