//! [`Services`]: everything a request needs, built once at start-up and shared. Its
//! state is private to this crate: the edges (server, CLI) call narrow methods, one per
//! use case, defined next to the rules they apply (`auth`, `credentials`, `gateway`,
//! `admin`, `usage`, `outbound`); caches and their invalidation live in `cache`.
//!
//! Not for: HTTP or SQL.

use crate::cache::{self, Cache, CacheStats, CandidateSet, Freshness};
use crate::jwt::JwtVerifier;
use crate::keys::KeyVault;
use crate::limits::{InProcessLimiter, Limiter, SeedMemo};
use crate::outbound::{self, Timeouts, Upstreams};
use crate::principal::Principal;
use crate::throttle::{LoginThrottle, ThrottleOptions};
use crate::usage::UsageRecorder;
use crate::{now, ServiceError, ServiceResult};
use chrono::{DateTime, Utc};
use keygate_core::catalog::Catalog;
use keygate_core::policy::Policy;
use keygate_core::{UserId, WorkspaceId};
use keygate_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The settings document that holds the [`Policy`].
pub const POLICY_SETTINGS_KEY: &str = "policy";

/// Knobs the binary sets from configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a validation probe may take before the key counts as unverified.
    pub probe_timeout: Duration,
    /// How long a proxied call may wait for the provider between two reads.
    pub upstream_timeout: Duration,
    /// How many password attempts, per account and per source address, in what window.
    pub login_throttle: ThrottleOptions,
    /// Where the limit counters live (`None`: in this process).
    pub limiter: Option<Arc<dyn Limiter>>,
    /// Serve calls that need a limit when the limits backend is down (logged, counted).
    pub limits_fail_open: bool,
    /// OpenID Connect issuers people may sign in to the pages with.
    pub oidc: Vec<crate::oidc::OidcProvider>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            probe_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(300),
            login_throttle: ThrottleOptions::default(),
            limiter: None,
            limits_fail_open: false,
            oidc: Vec::new(),
        }
    }
}

/// A cached principal and when the credential behind it expires.
pub(crate) type CachedPrincipal = (Principal, Option<DateTime<Utc>>);

#[derive(Debug)]
pub struct Services {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) vault: Arc<KeyVault>,
    pub(crate) catalog: Arc<Catalog>,
    /// Probes, JWKS and token exchanges outside a proxied call.
    pub(crate) http: reqwest::Client,
    pub(crate) upstreams: Upstreams,
    pub(crate) jwt: Option<JwtVerifier>,
    pub(crate) limiter: Arc<dyn Limiter>,
    /// Which counters this process has seeded from recorded usage.
    pub(crate) seeded: SeedMemo,
    /// Which sandbox sessions' counters this process has seeded.
    pub(crate) sessions_seeded: crate::sandbox::SessionMemo,
    pub(crate) limits_fail_open: bool,
    /// Calls served without a limit check because the limits backend was down.
    pub(crate) fail_open_calls: AtomicU64,
    pub(crate) usage: UsageRecorder,
    pub(crate) login_throttle: LoginThrottle,
    policy: RwLock<Arc<Policy>>,
    pub(crate) fresh: Freshness,
    pub(crate) principal_cache: Cache<[u8; 32], CachedPrincipal>,
    pub(crate) candidate_cache: Cache<(WorkspaceId, UserId, String), Arc<CandidateSet>>,
    pub(crate) demo_first_use: Cache<UserId, Option<DateTime<Utc>>>,
    pub(crate) form_key: crate::sessions::FormKey,
    /// Single sign-on: the issuers, the key signing sign-in flows, cached metadata.
    pub(crate) oidc: crate::oidc::Oidc,
    /// The prompt guard's scanners and the workspaces' overrides.
    pub(crate) guard: crate::guard::GuardState,
}

