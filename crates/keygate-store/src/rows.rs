//! Row shapes as the database returns them, and their conversion into domain types.
//! The derives are generic over the backend, so both share these.

use crate::ts::Ts;
use crate::{StoreError, StoreResult};
use keygate_core::*;
use std::str::FromStr;
use uuid::Uuid;

fn parse<T: FromStr<Err = UnknownVariant>>(what: &'static str, value: &str) -> StoreResult<T> {
    value.parse().map_err(|e: UnknownVariant| StoreError::Corrupt { what, detail: e.to_string() })
}

macro_rules! workspace_columns {
    () => {
        "id, name, status, personal, external_id, created_at, updated_at"
    };
}
pub(crate) use workspace_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct WorkspaceRow {
    id: Uuid,
    name: String,
    status: String,
    personal: bool,
    external_id: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = StoreError;
    fn try_from(r: WorkspaceRow) -> StoreResult<Self> {
        Ok(Workspace {
            id: WorkspaceId::from_uuid(r.id),
            name: r.name,
            status: parse("workspace", &r.status)?,
            personal: r.personal,
            external_id: r.external_id,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        })
    }
}

macro_rules! user_columns {
    () => {
        "id, email, external_id, tier, super_admin, created_at, updated_at"
    };
}
pub(crate) use user_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    email: Option<String>,
    external_id: Option<String>,
    tier: String,
    super_admin: bool,
    created_at: Ts,
    updated_at: Ts,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: UserId::from_uuid(r.id),
            email: r.email,
            external_id: r.external_id,
            tier: r.tier,
            super_admin: r.super_admin,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

macro_rules! membership_columns {
    () => {
        "workspace_id, user_id, role, created_at"
    };
}
pub(crate) use membership_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct MembershipRow {
    workspace_id: Uuid,
    user_id: Uuid,
    role: String,
    created_at: Ts,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;
    fn try_from(r: MembershipRow) -> StoreResult<Self> {
        Ok(Membership {
            workspace_id: WorkspaceId::from_uuid(r.workspace_id),
            user_id: UserId::from_uuid(r.user_id),
            role: parse("membership", &r.role)?,
            created_at: r.created_at.0,
        })
    }
}

macro_rules! data_key_columns {
    () => {
        "id, owner, kek_id, wrapped, version, created_at, updated_at, destroyed_at"
    };
}
pub(crate) use data_key_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct DataKeyRow {
    id: Uuid,
    owner: String,
    kek_id: String,
    wrapped: Option<Vec<u8>>,
    version: i64,
    created_at: Ts,
    updated_at: Ts,
    destroyed_at: Option<Ts>,
}

impl TryFrom<DataKeyRow> for DataKeyRecord {
    type Error = StoreError;
    fn try_from(r: DataKeyRow) -> StoreResult<Self> {
        Ok(DataKeyRecord {
            id: DataKeyId::from_uuid(r.id),
            owner: KeyOwner::parse_storage_key(&r.owner)
                .map_err(|e| StoreError::Corrupt { what: "data key", detail: e.to_string() })?,
            kek_id: r.kek_id,
            wrapped: r.wrapped,
            version: r.version,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            destroyed_at: r.destroyed_at.map(|t| t.0),
        })
    }
}

/// A credential's columns, as written.
macro_rules! credential_columns {
    () => {
        "id, scope, workspace_id, owner_user_id, provider, name, hint, model, \
     status, validity, validity_detail, validity_checked_at, operator_shared, sealed, data_key_id, created_at, \
     updated_at, last_used_at, usage_requests, usage_input_tokens, usage_output_tokens, usage_cost_nano_usd, \
     secret_version"
    };
}
pub(crate) use credential_columns;

/// A credential's columns as read: also the highest secret version ever written for it
/// (`credential_secret_versions`), which a row written back from an older copy cannot
/// lower.
macro_rules! credential_select {
    () => {
        concat!(
            credential_columns!(),
            ", (SELECT v.secret_version FROM credential_secret_versions v WHERE v.credential_id = credentials.id) \
             AS secret_version_floor"
        )
    };
}
pub(crate) use credential_select;

#[derive(sqlx::FromRow)]
pub(crate) struct CredentialRow {
    id: Uuid,
    scope: String,
    workspace_id: Option<Uuid>,
    owner_user_id: Option<Uuid>,
    provider: String,
    name: String,
    hint: String,
    model: Option<String>,
    status: String,
    validity: String,
    validity_detail: Option<String>,
    validity_checked_at: Option<Ts>,
    operator_shared: bool,
    sealed: Vec<u8>,
    data_key_id: Uuid,
    created_at: Ts,
    updated_at: Ts,
    last_used_at: Option<Ts>,
    usage_requests: i64,
    usage_input_tokens: i64,
    usage_output_tokens: i64,
    usage_cost_nano_usd: i64,
    secret_version: i64,
    secret_version_floor: Option<i64>,
}

