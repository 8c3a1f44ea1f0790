//! The first-run wizard's rules: who may claim a fresh keygate, and when the wizard
//! locks.
//!
//! A fresh deployment (no super-admin yet) can be claimed only with the one-time **setup code**
//! that `keygate serve` prints in its log at start ([`Services::issue_setup_code`]). The
//! store keeps the code's SHA-256, so any replica checks it; claiming is a
//! compare-and-set on that hash, so the code works once, and a failed account creation
//! gives it back. Single sign-on (`oidc`) claims with the same steps, split around the
//! trip to the issuer: the code is checked before the browser leaves and spent when it
//! comes back signed in. The claimer becomes the first super-admin and walks the remaining
//! steps (provider keys) signed in. The wizard locks when it is finished (at least one
//! operator key saved), or, on a deployment set up some other way (CLI), as soon as an
//! operator key exists.
//!
//! Not for: rendering the steps (keygate-server's pages) or saving keys (`credentials`).

use crate::accounts;
use crate::audit::Actor;
use crate::auth::IssuedToken;
use crate::principal::Principal;
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use keygate_core::*;
use keygate_store::CredentialFilter;
use keygate_vault::{constant_time_eq, random_alphanumeric, sha256, SecretText};

/// The store's meta row holding the outstanding setup code's SHA-256.
const CODE_META_KEY: &str = "setup_code";
/// What the meta row holds once the code has been used.
const CODE_USED: &[u8] = b"used";
/// The settings document recording the wizard's progress.
const WIZARD_SETTINGS_KEY: &str = "setup_wizard";

/// Where the first-run wizard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupState {
    /// No user exists: every page leads to the wizard, which asks for the setup code.
    Unclaimed,
    /// A super-admin exists and the wizard's key steps are open to super-admins.
    Open,
    /// Done: `/setup` leads to the admin pages.
    Locked,
}

/// The wizard's stored progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Progress {
    /// Claimed through the wizard, keys being added.
    InProgress,
    Finished,
}

/// A freshly issued setup code: print it, never store it.
#[derive(Debug)]
pub struct SetupCode(pub SecretText);

impl Services {
    /// Where the wizard stands.
    pub async fn setup_state(&self) -> ServiceResult<SetupState> {
        if !self.has_super_admin().await? {
            return Ok(SetupState::Unclaimed);
        }
        match self.progress().await? {
            Some(Progress::Finished) => Ok(SetupState::Locked),
            Some(Progress::InProgress) => Ok(SetupState::Open),
            // Set up without the wizard: open until the first operator key exists.
            None if self.operator_key_count().await? > 0 => Ok(SetupState::Locked),
            None => Ok(SetupState::Open),
        }
    }

    /// At start: on a deployment nobody has claimed yet, a new one-time setup code
    /// (replacing any earlier one, so the code a start printed is the one that works).
    /// `None` once a user exists.
    pub async fn issue_setup_code(&self) -> ServiceResult<Option<SetupCode>> {
        if self.has_super_admin().await? {
            return Ok(None);
        }
        let raw = random_alphanumeric(15).to_ascii_uppercase();
        let code = format!("{}-{}-{}", &raw[0..5], &raw[5..10], &raw[10..15]);
        let hash = code_hash(&code);
        let at = now();
        if !self.store.meta_insert(CODE_META_KEY, &hash, at).await? {
            let old = self.store.meta_get(CODE_META_KEY).await?.unwrap_or_default();
            if !self.store.meta_replace(CODE_META_KEY, &old, &hash, at).await? {
                return Err(ServiceError::Conflict(
                    "another keygate issued a setup code at the same moment: restart this one".into(),
                ));
            }
        }
        Ok(Some(SetupCode(SecretText::new(code))))
    }

    /// Step 1: the setup code, then the first super-admin's email and password. Answers
    /// the new user and a session token for the rest of the wizard.
    pub async fn claim_setup(
        &self,
        code: &SecretText,
        email: &str,
        password: &SecretText,
        source_addr: Option<String>,
    ) -> ServiceResult<(User, IssuedToken)> {
        if self.has_super_admin().await? {
            return Err(ServiceError::Conflict("this keygate has already been claimed: sign in instead".into()));
        }
        // Problems with what was typed come before the code is spent.
        accounts::normalize_email(email)?;
        accounts::check_password(password)?;
        let stored = self.check_setup_code(code).await?;
        self.spend_setup_code(&stored).await?;
        let actor = Actor { user_id: None, label: "setup wizard".into(), source_addr };
        let user = match accounts::create_admin(&*self.store, email, password, &actor).await {
            Ok(user) => user,
            Err(e) => {
                // Give the code back, so a failure here does not lock the owner out.
                self.return_setup_code(&stored).await?;
                return Err(e);
            }
        };
        self.mark_setup_claimed().await?;
        let actor = Actor { user_id: Some(user.id), label: user.email.clone().unwrap_or_default(), ..actor };
        let issued = self.start_session(&user, None, &actor).await?;
        self.changed().await;
        Ok((user, issued))
    }

