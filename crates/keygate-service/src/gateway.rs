//! The gateway's decisions: which credential serves a call (with everything cached so a
//! steady stream of calls costs no database query), whether limits admit it, and what
//! is recorded once it is over. The HTTP side (forwarding bytes) lives in the server.
//!
//! Caches hold what the store says (principals, candidate credentials, demo first-use
//! dates) tagged with a generation number; every write through [`Services`] that could
//! change an answer bumps the generation, so a revoked token, a deleted key or a paused
//! workspace takes effect on the very next call. The same write moves the store's change
//! epoch; every process polls it ([`Services::watch_changes`], once a second) and bumps
//! its own generation when it moved, which bounds staleness between replicas to one poll.
//! A long TTL is only a safety net (a write whose epoch bump failed).

use crate::auth::Principal;
use crate::limits::{Refusal, RequestAdmission, TokenReservation};
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::catalog::Provider;
use keygate_core::resolution::{self, Candidates, Facts, KeySource, PaymentPolicy};
use keygate_core::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a cached answer may be trusted at most, even if no change was seen.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How often each process looks at the store's change epoch.
pub const CHANGE_POLL: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 100_000;

/// A generation-tagged cache.
#[derive(Debug)]
pub(crate) struct Cache<K, V> {
    entries: RwLock<HashMap<K, (V, u64, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Cache<K, V> {
    pub(crate) fn new() -> Self {
        Self { entries: RwLock::new(HashMap::new()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub(crate) fn get(&self, key: &K, generation: u64) -> Option<V> {
        let found = self.lookup(key, generation);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, key: &K, generation: u64) -> Option<V> {
        let entries = self.entries.read().ok()?;
        let (value, g, at) = entries.get(key)?;
        (*g == generation && at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    /// (hits, misses) so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    pub(crate) fn put(&self, key: K, value: V, generation: u64) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.retain(|_, (_, g, _)| *g == generation);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(key, (value, generation, Instant::now()));
        }
    }
}

/// Counts store queries made on behalf of proxied calls (exported as a metric).
#[derive(Debug, Default)]
pub struct HotPathQueries(AtomicU64);

impl HotPathQueries {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The credentials that could serve (workspace, user, provider).
#[derive(Debug, Clone, Default)]
pub(crate) struct CandidateSet {
    own: Option<Credential>,
    workspace: Option<Credential>,
    operator_shared: Option<Credential>,
    platform: Option<Credential>,
}

/// How limits admitted a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The customer's own or workspace key: only the provider's limits apply.
    Unmetered,
    Demo(TokenReservation),
    Platform(RequestAdmission),
}

/// A call that may go ahead.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub principal: Principal,
    pub provider: Arc<Provider>,
    pub source: KeySource,
    pub credential: Credential,
    pub admission: Admission,
}

/// The dry run's answer.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub provider: String,
    pub chosen: Option<(KeySource, Credential)>,
    pub skipped: Vec<(KeySource, String)>,
    pub model: Option<String>,
}

/// How a call ended, for metering.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The provider's status, or 0 if it was never reached.
    pub status: u16,
    pub model: Option<String>,
    pub tokens: usage::Tokens,
    pub latency: Duration,
}

use keygate_core::usage;

impl Services {
    /// Something that may change an answer was written: this process's caches are dropped
    /// at once, other processes' at their next poll of the change epoch.
    pub(crate) async fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        match self.store.bump_change_epoch().await {
            // Only our own bump since the last look: nothing for the poller to flush again.
            Ok(epoch) => {
                let _ = self.epoch_seen.compare_exchange(epoch - 1, epoch, Ordering::AcqRel, Ordering::Acquire);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move the change epoch: other replicas may serve cached answers for up to {} s", CACHE_TTL.as_secs())
            }
        }
    }

    /// If another process changed something since the last look, drops this process's
    /// caches (answers, unwrapped data keys) and reads the policy again; answers whether
    /// it did. One store query when nothing changed, never on a call's path.
    pub async fn poll_changes(&self) -> ServiceResult<bool> {
        // One poll at a time, and the epoch counts as seen only once the policy is read
        // again: a second poll must not answer "nothing changed" while the first is still
        // reloading, and a poll cancelled halfway leaves the epoch for the next one.
        let _one_at_a_time = self.poll_lock.lock().await;
        let epoch = self.store.change_epoch().await?;
        // Any difference counts, not only a newer epoch: a restored database may go back.
        if self.epoch_seen.load(Ordering::Acquire) == epoch {
            return Ok(false);
        }
        self.generation.fetch_add(1, Ordering::Release);
        // A workspace deleted elsewhere must not keep its data key alive here.
        self.vault.clear_cache();
        self.reload_policy().await?;
        // A concurrent `changed()` never takes the seen epoch past the one read here: its
        // compare-and-set succeeds only from the epoch before its bump, and that is not `epoch`.
        self.epoch_seen.store(epoch, Ordering::Release);
        Ok(true)
    }

    /// Polls the change epoch every `every` until the returned task is aborted.
    pub fn watch_changes(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(services) = services.upgrade() else { return };
                if let Err(e) = services.poll_changes().await {
                    tracing::warn!(error = %e, "could not read the change epoch");
                }
            }
        })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// (cache, hits, misses) for each proxy-path cache.
    pub fn cache_stats(&self) -> Vec<(&'static str, u64, u64)> {
        let (ph, pm) = self.principal_cache.stats();
        let (ch, cm) = self.candidate_cache.stats();
        let (dh, dm) = self.demo_first_use.stats();
        vec![("principals", ph, pm), ("credentials", ch, cm), ("demo_first_use", dh, dm)]
    }

    /// Explains which credential would serve `principal` for `provider`, and why.
    pub async fn explain(
        &self,
        principal: &Principal,
        provider: &str,
        policy: PaymentPolicy,
    ) -> ServiceResult<Explanation> {
        let provider = self.provider(provider)?;
        let set = self.candidates(principal, &provider.id).await?;
        let facts = self.facts(principal).await?;
        let decision = resolution::resolve(set.as_candidates(), facts, policy);
        let chosen = decision.chosen.map(|(s, c)| (s, c.clone()));
        let model = chosen.as_ref().and_then(|(_, c)| c.model.clone()).or_else(|| provider.default_model.clone());
        Ok(Explanation { provider: provider.id.clone(), chosen, skipped: decision.skipped, model })
    }

    /// Resolves the credential for a call and admits it under the limits, reserving
    /// `estimate` demo tokens if the demo allowance pays.
    pub async fn admit(
        &self,
        principal: &Principal,
        provider: &str,
        policy: PaymentPolicy,
        estimate: u64,
    ) -> ServiceResult<Admitted> {
        if !principal.workspace.status.allows_use() {
            return Err(ServiceError::WorkspaceInactive { status: principal.workspace.status.to_string() });
        }
        let provider = Arc::clone(self.provider(provider)?);
        let set = self.candidates(principal, &provider.id).await?;
        let facts = self.facts(principal).await?;
        let decision = resolution::resolve(set.as_candidates(), facts, policy);
        let Some((source, credential)) = decision.chosen else {
            return Err(no_credential(&provider, &set, facts, &decision.skipped));
        };
        let credential = credential.clone();
        let admission = match source {
            KeySource::User | KeySource::Workspace => Admission::Unmetered,
            KeySource::OperatorDemo => {
                let user = principal.user.id;
                let day = now().date_naive();
                self.seed_demo(user).await?;
                let limit = self.policy().demo.tokens_per_day;
                let reservation = self.limiter.reserve_tokens(user, day, limit, estimate.max(1)).map_err(refusal)?;
                self.note_demo_use(user).await?;
                Admission::Demo(reservation)
            }
            KeySource::Platform => {
                let policy = self.policy();
                let limits = policy.tier(&principal.user.tier).ok_or_else(|| {
                    ServiceError::Forbidden(format!("tier `{}` has no limits configured", principal.user.tier))
                })?;
                self.seed_platform(principal.user.id).await?;
                let admission = self
                    .limiter
                    .admit_request(principal.user.id, now(), limits.requests_per_minute, limits.requests_per_day)
                    .map_err(refusal)?;
                Admission::Platform(admission)
            }
        };
        Ok(Admitted { principal: principal.clone(), provider, source, credential, admission })
    }

    /// Settles limits and records usage for a finished (or abandoned) call.
    pub fn finish(&self, call: &Admitted, outcome: CallOutcome) {
        let tokens = (outcome.tokens.input + outcome.tokens.output).max(0) as u64;
        let failed = outcome.status == 0 || outcome.status >= 500;
        match call.admission {
            Admission::Unmetered => {}
            Admission::Demo(reservation) => {
                // A provider that answered but whose count keygate never saw (the caller
                // left before the usage event, an answer too large to read, a body keygate
                // could not peek into) is charged what was reserved: unknown is not free.
                let unseen = (200..300).contains(&outcome.status) && !outcome.tokens.reported;
                self.limiter.settle_tokens(&reservation, if unseen { reservation.tokens.max(tokens) } else { tokens })
            }
            Admission::Platform(admission) if failed => self.limiter.refund_request(&admission),
            Admission::Platform(_) => {}
        }
        if outcome.status == 0 {
            return; // the provider was never reached: nothing to meter
        }
        let model = outcome.model.clone();
        let cost =
            model.as_deref().map_or(0, |m| call.provider.cost_nano_usd(m, outcome.tokens.input, outcome.tokens.output));
        self.usage.record(UsageEvent {
            id: UsageEventId::new(),
            at: now(),
            user_id: Some(call.principal.user.id),
            workspace_id: Some(call.principal.workspace.id),
            credential_id: Some(call.credential.id),
            key_source: call.source.as_str().to_owned(),
            provider: call.provider.id.clone(),
            model,
            input_tokens: outcome.tokens.input,
            output_tokens: outcome.tokens.output,
            cost_nano_usd: cost,
            status: i32::from(outcome.status),
            latency_ms: outcome.latency.as_millis().min(i64::MAX as u128) as i64,
        });
    }

    /// The provider said the customer's key is bad: mark it, so the next call falls back.
    pub async fn mark_rejected(&self, call: &Admitted, status: u16) {
        if !call.source.customer_paid() {
            tracing::warn!(provider = %call.provider.id, status, source = %call.source, "the provider rejected an operator key");
            return;
        }
        // The key this call used: if it was replaced since, the refusal is not about the
        // stored one, and the compare-and-set below leaves it alone.
        let Ok(mut credential) = self.store.credential(call.credential.id).await else { return };
        if credential.sealed != call.credential.sealed || credential.validity == Validity::Invalid {
            return; // replaced, or already marked (concurrent calls with the same bad key): no write, no flush
        }
        credential.validity = Validity::Invalid;
        credential.validity_detail = Some(format!(
            "{} rejected the key (HTTP {status}) during a call: it may have been rotated or revoked. Replace it.",
            call.provider.name
        ));
        credential.validity_checked_at = Some(now());
        match self.store.update_credential(&credential, &call.credential.sealed).await {
            Ok(()) => {}
            Err(keygate_store::StoreError::Changed { .. }) => return, // replaced meanwhile
            Err(e) => tracing::warn!(error = %e, "could not mark a rejected key invalid"),
        }
        self.changed().await;
    }

    /// Demo tokens left today for the caller, and the days left in the allowance.
    pub async fn demo_status(&self, principal: &Principal) -> ServiceResult<(u64, Option<u32>)> {
        self.seed_demo(principal.user.id).await?;
        let policy = self.policy();
        let used = self.limiter.tokens_used(principal.user.id, now().date_naive());
        let days_left = self.demo_days_used(principal.user.id).await?.map(|d| policy.demo.days.saturating_sub(d));
        Ok((policy.demo.tokens_per_day.saturating_sub(used), days_left))
    }

    /// Platform requests left (this minute, today) for the caller's tier.
    pub async fn platform_status(&self, principal: &Principal) -> ServiceResult<(u32, u32, u32, u32)> {
        self.seed_platform(principal.user.id).await?;
        let policy = self.policy();
        let limits = policy.tier(&principal.user.tier).cloned().unwrap_or(keygate_core::policy::TierLimits {
            requests_per_minute: 0,
            requests_per_day: 0,
            byok: false,
        });
        let (minute, day) = self.limiter.requests_used(principal.user.id, now());
        Ok((
            limits.requests_per_minute,
            limits.requests_per_minute.saturating_sub(minute),
            limits.requests_per_day,
            limits.requests_per_day.saturating_sub(day),
        ))
    }

    pub(crate) async fn candidates(&self, principal: &Principal, provider: &str) -> ServiceResult<Arc<CandidateSet>> {
        let key = (principal.workspace.id, principal.user.id, provider.to_owned());
        let generation = self.generation();
        if let Some(set) = self.candidate_cache.get(&key, generation) {
            return Ok(set);
        }
        let all = self.store.credential_candidates(principal.workspace.id, principal.user.id, provider).await?;
        self.hot_path_queries.add(1);
        let of = |scope: CredentialScope| all.iter().filter(move |c| c.scope == scope);
        let own = || of(CredentialScope::User);
        let set = Arc::new(CandidateSet {
            own: own().find(|c| c.status == CredentialStatus::Active).or_else(|| own().next()).cloned(),
            workspace: of(CredentialScope::Workspace).next().cloned(),
            operator_shared: of(CredentialScope::Operator).find(|c| c.operator_shared).cloned(),
            platform: of(CredentialScope::Operator).find(|c| !c.operator_shared).cloned(),
        });
        self.candidate_cache.put(key, set.clone(), generation);
        Ok(set)
    }

    async fn facts(&self, principal: &Principal) -> ServiceResult<Facts> {
        let policy = self.policy();
        let byok_allowed = policy.tier(&principal.user.tier).is_some_and(|t| t.byok);
        let demo_days_used = self.demo_days_used(principal.user.id).await?;
        let demo_tokens_left = if policy.demo.enabled {
            self.seed_demo(principal.user.id).await?;
            policy.demo.tokens_per_day.saturating_sub(self.limiter.tokens_used(principal.user.id, now().date_naive()))
        } else {
            0
        };
        Ok(Facts {
            byok_allowed,
            demo_enabled: policy.demo.enabled,
            demo_days_used,
            demo_days: policy.demo.days,
            demo_tokens_left,
        })
    }

    async fn demo_first_use(&self, user: UserId) -> ServiceResult<Option<DateTime<Utc>>> {
        // First-use dates only ever appear, never change: no generation needed.
        if let Some(first) = self.demo_first_use.get(&user, 0) {
            return Ok(first);
        }
        let first = self.store.demo_first_use(user).await?;
        self.hot_path_queries.add(1);
        self.demo_first_use.put(user, first, 0);
        Ok(first)
    }

    async fn demo_days_used(&self, user: UserId) -> ServiceResult<Option<u32>> {
        let first = self.demo_first_use(user).await?;
        Ok(first.map(|f| (now() - f).num_days().max(0) as u32))
    }

    async fn note_demo_use(&self, user: UserId) -> ServiceResult<()> {
        if self.demo_first_use(user).await?.is_none() {
            let first = self.store.record_demo_first_use(user, now()).await?;
            self.hot_path_queries.add(1);
            self.demo_first_use.put(user, Some(first), 0);
        }
        Ok(())
    }

    async fn seed_demo(&self, user: UserId) -> ServiceResult<()> {
        let day = now().date_naive();
        if !self.limiter.tokens_seeded(user, day) {
            let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(now);
            let (_, tokens) = self.store.usage_since(user, KeySource::OperatorDemo.as_str(), midnight).await?;
            self.hot_path_queries.add(1);
            self.limiter.seed_tokens(user, day, tokens.max(0) as u64);
        }
        Ok(())
    }

    async fn seed_platform(&self, user: UserId) -> ServiceResult<()> {
        let day = now().date_naive();
        if !self.limiter.requests_seeded(user, day) {
            let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(now);
            let (requests, _) = self.store.usage_since(user, KeySource::Platform.as_str(), midnight).await?;
            self.hot_path_queries.add(1);
            self.limiter.seed_requests(user, day, requests.clamp(0, i64::from(u32::MAX)) as u32);
        }
        Ok(())
    }
}

