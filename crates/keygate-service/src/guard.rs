//! The prompt guard applied to a call: [`Services::guard_prompt`] scans an outbound AI
//! request body (passthrough now, the unified endpoint through the same function) with
//! the caller's workspace's setting — its override, else the operator's default in the
//! policy — and blocks the call (`prompt_blocked`, with an audit row) or hands back the
//! body with each match redacted. The per-workspace overrides live in settings documents
//! (`prompt_guard:workspace:<id>`), cached like the rest of the proxy path so a steady
//! stream of calls reads no database.
//!
//! Invariant: the matched value is never logged, returned or audited; errors, audit rows
//! and log lines name the kind, the provider and the message index only.
//!
//! Not for: finding secrets (keygate-core's `guard`), HTTP (the proxy sets the header).

use crate::audit::{self, Entry};
use crate::cache::Cache;
use crate::principal::Principal;
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use keygate_core::catalog::{Catalog, Provider};
use keygate_core::guard::{redact, Finding, KeyShape, Kind, Kinds, Location, Mode, PromptGuard, Scanner};
use keygate_core::{AuditAction, AuditResult, WorkspaceId};
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// The response header that says what was redacted (`redacted=card_number,…`).
pub const HEADER: &str = "x-keygate-prompt-guard";

/// The guard's state: one compiled scanner per set of kinds (built on first need), the
/// catalog's key shapes, and the workspaces' overrides.
#[derive(Debug)]
pub(crate) struct GuardState {
    scanners: [OnceLock<Arc<Scanner>>; Kinds::COUNT],
    shapes: Vec<KeyShape>,
    overrides: Cache<WorkspaceId, Option<PromptGuard>>,
}

impl GuardState {
    pub(crate) fn new(catalog: &Catalog) -> Self {
        Self {
            scanners: std::array::from_fn(|_| OnceLock::new()),
            shapes: KeyShape::of_catalog(catalog),
            overrides: Cache::new(),
        }
    }

    fn scanner(&self, kinds: Kinds) -> ServiceResult<Arc<Scanner>> {
        let cell = &self.scanners[kinds.index()];
        if let Some(scanner) = cell.get() {
            return Ok(scanner.clone());
        }
        let built = Arc::new(Scanner::new(kinds, &self.shapes).map_err(|e| ServiceError::Invalid {
            field: "prompt_guard",
            problem: format!("the prompt guard's matcher cannot be built: {e}"),
        })?);
        Ok(cell.get_or_init(|| built).clone())
    }
}

/// What the guard did to a call that may go on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardOutcome {
    /// The body to send instead, each match redacted; `None`: send the body as it is.
    pub body: Option<Vec<u8>>,
    /// The kinds that were redacted, in the order of [`Kind::ALL`].
    pub redacted: Vec<Kind>,
}

impl GuardOutcome {
    /// The value of [`HEADER`] for the answer, when something was redacted.
    pub fn header(&self) -> Option<String> {
        (!self.redacted.is_empty())
            .then(|| format!("redacted={}", self.redacted.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")))
    }
}

/// A workspace's prompt guard: its own override, if any, and the setting in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspaceGuard {
    #[serde(rename = "override")]
    pub workspace: Option<PromptGuard>,
    pub effective: PromptGuard,
}

/// A JSON body with `\u` escapes, re-serialised so each escape is the character it
/// stands for (serde_json writes only quotes, backslashes and control characters
/// escaped); `None` for a body without escapes or that is not JSON.
fn decode_json_escapes(body: &[u8]) -> Option<Vec<u8>> {
    if !body.windows(2).any(|w| w == b"\\u") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&value).ok()
}

fn settings_key(workspace: WorkspaceId) -> String {
    format!("prompt_guard:workspace:{workspace}")
}

impl Services {
    /// Scans an outbound request body for `provider` (AI providers only) under the
    /// caller's workspace's setting. Blocked: `Err(PromptBlocked)` naming the kinds and
    /// message indexes (never the value), after an audit row. Redacted: the new body and
    /// the kinds. Call it before [`Services::admit`] (a blocked call then reserves
    /// nothing) or, if after, let the call settle without a status so its reservation is
    /// refunded.
    pub async fn guard_prompt(
        &self,
        principal: &Principal,
        provider: &Provider,
        body: &[u8],
    ) -> ServiceResult<GuardOutcome> {
        if provider.kind != "ai" || body.is_empty() {
            return Ok(GuardOutcome::default());
        }
        let setting = self.prompt_guard_for(principal.workspace.id).await?;
        if !setting.active() {
            return Ok(GuardOutcome::default());
        }
        // JSON escapes (`\u0041KIA…`) are decoded before scanning: the provider reads the
        // decoded text, so that is what is scanned (and, if redacted, what is sent).
        let decoded = decode_json_escapes(body);
        let body = decoded.as_deref().unwrap_or(body);
        let findings = self.guard.scanner(setting.kinds())?.scan(body);
        if findings.is_empty() {
            return Ok(GuardOutcome::default());
        }
        let kinds: Vec<Kind> = findings.iter().map(|f| f.kind).collect::<Kinds>().iter().collect();
        let kind_list = kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
        let blocked = setting.mode == Mode::Block;
        let detail = serde_json::json!({
            "provider": provider.id,
            "findings": findings.iter().take(20).map(|f| serde_json::json!({"kind": f.kind, "message": f.location.message()}))
                .collect::<Vec<_>>(),
        });
        let entry = Entry {
            action: if blocked { AuditAction::PromptBlocked } else { AuditAction::PromptRedacted },
            target_type: "provider",
            target_id: Some(provider.id.clone()),
            workspace_id: Some(principal.workspace.id),
            result: if blocked { AuditResult::Denied } else { AuditResult::Ok },
            detail: Some(detail.to_string()),
        };
        if let Err(e) = audit::record(&*self.store, &principal.actor(), entry).await {
            tracing::warn!(error = %e, "could not write the prompt guard's audit row");
        }
        match setting.mode {
            Mode::Block => {
                tracing::info!(provider = %provider.id, kinds = %kind_list, "the prompt guard blocked a call");
                Err(ServiceError::PromptBlocked(describe(&findings, provider)))
            }
            Mode::Redact => {
                tracing::info!(provider = %provider.id, kinds = %kind_list, "the prompt guard redacted a call");
                Ok(GuardOutcome { body: Some(redact(body, &findings)), redacted: kinds })
            }
            Mode::Off => Ok(GuardOutcome::default()),
        }
    }

