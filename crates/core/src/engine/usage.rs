//! Namespaces: quotas, what a namespace uses, which namespace owns an upload.

use std::collections::HashMap;

use tenax_protocol::{Namespace, UploadId};

use super::{Engine, lock};
use crate::error::Error;
use crate::quota::{Quota, Usage};

impl Engine {
    /// Replaces the quotas of every namespace (unlisted ones are
    /// unlimited). Uploads already admitted are not affected.
    pub fn set_quotas(&self, quotas: HashMap<Namespace, Quota>) {
        self.inner.catalog.set_quotas(quotas);
    }

    /// What a namespace uses now.
    pub async fn usage(&self, namespace: &Namespace) -> Result<Usage, Error> {
        let catalog = &self.inner.catalog;
        let (uploads_in_progress, bytes_in_progress) = catalog.in_progress(namespace).await?;
        let bytes_stored = catalog
            .published_in(namespace)
            .await?
            .iter()
            .map(|file| file.size)
            .sum();
        Ok(Usage {
            uploads_in_progress,
            bytes_in_progress,
            bytes_stored,
        })
    }

    /// The namespace an upload belongs to.
    pub async fn owner(&self, id: UploadId) -> Result<Namespace, Error> {
        if let Some(namespace) = lock(&self.inner.owners).get(&id) {
            return Ok(namespace.clone());
        }
        let namespace = self.peek(id).await?.record.namespace;
        lock(&self.inner.owners).insert(id, namespace.clone());
        Ok(namespace)
    }
}
