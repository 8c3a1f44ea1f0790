//! keygate's persistence: the [`Store`] trait and its two implementations, SQLite (the
//! embedded default, WAL mode) and PostgreSQL (for scale), picked from the database URL.
//! Each backend embeds its own migrations and runs them at start-up.
//!
//! Not for: deciding anything. The store saves what it is given (ids and timestamps are
//! made by the services) and answers queries scoped by the owner the caller names. It
//! never sees a plaintext secret: credentials arrive sealed.

mod error;
mod filter;
pub mod limits;
mod postgres;
mod report;
mod rows;
mod sql;
mod sqlite;
#[cfg(feature = "testdb")]
pub mod testdb;
mod ts;

pub use error::{StoreError, StoreResult};
pub use filter::{AuditFilter, CredentialFilter, UsageFilter};
pub use postgres::PostgresStore;
pub use report::{DailyUsageTotals, UsageGrouping, UsageTotals};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keygate_core::*;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What a change listener hears: run the change poll now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeNotice {
    /// Some process moved the change epoch to this value.
    Epoch(i64),
    /// The listener (re)connected: notices sent meanwhile may be lost, so look.
    Resync,
}

/// A stream of [`ChangeNotice`]s (see [`Store::change_notifications`]).
pub type ChangeFeed = tokio::sync::mpsc::Receiver<ChangeNotice>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// A token, its user, and the workspace (with the user's role there) its calls act in:
/// the one the token names, or the user's oldest membership. `acting` is `None` when the
/// user is not (or no longer) a member of it.
#[derive(Debug, Clone)]
pub struct TokenPrincipal {
    pub token: ApiToken,
    pub user: User,
    pub acting: Option<(Workspace, Role)>,
    /// The sandbox session's rules, when the token is a session's.
    pub session: Option<SessionGrant>,
}

/// The SQL behind [`Store::token_principal`], for the query-plan test.
#[doc(hidden)]
pub const TOKEN_PRINCIPAL_SQL: &str = rows::token_principal_select!();

/// Where the data lives, parsed from `KEYGATE_DATABASE_URL` (or the data directory).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL URL, which may carry a password: never printed whole.
    Postgres(String),
}

impl DatabaseLocation {
    /// The default: `keygate.db` in the data directory.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("keygate.db"))
    }

    /// `sqlite://path`, `sqlite:path`, `postgres://...` or `postgresql://...`.
    pub fn parse(url: &str) -> StoreResult<Self> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config(
                    "a sqlite: URL needs a file path, e.g. sqlite:///var/lib/keygate/keygate.db".into(),
                ));
            }
            return Ok(Self::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("(none)");
        Err(StoreError::Config(format!(
            "unsupported database URL scheme `{scheme}`: use sqlite:///path/to/keygate.db or postgres://user@host/db"
        )))
    }

    /// A description safe to print: the path, or host/port/database without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("SQLite {}", path.display()),
            Self::Postgres(url) => format!("PostgreSQL {}", redact_url(url)),
        }
    }
}

impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `postgres://user:pass@host:5432/db?x=y` → `postgres://user@host:5432/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparseable URL)".into();
    };
    let rest = rest.split('?').next().unwrap_or(rest);
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}@{host}")
        }
        None => rest.to_owned(),
    };
    format!("{scheme}://{rest}")
}

/// Opens the store at `location` and brings its schema up to date.
pub async fn connect(location: &DatabaseLocation) -> StoreResult<Arc<dyn Store>> {
    let store = connect_unmigrated(location).await?;
    store.migrate().await?;
    Ok(store)
}

/// Opens the store at `location` as it is, for checks that must not change it.
pub async fn connect_unmigrated(location: &DatabaseLocation) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match location {
        DatabaseLocation::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseLocation::Postgres(url) => Arc::new(PostgresStore::open(url).await?),
    };
    Ok(store)
}

/// Everything keygate persists. One implementation per backend; the same integration
/// suite runs against each.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    fn backend(&self) -> Backend;
    /// A round trip to the database.
    async fn ping(&self) -> StoreResult<()>;
    /// Applies every embedded migration not yet applied.
    async fn migrate(&self) -> StoreResult<()>;
    /// Descriptions of embedded migrations not yet applied.
    async fn pending_migrations(&self) -> StoreResult<Vec<String>>;
    /// How many migrations this build embeds.
    fn migration_count(&self) -> usize;
    async fn close(&self);

    // --- meta: small named blobs (the boot canary) ---
    async fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Inserts unless present; returns whether it inserted.
    async fn meta_insert(&self, key: &str, value: &[u8], now: DateTime<Utc>) -> StoreResult<bool>;
    // --- change epoch: cross-process cache invalidation ---
    /// Moves the change epoch on; answers its new value.
    async fn bump_change_epoch(&self) -> StoreResult<i64>;
    async fn change_epoch(&self) -> StoreResult<i64>;
    /// Notices of change-epoch bumps as they happen, from every process on this database
    /// (PostgreSQL `LISTEN keygate_changes`, reconnecting by itself), or `None` when the
    /// backend has none (SQLite: one process, the poll suffices). Each call opens its own
    /// listener, which stops when the receiver is dropped or the store is closed.
    fn change_notifications(&self) -> Option<ChangeFeed> {
        None
    }

    /// A named settings document (JSON text).
    async fn settings_get(&self, key: &str) -> StoreResult<Option<String>>;
    async fn settings_put(&self, key: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Replaces `expected` with `value`; returns whether it did (compare-and-set).
    async fn meta_replace(&self, key: &str, expected: &[u8], value: &[u8], now: DateTime<Utc>) -> StoreResult<bool>;

    // --- workspaces ---
    async fn insert_workspace(&self, workspace: &Workspace) -> StoreResult<()>;
    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Workspace>;
    async fn workspaces(&self) -> StoreResult<Vec<Workspace>>;
    async fn workspace_by_external_id(&self, external_id: &str) -> StoreResult<Option<Workspace>>;
    async fn set_workspace_status(
        &self,
        id: WorkspaceId,
        status: WorkspaceStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- users and memberships ---
    async fn insert_user(&self, user: &User, password_hash: Option<&str>) -> StoreResult<()>;
    async fn user(&self, id: UserId) -> StoreResult<User>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn user_by_external_id(&self, external_id: &str) -> StoreResult<Option<User>>;
    async fn users(&self) -> StoreResult<Vec<User>>;
    /// The user an OpenID Connect identity (issuer, subject) is linked to.
    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    /// Links an identity to an existing user; `Conflict` if the identity is linked already.
    async fn link_identity(&self, issuer: &str, subject: &str, user: UserId, now: DateTime<Utc>) -> StoreResult<()>;
    /// A new user (owner of a new personal workspace) with an identity linked, all or nothing.
    async fn provision_identity_user(
        &self,
        user: &User,
        workspace: &Workspace,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<()>;
    async fn update_user(&self, user: &User) -> StoreResult<()>;
    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>>;
    async fn set_password_hash(&self, id: UserId, hash: &str, now: DateTime<Utc>) -> StoreResult<()>;
    async fn upsert_membership(&self, membership: &Membership) -> StoreResult<()>;
    async fn membership(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Membership>>;
    async fn memberships_of_user(&self, user: UserId) -> StoreResult<Vec<Membership>>;
    /// Creates a user, a workspace and the user's membership in it, all or nothing.
    async fn provision_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        workspace: &Workspace,
        role: Role,
    ) -> StoreResult<()>;

    // --- data keys ---
    /// Fails with [`StoreError::Conflict`] if the owner already has one.
    async fn insert_data_key(&self, key: &DataKeyRecord) -> StoreResult<()>;
    async fn data_key(&self, id: DataKeyId) -> StoreResult<DataKeyRecord>;
    async fn data_key_by_owner(&self, owner: &KeyOwner) -> StoreResult<Option<DataKeyRecord>>;
    async fn data_keys(&self) -> StoreResult<Vec<DataKeyRecord>>;
    /// Replaces the wrapping if the row is still at `expected_version`; returns whether
    /// it did. The rotation's per-row compare-and-set.
    async fn rewrap_data_key(
        &self,
        id: DataKeyId,
        expected_version: i64,
        kek_id: &str,
        wrapped: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Forgets the wrapped key for good (crypto-shredding).
    async fn destroy_data_key(&self, owner: &KeyOwner, now: DateTime<Utc>) -> StoreResult<()>;
    /// Distinct KEK ids still wrapping a live data key.
    async fn kek_ids_in_use(&self) -> StoreResult<Vec<String>>;

    // --- credentials ---
    /// Fails with [`StoreError::Conflict`] if the owner already has an active credential
    /// for the provider.
    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()>;
    /// Saves a new credential with its audit row, all or nothing: takes the owner's write
    /// lock, checks that the active key in the same slot (owner, provider, operator-shared
    /// flag; see `Credential::slot_key`) is exactly `replaces` (else `StoreError::Changed`),
    /// deletes it, refuses with `StoreError::LimitReached { held, max }` when `max_user_keys`
    /// is `Some(max)` and the user then still holds `max` or more credentials (user scope,
    /// that owner_user_id, any status), inserts `credential`, inserts `audit`.
    ///
    /// The cap concerns personal keys only: it is not checked for workspace and operator
    /// keys. Concurrent saves for one owner (a user, a workspace, the operator) run one
    /// after the other, so they can neither pass the cap together nor both fill one slot.
    async fn save_credential(
        &self,
        credential: &Credential,
        replaces: Option<CredentialId>,
        max_user_keys: Option<u32>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    async fn credential(&self, id: CredentialId) -> StoreResult<Credential>;
    async fn credentials(&self, filter: &CredentialFilter) -> StoreResult<Vec<Credential>>;
    /// Everything that could serve `user` in `workspace` for `provider`, in one query (a
    /// cold call's lookup): the user's own keys there (any status), the workspace's active
    /// keys, and the operator's active keys; oldest first.
    async fn credential_candidates(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        provider: &str,
    ) -> StoreResult<Vec<Credential>>;
    /// Saves every mutable field of `credential` (not its id, owner, creation or last-use
    /// time) if its stored secret is still `sealed_before` (each sealing is unique, so it
    /// names one version of the key); otherwise fails with [`StoreError::Changed`] and
    /// writes nothing: a test or a rename never puts back a secret replaced meanwhile.
    /// `audit`, if any, is written in the same transaction: both or neither.
    async fn update_credential(
        &self,
        credential: &Credential,
        sealed_before: &[u8],
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()>;
    /// Deletes a credential and writes `audit` in the same transaction.
    async fn delete_credential(&self, id: CredentialId, audit: &AuditEvent) -> StoreResult<()>;

    // --- tokens ---
    /// Saves a new token and writes `audit` in the same transaction.
    async fn insert_token(&self, token: &ApiToken, audit: &AuditEvent) -> StoreResult<()>;
    /// A token with its user and acting workspace, in one query (a cold call's lookup).
    async fn token_principal(&self, public_id: &str) -> StoreResult<Option<TokenPrincipal>>;
    async fn tokens_of_user(&self, user: UserId) -> StoreResult<Vec<ApiToken>>;
    /// Records that a token was just used.
    async fn touch_token(&self, id: TokenId, now: DateTime<Utc>) -> StoreResult<()>;
    /// Revokes `id` if it belongs to `user`; [`StoreError::NotFound`] otherwise.
    /// `audit` is written in the same transaction.
    async fn revoke_token(&self, id: TokenId, user: UserId, now: DateTime<Utc>, audit: &AuditEvent) -> StoreResult<()>;

    // --- sandbox sessions (a session is a token with a `sessions` row) ---
    /// Saves a session's token, its rules and `audit` in one transaction.
    async fn insert_session(&self, token: &ApiToken, grant: &SessionGrant, audit: &AuditEvent) -> StoreResult<()>;
    /// The user's sessions neither revoked nor expired at `now`, oldest first.
    async fn live_sessions_of_user(&self, user: UserId, now: DateTime<Utc>) -> StoreResult<Vec<Session>>;
    /// Revokes session `id` if it is `user`'s ([`StoreError::NotFound`] otherwise, a
    /// token that is no session included); `audit` in the same transaction.
    async fn revoke_session(
        &self,
        id: TokenId,
        user: UserId,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// (calls, input + output tokens) recorded for a session.
    async fn session_usage(&self, id: TokenId) -> StoreResult<(i64, i64)>;

    // --- audit and usage history ---
    async fn insert_audit_event(&self, event: &AuditEvent) -> StoreResult<()>;
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
    /// Saves a batch of usage events and adds them to their credentials' totals, in one
    /// transaction.
    async fn insert_usage_events(&self, events: &[UsageEvent]) -> StoreResult<()>;
    async fn usage_events(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageEvent>>;
    /// Totals of the events `filter` selects (its `limit` is ignored), grouped by `by`,
    /// ordered by key (byte order); exact for any number of rows.
    async fn usage_report(&self, filter: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<UsageTotals>>;
    /// The same totals per UTC calendar day and group (one row per day and key that has
    /// events), ordered by day, then key; exact for any number of rows.
    async fn usage_by_day(&self, filter: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<DailyUsageTotals>>;
    /// (requests, input + output tokens) a user made through one key source since `since`.
    async fn usage_since(&self, user: UserId, key_source: KeySource, since: DateTime<Utc>) -> StoreResult<(i64, i64)>;
    /// When the user first used the demo allowance, if ever.
    async fn demo_first_use(&self, user: UserId) -> StoreResult<Option<DateTime<Utc>>>;
    /// Records the first demo use (keeps an earlier one); returns the first use in force.
    async fn record_demo_first_use(&self, user: UserId, at: DateTime<Utc>) -> StoreResult<DateTime<Utc>>;
}
