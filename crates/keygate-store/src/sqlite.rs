//! The SQLite backend: the embedded default. One file, WAL mode, foreign keys on.

use crate::sql::{Pool, SqlStore};
use crate::{StoreError, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::time::Duration;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection of its own for the usage writer's batches. SQLite discards a
    /// connection's page cache whenever another connection has committed, so batches
    /// spread over the pool found the usage table's B-trees cold every time (and read
    /// their pages back from the file); on one connection they stay warm.
    usage_writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file. Does not migrate.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let unreachable = |e: sqlx::Error| StoreError::Unreachable {
            location: format!("SQLite {}", path.display()),
            reason: e.to_string(),
        };
        let pool =
            SqlitePoolOptions::new().max_connections(8).connect_with(options.clone()).await.map_err(unreachable)?;
        let usage_writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // Its multi-row INSERTs keep a statement journal: in memory, not a temporary
            // file created and unlinked per batch. (The pool's connections keep SQLite's
            // default, so large sorts can still spill to disk.)
            .connect_with(options.pragma("temp_store", "memory"))
            .await
            .map_err(unreachable)?;
        restrict_permissions(path);
        Ok(Self { pool, usage_writer })
    }

    /// SQLite's plan for `sql` (placeholders left unbound), one step per line, e.g.
    /// `SEARCH credentials USING INDEX credentials_owner (owner_user_id=? AND …)`. Tests use
    /// it to prove a query finds its rows through an index instead of scanning a table.
    pub async fn query_plan(&self, sql: &str) -> StoreResult<String> {
        let steps: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&self.pool).await?;
        Ok(steps.into_iter().map(|(_, _, _, detail)| detail).collect::<Vec<_>>().join("\n"))
    }
}

/// The file holds only ciphertext, but nobody else on the machine needs to read it.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), %err, "could not restrict the database file to mode 0600");
        }
    }
}

impl SqlStore for SqliteStore {
    fn pool(&self) -> Pool<'_> {
        Pool::Sqlite(&self.pool)
    }

    fn usage_writer(&self) -> Pool<'_> {
        Pool::Sqlite(&self.usage_writer)
    }
}
