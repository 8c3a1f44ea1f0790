//! The entities keygate stores and the closed vocabularies (statuses, roles, scopes)
//! they use. Each vocabulary has one spelling, used in the database, the API and logs.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value outside a closed vocabulary, e.g. a status read from a hand-edited row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`: not one of {}", expected.trim_end_matches([',', ' ']))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        // Serialized with the same one spelling as the database and the logs.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, ", "),+),
                    }),
                }
            }
        }
    };
}

vocabulary!(
    /// A workspace's lifecycle. Only an active workspace's credentials are ever used.
    WorkspaceStatus, "workspace status" {
        Active => "active",
        Paused => "paused",
        Cancelled => "cancelled",
        Deleted => "deleted",
    }
);

vocabulary!(
    /// A user's role inside one workspace.
    Role, "role" {
        Owner => "owner",
        Admin => "admin",
        Member => "member",
    }
);

vocabulary!(
    /// Who owns a credential, and so who may use it.
    CredentialScope, "credential scope" {
        User => "user",
        Workspace => "workspace",
        Operator => "operator",
    }
);

vocabulary!(
    /// Whether a credential may be used at all.
    CredentialStatus, "credential status" {
        Active => "active",
        Disabled => "disabled",
    }
);

vocabulary!(
    /// What keygate last learned about a credential's secret.
    Validity, "validity" {
        Valid => "valid",
        Invalid => "invalid",
        Unverified => "unverified",
        Undecryptable => "undecryptable",
    }
);

vocabulary!(
    /// Which kind of credential paid for a call (the resolution chain's steps).
    KeySource, "key source" {
        User => "user",
        Workspace => "workspace",
        OperatorDemo => "operator_demo",
        Platform => "platform",
    }
);

impl KeySource {
    /// Paid by the customer (their own or their workspace's key), not the operator.
    pub const fn customer_paid(self) -> bool {
        matches!(self, KeySource::User | KeySource::Workspace)
    }
}

vocabulary!(
    /// What a keygate token may be used for. A JWT or a signed-in page session carries
    /// every scope (what the user may do is still bounded by their roles). `admin` and
    /// `metrics` (reading `/metrics`, which shows who calls which provider) are held by
    /// super-admins only.
    Scope, "scope" {
        Keys => "keys",
        Proxy => "proxy",
        Usage => "usage",
        Admin => "admin",
        Metrics => "metrics",
    }
);

impl Scope {
    /// Whether only super-admins may hold this scope.
    pub const fn super_admin_only(self) -> bool {
        matches!(self, Scope::Admin | Scope::Metrics)
    }
}

vocabulary!(
    /// What an audit row records.
    AuditAction, "audit action" {
        AuthLogin => "auth.login",
        CredentialCreate => "credential.create",
        CredentialReplace => "credential.replace",
        CredentialUpdate => "credential.update",
        CredentialSecret => "credential.replace_secret",
        CredentialTest => "credential.test",
        CredentialDelete => "credential.delete",
        TokenCreate => "token.create",
        TokenRevoke => "token.revoke",
        // A sandbox session token minted or revoked, or a call it made refused by the
        // session's own rules (a provider outside its list, a cap reached).
        SessionCreate => "session.create",
        SessionRevoke => "session.revoke",
        SessionRefused => "session.refused",
        UserCreate => "user.create",
        UserProvision => "user.provision",
        UserUpdate => "user.update",
        WorkspaceCreate => "workspace.create",
        WorkspaceStatus => "workspace.status",
        WorkspaceMember => "workspace.member",
        SettingsUpdate => "settings.update",
        // The prompt guard refused a call, or redacted what it found (detail: kinds,
        // provider, message indexes; never the value).
        PromptBlocked => "prompt.blocked",
        PromptRedacted => "prompt.redacted",
    }
);

vocabulary!(
    /// How an audited action ended.
    AuditResult, "audit result" {
        Ok => "ok",
        Denied => "denied",
        Rejected => "rejected",
        Failed => "failed",
        // A key test's verdict.
        Valid => "valid",
        Invalid => "invalid",
        Unverified => "unverified",
        Undecryptable => "undecryptable",
    }
);

impl From<Validity> for AuditResult {
    fn from(v: Validity) -> Self {
        match v {
            Validity::Valid => Self::Valid,
            Validity::Invalid => Self::Invalid,
            Validity::Unverified => Self::Unverified,
            Validity::Undecryptable => Self::Undecryptable,
        }
    }
}

