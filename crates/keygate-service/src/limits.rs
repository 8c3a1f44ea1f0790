//! Admission control. Two kinds of limit, both check-and-reserve in one step:
//!
//! - the **demo allowance**: tokens per user per UTC day on operator-shared keys. A call
//!   reserves its worst case up front (its input and everything it may generate), capped
//!   to what is left of the day (the call then goes out with its output maximum lowered
//!   to fit), and settles to the provider's real count afterwards (or is refunded if it
//!   fails), so concurrent calls can never overspend the day;
//! - **tier rate limits** on platform keys: requests per sliding minute (a log of the
//!   admissions within the last 60 s: "10 a minute" holds over any 60 s, across a minute
//!   boundary too) and per UTC day (a counter that resets at midnight, like the demo).
//!
//! [`Limiter`] is the seam, with one backend per deployment shape, the same semantics on
//! each (one test suite runs against all three):
//!
//! - [`RedisLimiter`] (`KEYGATE_REDIS_URL`): server-side Lua scripts, exact across
//!   replicas;
//! - [`PostgresLimiter`] (PostgreSQL and no Redis): one atomic statement per admission;
//! - [`InProcessLimiter`] (SQLite, one node): counters behind a mutex.
//!
//! Time is passed in (`now`), so tests drive the clock. A backend that cannot be reached
//! answers [`Unavailable`] within its timeout; the gateway then fails closed (503
//! `limits_unavailable`) unless the deployment chose `limits.fail_open`.
//!
//! Counters are seeded from recorded usage the first time a process sees a user on a day
//! ("set if absent", so a restart, or another replica, never hands out a second
//! allowance); [`SeedMemo`] remembers which were seeded so that costs one call per user
//! and day. Redis can lose what was seeded (a restart without persistence, a flush, an
//! eviction): its scripts then answer [`Refusal::Unseeded`] rather than count from zero,
//! and the gateway seeds again and retries.

mod redis;
mod session;

pub use self::redis::RedisLimiter;
pub use self::session::{SessionCaps, SessionLimiter, SessionRefusal, SessionReservation, SessionUse, MAX_SESSION_CAP};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use keygate_core::UserId;
use keygate_store::limits::{PgLimits, RequestCounts};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// The sliding window of the per-minute tier limit.
pub const MINUTE_US: i64 = 60_000_000;

/// The limits backend did not answer (in time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the limits backend ({backend}) does not answer: {reason}")]
pub struct Unavailable {
    pub backend: &'static str,
    pub reason: String,
}

pub type LimitResult<T> = Result<T, Unavailable>;

/// A refused admission, with when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The demo allowance cannot fit this call today.
    QuotaExhausted { remaining: u64, retry_after_secs: u64 },
    /// A tier rate limit is reached.
    RateLimited { window: &'static str, limit: u32, retry_after_secs: u64 },
    /// The backend holds no counter for the day: the caller seeds it from recorded usage
    /// and asks again. Only Redis answers this, when this process's seeding is gone
    /// (Redis restarted empty, was flushed, or evicted the key); counting on from zero
    /// would hand out a second allowance for the rest of the day.
    Unseeded,
}

/// Demo tokens held for one call until it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenReservation {
    pub user: UserId,
    pub day: NaiveDate,
    pub tokens: u64,
    /// Tokens left today after this reservation.
    pub remaining: u64,
}

/// One admitted platform-key request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestAdmission {
    pub user: UserId,
    pub day: NaiveDate,
    /// When it was admitted (microseconds since the epoch): its place in the window.
    pub at_us: i64,
    /// Tells two admissions in the same microsecond apart.
    pub nonce: u64,
    pub remaining_minute: u32,
    pub remaining_day: u32,
}

