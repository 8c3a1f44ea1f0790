//! A sandbox session's own caps: requests and tokens over the session's life, counted
//! with the same backends, the same check-and-reserve in one step, as the demo
//! allowance and tier limits (so a session's caps hold across replicas). A call reserves
//! one request and, when the session caps tokens, its worst case capped to what is left
//! (the call then goes out with its output maximum lowered to fit); it settles to the
//! provider's count when it ends, and a failed call gives its request back.
//!
//! A session's counters are seeded from its recorded usage ("set if absent") the first
//! time a process admits one of its calls; a backend that holds no counter for it (never
//! seeded here, or lost: Redis restarted empty) answers [`SessionRefusal::Unseeded`]
//! rather than count from zero, and the gateway seeds and asks again.
//!
//! Not for: deciding which providers a session may call (`gateway`), or storing sessions.

use super::{InProcessLimiter, LimitResult, PostgresLimiter};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keygate_core::TokenId;
use keygate_store::limits::{SessionCounts, SessionNotTaken};
use std::collections::HashMap;

/// The most a session may cap (requests or tokens): far beyond any real use, and exact in
/// every backend (Lua numbers print integers exactly below 10^14).
pub const MAX_SESSION_CAP: u64 = 1_000_000_000_000;

/// A session's caps, as its token carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCaps {
    pub session: TokenId,
    /// When the session ends: its counters are not needed after.
    pub expires_at: DateTime<Utc>,
    pub max_requests: Option<u64>,
    pub max_tokens: Option<u64>,
}

/// What a session has used: requests admitted, tokens used (reservations included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionUse {
    pub requests: u64,
    pub tokens: u64,
}

/// One admitted call of a session, until it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReservation {
    pub session: TokenId,
    /// Tokens held for the call (0 when the session caps no tokens).
    pub tokens: u64,
    /// The session's counters after this admission.
    pub used: SessionUse,
}

/// Why a session's call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// `max_requests` calls were admitted already.
    Requests { limit: u64 },
    /// Fewer tokens are left than the call needs at least.
    Tokens { limit: u64, remaining: u64 },
    /// The backend holds no counter for the session: seed it and ask again.
    Unseeded,
}

/// The session half of every [`super::Limiter`].
#[async_trait]
pub trait SessionLimiter: Send + Sync {
    /// Sets a session's counters (from its recorded usage) unless they exist.
    async fn seed_session(&self, session: TokenId, expires_at: DateTime<Utc>, used: SessionUse) -> LimitResult<()>;
    /// Admits one call: one request if `max_requests` allows, and as many tokens as fit
    /// under `max_tokens`, up to `at_most`, if at least `at_least` fit (no tokens held
    /// when the session caps none); in one step, so concurrent calls never pass a cap.
    async fn admit_session(
        &self,
        caps: &SessionCaps,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<SessionReservation, SessionRefusal>>;
    /// Replaces a reservation's tokens with what was really used, and gives the request
    /// back when `refund_request` (the call failed before the provider did any work).
    async fn settle_session(
        &self,
        reservation: &SessionReservation,
        actual: u64,
        refund_request: bool,
    ) -> LimitResult<()>;
    /// A session's counters, `None` when the backend holds none.
    async fn session_used(&self, session: TokenId) -> LimitResult<Option<SessionUse>>;
}

/// What an admission may take: `(at_least, want)` with `want` capped to the session's
/// token cap (0 and 0 when it caps none).
pub(super) fn bounds(caps: &SessionCaps, at_least: u64, at_most: u64) -> (u64, u64) {
    match caps.max_tokens {
        None => (0, 0),
        Some(max) => {
            let at_least = at_least.max(1);
            (at_least, at_most.max(at_least).min(max.max(at_least)))
        }
    }
}

/// The refusal for counters that admitted nothing.
pub(super) fn refusal(caps: &SessionCaps, used: SessionUse) -> SessionRefusal {
    match (caps.max_requests, caps.max_tokens) {
        (Some(limit), _) if used.requests >= limit => SessionRefusal::Requests { limit },
        (_, Some(limit)) => SessionRefusal::Tokens { limit, remaining: limit.saturating_sub(used.tokens) },
        // Neither cap explains it: the counters moved between the two reads.
        (Some(limit), None) => SessionRefusal::Requests { limit },
        (None, None) => SessionRefusal::Unseeded,
    }
}

/// Sessions' counters in this process (SQLite, one node), with when each session ends.
#[derive(Debug, Default)]
pub(super) struct MemorySessions {
    counts: HashMap<TokenId, (SessionUse, DateTime<Utc>)>,
    /// The minute up to which ended sessions were last swept out.
    swept: Option<i64>,
}

impl MemorySessions {
    fn sweep(&mut self, now: DateTime<Utc>) {
        let minute = now.timestamp().div_euclid(60);
        if self.swept != Some(minute) {
            self.counts.retain(|_, (_, expires)| *expires + chrono::Duration::hours(1) > now);
            self.swept = Some(minute);
        }
    }
}

#[async_trait]
impl SessionLimiter for InProcessLimiter {
    async fn seed_session(&self, session: TokenId, expires_at: DateTime<Utc>, used: SessionUse) -> LimitResult<()> {
        self.with_sessions(|s| {
            s.sweep(Utc::now());
            s.counts.entry(session).or_insert((used, expires_at));
        });
        Ok(())
    }

