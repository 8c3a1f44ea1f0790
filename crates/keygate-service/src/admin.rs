//! What super-admins do: workspaces (and their status, which revokes at once), users
//! (tier, super-admin), the policy, and reading the audit log.

use crate::audit::{self, Entry};
use crate::principal::Principal;
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use keygate_core::policy::Policy;
use keygate_core::*;
use keygate_store::{AuditFilter, CredentialFilter};
use std::sync::Arc;

/// Which audit rows an admin asks for. Every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_user_id: Option<UserId>,
    pub action: Option<AuditAction>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many, newest first. `None` means 1,000.
    pub limit: Option<i64>,
}

/// What the audit page narrows by beyond an [`AuditQuery`]: the readable actor (an email,
/// `cli`, `system`; whole, any case) and how many of the newest matching rows to skip.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub actor: Option<String>,
    pub offset: i64,
}

impl Services {
    pub async fn admin_workspaces(&self, principal: &Principal) -> ServiceResult<Vec<Workspace>> {
        principal.require_super_admin()?;
        Ok(self.store.workspaces().await?)
    }

    pub async fn admin_workspace(&self, principal: &Principal, id: WorkspaceId) -> ServiceResult<Workspace> {
        principal.require_super_admin()?;
        Ok(self.store.workspace(id).await?)
    }

