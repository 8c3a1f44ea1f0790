//! The store's one error type. Messages name the entity, never a row's secret columns
//! or a database password. A database failure keeps its cause as the error's source;
//! a broken uniqueness rule becomes a sentence that names the rule, since it reaches API
//! callers, and never the engine's text (which names tables and columns).
//!
//! Not for: logging. Whoever handles an error logs it.

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    /// A uniqueness rule refused the write; the text says which, as a sentence.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A compare-and-set found the row changed since it was read.
    #[error("{entity} {id} was changed by another request")]
    Changed { entity: &'static str, id: String },
    /// Saving a credential would leave its user holding more keys than allowed.
    #[error("the user already holds {held} keys, the most allowed ({max})")]
    LimitReached { held: u32, max: u32 },
    #[error("database configuration: {0}")]
    Config(String),
    #[error("could not reach the database ({location}): {reason}")]
    Unreachable { location: String, reason: String },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    // sqlx errors carry no bound values or connection passwords, so their text may be
    // shown along with ours (the log lines that report these print only `Display`).
    #[error("database migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
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
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(conflict_message(&**db).to_owned()),
            _ => Self::Database(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(err)
    }
}

/// Each uniqueness rule in the schema: PostgreSQL's constraint (or unique index) name,
/// SQLite's `table.column` list, and what the rule means.
const UNIQUE_RULES: &[(&str, &str, &str)] = &[
    (
        "credentials_one_active_per_provider",
        "credentials.owner_key, credentials.provider",
        "another active key for this provider exists for this owner",
    ),
    ("users_email_key", "users.email", "a user with this email address already exists"),
    ("users_external_id_key", "users.external_id", "a user with this external id already exists"),
    ("workspaces_external_id", "workspaces.external_id", "a workspace with this external id already exists"),
    ("data_keys_owner_key", "data_keys.owner", "this owner already has a data key"),
    ("api_tokens_public_id_key", "api_tokens.public_id", "a token with this public id already exists"),
    (
        "memberships_pkey",
        "memberships.workspace_id, memberships.user_id",
        "this user is already a member of this workspace",
    ),
    (
        "user_identities_pkey",
        "user_identities.issuer, user_identities.subject",
        "this sign-in identity is already linked to a user",
    ),
    ("workspaces_pkey", "workspaces.id", "a workspace with this id already exists"),
    ("users_pkey", "users.id", "a user with this id already exists"),
    ("data_keys_pkey", "data_keys.id", "a data key with this id already exists"),
    ("credentials_pkey", "credentials.id", "a credential with this id already exists"),
    ("api_tokens_pkey", "api_tokens.id", "a token with this id already exists"),
    ("audit_events_pkey", "audit_events.id", "an audit event with this id already exists"),
    ("usage_events_pkey", "usage_events.id", "a usage event with this id already exists"),
];

/// The sentence for the uniqueness rule `db` broke. PostgreSQL names the constraint;
/// SQLite only says "UNIQUE constraint failed: table.column, ...".
fn conflict_message(db: &dyn sqlx::error::DatabaseError) -> &'static str {
    let sqlite_columns = db.message().strip_prefix("UNIQUE constraint failed: ");
    UNIQUE_RULES
        .iter()
        .find(|(constraint, columns, _)| db.constraint() == Some(*constraint) || sqlite_columns == Some(*columns))
        .map_or("a record with the same unique values already exists", |(_, _, sentence)| sentence)
}
