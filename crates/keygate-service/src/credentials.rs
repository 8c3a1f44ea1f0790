//! The credential lifecycle a caller drives through the keys API: create (trim, format
//! check, live probe, seal, store, replacing an earlier key for the same provider),
//! list, read, update, replace the secret, test, delete. Every query is scoped to what
//! the caller may see; anything else is "not found", so ids do not leak.

use crate::audit::{self, Entry};
use crate::principal::Principal;
use crate::services::Services;
use crate::validation::{self, Outcome};
use crate::{now, ServiceError, ServiceResult};
use keygate_core::catalog::{trim_secret, Catalog, CredentialKind, Provider};
use keygate_core::*;
use keygate_store::CredentialFilter;
use keygate_vault::SecretText;
use std::collections::BTreeMap;

/// A pasted secret: one key, or the named fields of a multi-field credential.
#[derive(Debug, Clone)]
pub enum SecretInput {
    Key(SecretText),
    Fields(BTreeMap<String, SecretText>),
}

/// A create request, as the keys API receives it.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub provider: String,
    pub name: Option<String>,
    pub secret: SecretInput,
    pub model: Option<String>,
    pub scope: Option<CredentialScope>,
    pub workspace_id: Option<WorkspaceId>,
    pub operator_shared: Option<bool>,
}

/// Changes to a credential's metadata. `model: Some(None)` clears the override.
#[derive(Debug, Clone, Default)]
pub struct CredentialPatch {
    pub name: Option<String>,
    pub model: Option<Option<String>>,
    pub status: Option<CredentialStatus>,
    pub operator_shared: Option<bool>,
}

/// Which credentials a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope {
    /// The caller's own keys and their workspace's shared keys.
    Mine,
    Only(CredentialScope),
}

/// What the caller may do with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    None,
    Read,
    Manage,
}

const MAX_NAME_CHARS: usize = 100;

impl Services {
    pub async fn create_credential(&self, principal: &Principal, input: NewCredential) -> ServiceResult<Credential> {
        principal.require_scope(Scope::Keys)?;
        let provider = self.provider(&input.provider)?;
        let scope = input.scope.unwrap_or(CredentialScope::User);
        keyable(provider, scope, &self.catalog)?;
        let owner = self.owner_for(principal, scope, input.workspace_id).await?;
        if let Some(ws) = owner.workspace_id() {
            self.require_active(ws).await?;
        }
        let shared = owner == Owner::Operator && input.operator_shared.unwrap_or(false);
        let secret = normalize(&self.catalog, provider, &input.secret)?;
        let name = clean_name(input.name.as_deref(), provider)?;
        let model = clean_model(input.model)?;

        // The key this one replaces (same owner and provider), if any; else the limit.
        let existing = self
            .store
            .credentials(&CredentialFilter {
                scope: Some(owner.scope()),
                workspace_id: owner.workspace_id(),
                owner_user_id: owner.user_id(),
                provider: Some(provider.id.clone()),
                status: Some(CredentialStatus::Active),
                ..Default::default()
            })
            .await?
            .into_iter()
            .find(|c| {
                c.slot_key() == keygate_core::slot_key(owner.scope(), owner.workspace_id(), owner.user_id(), shared)
            });
        if existing.is_none() {
            if let Owner::User { user, .. } = owner {
                let held = self
                    .store
                    .credentials(&CredentialFilter {
                        scope: Some(CredentialScope::User),
                        owner_user_id: Some(user),
                        ..Default::default()
                    })
                    .await?;
                let max = self.policy().max_keys_per_user;
                if held.len() >= max as usize {
                    return Err(ServiceError::CredentialLimit(format!(
                        "you already hold {} keys, the most allowed ({max}): delete one or replace a key for the same provider",
                        held.len()
                    )));
                }
            }
        }

        let outcome = self
            .probe_for_save(principal, AuditAction::CredentialCreate, None, owner.workspace_id(), provider, &secret)
            .await?;

        let at = now();
        let mut credential = Credential::draft(owner, &provider.id, &name, at);
        credential.model = model;
        credential.hint = hint(provider, &secret);
        credential.operator_shared = shared;
        apply(&mut credential, &outcome, at);
        let (sealed, dek) = self.vault.seal_credential(&credential, &secret).await?;
        credential.sealed = sealed;
        credential.data_key_id = dek;
        let action = if existing.is_some() { AuditAction::CredentialReplace } else { AuditAction::CredentialCreate };
        let detail =
            existing.as_ref().map(|old| format!("replaces {}; {}", old.id, outcome.detail)).unwrap_or(outcome.detail);
        let audit = credential_audit(
            principal,
            action,
            Some(credential.id),
            owner.workspace_id(),
            AuditResult::Ok,
            provider,
            Some(&detail),
        );
        // The cap and the one-key-per-provider rule hold in the store's transaction too:
        // concurrent creates cannot both pass the check above.
        let cap = matches!(owner, Owner::User { .. }).then(|| self.policy().max_keys_per_user);
        self.store.save_credential(&credential, existing.as_ref().map(|c| c.id), cap, &audit).await.map_err(
            |e| match e {
                keygate_store::StoreError::LimitReached { held, max } => ServiceError::CredentialLimit(format!(
                    "you already hold {held} keys, the most allowed ({max}): delete one or replace a key for the same provider"
                )),
                keygate_store::StoreError::Changed { .. } | keygate_store::StoreError::Conflict(_) => {
                    ServiceError::Conflict(format!(
                        "another {} key was saved for this owner at the same time; nothing was saved: list your keys and try again",
                        provider.name
                    ))
                }
                other => other.into(),
            },
        )?;
        self.changed().await;
        Ok(credential)
    }

