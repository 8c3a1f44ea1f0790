//! A sandbox session's counters in PostgreSQL (table `limit_sessions`, migration 0010):
//! requests admitted and tokens used over the session's life. An admission is one
//! `UPDATE … WHERE within the caps … RETURNING`: the row lock serialises concurrent
//! admissions of one session, whichever replica makes them.

use super::{clamp, unreachable, PgLimits};
use crate::StoreResult;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

/// A session's counters as an admission saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCounts {
    pub requests: u64,
    pub tokens: u64,
}

/// What an admission took, and the counters after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTaken {
    pub tokens: u64,
    pub counts: SessionCounts,
}

/// Why an admission took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionNotTaken {
    /// A cap is reached: the counters as they are.
    Capped(SessionCounts),
    /// Nobody seeded this session's counters (or they were swept).
    Unseeded,
}

fn counts(requests: i64, tokens: i64) -> SessionCounts {
    SessionCounts { requests: requests.max(0) as u64, tokens: tokens.max(0) as u64 }
}

impl PgLimits {
    /// Sets a session's counters unless they exist; sweeps those of sessions expired an
    /// hour ago or more.
    pub async fn seed_session(
        &self,
        session: Uuid,
        expires_at: DateTime<Utc>,
        requests: u64,
        tokens: u64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO limit_sessions (session_id, requests, tokens, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(session)
        .bind(clamp(requests))
        .bind(clamp(tokens))
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(unreachable)?;
        sqlx::query("DELETE FROM limit_sessions WHERE expires_at < now() - interval '1 hour'")
            .execute(&self.pool)
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    /// Counts one request if fewer than `max_requests` were admitted, and reserves `want`
    /// tokens (capped to what is left of `max_tokens`) if at least `at_least` are left;
    /// with no `max_tokens`, reserves nothing (what is used is added when it settles).
    pub async fn admit_session(
        &self,
        session: Uuid,
        max_requests: Option<u64>,
        max_tokens: Option<u64>,
        at_least: u64,
        want: u64,
    ) -> StoreResult<Result<SessionTaken, SessionNotTaken>> {
        let row = sqlx::query(
            "UPDATE limit_sessions AS s SET requests = s.requests + 1, \
               tokens = s.tokens + CASE WHEN $3::bigint IS NULL THEN 0 ELSE LEAST($5, $3 - s.tokens) END, \
               last_reserved = CASE WHEN $3::bigint IS NULL THEN 0 ELSE LEAST($5, $3 - s.tokens) END \
             WHERE session_id = $1 \
               AND ($2::bigint IS NULL OR s.requests < $2) \
               AND ($3::bigint IS NULL OR ($3 - s.tokens >= $4 AND $3 - s.tokens > 0)) \
             RETURNING requests, tokens, last_reserved",
        )
        .bind(session)
        .bind(max_requests.map(clamp))
        .bind(max_tokens.map(clamp))
        .bind(clamp(at_least))
        .bind(clamp(want))
        .fetch_optional(&self.pool)
        .await
        .map_err(unreachable)?;
        if let Some(row) = row {
            let taken: i64 = row.get(2);
            return Ok(Ok(SessionTaken { tokens: taken.max(0) as u64, counts: counts(row.get(0), row.get(1)) }));
        }
        Ok(Err(match self.session_used(session).await? {
            Some(now) => SessionNotTaken::Capped(now),
            None => SessionNotTaken::Unseeded,
        }))
    }

    /// Replaces a reservation of `reserved` tokens with `actual`, and takes the request
    /// back when `refund_request`.
    pub async fn settle_session(
        &self,
        session: Uuid,
        reserved: u64,
        actual: u64,
        refund_request: bool,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE limit_sessions SET tokens = GREATEST(tokens - $2, 0) + $3, \
             requests = GREATEST(requests - $4, 0) WHERE session_id = $1",
        )
        .bind(session)
        .bind(clamp(reserved))
        .bind(clamp(actual))
        .bind(i64::from(refund_request))
        .execute(&self.pool)
        .await
        .map_err(unreachable)?;
        Ok(())
    }

    /// A session's counters, if seeded.
    pub async fn session_used(&self, session: Uuid) -> StoreResult<Option<SessionCounts>> {
        let row = sqlx::query("SELECT requests, tokens FROM limit_sessions WHERE session_id = $1")
            .bind(session)
            .fetch_optional(&self.pool)
            .await
            .map_err(unreachable)?;
        Ok(row.map(|row| counts(row.get(0), row.get(1))))
    }
}
