//! Sandbox sessions (seed 003's keys "injected only during a session"): a short-lived,
//! `proxy`-only keygate token for a container, a CI job or an AI agent's workroom, that
//! works only for the providers it names, only until it expires or is revoked, and within
//! its own caps. The provider key never enters the sandbox: keygate injects it.
//!
//! A session is a token with a `sessions` row (its id is the token's id), so it
//! authenticates, expires and is revoked (on every replica, through the change epoch)
//! exactly as tokens are. This module mints, lists and revokes sessions, and holds the
//! rules the gateway applies to a session's calls: the provider list
//! ([`Services::session_allows`]) and the caps, reserved before a call and settled after
//! with the same limiter as every other limit (`limits::session`).
//!
//! Not for: web sign-in sessions (that is `sessions`).

use crate::audit::{self, Entry};
use crate::auth::{PUBLIC_ID_LEN, SECRET_LEN};
use crate::gateway::CallSize;
use crate::limits::{SessionCaps, SessionRefusal, SessionReservation, SessionUse, Unavailable, MAX_SESSION_CAP};
use crate::principal::{Principal, SandboxSession};
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::catalog::Provider;
use keygate_core::*;
use keygate_vault::{random_alphanumeric, sha256, SecretText};
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// The longest a session may live: a sandbox's lifetime, not an application's.
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// The most providers one session may name.
const MAX_PROVIDERS: usize = 32;

/// What a new session may do.
#[derive(Debug, Clone, Default)]
pub struct SessionRequest {
    pub name: String,
    /// Catalog provider ids.
    pub providers: Vec<String>,
    pub ttl_seconds: u64,
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
}

/// A session as minted: its token's secret is shown once, never stored.
pub struct IssuedSession {
    pub session: Session,
    pub secret: SecretText,
}

impl fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedSession({})", self.session.token.id)
    }
}

/// A live session and what it has spent.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    pub session: Session,
    pub used: SessionUse,
}

/// Which sessions' counters this process has seeded from recorded usage (one seeding per
/// session and process), with when each session ends, so ended ones are forgotten.
#[derive(Debug, Default)]
pub struct SessionMemo {
    seen: Mutex<HashMap<TokenId, DateTime<Utc>>>,
}

impl SessionMemo {
    fn contains(&self, id: TokenId) -> bool {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&id)
    }

    fn insert(&self, id: TokenId, expires_at: DateTime<Utc>) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= 1_024 {
            let at = now();
            seen.retain(|_, ends| *ends > at);
        }
        seen.insert(id, expires_at);
    }

    fn forget(&self, id: TokenId) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
    }
}

fn cap(field: &'static str, value: Option<u64>) -> ServiceResult<Option<u64>> {
    match value {
        Some(n) if n == 0 || n > MAX_SESSION_CAP => Err(ServiceError::Invalid {
            field,
            problem: format!("must be between 1 and {MAX_SESSION_CAP}, or left out"),
        }),
        other => Ok(other),
    }
}

