//! The database itself (which backend, ping, migrations, closing) and the small named
//! rows: `meta` blobs (the boot canary), `settings` documents and the change epoch.

use super::{db_run, Pool};
use crate::ts::Ts;
use crate::{Backend, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};

impl Pool<'_> {
    pub(super) fn backend(self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &crate::sqlite::MIGRATOR,
            Self::Postgres(_) => &crate::postgres::MIGRATOR,
        }
    }

    pub(super) async fn ping(self) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    pub(super) async fn migrate(self) -> StoreResult<()> {
        let migrator = self.migrator();
        db_run!(self, |pool| {
            migrator.run(pool).await?;
            Ok(())
        })
    }

    pub(super) async fn pending_migrations(self) -> StoreResult<Vec<String>> {
        let migrator = self.migrator();
        let applied = db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.ensure_migrations_table().await?;
            conn.list_applied_migrations().await?
        });
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .filter(|m| !applied.iter().any(|a| a.version == m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    pub(super) fn migration_count(self) -> usize {
        self.migrator().iter().filter(|m| !m.migration_type.is_down_migration()).count()
    }

    pub(super) async fn close(self) {
        db_run!(self, |pool| { pool.close().await })
    }

    pub(super) async fn meta_get(self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        db_run!(self, |pool| {
            let row: Option<(Vec<u8>,)> =
                sqlx::query_as("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(pool).await?;
            Ok(row.map(|r| r.0))
        })
    }

    pub(super) async fn meta_insert(self, key: &str, value: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        db_run!(self, |pool| {
            let done = sqlx::query(
                "INSERT INTO meta (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .bind(Ts(now))
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub(super) async fn meta_replace(
        self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        db_run!(self, |pool| {
            let done = sqlx::query("UPDATE meta SET value = $1, updated_at = $2 WHERE key = $3 AND value = $4")
                .bind(value)
                .bind(Ts(now))
                .bind(key)
                .bind(expected)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    pub(super) async fn settings_get(self, key: &str) -> StoreResult<Option<String>> {
        db_run!(self, |pool| {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(pool).await?;
            Ok(row.map(|r| r.0))
        })
    }

    pub(super) async fn settings_put(self, key: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(Ts(now))
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// On PostgreSQL the same statement (so the same transaction) also announces the new
    /// epoch on [`super::changes::CHANNEL`]; listeners hear it when it commits.
    pub(super) async fn bump_change_epoch(self) -> StoreResult<i64> {
        let (epoch,): (i64,) = match self {
            Self::Sqlite(pool) => {
                sqlx::query_as("UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch")
                    .fetch_one(pool)
                    .await?
            }
            Self::Postgres(pool) => sqlx::query_as(super::changes::BUMP_AND_NOTIFY).fetch_one(pool).await?,
        };
        Ok(epoch)
    }

    pub(super) async fn change_epoch(self) -> StoreResult<i64> {
        db_run!(self, |pool| {
            let (epoch,): (i64,) =
                sqlx::query_as("SELECT epoch FROM change_epoch WHERE id = 1").fetch_one(pool).await?;
            Ok(epoch)
        })
    }
}
