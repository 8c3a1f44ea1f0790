//! The shapes the API speaks. Requests reject unknown fields; responses never carry a
//! secret (there is no field that could hold one, except the one-time token display).

use chrono::{DateTime, Utc};
use keygate_core::*;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// `null` and absent mean different things in a PATCH: absent leaves the field alone,
/// `null` clears it.
fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A pasted secret: a string (`"sk-..."`) or, for multi-field credentials, an object
/// (`{"client_id": "...", "client_secret": "..."}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SecretField {
    #[schema(value_type = String)]
    Key(SecretString),
    #[schema(value_type = BTreeMap<String, String>)]
    Fields(BTreeMap<String, SecretString>),
}

impl From<SecretField> for keygate_service::credentials::SecretInput {
    fn from(field: SecretField) -> Self {
        use keygate_vault::SecretText;
        use secrecy::ExposeSecret;
        match field {
            SecretField::Key(k) => Self::Key(SecretText::new(k.expose_secret().to_owned())),
            SecretField::Fields(f) => {
                Self::Fields(f.into_iter().map(|(k, v)| (k, SecretText::new(v.expose_secret().to_owned()))).collect())
            }
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A provider id from `GET /api/v1/providers`.
    pub provider: String,
    pub name: Option<String>,
    pub secret: SecretField,
    /// Model override for unified calls.
    pub model: Option<String>,
    /// `user` (default), `workspace` (needs admin in it) or `operator` (super-admin).
    #[schema(value_type = Option<String>)]
    pub scope: Option<CredentialScope>,
    /// Defaults to the workspace the caller acts in.
    pub workspace_id: Option<Uuid>,
    /// Operator keys only: offer it to users as the demo allowance.
    pub operator_shared: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    pub name: Option<String>,
    /// `null` clears the override.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Option<String>>,
    #[schema(value_type = Option<String>)]
    pub status: Option<CredentialStatus>,
    pub operator_shared: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    pub secret: SecretField,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Estimated, from the catalog's prices.
    pub cost_usd: f64,
}

/// A stored key as the API shows it: never the secret, only its last characters.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyObject {
    pub id: Uuid,
    pub provider: String,
    pub name: String,
    #[schema(value_type = String)]
    pub scope: CredentialScope,
    pub workspace_id: Option<Uuid>,
    /// `…abcd`
    pub hint: String,
    #[schema(value_type = String)]
    pub status: CredentialStatus,
    #[schema(value_type = String)]
    pub validity: Validity,
    pub validity_detail: Option<String>,
    pub validity_checked_at: Option<DateTime<Utc>>,
    pub model: Option<String>,
    pub operator_shared: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub usage: Usage,
}

impl From<&Credential> for KeyObject {
    fn from(c: &Credential) -> Self {
        Self {
            id: c.id.as_uuid(),
            provider: c.provider.clone(),
            name: c.name.clone(),
            scope: c.scope,
            workspace_id: c.workspace_id.map(|w| w.as_uuid()),
            hint: c.hint.clone(),
            status: c.status,
            validity: c.validity,
            validity_detail: c.validity_detail.clone(),
            validity_checked_at: c.validity_checked_at,
            model: c.model.clone(),
            operator_shared: c.operator_shared,
            created_at: c.created_at,
            updated_at: c.updated_at,
            last_used_at: c.last_used_at,
            usage: Usage {
                requests: c.usage.requests,
                input_tokens: c.usage.input_tokens,
                output_tokens: c.usage.output_tokens,
                cost_usd: c.usage.cost_nano_usd as f64 / 1e9,
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyObject>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    /// `user`, `workspace` or `operator` (super-admin); default: your keys and your workspace's.
    #[param(value_type = Option<String>)]
    pub scope: Option<CredentialScope>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Any of `keys`, `proxy`, `usage`, `admin`, `metrics` (the last two for super-admins);
    /// default: every scope the credential you mint with holds.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The workspace the token acts in; default: your first.
    pub workspace_id: Option<Uuid>,
}

/// A new token: `token` is shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub token: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    /// `kg_<public id>`: enough to recognise a token, useless without its secret.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub workspace_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiToken> for TokenInfo {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id.as_uuid(),
            name: t.name.clone(),
            prefix: format!("kg_{}", t.public_id),
            scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            workspace_id: t.workspace_id.map(|w| w.as_uuid()),
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderInfo {
    pub id: String,
    pub name: String,
    /// `ai`, `maps`, `satellite`, `email`, `code`, or `git` (git's smart HTTP, with a
    /// keygate token as the Basic-auth password).
    pub kind: String,
    /// The fields a credential has: `api_key`, or e.g. `client_id` and `client_secret`.
    pub credential_fields: Vec<String>,
    pub key_prefixes: Vec<String>,
    pub default_model: Option<String>,
    /// Where to create a key.
    pub key_url: Option<String>,
    pub validated_live: bool,
    /// Which of your scopes hold an active key for it: `user`, `workspace`.
    pub configured: Vec<String>,
    /// The calls a key you do not own (a workspace's, the operator's) may serve, as
    /// `METHOD /path` patterns; your own key serves any call.
    pub shared_endpoints: Vec<String>,
    /// The provider whose key serves this one's calls (`github` for `github-git`): store
    /// the key as that provider; this one holds none of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses_key_of: Option<String>,
    /// The scopes its keys may be stored with (`user`, `workspace`, `operator`).
    pub key_scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    #[schema(value_type = String)]
    pub password: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct LoggedIn {
    /// A keygate token for this session, shown once.
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub user: UserInfo,
}

impl std::fmt::Debug for LoggedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedIn").field("user", &self.user).finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    pub id: Uuid,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub tier: String,
    pub super_admin: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserInfo {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.as_uuid(),
            email: u.email.clone(),
            external_id: u.external_id.clone(),
            tier: u.tier.clone(),
            super_admin: u.super_admin,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: UserInfo,
    pub workspace: WorkspaceInfo,
    #[schema(value_type = String)]
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceInfo {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = String)]
    pub status: WorkspaceStatus,
    pub personal: bool,
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Workspace> for WorkspaceInfo {
    fn from(w: &Workspace) -> Self {
        Self {
            id: w.id.as_uuid(),
            name: w.name.clone(),
            status: w.status,
            personal: w.personal,
            external_id: w.external_id.clone(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWorkspace {
    /// `active`, `paused`, `cancelled` or `deleted` (destroys its data key for good).
    #[schema(value_type = String)]
    pub status: WorkspaceStatus,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: Uuid,
    #[schema(value_type = String)]
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberInfo {
    pub workspace_id: Uuid,
    pub user_id: Uuid,
    #[schema(value_type = String)]
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    pub tier: Option<String>,
    pub super_admin: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub actor_user_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub workspace_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many, newest first (default 100, at most 10,000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventInfo {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub workspace_id: Option<Uuid>,
    pub source_addr: Option<String>,
    pub result: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<&AuditEvent> for AuditEventInfo {
    fn from(e: &AuditEvent) -> Self {
        Self {
            id: e.id.as_uuid(),
            at: e.at,
            actor: e.actor.clone(),
            actor_user_id: e.actor_user_id.map(|u| u.as_uuid()),
            action: e.action.as_str().to_owned(),
            target_type: e.target_type.clone(),
            target_id: e.target_id.clone(),
            workspace_id: e.workspace_id.map(|w| w.as_uuid()),
            source_addr: e.source_addr.clone(),
            result: e.result.as_str().to_owned(),
            detail: e.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub events: Vec<AuditEventInfo>,
}

/// RFC 9457 problem details, as every error is returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine code, e.g. `invalid_key_format`, `no_credential`.
    pub code: String,
    pub detail: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub provider: String,
    /// `any` (default), `customer-only` or `operator-only`.
    pub policy: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedSource {
    /// `user`, `workspace`, `operator_demo`, `platform`.
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Resolution {
    pub provider: String,
    /// The source that would pay, or null if none can.
    pub source: Option<String>,
    pub credential_id: Option<Uuid>,
    pub hint: Option<String>,
    /// The model unified calls would use.
    pub model: Option<String>,
    /// Every earlier source, and why it was passed over.
    pub skipped: Vec<SkippedSource>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DemoQuota {
    pub enabled: bool,
    pub tokens_per_day: u64,
    pub tokens_remaining_today: u64,
    /// Days left in the allowance; null before its first use.
    pub days_remaining: Option<u32>,
    pub resets_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformQuota {
    pub tier: String,
    pub byok: bool,
    pub requests_per_minute: u32,
    pub remaining_this_minute: u32,
    pub requests_per_day: u32,
    pub remaining_today: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Quota {
    pub demo: DemoQuota,
    pub platform: PlatformQuota,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `day` (default), `provider`, `model`, `credential` or `source`.
    pub group_by: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub provider: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    pub key: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub group_by: String,
    pub rows: Vec<UsageRow>,
    pub total: UsageRow,
}

/// `DELETE /api/v1/keys?provider=…[&scope=…]`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyDeleteQuery {
    /// The provider whose key goes, e.g. `openai`.
    pub provider: Option<String>,
    /// `user` (default: your own key) or `workspace` (your workspace's shared key; needs
    /// the owner or admin role).
    pub scope: Option<String>,
}

/// A sandbox session to mint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub name: String,
    /// Provider ids the session's token may call, e.g. `["openai", "anthropic"]`.
    pub providers: Vec<String>,
    /// How long the session lives: 1 to 604800 (7 days).
    pub ttl_seconds: u64,
    /// The most calls the session may make.
    pub max_requests: Option<u64>,
    /// The most tokens (input + output) the session may use; a call that could use more
    /// than is left goes out with its output maximum lowered to fit.
    pub max_tokens: Option<u64>,
}

/// A new session: `token` is shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedSession {
    pub id: Uuid,
    pub name: String,
    pub token: String,
    pub providers: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
}

impl std::fmt::Debug for CreatedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedSession").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// What a session has spent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionSpent {
    pub requests: u64,
    /// Input and output tokens (a call in flight counts what it reserved).
    pub tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    pub id: Uuid,
    pub name: String,
    /// `kg_<public id>`: enough to recognise the token, useless without its secret.
    pub prefix: String,
    pub providers: Vec<String>,
    pub workspace_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
    pub spent: SessionSpent,
}

impl From<&keygate_service::sandbox::SessionStatus> for SessionInfo {
    fn from(s: &keygate_service::sandbox::SessionStatus) -> Self {
        let t = &s.session.token;
        Self {
            id: t.id.as_uuid(),
            name: t.name.clone(),
            prefix: format!("kg_{}", t.public_id),
            providers: s.session.grant.providers.clone(),
            workspace_id: t.workspace_id.map(|w| w.as_uuid()),
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            max_requests: s.session.grant.max_requests,
            max_tokens: s.session.grant.max_tokens,
            spent: SessionSpent { requests: s.used.requests, tokens: s.used.tokens },
        }
    }
}

/// Your live sessions (neither expired nor revoked).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}
