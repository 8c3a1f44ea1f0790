//! One limiter suite, run against each backend: in-process, PostgreSQL and Redis. Time
//! is passed in, so windows are driven by the test's clock. A backend that is not running
//! locally is skipped with a notice (`SKIPPED (… test)`); with `CI=true` that fails.

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use keygate_core::{TokenId, UserId};
use keygate_service::limits::{InProcessLimiter, Limiter, PostgresLimiter, RedisLimiter, Refusal, Unavailable};
use keygate_service::limits::{SessionCaps, SessionRefusal, SessionUse};
use keygate_store::testdb::TestDb;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Two limiters on one backend ("two replicas"), and what keeps the backend alive.
struct Backend {
    a: Arc<dyn Limiter>,
    b: Arc<dyn Limiter>,
    shared: bool,
    _db: Option<TestDb>,
}

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_limiter(url: &str, prefix: &str, timeout: Duration) -> Arc<dyn Limiter> {
    Arc::new(RedisLimiter::new(url, prefix, timeout).unwrap())
}

async fn backend(kind: &str) -> Option<Backend> {
    match kind {
        "memory" => {
            let l: Arc<dyn Limiter> = Arc::new(InProcessLimiter::default());
            Some(Backend { a: l.clone(), b: l, shared: false, _db: None })
        }
        "postgres" => {
            let db = TestDb::postgres().await?;
            let store = keygate_store::connect(&db.location).await.unwrap();
            store.close().await;
            let url = db.url();
            let a: Arc<dyn Limiter> = Arc::new(PostgresLimiter::new(&url, TIMEOUT).unwrap());
            let b: Arc<dyn Limiter> = Arc::new(PostgresLimiter::new(&url, TIMEOUT).unwrap());
            Some(Backend { a, b, shared: true, _db: Some(db) })
        }
        _ => {
            let url = redis_url();
            let prefix = format!("keygate-test:{}:", uuid::Uuid::now_v7().simple());
            let a = redis_limiter(&url, &prefix, TIMEOUT);
            if let Err(e) = a.ping().await {
                let message =
                    format!("Redis at {url} is not reachable ({e}); start it with `redis-server --daemonize yes`");
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("CI requires Redis: {message}");
                }
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("SKIPPED (Redis test): {message}");
                }
                return None;
            }
            let b = redis_limiter(&url, &prefix, TIMEOUT);
            Some(Backend { a, b, shared: true, _db: None })
        }
    }
}

macro_rules! each_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    if let Some(b) = super::backend("memory").await { super::$name(b).await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(b) = super::backend("postgres").await { super::$name(b).await }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    if let Some(b) = super::backend("redis").await { super::$name(b).await }
                }
            }
        )+
    };
}

each_backend!(
    exactly_n_per_sliding_minute_under_concurrency,
    no_burst_across_a_minute_boundary,
    the_day_limit_holds_and_refunds_give_back,
    reservations_never_overspend_and_settle,
    a_reservation_is_capped_to_what_is_left,
    two_replicas_share_their_counts,
);

/// 12:00:59 today (a second before a minute boundary).
fn t0() -> DateTime<Utc> {
    let d = Utc::now().date_naive();
    Utc.from_utc_datetime(&d.and_hms_opt(12, 0, 59).unwrap())
}

/// A new user whose counters for `now`'s day are seeded with nothing recorded, as the
/// gateway does before its first admission of the day (Redis answers `Unseeded` for a
/// counter nobody seeded).
async fn fresh(l: &Arc<dyn Limiter>, now: DateTime<Utc>) -> UserId {
    let u = UserId::new();
    seed_day(l, u, now).await;
    u
}

async fn seed_day(l: &Arc<dyn Limiter>, u: UserId, now: DateTime<Utc>) {
    l.seed_requests(u, now.date_naive(), 0).await.unwrap();
    l.seed_tokens(u, now.date_naive(), 0).await.unwrap();
}