impl TryFrom<CredentialRow> for Credential {
    type Error = StoreError;
    fn try_from(r: CredentialRow) -> StoreResult<Self> {
        Ok(Credential {
            id: CredentialId::from_uuid(r.id),
            scope: parse("credential", &r.scope)?,
            workspace_id: r.workspace_id.map(WorkspaceId::from_uuid),
            owner_user_id: r.owner_user_id.map(UserId::from_uuid),
            provider: r.provider,
            name: r.name,
            hint: r.hint,
            model: r.model,
            status: parse("credential", &r.status)?,
            validity: parse("credential", &r.validity)?,
            validity_detail: r.validity_detail,
            validity_checked_at: r.validity_checked_at.map(|t| t.0),
            operator_shared: r.operator_shared,
            sealed: r.sealed,
            // The row's version, or the highest ever recorded if the row's is lower (it was
            // written back from an older copy): its record then fails to open.
            secret_version: u32::try_from(r.secret_version.max(r.secret_version_floor.unwrap_or(0))).map_err(|_| {
                StoreError::Corrupt { what: "credential", detail: format!("secret_version {}", r.secret_version) }
            })?,
            data_key_id: DataKeyId::from_uuid(r.data_key_id),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            last_used_at: r.last_used_at.map(|t| t.0),
            usage: UsageTotals {
                requests: r.usage_requests,
                input_tokens: r.usage_input_tokens,
                output_tokens: r.usage_output_tokens,
                cost_nano_usd: r.usage_cost_nano_usd,
            },
        })
    }
}

macro_rules! token_columns {
    () => {
        "id, public_id, secret_hash, user_id, workspace_id, name, scopes, expires_at, \
     created_at, last_used_at, revoked_at"
    };
}
pub(crate) use token_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: Uuid,
    public_id: String,
    secret_hash: Vec<u8>,
    user_id: Uuid,
    workspace_id: Option<Uuid>,
    name: String,
    scopes: String,
    expires_at: Option<Ts>,
    created_at: Ts,
    last_used_at: Option<Ts>,
    revoked_at: Option<Ts>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> StoreResult<Self> {
        Ok(ApiToken {
            id: TokenId::from_uuid(r.id),
            public_id: r.public_id,
            secret_hash: r.secret_hash,
            user_id: UserId::from_uuid(r.user_id),
            workspace_id: r.workspace_id.map(WorkspaceId::from_uuid),
            name: r.name,
            scopes: r.scopes.split_whitespace().map(|s| parse("token scope", s)).collect::<StoreResult<_>>()?,
            expires_at: r.expires_at.map(|t| t.0),
            created_at: r.created_at.0,
            last_used_at: r.last_used_at.map(|t| t.0),
            revoked_at: r.revoked_at.map(|t| t.0),
        })
    }
}

/// A token with its user and the workspace it acts in (one row of a joined select: the
/// named workspace, or the user's oldest membership; none if the user has no membership).
#[derive(sqlx::FromRow)]
pub(crate) struct TokenPrincipalRow {
    #[sqlx(flatten)]
    token: TokenRow,
    u_email: Option<String>,
    u_external_id: Option<String>,
    u_tier: String,
    u_super_admin: bool,
    u_created_at: Ts,
    u_updated_at: Ts,
    m_role: Option<String>,
    w_id: Option<Uuid>,
    w_name: Option<String>,
    w_status: Option<String>,
    w_personal: Option<bool>,
    w_external_id: Option<String>,
    w_created_at: Option<Ts>,
    w_updated_at: Option<Ts>,
    #[sqlx(flatten)]
    session: SessionRow,
}

macro_rules! session_columns {
    () => {
        "s.providers AS s_providers, s.max_requests AS s_max_requests, s.max_tokens AS s_max_tokens"
    };
}
pub(crate) use session_columns;

/// A `sessions` row (or a left join's nulls: the token is no session).
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    s_providers: Option<String>,
    s_max_requests: Option<i64>,
    s_max_tokens: Option<i64>,
}

impl SessionRow {
    pub(crate) fn grant(self) -> Option<SessionGrant> {
        let positive = |n: Option<i64>| n.map(|n| n.max(0) as u64);
        self.s_providers.map(|providers| SessionGrant {
            providers: providers.split_whitespace().map(str::to_owned).collect(),
            max_requests: positive(self.s_max_requests),
            max_tokens: positive(self.s_max_tokens),
        })
    }
}

/// A session: its token's columns, then [`session_columns`].
#[derive(sqlx::FromRow)]
pub(crate) struct SessionTokenRow {
    #[sqlx(flatten)]
    token: TokenRow,
    #[sqlx(flatten)]
    session: SessionRow,
}

impl TryFrom<SessionTokenRow> for Session {
    type Error = StoreError;
    fn try_from(r: SessionTokenRow) -> StoreResult<Self> {
        let grant = r
            .session
            .grant()
            .ok_or_else(|| StoreError::Corrupt { what: "session", detail: "a session row without providers".into() })?;
        Ok(Session { token: r.token.try_into()?, grant })
    }
}

