//! What the proxy path remembers so a steady stream of calls costs no database query:
//! principals, candidate credentials and demo first-use dates, tagged with a generation
//! number, and how they are invalidated.
//!
//! Every write through [`Services`] that could change an answer calls
//! [`Services::changed`]: it bumps this process's generation (so a revoked token, a deleted
//! key or a paused workspace takes effect on the very next call here) and moves the
//! store's change epoch. On PostgreSQL that bump also notifies every process listening
//! (`LISTEN/NOTIFY`), and [`Services::watch_changes`] looks at the epoch as soon as it hears
//! one, so other replicas follow within milliseconds. It also polls the epoch once a
//! second whatever it hears (SQLite's only way; on PostgreSQL the safety net for a notice
//! lost while the listener reconnected), which bounds staleness to one poll.
//! [`CACHE_TTL`] is the last safety net (a write whose epoch bump failed).
//!
//! Lock policy (the same for every lock in this crate): a poisoned lock is recovered with
//! `into_inner`. Every critical section here leaves its data consistent at each step (an
//! insert, a clear, a swap), so what a panicking holder left behind is still valid.
//!
//! Not for: deciding anything; the gateway asks, this module remembers.

use crate::services::Services;
use crate::ServiceResult;
use keygate_core::fastmap::FastMap;
use keygate_core::resolution::{Candidates, KeySource};
use keygate_core::Credential;
use keygate_store::{ChangeFeed, ChangeNotice};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// How long a cached answer may be trusted at most, even if no change was seen.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How often each process looks at the store's change epoch.
pub const CHANGE_POLL: Duration = Duration::from_secs(1);
const MAX_ENTRIES: usize = 100_000;

