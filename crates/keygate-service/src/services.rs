//! [`Services`]: everything a request needs, built once at start-up and shared.

use crate::auth::{JwtVerifier, Principal};
use crate::gateway::{Cache, CandidateSet, HotPathQueries};
use crate::keys::KeyVault;
use crate::limits::{InProcessLimiter, Limiter};
use crate::usage::UsageRecorder;
use crate::{now, ServiceError, ServiceResult};
use keygate_core::catalog::Catalog;
use keygate_core::policy::Policy;
use keygate_store::Store;
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
}

impl Default for Options {
    fn default() -> Self {
        Self { probe_timeout: Duration::from_secs(5), upstream_timeout: Duration::from_secs(300) }
    }
}

#[derive(Debug)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub vault: Arc<KeyVault>,
    pub catalog: Arc<Catalog>,
    /// Outbound HTTP (validation probes, JWKS).
    pub http: reqwest::Client,
    pub jwt: Option<JwtVerifier>,
    pub options: Options,
    pub limiter: Arc<dyn Limiter>,
    pub usage: UsageRecorder,
    pub hot_path_queries: HotPathQueries,
    policy: RwLock<Arc<Policy>>,
    pub(crate) generation: std::sync::atomic::AtomicU64,
    /// The store's change epoch as last seen by [`Services::poll_changes`].
    pub(crate) epoch_seen: std::sync::atomic::AtomicI64,
    /// Held by a change poll, and by a policy write so no poll overwrites it with an older read.
    pub(crate) poll_lock: tokio::sync::Mutex<()>,
    pub(crate) principal_cache: Cache<[u8; 32], (Principal, Option<chrono::DateTime<chrono::Utc>>)>,
    pub(crate) candidate_cache: Cache<(keygate_core::WorkspaceId, keygate_core::UserId, String), Arc<CandidateSet>>,
    pub(crate) demo_first_use: Cache<keygate_core::UserId, Option<chrono::DateTime<chrono::Utc>>>,
}

impl Services {
    /// Loads the stored policy (or the defaults) and builds the outbound client.
    pub async fn new(
        store: Arc<dyn Store>,
        vault: Arc<KeyVault>,
        catalog: Catalog,
        jwt: Option<JwtVerifier>,
        options: Options,
    ) -> ServiceResult<Self> {
        let policy = load_policy(&*store).await?;
        let http = reqwest::Client::builder()
            .connect_timeout(options.probe_timeout)
            .timeout(options.probe_timeout)
            // A redirect would carry a key in a custom header (x-api-key, ...) to whatever
            // host it names: reqwest strips only Authorization and Cookie.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ServiceError::Invalid { field: "http client", problem: e.to_string() })?;
        let epoch = store.change_epoch().await?;
        let usage = UsageRecorder::start(store.clone());
        Ok(Self {
            store,
            vault,
            catalog: Arc::new(catalog),
            http,
            jwt,
            options,
            limiter: Arc::new(InProcessLimiter::default()),
            usage,
            hot_path_queries: HotPathQueries::default(),
            policy: RwLock::new(Arc::new(policy)),
            generation: std::sync::atomic::AtomicU64::new(0),
            epoch_seen: std::sync::atomic::AtomicI64::new(epoch),
            poll_lock: tokio::sync::Mutex::new(()),
            principal_cache: Cache::new(),
            candidate_cache: Cache::new(),
            demo_first_use: Cache::new(),
        })
    }

    /// Reads the stored policy again (another replica may have changed it).
    pub(crate) async fn reload_policy(&self) -> ServiceResult<()> {
        let policy = Arc::new(load_policy(&*self.store).await?);
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Validates, stores and applies a new policy.
    pub async fn set_policy(&self, policy: Policy) -> ServiceResult<Arc<Policy>> {
        let problems = policy.problems(|id| self.catalog.get(id).is_some());
        if !problems.is_empty() {
            return Err(ServiceError::Invalid { field: "settings", problem: problems.join("; ") });
        }
        let text = serde_json::to_string(&policy)
            .map_err(|e| ServiceError::Invalid { field: "settings", problem: e.to_string() })?;
        // Not while a change poll runs: it could put the policy it read before this write
        // back in force after it.
        let _no_poll = self.poll_lock.lock().await;
        self.store.settings_put(POLICY_SETTINGS_KEY, &text, now()).await?;
        let policy = Arc::new(policy);
        if let Ok(mut current) = self.policy.write() {
            *current = policy.clone();
        }
        self.changed().await;
        Ok(policy)
    }
}

/// The stored policy, or the defaults when none was ever set.
async fn load_policy(store: &dyn Store) -> ServiceResult<Policy> {
    match store.settings_get(POLICY_SETTINGS_KEY).await? {
        Some(text) => serde_json::from_str(&text).map_err(|e| ServiceError::Invalid {
            field: "policy",
            problem: format!("the stored policy does not parse ({e}); fix it with PUT /api/v1/admin/settings"),
        }),
        None => Ok(Policy::default()),
    }
}
