//! Credentials as stored: sealed secrets with their owner, provider, status and running
//! usage totals. Every query names its owner; "one active key per owner and provider"
//! is the partial unique index on `(owner_key, provider)`, where `owner_key` holds
//! [`Credential::slot_key`]. Each credential's highest secret version is also kept apart
//! (`credential_secret_versions`), so writing a row back from an older copy cannot lower
//! the version its record must open at.

use super::{db_run, expect_one, Conn, Pool};
use crate::filter::CredentialFilter;
use crate::rows::*;
use crate::ts::Ts;
use crate::{StoreError, StoreResult};
use keygate_core::*;
use uuid::Uuid;

/// The highest secret version written for a credential: it only ever rises, so a row
/// written back from an older copy reads at the newer version and its record fails to
/// open (see `rows::credential_select`).
const RECORD_SECRET_VERSION: &str = "INSERT INTO credential_secret_versions (credential_id, secret_version) \
     VALUES ($1, $2) ON CONFLICT (credential_id) DO UPDATE SET secret_version = excluded.secret_version \
     WHERE credential_secret_versions.secret_version < excluded.secret_version";

impl Pool<'_> {
    pub(super) async fn insert_credential(self, c: &Credential) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            Conn::from(&mut *conn).insert_credential(c).await
        })
    }

    pub(super) async fn save_credential(
        self,
        c: &Credential,
        replaces: Option<CredentialId>,
        max_user_keys: Option<u32>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            Conn::from(&mut *tx).lock_owner(c).await?;
            let active: Option<(Uuid,)> = sqlx::query_as(
                "SELECT id FROM credentials WHERE owner_key = $1 AND provider = $2 AND status = 'active'",
            )
            .bind(c.slot_key())
            .bind(&c.provider)
            .fetch_optional(&mut *tx)
            .await?;
            let active = active.map(|(id,)| CredentialId::from_uuid(id));
            if active != replaces {
                // Name the key that appeared, or the one expected that is gone.
                let id = active.or(replaces).map_or_else(String::new, |id| id.to_string());
                return Err(StoreError::Changed { entity: "credential", id });
            }
            if let Some(old) = replaces {
                sqlx::query("DELETE FROM credentials WHERE id = $1").bind(old.as_uuid()).execute(&mut *tx).await?;
                Conn::from(&mut *tx).forget_secret_version(old).await?;
            }
            if let (Some(max), CredentialScope::User, Some(user)) = (max_user_keys, c.scope, c.owner_user_id) {
                let (held,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM credentials WHERE scope = 'user' AND owner_user_id = $1")
                        .bind(user.as_uuid())
                        .fetch_one(&mut *tx)
                        .await?;
                let held = u32::try_from(held).unwrap_or(u32::MAX);
                if held >= max {
                    return Err(StoreError::LimitReached { held, max });
                }
            }
            Conn::from(&mut *tx).insert_credential(c).await?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn credential(self, id: CredentialId) -> StoreResult<Credential> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, CredentialRow>(concat!(
                "SELECT ",
                credential_select!(),
                " FROM credentials WHERE id = $1"
            ))
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("credential", id))?
            .try_into()
        })
    }

    pub(super) async fn credentials(self, f: &CredentialFilter) -> StoreResult<Vec<Credential>> {
        db_run!(self, |pool| {
            let mut q =
                sqlx::QueryBuilder::new(concat!("SELECT ", credential_select!(), " FROM credentials WHERE 1 = 1"));
            if let Some(scope) = f.scope {
                q.push(" AND scope = ").push_bind(scope.as_str());
            }
            if let Some(ws) = f.workspace_id {
                q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
            }
            if let Some(user) = f.owner_user_id {
                q.push(" AND owner_user_id = ").push_bind(user.as_uuid());
            }
            if let Some(provider) = &f.provider {
                q.push(" AND provider = ").push_bind(provider.clone());
            }
            if let Some(status) = f.status {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(dk) = f.data_key_id {
                q.push(" AND data_key_id = ").push_bind(dk.as_uuid());
            }
            q.push(" ORDER BY created_at, id");
            q.build_query_as::<CredentialRow>().fetch_all(pool).await?.into_iter().map(TryInto::try_into).collect()
        })
    }

    pub(super) async fn credential_candidates(
        self,
        workspace: WorkspaceId,
        user: UserId,
        provider: &str,
    ) -> StoreResult<Vec<Credential>> {
        // Three selects, each on the index made for it (a single WHERE with ORs leaves
        // SQLite's planner free to scan).
        db_run!(self, |pool| {
            sqlx::query_as::<_, CredentialRow>(concat!(
                "SELECT ",
                credential_select!(),
                " FROM credentials \
                 WHERE scope = 'user' AND workspace_id = $1 AND owner_user_id = $2 AND provider = $3 \
                 UNION ALL SELECT ",
                credential_select!(),
                " FROM credentials \
                 WHERE scope = 'workspace' AND workspace_id = $1 AND provider = $3 AND status = 'active' \
                 UNION ALL SELECT ",
                credential_select!(),
                " FROM credentials \
                 WHERE scope = 'operator' AND provider = $3 AND status = 'active' \
                 ORDER BY created_at, id"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .bind(provider)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
        })
    }

    pub(super) async fn update_credential(
        self,
        c: &Credential,
        sealed_before: &[u8],
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE credentials SET name = $1, hint = $2, model = $3, status = $4, validity = $5, \
                 validity_detail = $6, validity_checked_at = $7, operator_shared = $8, sealed = $9, \
                 data_key_id = $10, updated_at = $11, owner_key = $12, secret_version = $15 \
                 WHERE id = $13 AND sealed = $14",
            )
            .bind(&c.name)
            .bind(&c.hint)
            .bind(&c.model)
            .bind(c.status.as_str())
            .bind(c.validity.as_str())
            .bind(&c.validity_detail)
            .bind(crate::ts::opt(c.validity_checked_at))
            .bind(c.operator_shared)
            .bind(&c.sealed)
            .bind(c.data_key_id.as_uuid())
            .bind(Ts(c.updated_at))
            .bind(c.slot_key())
            .bind(c.id.as_uuid())
            .bind(sealed_before)
            .bind(i64::from(c.secret_version))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                Conn::from(&mut *tx).record_secret_version(c).await?;
                if let Some(audit) = audit {
                    Conn::from(&mut *tx).insert_audit_event(audit).await?;
                }
                tx.commit().await?;
                return Ok(());
            }
            let exists: Option<(i64,)> = sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM credentials WHERE id = $1")
                .bind(c.id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
            Err(match exists {
                Some(_) => StoreError::Changed { entity: "credential", id: c.id.to_string() },
                None => StoreError::not_found("credential", c.id),
            })
        })
    }

    pub(super) async fn delete_credential(self, id: CredentialId, audit: &AuditEvent) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done =
                sqlx::query("DELETE FROM credentials WHERE id = $1").bind(id.as_uuid()).execute(&mut *tx).await?;
            expect_one(done.rows_affected(), "credential", id)?;
            Conn::from(&mut *tx).forget_secret_version(id).await?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Conn<'_> {
    /// Holds the write lock of `c`'s owner until the transaction ends, so that saves for
    /// one owner run one at a time, on both backends, by starting with a write that
    /// changes nothing: PostgreSQL locks the owner's row (the user's for a personal key,
    /// since the per-user cap spans workspaces; the workspace's; the change-epoch row for
    /// the operator); SQLite takes its one database write lock, waiting up to its busy
    /// timeout. Writing first matters there: a transaction that read first and then
    /// wanted to write would fail with SQLITE_BUSY instead of waiting.
    async fn lock_owner(self, c: &Credential) -> StoreResult<()> {
        let locked = db_run!(self, |conn| {
            let lock = match c.scope {
                CredentialScope::User => sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
                    .bind(c.owner_user_id.map(|u| u.as_uuid())),
                CredentialScope::Workspace => {
                    sqlx::query("UPDATE workspaces SET updated_at = updated_at WHERE id = $1")
                        .bind(c.workspace_id.map(|w| w.as_uuid()))
                }
                CredentialScope::Operator => sqlx::query("UPDATE change_epoch SET epoch = epoch WHERE id = 1"),
            };
            lock.execute(conn).await?.rows_affected()
        });
        let (entity, id) = match c.scope {
            CredentialScope::User => ("user", c.owner_user_id.map(|u| u.to_string())),
            CredentialScope::Workspace => ("workspace", c.workspace_id.map(|w| w.to_string())),
            CredentialScope::Operator => ("change epoch", Some("1".to_owned())),
        };
        expect_one(locked, entity, id.unwrap_or_else(|| "(none)".to_owned()))
    }

    async fn insert_credential(self, c: &Credential) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query(concat!(
                "INSERT INTO credentials (",
                credential_columns!(),
                ", owner_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, $22, $23, $24)"
            ))
            .bind(c.id.as_uuid())
            .bind(c.scope.as_str())
            .bind(c.workspace_id.map(|w| w.as_uuid()))
            .bind(c.owner_user_id.map(|u| u.as_uuid()))
            .bind(&c.provider)
            .bind(&c.name)
            .bind(&c.hint)
            .bind(&c.model)
            .bind(c.status.as_str())
            .bind(c.validity.as_str())
            .bind(&c.validity_detail)
            .bind(crate::ts::opt(c.validity_checked_at))
            .bind(c.operator_shared)
            .bind(&c.sealed)
            .bind(c.data_key_id.as_uuid())
            .bind(Ts(c.created_at))
            .bind(Ts(c.updated_at))
            .bind(crate::ts::opt(c.last_used_at))
            .bind(c.usage.requests)
            .bind(c.usage.input_tokens)
            .bind(c.usage.output_tokens)
            .bind(c.usage.cost_nano_usd)
            .bind(i64::from(c.secret_version))
            .bind(c.slot_key())
            .execute(&mut *conn)
            .await?;
            sqlx::query(RECORD_SECRET_VERSION)
                .bind(c.id.as_uuid())
                .bind(i64::from(c.secret_version))
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    /// Raises the highest secret version recorded for `c` to its own (never lowers it).
    async fn record_secret_version(self, c: &Credential) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query(RECORD_SECRET_VERSION)
                .bind(c.id.as_uuid())
                .bind(i64::from(c.secret_version))
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    async fn forget_secret_version(self, id: CredentialId) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query("DELETE FROM credential_secret_versions WHERE credential_id = $1")
                .bind(id.as_uuid())
                .execute(conn)
                .await?;
            Ok(())
        })
    }
}