async fn admit_concurrently(limiters: &[Arc<dyn Limiter>], user: UserId, now: DateTime<Utc>, n: usize) -> usize {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let l = limiters[i % limiters.len()].clone();
            tokio::spawn(async move { l.admit_request(user, now, 10, 1_000).await.unwrap().is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    admitted
}

async fn exactly_n_per_sliding_minute_under_concurrency(b: Backend) {
    let (l, now) = (b.a, t0());
    let u = fresh(&l, now).await;
    assert_eq!(admit_concurrently(std::slice::from_ref(&l), u, now, 50).await, 10, "50 at once: exactly 10");
    assert_eq!(
        admit_concurrently(std::slice::from_ref(&l), u, now + Span::seconds(30), 50).await,
        0,
        "half a minute on: none"
    );
    assert_eq!(l.requests_used(u, now + Span::seconds(30)).await.unwrap(), (10, 10));
    let later = now + Span::seconds(60) + Span::microseconds(1);
    assert_eq!(admit_concurrently(std::slice::from_ref(&l), u, later, 50).await, 10, "a minute on: 10 more");
    assert_eq!(l.requests_used(u, later).await.unwrap(), (10, 20));
}

async fn no_burst_across_a_minute_boundary(b: Backend) {
    let (l, now) = (b.a, t0());
    let u = fresh(&l, now).await;
    for i in 0..10 {
        let a = l.admit_request(u, now + Span::milliseconds(i * 50), 10, 1_000).await.unwrap().unwrap();
        assert_eq!(a.remaining_minute, 9 - i as u32);
    }
    // Two seconds later, in the next calendar minute: still the same sliding minute.
    let refused = l.admit_request(u, now + Span::seconds(2), 10, 1_000).await.unwrap().unwrap_err();
    let Refusal::RateLimited { window: "minute", limit: 10, retry_after_secs } = refused else { panic!("{refused:?}") };
    assert!((57..=58).contains(&retry_after_secs), "retry after {retry_after_secs}");
    assert!(l.admit_request(u, now + Span::seconds(59), 10, 1_000).await.unwrap().is_err());
    // The first admission leaves the window 60 s after it: one slot, not ten.
    let at = now + Span::seconds(60) + Span::milliseconds(1);
    assert!(l.admit_request(u, at, 10, 1_000).await.unwrap().is_ok());
    assert!(l.admit_request(u, at, 10, 1_000).await.unwrap().is_err());
}

async fn the_day_limit_holds_and_refunds_give_back(b: Backend) {
    let (l, u, now) = (b.a, UserId::new(), t0());
    l.seed_requests(u, now.date_naive(), 98).await.unwrap();
    l.seed_requests(u, now.date_naive(), 5).await.unwrap(); // already counted: no effect
    let a = l.admit_request(u, now, 10, 100).await.unwrap().unwrap();
    assert_eq!((a.remaining_minute, a.remaining_day), (9, 1));
    let last = l.admit_request(u, now, 10, 100).await.unwrap().unwrap();
    assert_eq!(last.remaining_day, 0);
    let refused = l.admit_request(u, now, 10, 100).await.unwrap().unwrap_err();
    assert!(matches!(refused, Refusal::RateLimited { window: "day", limit: 100, .. }), "{refused:?}");
    l.refund_request(&last).await.unwrap();
    assert_eq!(l.requests_used(u, now).await.unwrap(), (1, 99));
    assert!(l.admit_request(u, now, 10, 100).await.unwrap().is_ok(), "the refunded slot is free again");
    // Tomorrow starts from zero (nothing recorded for it).
    let tomorrow = now + Span::days(1);
    seed_day(&l, u, tomorrow).await;
    let a = l.admit_request(u, tomorrow, 10, 100).await.unwrap().unwrap();
    assert_eq!(a.remaining_day, 99);
}

async fn reservations_never_overspend_and_settle(b: Backend) {
    let (l, now) = (b.a, t0());
    let u = fresh(&l, now).await;
    let day = now.date_naive();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.reserve_tokens(u, now, 10_000, 300, 300).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for h in handles {
        if let Ok(r) = h.await.unwrap() {
            taken.push(r);
        }
    }
    assert_eq!(taken.len(), 33, "10,000 / 300");
    assert_eq!(l.tokens_used(u, day).await.unwrap(), 9_900);
    for r in &taken[..32] {
        l.settle_tokens(r, 0).await.unwrap(); // failed calls: refunded
    }
    l.settle_tokens(&taken[32], 100).await.unwrap();
    assert_eq!(l.tokens_used(u, day).await.unwrap(), 100, "settled to the real count");
    let r = l.reserve_tokens(u, now, 10_000, 600, 600).await.unwrap().unwrap();
    assert_eq!(r.remaining, 9_300);
}

async fn a_reservation_is_capped_to_what_is_left(b: Backend) {
    let (l, u, now) = (b.a, UserId::new(), t0());
    let day = now.date_naive();
    l.seed_tokens(u, day, 200).await.unwrap();
    let all = l.reserve_tokens(u, now, 1_000, 10, u64::MAX).await.unwrap().unwrap();
    assert_eq!((all.tokens, all.remaining), (800, 0), "no maximum: what is left");
    l.settle_tokens(&all, 500).await.unwrap();
    let capped = l.reserve_tokens(u, now, 1_000, 10, 5_000).await.unwrap().unwrap();
    assert_eq!((capped.tokens, capped.remaining), (300, 0), "more than is left: capped");
    let refused = l.reserve_tokens(u, now, 1_000, 1, 1).await.unwrap().unwrap_err();
    assert!(matches!(refused, Refusal::QuotaExhausted { remaining: 0, .. }), "{refused:?}");
    l.settle_tokens(&capped, 100).await.unwrap();
    let refused = l.reserve_tokens(u, now, 1_000, 300, 300).await.unwrap().unwrap_err();
    assert!(matches!(refused, Refusal::QuotaExhausted { remaining: 200, .. }), "at least 300 do not fit: {refused:?}");
}

async fn two_replicas_share_their_counts(b: Backend) {
    if !b.shared {
        return; // the in-process limiter is one node by design
    }
    let now = t0();
    let u = fresh(&b.a, now).await;
    let both = [b.a.clone(), b.b.clone()];
    assert_eq!(admit_concurrently(&both, u, now, 50).await, 10, "10 across both replicas");
    let handles: Vec<_> = (0..60)
        .map(|i| {
            let l = both[i % 2].clone();
            tokio::spawn(async move { l.reserve_tokens(u, now, 10_000, 500, 500).await.unwrap().is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    assert_eq!(admitted, 20);
    assert_eq!(b.b.tokens_used(u, now.date_naive()).await.unwrap(), 10_000);
}

fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, Unavailable>, started: Instant, within: Duration) {
    assert!(r.is_err(), "{r:?}");
    assert!(started.elapsed() < within, "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_within_the_timeout() {
    // Nothing listens on port 1.
    let l = redis_limiter("redis://127.0.0.1:1", "keygate-test:", Duration::from_millis(250));
    for _ in 0..3 {
        let started = Instant::now();
        assert_unavailable(l.admit_request(UserId::new(), Utc::now(), 10, 100).await, started, Duration::from_secs(1));
        let started = Instant::now();
        assert_unavailable(
            l.reserve_tokens(UserId::new(), Utc::now(), 10, 1, 1).await,
            started,
            Duration::from_secs(1),
        );
    }
}

/// A Redis server of this test's own, on a free port (never the shared 6379).
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Self { port, child })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn until_ready(l: &Arc<dyn Limiter>) -> bool {
    for _ in 0..100 {
        if l.ping().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_fails_closed_and_a_restarted_one_serves_again() {
    let port = free_port();
    let Some(mut server) = OwnRedis::start(port) else {
        let message = "redis-server is not installed";
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("CI requires Redis: {message}");
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED (Redis test): {message}");
        }
        return;
    };
    let url = format!("redis://127.0.0.1:{}", server.port);
    let l = redis_limiter(&url, "keygate-test:", Duration::from_millis(250));
    assert!(until_ready(&l).await, "the test's own redis-server did not start");
    let u = fresh(&l, Utc::now()).await;
    assert!(l.admit_request(u, Utc::now(), 10, 100).await.unwrap().is_ok());
    let reserved = l.reserve_tokens(u, Utc::now(), 1_000, 10, 10).await.unwrap().unwrap();

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert_unavailable(l.admit_request(u, Utc::now(), 10, 100).await, started, Duration::from_secs(1));
    }

    let _server = OwnRedis::start(port).unwrap();
    assert!(until_ready(&l).await, "the limiter reconnects by itself");
    // The new server is empty: the counters are reported lost, never counted from zero,
    // and a settlement does not bring one back half-made.
    let (now, day) = (Utc::now(), Utc::now().date_naive());
    assert_eq!(l.admit_request(u, now, 10, 100).await.unwrap(), Err(Refusal::Unseeded));
    assert_eq!(l.reserve_tokens(u, now, 1_000, 10, 10).await.unwrap(), Err(Refusal::Unseeded));
    l.settle_tokens(&reserved, 7).await.unwrap();
    assert_eq!(l.reserve_tokens(u, now, 1_000, 10, 10).await.unwrap(), Err(Refusal::Unseeded));
    // Seeded again from what was recorded (here: 1 request, 600 tokens), it counts on.
    l.seed_requests(u, day, 1).await.unwrap();
    l.seed_tokens(u, day, 600).await.unwrap();
    let admitted = l.admit_request(u, now, 10, 100).await.unwrap().unwrap();
    assert_eq!(admitted.remaining_day, 98);
    let capped = l.reserve_tokens(u, now, 1_000, 10, 1_000).await.unwrap().unwrap();
    assert_eq!((capped.tokens, capped.remaining), (400, 0));
}

// --- sandbox sessions' caps, on every backend ---

each_backend!(
    a_sessions_request_cap_holds_exactly_across_replicas,
    a_sessions_token_cap_reserves_what_is_left_and_settles,
    a_session_counter_nobody_seeded_is_reported_not_counted_from_zero,
);

fn session(max_requests: Option<u64>, max_tokens: Option<u64>) -> SessionCaps {
    SessionCaps { session: TokenId::new(), expires_at: Utc::now() + Span::hours(1), max_requests, max_tokens }
}

async fn seed_session(l: &Arc<dyn Limiter>, caps: &SessionCaps) {
    l.seed_session(caps.session, caps.expires_at, SessionUse::default()).await.unwrap();
}

async fn a_sessions_request_cap_holds_exactly_across_replicas(b: Backend) {
    let caps = session(Some(5), None);
    seed_session(&b.a, &caps).await;
    seed_session(&b.b, &caps).await; // the other replica's first sight: already counted
    let limiters = [b.a.clone(), b.b.clone()];
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let l = limiters[i % 2].clone();
            tokio::spawn(async move { l.admit_session(&caps, 1, 1).await.unwrap() })
        })
        .collect();
    let mut admitted = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(r) => admitted.push(r),
            Err(refused) => assert_eq!(refused, SessionRefusal::Requests { limit: 5 }),
        }
    }
    assert_eq!(admitted.len(), 5, "20 at once, on two replicas: exactly 5");
    assert_eq!(b.b.session_used(caps.session).await.unwrap(), Some(SessionUse { requests: 5, tokens: 0 }));
    // A failed call gives its request back; one that was served does not.
    b.b.settle_session(&admitted[0], 0, true).await.unwrap();
    b.a.settle_session(&admitted[1], 7, false).await.unwrap();
    assert_eq!(b.a.session_used(caps.session).await.unwrap(), Some(SessionUse { requests: 4, tokens: 7 }));
    assert!(b.a.admit_session(&caps, 1, 1).await.unwrap().is_ok(), "the refunded request is free again");
    assert_eq!(b.b.admit_session(&caps, 1, 1).await.unwrap(), Err(SessionRefusal::Requests { limit: 5 }));
}

async fn a_sessions_token_cap_reserves_what_is_left_and_settles(b: Backend) {
    let l = b.a;
    let caps = session(None, Some(100));
    seed_session(&l, &caps).await;
    let first = l.admit_session(&caps, 10, 60).await.unwrap().unwrap();
    assert_eq!(first.tokens, 60, "the worst case, when it fits");
    let second = l.admit_session(&caps, 10, 60).await.unwrap().unwrap();
    assert_eq!(second.tokens, 40, "capped to what is left");
    assert_eq!(l.admit_session(&caps, 10, 60).await.unwrap(), Err(SessionRefusal::Tokens { limit: 100, remaining: 0 }));
    // The first call used 20 of its 60: 40 come back.
    l.settle_session(&first, 20, false).await.unwrap();
    assert_eq!(l.session_used(caps.session).await.unwrap(), Some(SessionUse { requests: 2, tokens: 60 }));
    assert_eq!(
        l.admit_session(&caps, 50, 50).await.unwrap(),
        Err(SessionRefusal::Tokens { limit: 100, remaining: 40 }),
        "not even the least this call needs fits"
    );
    let third = l.admit_session(&caps, 10, u64::MAX).await.unwrap().unwrap();
    assert_eq!((third.tokens, third.used), (40, SessionUse { requests: 3, tokens: 100 }));
    // Many at once never reserve more than the cap.
    let many = session(None, Some(1_000));
    seed_session(&l, &many).await;
    let handles: Vec<_> = (0..40)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.admit_session(&many, 30, 30).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for h in handles {
        taken += h.await.unwrap().map_or(0, |r| r.tokens);
    }
    assert_eq!(taken, 990, "33 calls of 30");
}

async fn a_session_counter_nobody_seeded_is_reported_not_counted_from_zero(b: Backend) {
    let l = b.a;
    let caps = session(Some(3), Some(1_000));
    assert_eq!(l.admit_session(&caps, 1, 1).await.unwrap(), Err(SessionRefusal::Unseeded));
    assert_eq!(l.session_used(caps.session).await.unwrap(), None);
    // Seeded from what was recorded (2 calls, 900 tokens); a second seeding changes nothing.
    l.seed_session(caps.session, caps.expires_at, SessionUse { requests: 2, tokens: 900 }).await.unwrap();
    l.seed_session(caps.session, caps.expires_at, SessionUse::default()).await.unwrap();
    let last = l.admit_session(&caps, 10, 500).await.unwrap().unwrap();
    assert_eq!((last.tokens, last.used), (100, SessionUse { requests: 3, tokens: 1_000 }));
    assert_eq!(l.admit_session(&caps, 1, 1).await.unwrap(), Err(SessionRefusal::Requests { limit: 3 }));
}