    pub async fn list_credentials(&self, principal: &Principal, which: ListScope) -> ServiceResult<Vec<Credential>> {
        principal.require_scope(Scope::Keys)?;
        let ws = principal.workspace.id;
        let mine = CredentialFilter {
            scope: Some(CredentialScope::User),
            workspace_id: Some(ws),
            owner_user_id: Some(principal.user.id),
            ..Default::default()
        };
        let shared =
            CredentialFilter { scope: Some(CredentialScope::Workspace), workspace_id: Some(ws), ..Default::default() };
        Ok(match which {
            ListScope::Mine => {
                let mut all = self.store.credentials(&mine).await?;
                all.extend(self.store.credentials(&shared).await?);
                all
            }
            ListScope::Only(CredentialScope::User) => self.store.credentials(&mine).await?,
            ListScope::Only(CredentialScope::Workspace) => self.store.credentials(&shared).await?,
            ListScope::Only(CredentialScope::Operator) => {
                principal.require_super_admin()?;
                self.store
                    .credentials(&CredentialFilter { scope: Some(CredentialScope::Operator), ..Default::default() })
                    .await?
            }
        })
    }

    pub async fn get_credential(&self, principal: &Principal, id: CredentialId) -> ServiceResult<Credential> {
        principal.require_scope(Scope::Keys)?;
        self.load(principal, id, Access::Read).await
    }