impl TryFrom<TokenPrincipalRow> for crate::TokenPrincipal {
    type Error = StoreError;
    fn try_from(r: TokenPrincipalRow) -> StoreResult<Self> {
        let user = User::from(UserRow {
            id: r.token.user_id,
            email: r.u_email,
            external_id: r.u_external_id,
            tier: r.u_tier,
            super_admin: r.u_super_admin,
            created_at: r.u_created_at,
            updated_at: r.u_updated_at,
        });
        let acting = match (r.m_role, r.w_id, r.w_name, r.w_status, r.w_personal, r.w_created_at, r.w_updated_at) {
            (Some(role), Some(id), Some(name), Some(status), Some(personal), Some(created_at), Some(updated_at)) => {
                let row =
                    WorkspaceRow { id, name, status, personal, external_id: r.w_external_id, created_at, updated_at };
                Some((Workspace::try_from(row)?, parse("membership", &role)?))
            }
            _ => None,
        };
        Ok(crate::TokenPrincipal { token: r.token.try_into()?, user, acting, session: r.session.grant() })
    }
}

macro_rules! token_principal_select {
    () => {
        "SELECT t.id, t.public_id, t.secret_hash, t.user_id, t.workspace_id, t.name, t.scopes, t.expires_at, \
         t.created_at, t.last_used_at, t.revoked_at, \
         u.email AS u_email, u.external_id AS u_external_id, u.tier AS u_tier, u.super_admin AS u_super_admin, \
         u.created_at AS u_created_at, u.updated_at AS u_updated_at, m.role AS m_role, \
         w.id AS w_id, w.name AS w_name, w.status AS w_status, w.personal AS w_personal, \
         w.external_id AS w_external_id, w.created_at AS w_created_at, w.updated_at AS w_updated_at, \
         s.providers AS s_providers, s.max_requests AS s_max_requests, s.max_tokens AS s_max_tokens \
         FROM api_tokens t JOIN users u ON u.id = t.user_id \
         LEFT JOIN sessions s ON s.token_id = t.id \
         LEFT JOIN memberships m ON m.user_id = t.user_id \
         AND (t.workspace_id IS NULL OR m.workspace_id = t.workspace_id) \
         LEFT JOIN workspaces w ON w.id = m.workspace_id \
         WHERE t.public_id = $1 ORDER BY m.created_at, m.workspace_id LIMIT 1"
    };
}
pub(crate) use token_principal_select;

macro_rules! audit_columns {
    () => {
        "id, at, actor_user_id, actor, action, target_type, target_id, workspace_id, source_addr, result, detail"
    };
}
pub(crate) use audit_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: Uuid,
    at: Ts,
    actor_user_id: Option<Uuid>,
    actor: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    workspace_id: Option<Uuid>,
    source_addr: Option<String>,
    result: String,
    detail: Option<String>,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> StoreResult<Self> {
        Ok(AuditEvent {
            id: AuditEventId::from_uuid(r.id),
            at: r.at.0,
            actor_user_id: r.actor_user_id.map(UserId::from_uuid),
            actor: r.actor,
            action: parse("audit action", &r.action)?,
            target_type: r.target_type,
            target_id: r.target_id,
            workspace_id: r.workspace_id.map(WorkspaceId::from_uuid),
            source_addr: r.source_addr,
            result: parse("audit result", &r.result)?,
            detail: r.detail,
        })
    }
}

macro_rules! usage_columns {
    () => {
        "id, at, user_id, workspace_id, credential_id, key_source, provider, model, \
     input_tokens, output_tokens, cost_nano_usd, status, latency_ms, estimated, session_id"
    };
}
pub(crate) use usage_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    id: Uuid,
    at: Ts,
    user_id: Option<Uuid>,
    workspace_id: Option<Uuid>,
    credential_id: Option<Uuid>,
    key_source: String,
    provider: String,
    model: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cost_nano_usd: i64,
    status: i32,
    latency_ms: i64,
    estimated: bool,
    session_id: Option<Uuid>,
}

impl TryFrom<UsageRow> for UsageEvent {
    type Error = StoreError;
    fn try_from(r: UsageRow) -> StoreResult<Self> {
        Ok(UsageEvent {
            id: UsageEventId::from_uuid(r.id),
            at: r.at.0,
            user_id: r.user_id.map(UserId::from_uuid),
            workspace_id: r.workspace_id.map(WorkspaceId::from_uuid),
            credential_id: r.credential_id.map(CredentialId::from_uuid),
            key_source: parse("usage key source", &r.key_source)?,
            provider: r.provider,
            model: r.model,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_nano_usd: r.cost_nano_usd,
            status: r.status,
            latency_ms: r.latency_ms,
            estimated: r.estimated,
            session_id: r.session_id.map(TokenId::from_uuid),
        })
    }
}