/// Every limiter also counts sandbox sessions' caps ([`SessionLimiter`]).
#[async_trait]
pub trait Limiter: SessionLimiter + Send + Sync + fmt::Debug {
    /// `redis`, `postgres` or `memory`.
    fn backend(&self) -> &'static str;
    /// A round trip to the backend (`/readyz`, `keygate doctor`).
    async fn ping(&self) -> LimitResult<()>;
    /// Sets a day's demo usage recorded before this counter existed, unless the day is
    /// counted already.
    async fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64) -> LimitResult<()>;
    /// Reserves as many tokens as fit under `limit` today, up to `at_most`, if at least
    /// `at_least` fit; in one step, so concurrent calls never reserve more than the day
    /// has.
    async fn reserve_tokens(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<TokenReservation, Refusal>>;
    /// Replaces a reservation with what was really used (0 refunds it).
    async fn settle_tokens(&self, reservation: &TokenReservation, actual: u64) -> LimitResult<()>;
    /// Tokens used on `day`, reservations included.
    async fn tokens_used(&self, user: UserId, day: NaiveDate) -> LimitResult<u64>;

    /// Sets a day's platform requests recorded before this counter existed, unless the
    /// day is counted already.
    async fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32) -> LimitResult<()>;
    /// Counts one request if both windows allow it.
    async fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> LimitResult<Result<RequestAdmission, Refusal>>;
    /// Takes back an admitted request that failed before the provider did any work.
    async fn refund_request(&self, admission: &RequestAdmission) -> LimitResult<()>;
    /// (within the last 60 s, today) for `user`.
    async fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> LimitResult<(u32, u32)>;
}

/// Seconds until the next UTC midnight (when demo allowances reset), at least 1.
pub(crate) fn seconds_to_midnight(now: DateTime<Utc>) -> u64 {
    u64::from(86_400 - now.num_seconds_from_midnight()).max(1)
}

pub(crate) fn micros(now: DateTime<Utc>) -> i64 {
    now.timestamp_micros()
}

/// Whole seconds until the oldest admission in the window leaves it, at least 1.
pub(crate) fn retry_after_window(oldest_us: Option<i64>, now_us: i64) -> u64 {
    let left = oldest_us.map_or(MINUTE_US, |o| o + MINUTE_US - now_us).max(1);
    (left as u64).div_ceil(1_000_000).max(1)
}

/// Which (user, day) counters this process has seeded: one seeding per user and day.
#[derive(Debug, Default)]
pub struct SeedMemo {
    /// The day, and the (user, requests?) counters seeded on it.
    seen: Mutex<SeededOn>,
}

type SeededOn = (Option<NaiveDate>, HashSet<(UserId, bool)>);

impl SeedMemo {
    /// Whether `(user, day, requests?)` was seeded by this process.
    pub fn contains(&self, user: UserId, day: NaiveDate, requests: bool) -> bool {
        let seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.0 == Some(day) && seen.1.contains(&(user, requests))
    }

    /// The backend lost the counter: the next call seeds it again.
    pub fn forget(&self, user: UserId, day: NaiveDate, requests: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 == Some(day) {
            seen.1.remove(&(user, requests));
        }
    }

    pub fn insert(&self, user: UserId, day: NaiveDate, requests: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 != Some(day) {
            // A new day: yesterday's entries are never asked for again.
            *seen = (Some(day), HashSet::new());
        }
        seen.1.insert((user, requests));
    }
}

/// A nonce for an admission (random bits of a v7 UUID).
fn nonce() -> u64 {
    uuid::Uuid::now_v7().as_u128() as u64
}

#[derive(Debug, Default)]
struct Counters {
    tokens: HashMap<(UserId, NaiveDate), u64>,
    day_requests: HashMap<(UserId, NaiveDate), u32>,
    /// Each user's admissions within the sliding minute, oldest first.
    window: HashMap<UserId, VecDeque<(i64, u64)>>,
    /// The day / minute up to which past counters were last swept out.
    tokens_swept: Option<NaiveDate>,
    requests_swept: Option<i64>,
}

/// Counters in this process's memory, behind one mutex (held for microseconds, never
/// across an await). For one node (SQLite): replicas would each count apart.
#[derive(Debug, Default)]
pub struct InProcessLimiter {
    counters: Mutex<Counters>,
    /// Sandbox sessions' counters (`session`).
    sessions: Mutex<session::MemorySessions>,
}

impl InProcessLimiter {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        let mut guard = match self.counters.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

/// Drops admissions that left the window ending at `now_us`.
fn trim(log: &mut VecDeque<(i64, u64)>, now_us: i64) {
    while log.front().is_some_and(|(at, _)| *at <= now_us - MINUTE_US) {
        log.pop_front();
    }
}

#[async_trait]
impl Limiter for InProcessLimiter {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> LimitResult<()> {
        Ok(())
    }

