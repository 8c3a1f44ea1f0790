//! The gateway's decisions: which credential serves a call, whether limits admit it, and
//! what is recorded once it is over. A proxied call enters here twice: [`Services::admit`]
//! before anything goes out, [`Services::finish`] exactly once when it is over. Everything
//! `admit` reads is cached (see `cache`), so a steady stream of calls costs no database
//! query.
//!
//! Not for: forwarding bytes (the server's proxy does that).

use crate::cache::CandidateSet;
use crate::limits::{Refusal, RequestAdmission, SessionReservation, TokenReservation, Unavailable};
use crate::principal::Principal;
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::catalog::Provider;
use keygate_core::resolution::{self, Facts, KeySource, PaymentPolicy};
use keygate_core::usage;
use keygate_core::*;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Input tokens assumed per image a request carries (a large image costs providers
/// about 1,600 tokens).
const TOKENS_PER_IMAGE: u64 = 1_600;

/// A call the proxy wants to make, before its body is read: enough to decide who pays
/// and whether the call may go out at all.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    pub principal: &'a Principal,
    pub provider: &'a str,
    /// The HTTP method and the provider path (percent-decoded), for the shared-endpoint
    /// rule.
    pub method: &'a str,
    pub path: &'a str,
    pub policy: PaymentPolicy,
}

/// What a call's body says about its cost, for its reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallSize {
    /// The request body's size in bytes (its input, roughly).
    pub body_len: usize,
    /// Images the request carries (each costs input tokens its bytes do not show).
    pub images: u64,
    /// Whether the call generates output (chat, messages, generateContent) rather than,
    /// say, embeddings.
    pub generates: bool,
    /// The most output tokens per choice the request allows, if it names a maximum.
    pub max_output_tokens: Option<u64>,
    /// How many choices it asks for (`n`, `candidateCount`); 1 when it names none.
    pub choices: u64,
}

impl CallSize {
    /// Tokens the call's input may cost: bytes/3 errs on the side of too many.
    fn input_estimate(&self) -> u64 {
        (self.body_len as u64).div_ceil(3) + self.images * TOKENS_PER_IMAGE
    }

    /// `(input, choices, at least, at most)`: the tokens a call costs at least (its input
    /// and a token per choice) and at most (`u64::MAX` when it names no output maximum).
    pub(crate) fn worst_case(&self) -> (u64, u64, u64, u64) {
        let input = self.input_estimate().max(1);
        let choices = self.choices.max(1);
        let (at_least, at_most) = match (self.generates, self.max_output_tokens) {
            (false, _) => (input, input),
            (true, Some(max)) => (input + choices, input + choices.saturating_mul(max.max(1))),
            (true, None) => (input + choices, u64::MAX),
        };
        (input, choices, at_least, at_most)
    }
}

/// Who pays for a call, decided before its body is read.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub principal: Principal,
    pub provider: Arc<Provider>,
    pub source: KeySource,
    /// Shared with the cached candidate set it was chosen from.
    pub credential: Arc<Credential>,
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
    /// Shared with the cached candidate set it was chosen from.
    pub credential: Arc<Credential>,
    pub admission: Admission,
    /// The demo allowance (or a sandbox session's token cap) cannot cover the output the
    /// request allows (or it names no maximum): the call must go out with its maximum
    /// output per choice set to this.
    pub output_cap: Option<u64>,
    /// The call's reservation under its sandbox session's caps, when a session makes it.
    pub session: Option<SessionReservation>,
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
    /// The provider's status; `None` if it was never reached.
    pub status: Option<StatusCode>,
    pub model: Option<String>,
    pub tokens: usage::Tokens,
    pub latency: Duration,
    /// The caller hung up before the provider answered, while the call was on its way:
    /// the provider may do (and bill) the work, so nothing is refunded: the limits keep
    /// what was reserved and the usage row says `499` with that estimate. (A call keygate
    /// knows never reached the provider, a refused connection, is not abandoned.)
    pub abandoned: bool,
}

/// The caller's demo allowance today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoStatus {
    pub tokens_left: u64,
    /// Days left in the allowance's window, once it has been used.
    pub days_left: Option<u32>,
}