    pub async fn update_credential(
        &self,
        principal: &Principal,
        id: CredentialId,
        patch: CredentialPatch,
    ) -> ServiceResult<Credential> {
        principal.require_scope(Scope::Keys)?;
        let mut credential = self.load(principal, id, Access::Manage).await?;
        let provider = self.provider(&credential.provider)?;
        if let Some(name) = patch.name {
            credential.name = clean_name(Some(&name), provider)?;
        }
        if let Some(model) = patch.model {
            credential.model = clean_model(model)?;
        }
        if let Some(status) = patch.status {
            credential.status = status;
        }
        if let Some(shared) = patch.operator_shared {
            if credential.scope != CredentialScope::Operator {
                return Err(ServiceError::Invalid {
                    field: "operator_shared",
                    problem: "only operator keys can be shared".into(),
                });
            }
            credential.operator_shared = shared;
        }
        credential.updated_at = now();
        let audit = credential_audit(
            principal,
            AuditAction::CredentialUpdate,
            Some(id),
            credential.workspace_id,
            AuditResult::Ok,
            provider,
            None,
        );
        // The secret is not touched here: only if it is still the one read is anything saved.
        self.store.update_credential(&credential, &credential.sealed, Some(&audit)).await.map_err(|e| match e {
            keygate_store::StoreError::Conflict(_) => ServiceError::Conflict(format!(
                "another active {} key exists for this owner: disable or delete it first",
                provider.name
            )),
            other => other.into(),
        })?;
        self.changed().await;
        Ok(credential)
    }

    /// Replaces the secret, keeping the id, name, model and usage.
    pub async fn replace_secret(
        &self,
        principal: &Principal,
        id: CredentialId,
        secret: SecretInput,
    ) -> ServiceResult<Credential> {
        principal.require_scope(Scope::Keys)?;
        let mut credential = self.load(principal, id, Access::Manage).await?;
        if let Some(ws) = credential.workspace_id {
            self.require_active(ws).await?;
        }
        let provider = self.provider(&credential.provider)?;
        let secret = normalize(&self.catalog, provider, &secret)?;
        let outcome = self
            .probe_for_save(
                principal,
                AuditAction::CredentialSecret,
                Some(id),
                credential.workspace_id,
                provider,
                &secret,
            )
            .await?;
        let at = now();
        credential.hint = hint(provider, &secret);
        apply(&mut credential, &outcome, at);
        credential.updated_at = at;
        // A new secret version, bound into the record: the old record, written back into
        // the row, no longer opens. It moves with the secret in one compare-and-set.
        credential.secret_version = credential.secret_version.checked_add(1).ok_or_else(|| {
            ServiceError::Conflict("this key's secret has been replaced too many times: add it as a new key".into())
        })?;
        let (sealed, dek) = self.vault.seal_credential(&credential, &secret).await?;
        let sealed_before = std::mem::replace(&mut credential.sealed, sealed);
        credential.data_key_id = dek;
        let audit = credential_audit(
            principal,
            AuditAction::CredentialSecret,
            Some(id),
            credential.workspace_id,
            AuditResult::Ok,
            provider,
            Some(&outcome.detail),
        );
        self.store.update_credential(&credential, &sealed_before, Some(&audit)).await?;
        self.changed().await;
        Ok(credential)
    }

    /// Probes the stored secret again and records the result.
    /// Probes a key again. Only those who manage it may: a probe is a call to the
    /// provider with the key and rewrites its validity, so members cannot set off probes
    /// of their workspace's shared keys at will.
    pub async fn test_credential(&self, principal: &Principal, id: CredentialId) -> ServiceResult<Credential> {
        principal.require_scope(Scope::Keys)?;
        let mut credential = self.load(principal, id, Access::Manage).await?;
        if let Some(ws) = credential.workspace_id {
            self.require_active(ws).await?;
        }
        let provider = self.provider(&credential.provider)?;
        let outcome = match self.vault.open_credential(&credential).await {
            Ok(secret) => validation::probe(&self.http, provider, &secret).await,
            Err(e) => {
                tracing::warn!(credential = %id, error = %e, "a credential could not be opened for a test");
                Outcome {
                    validity: Validity::Undecryptable,
                    detail: "the stored key cannot be decrypted (its workspace was deleted, or the master key changed): add it again".into(),
                }
            }
        };
        apply(&mut credential, &outcome, now());
        // The verdict is about the secret tested: if it was replaced meanwhile, say so
        // rather than pin this verdict on the new one.
        let audit = credential_audit(
            principal,
            AuditAction::CredentialTest,
            Some(id),
            credential.workspace_id,
            credential.validity.into(),
            provider,
            Some(&outcome.detail),
        );
        self.store.update_credential(&credential, &credential.sealed, Some(&audit)).await?;
        self.changed().await;
        Ok(credential)
    }

