//! Sandbox sessions: a token (`api_tokens`) with a `sessions` row naming the providers it
//! may call and its caps. Saved, listed, revoked, and their recorded usage summed (to
//! seed a session's counters in a process that has not counted it yet).

use super::{db_run, expect_one, Conn, Pool};
use crate::rows::*;
use crate::ts::Ts;
use crate::StoreResult;
use chrono::{DateTime, Utc};
use keygate_core::*;

fn cap(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl Pool<'_> {
    pub(super) async fn insert_session(
        self,
        t: &ApiToken,
        grant: &SessionGrant,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
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
            sqlx::query("INSERT INTO sessions (token_id, providers, max_requests, max_tokens) VALUES ($1, $2, $3, $4)")
                .bind(t.id.as_uuid())
                .bind(grant.providers.join(" "))
                .bind(cap(grant.max_requests))
                .bind(cap(grant.max_tokens))
                .execute(&mut *tx)
                .await?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn live_sessions_of_user(self, user: UserId, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
        db_run!(self, |pool| {
            let rows = sqlx::query_as::<_, SessionTokenRow>(concat!(
                "SELECT ",
                token_columns!(),
                ", ",
                session_columns!(),
                " FROM api_tokens JOIN sessions s ON s.token_id = api_tokens.id \
                 WHERE api_tokens.user_id = $1 AND api_tokens.revoked_at IS NULL \
                 AND api_tokens.expires_at > $2 ORDER BY api_tokens.created_at, api_tokens.id"
            ))
            .bind(user.as_uuid())
            .bind(Ts(now))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }

    pub(super) async fn revoke_session(
        self,
        id: TokenId,
        user: UserId,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3 \
                 AND id IN (SELECT token_id FROM sessions WHERE token_id = $2)",
            )
            .bind(Ts(now))
            .bind(id.as_uuid())
            .bind(user.as_uuid())
            .execute(&mut *tx)
            .await?;
            expect_one(done.rows_affected(), "session", id)?;
            Conn::from(&mut *tx).insert_audit_event(audit).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn session_usage(self, id: TokenId) -> StoreResult<(i64, i64)> {
        db_run!(self, |pool| {
            // Counted as the live counters count: a call the provider failed (5xx) gave
            // its request back; one whose caller hung up (499) did not.
            let row: (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT CAST(SUM(CASE WHEN status < 500 THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(SUM(input_tokens + output_tokens) AS BIGINT) FROM usage_events WHERE session_id = $1",
            )
            .bind(id.as_uuid())
            .fetch_one(pool)
            .await?;
            Ok((row.0.unwrap_or(0), row.1.unwrap_or(0)))
        })
    }
}
