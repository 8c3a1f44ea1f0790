//! [`LoginThrottle`]: a cap on password attempts, so that argon2 — deliberately slow —
//! is not a cost anyone on the network can make keygate pay at will, and so that a
//! password cannot be guessed at speed. Attempts are counted per account (the SHA-256 of
//! the normalised email, so a password typed into the email box is not kept in memory
//! either) and per source address, within a sliding window; past either limit, an attempt
//! is refused before any argon2 work, with how long to wait.
//!
//! An attempt is charged when it starts, not when it fails, so a burst of concurrent
//! attempts cannot all slip past the check; a success refunds its charge and clears the
//! account's count.
//!
//! State is in-process: each replica counts on its own (an attacker spreading attempts
//! over N replicas gets N times the allowance). Memory is bounded: each key holds at most
//! its limit of instants, and each table at most [`ThrottleOptions::max_tracked`] keys;
//! when a table is full, keys whose attempts have all left the window go first, then the
//! key attempted longest ago.
//!
//! Not for: rate limits on proxied calls (that is `limits`).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where the throttle reads the time: the monotonic system clock, or a clock a test moves.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<ManualClock>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self { start: Instant::now(), elapsed: Mutex::new(Duration::ZERO) }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    fn now(&self) -> Instant {
        self.start + *self.elapsed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How many attempts, over how long.
#[derive(Debug, Clone)]
pub struct ThrottleOptions {
    /// Attempts per account (normalised email) within `window`.
    pub per_account: usize,
    /// Attempts per source address within `window`.
    pub per_source: usize,
    pub window: Duration,
    /// Keys remembered per table at most.
    pub max_tracked: usize,
    pub clock: Clock,
}

impl Default for ThrottleOptions {
    fn default() -> Self {
        Self {
            per_account: 5,
            per_source: 20,
            window: Duration::from_secs(15 * 60),
            max_tracked: 10_000,
            clock: Clock::System,
        }
    }
}

/// Why an attempt was refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The source address's limit was reached (else the account's).
    pub by_source: bool,
    /// Whole seconds until an attempt will be admitted (at least 1).
    pub retry_after_secs: u64,
}

/// An admitted attempt. Settle it with [`LoginThrottle::succeeded`]; a failure needs
/// nothing more (its charge stays).
#[derive(Debug)]
pub struct Attempt {
    account: [u8; 32],
    source: Option<String>,
    at: Instant,
}

#[derive(Debug)]
pub struct LoginThrottle {
    options: ThrottleOptions,
    accounts: Mutex<Table<[u8; 32]>>,
    sources: Mutex<Table<String>>,
}

impl LoginThrottle {
    pub fn new(options: ThrottleOptions) -> Self {
        Self { options, accounts: Mutex::new(Table::default()), sources: Mutex::new(Table::default()) }
    }

    /// Admits an attempt on `account` (the SHA-256 of the normalised email) from `source`
    /// and charges it to both, or says how long to wait. Nothing is charged when refused.
    pub fn admit(&self, account: [u8; 32], source: Option<&str>) -> Result<Attempt, Refused> {
        let now = self.options.clock.now();
        let window = self.options.window;
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let wait_source = source.and_then(|s| sources.wait(s, self.options.per_source, window, now));
        let wait_account = accounts.wait(&account, self.options.per_account, window, now);
        let refused = match (wait_source, wait_account) {
            (Some(s), Some(a)) => Some((true, s.max(a))),
            (Some(s), None) => Some((true, s)),
            (None, Some(a)) => Some((false, a)),
            (None, None) => None,
        };
        if let Some((by_source, wait)) = refused {
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Refused { by_source, retry_after_secs: retry_after_secs.max(1) });
        }
        accounts.charge(account, now, self.options.per_account, window, self.options.max_tracked);
        if let Some(source) = source {
            sources.charge(source.to_owned(), now, self.options.per_source, window, self.options.max_tracked);
        }
        Ok(Attempt { account, source: source.map(str::to_owned), at: now })
    }

    /// The attempt succeeded: the account starts afresh and the source gets its charge
    /// back.
    pub fn succeeded(&self, attempt: Attempt) {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner).clear(&attempt.account);
        if let Some(source) = &attempt.source {
            self.sources.lock().unwrap_or_else(PoisonError::into_inner).refund(source, attempt.at);
        }
    }

    /// Keys remembered now, accounts and sources (tests: memory stays bounded).
    pub fn tracked(&self) -> (usize, usize) {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner).entries.len();
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner).entries.len();
        (accounts, sources)
    }
}