impl Services {
    /// Loads the stored policy (or the defaults) and builds the outbound clients.
    pub async fn new(
        store: Arc<dyn Store>,
        vault: Arc<KeyVault>,
        catalog: Catalog,
        jwt: Option<JwtVerifier>,
        options: Options,
    ) -> ServiceResult<Self> {
        let policy = load_policy(&*store).await?;
        let http = outbound::client(Timeouts {
            connect: options.probe_timeout,
            read: None,
            total: Some(options.probe_timeout),
        })?;
        let upstreams = Upstreams::new(
            &catalog,
            Timeouts { connect: Duration::from_secs(10), read: Some(options.upstream_timeout), total: None },
        )?;
        let epoch = store.change_epoch().await?;
        let usage = UsageRecorder::start(store.clone());
        let form_key = crate::sessions::FormKey::load(&*store).await?;
        let oidc = crate::oidc::Oidc::load(&*store, options.oidc).await?;
        let guard = crate::guard::GuardState::new(&catalog);
        Ok(Self {
            store,
            vault,
            catalog: Arc::new(catalog),
            http,
            upstreams,
            jwt,
            limiter: options.limiter.unwrap_or_else(|| Arc::new(InProcessLimiter::default())),
            seeded: SeedMemo::default(),
            sessions_seeded: crate::sandbox::SessionMemo::default(),
            limits_fail_open: options.limits_fail_open,
            fail_open_calls: AtomicU64::new(0),
            usage,
            login_throttle: LoginThrottle::new(options.login_throttle),
            policy: RwLock::new(Arc::new(policy)),
            fresh: Freshness::new(epoch),
            principal_cache: Cache::new(),
            candidate_cache: Cache::new(),
            demo_first_use: Cache::new(),
            form_key,
            oidc,
            guard,
        })
    }

    pub(crate) fn freshness(&self) -> &Freshness {
        &self.fresh
    }

    /// The provider catalog this keygate serves.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Which database this keygate uses, once it answers (`/readyz`).
    pub async fn readiness(&self) -> ServiceResult<String> {
        self.store.ping().await?;
        Ok(self.store.backend().to_string())
    }

    /// Which limits backend this keygate uses (`redis`, `postgres`, `memory`), once it
    /// answers (`/readyz`, `keygate doctor`).
    pub async fn limits_readiness(&self) -> ServiceResult<&'static str> {
        self.limiter.ping().await.map_err(|e| ServiceError::LimitsUnavailable(e.to_string()))?;
        Ok(self.limiter.backend())
    }

    /// The limits backend's name.
    pub fn limits_backend(&self) -> &'static str {
        self.limiter.backend()
    }

    /// Whether calls are served while the limits backend is down.
    pub fn limits_fail_open(&self) -> bool {
        self.limits_fail_open
    }

    /// Calls served without a limit check because the limits backend was down (`/metrics`).
    pub fn fail_open_calls(&self) -> u64 {
        self.fail_open_calls.load(Ordering::Relaxed)
    }

    /// Waits until every usage event handed over so far is stored (shutdown, tests).
    pub async fn flush_usage(&self) {
        self.usage.flush().await;
    }

    /// Hits and misses of each proxy-path cache, for `/metrics`.
    pub fn cache_stats(&self) -> [(&'static str, CacheStats); 3] {
        [
            ("principals", self.principal_cache.stats()),
            ("credentials", self.candidate_cache.stats()),
            ("demo_first_use", self.demo_first_use.stats()),
        ]
    }

    /// Reads the stored policy again (another replica may have changed it).
    pub(crate) async fn reload_policy(&self) -> ServiceResult<()> {
        let policy = Arc::new(load_policy(&*self.store).await?);
        *cache::write(&self.policy) = policy;
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        cache::read(&self.policy).clone()
    }

    /// Validates, stores and applies a new policy.
    /// (The admin API goes through `admin_set_policy`, which checks the caller first.)
    pub async fn set_policy(&self, policy: Policy) -> ServiceResult<Arc<Policy>> {
        let problems = policy.problems(|id| self.catalog.get(id).is_some());
        if !problems.is_empty() {
            return Err(ServiceError::Invalid { field: "settings", problem: problems.join("; ") });
        }
        let text = serde_json::to_string(&policy)
            .map_err(|e| ServiceError::Invalid { field: "settings", problem: e.to_string() })?;
        // Not while a change poll runs: it could put the policy it read before this write
        // back in force after it.
        let _no_poll = self.fresh.poll_lock.lock().await;
        self.store.settings_put(POLICY_SETTINGS_KEY, &text, now()).await?;
        let policy = Arc::new(policy);
        *cache::write(&self.policy) = policy.clone();
        self.changed().await;
        Ok(policy)
    }
}

/// The stored policy, or the defaults when none was ever set.
pub(crate) async fn load_policy(store: &dyn Store) -> ServiceResult<Policy> {
    match store.settings_get(POLICY_SETTINGS_KEY).await? {
        Some(text) => serde_json::from_str(&text).map_err(|e| ServiceError::Invalid {
            field: "policy",
            problem: format!("the stored policy does not parse ({e}); fix it with PUT /api/v1/admin/settings"),
        }),
        None => Ok(Policy::default()),
    }
}
