//! Data-encryption keys as stored: one per owner, wrapped by a master key, rewrapped by
//! compare-and-set on their version, destroyed for good (crypto-shredding).

use super::{db_run, Pool};
use crate::rows::*;
use crate::ts::Ts;
use crate::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use keygate_core::*;

impl Pool<'_> {
    pub(super) async fn insert_data_key(self, key: &DataKeyRecord) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query(concat!(
                "INSERT INTO data_keys (",
                data_key_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(key.id.as_uuid())
            .bind(key.owner.storage_key())
            .bind(&key.kek_id)
            .bind(&key.wrapped)
            .bind(key.version)
            .bind(Ts(key.created_at))
            .bind(Ts(key.updated_at))
            .bind(crate::ts::opt(key.destroyed_at))
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub(super) async fn data_key(self, id: DataKeyId) -> StoreResult<DataKeyRecord> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys WHERE id = $1"))
                .bind(id.as_uuid())
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| StoreError::not_found("data key", id))?
                .try_into()
        })
    }

    pub(super) async fn data_key_by_owner(self, owner: &KeyOwner) -> StoreResult<Option<DataKeyRecord>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys WHERE owner = $1"))
                .bind(owner.storage_key())
                .fetch_optional(pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
        })
    }

    pub(super) async fn data_keys(self) -> StoreResult<Vec<DataKeyRecord>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys ORDER BY id"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
        })
    }

    pub(super) async fn rewrap_data_key(
        self,
        id: DataKeyId,
        expected_version: i64,
        kek_id: &str,
        wrapped: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        db_run!(self, |pool| {
            let done = sqlx::query(
                "UPDATE data_keys SET kek_id = $1, wrapped = $2, version = version + 1, updated_at = $3 \
                 WHERE id = $4 AND version = $5 AND wrapped IS NOT NULL",
            )
            .bind(kek_id)
            .bind(wrapped)
            .bind(Ts(now))
            .bind(id.as_uuid())
            .bind(expected_version)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub(super) async fn destroy_data_key(self, owner: &KeyOwner, now: DateTime<Utc>) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query(
                "UPDATE data_keys SET wrapped = NULL, version = version + 1, destroyed_at = $1, updated_at = $1 \
                 WHERE owner = $2 AND wrapped IS NOT NULL",
            )
            .bind(Ts(now))
            .bind(owner.storage_key())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub(super) async fn kek_ids_in_use(self) -> StoreResult<Vec<String>> {
        db_run!(self, |pool| {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT DISTINCT kek_id FROM data_keys WHERE wrapped IS NOT NULL ORDER BY kek_id")
                    .fetch_all(pool)
                    .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }
}
