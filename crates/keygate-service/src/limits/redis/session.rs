//! A session's counters in Redis: one hash per session (`req`, `tok`), living until an
//! hour after the session ends, each operation one Lua script. A hash that is not there
//! (never seeded, or lost) is reported, never counted from zero.

use super::super::session::{
    bounds, refusal, SessionCaps, SessionLimiter, SessionRefusal, SessionReservation, SessionUse,
};
use super::{down, LimitResult, RedisLimiter};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keygate_core::TokenId;
use redis::Script;
use std::sync::LazyLock;

/// KEYS[1] the session's hash. ARGV: requests, tokens, ttl.
static SEED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'req', ARGV[1], 'tok', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return 1
",
    )
});

/// KEYS[1] the session's hash. ARGV: max requests (-1: none), max tokens (-1: none),
/// at_least, want. Returns {1, taken, requests, tokens}, {0, requests, tokens} (a cap is
/// reached) or {-1} (no counters).
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local req = tonumber(redis.call('HGET', KEYS[1], 'req') or '0')
local tok = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
local max_req, max_tok = tonumber(ARGV[1]), tonumber(ARGV[2])
if max_req >= 0 and req >= max_req then return {0, req, tok} end
local take = 0
if max_tok >= 0 then
  local left = max_tok - tok
  if left <= 0 or left < tonumber(ARGV[3]) then return {0, req, tok} end
  take = tonumber(ARGV[4])
  if take > left then take = left end
end
req = redis.call('HINCRBY', KEYS[1], 'req', 1)
tok = redis.call('HINCRBY', KEYS[1], 'tok', take)
return {1, take, req, tok}
",
    )
});

/// KEYS[1] the session's hash. ARGV: reserved, actual, requests to give back (0 or 1).
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local tok = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0') - tonumber(ARGV[1])
if tok < 0 then tok = 0 end
local req = tonumber(redis.call('HGET', KEYS[1], 'req') or '0') - tonumber(ARGV[3])
if req < 0 then req = 0 end
redis.call('HSET', KEYS[1], 'tok', tok + tonumber(ARGV[2]), 'req', req)
return 1
",
    )
});

/// KEYS[1] the session's hash. Returns {requests, tokens} or {-1}.
static USED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
return {tonumber(redis.call('HGET', KEYS[1], 'req') or '0'), tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')}
",
    )
});

fn used(requests: i64, tokens: i64) -> SessionUse {
    SessionUse { requests: requests.max(0) as u64, tokens: tokens.max(0) as u64 }
}

fn cap(n: Option<u64>) -> i64 {
    n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl RedisLimiter {
    fn session_key(&self, session: TokenId) -> String {
        format!("{}{{s:{}}}", self.prefix, session.as_uuid().simple())
    }
}

#[async_trait]
impl SessionLimiter for RedisLimiter {
    async fn seed_session(&self, session: TokenId, expires_at: DateTime<Utc>, use_: SessionUse) -> LimitResult<()> {
        // The counters outlive the session by an hour (a replica whose clock lags still
        // finds them), and live at least a minute.
        let ttl = (expires_at - Utc::now()).num_seconds().max(60) + 3_600;
        let mut invocation = SEED.prepare_invoke();
        invocation.key(self.session_key(session)).arg(use_.requests).arg(use_.tokens).arg(ttl);
        self.run::<i64>(invocation).await.map(|_| ())
    }

    async fn admit_session(
        &self,
        caps: &SessionCaps,
        at_least: u64,
        at_most: u64,
    ) -> LimitResult<Result<SessionReservation, SessionRefusal>> {
        let (at_least, want) = bounds(caps, at_least, at_most);
        let mut invocation = ADMIT.prepare_invoke();
        invocation
            .key(self.session_key(caps.session))
            .arg(cap(caps.max_requests))
            .arg(cap(caps.max_tokens))
            .arg(at_least)
            .arg(want);
        let answer: Vec<i64> = self.run(invocation).await?;
        Ok(match answer.as_slice() {
            [1, taken, requests, tokens] => Ok(SessionReservation {
                session: caps.session,
                tokens: (*taken).max(0) as u64,
                used: used(*requests, *tokens),
            }),
            [0, requests, tokens] => Err(refusal(caps, used(*requests, *tokens))),
            [-1] => Err(SessionRefusal::Unseeded),
            _ => return Err(down("the session admit script answered unexpectedly")),
        })
    }

    async fn settle_session(&self, r: &SessionReservation, actual: u64, refund_request: bool) -> LimitResult<()> {
        let mut invocation = SETTLE.prepare_invoke();
        invocation.key(self.session_key(r.session)).arg(r.tokens).arg(actual).arg(u8::from(refund_request));
        self.run::<i64>(invocation).await.map(|_| ())
    }

    async fn session_used(&self, session: TokenId) -> LimitResult<Option<SessionUse>> {
        let mut invocation = USED.prepare_invoke();
        invocation.key(self.session_key(session));
        let answer: Vec<i64> = self.run(invocation).await?;
        match answer.as_slice() {
            [requests, tokens] => Ok(Some(used(*requests, *tokens))),
            [-1] => Ok(None),
            _ => Err(down("the session usage script answered unexpectedly")),
        }
    }
}