    /// Whether `code` is the outstanding setup code (without spending it): the stored hash
    /// it matches, for [`Services::spend_setup_code`]. Single sign-on checks the code
    /// before sending the browser to the issuer and spends it when the browser is back.
    pub(crate) async fn check_setup_code(&self, code: &SecretText) -> ServiceResult<Vec<u8>> {
        if self.has_super_admin().await? {
            return Err(ServiceError::Conflict("this keygate has already been claimed: sign in instead".into()));
        }
        let stored = self.outstanding_setup_code().await?;
        let presented = code_hash(code.expose());
        if stored.len() != presented.len() || !constant_time_eq(&stored, &presented) {
            return Err(ServiceError::Unauthenticated(
                "that is not the setup code: copy the code from the line `setup code:` in keygate's log (it changes at every start until the wizard is claimed)".into(),
            ));
        }
        Ok(stored)
    }

    /// The stored hash of the outstanding setup code (`used` once spent, empty if none).
    pub(crate) async fn outstanding_setup_code(&self) -> ServiceResult<Vec<u8>> {
        Ok(self.store.meta_get(CODE_META_KEY).await?.unwrap_or_default())
    }

    /// Spends the code whose stored hash is `stored`: a compare-and-set, so it works once.
    pub(crate) async fn spend_setup_code(&self, stored: &[u8]) -> ServiceResult<()> {
        if stored == CODE_USED || !self.store.meta_replace(CODE_META_KEY, stored, CODE_USED, now()).await? {
            return Err(ServiceError::Conflict("the setup code was just used by someone else".into()));
        }
        Ok(())
    }

    /// Gives a spent code back after the claim failed, so the owner is not locked out.
    pub(crate) async fn return_setup_code(&self, stored: &[u8]) -> ServiceResult<()> {
        self.store.meta_replace(CODE_META_KEY, CODE_USED, stored, now()).await?;
        Ok(())
    }

    /// Records that the wizard was claimed (its key steps open).
    pub(crate) async fn mark_setup_claimed(&self) -> ServiceResult<()> {
        self.save_progress(Progress::InProgress).await
    }

    /// The last step: locks the wizard once at least one operator key exists.
    pub async fn finish_setup(&self, principal: &Principal) -> ServiceResult<()> {
        principal.require_super_admin()?;
        if self.operator_key_count().await? == 0 {
            return Err(ServiceError::Invalid {
                field: "keys",
                problem: "add at least one provider key (any step) before finishing".into(),
            });
        }
        self.save_progress(Progress::Finished).await
    }

    /// Whether anyone administers this keygate. Users a host application signed in
    /// (JWTs) do not count: they cannot claim it, and must not lock its owner out.
    pub(crate) async fn has_super_admin(&self) -> ServiceResult<bool> {
        Ok(self.store.users().await?.iter().any(|u| u.super_admin))
    }

    /// How many operator keys exist.
    pub async fn operator_key_count(&self) -> ServiceResult<usize> {
        let filter = CredentialFilter { scope: Some(CredentialScope::Operator), ..Default::default() };
        Ok(self.store.credentials(&filter).await?.len())
    }

    /// A label for each operator key (`OpenAI demo allowance`, `OpenAI platform key`),
    /// for usage pages: everyone's calls may be paid by one, and nothing about the key
    /// itself (name, hint) is shown.
    pub async fn operator_key_labels(&self) -> ServiceResult<Vec<(CredentialId, String)>> {
        let filter = CredentialFilter { scope: Some(CredentialScope::Operator), ..Default::default() };
        Ok(self
            .store
            .credentials(&filter)
            .await?
            .into_iter()
            .map(|c| {
                let provider = self.catalog.get(&c.provider).map(|p| p.name.clone()).unwrap_or(c.provider.clone());
                let what = if c.operator_shared { "demo allowance" } else { "platform key" };
                (c.id, format!("{provider} {what}"))
            })
            .collect())
    }

    async fn progress(&self) -> ServiceResult<Option<Progress>> {
        match self.store.settings_get(WIZARD_SETTINGS_KEY).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| ServiceError::Invalid {
                field: "setup_wizard",
                problem: format!("the stored wizard state does not parse: {e}"),
            }),
        }
    }

    async fn save_progress(&self, progress: Progress) -> ServiceResult<()> {
        let text = serde_json::to_string(&progress)
            .map_err(|e| ServiceError::Invalid { field: "setup_wizard", problem: e.to_string() })?;
        self.store.settings_put(WIZARD_SETTINGS_KEY, &text, now()).await?;
        Ok(())
    }
}

fn code_hash(code: &str) -> Vec<u8> {
    // Codes are compared without case, dashes or spaces: people retype them.
    let canonical: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    sha256(format!("keygate/setup-code/v1:{canonical}").as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_compare_without_case_dashes_or_spaces() {
        assert_eq!(code_hash("ABCDE-FGHIJ-KLMNO"), code_hash(" abcde fghij-klmno\n"));
        assert_ne!(code_hash("ABCDE-FGHIJ-KLMNO"), code_hash("ABCDE-FGHIJ-KLMNP"));
    }
}
