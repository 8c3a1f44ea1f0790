//! The PostgreSQL backend, for scale: `KEYGATE_DATABASE_URL=postgres://...`.

use crate::filter::*;
use crate::rows::*;
use crate::ts::Ts;
use crate::{redact_url, Backend, StoreError, StoreResult};
use keygate_core::*;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    const BACKEND: Backend = Backend::Postgres;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

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

crate::sql::impl_store!(PostgresStore, sqlx::Postgres);
