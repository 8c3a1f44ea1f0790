//! The store's one error type. Messages name the entity, never a row's secret columns
//! or a database password.

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A compare-and-set found the row changed since it was read.
    #[error("{entity} {id} was changed by another request")]
    Changed { entity: &'static str, id: String },
    #[error("database configuration: {0}")]
    Config(String),
    #[error("could not reach the database ({location}): {reason}")]
    Unreachable { location: String, reason: String },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound { entity, id: id.to_string() }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return Self::Conflict(db.constraint().map_or_else(|| db.message().to_owned(), str::to_owned));
            }
        }
        // sqlx errors carry no bound values or connection passwords.
        Self::Database(err.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(err.to_string())
    }
}
