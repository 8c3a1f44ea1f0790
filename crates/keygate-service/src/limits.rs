//! Admission control. Two kinds of limit, both check-and-reserve in one step:
//!
//! - the **demo allowance**: tokens per user per UTC day on operator-shared keys. A call
//!   reserves its worst case up front (its input and everything it may generate), capped
//!   to what is left of the day (the call then goes out with its output maximum lowered
//!   to fit), and settles to the provider's real count afterwards (or is refunded if it
//!   fails), so concurrent calls can never overspend the day;
//! - **tier rate limits** on platform keys: requests per minute and per day.
//!
//! [`Limiter`] is the seam; [`InProcessLimiter`] keeps counters in memory (one process).
//! Counters are seeded from recorded usage the first time a user is seen on a day, so a
//! restart does not hand out a second allowance.

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use keygate_core::UserId;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

/// A refused admission, with when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The demo allowance cannot fit this call today.
    QuotaExhausted { remaining: u64, retry_after_secs: u64 },
    /// A tier rate limit is reached.
    RateLimited { window: &'static str, limit: u32, retry_after_secs: u64 },
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
    pub minute: i64,
    pub remaining_minute: u32,
    pub remaining_day: u32,
}

pub trait Limiter: Send + Sync + fmt::Debug {
    /// Whether today's demo counter for `user` is loaded (else seed it first).
    fn tokens_seeded(&self, user: UserId, day: NaiveDate) -> bool;
    /// Loads a day's demo usage recorded before this process saw it (no-op if loaded).
    fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64);
    /// Reserves as many tokens as fit under `limit` today, up to `at_most`, if at least
    /// `at_least` fit; in one step, so concurrent calls never reserve more than the day
    /// has.
    fn reserve_tokens(
        &self,
        user: UserId,
        day: NaiveDate,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> Result<TokenReservation, Refusal>;
    /// Replaces a reservation with what was really used (0 refunds it).
    fn settle_tokens(&self, reservation: &TokenReservation, actual: u64);
    /// Tokens used today, reservations included.
    fn tokens_used(&self, user: UserId, day: NaiveDate) -> u64;

    fn requests_seeded(&self, user: UserId, day: NaiveDate) -> bool;
    fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32);
    /// Counts one request if both windows allow it.
    fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> Result<RequestAdmission, Refusal>;
    /// Takes back an admitted request that failed before the provider did any work.
    fn refund_request(&self, admission: &RequestAdmission);
    /// (this minute, today) for `user`.
    fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> (u32, u32);
}

#[derive(Debug, Default)]
struct Counters {
    tokens: HashMap<(UserId, NaiveDate), u64>,
    day_requests: HashMap<(UserId, NaiveDate), u32>,
    minute_requests: HashMap<(UserId, i64), u32>,
    /// The day / minute up to which past counters were last swept out.
    tokens_swept: Option<NaiveDate>,
    requests_swept: Option<i64>,
}

/// Counters in this process's memory, behind one mutex (held for microseconds, never
/// across an await).
#[derive(Debug, Default)]
pub struct InProcessLimiter {
    counters: Mutex<Counters>,
}

/// Seconds until the next UTC midnight (when demo allowances reset), at least 1.
pub(crate) fn seconds_to_midnight(now: DateTime<Utc>) -> u64 {
    u64::from(86_400 - now.num_seconds_from_midnight()).max(1)
}