    /// The setting in force for `workspace`: its override, else the policy's.
    pub async fn prompt_guard_for(&self, workspace: WorkspaceId) -> ServiceResult<PromptGuard> {
        Ok(self.workspace_override(workspace).await?.unwrap_or_else(|| self.policy().prompt_guard.clone()))
    }

    async fn workspace_override(&self, workspace: WorkspaceId) -> ServiceResult<Option<PromptGuard>> {
        let generation = self.fresh.generation();
        if let Some(found) = self.guard.overrides.get(&workspace, generation) {
            return Ok(found);
        }
        let text = self.store.settings_get(&settings_key(workspace)).await?;
        self.fresh.queried(1);
        let found = match text.as_deref().map(str::trim) {
            None | Some("null") => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|e| ServiceError::Invalid {
                field: "prompt_guard",
                problem: format!("the workspace's stored prompt guard does not parse ({e}); set it again"),
            })?),
        };
        self.guard.overrides.put(workspace, found.clone(), generation);
        Ok(found)
    }

    /// A workspace's prompt guard override and the setting in force there (super-admins).
    pub async fn admin_workspace_prompt_guard(
        &self,
        principal: &Principal,
        workspace: WorkspaceId,
    ) -> ServiceResult<WorkspaceGuard> {
        principal.require_super_admin()?;
        self.store.workspace(workspace).await?;
        let own = self.workspace_override(workspace).await?;
        let effective = own.clone().unwrap_or_else(|| self.policy().prompt_guard.clone());
        Ok(WorkspaceGuard { workspace: own, effective })
    }

    /// Sets (or, with `None`, removes) a workspace's override of the operator's prompt
    /// guard (super-admins); it applies from the next call, on every process.
    pub async fn admin_set_workspace_prompt_guard(
        &self,
        principal: &Principal,
        workspace: WorkspaceId,
        setting: Option<PromptGuard>,
    ) -> ServiceResult<WorkspaceGuard> {
        principal.require_super_admin()?;
        self.store.workspace(workspace).await?;
        if let Some(problems) = setting.as_ref().map(|s| s.problems("prompt_guard")).filter(|p| !p.is_empty()) {
            return Err(ServiceError::Invalid { field: "prompt_guard", problem: problems.join("; ") });
        }
        let text = serde_json::to_string(&setting)
            .map_err(|e| ServiceError::Invalid { field: "prompt_guard", problem: e.to_string() })?;
        self.store.settings_put(&settings_key(workspace), &text, now()).await?;
        self.changed().await;
        audit::record(
            &*self.store,
            &principal.actor(),
            Entry {
                action: AuditAction::SettingsUpdate,
                target_type: "prompt_guard",
                target_id: Some(workspace.to_string()),
                workspace_id: Some(workspace),
                result: AuditResult::Ok,
                detail: Some(serde_json::json!({ "override": setting }).to_string()),
            },
        )
        .await?;
        let effective = setting.clone().unwrap_or_else(|| self.policy().prompt_guard.clone());
        Ok(WorkspaceGuard { workspace: setting, effective })
    }
}

/// What a blocked caller is told: each kind and where it is, never the value.
fn describe(findings: &[Finding], provider: &Provider) -> String {
    let mut places: Vec<String> = Vec::new();
    for f in findings {
        let place = match f.location {
            Location::Unknown => format!("{} ({}, message index unknown)", f.kind.label(), f.kind),
            at => format!("{} ({}) in {at}", f.kind.label(), f.kind),
        };
        if !places.contains(&place) {
            places.push(place);
        }
    }
    let more = places.len().saturating_sub(5);
    places.truncate(5);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!(
        "the request carries {}{tail}: keygate's prompt guard does not send these to {}. Remove it and send the \
         request again",
        places.join(", "),
        provider.name
    )
}

#[cfg(test)]
mod tests {
    use super::decode_json_escapes;

    #[test]
    fn json_escapes_are_decoded_before_scanning() {
        let body = br#"{"messages":[{"content":"\u0041KIAIOSFODNN7EXAMPLE"}]}"#;
        let decoded = decode_json_escapes(body).unwrap();
        assert!(String::from_utf8(decoded).unwrap().contains("AKIAIOSFODNN7EXAMPLE"));
        assert!(decode_json_escapes(br#"{"a":"plain"}"#).is_none(), "nothing to decode");
        assert!(decode_json_escapes(b"not json \\u0041").is_none());
    }
}