    async fn admit_session(
        &self,
        caps: &SessionCaps,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<SessionReservation, SessionRefusal>> {
        let (at_least, want) = bounds(caps, at_least, at_most);
        Ok(self.with_sessions(|s| {
            let Some((used, _)) = s.counts.get_mut(&caps.session) else {
                return Err(SessionRefusal::Unseeded);
            };
            if caps.max_requests.is_some_and(|max| used.requests >= max) {
                return Err(refusal(caps, *used));
            }
            let mut tokens = 0;
            if let Some(max) = caps.max_tokens {
                let left = max.saturating_sub(used.tokens);
                if left == 0 || left < at_least {
                    return Err(refusal(caps, *used));
                }
                tokens = want.min(left);
            }
            used.requests += 1;
            used.tokens += tokens;
            Ok(SessionReservation { session: caps.session, tokens, used: *used })
        }))
    }

    async fn settle_session(&self, r: &SessionReservation, actual: u64, refund_request: bool) -> LimitResult<()> {
        self.with_sessions(|s| {
            if let Some((used, _)) = s.counts.get_mut(&r.session) {
                used.tokens = used.tokens.saturating_sub(r.tokens) + actual;
                if refund_request {
                    used.requests = used.requests.saturating_sub(1);
                }
            }
        });
        Ok(())
    }

    async fn session_used(&self, session: TokenId) -> LimitResult<Option<SessionUse>> {
        Ok(self.with_sessions(|s| s.counts.get(&session).map(|(used, _)| *used)))
    }
}

impl InProcessLimiter {
    fn with_sessions<T>(&self, f: impl FnOnce(&mut MemorySessions) -> T) -> T {
        let mut guard = self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

fn from_counts(c: SessionCounts) -> SessionUse {
    SessionUse { requests: c.requests, tokens: c.tokens }
}

#[async_trait]
impl SessionLimiter for PostgresLimiter {
    async fn seed_session(&self, session: TokenId, expires_at: DateTime<Utc>, used: SessionUse) -> LimitResult<()> {
        self.call(self.counters.seed_session(session.as_uuid(), expires_at, used.requests, used.tokens)).await
    }

    async fn admit_session(
        &self,
        caps: &SessionCaps,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<SessionReservation, SessionRefusal>> {
        let (at_least, want) = bounds(caps, at_least, at_most);
        let taken = self
            .call(self.counters.admit_session(
                caps.session.as_uuid(),
                caps.max_requests,
                caps.max_tokens,
                at_least,
                want,
            ))
            .await?;
        Ok(match taken {
            Ok(t) => Ok(SessionReservation { session: caps.session, tokens: t.tokens, used: from_counts(t.counts) }),
            Err(SessionNotTaken::Capped(counts)) => Err(refusal(caps, from_counts(counts))),
            Err(SessionNotTaken::Unseeded) => Err(SessionRefusal::Unseeded),
        })
    }

    async fn settle_session(&self, r: &SessionReservation, actual: u64, refund_request: bool) -> LimitResult<()> {
        self.call(self.counters.settle_session(r.session.as_uuid(), r.tokens, actual, refund_request)).await
    }

    async fn session_used(&self, session: TokenId) -> LimitResult<Option<SessionUse>> {
        Ok(self.call(self.counters.session_used(session.as_uuid())).await?.map(from_counts))
    }
}