impl Role {
    /// Whether this role may manage the workspace's shared credentials and members.
    pub const fn can_administer(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

impl WorkspaceStatus {
    /// Only an active workspace's credentials may be opened and used.
    pub const fn allows_use(self) -> bool {
        matches!(self, WorkspaceStatus::Active)
    }
}

/// Who owns a data key: one workspace, or the operator (platform) scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    Workspace(WorkspaceId),
    Operator,
}

impl KeyOwner {
    const OPERATOR: &'static str = "operator";
    const WORKSPACE_PREFIX: &'static str = "workspace:";

    /// The stable text form used as the data key's owner column and in associated data.
    pub fn storage_key(&self) -> String {
        match self {
            KeyOwner::Workspace(id) => {
                let mut key = String::with_capacity(Self::WORKSPACE_PREFIX.len() + uuid::fmt::Hyphenated::LENGTH);
                key.push_str(Self::WORKSPACE_PREFIX);
                push_id(&mut key, Some(id.as_uuid()));
                key
            }
            KeyOwner::Operator => Self::OPERATOR.to_owned(),
        }
    }

    pub fn parse_storage_key(s: &str) -> Result<Self, UnknownVariant> {
        let unknown =
            || UnknownVariant { kind: "data key owner", value: s.to_owned(), expected: "operator workspace:<uuid>" };
        if s == Self::OPERATOR {
            return Ok(KeyOwner::Operator);
        }
        s.strip_prefix(Self::WORKSPACE_PREFIX)
            .and_then(|id| id.parse().ok())
            .map(KeyOwner::Workspace)
            .ok_or_else(unknown)
    }
}

impl fmt::Display for KeyOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.storage_key())
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub status: WorkspaceStatus,
    /// A workspace made for one user on first sight (host-app JWT provisioning).
    pub personal: bool,
    /// The host application's id for this workspace (a JWT `workspace` claim).
    pub external_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A person, or a host application's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Option<String>,
    /// The host application's id for this user (a JWT `sub`), when it came from one.
    pub external_id: Option<String>,
    pub tier: String,
    pub super_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user's place in a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub workspace_id: WorkspaceId,
    pub user_id: UserId,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A data-encryption key as stored: wrapped by a key-encryption key (KEK).
/// `wrapped` is `None` once the key was destroyed (crypto-shredding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub id: DataKeyId,
    pub owner: KeyOwner,
    /// The id of the KEK that wrapped it, also written into `wrapped`'s header.
    pub kek_id: String,
    pub wrapped: Option<Vec<u8>>,
    /// Incremented on every rewrap: the compare-and-set guard for rotation.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub destroyed_at: Option<DateTime<Utc>>,
}

/// Running totals of what a credential was used for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Estimated cost in billionths of a US dollar, so sums stay exact.
    pub cost_nano_usd: i64,
}

/// A stored provider secret, sealed. The plaintext is never part of this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: CredentialId,
    pub scope: CredentialScope,
    /// `None` only for operator credentials.
    pub workspace_id: Option<WorkspaceId>,
    /// Set for user-scoped credentials: the user who owns it.
    pub owner_user_id: Option<UserId>,
    pub provider: String,
    pub name: String,
    /// The last characters of the secret, e.g. `…abcd`, fixed when it was stored.
    pub hint: String,
    pub model: Option<String>,
    pub status: CredentialStatus,
    pub validity: Validity,
    pub validity_detail: Option<String>,
    pub validity_checked_at: Option<DateTime<Utc>>,
    /// Whether an operator credential is offered to users as the demo allowance.
    pub operator_shared: bool,
    /// The sealed record (header, nonce, ciphertext, tag).
    pub sealed: Vec<u8>,
    /// Which of this credential's secrets `sealed` holds, bound into its associated data:
    /// 1 when created, one more at each replacement, so a replaced secret's record written
    /// back into the row does not open. 0: sealed before versions existed (until the
    /// secret is next replaced).
    pub secret_version: u32,
    pub data_key_id: DataKeyId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub usage: UsageTotals,
}

/// Who a credential belongs to. Each variant carries exactly the ids its scope needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A user's personal credential inside one workspace.
    User { workspace: WorkspaceId, user: UserId },
    /// Shared by everyone in a workspace.
    Workspace(WorkspaceId),
    /// The platform's own.
    Operator,
}

