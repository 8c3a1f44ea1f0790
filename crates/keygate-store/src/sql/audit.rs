//! The audit log: who did what to which target, appended and read back newest first.

use super::{db_run, Conn, Pool};
use crate::filter::AuditFilter;
use crate::rows::*;
use crate::ts::Ts;
use crate::StoreResult;
use keygate_core::*;

impl Pool<'_> {
    pub(super) async fn insert_audit_event(self, e: &AuditEvent) -> StoreResult<()> {
        db_run!(self, |pool| {
            let mut conn = pool.acquire().await?;
            Conn::from(&mut *conn).insert_audit_event(e).await
        })
    }

    pub(super) async fn audit_events(self, f: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        db_run!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(concat!("SELECT ", audit_columns!(), " FROM audit_events WHERE 1 = 1"));
            if let Some(user) = f.actor_user_id {
                q.push(" AND actor_user_id = ").push_bind(user.as_uuid());
            }
            if let Some(action) = &f.action {
                q.push(" AND action = ").push_bind(action.as_str());
            }
            if let Some(t) = &f.target_type {
                q.push(" AND target_type = ").push_bind(t.clone());
            }
            if let Some(t) = &f.target_id {
                q.push(" AND target_id = ").push_bind(t.clone());
            }
            if let Some(ws) = f.workspace_id {
                q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
            }
            if let Some(since) = f.since {
                q.push(" AND at >= ").push_bind(Ts(since));
            }
            if let Some(until) = f.until {
                q.push(" AND at < ").push_bind(Ts(until));
            }
            if let Some(actor) = &f.actor {
                q.push(" AND lower(actor) = ").push_bind(actor.to_ascii_lowercase());
            }
            q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(1000).clamp(1, 10_000));
            q.push(" OFFSET ").push_bind(f.offset.unwrap_or(0).max(0));
            let rows = q.build_query_as::<AuditRow>().fetch_all(pool).await?;
            rows.into_iter().map(TryInto::try_into).collect()
        })
    }
}

impl Conn<'_> {
    /// Appends `e`, on its own or as part of a caller's transaction.
    pub(super) async fn insert_audit_event(self, e: &AuditEvent) -> StoreResult<()> {
        db_run!(self, |conn| {
            sqlx::query(concat!(
                "INSERT INTO audit_events (",
                audit_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(e.id.as_uuid())
            .bind(Ts(e.at))
            .bind(e.actor_user_id.map(|u| u.as_uuid()))
            .bind(&e.actor)
            .bind(e.action.as_str())
            .bind(&e.target_type)
            .bind(&e.target_id)
            .bind(e.workspace_id.map(|w| w.as_uuid()))
            .bind(&e.source_addr)
            .bind(e.result.as_str())
            .bind(&e.detail)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}
