//! Limit counters in PostgreSQL, for several replicas on one database without Redis
//! (tables from migration 0009). Each admission is one atomic statement
//! (`INSERT … ON CONFLICT … DO UPDATE … WHERE within the limit … RETURNING`): the row
//! lock PostgreSQL takes for the conflict serialises concurrent admissions of one user,
//! so no two replicas can both take the last slot.
//!
//! Narrow on purpose: the service's limiter (`keygate_service::limits`) decides what a
//! call reserves; this only counts.

mod sessions;

pub use self::sessions::{SessionCounts, SessionNotTaken, SessionTaken};

use crate::{redact_url, StoreError, StoreResult};
use chrono::NaiveDate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// The counters' own small pool, so a busy store pool never delays an admission (and an
/// admission never waits longer than the limits timeout for a connection).
#[derive(Debug, Clone)]
pub struct PgLimits {
    pool: PgPool,
}

/// A reservation taken: how many tokens, and the day's total after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub tokens: u64,
    pub used: u64,
}

/// The request counters as an admission saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests within the sliding window.
    pub in_window: u32,
    /// Requests today.
    pub today: u32,
    /// The oldest admission within the window (microseconds since the epoch).
    pub oldest_us: Option<i64>,
}

fn unreachable(e: sqlx::Error) -> StoreError {
    StoreError::Unreachable { location: "PostgreSQL (limit counters)".into(), reason: e.to_string() }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgLimits {
    /// A lazy pool on `url`: nothing is dialled until the first admission, so a database
    /// that is down at start-up is reported per call (and by `/readyz`).
    pub fn connect(url: &str, timeout: Duration) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::Config(format!("`{}` is not a valid PostgreSQL URL", redact_url(url))))?;
        let statement_ms = timeout.as_millis().max(1).to_string();
        let options = options.options([("statement_timeout", statement_ms.as_str())]);
        let pool = PgPoolOptions::new().max_connections(8).acquire_timeout(timeout).connect_lazy_with(options);
        Ok(Self { pool })
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unreachable)?;
        Ok(())
    }

    /// Sets a day's token count unless the day is counted already.
    pub async fn seed_tokens(&self, user: Uuid, day: NaiveDate, used: u64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO limit_tokens (user_id, day, used) VALUES ($1, $2, $3) ON CONFLICT (user_id, day) DO NOTHING",
        )
        .bind(user)
        .bind(day)
        .bind(clamp(used))
        .execute(&self.pool)
        .await
        .map_err(unreachable)?;
        // Past days are never read again.
        sqlx::query("DELETE FROM limit_tokens WHERE user_id = $1 AND day < $2")
            .bind(user)
            .bind(day)
            .execute(&self.pool)
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    /// Reserves `want` tokens (capped to what is left under `limit`) if at least
    /// `at_least` are left; `Err(used)` when they are not. `want >= at_least >= 1`.
    pub async fn reserve_tokens(
        &self,
        user: Uuid,
        day: NaiveDate,
        limit: u64,
        at_least: u64,
        want: u64,
    ) -> StoreResult<Result<Reserved, u64>> {
        if at_least <= limit {
            let row = sqlx::query(
                "INSERT INTO limit_tokens AS t (user_id, day, used, last_reserved) VALUES ($1, $2, $5, $5) \
                 ON CONFLICT (user_id, day) DO UPDATE \
                 SET used = t.used + LEAST($5, $3 - t.used), last_reserved = LEAST($5, $3 - t.used) \
                 WHERE $3 - t.used >= $4 \
                 RETURNING used, last_reserved",
            )
            .bind(user)
            .bind(day)
            .bind(clamp(limit))
            .bind(clamp(at_least))
            .bind(clamp(want.min(limit)))
            .fetch_optional(&self.pool)
            .await
            .map_err(unreachable)?;
            if let Some(row) = row {
                let used: i64 = row.get(0);
                let tokens: i64 = row.get(1);
                return Ok(Ok(Reserved { tokens: tokens.max(0) as u64, used: used.max(0) as u64 }));
            }
        }
        Ok(Err(self.tokens_used(user, day).await?))
    }

    /// Replaces a reservation of `reserved` tokens with `actual`.
    pub async fn settle_tokens(&self, user: Uuid, day: NaiveDate, reserved: u64, actual: u64) -> StoreResult<()> {
        sqlx::query("UPDATE limit_tokens SET used = GREATEST(used - $3, 0) + $4 WHERE user_id = $1 AND day = $2")
            .bind(user)
            .bind(day)
            .bind(clamp(reserved))
            .bind(clamp(actual))
            .execute(&self.pool)
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    pub async fn tokens_used(&self, user: Uuid, day: NaiveDate) -> StoreResult<u64> {
        let used: Option<i64> = sqlx::query_scalar("SELECT used FROM limit_tokens WHERE user_id = $1 AND day = $2")
            .bind(user)
            .bind(day)
            .fetch_optional(&self.pool)
            .await
            .map_err(unreachable)?;
        Ok(used.unwrap_or(0).max(0) as u64)
    }

    /// Sets today's request count unless today is counted already (the sliding window's
    /// admissions are kept).
    pub async fn seed_requests(&self, user: Uuid, day: NaiveDate, used: u32) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO limit_requests AS r (user_id, day, day_count, stamps) VALUES ($1, $2, $3, '{}') \
             ON CONFLICT (user_id) DO UPDATE SET day = EXCLUDED.day, day_count = EXCLUDED.day_count \
             WHERE r.day < EXCLUDED.day",
        )
        .bind(user)
        .bind(day)
        .bind(i32::try_from(used).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .map_err(unreachable)?;
        Ok(())
    }

    /// Counts one request at `now_us` if fewer than `per_window` were admitted within the
    /// last `window_us` and fewer than `per_day` today: `Ok(counts after)`, or
    /// `Err(counts as they are)`.
    pub async fn admit_request(
        &self,
        user: Uuid,
        day: NaiveDate,
        now_us: i64,
        window_us: i64,
        per_window: u32,
        per_day: u32,
    ) -> StoreResult<Result<RequestCounts, RequestCounts>> {
        if per_window > 0 && per_day > 0 {
            let row = sqlx::query(
                "INSERT INTO limit_requests AS r (user_id, day, day_count, stamps) \
                 VALUES ($1, $2, 1, ARRAY[$3::bigint]) \
                 ON CONFLICT (user_id) DO UPDATE SET \
                   day = $2, \
                   day_count = CASE WHEN r.day = $2 THEN r.day_count + 1 ELSE 1 END, \
                   stamps = ARRAY(SELECT s FROM unnest(r.stamps) s WHERE s > $3 - $4) || $3::bigint \
                 WHERE (CASE WHEN r.day = $2 THEN r.day_count ELSE 0 END) < $6 \
                   AND (SELECT count(*) FROM unnest(r.stamps) s WHERE s > $3 - $4) < $5 \
                 RETURNING day_count, cardinality(stamps), stamps[1]",
            )
            .bind(user)
            .bind(day)
            .bind(now_us)
            .bind(window_us)
            .bind(i64::from(per_window))
            .bind(i64::from(per_day))
            .fetch_optional(&self.pool)
            .await
            .map_err(unreachable)?;
            if let Some(row) = row {
                let today: i32 = row.get(0);
                let in_window: i32 = row.get(1);
                let oldest: Option<i64> = row.get(2);
                return Ok(Ok(RequestCounts {
                    in_window: in_window.max(0) as u32,
                    today: today.max(0) as u32,
                    oldest_us: oldest,
                }));
            }
        }
        Ok(Err(self.requests_used(user, day, now_us, window_us).await?))
    }

    /// Takes back the request admitted at `stamp_us` on `day`.
    pub async fn refund_request(&self, user: Uuid, day: NaiveDate, stamp_us: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE limit_requests SET \
               day_count = CASE WHEN day = $2 THEN GREATEST(day_count - 1, 0) ELSE day_count END, \
               stamps = CASE WHEN array_position(stamps, $3::bigint) IS NULL THEN stamps \
                 ELSE stamps[:array_position(stamps, $3::bigint) - 1] || stamps[array_position(stamps, $3::bigint) + 1:] END \
             WHERE user_id = $1",
        )
        .bind(user)
        .bind(day)
        .bind(stamp_us)
        .execute(&self.pool)
        .await
        .map_err(unreachable)?;
        Ok(())
    }

    /// The counters at `now_us`, admitting nothing.
    pub async fn requests_used(
        &self,
        user: Uuid,
        day: NaiveDate,
        now_us: i64,
        window_us: i64,
    ) -> StoreResult<RequestCounts> {
        let row = sqlx::query(
            "SELECT CASE WHEN day = $2 THEN day_count ELSE 0 END, \
               (SELECT count(*) FROM unnest(stamps) s WHERE s > $3 - $4), \
               (SELECT min(s) FROM unnest(stamps) s WHERE s > $3 - $4) \
             FROM limit_requests WHERE user_id = $1",
        )
        .bind(user)
        .bind(day)
        .bind(now_us)
        .bind(window_us)
        .fetch_optional(&self.pool)
        .await
        .map_err(unreachable)?;
        Ok(match row {
            None => RequestCounts { in_window: 0, today: 0, oldest_us: None },
            Some(row) => {
                let today: i32 = row.get(0);
                let in_window: i64 = row.get(1);
                RequestCounts {
                    in_window: u32::try_from(in_window.max(0)).unwrap_or(u32::MAX),
                    today: today.max(0) as u32,
                    oldest_us: row.get(2),
                }
            }
        })
    }
}
