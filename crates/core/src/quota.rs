//! Per-namespace quotas: how many uploads a namespace may have in progress,
//! how many bytes they may declare, and how many bytes its published files
//! may take.
//!
//! The engine keeps the counts in memory (rebuilt from the records at
//! start) and checks them in the same critical section that changes them,
//! so concurrent creations cannot overshoot a limit together.

use std::collections::HashMap;

use tenax_protocol::{Namespace, UploadId};
use thiserror::Error;

/// The limits of a namespace; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Uploads in progress at once.
    pub max_concurrent_uploads: Option<u64>,
    /// The sum of the declared sizes of the uploads in progress.
    pub max_bytes_in_progress: Option<u64>,
    /// The sum of the sizes of the published files.
    pub max_bytes_stored: Option<u64>,
}

/// What a namespace uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uploads in progress.
    pub uploads_in_progress: u64,
    /// The sum of their declared sizes (an upload of unknown size counts
    /// for nothing until it declares one).
    pub bytes_in_progress: u64,
    /// The sum of the sizes of the published files.
    pub bytes_stored: u64,
}

impl Quota {
    /// Whether a namespace using `in_progress` (uploads, declared bytes)
    /// and `stored` bytes may count `size` more declared bytes for an upload
    /// that `publishes` a file (stored bytes count only for those);
    /// `new_upload` when it would also be one more upload in progress.
    pub fn check(
        &self,
        in_progress: (u64, u64),
        stored: u64,
        size: u64,
        publishes: bool,
        new_upload: bool,
    ) -> Result<(), QuotaExceeded> {
        let (count, bytes) = in_progress;
        if let Some(limit) = self.max_concurrent_uploads
            && new_upload
            && count >= limit
        {
            return Err(QuotaExceeded::ConcurrentUploads { limit });
        }
        if let Some(limit) = self.max_bytes_in_progress
            && bytes.saturating_add(size) > limit
        {
            return Err(QuotaExceeded::BytesInProgress { limit });
        }
        if let Some(limit) = self.max_bytes_stored
            && publishes
            && stored.saturating_add(size) > limit
        {
            return Err(QuotaExceeded::BytesStored { limit });
        }
        Ok(())
    }
}

/// A quota that a request would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QuotaExceeded {
    /// Too many uploads in progress.
    #[error("the namespace already has {limit} uploads in progress")]
    ConcurrentUploads {
        /// The limit.
        limit: u64,
    },
    /// The declared sizes would exceed the limit.
    #[error("the uploads in progress would exceed {limit} bytes")]
    BytesInProgress {
        /// The limit.
        limit: u64,
    },
    /// The published files would exceed the limit.
    #[error("the namespace's files would exceed {limit} bytes")]
    BytesStored {
        /// The limit.
        limit: u64,
    },
}

/// The in-progress side of the accounts; stored bytes come from the
/// engine's index of published files.
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    quotas: HashMap<Namespace, Quota>,
    /// Each upload in progress: its namespace and declared size.
    active: HashMap<UploadId, (Namespace, u64)>,
}

impl Accounts {
    pub(crate) fn set_quotas(&mut self, quotas: HashMap<Namespace, Quota>) {
        self.quotas = quotas;
    }

    pub(crate) fn quota(&self, namespace: &Namespace) -> Quota {
        self.quotas.get(namespace).copied().unwrap_or_default()
    }

    /// The uploads in progress of `namespace` and their declared bytes.
    pub(crate) fn in_progress(&self, namespace: &Namespace) -> (u64, u64) {
        self.active
            .values()
            .filter(|(owner, _)| owner == namespace)
            .fold((0, 0), |(count, bytes), (_, size)| {
                (count + 1, bytes.saturating_add(*size))
            })
    }

    /// Admits a new upload of `size` declared bytes (0 if unknown), unless
    /// it would exceed a quota; `stored` is the namespace's published bytes.
    pub(crate) fn admit(
        &mut self,
        id: UploadId,
        namespace: &Namespace,
        size: u64,
        stored: u64,
        publishes: bool,
    ) -> Result<(), QuotaExceeded> {
        self.quota(namespace)
            .check(self.in_progress(namespace), stored, size, publishes, true)?;
        self.active.insert(id, (namespace.clone(), size));
        Ok(())
    }

    /// Declares the size of an upload in progress, unless it would exceed
    /// a quota.
    pub(crate) fn declare(
        &mut self,
        id: UploadId,
        size: u64,
        stored: u64,
        publishes: bool,
    ) -> Result<(), QuotaExceeded> {
        let Some((namespace, declared)) = self.active.get(&id).cloned() else {
            return Ok(());
        };
        let (count, bytes) = self.in_progress(&namespace);
        self.quota(&namespace)
            .check((count, bytes - declared), stored, size, publishes, false)?;
        self.active.insert(id, (namespace, size));
        Ok(())
    }

    /// Counts an upload in progress found at start, without checking.
    pub(crate) fn restore(&mut self, id: UploadId, namespace: &Namespace, size: u64) {
        self.active.insert(id, (namespace.clone(), size));
    }

    /// The upload is no longer in progress (complete, cancelled, expired).
    pub(crate) fn retire(&mut self, id: UploadId) {
        self.active.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).expect("valid")
    }

    fn id(n: u8) -> UploadId {
        UploadId::from_bytes([n; 16])
    }

    #[test]
    fn limits_apply_per_namespace() {
        let mut accounts = Accounts::default();
        accounts.set_quotas(HashMap::from([(
            ns("a"),
            Quota {
                max_concurrent_uploads: Some(2),
                max_bytes_in_progress: Some(100),
                max_bytes_stored: Some(150),
            },
        )]));
        assert_eq!(accounts.admit(id(1), &ns("a"), 60, 0, true), Ok(()));
        assert_eq!(
            accounts.admit(id(2), &ns("a"), 41, 0, true),
            Err(QuotaExceeded::BytesInProgress { limit: 100 })
        );
        assert_eq!(accounts.admit(id(2), &ns("a"), 0, 0, true), Ok(()));
        assert_eq!(
            accounts.admit(id(3), &ns("a"), 0, 0, true),
            Err(QuotaExceeded::ConcurrentUploads { limit: 2 })
        );
        // Another namespace is not limited by a's quota.
        assert_eq!(accounts.admit(id(4), &ns("b"), 1000, 0, true), Ok(()));
        // A size declared later is checked against what is left.
        assert_eq!(
            accounts.declare(id(2), 41, 0, true),
            Err(QuotaExceeded::BytesInProgress { limit: 100 })
        );
        assert_eq!(accounts.declare(id(2), 40, 0, true), Ok(()));
        assert_eq!(accounts.in_progress(&ns("a")), (2, 100));
        accounts.retire(id(1));
        assert_eq!(accounts.in_progress(&ns("a")), (1, 40));
        // Stored bytes count only for uploads that publish a file.
        assert_eq!(
            accounts.admit(id(5), &ns("a"), 20, 140, true),
            Err(QuotaExceeded::BytesStored { limit: 150 })
        );
        assert_eq!(accounts.admit(id(5), &ns("a"), 20, 140, false), Ok(()));
    }
}
