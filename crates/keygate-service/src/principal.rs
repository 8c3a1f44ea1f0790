//! [`Principal`]: an authenticated caller acting in one workspace, and the checks every
//! use case makes on it (scopes, super-admin).
//!
//! Not for: authenticating (that is `auth`) or deciding access to a credential (that is
//! `credentials`).

use crate::audit::Actor;
use crate::{ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::*;
use std::sync::Arc;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A keygate token, with the scopes it was given, and the sandbox session's rules
    /// when it is a session's token.
    Token {
        id: TokenId,
        scopes: Arc<[Scope]>,
        session: Option<Arc<SandboxSession>>,
        /// A page sign-in session (the only token the pages' cookie accepts).
        web: bool,
        /// Minted by a person signing in (a page session, or `POST /api/v1/auth/login`),
        /// not delegated by another token.
        sign_in: bool,
        /// When the token stops working.
        expires_at: Option<DateTime<Utc>>,
    },
    /// A host application's JWT: every scope (bounded by the user's roles).
    Jwt,
}

/// What a sandbox session's token may do besides its scopes (`proxy` only): call the
/// session's providers, within its caps, until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSession {
    pub grant: SessionGrant,
    pub expires_at: DateTime<Utc>,
}

/// An authenticated caller acting in one workspace.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Shared, not copied: a principal is cloned out of the authentication cache on
    /// every call.
    pub user: Arc<User>,
    pub workspace: Arc<Workspace>,
    pub role: Role,
    pub via: Via,
    /// Shared like the rest: a principal is cloned twice a call.
    pub source_addr: Option<Arc<str>>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            label: self
                .user
                .email
                .clone()
                .or_else(|| self.user.external_id.clone())
                .unwrap_or_else(|| self.user.id.to_string()),
            source_addr: self.source_addr.as_deref().map(str::to_owned),
        }
    }

    /// The sandbox session the caller's token belongs to, with its id, if any.
    pub fn session(&self) -> Option<(TokenId, &SandboxSession)> {
        match &self.via {
            Via::Token { id, session: Some(session), .. } => Some((*id, session)),
            _ => None,
        }
    }

    /// The latest a token or session minted with this credential may live: a delegated
    /// token's own end (a 90-second token never mints a lasting one). A person's sign-in
    /// (a page session, an API login) and a host JWT set no limit: the person is there.
    pub fn mint_limit(&self) -> Option<DateTime<Utc>> {
        match &self.via {
            Via::Token { sign_in: false, expires_at, .. } => *expires_at,
            _ => None,
        }
    }

    /// Whether the credential is a page sign-in session (see `Services::sign_in`).
    pub fn is_web_session(&self) -> bool {
        matches!(self.via, Via::Token { web: true, .. })
    }

    /// Whether the credential used carries `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.via {
            Via::Token { scopes, .. } => scopes.contains(&scope),
            Via::Jwt => true,
        }
    }

    /// The scopes the credential used carries (every scope a JWT's user may hold): what a
    /// token it mints may carry at most. Super-admin-only scopes count only for a
    /// super-admin.
    pub fn scopes(&self) -> Vec<Scope> {
        Scope::ALL
            .iter()
            .copied()
            .filter(|s| self.has_scope(*s) && (!s.super_admin_only() || self.user.super_admin))
            .collect()
    }

    /// Fails unless the credential used carries `scope`.
    pub fn require_scope(&self, scope: Scope) -> ServiceResult<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!("this token lacks the `{scope}` scope")))
        }
    }

    /// Fails unless the caller is a super-admin using a credential with the admin scope.
    pub fn require_super_admin(&self) -> ServiceResult<()> {
        self.require_super_admin_with(Scope::Admin)
    }

    /// Fails unless the caller is a super-admin using a credential that carries `scope`
    /// (`admin` for administration, `metrics` for `/metrics`).
    pub fn require_super_admin_with(&self, scope: Scope) -> ServiceResult<()> {
        if !self.user.super_admin {
            return Err(ServiceError::Forbidden("this needs a super-admin".into()));
        }
        self.require_scope(scope)
    }
}