/// What the pages' demo banner says: the allowance left, and for which providers the
/// demo serves the caller (no key of their own or their workspace's) or is off because
/// they brought their own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoBanner {
    pub status: DemoStatus,
    pub tokens_per_day: u64,
    /// How many days the allowance lasts from its first use.
    pub days: u32,
    /// Provider names the demo allowance serves the caller for now.
    pub serving: Vec<String>,
    /// Provider names with a shared demo key that the caller's own key turns off.
    pub own_key: Vec<String>,
}

/// The caller's platform-key limits and what is left of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformStatus {
    pub per_minute: u32,
    pub left_this_minute: u32,
    pub per_day: u32,
    pub left_today: u32,
}

impl Services {
    /// Explains which credential would serve `principal` for `provider`, and why.
    pub async fn explain(
        &self,
        principal: &Principal,
        provider: &str,
        policy: PaymentPolicy,
    ) -> ServiceResult<Explanation> {
        let provider = self.provider(provider)?;
        // A session's token is served by no provider outside its list (so `auto` and
        // `/v1/models` pass them by).
        if !self.session_allows(principal, provider) {
            return Ok(Explanation { provider: provider.id.clone(), chosen: None, skipped: Vec::new(), model: None });
        }
        let set = self.candidates(principal, provider.key_provider()).await?;
        let facts = self.facts(principal, &set).await?;
        let decision = resolution::resolve(set.candidates(), facts, policy);
        let chosen = decision.chosen.map(|(s, c)| (s, c.clone()));
        let model = chosen.as_ref().and_then(|(_, c)| c.model.clone()).or_else(|| provider.default_model.clone());
        Ok(Explanation { provider: provider.id.clone(), chosen, skipped: decision.skipped, model })
    }

    /// Decides who pays for a call, before its body is read: the caller's scope, the
    /// workspace's status, the resolution chain and the shared-endpoint rule. Nothing is
    /// reserved yet, so a call refused here costs nothing and its body is never buffered.
    pub async fn resolve_call(&self, request: CallRequest<'_>) -> ServiceResult<Resolved> {
        let CallRequest { principal, policy, .. } = request;
        principal.require_scope(Scope::Proxy)?;
        if !principal.workspace.status.allows_use() {
            return Err(ServiceError::WorkspaceInactive { status: principal.workspace.status.to_string() });
        }
        let provider = Arc::clone(self.provider(request.provider)?);
        self.check_session_provider(principal, &provider).await?;
        // `github-git` is served by the caller's `github` key (see `Provider::uses_key_of`).
        let set = self.candidates(principal, provider.key_provider()).await?;
        let facts = self.facts(principal, &set).await?;
        let decision = resolution::resolve(set.candidates(), facts, policy);
        let Some((source, credential)) = decision.chosen.and_then(|(source, _)| Some((source, set.slot(source)?)))
        else {
            return Err(no_credential(&provider, &set, facts, &decision.skipped));
        };
        // A key the caller does not own serves only the provider's shared endpoints:
        // never its key, account or billing management.
        if source != KeySource::User && !provider.shares(request.method, request.path) {
            return Err(ServiceError::EndpointNotAllowed(format!(
                "{} `{} /{}` is not one of {}'s shared endpoints, so the {} key that would serve it cannot be used \
                 for it; use your own {} key for this call (POST /api/v1/keys)",
                provider.name,
                request.method,
                request.path.trim_start_matches('/'),
                provider.name,
                source_label(source),
                provider.name
            )));
        }
        // A session's token cap holds only where keygate reads (and caps) what a call may
        // generate: the shared endpoints. A batch or another deferred job would escape it.
        if let Some((_, session)) = principal.session() {
            if session.grant.max_tokens.is_some() && !provider.shares(request.method, request.path) {
                return Err(ServiceError::EndpointNotAllowed(format!(
                    "this session has a token cap, which keygate can only hold on {}'s metered endpoints;                      `{} /{}` is not one of them: start a session without max_tokens for it",
                    provider.name,
                    request.method,
                    request.path.trim_start_matches('/'),
                )));
            }
        }
        Ok(Resolved { principal: principal.clone(), provider, source, credential: Arc::clone(credential) })
    }

