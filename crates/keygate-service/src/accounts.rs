//! Accounts with passwords: `keygate admin create`, and (later) login. Passwords are
//! hashed with argon2id and never stored, logged or returned.

use crate::audit::{self, Actor, Entry};
use crate::{now, ServiceError, ServiceResult};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use keygate_core::*;
use keygate_store::Store;
use keygate_vault::SecretText;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const DEFAULT_TIER: &str = "community";

/// Creates a super-admin with a personal workspace, all or nothing.
pub async fn create_admin(store: &dyn Store, email: &str, password: &SecretText, actor: &Actor) -> ServiceResult<User> {
    let email = normalize_email(email)?;
    check_password(password)?;
    if store.user_by_email(&email).await?.is_some() {
        return Err(ServiceError::Conflict(format!("a user with email {email} already exists")));
    }
    let hash = hash_password(password.clone()).await?;
    let at = now();
    let user = User {
        id: UserId::new(),
        email: Some(email.clone()),
        external_id: None,
        tier: DEFAULT_TIER.into(),
        super_admin: true,
        created_at: at,
        updated_at: at,
    };
    let workspace = Workspace {
        id: WorkspaceId::new(),
        name: format!("{email}'s workspace"),
        status: WorkspaceStatus::Active,
        personal: true,
        external_id: None,
        created_at: at,
        updated_at: at,
    };
    store.provision_user(&user, Some(&hash), &workspace, Role::Owner).await?;
    audit::record(
        store,
        actor,
        Entry {
            action: AuditAction::UserCreate,
            target_type: "user",
            target_id: Some(user.id.to_string()),
            workspace_id: Some(workspace.id),
            result: AuditResult::Ok,
            detail: Some(format!(r#"{{"super_admin":true,"email":{email:?}}}"#)),
        },
    )
    .await?;
    Ok(user)
}

/// Whether `password` matches the user's stored hash. Unknown users (`None`) and users
/// without a password never match, after the same argon2 work as a known one, so the time
/// an answer takes does not tell which emails have accounts.
pub async fn verify_password(store: &dyn Store, user: Option<UserId>, password: &SecretText) -> ServiceResult<bool> {
    let stored = match user {
        Some(user) => store.password_hash(user).await?,
        None => None,
    };
    let known = stored.is_some();
    let stored = match stored {
        Some(hash) => hash,
        None => decoy_hash().await?,
    };
    let password = password.clone();
    let matches = blocking(move || {
        PasswordHash::new(&stored)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok())
    })
    .await?;
    Ok(known && matches)
}

/// A hash of a random password, made once: what an unknown user's login is checked
/// against.
async fn decoy_hash() -> ServiceResult<String> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY.get_or_try_init(|| hash_password(SecretText::new(keygate_vault::random_alphanumeric(32)))).await.cloned()
}

async fn hash_password(password: SecretText) -> ServiceResult<String> {
    blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default() // argon2id, 19 MiB, 2 passes: the OWASP minimum
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ServiceError::Invalid { field: "password", problem: format!("could not be hashed: {e}") })
    })
    .await?
}

/// Runs argon2 (tens of milliseconds of CPU) off the async workers, which keep serving
/// proxied calls meanwhile.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Interrupted(format!("password hashing stopped: {e}")))
}

pub fn check_password(password: &SecretText) -> ServiceResult<()> {
    let chars = password.expose().chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ServiceError::Invalid {
            field: "password",
            problem: format!("must be at least {MIN_PASSWORD_CHARS} characters (got {chars})"),
        });
    }
    Ok(())
}

/// Trims an email, lower-cases its ASCII letters and checks its shape.
///
/// Only ASCII letters are folded: Unicode case folding would make `\u{212A}ate@…` (the
/// Kelvin sign) the same address as `kate@…`. The shape: no control character and no
/// whitespace, exactly one `@`, a non-empty local part, and a domain with a dot inside it.
pub fn normalize_email(email: &str) -> ServiceResult<String> {
    parse_email(email).map(|e| e.address)
}

/// An email address [`normalize_email`] accepted, with its domain: the allow-lists and the
/// account read the same parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// Trimmed, ASCII letters lower-cased.
    pub address: String,
    /// What follows the one `@`.
    pub domain: String,
}

/// [`normalize_email`], keeping the domain.
pub fn parse_email(email: &str) -> ServiceResult<EmailAddress> {
    let email = email.trim().to_ascii_lowercase();
    let shown: String = email.chars().take(100).flat_map(char::escape_debug).collect();
    let refuse = |why: &str| ServiceError::Invalid {
        field: "email",
        problem: format!("`{shown}` is not an email address: {why}"),
    };
    if email.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse("it contains a control character or a space"));
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(refuse("it must have exactly one `@`"));
    };
    if local.is_empty() || domain.is_empty() {
        return Err(refuse("it needs a name before the `@` and a domain after it"));
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
        return Err(refuse("its domain needs a dot inside it"));
    }
    let domain = domain.to_owned();
    Ok(EmailAddress { address: email, domain })
}