    async fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64) -> LimitResult<()> {
        self.with(|c| {
            c.tokens.entry((user, day)).or_insert(used);
        });
        Ok(())
    }

    async fn reserve_tokens(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<TokenReservation, Refusal>> {
        let day = now.date_naive();
        Ok(self.with(|c| {
            // Yesterday's counters are never needed again (swept once per day, not per call).
            if c.tokens_swept != Some(day) {
                c.tokens.retain(|(_, d), _| *d >= day);
                c.tokens_swept = Some(day);
            }
            let used = c.tokens.entry((user, day)).or_insert(0);
            let remaining = limit.saturating_sub(*used);
            if at_least > remaining || remaining == 0 {
                return Err(Refusal::QuotaExhausted { remaining, retry_after_secs: seconds_to_midnight(now) });
            }
            let tokens = at_most.max(at_least).min(remaining);
            *used += tokens;
            Ok(TokenReservation { user, day, tokens, remaining: remaining - tokens })
        }))
    }

    async fn settle_tokens(&self, r: &TokenReservation, actual: u64) -> LimitResult<()> {
        self.with(|c| {
            let used = c.tokens.entry((r.user, r.day)).or_insert(0);
            *used = used.saturating_sub(r.tokens) + actual;
        });
        Ok(())
    }

    async fn tokens_used(&self, user: UserId, day: NaiveDate) -> LimitResult<u64> {
        Ok(self.with(|c| c.tokens.get(&(user, day)).copied().unwrap_or(0)))
    }

    async fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32) -> LimitResult<()> {
        self.with(|c| {
            c.day_requests.entry((user, day)).or_insert(used);
        });
        Ok(())
    }

    async fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> LimitResult<Result<RequestAdmission, Refusal>> {
        let (day, now_us) = (now.date_naive(), micros(now));
        Ok(self.with(|c| {
            // Idle users' windows and past days are swept once per minute, not per call.
            let minute = now_us.div_euclid(MINUTE_US);
            if c.requests_swept != Some(minute) {
                c.window.retain(|_, log| {
                    trim(log, now_us);
                    !log.is_empty()
                });
                c.day_requests.retain(|(_, d), _| *d >= day);
                c.requests_swept = Some(minute);
            }
            let in_day = c.day_requests.get(&(user, day)).copied().unwrap_or(0);
            let log = c.window.entry(user).or_default();
            trim(log, now_us);
            let in_minute = u32::try_from(log.len()).unwrap_or(u32::MAX);
            if in_day >= per_day {
                return Err(Refusal::RateLimited {
                    window: "day",
                    limit: per_day,
                    retry_after_secs: seconds_to_midnight(now),
                });
            }
            if in_minute >= per_minute {
                let retry = retry_after_window(log.front().map(|(at, _)| *at), now_us);
                return Err(Refusal::RateLimited { window: "minute", limit: per_minute, retry_after_secs: retry });
            }
            let nonce = nonce();
            log.push_back((now_us, nonce));
            c.day_requests.insert((user, day), in_day + 1);
            Ok(RequestAdmission {
                user,
                day,
                at_us: now_us,
                nonce,
                remaining_minute: per_minute - in_minute - 1,
                remaining_day: per_day - in_day - 1,
            })
        }))
    }

    async fn refund_request(&self, a: &RequestAdmission) -> LimitResult<()> {
        self.with(|c| {
            if let Some(n) = c.day_requests.get_mut(&(a.user, a.day)) {
                *n = n.saturating_sub(1);
            }
            if let Some(log) = c.window.get_mut(&a.user) {
                if let Some(i) = log.iter().position(|e| *e == (a.at_us, a.nonce)) {
                    log.remove(i);
                }
            }
        });
        Ok(())
    }

    async fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> LimitResult<(u32, u32)> {
        let now_us = micros(now);
        Ok(self.with(|c| {
            let minute =
                c.window.get(&user).map_or(0, |log| log.iter().filter(|(at, _)| *at > now_us - MINUTE_US).count());
            let day = c.day_requests.get(&(user, now.date_naive())).copied().unwrap_or(0);
            (u32::try_from(minute).unwrap_or(u32::MAX), day)
        }))
    }
}

