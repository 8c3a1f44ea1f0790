//! The operator's policy: tiers and their limits, the demo allowance, provider priority,
//! how many keys a user may hold, the prompt guard. Stored as one settings document; these are the
//! defaults DESIGN.md names.

use crate::guard::PromptGuard;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Platform-key limits for one tier, and whether its users' own keys are used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    pub requests_per_minute: u32,
    pub requests_per_day: u32,
    /// Whether this tier's users may bring their own keys (if not, the keys stay stored
    /// but unused).
    pub byok: bool,
}

/// The operator-shared keys' daily allowance per user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAllowance {
    pub enabled: bool,
    /// Tokens per user per UTC day.
    pub tokens_per_day: u64,
    /// For how many days after a user's first demo call.
    pub days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub tiers: BTreeMap<String, TierLimits>,
    /// The tier of users nobody assigned one.
    pub default_tier: String,
    pub demo: DemoAllowance,
    /// Unified calls without a provider try these, in order.
    pub provider_priority: Vec<String>,
    /// Personal credentials one user may hold.
    pub max_keys_per_user: u32,
    /// Refuse (instead of saving as invalid) keys the provider rejects.
    pub reject_invalid_keys: bool,
    /// What outbound AI prompts are scanned for, and what happens to a match (the
    /// default for workspaces without an override). Absent from policies stored before
    /// it existed: those get the default.
    #[serde(default)]
    pub prompt_guard: PromptGuard,
    /// `auto` calls whose provider answers 429 or 5xx before anything reached the caller
    /// go on to the next provider in `provider_priority` with a key for the caller. Off by
    /// default (absent from policies stored before it existed).
    #[serde(default)]
    pub auto_fallback: bool,
}

impl Default for Policy {
    fn default() -> Self {
        let tier =
            |per_minute, per_day| TierLimits { requests_per_minute: per_minute, requests_per_day: per_day, byok: true };
        Self {
            tiers: BTreeMap::from([
                ("community".into(), tier(10, 100)),
                ("subscriber".into(), tier(30, 500)),
                ("premium".into(), tier(100, 2_000)),
                ("lifetime".into(), tier(100, 2_000)),
            ]),
            default_tier: "community".into(),
            demo: DemoAllowance { enabled: true, tokens_per_day: 10_000, days: 30 },
            provider_priority: vec!["anthropic".into(), "openai".into(), "openrouter".into(), "bedrock".into()],
            max_keys_per_user: 5,
            reject_invalid_keys: false,
            prompt_guard: PromptGuard::default(),
            auto_fallback: false,
        }
    }
}

impl Policy {
    /// Problems that would make the policy unusable, each naming its field.
    pub fn problems(&self, known_provider: impl Fn(&str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tiers.is_empty() {
            problems.push("tiers: at least one tier is needed".into());
        }
        if !self.tiers.contains_key(&self.default_tier) {
            problems.push(format!("default_tier: `{}` is not one of the tiers", self.default_tier));
        }
        for (name, limits) in &self.tiers {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                problems.push(format!("tiers: `{name}` must be letters, digits, `_` or `-`"));
            }
            if limits.requests_per_minute == 0 || limits.requests_per_day == 0 {
                problems.push(format!("tiers.{name}: limits must be at least 1"));
            }
        }
        for id in &self.provider_priority {
            if !known_provider(id) {
                problems.push(format!("provider_priority: `{id}` is not a provider"));
            }
        }
        if self.max_keys_per_user == 0 {
            problems.push("max_keys_per_user: must be at least 1".into());
        }
        problems.extend(self.prompt_guard.problems("prompt_guard"));
        problems
    }

    /// The limits of `tier`, or of the default tier if it is unknown.
    pub fn tier(&self, tier: &str) -> Option<&TierLimits> {
        self.tiers.get(tier).or_else(|| self.tiers.get(&self.default_tier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_and_are_valid() {
        let p = Policy::default();
        assert_eq!(p.tiers["community"].requests_per_minute, 10);
        assert_eq!(p.tiers["subscriber"].requests_per_day, 500);
        assert_eq!(p.demo.tokens_per_day, 10_000);
        assert_eq!(p.max_keys_per_user, 5);
        assert!(p.problems(|_| true).is_empty());
    }

    #[test]
    fn problems_name_their_field() {
        let mut p = Policy { default_tier: "gold".into(), max_keys_per_user: 0, ..Policy::default() };
        p.provider_priority.push("nope".into());
        let problems = p.problems(|id| id != "nope");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|m| m.starts_with("default_tier")));
        assert!(p.tier("unknown").is_none(), "falls back to a default tier that does not exist");
    }

    #[test]
    fn a_policy_stored_before_the_prompt_guard_loads_with_its_default() {
        let mut stored = serde_json::to_value(Policy::default()).unwrap();
        stored.as_object_mut().unwrap().remove("prompt_guard");
        stored.as_object_mut().unwrap().remove("auto_fallback");
        let p: Policy = serde_json::from_value(stored).unwrap();
        assert_eq!(p.prompt_guard, PromptGuard::default());
        assert!(!p.auto_fallback, "fallback is opt-in");
        let off = Policy {
            prompt_guard: PromptGuard { mode: crate::guard::Mode::Redact, kinds: vec![] },
            ..Policy::default()
        };
        assert!(off.problems(|_| true).iter().any(|m| m.starts_with("prompt_guard.kinds")));
    }
}
