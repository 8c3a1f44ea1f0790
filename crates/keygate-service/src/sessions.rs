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
use keygate_core::*;
use keygate_vault::{sha256, SecretText};

/// The name session tokens carry in the token list.
pub const SESSION_TOKEN_NAME: &str = "web session";

/// The store's meta row holding the key that signs the CSRF values of forms shown
/// before signing in (the same on every replica).
const FORM_KEY_META_KEY: &str = "pages_form_key";

/// The key signing anonymous forms' CSRF values. Never printed.
pub struct FormKey([u8; 32]);

impl std::fmt::Debug for FormKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormKey(..)")
    }
}

impl FormKey {
    /// The deployment's key, made at first start.
    pub(crate) async fn load(store: &dyn keygate_store::Store) -> ServiceResult<Self> {
        let fresh = keygate_vault::cipher::random_bytes::<32>();
        store.meta_insert(FORM_KEY_META_KEY, fresh.as_ref(), now()).await?;
        let stored = store.meta_get(FORM_KEY_META_KEY).await?.unwrap_or_default();
        let key: [u8; 32] = stored.as_slice().try_into().map_err(|_| ServiceError::Invalid {
            field: FORM_KEY_META_KEY,
            problem: "the stored key is not 32 bytes".into(),
        })?;
        Ok(Self(key))
    }

    fn sign(&self, nonce: &str) -> String {
        let mac = keygate_vault::hmac_sha256(&self.0, format!("keygate/anonymous-form/v1:{nonce}").as_bytes());
        mac.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

/// The store's meta rows recording used sign-in links (by the SHA-256 of the link's
/// JWT): a link works once, on every replica and across restarts.
const USED_LINK_PREFIX: &str = "used_sign_in_link:";

impl Services {
    /// A CSRF value for a form shown before signing in (sign-in, setup): a nonce and its
    /// signature, so a value a client made up (or set through a sibling domain's cookie)
    /// does not pass.
    pub fn anonymous_form_token(&self) -> String {
        let nonce = keygate_vault::random_alphanumeric(22);
        let signature = self.form_key.sign(&nonce);
        format!("{nonce}.{signature}")
    }

    /// Whether `value` is a CSRF value [`Services::anonymous_form_token`] made.
    pub fn is_anonymous_form_token(&self, value: &str) -> bool {
        let Some((nonce, signature)) = value.split_once('.') else { return false };
        nonce.len() == 22
            && nonce.bytes().all(|b| b.is_ascii_alphanumeric())
            && keygate_vault::constant_time_eq(self.form_key.sign(nonce).as_bytes(), signature.as_bytes())
    }

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
        let hash: String = sha256(jwt.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{USED_LINK_PREFIX}{hash}");
        if !self.store.meta_insert(&key, exp.to_string().as_bytes(), now()).await? {
            return Err(ServiceError::Unauthenticated(
                "this sign-in link was already used: ask the application for a new one".into(),
            ));
        }
        self.start_session(&principal.user, Some(principal.workspace.id), &principal.actor()).await
    }

    /// The same user's session, acting in another of their workspaces; the old one ends.
    pub async fn switch_workspace(&self, principal: &Principal, to: WorkspaceId) -> ServiceResult<IssuedToken> {
        if !principal.is_web_session() {
            return Err(ServiceError::Forbidden("only a page sign-in session can switch workspace".into()));
        }
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
