//! Builders for the store suite.

use crate::now;
use keygate_core::*;
use keygate_store::Store;

pub fn workspace(name: &str) -> Workspace {
    Workspace {
        id: WorkspaceId::new(),
        name: name.into(),
        status: WorkspaceStatus::Active,
        personal: false,
        external_id: None,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn user(email: Option<&str>, external_id: Option<&str>) -> User {
    User {
        id: UserId::new(),
        email: email.map(Into::into),
        external_id: external_id.map(Into::into),
        tier: "community".into(),
        super_admin: false,
        created_at: now(),
        updated_at: now(),
    }
}

pub fn data_key(owner: KeyOwner, kek: &str) -> DataKeyRecord {
    DataKeyRecord {
        id: DataKeyId::new(),
        owner,
        kek_id: kek.into(),
        wrapped: Some(b"wrapped-dek".to_vec()),
        version: 1,
        created_at: now(),
        updated_at: now(),
        destroyed_at: None,
    }
}

/// A token of `user`'s, acting in `workspace` (or in their oldest one when `None`).
pub fn token(public_id: &str, user: &User, workspace: Option<&Workspace>) -> ApiToken {
    ApiToken {
        id: TokenId::new(),
        public_id: public_id.into(),
        secret_hash: vec![9; 32],
        user_id: user.id,
        workspace_id: workspace.map(|w| w.id),
        name: "ci".into(),
        scopes: vec![Scope::Keys, Scope::Proxy],
        expires_at: None,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    }
}

/// A workspace with one member and a data key, plus the operator's data key.
pub struct Fixture {
    pub workspace: Workspace,
    pub user: User,
    pub data_key: DataKeyRecord,
    pub operator_key: DataKeyRecord,
}

impl Fixture {
    pub async fn new(store: &dyn Store) -> Self {
        let workspace = workspace("fixture");
        let user = user(None, None);
        store.insert_workspace(&workspace).await.unwrap();
        store.insert_user(&user, None).await.unwrap();
        let workspace_key = data_key(KeyOwner::Workspace(workspace.id), "kek");
        store.insert_data_key(&workspace_key).await.unwrap();
        let operator_key = match store.data_key_by_owner(&KeyOwner::Operator).await.unwrap() {
            Some(k) => k,
            None => {
                let k = data_key(KeyOwner::Operator, "kek");
                store.insert_data_key(&k).await.unwrap();
                k
            }
        };
        Self { workspace, user, data_key: workspace_key, operator_key }
    }

    fn credential(&self, scope: CredentialScope, provider: &str) -> Credential {
        let operator = scope == CredentialScope::Operator;
        Credential {
            id: CredentialId::new(),
            scope,
            workspace_id: (!operator).then_some(self.workspace.id),
            owner_user_id: (scope == CredentialScope::User).then_some(self.user.id),
            provider: provider.into(),
            name: format!("{provider} key"),
            hint: "…abcd".into(),
            model: None,
            status: CredentialStatus::Active,
            validity: Validity::Unverified,
            validity_detail: None,
            validity_checked_at: None,
            operator_shared: operator,
            sealed: b"sealed-bytes".to_vec(),
            secret_version: 1,
            data_key_id: if operator { self.operator_key.id } else { self.data_key.id },
            created_at: now(),
            updated_at: now(),
            last_used_at: None,
            usage: UsageTotals::default(),
        }
    }

    pub fn user_credential(&self, provider: &str) -> Credential {
        self.credential(CredentialScope::User, provider)
    }

    pub fn workspace_credential(&self, provider: &str) -> Credential {
        self.credential(CredentialScope::Workspace, provider)
    }

    pub fn operator_credential(&self, provider: &str) -> Credential {
        self.credential(CredentialScope::Operator, provider)
    }

    /// An audit row by this fixture's user, with a fresh id.
    pub fn audit_event(&self, action: &str) -> AuditEvent {
        AuditEvent {
            id: AuditEventId::new(),
            at: now(),
            actor_user_id: Some(self.user.id),
            actor: "fixture".into(),
            action: action.parse().unwrap(),
            target_type: "test".into(),
            target_id: None,
            workspace_id: Some(self.workspace.id),
            source_addr: None,
            result: AuditResult::Ok,
            detail: None,
        }
    }
}
