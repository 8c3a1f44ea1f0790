//! The counters in Redis, exact across any number of replicas. Each operation is one
//! server-side Lua script (check-and-reserve in one round trip; settle; refund), sent as
//! `EVALSHA` and loaded once when the server does not know it yet. Keys expire by
//! themselves a little after their window (the day's counters an hour after midnight, the
//! minute's log a second after its last admission), and share a hash tag per user so a
//! Redis Cluster keeps one user's keys in one slot.
//!
//! The connection is a [`ConnectionManager`] (it reconnects by itself), dialled at the
//! first call rather than at start-up so keygate starts while Redis is down. Every call is
//! bounded by the limits timeout: an unreachable Redis answers [`Unavailable`] quickly,
//! never a hanging request.

mod session;

use super::{
    micros, refusal_from, seconds_to_midnight, LimitResult, Limiter, Refusal, RequestAdmission, TokenReservation,
    Unavailable, MINUTE_US,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use keygate_core::UserId;
use keygate_store::limits::RequestCounts;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use std::fmt;
use std::time::Duration;
use tokio::sync::OnceCell;

/// KEYS[1] the day's token counter. ARGV: limit, at_least, want, ttl.
/// Returns {1, taken, used after}, {0, used}, or {-1} when the counter does not exist
/// (never seeded, or lost: Redis restarted empty or evicted it).
const RESERVE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return {-1} end
local used = tonumber(current)
local limit, at_least, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local remaining = limit - used
if remaining < at_least or remaining <= 0 then return {0, used} end
local take = want
if take > remaining then take = remaining end
used = redis.call('INCRBY', KEYS[1], take)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, take, used}
";

/// KEYS[1] the day's token counter. ARGV: reserved, actual, ttl. A counter that is gone
/// stays gone (the next admission reseeds it from recorded usage, this call included).
const SETTLE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local used = tonumber(current) - tonumber(ARGV[1])
if used < 0 then used = 0 end
redis.call('SET', KEYS[1], used + tonumber(ARGV[2]), 'EX', ARGV[3])
return 1
";

/// KEYS[1] the minute's log (a sorted set), KEYS[2] the day's request counter.
/// ARGV: now (µs), the window's start (µs, exclusive), per_window, per_day, member, day
/// ttl, the log's ttl (ms). Times stay strings: Lua would print them with 14 digits.
/// Returns {admitted, in window, today, oldest (µs) or -1}, or {-1, 0, 0, -1} when the
/// day's counter does not exist (never seeded, or lost).
const ADMIT: &str = r"
local current = redis.call('GET', KEYS[2])
if not current then return {-1, 0, 0, -1} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local in_window = redis.call('ZCARD', KEYS[1])
local today = tonumber(current)
local ok = 0
if today < tonumber(ARGV[4]) and in_window < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  today = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  in_window = in_window + 1
  ok = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first = -1
if oldest[2] then first = tonumber(oldest[2]) end
return {ok, in_window, today, first}
";

/// KEYS[1] the minute's log, KEYS[2] the day's request counter. ARGV: member.
const REFUND: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
local today = tonumber(redis.call('GET', KEYS[2]) or '0')
if today > 0 then redis.call('DECR', KEYS[2]) end
return 1
";

/// KEYS[1] the minute's log, KEYS[2] the day's request counter. ARGV: the window's start
/// (µs, exclusive).
const USED: &str = r"
local count = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf')
return {count, tonumber(redis.call('GET', KEYS[2]) or '0')}
";