impl Services {
    /// Mints a sandbox session for the caller. Needs the `keys` scope (a session's own
    /// token has only `proxy`, so a session never mints another). The session acts in the
    /// caller's current workspace.
    pub async fn create_session(&self, principal: &Principal, request: SessionRequest) -> ServiceResult<IssuedSession> {
        principal.require_scope(Scope::Keys)?;
        // A session's token calls providers: the minter must be able to do so itself.
        principal.require_scope(Scope::Proxy)?;
        if principal.session().is_some() {
            return Err(ServiceError::Forbidden("a session's token cannot mint sessions".into()));
        }
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ServiceError::Invalid { field: "name", problem: "must be 1 to 100 characters".into() });
        }
        if request.providers.is_empty() || request.providers.len() > MAX_PROVIDERS {
            return Err(ServiceError::Invalid {
                field: "providers",
                problem: format!("name 1 to {MAX_PROVIDERS} provider ids (GET /api/v1/providers lists them)"),
            });
        }
        let mut providers = Vec::with_capacity(request.providers.len());
        for id in &request.providers {
            providers.push(self.provider(id.trim())?.id.clone());
        }
        providers.sort();
        providers.dedup();
        if request.ttl_seconds == 0 || request.ttl_seconds > MAX_TTL_SECONDS {
            return Err(ServiceError::Invalid {
                field: "ttl_seconds",
                problem: format!("must be between 1 and {MAX_TTL_SECONDS} (7 days)"),
            });
        }
        let grant = SessionGrant {
            providers,
            max_requests: cap("max_requests", request.max_requests)?,
            max_tokens: cap("max_tokens", request.max_tokens)?,
        };
        let at = now();
        let public_id = random_alphanumeric(PUBLIC_ID_LEN);
        let secret = random_alphanumeric(SECRET_LEN);
        let end = at + chrono::Duration::seconds(request.ttl_seconds as i64);
        let token = ApiToken {
            id: TokenId::new(),
            public_id: public_id.clone(),
            secret_hash: sha256(secret.as_bytes()).to_vec(),
            user_id: principal.user.id,
            workspace_id: Some(principal.workspace.id),
            name: name.to_owned(),
            scopes: vec![Scope::Proxy],
            // Never past the end of a delegated token that minted it.
            expires_at: Some(principal.mint_limit().map_or(end, |limit| limit.min(end))),
            created_at: at,
            last_used_at: None,
            revoked_at: None,
        };
        let audit = audit::event(
            &principal.actor(),
            Entry {
                action: AuditAction::SessionCreate,
                target_type: "session",
                target_id: Some(token.id.to_string()),
                workspace_id: Some(principal.workspace.id),
                result: AuditResult::Ok,
                detail: Some(
                    serde_json::json!({
                        "name": token.name,
                        "providers": grant.providers,
                        "ttl_seconds": request.ttl_seconds,
                        "max_requests": grant.max_requests,
                        "max_tokens": grant.max_tokens,
                    })
                    .to_string(),
                ),
            },
        );
        self.store.insert_session(&token, &grant, &audit).await?;
        Ok(IssuedSession {
            session: Session { token, grant },
            secret: SecretText::new(format!("kg_{public_id}_{secret}")),
        })
    }

    /// The caller's live sessions (neither expired nor revoked), each with what it has
    /// spent: the limiter's counters, or its recorded usage where no counter exists yet.
    pub async fn list_sessions(&self, principal: &Principal) -> ServiceResult<Vec<SessionStatus>> {
        principal.require_scope(Scope::Keys)?;
        let sessions = self.store.live_sessions_of_user(principal.user.id, now()).await?;
        let mut listed = Vec::with_capacity(sessions.len());
        for session in sessions {
            let used = match self.limiter.session_used(session.token.id).await {
                Ok(Some(used)) => used,
                Ok(None) | Err(_) => recorded(self.store.session_usage(session.token.id).await?),
            };
            listed.push(SessionStatus { session, used });
        }
        Ok(listed)
    }

    /// Ends one of the caller's sessions at once, on every replica (404 for anyone
    /// else's, and for a token that is no session).
    pub async fn revoke_session(&self, principal: &Principal, id: TokenId) -> ServiceResult<()> {
        principal.require_scope(Scope::Keys)?;
        let audit = audit::event(
            &principal.actor(),
            Entry {
                action: AuditAction::SessionRevoke,
                target_type: "session",
                target_id: Some(id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: None,
            },
        );
        self.store.revoke_session(id, principal.user.id, now(), &audit).await?;
        self.changed().await;
        Ok(())
    }

    /// Whether the caller may call `provider`: always, unless the caller's token is a
    /// session's that names neither it nor the provider whose key serves it (a session
    /// naming `github` may also clone through `github-git`).
    pub fn session_allows(&self, principal: &Principal, provider: &Provider) -> bool {
        principal.session().is_none_or(|(_, s)| s.grant.allows(&provider.id) || s.grant.allows(provider.key_provider()))
    }

    /// Refuses (audited) a session's call to a provider outside its list.
    pub(crate) async fn check_session_provider(&self, principal: &Principal, provider: &Provider) -> ServiceResult<()> {
        let Some((id, session)) = principal.session() else { return Ok(()) };
        if self.session_allows(principal, provider) {
            return Ok(());
        }
        let provider = provider.id.as_str();
        self.session_refused(principal, id, provider, "provider_not_in_session").await?;
        Err(ServiceError::ProviderNotInSession(format!(
            "this session token may call only {}, not `{provider}`: ask for a session that names it",
            session.grant.providers.join(", ")
        )))
    }

    /// Reserves a session's call under its caps (one request; with a token cap, the call's
    /// worst case capped to what is left). Answers the reservation, if the caller is a
    /// session, and the most output per choice the call may then ask for.
    pub(crate) async fn admit_session_call(
        &self,
        principal: &Principal,
        provider: &str,
        source: KeySource,
        size: &CallSize,
    ) -> ServiceResult<(Option<SessionReservation>, Option<u64>)> {
        let Some((id, session)) = principal.session() else { return Ok((None, None)) };
        let caps = SessionCaps {
            session: id,
            expires_at: session.expires_at,
            max_requests: session.grant.max_requests,
            max_tokens: session.grant.max_tokens,
        };
        let (input, choices, at_least, at_most) = size.worst_case();
        let reserved = match self.reserve_session(&caps, session, at_least, at_most).await {
            Ok(reserved) => reserved,
            Err(down) => {
                self.fail_open(&down, source)?;
                // Served blind: the call may use at most what the session allows.
                let cap = caps.max_tokens.filter(|max| size.generates && at_most > *max);
                return Ok((None, cap.map(|max| (max.saturating_sub(input) / choices).max(1))));
            }
        };
        match reserved {
            Ok(reservation) => {
                let capped = caps.max_tokens.is_some() && size.generates && reservation.tokens < at_most;
                let output_cap = capped.then(|| (reservation.tokens.saturating_sub(input) / choices).max(1));
                Ok((Some(reservation), output_cap))
            }
            Err(refusal) => {
                self.session_refused(principal, id, provider, "session_cap_reached").await?;
                Err(match refusal {
                    SessionRefusal::Requests { limit } => ServiceError::SessionCapReached(format!(
                        "this session has made all the {limit} requests it may make: start a new session"
                    )),
                    SessionRefusal::Tokens { limit, remaining } => ServiceError::SessionCapReached(format!(
                        "this session's token cap ({limit}) cannot cover this call: {remaining} tokens are left. \
                         Lower max_tokens, or start a new session"
                    )),
                    SessionRefusal::Unseeded => {
                        ServiceError::LimitsUnavailable("the session's counter could not be seeded".into())
                    }
                })
            }
        }
    }

    /// Settles a session's reservation (its request given back when the call failed).
    pub(crate) fn settle_session_soon(&self, reservation: SessionReservation, actual: u64, failed: bool) {
        let limiter = self.limiter.clone();
        crate::gateway::settle_soon(async move { limiter.settle_session(&reservation, actual, failed).await });
    }

    /// Admits under the session's caps, seeding its counters first (and again once, if
    /// the backend lost them).
    async fn reserve_session(
        &self,
        caps: &SessionCaps,
        session: &SandboxSession,
        at_least: u64,
        at_most: u64,
    ) -> Result<Result<SessionReservation, SessionRefusal>, Unavailable> {
        for _ in 0..2 {
            if !self.sessions_seeded.contains(caps.session) {
                let used = self
                    .store
                    .session_usage(caps.session)
                    .await
                    .map_err(|e| Unavailable { backend: "database", reason: e.to_string() })?;
                self.fresh.queried(1);
                self.limiter.seed_session(caps.session, session.expires_at, recorded(used)).await?;
                self.sessions_seeded.insert(caps.session, session.expires_at);
            }
            match self.limiter.admit_session(caps, at_least, at_most).await? {
                Err(SessionRefusal::Unseeded) => self.sessions_seeded.forget(caps.session),
                answer => return Ok(answer),
            }
        }
        Err(Unavailable {
            backend: self.limiter.backend(),
            reason: "the session's counter was lost again right after seeding".into(),
        })
    }

    /// The audit row of a session's call refused by the session's rules.
    async fn session_refused(
        &self,
        principal: &Principal,
        id: TokenId,
        provider: &str,
        why: &str,
    ) -> ServiceResult<()> {
        audit::record(
            &*self.store,
            &principal.actor(),
            Entry {
                action: AuditAction::SessionRefused,
                target_type: "session",
                target_id: Some(id.to_string()),
                workspace_id: Some(principal.workspace.id),
                result: AuditResult::Denied,
                detail: Some(serde_json::json!({"provider": provider, "code": why}).to_string()),
            },
        )
        .await
    }
}

/// Recorded usage `(calls, tokens)` as session counters.
fn recorded((requests, tokens): (i64, i64)) -> SessionUse {
    SessionUse { requests: requests.max(0) as u64, tokens: tokens.max(0) as u64 }
}
