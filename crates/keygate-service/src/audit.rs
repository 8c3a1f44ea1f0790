//! Recording who did what. Audit rows never carry a secret: callers pass ids, names and
//! outcomes, and `detail` is scrubbed of secret shapes before it is stored.

use crate::{now, ServiceResult};
use keygate_core::*;
use keygate_store::Store;
use keygate_vault::redact::scrub;

/// Who acts: a user (with a readable label) or the system/CLI.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub label: String,
    pub source_addr: Option<String>,
}

impl Actor {
    pub fn cli() -> Self {
        Self { user_id: None, label: "cli".into(), source_addr: None }
    }
}

/// One thing to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub action: AuditAction,
    pub target_type: &'a str,
    pub target_id: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub result: AuditResult,
    pub detail: Option<String>,
}

/// Records an event on its own (for what changes nothing else, such as a login).
pub async fn record(store: &dyn Store, actor: &Actor, entry: Entry<'_>) -> ServiceResult<()> {
    store.insert_audit_event(&event(actor, entry)).await?;
    Ok(())
}

/// The row for an event, to be written in the same transaction as the change it records.
pub fn event(actor: &Actor, entry: Entry<'_>) -> AuditEvent {
    AuditEvent {
        id: AuditEventId::new(),
        at: now(),
        actor_user_id: actor.user_id,
        actor: actor.label.clone(),
        action: entry.action,
        target_type: entry.target_type.to_owned(),
        target_id: entry.target_id,
        workspace_id: entry.workspace_id,
        source_addr: actor.source_addr.clone(),
        result: entry.result,
        detail: entry.detail.map(|d| scrub(&d).into_owned()),
    }
}
