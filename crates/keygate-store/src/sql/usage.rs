//! Usage history: events appended in batches (each batch also moves its credentials'
//! running totals), read back filtered, summed for the demo allowance and limits, and
//! totalled by group (or by UTC day and group) for reports.

use super::{db_run, Pool, USAGE_ROWS_PER_INSERT};
use crate::filter::UsageFilter;
use crate::rows::*;
use crate::ts::Ts;
use crate::{Backend, DailyUsageTotals, StoreError, StoreResult, UsageGrouping, UsageTotals};
use chrono::{DateTime, NaiveDate, Utc};
use keygate_core::*;
use sqlx::{Encode, QueryBuilder, Type};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The columns a usage report sums, after its key.
const REPORT_SUMS: &str = "COUNT(*), CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
                           CAST(SUM(cost_nano_usd) AS BIGINT)";

/// One group as the database returns it: its raw key, then [`REPORT_SUMS`].
type Group<K> = (Option<K>, i64, i64, i64, i64);

/// One day's group as the database returns it: the day (`YYYY-MM-DD`), the raw key, then
/// [`REPORT_SUMS`].
type DayGroup<K> = (String, Option<K>, i64, i64, i64, i64);

/// What one batch adds to one credential's totals.
#[derive(Debug, Clone, Copy)]
struct Added {
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_nano_usd: i64,
    last_used_at: DateTime<Utc>,
}

/// A batch cut into multi-row inserts of a few fixed sizes (128, 32, 8 and 1 rows): each
/// size is one statement text, prepared once per connection and cached, where a batch of
/// any other length would be a new statement to parse every time (it showed as a sixth
/// of keygate's instructions per proxied call before).
fn insert_chunks(events: &[UsageEvent]) -> impl Iterator<Item = &[UsageEvent]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|&n| rest.len() >= n)?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// The sizes a batch is cut into (see [`insert_chunks`]).
const CHUNK_SIZES: [usize; 4] = [USAGE_ROWS_PER_INSERT, 32, 8, 1];