pub struct RedisLimiter {
    client: Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    reserve: Script,
    settle: Script,
    admit: Script,
    refund: Script,
    used: Script,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisLimiter").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

fn down(reason: impl fmt::Display) -> Unavailable {
    Unavailable { backend: "redis", reason: keygate_vault::redact::scrub(&reason.to_string()).into_owned() }
}

/// A day's counters live an hour past midnight (a replica whose clock lags a little still
/// finds them).
fn day_ttl(now: DateTime<Utc>) -> u64 {
    seconds_to_midnight(now) + 3_600
}

impl RedisLimiter {
    /// A limiter on the Redis at `url`, its keys under `prefix` (`keygate:` in
    /// production; tests use one of their own). Nothing is dialled yet.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> LimitResult<Self> {
        let client = Client::open(url).map_err(|e| down(format!("the Redis URL is not valid: {e}")))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
            timeout,
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            admit: Script::new(ADMIT),
            refund: Script::new(REFUND),
            used: Script::new(USED),
        })
    }

    async fn connection(&self) -> LimitResult<ConnectionManager> {
        let dial = self.connection.get_or_try_init(|| async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout)
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config).await.map_err(down)
        });
        match tokio::time::timeout(self.timeout, dial).await {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(down(format!("no connection within {} ms", self.timeout.as_millis()))),
        }
    }

    /// Runs `script` within the timeout.
    async fn run<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> LimitResult<T> {
        let started = tokio::time::Instant::now();
        let mut con = self.connection().await?;
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match tokio::time::timeout(left, invocation.invoke_async::<T>(&mut con)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(down(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    fn key(&self, user: UserId, what: &str) -> String {
        format!("{}{{u:{}}}:{what}", self.prefix, user.as_uuid().simple())
    }

    fn tokens_key(&self, user: UserId, day: NaiveDate) -> String {
        self.key(user, &format!("tok:{day}"))
    }

    fn requests_key(&self, user: UserId, day: NaiveDate) -> String {
        self.key(user, &format!("req:{day}"))
    }

    fn window_key(&self, user: UserId) -> String {
        self.key(user, "rpm")
    }

    async fn set_if_absent(&self, key: String, value: u64, ttl: u64) -> LimitResult<()> {
        let started = tokio::time::Instant::now();
        let mut con = self.connection().await?;
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("EX").arg(ttl);
        match tokio::time::timeout(left, cmd.query_async::<Option<String>>(&mut con)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(down(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }
}

fn member(a: &RequestAdmission) -> String {
    format!("{}-{:x}", a.at_us, a.nonce)
}

#[async_trait]
impl Limiter for RedisLimiter {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> LimitResult<()> {
        let started = tokio::time::Instant::now();
        let mut con = self.connection().await?;
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match tokio::time::timeout(left, redis::cmd("PING").query_async::<String>(&mut con)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(down(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    async fn seed_tokens(&self, user: UserId, day: NaiveDate, used: u64) -> LimitResult<()> {
        let now = Utc::now();
        self.set_if_absent(self.tokens_key(user, day), used, day_ttl(now)).await
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
        // Lua numbers are doubles: nothing above the limit is ever needed.
        let want = at_most.max(at_least).min(limit.max(at_least));
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(self.tokens_key(user, day)).arg(limit).arg(at_least).arg(want).arg(day_ttl(now));
        let answer: Vec<i64> = self.run(invocation).await?;
        Ok(match answer.as_slice() {
            [-1] => Err(Refusal::Unseeded),
            [1, taken, used] => Ok(TokenReservation {
                user,
                day,
                tokens: (*taken).max(0) as u64,
                remaining: limit.saturating_sub((*used).max(0) as u64),
            }),
            [_, used, ..] => Err(Refusal::QuotaExhausted {
                remaining: limit.saturating_sub((*used).max(0) as u64),
                retry_after_secs: seconds_to_midnight(now),
            }),
            _ => return Err(down("the reserve script answered unexpectedly")),
        })
    }

    async fn settle_tokens(&self, r: &TokenReservation, actual: u64) -> LimitResult<()> {
        let mut invocation = self.settle.prepare_invoke();
        invocation.key(self.tokens_key(r.user, r.day)).arg(r.tokens).arg(actual).arg(day_ttl(Utc::now()));
        self.run::<i64>(invocation).await.map(|_| ())
    }

    async fn tokens_used(&self, user: UserId, day: NaiveDate) -> LimitResult<u64> {
        let started = tokio::time::Instant::now();
        let mut con = self.connection().await?;
        let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.tokens_key(user, day));
        match tokio::time::timeout(left, cmd.query_async::<Option<u64>>(&mut con)).await {
            Ok(Ok(v)) => Ok(v.unwrap_or(0)),
            Ok(Err(e)) => Err(down(e)),
            Err(_) => Err(down(format!("no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    async fn seed_requests(&self, user: UserId, day: NaiveDate, used: u32) -> LimitResult<()> {
        let now = Utc::now();
        self.set_if_absent(self.requests_key(user, day), u64::from(used), day_ttl(now)).await
    }

    async fn admit_request(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        per_minute: u32,
        per_day: u32,
    ) -> LimitResult<Result<RequestAdmission, Refusal>> {
        let (day, now_us) = (now.date_naive(), micros(now));
        let mut admission =
            RequestAdmission { user, day, at_us: now_us, nonce: super::nonce(), remaining_minute: 0, remaining_day: 0 };
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(self.window_key(user))
            .key(self.requests_key(user, day))
            .arg(now_us)
            .arg(now_us - MINUTE_US)
            .arg(per_minute)
            .arg(per_day)
            .arg(member(&admission))
            .arg(day_ttl(now))
            .arg(MINUTE_US / 1_000 + 1_000);
        let answer: Vec<i64> = self.run(invocation).await?;
        let [ok, in_window, today, oldest] = answer.as_slice() else {
            return Err(down("the admit script answered unexpectedly"));
        };
        if *ok == -1 {
            return Ok(Err(Refusal::Unseeded));
        }
        let counts = RequestCounts {
            in_window: u32::try_from(*in_window).unwrap_or(u32::MAX),
            today: u32::try_from(*today).unwrap_or(u32::MAX),
            oldest_us: (*oldest >= 0).then_some(*oldest),
        };
        if *ok != 1 {
            return Ok(Err(refusal_from(counts, now, per_minute, per_day)));
        }
        admission.remaining_minute = per_minute.saturating_sub(counts.in_window);
        admission.remaining_day = per_day.saturating_sub(counts.today);
        Ok(Ok(admission))
    }

    async fn refund_request(&self, a: &RequestAdmission) -> LimitResult<()> {
        let mut invocation = self.refund.prepare_invoke();
        invocation.key(self.window_key(a.user)).key(self.requests_key(a.user, a.day)).arg(member(a));
        self.run::<i64>(invocation).await.map(|_| ())
    }

    async fn requests_used(&self, user: UserId, now: DateTime<Utc>) -> LimitResult<(u32, u32)> {
        let mut invocation = self.used.prepare_invoke();
        invocation
            .key(self.window_key(user))
            .key(self.requests_key(user, now.date_naive()))
            .arg(micros(now) - MINUTE_US);
        let answer: Vec<i64> = self.run(invocation).await?;
        match answer.as_slice() {
            [minute, day] => Ok((u32::try_from(*minute).unwrap_or(u32::MAX), u32::try_from(*day).unwrap_or(u32::MAX))),
            _ => Err(down("the usage script answered unexpectedly")),
        }
    }
}