    /// Admits a resolved call under the limits. On the demo allowance it reserves the
    /// worst case the request allows (its input, and `choices` × its output maximum); a
    /// request that names no maximum, or more than is left, is admitted with its maximum
    /// capped to what is left (`Admitted::output_cap`), so the allowance is never
    /// overspent, however many calls run at once.
    ///
    /// A sandbox session's call is first reserved under the session's own caps (its
    /// output maximum capped to what the session has left); a call the limits above then
    /// refuse gives that reservation back.
    pub async fn admit(&self, resolved: Resolved, size: CallSize) -> ServiceResult<Admitted> {
        let (session, session_cap) =
            self.admit_session_call(&resolved.principal, &resolved.provider.id, resolved.source, &size).await?;
        let mut size = size;
        if let Some(cap) = session_cap {
            size.max_output_tokens = Some(size.max_output_tokens.map_or(cap, |max| max.min(cap)));
        }
        match self.admit_under_source_limits(resolved, size).await {
            Ok(mut admitted) => {
                admitted.session = session;
                admitted.output_cap = match (admitted.output_cap, session_cap) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(admitted)
            }
            Err(e) => {
                if let Some(reservation) = session {
                    self.settle_session_soon(reservation, 0, true);
                }
                Err(e)
            }
        }
    }

    /// [`Self::admit`] under the limits of the key that pays (demo allowance, tier).
    async fn admit_under_source_limits(&self, resolved: Resolved, size: CallSize) -> ServiceResult<Admitted> {
        let Resolved { principal, provider, source, credential } = resolved;
        let mut output_cap = None;
        let admission = match source {
            KeySource::User | KeySource::Workspace => Admission::Unmetered,
            KeySource::OperatorDemo => {
                let user = principal.user.id;
                let limit = self.policy().demo.tokens_per_day;
                let input = size.input_estimate().max(1);
                let choices = size.choices.max(1);
                let (at_least, at_most) = match (size.generates, size.max_output_tokens) {
                    (false, _) => (input, input),
                    (true, Some(max)) => (input + choices, input + choices.saturating_mul(max.max(1))),
                    (true, None) => (input + choices, u64::MAX),
                };
                let reserved = self.reserve_demo(user, limit, at_least, at_most).await;
                match reserved {
                    Ok(reserved) => {
                        let reservation = reserved.map_err(refusal)?;
                        if size.generates && reservation.tokens < at_most {
                            output_cap = Some(((reservation.tokens - input) / choices).max(1));
                        }
                        self.note_demo_use(user).await?;
                        Admission::Demo(reservation)
                    }
                    Err(down) => {
                        self.fail_open(&down, source)?;
                        // Served blind: the call may use at most what a day allows.
                        if size.generates && at_most > limit {
                            output_cap = Some((limit.saturating_sub(input) / choices).max(1));
                        }
                        self.note_demo_use(user).await?;
                        Admission::Unmetered
                    }
                }
            }
            KeySource::Platform => {
                let policy = self.policy();
                let limits = policy.tier(&principal.user.tier).ok_or_else(|| {
                    ServiceError::Forbidden(format!("tier `{}` has no limits configured", principal.user.tier))
                })?;
                let user = principal.user.id;
                let (per_minute, per_day) = (limits.requests_per_minute, limits.requests_per_day);
                let admitted = self.admit_platform(user, per_minute, per_day).await;
                match admitted {
                    Ok(admitted) => Admission::Platform(admitted.map_err(refusal)?),
                    Err(down) => {
                        self.fail_open(&down, source)?;
                        Admission::Unmetered
                    }
                }
            }
        };
        Ok(Admitted { principal, provider, source, credential, admission, output_cap, session: None })
    }