/// The statement inserting `rows` usage events; the text for each of [`CHUNK_SIZES`] is
/// built once per backend. PostgreSQL numbers its placeholders (`$n`); SQLite gets plain
/// `?`, which sqlx binds by position (a `$n` is looked up by name, once per value: that
/// costs more than the insert itself at 1,920 values).
fn insert_sql(backend: Backend, rows: usize) -> std::borrow::Cow<'static, str> {
    use std::sync::OnceLock;
    static TEXTS: [[OnceLock<String>; CHUNK_SIZES.len()]; 2] =
        [const { [const { OnceLock::new() }; CHUNK_SIZES.len()] }; 2];
    let build = || {
        const COLUMNS: usize = 15;
        let mut sql = String::from(concat!("INSERT INTO usage_events (", usage_columns!(), ") VALUES "));
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..COLUMNS {
                sql.push_str(if column == 0 { "" } else { ", " });
                match backend {
                    Backend::Sqlite => sql.push('?'),
                    Backend::Postgres => sql.push_str(&format!("${}", row * COLUMNS + column + 1)),
                }
            }
            sql.push(')');
        }
        sql
    };
    let texts = &TEXTS[usize::from(backend == Backend::Postgres)];
    match CHUNK_SIZES.iter().position(|&n| n == rows) {
        Some(slot) => texts[slot].get_or_init(build).as_str().into(),
        None => build().into(),
    }
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
            for chunk in insert_chunks(events) {
                let sql = insert_sql(self.backend(), chunk.len());
                let mut q = sqlx::query(&sql);
                for e in chunk {
                    q = q
                        .bind(e.id.as_uuid())
                        .bind(Ts(e.at))
                        .bind(e.user_id.map(|u| u.as_uuid()))
                        .bind(e.workspace_id.map(|w| w.as_uuid()))
                        .bind(e.credential_id.map(|c| c.as_uuid()))
                        .bind(e.key_source.as_str())
                        .bind(&e.provider)
                        .bind(&e.model)
                        .bind(e.input_tokens)
                        .bind(e.output_tokens)
                        .bind(e.cost_nano_usd)
                        .bind(e.status)
                        .bind(e.latency_ms)
                        .bind(e.estimated)
                        .bind(e.session_id.map(|s| s.as_uuid()));
                }
                q.execute(&mut *tx).await?;
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
            let mut q = QueryBuilder::new(concat!("SELECT ", usage_columns!(), " FROM usage_events"));
            push_filter(&mut q, f);
            q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(10_000).clamp(1, 100_000));
            let rows = q.build_query_as::<UsageRow>().fetch_all(pool).await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }

    pub(super) async fn usage_report(self, f: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<UsageTotals>> {
        // The key is one of these constants, never caller input. Credentials are grouped
        // by the raw column (a BLOB on SQLite) and named in Rust.
        let key = report_key(self, by);
        db_run!(self, |pool| {
            let mut q = QueryBuilder::new("SELECT ");
            q.push(key).push(", ").push(REPORT_SUMS).push(" FROM usage_events");
            push_filter(&mut q, f);
            q.push(" GROUP BY ").push(key);
            Ok(match by {
                UsageGrouping::Credential => {
                    let groups: Vec<Group<Uuid>> = q.build_query_as().fetch_all(pool).await?;
                    totals_by_key(groups, |id| id.map_or_else(|| "(none)".to_owned(), |id| id.to_string()))
                }
                _ => {
                    let groups: Vec<Group<String>> = q.build_query_as().fetch_all(pool).await?;
                    totals_by_key(groups, |key| key.unwrap_or_else(|| "(unknown)".to_owned()))
                }
            })
        })
    }

    pub(super) async fn usage_by_day(self, f: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<DailyUsageTotals>> {
        // As `usage_report`, with the UTC day as a second key; both are constants.
        let day = crate::ts::utc_day_of_at(self.backend());
        let key = report_key(self, by);
        db_run!(self, |pool| {
            let mut q = QueryBuilder::new("SELECT ");
            q.push(day).push(", ").push(key).push(", ").push(REPORT_SUMS).push(" FROM usage_events");
            push_filter(&mut q, f);
            q.push(" GROUP BY ").push(day).push(", ").push(key);
            match by {
                UsageGrouping::Credential => {
                    let groups: Vec<DayGroup<Uuid>> = q.build_query_as().fetch_all(pool).await?;
                    daily_totals(groups, |id| id.map_or_else(|| "(none)".to_owned(), |id| id.to_string()))
                }
                _ => {
                    let groups: Vec<DayGroup<String>> = q.build_query_as().fetch_all(pool).await?;
                    daily_totals(groups, |key| key.unwrap_or_else(|| "(unknown)".to_owned()))
                }
            }
        })
    }

    pub(super) async fn usage_since(
        self,
        user: UserId,
        key_source: KeySource,
        since: DateTime<Utc>,
    ) -> StoreResult<(i64, i64)> {
        db_run!(self, |pool| {
            let row: (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(input_tokens + output_tokens) AS BIGINT) FROM usage_events \
                 WHERE user_id = $1 AND key_source = $2 AND at >= $3",
            )
            .bind(user.as_uuid())
            .bind(key_source.as_str())
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

/// The SQL a report groups by: one of these constants, never caller input.
fn report_key(pool: Pool<'_>, by: UsageGrouping) -> &'static str {
    match by {
        UsageGrouping::Day => crate::ts::utc_day_of_at(pool.backend()),
        UsageGrouping::Provider => "provider",
        UsageGrouping::Model => "model",
        UsageGrouping::Credential => "credential_id",
        UsageGrouping::Source => "key_source",
    }
}

/// Adds `f`'s conditions (not its limit) to a query on `usage_events`, as a WHERE clause
/// with bound values.
fn push_filter<'a, DB: sqlx::Database>(q: &mut QueryBuilder<'a, DB>, f: &UsageFilter)
where
    Uuid: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Ts: Encode<'a, DB> + Type<DB>,
{
    q.push(" WHERE 1 = 1");
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
}

/// Names each group with `name` and orders them by name (byte order). Groups that get
/// the same name (a model literally called `(unknown)` and events naming none) add up.
fn totals_by_key<K>(groups: Vec<Group<K>>, name: impl Fn(Option<K>) -> String) -> Vec<UsageTotals> {
    let mut by_key: BTreeMap<String, UsageTotals> = BTreeMap::new();
    for (raw, requests, input_tokens, output_tokens, cost_nano_usd) in groups {
        let key = name(raw);
        let t = by_key.entry(key.clone()).or_insert_with(|| UsageTotals { key, ..UsageTotals::default() });
        t.requests += requests;
        t.input_tokens += input_tokens;
        t.output_tokens += output_tokens;
        t.cost_nano_usd += cost_nano_usd;
    }
    by_key.into_values().collect()
}

/// Names each day's groups as [`totals_by_key`] does and orders them by day, then name.
fn daily_totals<K>(groups: Vec<DayGroup<K>>, name: impl Fn(Option<K>) -> String) -> StoreResult<Vec<DailyUsageTotals>> {
    let mut by_day: BTreeMap<(NaiveDate, String), UsageTotals> = BTreeMap::new();
    for (day, raw, requests, input_tokens, output_tokens, cost_nano_usd) in groups {
        let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            .map_err(|e| StoreError::Corrupt { what: "usage event time", detail: format!("{day:?}: {e}") })?;
        let key = name(raw);
        let t = by_day.entry((day, key.clone())).or_insert_with(|| UsageTotals { key, ..UsageTotals::default() });
        t.requests += requests;
        t.input_tokens += input_tokens;
        t.output_tokens += output_tokens;
        t.cost_nano_usd += cost_nano_usd;
    }
    Ok(by_day.into_iter().map(|((day, _), totals)| DailyUsageTotals { day, totals }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::resolution::KeySource;

    fn event() -> UsageEvent {
        UsageEvent {
            id: keygate_core::UsageEventId::new(),
            at: chrono::Utc::now(),
            user_id: None,
            workspace_id: None,
            credential_id: None,
            key_source: KeySource::User,
            provider: "openai".into(),
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_nano_usd: 0,
            status: 200,
            latency_ms: 1,
            estimated: false,
            session_id: None,
        }
    }

    #[test]
    fn batches_are_cut_into_a_few_fixed_sizes_in_order() {
        let events: Vec<UsageEvent> = (0..300).map(|_| event()).collect();
        for n in [0, 1, 7, 8, 41, 128, 200, 255, 256, 300] {
            let chunks: Vec<&[UsageEvent]> = insert_chunks(&events[..n]).collect();
            assert!(chunks.iter().all(|c| [128, 32, 8, 1].contains(&c.len())), "{n}");
            let ids: Vec<_> = chunks.iter().flat_map(|c| c.iter().map(|e| e.id)).collect();
            assert_eq!(ids, events[..n].iter().map(|e| e.id).collect::<Vec<_>>(), "every event once, in order ({n})");
        }
        assert_eq!(insert_chunks(&events[..200]).count(), 4, "128 + 32 + 32 + 8");
    }

    #[test]
    fn each_chunk_size_has_one_statement_with_a_placeholder_per_value() {
        for rows in CHUNK_SIZES.into_iter().chain([3]) {
            let sql = insert_sql(Backend::Postgres, rows);
            assert_eq!(sql.matches('$').count(), rows * 15, "{rows}");
            assert!(sql.ends_with(&format!("${})", rows * 15)), "{rows}");
            assert_eq!(sql.matches('(').count(), rows + 1, "{rows}");
            let sql = insert_sql(Backend::Sqlite, rows);
            assert_eq!((sql.matches('?').count(), sql.matches('$').count()), (rows * 15, 0), "{rows}");
            assert!(sql.ends_with("?)"), "{rows}");
        }
        let once = |backend| std::ptr::eq(insert_sql(backend, 32).as_ref(), insert_sql(backend, 32).as_ref());
        assert!(once(Backend::Sqlite) && once(Backend::Postgres), "built once");
        assert_ne!(insert_sql(Backend::Sqlite, 8), insert_sql(Backend::Postgres, 8));
    }
}
