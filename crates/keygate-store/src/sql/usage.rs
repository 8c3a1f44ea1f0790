//! Usage history: events appended in batches (each batch also moves its credentials'
//! running totals), read back filtered, and summed for the demo allowance and limits.

use super::{db_run, Pool, USAGE_ROWS_PER_INSERT};
use crate::filter::UsageFilter;
use crate::rows::*;
use crate::ts::Ts;
use crate::StoreResult;
use chrono::{DateTime, Utc};
use keygate_core::*;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What one batch adds to one credential's totals.
#[derive(Debug, Clone, Copy)]
struct Added {
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_nano_usd: i64,
    last_used_at: DateTime<Utc>,
}

impl Pool<'_> {
    pub(super) async fn insert_usage_events(self, events: &[UsageEvent]) -> StoreResult<()> {
        // Each credential's totals move once per batch, in id order (no deadlocks between
        // concurrent writers); events go in as multi-row inserts.
        let mut totals: BTreeMap<Uuid, Added> = BTreeMap::new();
        for e in events {
            if let Some(credential) = e.credential_id {
                let t = totals.entry(credential.as_uuid()).or_insert(Added {
                    requests: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_nano_usd: 0,
                    last_used_at: e.at,
                });
                t.requests += 1;
                t.input_tokens += e.input_tokens;
                t.output_tokens += e.output_tokens;
                t.cost_nano_usd += e.cost_nano_usd;
                t.last_used_at = t.last_used_at.max(e.at);
            }
        }
        db_run!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in events.chunks(USAGE_ROWS_PER_INSERT) {
                let mut q = sqlx::QueryBuilder::new(concat!("INSERT INTO usage_events (", usage_columns!(), ") "));
                q.push_values(chunk, |mut row, e| {
                    row.push_bind(e.id.as_uuid())
                        .push_bind(Ts(e.at))
                        .push_bind(e.user_id.map(|u| u.as_uuid()))
                        .push_bind(e.workspace_id.map(|w| w.as_uuid()))
                        .push_bind(e.credential_id.map(|c| c.as_uuid()))
                        .push_bind(&e.key_source)
                        .push_bind(&e.provider)
                        .push_bind(&e.model)
                        .push_bind(e.input_tokens)
                        .push_bind(e.output_tokens)
                        .push_bind(e.cost_nano_usd)
                        .push_bind(e.status)
                        .push_bind(e.latency_ms);
                });
                q.build().execute(&mut *tx).await?;
            }
            for (credential, t) in &totals {
                sqlx::query(
                    "UPDATE credentials SET usage_requests = usage_requests + $1, \
                     usage_input_tokens = usage_input_tokens + $2, usage_output_tokens = usage_output_tokens + $3, \
                     usage_cost_nano_usd = usage_cost_nano_usd + $4, \
                     last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END \
                     WHERE id = $6",
                )
                .bind(t.requests)
                .bind(t.input_tokens)
                .bind(t.output_tokens)
                .bind(t.cost_nano_usd)
                .bind(Ts(t.last_used_at))
                .bind(credential)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub(super) async fn usage_events(self, f: &UsageFilter) -> StoreResult<Vec<UsageEvent>> {
        db_run!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE 1 = 1"));
            if let Some(user) = f.user_id {
                q.push(" AND user_id = ").push_bind(user.as_uuid());
            }
            if let Some(ws) = f.workspace_id {
                q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
            }
            if let Some(c) = f.credential_id {
                q.push(" AND credential_id = ").push_bind(c.as_uuid());
            }
            if let Some(p) = &f.provider {
                q.push(" AND provider = ").push_bind(p.clone());
            }
            if let Some(since) = f.since {
                q.push(" AND at >= ").push_bind(Ts(since));
            }
            if let Some(until) = f.until {
                q.push(" AND at < ").push_bind(Ts(until));
            }
            q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(10_000).clamp(1, 100_000));
            let rows = q.build_query_as::<UsageRow>().fetch_all(pool).await?;
            Ok(rows.into_iter().map(Into::into).collect())
        })
    }

    pub(super) async fn usage_since(
        self,
        user: UserId,
        key_source: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<(i64, i64)> {
        db_run!(self, |pool| {
            let row: (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(input_tokens + output_tokens) AS BIGINT) FROM usage_events \
                 WHERE user_id = $1 AND key_source = $2 AND at >= $3",
            )
            .bind(user.as_uuid())
            .bind(key_source)
            .bind(Ts(since))
            .fetch_one(pool)
            .await?;
            Ok((row.0, row.1.unwrap_or(0)))
        })
    }

    pub(super) async fn demo_first_use(self, user: UserId) -> StoreResult<Option<DateTime<Utc>>> {
        db_run!(self, |pool| {
            let row: Option<(Ts,)> = sqlx::query_as("SELECT first_used_at FROM demo_first_use WHERE user_id = $1")
                .bind(user.as_uuid())
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(at,)| at.0))
        })
    }

    pub(super) async fn record_demo_first_use(self, user: UserId, at: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
        db_run!(self, |pool| {
            sqlx::query(
                "INSERT INTO demo_first_use (user_id, first_used_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user.as_uuid())
            .bind(Ts(at))
            .execute(pool)
            .await?;
        });
        Ok(self.demo_first_use(user).await?.unwrap_or(at))
    }
}
