//! Web sessions for the pages. A session is a keygate token named `web session`, held
//! in an HttpOnly cookie: stored server-side as a hash like every token, so signing out
//! or revoking it takes effect on the next request, on every replica. Sessions start
//! from a password sign-in, from a host application's sign-in link (a short-lived JWT,
//! accepted once), or from the setup wizard; switching workspace swaps the session for
//! one acting in the other workspace.
//!
//! Not for: cookies or CSRF fields (keygate-server's pages own the HTTP side).

use crate::audit::Actor;
use crate::auth::{IssuedToken, TokenRequest, LOGIN_TOKEN_HOURS};
use crate::principal::{Principal, Via};
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::*;
use keygate_vault::{sha256, SecretText};
use std::collections::HashMap;
use std::sync::Mutex;

/// The name session tokens carry in the token list.
pub const SESSION_TOKEN_NAME: &str = "web session";

/// Sign-in links already used, until they expire: a link works once.
#[derive(Debug, Default)]
pub struct UsedLinks(Mutex<HashMap<[u8; 32], DateTime<Utc>>>);

impl UsedLinks {
    /// Records `link`; false when it was used before.
    fn first_use(&self, link: [u8; 32], expires: DateTime<Utc>) -> bool {
        let mut used = crate::cache::lock(&self.0);
        let at = now();
        used.retain(|_, exp| *exp > at);
        used.insert(link, expires).is_none()
    }
}

impl Services {
    /// A password sign-in for the pages (throttled and audited like the API's).
    pub async fn sign_in(
        &self,
        email: &str,
        password: &SecretText,
        source_addr: Option<String>,
    ) -> ServiceResult<IssuedToken> {
        let (_, session) = self.login_as(email, password, source_addr, SESSION_TOKEN_NAME).await?;
        Ok(session)
    }

    /// A host application's sign-in link: its JWT, accepted once and only while fresh.
    pub async fn sign_in_with_link(&self, jwt: &str, source_addr: Option<String>) -> ServiceResult<IssuedToken> {
        let jwt = jwt.trim();
        if jwt.starts_with("kg_") || jwt.matches('.').count() != 2 {
            return Err(ServiceError::Unauthenticated("a sign-in link carries a JWT from the host application".into()));
        }
        let principal = self.authenticate(jwt, source_addr).await?;
        let Some(verifier) = &self.jwt else {
            return Err(ServiceError::Unauthenticated("host JWTs are not enabled on this keygate".into()));
        };
        let exp = verifier.verify(jwt, &self.http).await?.exp;
        let expires = DateTime::<Utc>::from_timestamp(exp, 0).unwrap_or_else(now);
        if !self.used_links.first_use(sha256(jwt.as_bytes()), expires) {
            return Err(ServiceError::Unauthenticated(
                "this sign-in link was already used: ask the application for a new one".into(),
            ));
        }
        self.start_session(&principal.user, Some(principal.workspace.id), &principal.actor()).await
    }

    /// The same user's session, acting in another of their workspaces; the old one ends.
    pub async fn switch_workspace(&self, principal: &Principal, to: WorkspaceId) -> ServiceResult<IssuedToken> {
        self.store.membership(to, principal.user.id).await?.ok_or(ServiceError::NotFound { entity: "workspace" })?;
        let issued = self.start_session(&principal.user, Some(to), &principal.actor()).await?;
        self.end_session(principal).await?;
        Ok(issued)
    }

    /// Signs out: the session's token is revoked at once.
    pub async fn end_session(&self, principal: &Principal) -> ServiceResult<()> {
        let Via::Token { id, .. } = &principal.via else { return Ok(()) };
        let audit = crate::audit::event(
            &principal.actor(),
            crate::audit::Entry {
                action: AuditAction::TokenRevoke,
                target_type: "token",
                target_id: Some(id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: Some(r#"{"reason":"signed out"}"#.into()),
            },
        );
        self.store.revoke_token(*id, principal.user.id, now(), &audit).await?;
        self.changed().await;
        Ok(())
    }

    /// The workspaces the caller belongs to, with their role in each, oldest first.
    pub async fn my_workspaces(&self, principal: &Principal) -> ServiceResult<Vec<(Workspace, Role)>> {
        let mut memberships = self.store.memberships_of_user(principal.user.id).await?;
        memberships.sort_by_key(|m| (m.created_at, m.workspace_id));
        let mut out = Vec::with_capacity(memberships.len());
        for m in memberships {
            out.push((self.store.workspace(m.workspace_id).await?, m.role));
        }
        Ok(out)
    }

    pub(crate) async fn start_session(
        &self,
        user: &User,
        workspace: Option<WorkspaceId>,
        actor: &Actor,
    ) -> ServiceResult<IssuedToken> {
        let request = TokenRequest {
            name: SESSION_TOKEN_NAME.into(),
            scopes: None,
            expires_at: Some(now() + chrono::Duration::hours(LOGIN_TOKEN_HOURS)),
            workspace_id: workspace,
        };
        self.create_token_for_user(user, request, actor).await
    }
}