/// Recent attempt instants per key, oldest first.
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self { entries: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Table<K> {
    /// How long until `key` may try again, if it is at its limit now.
    fn wait<Q>(&mut self, key: &Q, limit: usize, window: Duration, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let times = self.entries.get_mut(key)?;
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            times.pop_front();
        }
        if times.len() < limit {
            return None;
        }
        let oldest = *times.front()?;
        Some(window.saturating_sub(now.saturating_duration_since(oldest)))
    }

    fn charge(&mut self, key: K, now: Instant, limit: usize, window: Duration, max_tracked: usize) {
        if !self.entries.contains_key(&key) && self.entries.len() >= max_tracked {
            self.make_room(now, window);
        }
        let times = self.entries.entry(key).or_default();
        times.push_back(now);
        while times.len() > limit {
            times.pop_front();
        }
    }

    /// Drops every key whose attempts have all left the window; if none has, the key
    /// attempted longest ago.
    fn make_room(&mut self, now: Instant, window: Duration) {
        let before = self.entries.len();
        self.entries.retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
        if self.entries.len() < before {
            return;
        }
        let stalest = self.entries.iter().min_by_key(|(_, times)| times.back().copied()).map(|(k, _)| k.clone());
        if let Some(key) = stalest {
            self.entries.remove(&key);
        }
    }

    fn clear<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.remove(key);
    }

    /// Takes back one charge made at `at`.
    fn refund<Q>(&mut self, key: &Q, at: Instant)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(times) = self.entries.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                self.entries.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_account: usize, per_source: usize, max_tracked: usize) -> (LoginThrottle, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let options = ThrottleOptions {
            per_account,
            per_source,
            window: Duration::from_secs(900),
            max_tracked,
            clock: Clock::Manual(clock.clone()),
        };
        (LoginThrottle::new(options), clock)
    }

    fn account(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn an_account_is_refused_after_its_limit_until_the_window_passes() {
        let (t, clock) = throttle(5, 20, 100);
        for _ in 0..5 {
            t.admit(account(1), Some("10.0.0.1")).unwrap();
            clock.advance(Duration::from_secs(10));
        }
        // The first attempt was 50 s ago: it leaves the window in 850 s.
        let refused = t.admit(account(1), Some("10.0.0.1")).unwrap_err();
        assert_eq!(refused, Refused { by_source: false, retry_after_secs: 850 });
        assert!(t.admit(account(2), Some("10.0.0.1")).is_ok(), "another account is unaffected");
        clock.advance(Duration::from_secs(849));
        assert!(t.admit(account(1), None).is_err(), "still inside the window");
        clock.advance(Duration::from_secs(1));
        assert!(t.admit(account(1), None).is_ok(), "the oldest attempt left the window");
        assert!(t.admit(account(1), None).is_err(), "but only one slot freed");
    }

    #[test]
    fn a_source_is_refused_after_its_limit_across_accounts() {
        let (t, clock) = throttle(5, 3, 100);
        for n in 0..3 {
            t.admit(account(n), Some("10.0.0.9")).unwrap();
        }
        let refused = t.admit(account(7), Some("10.0.0.9")).unwrap_err();
        assert_eq!(refused, Refused { by_source: true, retry_after_secs: 900 });
        assert!(t.admit(account(7), Some("10.0.0.10")).is_ok(), "another address is unaffected");
        clock.advance(Duration::from_secs(900));
        assert!(t.admit(account(8), Some("10.0.0.9")).is_ok());
    }

    #[test]
    fn a_refusal_charges_nothing_and_a_success_resets_the_account() {
        let (t, _clock) = throttle(2, 3, 100);
        t.admit(account(1), Some("a")).unwrap();
        let second = t.admit(account(1), Some("a")).unwrap();
        for _ in 0..10 {
            assert!(t.admit(account(1), Some("a")).is_err());
        }
        t.succeeded(second);
        // The account starts afresh; the source got its charge back (one of three used).
        t.admit(account(1), Some("a")).unwrap();
        t.admit(account(1), Some("a")).unwrap();
        assert!(t.admit(account(1), Some("a")).unwrap_err().by_source, "the source's third and last slot is used");
    }

    #[test]
    fn concurrent_attempts_are_charged_before_they_finish() {
        let (t, _clock) = throttle(3, 100, 100);
        let admitted: Vec<Attempt> = (0..10).filter_map(|_| t.admit(account(1), None).ok()).collect();
        assert_eq!(admitted.len(), 3, "no more than the limit get past the check, finished or not");
    }

    #[test]
    fn memory_stays_bounded_and_evicts_stale_keys_first() {
        let (t, clock) = throttle(5, 20, 4);
        for n in 0..4 {
            t.admit(account(n), Some(&format!("10.0.0.{n}"))).unwrap();
        }
        clock.advance(Duration::from_secs(1000));
        for n in 10..12 {
            t.admit(account(n), Some(&format!("10.0.1.{n}"))).unwrap();
        }
        assert_eq!(t.tracked(), (2, 2), "the expired keys went first");
        for n in 20..200 {
            t.admit(account(n), Some(&format!("10.0.2.{n}"))).unwrap();
        }
        let (accounts, sources) = t.tracked();
        assert!(accounts <= 4 && sources <= 4, "{accounts} accounts, {sources} sources");
    }
}
