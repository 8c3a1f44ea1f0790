//! Sign-in identities: an OpenID Connect issuer's subject linked to a keygate user
//! (migration 0011).

use super::{db_run, Conn, Pool};
use crate::rows::*;
use crate::ts::Ts;
use crate::StoreResult;
use chrono::{DateTime, Utc};
use keygate_core::*;

impl Pool<'_> {
    pub(super) async fn user_by_identity(self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        db_run!(self, |pool| {
            let row = sqlx::query_as::<_, UserRow>(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = (SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2)"
            ))
            .bind(issuer)
            .bind(subject)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(Into::into))
        })
    }

    pub(super) async fn link_identity(
        self,
        issuer: &str,
        subject: &str,
        user: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            Conn::from(&mut *conn).insert_identity(issuer, subject, user, now).await
        })
    }

    pub(super) async fn provision_identity_user(
        self,
        user: &User,
        workspace: &Workspace,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            Conn::from(&mut *tx).insert_workspace(workspace).await?;
            Conn::from(&mut *tx).insert_user(user, None).await?;
            sqlx::query(concat!("INSERT INTO memberships (", membership_columns!(), ") VALUES ($1, $2, $3, $4)"))
                .bind(workspace.id.as_uuid())
                .bind(user.id.as_uuid())
                .bind(Role::Owner.as_str())
                .bind(Ts(user.created_at))
                .execute(&mut *tx)
                .await?;
            Conn::from(&mut *tx).insert_identity(issuer, subject, user.id, user.created_at).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Conn<'_> {
    async fn insert_identity(self, issuer: &str, subject: &str, user: UserId, now: DateTime<Utc>) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query("INSERT INTO user_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
                .bind(issuer)
                .bind(subject)
                .bind(user.as_uuid())
                .bind(Ts(now))
                .execute(conn)
                .await?;
            Ok(())
        })
    }
}
