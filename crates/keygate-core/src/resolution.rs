//! Which credential pays for a call (DESIGN.md section 5), as a pure function of what
//! the caller has: own key, workspace key, an operator-shared key (the demo allowance),
//! a platform key (tier limits). Every source that is passed over says why, so a dry run
//! can explain the choice.

use crate::model::{Credential, CredentialStatus, Validity};

/// Where the credential for a call came from.
pub use crate::model::KeySource;

/// A per-request rule that keeps operator-paid and customer-paid calls apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentPolicy {
    #[default]
    Any,
    CustomerOnly,
    OperatorOnly,
}

impl PaymentPolicy {
    /// `customer-only`, `operator-only` or `any` (the `x-keygate-policy` header).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "any" => Some(Self::Any),
            "customer-only" => Some(Self::CustomerOnly),
            "operator-only" => Some(Self::OperatorOnly),
            _ => None,
        }
    }
}

/// The credentials that could serve a call to one provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct Candidates<'a> {
    /// The caller's own key for the provider in the acting workspace (any status).
    pub own: Option<&'a Credential>,
    pub workspace: Option<&'a Credential>,
    /// An active operator key marked as shared.
    pub operator_shared: Option<&'a Credential>,
    /// An active operator key not shared: the platform's own, under tier limits.
    pub platform: Option<&'a Credential>,
}

/// What else the rules need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The caller's tier lets them bring their own keys.
    pub byok_allowed: bool,
    /// The operator offers the demo allowance at all.
    pub demo_enabled: bool,
    /// Days since the caller's first demo call, if any.
    pub demo_days_used: Option<u32>,
    /// The allowance's length in days.
    pub demo_days: u32,
    /// Demo tokens left today.
    pub demo_tokens_left: u64,
}

/// The choice, and why each earlier source was passed over.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub chosen: Option<(KeySource, &'a Credential)>,
    pub skipped: Vec<(KeySource, String)>,
}

/// Why a credential cannot be used right now, if it cannot.
fn unusable(c: &Credential) -> Option<String> {
    if c.status != CredentialStatus::Active {
        return Some("the key is disabled".into());
    }
    match c.validity {
        Validity::Invalid => Some("the key was rejected by the provider: replace it".into()),
        Validity::Undecryptable => Some("the key cannot be decrypted: add it again".into()),
        Validity::Valid | Validity::Unverified => None,
    }
}

