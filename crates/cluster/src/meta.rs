//! The object store's [`MetaStore`] in PostgreSQL: records and data
//! states, every write fenced while this node holds the upload.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row as _;
use tenax_core::layout::{parse_record, record_json};
use tenax_core::{StorageError, UploadId, UploadRecord};
use tenax_objstore::MetaStore;

use crate::{Cluster, LEASE_TTL, db};

impl Cluster {
    /// Writes an upload's record or data state; fenced (and renewing the
    /// lease) while a request of this node holds the upload.
    async fn write_row(&self, id: UploadId, value: RowValue) -> Result<(), StorageError> {
        let fence = self.active_fence(id);
        let ttl = LEASE_TTL.as_secs_f64();
        // One statement per column (a literal, as sqlx wants): the value is
        // `$2`; with the fence `$3`, the write is refused unless this node
        // still holds the upload, and it renews the lease for `$4` seconds.
        macro_rules! fenced_update {
            ($column:literal) => {
                concat!(
                    "update tenax_uploads set ",
                    $column,
                    " = $2,
                         lease_until = case when $3::bigint is null then lease_until
                                       else now() + make_interval(secs => $4) end
                     where id = $1 and ($3::bigint is null or fence = $3)"
                )
            };
        }
        let query = match value {
            RowValue::Record(json) => sqlx::query(fenced_update!("record"))
                .bind(id.to_string())
                .bind(json),
            RowValue::State(state) => sqlx::query(fenced_update!("state"))
                .bind(id.to_string())
                .bind(state),
        };
        let done = query
            .bind(fence)
            .bind(ttl)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.fenced_or_missing(id).await);
        }
        Ok(())
    }
}

/// What [`Cluster::write_row`] writes.
enum RowValue {
    Record(String),
    /// `None` clears it.
    State(Option<Vec<u8>>),
}

#[async_trait]
impl MetaStore for Cluster {
    async fn create(&self, record: &UploadRecord, state: Bytes) -> Result<(), StorageError> {
        let json = record_json(record)?;
        sqlx::query(
            "insert into tenax_uploads (id, namespace, record, state) values ($1, $2, $3, $4)",
        )
        .bind(record.id.to_string())
        .bind(record.namespace.as_str())
        .bind(json)
        .bind(state.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn record(&self, id: UploadId) -> Result<UploadRecord, StorageError> {
        let row = sqlx::query("select record from tenax_uploads where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or(StorageError::NotFound)?;
        parse_record(
            &format!("record {id}"),
            row.get::<&str, _>("record").as_bytes(),
        )
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        self.write_row(record.id, RowValue::Record(record_json(record)?))
            .await
    }

    async fn records(&self) -> Result<Vec<UploadRecord>, StorageError> {
        let rows = sqlx::query("select id, record from tenax_uploads")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let id: &str = row.get("id");
            match parse_record(
                &format!("record {id}"),
                row.get::<&str, _>("record").as_bytes(),
            ) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!(%error, id, "skipping unreadable upload record"),
            }
        }
        Ok(records)
    }

    async fn state(&self, id: UploadId) -> Result<Option<Bytes>, StorageError> {
        let row = sqlx::query("select state from tenax_uploads where id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row
            .and_then(|row| row.get::<Option<Vec<u8>>, _>("state"))
            .map(Bytes::from))
    }

    async fn put_state(&self, id: UploadId, state: Bytes) -> Result<(), StorageError> {
        self.write_row(id, RowValue::State(Some(state.to_vec())))
            .await
    }

    async fn clear_state(&self, id: UploadId) -> Result<(), StorageError> {
        match self.write_row(id, RowValue::State(None)).await {
            Err(StorageError::NotFound) => Ok(()),
            other => other,
        }
    }

    async fn remove(&self, id: UploadId) -> Result<(), StorageError> {
        sqlx::query("delete from tenax_uploads where id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn probe(&self) -> Result<(), StorageError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn before_part(&self, id: UploadId) -> Result<(), StorageError> {
        let Some(fence) = self.active_fence(id) else {
            return Ok(());
        };
        let done = sqlx::query(
            "update tenax_uploads set lease_until = now() + make_interval(secs => $3)
             where id = $1 and fence = $2",
        )
        .bind(id.to_string())
        .bind(fence)
        .bind(LEASE_TTL.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(self.fenced_or_missing(id).await);
        }
        Ok(())
    }
}