    pub async fn delete_credential(&self, principal: &Principal, id: CredentialId) -> ServiceResult<()> {
        principal.require_scope(Scope::Keys)?;
        let credential = self.load(principal, id, Access::Manage).await?;
        let provider = self.provider(&credential.provider)?;
        let audit = credential_audit(
            principal,
            AuditAction::CredentialDelete,
            Some(id),
            credential.workspace_id,
            AuditResult::Ok,
            provider,
            None,
        );
        self.store.delete_credential(id, &audit).await?;
        self.changed().await;
        Ok(())
    }

    /// Deletes the caller's own key for `provider` (`CredentialScope::User`: in the
    /// workspace the caller acts in) or that workspace's shared key for it
    /// (`CredentialScope::Workspace`: needs the owner or admin role there), each deletion
    /// audited like a delete by id; `not_found` when there is none. A disabled key left
    /// beside the active one goes too: "remove my OpenAI key" leaves none.
    pub async fn delete_credentials_of_provider(
        &self,
        principal: &Principal,
        provider: &str,
        scope: CredentialScope,
    ) -> ServiceResult<()> {
        principal.require_scope(Scope::Keys)?;
        let provider = self.provider(provider)?;
        let ws = principal.workspace.id;
        let filter = match scope {
            CredentialScope::User => CredentialFilter {
                scope: Some(CredentialScope::User),
                workspace_id: Some(ws),
                owner_user_id: Some(principal.user.id),
                provider: Some(provider.id.clone()),
                ..Default::default()
            },
            CredentialScope::Workspace => CredentialFilter {
                scope: Some(CredentialScope::Workspace),
                workspace_id: Some(ws),
                provider: Some(provider.id.clone()),
                ..Default::default()
            },
            CredentialScope::Operator => {
                return Err(ServiceError::Invalid {
                    field: "scope",
                    problem: "removing by provider takes `user` or `workspace`; delete an operator key by its id"
                        .into(),
                })
            }
        };
        if scope == CredentialScope::Workspace && !principal.role.can_administer() {
            return Err(ServiceError::Forbidden("workspace keys need the owner or admin role in the workspace".into()));
        }
        let found = self.store.credentials(&filter).await?;
        if found.is_empty() {
            return Err(ServiceError::NotFound { entity: "key" });
        }
        for credential in found {
            let audit = credential_audit(
                principal,
                AuditAction::CredentialDelete,
                Some(credential.id),
                credential.workspace_id,
                AuditResult::Ok,
                provider,
                None,
            );
            match self.store.delete_credential(credential.id, &audit).await {
                // Deleted meanwhile by another request: what was asked for is done.
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
        }
        self.changed().await;
        Ok(())
    }

    /// Probes a secret about to be saved; refuses (audited) a rejected key when the policy
    /// says so, before anything is written.
    async fn probe_for_save(
        &self,
        principal: &Principal,
        action: AuditAction,
        id: Option<CredentialId>,
        ws: Option<WorkspaceId>,
        provider: &Provider,
        secret: &SecretText,
    ) -> ServiceResult<Outcome> {
        let outcome = validation::probe(&self.http, provider, secret).await;
        if outcome.validity == Validity::Invalid && self.policy().reject_invalid_keys {
            let audit =
                credential_audit(principal, action, id, ws, AuditResult::Rejected, provider, Some(&outcome.detail));
            self.store.insert_audit_event(&audit).await?;
            return Err(ServiceError::ProviderRejectedKey(outcome.detail));
        }
        Ok(outcome)
    }

    pub(crate) fn provider(&self, id: &str) -> ServiceResult<&std::sync::Arc<Provider>> {
        self.catalog.get(id).ok_or_else(|| ServiceError::UnknownProvider(id.to_owned()))
    }

    async fn require_active(&self, ws: WorkspaceId) -> ServiceResult<()> {
        let workspace = self.store.workspace(ws).await?;
        if workspace.status.allows_use() {
            Ok(())
        } else {
            Err(ServiceError::WorkspaceInactive { status: workspace.status.to_string() })
        }
    }

    /// The owner a create request names, if the caller may create keys for it.
    async fn owner_for(
        &self,
        principal: &Principal,
        scope: CredentialScope,
        ws: Option<WorkspaceId>,
    ) -> ServiceResult<Owner> {
        let ws = ws.unwrap_or(principal.workspace.id);
        let role = if ws == principal.workspace.id {
            Some(principal.role)
        } else {
            self.store.membership(ws, principal.user.id).await?.map(|m| m.role)
        };
        match scope {
            CredentialScope::User => {
                role.ok_or(ServiceError::NotFound { entity: "workspace" })?;
                Ok(Owner::User { workspace: ws, user: principal.user.id })
            }
            CredentialScope::Workspace => match role {
                Some(r) if r.can_administer() => Ok(Owner::Workspace(ws)),
                Some(_) => {
                    Err(ServiceError::Forbidden("workspace keys need the owner or admin role in the workspace".into()))
                }
                None => Err(ServiceError::NotFound { entity: "workspace" }),
            },
            CredentialScope::Operator => {
                principal.require_super_admin()?;
                Ok(Owner::Operator)
            }
        }
    }

    /// Loads a credential the caller may reach with at least `needed` access.
    async fn load(&self, principal: &Principal, id: CredentialId, needed: Access) -> ServiceResult<Credential> {
        let not_found = || ServiceError::NotFound { entity: "key" };
        let credential = match self.store.credential(id).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let access = match credential.scope {
            CredentialScope::User if credential.owner_user_id == Some(principal.user.id) => Access::Manage,
            CredentialScope::User => Access::None,
            CredentialScope::Workspace => {
                let ws = credential.workspace_id.ok_or_else(not_found)?;
                match self.store.membership(ws, principal.user.id).await? {
                    Some(m) if m.role.can_administer() => Access::Manage,
                    Some(_) => Access::Read,
                    None => Access::None,
                }
            }
            CredentialScope::Operator if principal.require_super_admin().is_ok() => Access::Manage,
            CredentialScope::Operator => Access::None,
        };
        match access {
            Access::None => Err(not_found()),
            a if a < needed => {
                Err(ServiceError::Forbidden("managing this key needs the owner or admin role in its workspace".into()))
            }
            _ => Ok(credential),
        }
    }
}

/// The audit row of a change to a credential.
fn credential_audit(
    principal: &Principal,
    action: AuditAction,
    id: Option<CredentialId>,
    ws: Option<WorkspaceId>,
    result: AuditResult,
    provider: &Provider,
    detail: Option<&str>,
) -> AuditEvent {
    let detail = serde_json::json!({"provider": provider.id, "detail": detail}).to_string();
    audit::event(
        &principal.actor(),
        Entry {
            action,
            target_type: "credential",
            target_id: id.map(|i| i.to_string()),
            workspace_id: ws,
            result,
            detail: Some(detail),
        },
    )
}

fn apply(credential: &mut Credential, outcome: &Outcome, at: chrono::DateTime<chrono::Utc>) {
    credential.validity = outcome.validity;
    credential.validity_detail = Some(outcome.detail.clone());
    credential.validity_checked_at = Some(at);
}

/// Trims and format-checks a pasted secret; returns what gets sealed.
/// Whether keys for `provider` may be stored with `scope`: a provider that uses another's
/// keys holds none itself, and a personal integration is never an operator key.
fn keyable(provider: &Provider, scope: CredentialScope, catalog: &Catalog) -> ServiceResult<()> {
    if let Some(of) = &provider.uses_key_of {
        let name = catalog.get(of).map_or(of.as_str(), |p| p.name.as_str());
        return Err(ServiceError::Invalid {
            field: "provider",
            problem: format!(
                "{} uses your {name} key: store it once with provider `{of}`, and both use it",
                provider.name
            ),
        });
    }
    if !provider.key_scopes.contains(&scope) {
        let allowed: Vec<&str> = provider.key_scopes.iter().map(|s| s.as_str()).collect();
        return Err(ServiceError::Invalid {
            field: "scope",
            problem: format!(
                "{} keys act as the person who made them, so they cannot be {scope} keys; store one with scope {}",
                provider.name,
                allowed.join(" or ")
            ),
        });
    }
    Ok(())
}

fn normalize(catalog: &Catalog, provider: &Provider, input: &SecretInput) -> ServiceResult<SecretText> {
    let bad = |e: keygate_core::catalog::FormatError| ServiceError::InvalidKeyFormat(e.message);
    match (provider.credential, input) {
        (CredentialKind::ApiKey, SecretInput::Key(key)) => {
            let trimmed = trim_secret("secret", key.expose()).map_err(bad)?;
            let others = catalog.owners_of_other_shape(provider, trimmed);
            if !others.is_empty() {
                let names: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
                return Err(ServiceError::InvalidKeyFormat(format!(
                    "this looks like {} key, not {} key: add it under {} (nothing was sent to any provider)",
                    a_name(&names.join(" or ")),
                    a_name(&provider.name),
                    names.join(" or ")
                )));
            }
            provider.check_format(&[("api_key", trimmed)]).map_err(bad)?;
            Ok(SecretText::new(trimmed.to_owned()))
        }
        (CredentialKind::ApiKey, SecretInput::Fields(_)) => {
            Err(ServiceError::InvalidKeyFormat(format!("{} takes one key: send `secret` as a string", provider.name)))
        }
        (_, SecretInput::Key(_)) => Err(ServiceError::InvalidKeyFormat(format!(
            "{} credentials are an object with {}",
            provider.name,
            provider.credential.fields().join(", ")
        ))),
        (_, SecretInput::Fields(fields)) => {
            let mut trimmed = Vec::with_capacity(fields.len());
            for (name, value) in fields {
                trimmed.push((name.as_str(), trim_secret(name, value.expose()).map_err(bad)?));
            }
            provider.check_format(&trimmed).map_err(bad)?;
            let map: BTreeMap<&str, &str> = trimmed.into_iter().collect();
            let json = serde_json::to_string(&map).map_err(|e| ServiceError::InvalidKeyFormat(e.to_string()))?;
            Ok(SecretText::new(json))
        }
    }
}

/// "an OpenAI", "a Mapbox".
fn a_name(name: &str) -> String {
    let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
    format!("{article} {name}")
}

/// `…abcd` of the part of the credential that identifies it.
fn hint(provider: &Provider, secret: &SecretText) -> String {
    let field = match provider.credential {
        CredentialKind::ApiKey => return secret.hint(),
        CredentialKind::ClientCredentials => "client_secret",
        CredentialKind::Aws => "access_key_id",
    };
    validation::fields(provider, secret).and_then(|f| f.get(field).map(SecretText::hint)).unwrap_or_else(|| "…".into())
}

fn clean_name(name: Option<&str>, provider: &Provider) -> ServiceResult<String> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{} key", provider.name));
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::Invalid {
            field: "name",
            problem: format!("must be at most {MAX_NAME_CHARS} printable characters"),
        });
    }
    Ok(name)
}

fn clean_model(model: Option<String>) -> ServiceResult<Option<String>> {
    let model = model.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty());
    if let Some(m) = &model {
        if m.chars().count() > 200 || m.chars().any(char::is_whitespace) {
            return Err(ServiceError::Invalid {
                field: "model",
                problem: "must be a model id without spaces, at most 200 characters".into(),
            });
        }
    }
    Ok(model)
}