    /// Settles limits and records usage for a finished (or abandoned) call.
    pub fn finish(&self, call: &Admitted, outcome: CallOutcome) {
        let tokens = (outcome.tokens.input + outcome.tokens.output).max(0) as u64;
        let abandoned = outcome.abandoned && outcome.status.is_none();
        let failed = !abandoned && outcome.status.is_none_or(|s| s.is_server_error());
        // A count keygate never saw (the caller left before the usage event or before any
        // answer, an answer too large to read, a body keygate could not peek into) is
        // charged what was reserved: unknown is not free.
        let unseen = abandoned || (outcome.status.is_some_and(|s| s.is_success()) && !outcome.tokens.reported);
        match call.admission {
            Admission::Unmetered => {}
            Admission::Demo(reservation) => {
                let actual = if unseen { reservation.tokens.max(tokens) } else { tokens };
                let limiter = self.limiter.clone();
                settle_soon(async move { limiter.settle_tokens(&reservation, actual).await });
            }
            Admission::Platform(admission) if failed => {
                let limiter = self.limiter.clone();
                settle_soon(async move { limiter.refund_request(&admission).await });
            }
            Admission::Platform(_) => {}
        }
        if let Some(reservation) = call.session {
            let actual = if unseen { reservation.tokens.max(tokens) } else { tokens };
            self.settle_session_soon(reservation, actual, failed);
        }
        let mut tokens = outcome.tokens;
        let status = match outcome.status {
            Some(status) => i32::from(status.as_u16()),
            None if abandoned => {
                // What the limits kept, as the estimate of a call nobody saw answered.
                let charged = match call.admission {
                    Admission::Demo(r) => r.tokens,
                    _ => call.session.map_or(0, |r| r.tokens),
                };
                tokens.input = i64::try_from(charged).unwrap_or(i64::MAX);
                tokens.estimated = true;
                499 // nginx's "client closed request"
            }
            None => return, // the provider was never reached: nothing to meter
        };
        let model = outcome.model;
        let cost = model.as_deref().map_or(0, |m| call.provider.cost_nano_usd(m, tokens.input, tokens.output));
        self.usage.record(UsageEvent {
            id: UsageEventId::new(),
            at: now(),
            user_id: Some(call.principal.user.id),
            workspace_id: Some(call.principal.workspace.id),
            credential_id: Some(call.credential.id),
            key_source: call.source,
            provider: call.provider.id.clone(),
            model,
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cost_nano_usd: cost,
            status,
            latency_ms: outcome.latency.as_millis().min(i64::MAX as u128) as i64,
            estimated: tokens.estimated,
            session_id: call.principal.session().map(|(id, _)| id),
        });
    }

    /// The caller's metered calls, grouped, exact for any number of calls.
    pub async fn usage_report(
        &self,
        principal: &Principal,
        query: crate::usage::UsageQuery,
        group_by: crate::usage::GroupBy,
    ) -> ServiceResult<crate::usage::UsageReport> {
        use crate::usage::{UsageReport, UsageTotals};
        principal.require_scope(Scope::Usage)?;
        let filter = query.of_user(principal.user.id);
        let rows: Vec<UsageTotals> =
            self.store.usage_report(&filter, group_by.grouping()).await?.into_iter().map(UsageTotals::from).collect();
        let mut total = UsageTotals { key: "total".into(), ..Default::default() };
        for row in &rows {
            total.requests += row.requests;
            total.input_tokens += row.input_tokens;
            total.output_tokens += row.output_tokens;
            total.cost_nano_usd += row.cost_nano_usd;
        }
        Ok(UsageReport { group_by, rows, total })
    }

    /// The caller's metered calls per UTC calendar day and group (one row per day and
    /// group that has calls, by day, then key), scoped exactly as [`Self::usage_report`].
    pub async fn usage_by_day(
        &self,
        principal: &Principal,
        query: crate::usage::UsageQuery,
        group_by: crate::usage::GroupBy,
    ) -> ServiceResult<Vec<crate::usage::DailyUsage>> {
        use crate::usage::DailyUsage;
        principal.require_scope(Scope::Usage)?;
        let filter = query.of_user(principal.user.id);
        let rows = self.store.usage_by_day(&filter, group_by.grouping()).await?;
        Ok(rows.into_iter().map(|r| DailyUsage { day: r.day, totals: r.totals.into() }).collect())
    }

