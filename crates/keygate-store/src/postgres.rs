//! The PostgreSQL backend, for scale: `KEYGATE_DATABASE_URL=postgres://...`.

use crate::sql::{Pool, SqlStore};
use crate::{redact_url, StoreError, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::time::Duration;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url`. Does not migrate. Errors name the server, never the password.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::Config(format!("`{}` is not a valid PostgreSQL URL", redact_url(url))))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unreachable {
                location: format!("PostgreSQL {}", redact_url(url)),
                reason: e.to_string(),
            })?;
        Ok(Self { pool })
    }
}

impl SqlStore for PostgresStore {
    fn pool(&self) -> Pool<'_> {
        Pool::Postgres(&self.pool)
    }
}
