//! Query filters. Every field narrows; an empty filter means "all", which only
//! operator-level callers pass.

use chrono::{DateTime, Utc};
use keygate_core::*;

#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    pub scope: Option<CredentialScope>,
    pub workspace_id: Option<WorkspaceId>,
    pub owner_user_id: Option<UserId>,
    pub provider: Option<String>,
    pub status: Option<CredentialStatus>,
    pub data_key_id: Option<DataKeyId>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_user_id: Option<UserId>,
    pub action: Option<AuditAction>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The readable actor (an email, `cli`, `system`), matched whole, ignoring ASCII case.
    pub actor: Option<String>,
    /// At most this many, newest first. `None` means 1,000.
    pub limit: Option<i64>,
    /// Skip this many of the newest matching rows first (a page further down). `None`
    /// means 0.
    pub offset: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub user_id: Option<UserId>,
    pub workspace_id: Option<WorkspaceId>,
    pub credential_id: Option<CredentialId>,
    pub provider: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many, newest first. `None` means 10,000.
    pub limit: Option<i64>,
}