    /// The provider refused a customer's key during a call: if keygate's own probe
    /// confirms it, mark it invalid so the next call falls back.
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
        // The caller shaped the request (a smuggled parameter, a wrong path) and could make
        // the provider refuse a good key: only keygate's own probe decides.
        let Ok(secret) = self.vault.open_credential(&call.credential).await else { return };
        // Probed as the provider the key was stored for (a `github-git` call's key is
        // `github`'s, and only `github` has a probe).
        let key_provider = self.provider(&credential.provider).map_or_else(|_| Arc::clone(&call.provider), Arc::clone);
        let verdict = crate::validation::probe(&self.http, &key_provider, &secret).await;
        drop(secret);
        if verdict.validity != Validity::Invalid {
            tracing::info!(
                provider = %call.provider.id,
                status,
                "the provider refused a call, but keygate's own probe did not confirm the key is bad: it stays in use"
            );
            return;
        }
        credential.validity = Validity::Invalid;
        credential.validity_detail = Some(format!(
            "{} rejected the key (HTTP {status}) during a call, and again when keygate checked it: it may have been \
             rotated or revoked. Replace it.",
            key_provider.name
        ));
        credential.validity_checked_at = Some(now());
        match self.store.update_credential(&credential, &call.credential.sealed, None).await {
            Ok(()) => {}
            Err(keygate_store::StoreError::Changed { .. }) => return, // replaced meanwhile
            Err(e) => tracing::warn!(error = %e, "could not mark a rejected key invalid"),
        }
        self.changed().await;
    }

    /// Demo tokens left today for the caller, and the days left in the allowance.
    pub async fn demo_status(&self, principal: &Principal) -> ServiceResult<DemoStatus> {
        self.seed_demo(principal.user.id).await.map_err(limits_down)?;
        let policy = self.policy();
        let used = self.limiter.tokens_used(principal.user.id, now().date_naive()).await.map_err(limits_down)?;
        let days_left = self.demo_days_used(principal.user.id).await?.map(|d| policy.demo.days.saturating_sub(d));
        Ok(DemoStatus { tokens_left: policy.demo.tokens_per_day.saturating_sub(used), days_left })
    }

    /// The demo banner for the caller; `None` when no operator key is shared for any
    /// provider the caller could use it for, or the allowance is switched off.
    pub async fn demo_banner(&self, principal: &Principal) -> ServiceResult<Option<DemoBanner>> {
        let policy = self.policy();
        if !policy.demo.enabled {
            return Ok(None);
        }
        let (mut serving, mut own_key) = (Vec::new(), Vec::new());
        for provider in self.catalog.all() {
            let set = self.candidates(principal, &provider.id).await?;
            let candidates = set.candidates();
            if candidates.operator_shared.is_none() {
                continue;
            }
            if candidates.own.is_some_and(|c| c.status == CredentialStatus::Active) {
                own_key.push(provider.name.clone());
                continue;
            }
            let explained = self.explain(principal, &provider.id, PaymentPolicy::Any).await?;
            // Not paid by the customer's side: the demo serves them (or would, once it
            // resets).
            if !explained.chosen.as_ref().is_some_and(|(source, _)| source.customer_paid()) {
                serving.push(provider.name.clone());
            }
        }
        if serving.is_empty() && own_key.is_empty() {
            return Ok(None);
        }
        let status = match self.demo_status(principal).await {
            Ok(status) => status,
            // The pages still work while the limits backend is down: no banner then.
            Err(ServiceError::LimitsUnavailable(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(DemoBanner {
            status,
            tokens_per_day: policy.demo.tokens_per_day,
            days: policy.demo.days,
            serving,
            own_key,
        }))
    }

    /// Platform requests left (this minute, today) for the caller's tier.
    pub async fn platform_status(&self, principal: &Principal) -> ServiceResult<PlatformStatus> {
        self.seed_platform(principal.user.id).await.map_err(limits_down)?;
        let policy = self.policy();
        let limits = policy.tier(&principal.user.tier).cloned().unwrap_or(keygate_core::policy::TierLimits {
            requests_per_minute: 0,
            requests_per_day: 0,
            byok: false,
        });
        let (minute, day) = self.limiter.requests_used(principal.user.id, now()).await.map_err(limits_down)?;
        Ok(PlatformStatus {
            per_minute: limits.requests_per_minute,
            left_this_minute: limits.requests_per_minute.saturating_sub(minute),
            per_day: limits.requests_per_day,
            left_today: limits.requests_per_day.saturating_sub(day),
        })
    }

    pub(crate) async fn candidates(&self, principal: &Principal, provider: &str) -> ServiceResult<Arc<CandidateSet>> {
        let key = (principal.workspace.id, principal.user.id, provider.to_owned());
        let generation = self.fresh.generation();
        if let Some(set) = self.candidate_cache.get(&key, generation) {
            return Ok(set);
        }
        let all = self.store.credential_candidates(principal.workspace.id, principal.user.id, provider).await?;
        self.fresh.queried(1);
        let of = |scope: CredentialScope| all.iter().filter(move |c| c.scope == scope);
        let own = || of(CredentialScope::User);
        let set = Arc::new(CandidateSet {
            own: own().find(|c| c.status == CredentialStatus::Active).or_else(|| own().next()).cloned().map(Arc::new),
            workspace: of(CredentialScope::Workspace).next().cloned().map(Arc::new),
            operator_shared: of(CredentialScope::Operator).find(|c| c.operator_shared).cloned().map(Arc::new),
            platform: of(CredentialScope::Operator).find(|c| !c.operator_shared).cloned().map(Arc::new),
        });
        self.candidate_cache.put(key, set.clone(), generation);
        Ok(set)
    }

    async fn facts(&self, principal: &Principal, set: &CandidateSet) -> ServiceResult<Facts> {
        let policy = self.policy();
        let byok_allowed = policy.tier(&principal.user.tier).is_some_and(|t| t.byok);
        let demo_days_used = self.demo_days_used(principal.user.id).await?;
        let candidates = set.candidates();
        // The demo counter matters only where a demo key could serve: a call on the
        // caller's own key never waits on (or fails with) the limits backend.
        let demo_possible =
            candidates.operator_shared.is_some() && candidates.own.is_none_or(|c| c.status != CredentialStatus::Active);
        let demo_tokens_left = if !policy.demo.enabled {
            0
        } else if !demo_possible {
            policy.demo.tokens_per_day
        } else {
            let user = principal.user.id;
            let used = match self.seed_demo(user).await {
                Ok(()) => self.limiter.tokens_used(user, now().date_naive()).await,
                Err(e) => Err(e),
            };
            match used {
                Ok(used) => policy.demo.tokens_per_day.saturating_sub(used),
                // Unknown: admission decides (and fails closed there).
                Err(_) => policy.demo.tokens_per_day,
            }
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
        self.fresh.queried(1);
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
            self.fresh.queried(1);
            self.demo_first_use.put(user, Some(first), 0);
        }
        Ok(())
    }

    /// Reserves demo tokens, seeding the day's counter first; a counter the backend lost
    /// since (Redis restarted empty) is seeded again from recorded usage, once.
    async fn reserve_demo(
        &self,
        user: UserId,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> Result<Result<TokenReservation, Refusal>, Unavailable> {
        for _ in 0..2 {
            self.seed_demo(user).await?;
            match self.limiter.reserve_tokens(user, now(), limit, at_least, at_most).await? {
                Err(Refusal::Unseeded) => self.seeded.forget(user, now().date_naive(), false),
                answer => return Ok(answer),
            }
        }
        Err(lost_twice(self.limiter.backend()))
    }

    /// Admits a platform request, seeding the day's counter first (and again once, if
    /// the backend lost it).
    async fn admit_platform(
        &self,
        user: UserId,
        per_minute: u32,
        per_day: u32,
    ) -> Result<Result<RequestAdmission, Refusal>, Unavailable> {
        for _ in 0..2 {
            self.seed_platform(user).await?;
            match self.limiter.admit_request(user, now(), per_minute, per_day).await? {
                Err(Refusal::Unseeded) => self.seeded.forget(user, now().date_naive(), true),
                answer => return Ok(answer),
            }
        }
        Err(lost_twice(self.limiter.backend()))
    }

    /// Loads today's recorded demo usage into the counter unless it is counted already
    /// (once per user and day in this process; "set if absent" in the backend).
    async fn seed_demo(&self, user: UserId) -> Result<(), Unavailable> {
        let day = now().date_naive();
        if !self.seeded.contains(user, day, false) {
            let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(now);
            let (_, tokens) = self
                .store
                .usage_since(user, KeySource::OperatorDemo, midnight)
                .await
                .map_err(|e| Unavailable { backend: "database", reason: e.to_string() })?;
            self.fresh.queried(1);
            self.limiter.seed_tokens(user, day, tokens.max(0) as u64).await?;
            self.seeded.insert(user, day, false);
        }
        Ok(())
    }

    async fn seed_platform(&self, user: UserId) -> Result<(), Unavailable> {
        let day = now().date_naive();
        if !self.seeded.contains(user, day, true) {
            let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or_else(now);
            let (requests, _) = self
                .store
                .usage_since(user, KeySource::Platform, midnight)
                .await
                .map_err(|e| Unavailable { backend: "database", reason: e.to_string() })?;
            self.fresh.queried(1);
            self.limiter.seed_requests(user, day, requests.clamp(0, i64::from(u32::MAX)) as u32).await?;
            self.seeded.insert(user, day, true);
        }
        Ok(())
    }

    /// The limits backend is down for a call that needs a limit: refused (fail closed),
    /// or, with `limits.fail_open`, served, logged and counted.
    pub(crate) fn fail_open(&self, down: &Unavailable, source: KeySource) -> ServiceResult<()> {
        if !self.limits_fail_open {
            return Err(limits_down(down.clone()));
        }
        self.fail_open_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %down, %source, "limits backend unavailable: serving the call without a limit check (limits.fail_open)");
        Ok(())
    }
}

fn limits_down(down: Unavailable) -> ServiceError {
    ServiceError::LimitsUnavailable(down.to_string())
}

/// Runs a settlement now when it completes at once (the in-process limiter: so a status
/// read right after a call sees it), else on the runtime (a network round trip must not
/// hold up the dropping response).
pub(crate) fn settle_soon(work: impl std::future::Future<Output = Result<(), Unavailable>> + Send + 'static) {
    use std::task::{Context, Poll, Waker};
    let mut work = Box::pin(work);
    match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => tracing::warn!(error = %e, "could not settle a call's limit counters"),
        Poll::Pending => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = work.await {
                        tracing::warn!(error = %e, "could not settle a call's limit counters");
                    }
                });
            }
            Err(_) => tracing::warn!("no runtime to settle a call's limit counters on"),
        },
    }
}

