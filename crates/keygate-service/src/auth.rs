//! Who is calling. A request authenticates with a keygate token (`kg_<public>_<secret>`,
//! stored as the SHA-256 of its secret part and compared in constant time) or with a
//! JWT signed by the host application (HS256 shared secret, or RS256 keys from a JWKS).
//! A host user seen for the first time is provisioned with a personal workspace, or
//! joined to the workspace its `workspace` claim names.

use crate::audit::{self, Actor, Entry};
use crate::jwt::HostClaims;
use crate::principal::{Principal, SandboxSession, Via};
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::*;
use keygate_vault::{constant_time_eq, random_alphanumeric, sha256, SecretText};
use std::fmt;
use std::sync::Arc;

pub(crate) const PUBLIC_ID_LEN: usize = 16;
pub(crate) const SECRET_LEN: usize = 40;
/// How long a password login's token lives.
pub const LOGIN_TOKEN_HOURS: i64 = 12;
/// The name of the token `POST /api/v1/auth/login` issues (reserved: API callers cannot
/// mint one under it).
pub const LOGIN_TOKEN_NAME: &str = "login";

fn no_workspace() -> ServiceError {
    ServiceError::Unauthenticated(
        "the credential's user belongs to no workspace (or not to the one the token names)".into(),
    )
}

/// A token as issued: shown once, never stored.
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: SecretText,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedToken({})", self.token.public_id)
    }
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub name: String,
    /// `None`: every scope the minter may grant (see [`Services::create_token`]).
    pub scopes: Option<Vec<Scope>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub workspace_id: Option<WorkspaceId>,
}