impl CandidateSet {
    fn as_candidates(&self) -> Candidates<'_> {
        Candidates {
            own: self.own.as_ref(),
            workspace: self.workspace.as_ref(),
            operator_shared: self.operator_shared.as_ref(),
            platform: self.platform.as_ref(),
        }
    }
}

fn refusal(r: Refusal) -> ServiceError {
    match r {
        Refusal::QuotaExhausted { remaining, retry_after_secs } => ServiceError::QuotaExhausted {
            detail: format!(
                "the demo allowance cannot cover this call: {remaining} tokens left today (it resets at midnight UTC). \
                 Lower max_tokens, or add your own key with POST /api/v1/keys to use it without this limit"
            ),
            retry_after_secs,
        },
        Refusal::RateLimited { window, limit, retry_after_secs } => ServiceError::RateLimited {
            detail: format!(
                "your plan allows {limit} requests per {window} on the platform's keys; try again in {retry_after_secs} s, \
                 or add your own key with POST /api/v1/keys to use it without platform limits"
            ),
            retry_after_secs,
        },
    }
}

fn no_credential(
    provider: &Provider,
    set: &CandidateSet,
    facts: Facts,
    skipped: &[(KeySource, String)],
) -> ServiceError {
    if set.own.is_some() && !facts.byok_allowed && set.workspace.is_none() && set.platform.is_none() {
        return ServiceError::ByokNotInPlan(format!(
            "your plan does not include bring-your-own-key, so your {} key is stored but not used; upgrade your plan to use it",
            provider.name
        ));
    }
    let reasons: Vec<String> = skipped.iter().map(|(s, why)| format!("{s}: {why}")).collect();
    ServiceError::NoCredential(format!(
        "no {} key can serve this call ({}). Add your own key with POST /api/v1/keys (Settings → API keys), \
         or ask your workspace admin to add a shared one",
        provider.name,
        reasons.join("; ")
    ))
}