/// Reads a lock, recovering it if a holder panicked (see the module's lock policy).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a lock, recovering it if a holder panicked (see the module's lock policy).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks a mutex, recovering it if a holder panicked (see the module's lock policy).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A generation-tagged cache.
#[derive(Debug)]
pub(crate) struct Cache<K, V> {
    entries: RwLock<FastMap<K, (V, u64, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Cache<K, V> {
    pub(crate) fn new() -> Self {
        Self { entries: RwLock::new(FastMap::default()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub(crate) fn get(&self, key: &K, generation: u64) -> Option<V> {
        let found = self.lookup(key, generation);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, key: &K, generation: u64) -> Option<V> {
        let entries = read(&self.entries);
        let (value, g, at) = entries.get(key)?;
        (*g == generation && at.elapsed() < CACHE_TTL).then(|| value.clone())
    }

    /// Hits and misses so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }

    pub(crate) fn put(&self, key: K, value: V, generation: u64) {
        let mut entries = write(&self.entries);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, g, _)| *g == generation);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (value, generation, Instant::now()));
    }
}

/// The credentials that could serve (workspace, user, provider): what the gateway caches
/// per caller and provider.
#[derive(Debug, Clone, Default)]
pub(crate) struct CandidateSet {
    pub(crate) own: Option<Arc<Credential>>,
    pub(crate) workspace: Option<Arc<Credential>>,
    pub(crate) operator_shared: Option<Arc<Credential>>,
    pub(crate) platform: Option<Arc<Credential>>,
}

impl CandidateSet {
    pub(crate) fn candidates(&self) -> Candidates<'_> {
        Candidates {
            own: self.own.as_deref(),
            workspace: self.workspace.as_deref(),
            operator_shared: self.operator_shared.as_deref(),
            platform: self.platform.as_deref(),
        }
    }

    /// The candidate that serves calls paid by `source` (the one resolution chose from
    /// `candidates()`): shared, not copied, with the call it serves.
    pub(crate) fn slot(&self, source: KeySource) -> Option<&Arc<Credential>> {
        match source {
            KeySource::User => self.own.as_ref(),
            KeySource::Workspace => self.workspace.as_ref(),
            KeySource::OperatorDemo => self.operator_shared.as_ref(),
            KeySource::Platform => self.platform.as_ref(),
        }
    }
}

/// One cache's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// The generation and the change epoch: when cached answers stop being trusted.
#[derive(Debug)]
pub(crate) struct Freshness {
    generation: AtomicU64,
    /// The store's change epoch as last seen by [`Services::poll_changes`].
    epoch_seen: AtomicI64,
    /// Held by a change poll, and by a policy write so no poll overwrites it with an
    /// older read.
    pub(crate) poll_lock: tokio::sync::Mutex<()>,
    /// Store queries made on behalf of proxied calls (exported as a metric).
    hot_path_queries: AtomicU64,
}

impl Freshness {
    pub(crate) fn new(epoch: i64) -> Self {
        Self {
            generation: AtomicU64::new(0),
            epoch_seen: AtomicI64::new(epoch),
            poll_lock: tokio::sync::Mutex::new(()),
            hot_path_queries: AtomicU64::new(0),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Counts `n` store queries made for a proxied call.
    pub(crate) fn queried(&self, n: u64) {
        self.hot_path_queries.fetch_add(n, Ordering::Relaxed);
    }
}

impl Services {
    /// Something that may change an answer was written: this process's caches are dropped
    /// at once, other processes' at their next poll of the change epoch.
    pub(crate) async fn changed(&self) {
        let fresh = self.freshness();
        fresh.bump();
        match self.store.bump_change_epoch().await {
            // Only our own bump since the last look: nothing for the poller to flush again.
            Ok(epoch) => {
                let _ = fresh.epoch_seen.compare_exchange(epoch - 1, epoch, Ordering::AcqRel, Ordering::Acquire);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "could not move the change epoch: other replicas may serve cached answers for up to {} s",
                CACHE_TTL.as_secs()
            ),
        }
    }

    /// If another process changed something since the last look, drops this process's
    /// caches (answers, unwrapped data keys) and reads the policy again; answers whether
    /// it did. One store query when nothing changed, never on a call's path.
    pub async fn poll_changes(&self) -> ServiceResult<bool> {
        let fresh = self.freshness();
        // One poll at a time, and the epoch counts as seen only once the policy is read
        // again: a second poll must not answer "nothing changed" while the first is still
        // reloading, and a poll cancelled halfway leaves the epoch for the next one.
        let _one_at_a_time = fresh.poll_lock.lock().await;
        let epoch = self.store.change_epoch().await?;
        // Any difference counts, not only a newer epoch: a restored database may go back.
        if fresh.epoch_seen.load(Ordering::Acquire) == epoch {
            return Ok(false);
        }
        fresh.bump();
        // A workspace deleted elsewhere must not keep its data key alive here.
        self.vault.clear_cache();
        self.reload_policy().await?;
        // A concurrent `changed()` never takes the seen epoch past the one read here: its
        // compare-and-set succeeds only from the epoch before its bump, and that is not `epoch`.
        fresh.epoch_seen.store(epoch, Ordering::Release);
        Ok(true)
    }

    /// Keeps this process's caches in step with the others until the returned task is
    /// aborted: runs [`Self::poll_changes`] as soon as the store announces a change
    /// (PostgreSQL `NOTIFY`, milliseconds), and every `every` regardless, the safety net
    /// for a lost notice or a backend without them.
    pub fn watch_changes(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let mut notices = self.store.change_notifications();
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let heard = tokio::select! {
                    _ = poll.tick() => None,
                    notice = next_notice(&mut notices) => Some(notice),
                };
                let Some(services) = services.upgrade() else { return };
                if let (Some(first), Some(feed)) = (heard, notices.as_mut()) {
                    // Coalesce a burst; skip the query when all it says is our own bump.
                    let seen = services.freshness().epoch_seen.load(Ordering::Acquire);
                    let mut only_seen = first == ChangeNotice::Epoch(seen);
                    while let Ok(more) = feed.try_recv() {
                        only_seen &= more == ChangeNotice::Epoch(seen);
                    }
                    if only_seen {
                        continue;
                    }
                }
                if let Err(e) = services.poll_changes().await {
                    tracing::warn!(error = %e, "could not read the change epoch");
                }
            }
        })
    }

    /// Store queries made on behalf of proxied calls so far.
    pub fn hot_path_queries(&self) -> u64 {
        self.freshness().hot_path_queries.load(Ordering::Relaxed)
    }
}

/// The next change notice, or never when there is no feed (or it ended).
async fn next_notice(notices: &mut Option<ChangeFeed>) -> ChangeNotice {
    if let Some(feed) = notices {
        if let Some(notice) = feed.recv().await {
            return notice;
        }
        tracing::warn!("change notifications ended; the change poll carries on alone");
        *notices = None;
    }
    std::future::pending().await
}