pub fn resolve<'a>(candidates: Candidates<'a>, facts: Facts, policy: PaymentPolicy) -> Decision<'a> {
    let mut skipped = Vec::new();
    let mut skip = |source, why: String| skipped.push((source, why));

    // 1. The caller's own key.
    match candidates.own {
        None => skip(KeySource::User, "you have no key for this provider".into()),
        Some(_) if policy == PaymentPolicy::OperatorOnly => {
            skip(KeySource::User, "the request is operator-only".into())
        }
        Some(_) if !facts.byok_allowed => skip(
            KeySource::User,
            "your plan does not include bring-your-own-key: your key stays stored but unused".into(),
        ),
        Some(c) => match unusable(c) {
            Some(why) => skip(KeySource::User, why),
            None => return Decision { chosen: Some((KeySource::User, c)), skipped },
        },
    }
    // 2. The workspace's shared key.
    match candidates.workspace {
        None => skip(KeySource::Workspace, "your workspace has no shared key for this provider".into()),
        Some(_) if policy == PaymentPolicy::OperatorOnly => {
            skip(KeySource::Workspace, "the request is operator-only".into())
        }
        Some(c) => match unusable(c) {
            Some(why) => skip(KeySource::Workspace, why),
            None => return Decision { chosen: Some((KeySource::Workspace, c)), skipped },
        },
    }
    // 3. The operator-shared key: the demo allowance.
    let has_own = candidates.own.is_some_and(|c| c.status == CredentialStatus::Active);
    match candidates.operator_shared {
        _ if policy == PaymentPolicy::CustomerOnly => {
            skip(KeySource::OperatorDemo, "the request is customer-only".into())
        }
        None => skip(KeySource::OperatorDemo, "no operator key is shared for this provider".into()),
        Some(_) if !facts.demo_enabled => {
            skip(KeySource::OperatorDemo, "the operator has turned the demo allowance off".into())
        }
        Some(_) if has_own => {
            skip(KeySource::OperatorDemo, "you have your own key, which turns the demo allowance off".into())
        }
        Some(_) if facts.demo_days_used.is_some_and(|d| d >= facts.demo_days) => {
            skip(KeySource::OperatorDemo, format!("your {}-day demo allowance has ended", facts.demo_days))
        }
        Some(_) if facts.demo_tokens_left == 0 => {
            skip(KeySource::OperatorDemo, "today's demo allowance is used up (it resets at midnight UTC)".into())
        }
        Some(c) => return Decision { chosen: Some((KeySource::OperatorDemo, c)), skipped },
    }
    // 4. The platform's key, under tier limits.
    match candidates.platform {
        _ if policy == PaymentPolicy::CustomerOnly => skip(KeySource::Platform, "the request is customer-only".into()),
        None => skip(KeySource::Platform, "the platform has no key for this provider".into()),
        Some(c) => return Decision { chosen: Some((KeySource::Platform, c)), skipped },
    }
    Decision { chosen: None, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use chrono::Utc;

    fn key(owner: Owner) -> Credential {
        Credential::draft(owner, "openai", "k", Utc::now())
    }

    fn facts() -> Facts {
        Facts { byok_allowed: true, demo_enabled: true, demo_days_used: None, demo_days: 30, demo_tokens_left: 10_000 }
    }

    fn source(d: &Decision<'_>) -> Option<KeySource> {
        d.chosen.map(|(s, _)| s)
    }

    #[test]
    fn the_chain_in_order() {
        let ws = crate::WorkspaceId::new();
        let own = key(Owner::User { workspace: ws, user: crate::UserId::new() });
        let shared = key(Owner::Workspace(ws));
        let demo = key(Owner::Operator);
        let platform = key(Owner::Operator);
        let all = Candidates {
            own: Some(&own),
            workspace: Some(&shared),
            operator_shared: Some(&demo),
            platform: Some(&platform),
        };
        assert_eq!(source(&resolve(all, facts(), PaymentPolicy::Any)), Some(KeySource::User));
        let no_own = Candidates { own: None, ..all };
        assert_eq!(source(&resolve(no_own, facts(), PaymentPolicy::Any)), Some(KeySource::Workspace));
        let only_operator = Candidates { own: None, workspace: None, ..all };
        let d = resolve(only_operator, facts(), PaymentPolicy::Any);
        assert_eq!(source(&d), Some(KeySource::OperatorDemo));
        assert_eq!(d.skipped.len(), 2);
        let used_up = Facts { demo_tokens_left: 0, ..facts() };
        let d = resolve(only_operator, used_up, PaymentPolicy::Any);
        assert_eq!(source(&d), Some(KeySource::Platform));
        assert!(d.skipped[2].1.contains("midnight UTC"));
        let d = resolve(Candidates::default(), facts(), PaymentPolicy::Any);
        assert!(d.chosen.is_none() && d.skipped.len() == 4);
    }

    #[test]
    fn an_own_key_turns_the_demo_off_even_when_byok_is_not_in_the_plan() {
        let own = key(Owner::User { workspace: crate::WorkspaceId::new(), user: crate::UserId::new() });
        let demo = key(Owner::Operator);
        let c = Candidates { own: Some(&own), operator_shared: Some(&demo), ..Default::default() };
        let no_byok = Facts { byok_allowed: false, ..facts() };
        let d = resolve(c, no_byok, PaymentPolicy::Any);
        assert!(d.chosen.is_none(), "{d:?}");
        assert!(d.skipped[0].1.contains("stays stored but unused"));
        assert!(d.skipped[2].1.contains("your own key"));
    }

    #[test]
    fn payment_policies_keep_the_paths_apart() {
        let own = key(Owner::User { workspace: crate::WorkspaceId::new(), user: crate::UserId::new() });
        let demo = key(Owner::Operator);
        let platform = key(Owner::Operator);
        let only_operator =
            Candidates { operator_shared: Some(&demo), platform: Some(&platform), ..Default::default() };
        assert!(resolve(only_operator, facts(), PaymentPolicy::CustomerOnly).chosen.is_none());
        let all = Candidates { own: Some(&own), ..only_operator };
        assert_eq!(
            source(&resolve(all, facts(), PaymentPolicy::OperatorOnly)),
            Some(KeySource::Platform),
            "own key skipped; demo off since the user has a key"
        );
        assert_eq!(PaymentPolicy::parse("customer-only"), Some(PaymentPolicy::CustomerOnly));
        assert_eq!(PaymentPolicy::parse("nope"), None);
    }

    #[test]
    fn invalid_disabled_and_expired_are_passed_over() {
        let mut own = key(Owner::User { workspace: crate::WorkspaceId::new(), user: crate::UserId::new() });
        own.validity = Validity::Invalid;
        let d = resolve(Candidates { own: Some(&own), ..Default::default() }, facts(), PaymentPolicy::Any);
        assert!(d.skipped[0].1.contains("rejected"));
        own.validity = Validity::Valid;
        own.status = CredentialStatus::Disabled;
        let demo = key(Owner::Operator);
        let d = resolve(
            Candidates { own: Some(&own), operator_shared: Some(&demo), ..Default::default() },
            facts(),
            PaymentPolicy::Any,
        );
        assert_eq!(source(&d), Some(KeySource::OperatorDemo), "a disabled own key does not block the demo");
        let ended = Facts { demo_days_used: Some(30), ..facts() };
        let d = resolve(Candidates { operator_shared: Some(&demo), ..Default::default() }, ended, PaymentPolicy::Any);
        assert!(d.chosen.is_none() && d.skipped[2].1.contains("30-day"));
    }
}