/// The counters in PostgreSQL (tables `limit_tokens`, `limit_requests`), for replicas on
/// one database without Redis. Every call is bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct PostgresLimiter {
    counters: PgLimits,
    timeout: Duration,
}

impl PostgresLimiter {
    /// A limiter on the database at `url` (its own small pool, dialled lazily).
    pub fn new(url: &str, timeout: Duration) -> LimitResult<Self> {
        let counters = PgLimits::connect(url, timeout).map_err(|e| pg_down(&e.to_string()))?;
        Ok(Self { counters, timeout })
    }

    async fn call<T>(&self, f: impl std::future::Future<Output = keygate_store::StoreResult<T>>) -> LimitResult<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(pg_down(&e.to_string())),
            Err(_) => Err(pg_down(&format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }
}

fn pg_down(reason: &str) -> Unavailable {
    Unavailable { backend: "postgres", reason: reason.to_owned() }
}

fn admission_from(
    user: UserId,
    day: NaiveDate,
    at_us: i64,
    counts: RequestCounts,
    per_minute: u32,
    per_day: u32,
) -> RequestAdmission {
    RequestAdmission {
        user,
        day,
        at_us,
        nonce: 0,
        remaining_minute: per_minute.saturating_sub(counts.in_window),
        remaining_day: per_day.saturating_sub(counts.today),
    }
}

/// The refusal for counters that did not admit a call.
pub(crate) fn refusal_from(counts: RequestCounts, now: DateTime<Utc>, per_minute: u32, per_day: u32) -> Refusal {
    if counts.today >= per_day {
        Refusal::RateLimited { window: "day", limit: per_day, retry_after_secs: seconds_to_midnight(now) }
    } else {
        Refusal::RateLimited {
            window: "minute",
            limit: per_minute,
            retry_after_secs: retry_after_window(counts.oldest_us, micros(now)),
        }
    }
}

#[async_trait]
impl Limiter for PostgresLimiter {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> LimitResult<()> {
        self.call(self.counters.ping()).await
    }

    async fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64) -> LimitResult<()> {
        self.call(self.counters.seed_tokens(user.as_uuid(), day, used)).await
    }

    async fn reserve_tokens(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<TokenReservation, Refusal>> {
        let day = now.date_naive();
        let at_least = at_least.max(1);
        let want = at_most.max(at_least);
        let taken = self.call(self.counters.reserve_tokens(user.as_uuid(), day, limit, at_least, want)).await?;
        Ok(match taken {
            Ok(r) => Ok(TokenReservation { user, day, tokens: r.tokens, remaining: limit.saturating_sub(r.used) }),
            Err(used) => Err(Refusal::QuotaExhausted {
                remaining: limit.saturating_sub(used),
                retry_after_secs: seconds_to_midnight(now),
            }),
        })
    }

    async fn settle_tokens(&self, r: &TokenReservation, actual: u64) -> LimitResult<()> {
        self.call(self.counters.settle_tokens(r.user.as_uuid(), r.day, r.tokens, actual)).await
    }

    async fn tokens_used(&self, user: UserId, day: NaiveDate) -> LimitResult<u64> {
        self.call(self.counters.tokens_used(user.as_uuid(), day)).await
    }

    async fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32) -> LimitResult<()> {
        self.call(self.counters.seed_requests(user.as_uuid(), day, used)).await
    }

    async fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> LimitResult<Result<RequestAdmission, Refusal>> {
        let (day, now_us) = (now.date_naive(), micros(now));
        let counted =
            self.call(self.counters.admit_request(user.as_uuid(), day, now_us, MINUTE_US, per_minute, per_day)).await?;
        Ok(match counted {
            Ok(counts) => Ok(admission_from(user, day, now_us, counts, per_minute, per_day)),
            Err(counts) => Err(refusal_from(counts, now, per_minute, per_day)),
        })
    }

    async fn refund_request(&self, a: &RequestAdmission) -> LimitResult<()> {
        self.call(self.counters.refund_request(a.user.as_uuid(), a.day, a.at_us)).await
    }

    async fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> LimitResult<(u32, u32)> {
        let counts =
            self.call(self.counters.requests_used(user.as_uuid(), now.date_naive(), micros(now), MINUTE_US)).await?;
        Ok((counts.in_window, counts.today))
    }
}
