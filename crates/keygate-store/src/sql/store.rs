//! [`Store`] for both backends: each method hands its arguments to the statement in the
//! module for its concern. Nothing else happens here.

use super::Pool;
use crate::filter::{AuditFilter, CredentialFilter, UsageFilter};
use crate::{Backend, DailyUsageTotals, Store, StoreResult, TokenPrincipal, UsageGrouping, UsageTotals};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keygate_core::*;
use std::fmt;

/// A backend's store: all the shared SQL needs of it is its pool (and, where the backend
/// keeps one, the usage writer's connection).
pub(crate) trait SqlStore: Send + Sync + fmt::Debug {
    fn pool(&self) -> Pool<'_>;

    /// Where the usage writer's batches go (usage rows, tokens' last use): the pool,
    /// unless the backend keeps a connection of their own for them.
    fn usage_writer(&self) -> Pool<'_> {
        self.pool()
    }
}

#[async_trait]
impl<S: SqlStore> Store for S {
    fn backend(&self) -> Backend {
        self.pool().backend()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.pool().ping().await
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.pool().migrate().await
    }

    async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        self.pool().pending_migrations().await
    }

    fn migration_count(&self) -> usize {
        self.pool().migration_count()
    }

    async fn close(&self) {
        self.usage_writer().close().await;
        self.pool().close().await
    }

    async fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.pool().meta_get(key).await
    }

    async fn meta_insert(&self, key: &str, value: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        self.pool().meta_insert(key, value, now).await
    }

    async fn bump_change_epoch(&self) -> StoreResult<i64> {
        self.pool().bump_change_epoch().await
    }

    async fn change_epoch(&self) -> StoreResult<i64> {
        self.pool().change_epoch().await
    }

    fn change_notifications(&self) -> Option<crate::ChangeFeed> {
        self.pool().change_notifications()
    }

    async fn settings_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.pool().settings_get(key).await
    }

    async fn settings_put(&self, key: &str, value: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool().settings_put(key, value, now).await
    }

    async fn meta_replace(&self, key: &str, expected: &[u8], value: &[u8], now: DateTime<Utc>) -> StoreResult<bool> {
        self.pool().meta_replace(key, expected, value, now).await
    }

    async fn insert_workspace(&self, workspace: &Workspace) -> StoreResult<()> {
        self.pool().insert_workspace(workspace).await
    }

    async fn workspace(&self, id: WorkspaceId) -> StoreResult<Workspace> {
        self.pool().workspace(id).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.pool().workspaces().await
    }

    async fn workspace_by_external_id(&self, external_id: &str) -> StoreResult<Option<Workspace>> {
        self.pool().workspace_by_external_id(external_id).await
    }

    async fn set_workspace_status(
        &self,
        id: WorkspaceId,
        status: WorkspaceStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.pool().set_workspace_status(id, status, now).await
    }

    async fn insert_user(&self, user: &User, password_hash: Option<&str>) -> StoreResult<()> {
        self.pool().insert_user(user, password_hash).await
    }

    async fn user(&self, id: UserId) -> StoreResult<User> {
        self.pool().user(id).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.pool().user_by_email(email).await
    }

    async fn user_by_external_id(&self, external_id: &str) -> StoreResult<Option<User>> {
        self.pool().user_by_external_id(external_id).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        self.pool().users().await
    }

    async fn user_by_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        self.pool().user_by_identity(issuer, subject).await
    }

    async fn link_identity(&self, issuer: &str, subject: &str, user: UserId, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool().link_identity(issuer, subject, user, now).await
    }

    async fn provision_identity_user(
        &self,
        user: &User,
        workspace: &Workspace,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<()> {
        self.pool().provision_identity_user(user, workspace, issuer, subject).await
    }

    async fn update_user(&self, user: &User) -> StoreResult<()> {
        self.pool().update_user(user).await
    }

    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>> {
        self.pool().password_hash(id).await
    }

    async fn set_password_hash(&self, id: UserId, hash: &str, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool().set_password_hash(id, hash, now).await
    }

    async fn upsert_membership(&self, membership: &Membership) -> StoreResult<()> {
        self.pool().upsert_membership(membership).await
    }

    async fn membership(&self, workspace: WorkspaceId, user: UserId) -> StoreResult<Option<Membership>> {
        self.pool().membership(workspace, user).await
    }

    async fn memberships_of_user(&self, user: UserId) -> StoreResult<Vec<Membership>> {
        self.pool().memberships_of_user(user).await
    }

    async fn provision_user(
        &self,
        user: &User,
        password_hash: Option<&str>,
        workspace: &Workspace,
        role: Role,
    ) -> StoreResult<()> {
        self.pool().provision_user(user, password_hash, workspace, role).await
    }

    async fn insert_data_key(&self, key: &DataKeyRecord) -> StoreResult<()> {
        self.pool().insert_data_key(key).await
    }

    async fn data_key(&self, id: DataKeyId) -> StoreResult<DataKeyRecord> {
        self.pool().data_key(id).await
    }

    async fn data_key_by_owner(&self, owner: &KeyOwner) -> StoreResult<Option<DataKeyRecord>> {
        self.pool().data_key_by_owner(owner).await
    }

    async fn data_keys(&self) -> StoreResult<Vec<DataKeyRecord>> {
        self.pool().data_keys().await
    }

    async fn rewrap_data_key(
        &self,
        id: DataKeyId,
        expected_version: i64,
        kek_id: &str,
        wrapped: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.pool().rewrap_data_key(id, expected_version, kek_id, wrapped, now).await
    }

    async fn destroy_data_key(&self, owner: &KeyOwner, now: DateTime<Utc>) -> StoreResult<()> {
        self.pool().destroy_data_key(owner, now).await
    }

    async fn kek_ids_in_use(&self) -> StoreResult<Vec<String>> {
        self.pool().kek_ids_in_use().await
    }

    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()> {
        self.pool().insert_credential(credential).await
    }

    async fn save_credential(
        &self,
        credential: &Credential,
        replaces: Option<CredentialId>,
        max_user_keys: Option<u32>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.pool().save_credential(credential, replaces, max_user_keys, audit).await
    }

    async fn credential(&self, id: CredentialId) -> StoreResult<Credential> {
        self.pool().credential(id).await
    }

    async fn credentials(&self, filter: &CredentialFilter) -> StoreResult<Vec<Credential>> {
        self.pool().credentials(filter).await
    }

    async fn credential_candidates(
        &self,
        workspace: WorkspaceId,
        user: UserId,
        provider: &str,
    ) -> StoreResult<Vec<Credential>> {
        self.pool().credential_candidates(workspace, user, provider).await
    }

    async fn update_credential(
        &self,
        credential: &Credential,
        sealed_before: &[u8],
        audit: Option<&AuditEvent>,
    ) -> StoreResult<()> {
        self.pool().update_credential(credential, sealed_before, audit).await
    }

    async fn delete_credential(&self, id: CredentialId, audit: &AuditEvent) -> StoreResult<()> {
        self.pool().delete_credential(id, audit).await
    }

    async fn insert_token(&self, token: &ApiToken, audit: &AuditEvent) -> StoreResult<()> {
        self.pool().insert_token(token, audit).await
    }

    async fn token_principal(&self, public_id: &str) -> StoreResult<Option<TokenPrincipal>> {
        self.pool().token_principal(public_id).await
    }

    async fn tokens_of_user(&self, user: UserId) -> StoreResult<Vec<ApiToken>> {
        self.pool().tokens_of_user(user).await
    }

    async fn touch_token(&self, id: TokenId, now: DateTime<Utc>) -> StoreResult<()> {
        self.usage_writer().touch_token(id, now).await
    }

    async fn revoke_token(&self, id: TokenId, user: UserId, now: DateTime<Utc>, audit: &AuditEvent) -> StoreResult<()> {
        self.pool().revoke_token(id, user, now, audit).await
    }

    async fn insert_session(&self, token: &ApiToken, grant: &SessionGrant, audit: &AuditEvent) -> StoreResult<()> {
        self.pool().insert_session(token, grant, audit).await
    }

    async fn live_sessions_of_user(&self, user: UserId, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
        self.pool().live_sessions_of_user(user, now).await
    }

    async fn revoke_session(
        &self,
        id: TokenId,
        user: UserId,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> StoreResult<()> {
        self.pool().revoke_session(id, user, now, audit).await
    }

    async fn session_usage(&self, id: TokenId) -> StoreResult<(i64, i64)> {
        self.pool().session_usage(id).await
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> StoreResult<()> {
        self.pool().insert_audit_event(event).await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        self.pool().audit_events(filter).await
    }

    async fn insert_usage_events(&self, events: &[UsageEvent]) -> StoreResult<()> {
        self.usage_writer().insert_usage_events(events).await
    }

    async fn usage_events(&self, filter: &UsageFilter) -> StoreResult<Vec<UsageEvent>> {
        self.pool().usage_events(filter).await
    }

    async fn usage_report(&self, filter: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<UsageTotals>> {
        self.pool().usage_report(filter, by).await
    }

    async fn usage_by_day(&self, filter: &UsageFilter, by: UsageGrouping) -> StoreResult<Vec<DailyUsageTotals>> {
        self.pool().usage_by_day(filter, by).await
    }

    async fn usage_since(&self, user: UserId, key_source: KeySource, since: DateTime<Utc>) -> StoreResult<(i64, i64)> {
        self.pool().usage_since(user, key_source, since).await
    }

    async fn demo_first_use(&self, user: UserId) -> StoreResult<Option<DateTime<Utc>>> {
        self.pool().demo_first_use(user).await
    }

    async fn record_demo_first_use(&self, user: UserId, at: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
        self.pool().record_demo_first_use(user, at).await
    }
}