fn minute_index(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(60)
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

impl Limiter for InProcessLimiter {
    fn tokens_seeded(&self, user: UserId, day: NaiveDate) -> bool {
        self.with(|c| c.tokens.contains_key(&(user, day)))
    }

    fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64) {
        self.with(|c| {
            c.tokens.entry((user, day)).or_insert(used);
        });
    }

    fn reserve_tokens(
        &self,
        user: UserId,
        day: NaiveDate,
        limit: u64,
        at_least: u64,
        at_most: u64,
    ) -> Result<TokenReservation, Refusal> {
        let now = Utc::now();
        self.with(|c| {
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
        })
    }

    fn settle_tokens(&self, r: &TokenReservation, actual: u64) {
        self.with(|c| {
            let used = c.tokens.entry((r.user, r.day)).or_insert(0);
            *used = used.saturating_sub(r.tokens) + actual;
        });
    }

    fn tokens_used(&self, user: UserId, day: NaiveDate) -> u64 {
        self.with(|c| c.tokens.get(&(user, day)).copied().unwrap_or(0))
    }

    fn requests_seeded(&self, user: UserId, day: NaiveDate) -> bool {
        self.with(|c| c.day_requests.contains_key(&(user, day)))
    }

    fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32) {
        self.with(|c| {
            c.day_requests.entry((user, day)).or_insert(used);
        });
    }

    fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> Result<RequestAdmission, Refusal> {
        let (day, minute) = (now.date_naive(), minute_index(now));
        self.with(|c| {
            // Past windows are swept once per minute, not per call.
            if c.requests_swept != Some(minute) {
                c.minute_requests.retain(|(_, m), _| *m >= minute);
                c.day_requests.retain(|(_, d), _| *d >= day);
                c.requests_swept = Some(minute);
            }
            let in_day = c.day_requests.get(&(user, day)).copied().unwrap_or(0);
            let in_minute = c.minute_requests.get(&(user, minute)).copied().unwrap_or(0);
            if in_day >= per_day {
                return Err(Refusal::RateLimited {
                    window: "day",
                    limit: per_day,
                    retry_after_secs: seconds_to_midnight(now),
                });
            }
            if in_minute >= per_minute {
                let retry = u64::from(60 - now.second()).max(1);
                return Err(Refusal::RateLimited { window: "minute", limit: per_minute, retry_after_secs: retry });
            }
            c.day_requests.insert((user, day), in_day + 1);
            c.minute_requests.insert((user, minute), in_minute + 1);
            Ok(RequestAdmission {
                user,
                day,
                minute,
                remaining_minute: per_minute - in_minute - 1,
                remaining_day: per_day - in_day - 1,
            })
        })
    }

    fn refund_request(&self, a: &RequestAdmission) {
        self.with(|c| {
            if let Some(n) = c.day_requests.get_mut(&(a.user, a.day)) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = c.minute_requests.get_mut(&(a.user, a.minute)) {
                *n = n.saturating_sub(1);
            }
        });
    }

    fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> (u32, u32) {
        self.with(|c| {
            let minute = c.minute_requests.get(&(user, minute_index(now))).copied().unwrap_or(0);
            let day = c.day_requests.get(&(user, now.date_naive())).copied().unwrap_or(0);
            (minute, day)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reservations_never_overspend_and_settle_to_the_real_count() {
        let l = InProcessLimiter::default();
        let (u, day) = (UserId::new(), Utc::now().date_naive());
        let r = l.reserve_tokens(u, day, 1000, 600, 600).unwrap();
        assert_eq!(r.remaining, 400);
        assert!(matches!(
            l.reserve_tokens(u, day, 1000, 600, 600),
            Err(Refusal::QuotaExhausted { remaining: 400, .. })
        ));
        l.settle_tokens(&r, 100);
        assert_eq!(l.tokens_used(u, day), 100);
        let r2 = l.reserve_tokens(u, day, 1000, 600, 600).unwrap();
        l.settle_tokens(&r2, 0);
        assert_eq!(l.tokens_used(u, day), 100, "a failed call is refunded");
    }

    #[test]
    fn a_reservation_is_capped_to_what_is_left() {
        let l = InProcessLimiter::default();
        let (u, day) = (UserId::new(), Utc::now().date_naive());
        let all = l.reserve_tokens(u, day, 1000, 10, u64::MAX).unwrap();
        assert_eq!((all.tokens, all.remaining), (1000, 0), "no maximum: what is left");
        l.settle_tokens(&all, 700);
        let capped = l.reserve_tokens(u, day, 1000, 10, 5000).unwrap();
        assert_eq!(capped.tokens, 300, "more than is left: capped");
        assert!(l.reserve_tokens(u, day, 1000, 1, 1).is_err(), "nothing left");
    }

    #[test]
    fn concurrent_reservations_fit_the_allowance() {
        let l = Arc::new(InProcessLimiter::default());
        let (u, day) = (UserId::new(), Utc::now().date_naive());
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.reserve_tokens(u, day, 10_000, 300, 300).is_ok())
            })
            .collect();
        let admitted = handles.into_iter().map(|h| h.join().unwrap_or(false)).filter(|ok| *ok).count();
        assert_eq!(admitted, 33, "10,000 / 300");
        assert!(l.tokens_used(u, day) <= 10_000);
    }

    #[test]
    fn rate_limits_let_exactly_n_through_per_window() {
        let l = InProcessLimiter::default();
        let u = UserId::new();
        let now = Utc::now();
        for _ in 0..10 {
            l.admit_request(u, now, 10, 100).unwrap();
        }
        let refused = l.admit_request(u, now, 10, 100).unwrap_err();
        assert!(matches!(refused, Refusal::RateLimited { window: "minute", limit: 10, .. }));
        let later = now + chrono::Duration::minutes(1);
        let a = l.admit_request(u, later, 10, 100).unwrap();
        assert_eq!(a.remaining_day, 89);
        l.refund_request(&a);
        assert_eq!(l.requests_used(u, later), (0, 10));
        l.seed_requests(UserId::new(), now.date_naive(), 5);
        let other = UserId::new();
        l.seed_requests(other, now.date_naive(), 100);
        assert!(matches!(l.admit_request(other, now, 10, 100), Err(Refusal::RateLimited { window: "day", .. })));
    }
}