/// A key source as a person reads it.
fn source_label(source: KeySource) -> &'static str {
    match source {
        KeySource::User => "your",
        KeySource::Workspace => "workspace's shared",
        KeySource::OperatorDemo => "operator's demo",
        KeySource::Platform => "platform's",
    }
}

/// The counter vanished again right after being seeded: the backend is not keeping what
/// it is given, which is as good as down.
fn lost_twice(backend: &'static str) -> Unavailable {
    Unavailable { backend, reason: "the counter was lost again right after seeding".into() }
}

fn refusal(r: Refusal) -> ServiceError {
    match r {
        Refusal::Unseeded => ServiceError::LimitsUnavailable("the limit counter could not be seeded".into()),
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
    // The demo allowance would serve this caller but is spent for today: that is a quota,
    // not a missing key, and it comes back at midnight UTC.
    let demo_window_open = facts.demo_days_used.is_none_or(|d| d < facts.demo_days);
    if set.operator_shared.is_some()
        && set.own.is_none()
        && facts.demo_enabled
        && demo_window_open
        && facts.demo_tokens_left == 0
    {
        return refusal(Refusal::QuotaExhausted {
            remaining: 0,
            retry_after_secs: crate::limits::seconds_to_midnight(now()),
        });
    }
    let reasons: Vec<String> = skipped.iter().map(|(s, why)| format!("{s}: {why}")).collect();
    let store_as = provider.uses_key_of.as_deref().map(|of| format!(", as provider `{of}`")).unwrap_or_default();
    ServiceError::NoCredential(format!(
        "no {} key can serve this call ({}). Add your own key with POST /api/v1/keys{store_as} (Settings → API keys), \
         or ask your workspace admin to add a shared one",
        provider.name,
        reasons.join("; ")
    ))
}