impl Services {
    /// Issues a token for the caller. Minting needs the `keys` scope, and the new token's
    /// scopes are a subset of the minting credential's (a `proxy`-only token mints
    /// nothing; a `keys` token cannot mint `admin`). No scopes named: the minter's own.
    pub async fn create_token(&self, principal: &Principal, request: TokenRequest) -> ServiceResult<IssuedToken> {
        principal.require_scope(Scope::Keys)?;
        // The tokens keygate issues at sign-in carry these names; a token minted through the
        // API must never pass for one (a page session can switch workspace, which issues a
        // full one; a sign-in's token may mint tokens that outlive it).
        let name = request.name.trim();
        if [crate::sessions::SESSION_TOKEN_NAME, LOGIN_TOKEN_NAME].iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Err(ServiceError::Invalid {
                field: "name",
                problem: format!("`{name}` is reserved for the tokens keygate issues at sign-in"),
            });
        }
        // A delegated token never outlives the one that minted it.
        let mut request = request;
        if let Some(limit) = principal.mint_limit() {
            request.expires_at = Some(request.expires_at.map_or(limit, |e| e.min(limit)));
        }
        let allowed = principal.scopes();
        self.issue_token(&principal.user, request, &allowed, &principal.actor()).await
    }

    /// Issues a token for `user` on the operator's say-so (`keygate token create`): any
    /// scope the user may hold.
    pub async fn create_token_for_user(
        &self,
        user: &User,
        request: TokenRequest,
        actor: &Actor,
    ) -> ServiceResult<IssuedToken> {
        let allowed: Vec<Scope> =
            Scope::ALL.iter().copied().filter(|s| !s.super_admin_only() || user.super_admin).collect();
        self.issue_token(user, request, &allowed, actor).await
    }

    /// The returned secret is the only copy.
    async fn issue_token(
        &self,
        user: &User,
        request: TokenRequest,
        allowed: &[Scope],
        actor: &Actor,
    ) -> ServiceResult<IssuedToken> {
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ServiceError::Invalid { field: "name", problem: "must be 1 to 100 characters".into() });
        }
        let mut scopes = match request.scopes {
            Some(scopes) => {
                if let Some(scope) = scopes.iter().find(|s| s.super_admin_only() && !user.super_admin) {
                    return Err(ServiceError::Forbidden(format!("only super-admins may hold the `{scope}` scope")));
                }
                if let Some(missing) = scopes.iter().find(|s| !allowed.contains(s)) {
                    return Err(ServiceError::Forbidden(format!(
                        "a token can only grant scopes it holds itself, and this one lacks `{missing}`"
                    )));
                }
                scopes
            }
            None => allowed.to_vec(),
        };
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(ServiceError::Invalid { field: "scopes", problem: "name at least one scope".into() });
        }
        if let Some(expiry) = request.expires_at {
            if expiry <= now() {
                return Err(ServiceError::Invalid { field: "expires_at", problem: "must be in the future".into() });
            }
        }
        if let Some(ws) = request.workspace_id {
            self.store.membership(ws, user.id).await?.ok_or(ServiceError::NotFound { entity: "workspace" })?;
        }
        let public_id = random_alphanumeric(PUBLIC_ID_LEN);
        let secret = random_alphanumeric(SECRET_LEN);
        let token = ApiToken {
            id: TokenId::new(),
            public_id: public_id.clone(),
            secret_hash: sha256(secret.as_bytes()).to_vec(),
            user_id: user.id,
            workspace_id: request.workspace_id,
            name: name.to_owned(),
            scopes,
            expires_at: request.expires_at,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        let audit = audit::event(
            actor,
            Entry {
                action: AuditAction::TokenCreate,
                target_type: "token",
                target_id: Some(token.id.to_string()),
                workspace_id: request.workspace_id,
                result: AuditResult::Ok,
                detail: Some(
                    serde_json::json!({"name": token.name, "scopes": token.scopes, "user": user.id}).to_string(),
                ),
            },
        );
        self.store.insert_token(&token, &audit).await?;
        Ok(IssuedToken { token, secret: SecretText::new(format!("kg_{public_id}_{secret}")) })
    }

    /// The caller's tokens (needs the `keys` scope).
    pub async fn list_tokens(&self, principal: &Principal) -> ServiceResult<Vec<ApiToken>> {
        principal.require_scope(Scope::Keys)?;
        Ok(self.store.tokens_of_user(principal.user.id).await?)
    }

    /// Revokes one of the caller's own tokens (404 for anyone else's; needs `keys`).
    pub async fn revoke_token(&self, principal: &Principal, id: TokenId) -> ServiceResult<()> {
        principal.require_scope(Scope::Keys)?;
        let audit = audit::event(
            &principal.actor(),
            Entry {
                action: AuditAction::TokenRevoke,
                target_type: "token",
                target_id: Some(id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: None,
            },
        );
        self.store.revoke_token(id, principal.user.id, now(), &audit).await?;
        self.changed().await;
        Ok(())
    }

    /// Authenticates a bearer credential: a keygate token or a host JWT. Answers are
    /// cached (keyed by the credential's SHA-256) until something changes.
    pub async fn authenticate(&self, bearer: &str, source_addr: Option<String>) -> ServiceResult<Principal> {
        let bearer = bearer.trim();
        let key = sha256(bearer.as_bytes());
        let generation = self.fresh.generation();
        if let Some((mut principal, expires)) = self.principal_cache.get(&key, generation) {
            if expires.is_none_or(|e| e > now()) {
                principal.source_addr = source_addr.map(Arc::from);
                return Ok(principal);
            }
        }
        let (principal, expires) = if bearer.starts_with("kg_") {
            self.authenticate_token(bearer, source_addr).await?
        } else if bearer.matches('.').count() == 2 {
            let Some(jwt) = &self.jwt else {
                return Err(ServiceError::Unauthenticated(
                    "host JWTs are not enabled on this keygate (set KEYGATE_JWT_HS256_SECRET or KEYGATE_JWT_JWKS)"
                        .into(),
                ));
            };
            let claims = jwt.verify(bearer, &self.http).await?;
            // A known host user: their row, their memberships, the workspace.
            self.fresh.queried(3);
            let expires = DateTime::<Utc>::from_timestamp(claims.exp, 0);
            (self.provision(claims, source_addr).await?, expires)
        } else {
            return Err(ServiceError::Unauthenticated(
                "the credential is neither a keygate token (kg_...) nor a JWT".into(),
            ));
        };
        self.principal_cache.put(key, (principal.clone(), expires), generation);
        Ok(principal)
    }

    async fn authenticate_token(
        &self,
        presented: &str,
        source_addr: Option<String>,
    ) -> ServiceResult<(Principal, Option<DateTime<Utc>>)> {
        let invalid = || ServiceError::Unauthenticated("the token is invalid, expired or revoked".into());
        let rest = presented.strip_prefix("kg_").ok_or_else(invalid)?;
        let (public_id, secret) = rest.split_once('_').ok_or_else(invalid)?;
        if public_id.len() != PUBLIC_ID_LEN || !public_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid());
        }
        // One query: the token, its user and the workspace it acts in.
        self.fresh.queried(1);
        let found = self.store.token_principal(public_id).await?.ok_or_else(invalid)?;
        let token = found.token;
        if !constant_time_eq(&sha256(secret.as_bytes()), &token.secret_hash) {
            return Err(invalid());
        }
        let at = now();
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|e| e <= at) {
            return Err(invalid());
        }
        let user = found.user;
        let (workspace, role) = found.acting.ok_or_else(no_workspace)?;
        self.usage.token_used(token.id, at);
        let expires = token.expires_at;
        // A sandbox session's token always expires (a row without an expiry is no session).
        let session = match (found.session, expires) {
            (Some(grant), Some(expires_at)) => Some(std::sync::Arc::new(SandboxSession { grant, expires_at })),
            (Some(_), None) => return Err(invalid()),
            (None, _) => None,
        };
        // A page session is a token keygate itself issued under the reserved name (API
        // callers cannot choose it: see `create_token`), never a sandbox session's.
        let web = session.is_none() && token.name == crate::sessions::SESSION_TOKEN_NAME;
        let sign_in = web || (session.is_none() && token.name == LOGIN_TOKEN_NAME);
        let via = Via::Token { id: token.id, scopes: token.scopes.into(), session, web, sign_in, expires_at: expires };
        let source_addr = source_addr.map(Arc::from);
        Ok((Principal { user: Arc::new(user), workspace: Arc::new(workspace), role, via, source_addr }, expires))
    }

    /// The workspace a caller acts in: the one named, or their first (oldest) membership.
    async fn acting_workspace(&self, user: &User, named: Option<WorkspaceId>) -> ServiceResult<(Workspace, Role)> {
        let memberships = self.store.memberships_of_user(user.id).await?;
        let membership = match named {
            Some(ws) => memberships.into_iter().find(|m| m.workspace_id == ws),
            None => memberships.into_iter().min_by_key(|m| (m.created_at, m.workspace_id)),
        }
        .ok_or_else(no_workspace)?;
        Ok((self.store.workspace(membership.workspace_id).await?, membership.role))
    }

    /// Finds or creates the host user (and workspace) a verified JWT describes.
    async fn provision(&self, claims: HostClaims, source_addr: Option<String>) -> ServiceResult<Principal> {
        let policy = self.policy();
        let tier = match &claims.tier {
            Some(t) if policy.tiers.contains_key(t) => t.clone(),
            Some(t) => {
                return Err(ServiceError::Unauthenticated(format!(
                    "the JWT's tier `{t}` is not a tier of this keygate"
                )))
            }
            None => policy.default_tier.clone(),
        };
        let role_claim = match claims.role.as_deref().map(str::parse::<Role>) {
            Some(Ok(role)) => Some(role),
            Some(Err(e)) => return Err(ServiceError::Unauthenticated(format!("the JWT's role claim: {e}"))),
            None => None,
        };
        let mut user = match self.store.user_by_external_id(&claims.sub).await? {
            Some(user) => user,
            None => self.provision_user(&claims, &tier, source_addr.clone()).await?,
        };
        if claims.tier.is_some() && user.tier != tier {
            user.tier = tier;
            user.updated_at = now();
            self.store.update_user(&user).await?;
            self.changed().await;
        }
        let (workspace, role) = match &claims.workspace {
            Some(host_ws) => self.join_host_workspace(&user, host_ws, role_claim).await?,
            None => self.acting_workspace(&user, None).await?,
        };
        let source_addr = source_addr.map(Arc::from);
        Ok(Principal { user: Arc::new(user), workspace: Arc::new(workspace), role, via: Via::Jwt, source_addr })
    }

    async fn provision_user(
        &self,
        claims: &HostClaims,
        tier: &str,
        source_addr: Option<String>,
    ) -> ServiceResult<User> {
        let at = now();
        // An email already held by another account is not taken over by a host JWT.
        let email = match &claims.email {
            Some(e) if self.store.user_by_email(&e.trim().to_ascii_lowercase()).await?.is_none() => {
                Some(e.trim().to_ascii_lowercase())
            }
            _ => None,
        };
        let user = User {
            id: UserId::new(),
            email,
            external_id: Some(claims.sub.clone()),
            tier: tier.to_owned(),
            super_admin: false,
            created_at: at,
            updated_at: at,
        };
        let personal = Workspace {
            id: WorkspaceId::new(),
            name: format!("{}'s workspace", claims.email.as_deref().unwrap_or(&claims.sub)),
            status: WorkspaceStatus::Active,
            personal: true,
            external_id: None,
            created_at: at,
            updated_at: at,
        };
        match self.store.provision_user(&user, None, &personal, Role::Owner).await {
            Ok(()) => {}
            // A concurrent request provisioned the same host user first.
            Err(e) if e.is_conflict() => {
                return self
                    .store
                    .user_by_external_id(&claims.sub)
                    .await?
                    .ok_or_else(|| ServiceError::Conflict("host user vanished while provisioning".into()));
            }
            Err(e) => return Err(e.into()),
        }
        let actor = Actor { user_id: Some(user.id), label: format!("host:{}", claims.sub), source_addr };
        audit::record(
            &*self.store,
            &actor,
            Entry {
                action: AuditAction::UserProvision,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                workspace_id: Some(personal.id),
                result: AuditResult::Ok,
                detail: Some(serde_json::json!({"external_id": claims.sub, "tier": tier}).to_string()),
            },
        )
        .await?;
        Ok(user)
    }

    async fn join_host_workspace(
        &self,
        user: &User,
        host_ws: &str,
        role_claim: Option<Role>,
    ) -> ServiceResult<(Workspace, Role)> {
        let workspace = match self.store.workspace_by_external_id(host_ws).await? {
            Some(ws) => ws,
            None => {
                let at = now();
                let ws = Workspace {
                    id: WorkspaceId::new(),
                    name: host_ws.to_owned(),
                    status: WorkspaceStatus::Active,
                    personal: false,
                    external_id: Some(host_ws.to_owned()),
                    created_at: at,
                    updated_at: at,
                };
                match self.store.insert_workspace(&ws).await {
                    Ok(()) => {
                        let m = Membership {
                            workspace_id: ws.id,
                            user_id: user.id,
                            role: role_claim.unwrap_or(Role::Owner),
                            created_at: at,
                        };
                        self.store.upsert_membership(&m).await?;
                        ws
                    }
                    Err(e) if e.is_conflict() => self
                        .store
                        .workspace_by_external_id(host_ws)
                        .await?
                        .ok_or(ServiceError::NotFound { entity: "workspace" })?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let role = match (self.store.membership(workspace.id, user.id).await?, role_claim) {
            (Some(m), None) => m.role,
            (Some(m), Some(role)) if m.role == role => role,
            (_, claimed) => {
                let role = claimed.unwrap_or(Role::Member);
                let m = Membership { workspace_id: workspace.id, user_id: user.id, role, created_at: now() };
                self.store.upsert_membership(&m).await?;
                self.changed().await;
                role
            }
        };
        Ok((workspace, role))
    }

    /// Email and password in, a short-lived token out. Every attempt is audited. Attempts
    /// are throttled per account and per source address (`throttle`): past the limit they
    /// are refused with `rate_limited` before any password hashing.
    pub async fn login(
        &self,
        email: &str,
        password: &SecretText,
        source_addr: Option<String>,
    ) -> ServiceResult<(User, IssuedToken)> {
        self.login_as(email, password, source_addr, LOGIN_TOKEN_NAME).await
    }

    /// [`Services::login`], the token named `token_name` (a web session's or the API's).
    pub(crate) async fn login_as(
        &self,
        email: &str,
        password: &SecretText,
        source_addr: Option<String>,
        token_name: &str,
    ) -> ServiceResult<(User, IssuedToken)> {
        let denied = || ServiceError::Unauthenticated("wrong email or password".into());
        let email = email.trim().to_ascii_lowercase();
        let user = self.store.user_by_email(&email).await?;
        // What was typed is recorded only when it is a known email: people type passwords
        // into the email box, and the audit log keeps what it is given for good.
        let label = match &user {
            Some(_) => email.clone(),
            None => "an unknown email".to_owned(),
        };
        let actor = Actor { user_id: user.as_ref().map(|u| u.id), label, source_addr };
        let target_id = user.as_ref().map(|u| u.id.to_string());
        let entry = |result, detail: Option<String>| Entry {
            action: AuditAction::AuthLogin,
            target_type: "user",
            target_id: target_id.clone(),
            workspace_id: None,
            result,
            detail,
        };
        let attempt = match self.login_throttle.admit(sha256(email.as_bytes()), actor.source_addr.as_deref()) {
            Ok(attempt) => attempt,
            Err(refused) => {
                let (limit, detail) = if refused.by_source {
                    ("source", "too many sign-in attempts from this address")
                } else {
                    ("account", "too many failed sign-ins for this account")
                };
                let why = serde_json::json!({"throttled": limit}).to_string();
                audit::record(&*self.store, &actor, entry(AuditResult::Denied, Some(why))).await?;
                return Err(ServiceError::RateLimited {
                    detail: format!("{detail}: try again in {} s", refused.retry_after_secs),
                    retry_after_secs: refused.retry_after_secs,
                });
            }
        };
        let ok = crate::accounts::verify_password(&*self.store, user.as_ref().map(|u| u.id), password).await?;
        let Some(user) = user.filter(|_| ok) else {
            audit::record(&*self.store, &actor, entry(AuditResult::Denied, None)).await?;
            return Err(denied());
        };
        self.login_throttle.succeeded(attempt);
        audit::record(&*self.store, &actor, entry(AuditResult::Ok, None)).await?;
        let request = TokenRequest {
            name: token_name.into(),
            scopes: None,
            expires_at: Some(now() + chrono::Duration::hours(LOGIN_TOKEN_HOURS)),
            workspace_id: None,
        };
        let issued = self.create_token_for_user(&user, request, &actor).await?;
        Ok((user, issued))
    }
}
