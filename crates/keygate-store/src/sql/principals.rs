//! Who is who: workspaces, users, their memberships, and the API tokens users call with
//! (a token's cold lookup joins all four in one query).

use super::{db_run, expect_one, Conn, Pool};
use crate::rows::*;
use crate::ts::Ts;
use crate::{StoreError, StoreResult, TokenPrincipal};
use chrono::{DateTime, Utc};
use keygate_core::*;

impl Pool<'_> {
    pub(super) async fn insert_workspace(self, ws: &Workspace) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            Conn::from(&mut *conn).insert_workspace(ws).await
        })
    }

    pub(super) async fn workspace(self, id: WorkspaceId) -> StoreResult<Workspace> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, WorkspaceRow>(concat!(
                "SELECT ",
                workspace_columns!(),
                " FROM workspaces WHERE id = $1"
            ))
            .bind(id.as_uuid())
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| StoreError::not_found("workspace", id))?
            .try_into()
        })
    }

    pub(super) async fn workspaces(self) -> StoreResult<Vec<Workspace>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, WorkspaceRow>(concat!("SELECT ", workspace_columns!(), " FROM workspaces ORDER BY id"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
        })
    }

    pub(super) async fn workspace_by_external_id(self, external_id: &str) -> StoreResult<Option<Workspace>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, WorkspaceRow>(concat!(
                "SELECT ",
                workspace_columns!(),
                " FROM workspaces WHERE external_id = $1"
            ))
            .bind(external_id)
            .fetch_optional(pool)
            .await?
            .map(TryInto::try_into)
            .transpose()
        })
    }

    pub(super) async fn set_workspace_status(
        self,
        id: WorkspaceId,
        status: WorkspaceStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let done = sqlx::query("UPDATE workspaces SET status = $1, updated_at = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(Ts(now))
                .bind(id.as_uuid())
                .execute(pool)
                .await?;
            expect_one(done.rows_affected(), "workspace", id)
        })
    }

    pub(super) async fn insert_user(self, user: &User, password_hash: Option<&str>) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            Conn::from(&mut *conn).insert_user(user, password_hash).await
        })
    }

    pub(super) async fn user(self, id: UserId) -> StoreResult<User> {
        db_run!(self, |pool| {
            let row = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                .bind(id.as_uuid())
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| StoreError::not_found("user", id))?;
            Ok(row.into())
        })
    }

    pub(super) async fn user_by_email(self, email: &str) -> StoreResult<Option<User>> {
        db_run!(self, |pool| {
            let row = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"))
                .bind(email)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(Into::into))
        })
    }

    pub(super) async fn user_by_external_id(self, external_id: &str) -> StoreResult<Option<User>> {
        db_run!(self, |pool| {
            let row =
                sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE external_id = $1"))
                    .bind(external_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(Into::into))
        })
    }

    pub(super) async fn users(self) -> StoreResult<Vec<User>> {
        db_run!(self, |pool| {
            let rows = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users ORDER BY id"))
                .fetch_all(pool)
                .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    pub(super) async fn update_user(self, user: &User) -> StoreResult<()> {
        db_run!(self, |pool| {
            let done = sqlx::query(
                "UPDATE users SET email = $1, external_id = $2, tier = $3, super_admin = $4, updated_at = $5 \
                 WHERE id = $6",
            )
            .bind(&user.email)
            .bind(&user.external_id)
            .bind(&user.tier)
            .bind(user.super_admin)
            .bind(Ts(user.updated_at))
            .bind(user.id.as_uuid())
            .execute(pool)
            .await?;
            expect_one(done.rows_affected(), "user", user.id)
        })
    }

    pub(super) async fn password_hash(self, id: UserId) -> StoreResult<Option<String>> {
        db_run!(self, |pool| {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
                .bind(id.as_uuid())
                .fetch_optional(pool)
                .await?;
            row.map(|r| r.0).ok_or_else(|| StoreError::not_found("user", id))
        })
    }

    pub(super) async fn set_password_hash(self, id: UserId, hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        db_run!(self, |pool| {
            let done = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(Ts(now))
                .bind(id.as_uuid())
                .execute(pool)
                .await?;
            expect_one(done.rows_affected(), "user", id)
        })
    }

    pub(super) async fn upsert_membership(self, m: &Membership) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query(concat!(
                "INSERT INTO memberships (",
                membership_columns!(),
                ") VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role"
            ))
            .bind(m.workspace_id.as_uuid())
            .bind(m.user_id.as_uuid())
            .bind(m.role.as_str())
            .bind(Ts(m.created_at))
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub(super) async fn membership(self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Membership>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, MembershipRow>(concat!(
                "SELECT ",
                membership_columns!(),
                " FROM memberships WHERE workspace_id = $1 AND user_id = $2"
            ))
            .bind(workspace.as_uuid())
            .bind(user.as_uuid())
            .fetch_optional(pool)
            .await?
            .map(TryInto::try_into)
            .transpose()
        })
    }

    pub(super) async fn memberships_of_user(self, user: UserId) -> StoreResult<Vec<Membership>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, MembershipRow>(concat!(
                "SELECT ",
                membership_columns!(),
                " FROM memberships WHERE user_id = $1 ORDER BY workspace_id"
            ))
            .bind(user.as_uuid())
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
        })
    }

    pub(super) async fn provision_user(
        self,
        user: &User,
        password_hash: Option<&str>,
        workspace: &Workspace,
        role: Role,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            Conn::from(&mut *tx).insert_workspace(workspace).await?;
            Conn::from(&mut *tx).insert_user(user, password_hash).await?;
            sqlx::query(concat!("INSERT INTO memberships (", membership_columns!(), ") VALUES ($1, $2, $3, $4)"))
                .bind(workspace.id.as_uuid())
                .bind(user.id.as_uuid())
                .bind(role.as_str())
                .bind(Ts(user.created_at))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn insert_token(self, t: &ApiToken, audit: &AuditEvent) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(concat!(
                "INSERT INTO api_tokens (",
                token_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(t.id.as_uuid())
            .bind(&t.public_id)
            .bind(&t.secret_hash)
            .bind(t.user_id.as_uuid())
            .bind(t.workspace_id.map(|w| w.as_uuid()))
            .bind(&t.name)
            .bind(t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
            .bind(crate::ts::opt(t.expires_at))
            .bind(Ts(t.created_at))
            .bind(crate::ts::opt(t.last_used_at))
            .bind(crate::ts::opt(t.revoked_at))
            .execute(&mut *tx)
            .await?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn token_principal(self, public_id: &str) -> StoreResult<Option<TokenPrincipal>> {
        db_run!(self, |pool| {
            sqlx::query_as::<_, TokenPrincipalRow>(token_principal_select!())
                .bind(public_id)
                .fetch_optional(pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
        })
    }

    pub(super) async fn tokens_of_user(self, user: UserId) -> StoreResult<Vec<ApiToken>> {
        db_run!(self, |pool| {
            let rows = sqlx::query_as::<_, TokenRow>(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE user_id = $1 AND id NOT IN (SELECT token_id FROM sessions) \
                 ORDER BY created_at, id"
            ))
            .bind(user.as_uuid())
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }

    pub(super) async fn touch_token(self, id: TokenId, now: DateTime<Utc>) -> StoreResult<()> {
        db_run!(self, |pool| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(Ts(now))
                .bind(id.as_uuid())
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub(super) async fn revoke_token(
        self,
        id: TokenId,
        user: UserId,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3",
            )
            .bind(Ts(now))
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
            expect_one(done.rows_affected(), "token", id)?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Conn<'_> {
    pub(super) async fn insert_workspace(self, ws: &Workspace) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query(concat!(
                "INSERT INTO workspaces (",
                workspace_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind(ws.id.as_uuid())
            .bind(&ws.name)
            .bind(ws.status.as_str())
            .bind(ws.personal)
            .bind(&ws.external_id)
            .bind(Ts(ws.created_at))
            .bind(Ts(ws.updated_at))
            .execute(conn)
            .await?;
            Ok(())
        })
    }

    pub(super) async fn insert_user(self, user: &User, password_hash: Option<&str>) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query(concat!(
                "INSERT INTO users (",
                user_columns!(),
                ", password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(user.id.as_uuid())
            .bind(&user.email)
            .bind(&user.external_id)
            .bind(&user.tier)
            .bind(user.super_admin)
            .bind(Ts(user.created_at))
            .bind(Ts(user.updated_at))
            .bind(password_hash)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}