impl Owner {
    pub const fn scope(&self) -> CredentialScope {
        match self {
            Owner::User { .. } => CredentialScope::User,
            Owner::Workspace(_) => CredentialScope::Workspace,
            Owner::Operator => CredentialScope::Operator,
        }
    }

    pub const fn workspace_id(&self) -> Option<WorkspaceId> {
        match self {
            Owner::User { workspace, .. } | Owner::Workspace(workspace) => Some(*workspace),
            Owner::Operator => None,
        }
    }

    pub const fn user_id(&self) -> Option<UserId> {
        match self {
            Owner::User { user, .. } => Some(*user),
            _ => None,
        }
    }
}

impl Credential {
    /// A new, active, unverified credential with no secret yet: the caller seals one
    /// (which needs the final id, owner and provider) and fills `sealed` and
    /// `data_key_id` before storing it.
    pub fn draft(owner: Owner, provider: &str, name: &str, at: DateTime<Utc>) -> Self {
        Credential {
            id: CredentialId::new(),
            scope: owner.scope(),
            workspace_id: owner.workspace_id(),
            owner_user_id: owner.user_id(),
            provider: provider.to_owned(),
            name: name.to_owned(),
            hint: String::new(),
            model: None,
            status: CredentialStatus::Active,
            validity: Validity::Unverified,
            validity_detail: None,
            validity_checked_at: None,
            operator_shared: false,
            sealed: Vec::new(),
            secret_version: 1,
            data_key_id: DataKeyId::from_uuid(uuid::Uuid::nil()),
            created_at: at,
            updated_at: at,
            last_used_at: None,
            usage: UsageTotals::default(),
        }
    }

    /// The owner whose data key seals this credential.
    pub fn key_owner(&self) -> KeyOwner {
        match self.workspace_id {
            Some(ws) if self.scope != CredentialScope::Operator => KeyOwner::Workspace(ws),
            _ => KeyOwner::Operator,
        }
    }

    /// Who owns the row, as bound into its ciphertext's associated data.
    pub fn owner_key(&self) -> String {
        owner_key(self.scope, self.workspace_id, self.owner_user_id)
    }

    /// The slot of "one active credential per provider": the owner, except that the
    /// operator has two (a shared demo key and a platform key may coexist).
    pub fn slot_key(&self) -> String {
        slot_key(self.scope, self.workspace_id, self.owner_user_id, self.operator_shared)
    }
}

/// The text that identifies a credential's owner: `user:<ws>:<user>`, `workspace:<ws>`
/// or `operator`. Used for the one-active-per-provider rule.
/// (Built in one buffer: it is made on every proxied call, as associated data.)
pub fn owner_key(scope: CredentialScope, workspace: Option<WorkspaceId>, user: Option<UserId>) -> String {
    const ID: usize = uuid::fmt::Hyphenated::LENGTH;
    let (workspace, user) = (workspace.map(|w| w.as_uuid()), user.map(|u| u.as_uuid()));
    match scope {
        CredentialScope::User => {
            let mut key = String::with_capacity("user::".len() + 2 * ID);
            key.push_str("user:");
            push_id(&mut key, workspace);
            key.push(':');
            push_id(&mut key, user);
            key
        }
        CredentialScope::Workspace => {
            let mut key = String::with_capacity("workspace:".len() + ID);
            key.push_str("workspace:");
            push_id(&mut key, workspace);
            key
        }
        CredentialScope::Operator => "operator".to_owned(),
    }
}

/// An id as its `Display` writes it (hyphenated, lower case); nothing for `None`.
fn push_id(out: &mut String, id: Option<uuid::Uuid>) {
    if let Some(id) = id {
        out.push_str(id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
    }
}

/// See [`Credential::slot_key`].
pub fn slot_key(
    scope: CredentialScope,
    workspace: Option<WorkspaceId>,
    user: Option<UserId>,
    operator_shared: bool,
) -> String {
    match scope {
        CredentialScope::Operator if operator_shared => "operator:shared".to_owned(),
        CredentialScope::Operator => "operator:platform".to_owned(),
        _ => owner_key(scope, workspace, user),
    }
}

/// A keygate API token as stored: only the SHA-256 of its secret part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: TokenId,
    /// The public part of `kg_<public id>_<secret>`, used to look the token up.
    pub public_id: String,
    pub secret_hash: Vec<u8>,
    pub user_id: UserId,
    pub workspace_id: Option<WorkspaceId>,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a sandbox session adds to its token (which is `proxy`-only and always expires):
/// the providers it may call and its own caps. A session's id is its token's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// Catalog provider ids, sorted, without duplicates.
    pub providers: Vec<String>,
    pub max_requests: Option<u64>,
    /// Input and output tokens over the session's life.
    pub max_tokens: Option<u64>,
}