    pub async fn admin_create_workspace(&self, principal: &Principal, name: &str) -> ServiceResult<Workspace> {
        principal.require_super_admin()?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ServiceError::Invalid { field: "name", problem: "must be 1 to 100 characters".into() });
        }
        let at = now();
        let ws = Workspace {
            id: WorkspaceId::new(),
            name: name.to_owned(),
            status: WorkspaceStatus::Active,
            personal: false,
            external_id: None,
            created_at: at,
            updated_at: at,
        };
        self.store.insert_workspace(&ws).await?;
        self.audit_admin(principal, AuditAction::WorkspaceCreate, "workspace", ws.id.to_string(), Some(ws.id), None)
            .await?;
        Ok(ws)
    }

    /// Changes a workspace's status. Anything but active makes its credentials unusable
    /// at once; deleted also destroys its data key, so they can never be opened again.
    pub async fn admin_set_workspace_status(
        &self,
        principal: &Principal,
        id: WorkspaceId,
        status: WorkspaceStatus,
    ) -> ServiceResult<Workspace> {
        principal.require_super_admin()?;
        let current = self.store.workspace(id).await?;
        if current.status == WorkspaceStatus::Deleted && status != WorkspaceStatus::Deleted {
            return Err(ServiceError::Conflict(
                "a deleted workspace cannot be restored: its data key was destroyed".into(),
            ));
        }
        let at = now();
        // Destroy before recording the status, and every time (it is idempotent): a crash
        // in between leaves a workspace that deleting again finishes, never a deleted
        // workspace whose key survives.
        if status == WorkspaceStatus::Deleted {
            self.vault.destroy_data_key(KeyOwner::Workspace(id)).await?;
            for mut credential in
                self.store.credentials(&CredentialFilter { workspace_id: Some(id), ..Default::default() }).await?
            {
                credential.validity = Validity::Undecryptable;
                credential.validity_detail = Some("the workspace was deleted and its data key destroyed".into());
                credential.validity_checked_at = Some(at);
                credential.updated_at = at;
                match self.store.update_credential(&credential, &credential.sealed, None).await {
                    // Replaced meanwhile: its workspace is deleted, so it serves no call, and
                    // opening it fails all the same.
                    Ok(()) | Err(keygate_store::StoreError::Changed { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.store.set_workspace_status(id, status, at).await?;
        self.changed().await;
        let detail = serde_json::json!({"from": current.status, "to": status}).to_string();
        self.audit_admin(principal, AuditAction::WorkspaceStatus, "workspace", id.to_string(), Some(id), Some(detail))
            .await?;
        Ok(self.store.workspace(id).await?)
    }

    pub async fn admin_add_member(
        &self,
        principal: &Principal,
        ws: WorkspaceId,
        user: UserId,
        role: Role,
    ) -> ServiceResult<Membership> {
        principal.require_super_admin()?;
        self.store.workspace(ws).await?;
        self.store.user(user).await?;
        let membership = Membership { workspace_id: ws, user_id: user, role, created_at: now() };
        self.store.upsert_membership(&membership).await?;
        self.changed().await;
        let detail = serde_json::json!({"user": user, "role": role}).to_string();
        self.audit_admin(principal, AuditAction::WorkspaceMember, "workspace", ws.to_string(), Some(ws), Some(detail))
            .await?;
        Ok(membership)
    }

    pub async fn admin_users(&self, principal: &Principal) -> ServiceResult<Vec<User>> {
        principal.require_super_admin()?;
        Ok(self.store.users().await?)
    }

    /// Sets a user's tier and/or super-admin flag. The last super-admin cannot be demoted.
    pub async fn admin_update_user(
        &self,
        principal: &Principal,
        id: UserId,
        tier: Option<String>,
        super_admin: Option<bool>,
    ) -> ServiceResult<User> {
        principal.require_super_admin()?;
        let mut user = self.store.user(id).await?;
        if let Some(tier) = tier {
            let policy = self.policy();
            if !policy.tiers.contains_key(&tier) {
                let known: Vec<&str> = policy.tiers.keys().map(String::as_str).collect();
                return Err(ServiceError::Invalid {
                    field: "tier",
                    problem: format!("`{tier}` is not a tier ({})", known.join(", ")),
                });
            }
            user.tier = tier;
        }
        if let Some(flag) = super_admin {
            if !flag && user.super_admin {
                let admins = self.store.users().await?.into_iter().filter(|u| u.super_admin).count();
                if admins <= 1 {
                    return Err(ServiceError::Conflict(
                        "this is the last super-admin: promote another user first".into(),
                    ));
                }
            }
            user.super_admin = flag;
        }
        user.updated_at = now();
        self.store.update_user(&user).await?;
        self.changed().await;
        let detail = serde_json::json!({"tier": user.tier, "super_admin": user.super_admin}).to_string();
        self.audit_admin(principal, AuditAction::UserUpdate, "user", id.to_string(), None, Some(detail)).await?;
        Ok(user)
    }

    pub fn admin_policy(&self, principal: &Principal) -> ServiceResult<Arc<Policy>> {
        principal.require_super_admin()?;
        Ok(self.policy())
    }

    pub async fn admin_set_policy(&self, principal: &Principal, policy: Policy) -> ServiceResult<Arc<Policy>> {
        principal.require_super_admin()?;
        let policy = self.set_policy(policy).await?;
        self.audit_admin(principal, AuditAction::SettingsUpdate, "settings", "policy".into(), None, None).await?;
        Ok(policy)
    }

    pub async fn admin_audit(&self, principal: &Principal, query: AuditQuery) -> ServiceResult<Vec<AuditEvent>> {
        self.admin_audit_page(principal, query, AuditPage::default()).await
    }

    /// [`Services::admin_audit`], narrowed by actor and a page further down.
    pub async fn admin_audit_page(
        &self,
        principal: &Principal,
        query: AuditQuery,
        page: AuditPage,
    ) -> ServiceResult<Vec<AuditEvent>> {
        principal.require_super_admin()?;
        let filter = AuditFilter {
            actor_user_id: query.actor_user_id,
            action: query.action,
            target_type: query.target_type,
            target_id: query.target_id,
            workspace_id: query.workspace_id,
            since: query.since,
            until: query.until,
            actor: page.actor.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()),
            limit: query.limit,
            offset: Some(page.offset.max(0)),
        };
        Ok(self.store.audit_events(&filter).await?)
    }

    async fn audit_admin(
        &self,
        principal: &Principal,
        action: AuditAction,
        target_type: &str,
        target: String,
        ws: Option<WorkspaceId>,
        detail: Option<String>,
    ) -> ServiceResult<()> {
        audit::record(
            &*self.store,
            &principal.actor(),
            Entry { action, target_type, target_id: Some(target), workspace_id: ws, result: AuditResult::Ok, detail },
        )
        .await
    }
}