impl SessionGrant {
    pub fn allows(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| p == provider)
    }
}

/// A sandbox session as its owner sees it: its token and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token: ApiToken,
    pub grant: SessionGrant,
}

/// Who did what to what, when, from where, and how it ended. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub at: DateTime<Utc>,
    pub actor_user_id: Option<UserId>,
    /// A readable actor: an email, `cli`, `system`.
    pub actor: String,
    pub action: AuditAction,
    pub target_type: String,
    pub target_id: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub source_addr: Option<String>,
    pub result: AuditResult,
    /// Extra non-secret facts, as a JSON object.
    pub detail: Option<String>,
}

/// One proxied call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub id: UsageEventId,
    pub at: DateTime<Utc>,
    pub user_id: Option<UserId>,
    pub workspace_id: Option<WorkspaceId>,
    pub credential_id: Option<CredentialId>,
    pub key_source: KeySource,
    pub provider: String,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nano_usd: i64,
    pub status: i32,
    pub latency_ms: i64,
    /// The token counts are keygate's estimate: the answer ended before the provider
    /// reported them (a stream cut short or left by its caller).
    pub estimated: bool,
    /// The sandbox session whose token made the call, if any.
    pub session_id: Option<TokenId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip_and_reject_unknown_values() {
        for s in WorkspaceStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkspaceStatus>().ok(), Some(*s));
        }
        let err = "frozen".parse::<WorkspaceStatus>().unwrap_err();
        assert!(err.to_string().contains("unknown workspace status `frozen`"));
        assert!(err.to_string().contains("paused"));
    }

    #[test]
    fn key_owner_storage_key_round_trips() {
        let ws = KeyOwner::Workspace(WorkspaceId::new());
        assert_eq!(KeyOwner::parse_storage_key(&ws.storage_key()).ok(), Some(ws));
        assert_eq!(KeyOwner::parse_storage_key("operator").ok(), Some(KeyOwner::Operator));
        assert!(KeyOwner::parse_storage_key("workspace:nope").is_err());
    }

    #[test]
    fn owner_texts_are_the_ones_every_sealed_key_was_bound_to() {
        // Associated data of every stored key and data key: a byte changed here and no
        // stored key opens again. The oracle is the `Display` form the texts began as.
        let ws = WorkspaceId::from_uuid("0190f0a4-5b1c-7d2e-8f30-4a5b6c7d8e9f".parse().unwrap());
        let user = UserId::from_uuid("0190F0A4-0000-7000-8000-00000000ABCD".parse().unwrap());
        assert_eq!(owner_key(CredentialScope::User, Some(ws), Some(user)), format!("user:{ws}:{user}"));
        assert_eq!(
            owner_key(CredentialScope::User, Some(ws), Some(user)),
            "user:0190f0a4-5b1c-7d2e-8f30-4a5b6c7d8e9f:0190f0a4-0000-7000-8000-00000000abcd"
        );
        assert_eq!(owner_key(CredentialScope::User, Some(ws), None), format!("user:{ws}:"));
        assert_eq!(owner_key(CredentialScope::User, None, None), "user::");
        assert_eq!(owner_key(CredentialScope::Workspace, Some(ws), Some(user)), format!("workspace:{ws}"));
        assert_eq!(owner_key(CredentialScope::Workspace, None, None), "workspace:");
        assert_eq!(owner_key(CredentialScope::Operator, Some(ws), Some(user)), "operator");
        assert_eq!(KeyOwner::Workspace(ws).storage_key(), format!("workspace:{ws}"));
        assert_eq!(KeyOwner::Operator.storage_key(), "operator");
    }

    #[test]
    fn only_active_workspaces_allow_use() {
        assert!(WorkspaceStatus::Active.allows_use());
        for s in [WorkspaceStatus::Paused, WorkspaceStatus::Cancelled, WorkspaceStatus::Deleted] {
            assert!(!s.allows_use());
        }
    }
}
