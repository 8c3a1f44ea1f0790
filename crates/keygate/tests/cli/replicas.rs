//! Several replicas: three `keygate serve` processes on one fresh PostgreSQL database and
//! one Redis of this test's own (on a free port, never the shared 6379, so the test can
//! stop it), with keygate-mock as every provider. Calls are spread over the replicas
//! concurrently, and the test asserts what must hold across them: exactly 10 community
//! platform calls in a minute, a demo allowance never overspent and at least 90 % usable,
//! a key deleted through one replica refused by the others, `503 limits_unavailable` on
//! every replica while Redis is down (own-key calls still served, `/readyz` naming the
//! limits), and limited calls served again once Redis is back on the same port.
//!
//! Also `limits.fail_open` over HTTP: one replica whose Redis does not answer serves
//! limited calls anyway and counts each in `keygate_limits_fail_open_total`.
//!
//! A missing `redis-server` (or PostgreSQL) locally prints `SKIPPED (… test)`; with
//! `CI=true` it fails.

use crate::support::*;
use keygate_mock::{MockConfig, MockProvider};
use keygate_store::testdb::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "host-app-shared-secret-0123456789abcdef";
const ADMIN_EMAIL: &str = "ops@replicas.example";
/// The operator's keys: a platform key for Anthropic, a demo (shared) key for OpenAI.
const PLATFORM_KEY: &str = "sk-ant-api03-CANARYplatform0000000000001";
const DEMO_KEY: &str = "sk-proj-CANARYdemo00000000000000000001";
/// Users' own OpenAI keys.
const OWN_KEY: &str = "sk-proj-CANARYown000000000000000000001";
const REVOKED_KEY: &str = "sk-proj-CANARYrevoked0000000000000001";
/// What the mock reports for every call, and the demo allowance the test sets.
const INPUT_TOKENS: u64 = 20;
const OUTPUT_TOKENS: u64 = 30;
const DEMO_TOKENS_PER_DAY: u64 = 2_000;
/// How long any one request may take: a hanging request fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[allow(clippy::print_stderr)]
fn skip(what: &str, message: &str) {
    if in_ci() {
        panic!("CI requires {what}: {message}");
    }
    eprintln!("SKIPPED ({what} test): {message}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Redis server of this test's own, without persistence.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` when `redis-server` cannot be run.
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { port, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command("PING").as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "the test's redis-server on port {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// One inline command; its reply's first line.
    fn command(&self, command: &str) -> Option<String> {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).lines().next()?.to_owned())
    }

    /// Kills the server (no persistence: its counters are gone).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `keygate serve` on port 0 and returns its base URL.
fn serve(db: &TestDb, vars: &[(&str, &str)]) -> (Server, String) {
    let mut server =
        Server(keygate(db, vars).arg("serve").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap());
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited early:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            let url = rest.trim().to_owned();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in stderr.lines() {});
            return (server, url);
        }
    }
}

/// A super-admin's token with every scope, made with the CLI.
fn admin_token(db: &TestDb, vars: &[(&str, &str)]) -> String {
    let (ok, _, stderr) =
        run_with_stdin(keygate(db, vars), &["admin", "create", "--email", ADMIN_EMAIL], "a-long-enough-password\n");
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = run(
        keygate(db, vars),
        &["token", "create", "--user", ADMIN_EMAIL, "--name", "ops", "--scopes", "keys,proxy,usage,admin,metrics"],
    );
    assert!(ok, "{stderr}");
    stdout.lines().last().unwrap().to_owned()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap()
}

/// Status, JSON body (or `null`) and the key source of one answer.
struct Reply {
    status: StatusCode,
    json: Value,
    source: Option<String>,
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let reply = req.send().await.expect("an answer within the request timeout");
    let status = reply.status();
    let source = reply.headers().get("x-keygate-key-source").map(|v| v.to_str().unwrap().to_owned());
    let text = reply.text().await.unwrap();
    Reply { status, json: serde_json::from_str(&text).unwrap_or(Value::Null), source }
}

/// A host user, provisioned through `base`, with a keygate token.
async fn user(http: &reqwest::Client, base: &str, sub: &str) -> String {
    let claims =
        json!({"sub": sub, "email": format!("{sub}@host.example"), "exp": chrono::Utc::now().timestamp() + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let jwt = jsonwebtoken::encode(&Default::default(), &claims, &key).unwrap();
    let created =
        send(http.post(format!("{base}/api/v1/tokens")).bearer_auth(&jwt).json(&json!({"name": "backend"}))).await;
    assert_eq!(created.status, 201, "{}", created.json);
    created.json["token"].as_str().unwrap().to_owned()
}

async fn add_key(http: &reqwest::Client, base: &str, token: &str, body: Value) -> String {
    let added = send(http.post(format!("{base}/api/v1/keys")).bearer_auth(token).json(&body)).await;
    assert_eq!(added.status, 201, "{}", added.json);
    added.json["id"].as_str().unwrap().to_owned()
}

/// A platform-key call (Anthropic).
fn platform_call(http: &reqwest::Client, base: &str, token: &str) -> reqwest::RequestBuilder {
    let body =
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    http.post(format!("{base}/proxy/anthropic/v1/messages")).bearer_auth(token).json(&body)
}

/// An OpenAI call: the demo key's for a user without a key of their own, else their own.
fn openai_call(http: &reqwest::Client, base: &str, token: &str) -> reqwest::RequestBuilder {
    let body = json!({"model": "gpt-4o", "max_tokens": OUTPUT_TOKENS, "messages": [{"role": "user", "content": "hi"}]});
    http.post(format!("{base}/proxy/openai/v1/chat/completions")).bearer_auth(token).json(&body)
}

/// Polls `check` until it is true or `within` has passed; whether it became true.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_postgres_and_one_redis_keep_exact_limits() {
    let Some(db) = TestDb::postgres().await else { return };
    let Some(mut redis) = OwnRedis::start(free_port()) else {
        skip("Redis", "redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let mock = MockProvider::start(MockConfig {
        input_tokens: INPUT_TOKENS,
        output_tokens: OUTPUT_TOKENS,
        ..MockConfig::with_keys([PLATFORM_KEY, DEMO_KEY, OWN_KEY, REVOKED_KEY])
    })
    .await
    .unwrap();
    let mock_url = mock.url();
    let vars = [
        ("KEYGATE_MASTER_KEY", KEY_A),
        ("KEYGATE_LISTEN", "127.0.0.1:0"),
        ("KEYGATE_JWT_HS256_SECRET", JWT_SECRET),
        ("KEYGATE_REDIS_URL", redis_url.as_str()),
        ("KEYGATE_LIMITS_TIMEOUT_MS", "250"),
        ("KEYGATE_PROVIDER_OPENAI_BASE_URL", mock_url.as_str()),
        ("KEYGATE_PROVIDER_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ];
    let admin = admin_token(&db, &vars);
    // One after another: the first runs the migrations.
    let replicas: Vec<(Server, String)> = (0..3).map(|_| serve(&db, &vars)).collect();
    let bases: Vec<String> = replicas.iter().map(|(_, base)| base.clone()).collect();
    let http = http();
    for base in &bases {
        let ready = send(http.get(format!("{base}/readyz"))).await;
        assert_eq!((ready.status, &ready.json["limits"]), (StatusCode::OK, &json!("redis")), "{}", ready.json);
    }

    // The operator's keys and a small demo allowance, through replica 1.
    let b1 = &bases[0];
    add_key(&http, b1, &admin, json!({"provider": "anthropic", "scope": "operator", "secret": PLATFORM_KEY})).await;
    add_key(
        &http,
        b1,
        &admin,
        json!({"provider": "openai", "scope": "operator", "operator_shared": true, "secret": DEMO_KEY}),
    )
    .await;
    let mut policy = send(http.get(format!("{b1}/api/v1/admin/settings")).bearer_auth(&admin)).await.json;
    policy["demo"]["tokens_per_day"] = json!(DEMO_TOKENS_PER_DAY);
    let set = send(http.put(format!("{b1}/api/v1/admin/settings")).bearer_auth(&admin).json(&policy)).await;
    assert_eq!(set.status, 200, "{}", set.json);
    for base in &bases {
        let seen = eventually(Duration::from_secs(5), || async {
            let now = send(http.get(format!("{base}/api/v1/admin/settings")).bearer_auth(&admin)).await;
            now.json["demo"]["tokens_per_day"] == json!(DEMO_TOKENS_PER_DAY)
        })
        .await;
        assert!(seen, "{base} never saw the new demo allowance");
    }

    // 1. Exactly 10 community platform calls a minute, 30 sent at once over 3 replicas.
    let platform_user = user(&http, b1, "platform-1").await;
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let req = platform_call(&http, &bases[i % 3], &platform_user);
            tokio::spawn(send(req))
        })
        .collect();
    let (mut served, mut limited) = (0, 0);
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status.as_u16() {
            200 => {
                assert_eq!(reply.source.as_deref(), Some("platform"));
                served += 1;
            }
            429 => {
                assert_eq!(reply.json["code"], "rate_limited", "{}", reply.json);
                limited += 1;
            }
            other => panic!("a platform call answered {other}: {}", reply.json),
        }
    }
    assert_eq!((served, limited), (10, 20), "community: 10 platform calls a minute across all replicas");

    // 2. The demo allowance: 12 callers (4 per replica) spend it; never more, and at
    // least 90 % of it usable.
    let demo_user = user(&http, b1, "demo-1").await;
    let spent = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..12)
        .map(|i| {
            let (http, base, token, spent) = (http.clone(), bases[i % 3].clone(), demo_user.clone(), spent.clone());
            tokio::spawn(async move {
                let mut refused_in_a_row = 0;
                // Stop after two refusals in a row (a settle still landing may free some).
                while refused_in_a_row < 2 {
                    let reply = send(openai_call(&http, &base, &token)).await;
                    match reply.status.as_u16() {
                        200 => {
                            refused_in_a_row = 0;
                            assert_eq!(reply.source.as_deref(), Some("operator_demo"));
                            let usage = &reply.json["usage"];
                            let tokens =
                                usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
                            spent.fetch_add(tokens, Ordering::Relaxed);
                        }
                        429 => {
                            assert_eq!(reply.json["code"], "quota_exhausted", "{}", reply.json);
                            refused_in_a_row += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("a demo call answered {other}: {}", reply.json),
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let spent = spent.load(Ordering::Relaxed);
    #[allow(clippy::print_stderr)]
    {
        eprintln!("replicas: demo allowance {DEMO_TOKENS_PER_DAY} tokens, {spent} spent over 3 replicas");
    }
    assert!(spent <= DEMO_TOKENS_PER_DAY, "the demo allowance was overspent: {spent} of {DEMO_TOKENS_PER_DAY}");
    assert!(spent * 10 >= DEMO_TOKENS_PER_DAY * 9, "less than 90 % of the demo allowance was usable: {spent}");

    // 3. A key deleted through replica 1 is refused by replicas 2 and 3 (their caches held
    // it: each served a call with it first).
    let revoked_user = user(&http, b1, "revoked-1").await;
    let key = add_key(&http, b1, &revoked_user, json!({"provider": "openai", "secret": REVOKED_KEY})).await;
    let own_only = |base: &str| openai_call(&http, base, &revoked_user).header("x-keygate-policy", "customer-only");
    for base in &bases[1..] {
        let reply = send(own_only(base)).await;
        assert_eq!((reply.status, reply.source.as_deref()), (StatusCode::OK, Some("user")), "{}", reply.json);
    }
    let deleted = send(http.delete(format!("{b1}/api/v1/keys/{key}")).bearer_auth(&revoked_user)).await;
    assert!(deleted.status.is_success(), "{}: {}", deleted.status, deleted.json);
    let deleted_at = Instant::now();
    for base in &bases[1..] {
        let refused = eventually(Duration::from_secs(3), || async {
            let reply = send(own_only(base)).await;
            reply.status == StatusCode::FORBIDDEN && reply.json["code"] == "no_credential"
        })
        .await;
        assert!(refused, "{base} still used the deleted key");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("replicas: the deleted key was refused by replicas 2 and 3 after {:?}", deleted_at.elapsed());
    }
    let used = redis.command("DBSIZE").unwrap_or_default();
    assert!(used.starts_with(':') && used != ":0", "the limits were kept in Redis (DBSIZE {used})");

    // 3b. A sandbox session's `max_requests` holds across the replicas (its counter lives
    // in Redis too), and revoking it through one replica ends it on the others.
    let session_owner = user(&http, b1, "session-1").await;
    add_key(&http, b1, &session_owner, json!({"provider": "openai", "secret": OWN_KEY})).await;
    let session = json!({"name": "sandbox", "providers": ["openai"], "ttl_seconds": 600, "max_requests": 7});
    let minted = send(http.post(format!("{b1}/api/v1/sessions")).bearer_auth(&session_owner).json(&session)).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.json);
    let (session_id, session_token) =
        (minted.json["id"].as_str().unwrap().to_owned(), minted.json["token"].as_str().unwrap().to_owned());
    let calls: Vec<_> =
        (0..21).map(|i| tokio::spawn(send(openai_call(&http, &bases[i % 3], &session_token)))).collect();
    let (mut served, mut capped) = (0, 0);
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status.as_u16() {
            200 => served += 1,
            429 => {
                assert_eq!(reply.json["code"], "session_cap_reached", "{}", reply.json);
                capped += 1;
            }
            other => panic!("a session call answered {other}: {}", reply.json),
        }
    }
    assert_eq!((served, capped), (7, 14), "a session's max_requests across all replicas");
    let revoked = send(http.delete(format!("{b1}/api/v1/sessions/{session_id}")).bearer_auth(&session_owner)).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.json);
    for base in &bases {
        let ended = eventually(Duration::from_secs(3), || async {
            send(openai_call(&http, base, &session_token)).await.status == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(ended, "{base} still served a revoked session");
    }

    // 4. Redis stopped: limited calls answer 503 limits_unavailable on every replica,
    // own-key calls still 200, /readyz says the limits are down.
    let own_user = user(&http, b1, "own-1").await;
    add_key(&http, b1, &own_user, json!({"provider": "openai", "secret": OWN_KEY})).await;
    let (platform_2, demo_2) = (user(&http, b1, "platform-2").await, user(&http, b1, "demo-2").await);
    redis.stop();
    for base in &bases {
        let unavailable = |reply: &Reply| {
            reply.status == StatusCode::SERVICE_UNAVAILABLE && reply.json["code"] == "limits_unavailable"
        };
        let down = eventually(Duration::from_secs(10), || async {
            unavailable(&send(platform_call(&http, base, &platform_2)).await)
        })
        .await;
        assert!(down, "{base}: a platform call with Redis down never answered 503 limits_unavailable");
        let demo = send(openai_call(&http, base, &demo_2)).await;
        assert!(unavailable(&demo), "{base}: a demo call with Redis down: {} {}", demo.status, demo.json);
        let own = send(openai_call(&http, base, &own_user)).await;
        assert_eq!((own.status, own.source.as_deref()), (StatusCode::OK, Some("user")), "{base}: {}", own.json);
        let ready = send(http.get(format!("{base}/readyz"))).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{base}: {}", ready.json);
        assert_eq!(ready.json["code"], "limits_unavailable", "{base}: {}", ready.json);
    }

    // 5. Redis back on the same port: every replica reconnects and serves limited calls.
    let _redis = OwnRedis::start(redis.port).unwrap();
    for base in &bases {
        let back = eventually(Duration::from_secs(15), || async {
            send(platform_call(&http, base, &platform_2)).await.status == StatusCode::OK
        })
        .await;
        assert!(back, "{base}: limited calls were not served again after Redis came back");
        let demo = send(openai_call(&http, base, &demo_2)).await;
        assert_eq!((demo.status, demo.source.as_deref()), (StatusCode::OK, Some("operator_demo")), "{}", demo.json);
        let ready = send(http.get(format!("{base}/readyz"))).await;
        assert_eq!((ready.status, &ready.json["limits"]), (StatusCode::OK, &json!("redis")), "{}", ready.json);
    }

    // 6. The Redis that came back is empty (it keeps nothing on disk): the day's counters
    // are seeded again from recorded usage, so the user who spent the allowance before
    // gets no second one from any replica.
    for base in &bases {
        let reply = send(openai_call(&http, base, &demo_user)).await;
        assert_eq!(
            (reply.status, &reply.json["code"]),
            (StatusCode::TOO_MANY_REQUESTS, &json!("quota_exhausted")),
            "{base}: an emptied Redis handed out a second demo allowance: {}",
            reply.json
        );
    }
    drop(replicas);
}

/// `limits.fail_open = true`: with its Redis not answering, a replica serves a platform
/// call anyway, counts it in `/metrics`, and stays ready, saying the limits are down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_limited_calls_with_redis_down_and_counts_them() {
    let db = TestDb::sqlite();
    let mock = MockProvider::start(MockConfig::with_keys([PLATFORM_KEY])).await.unwrap();
    let mock_url = mock.url();
    // Nothing listens there.
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let vars = [
        ("KEYGATE_MASTER_KEY", KEY_A),
        ("KEYGATE_LISTEN", "127.0.0.1:0"),
        ("KEYGATE_JWT_HS256_SECRET", JWT_SECRET),
        ("KEYGATE_REDIS_URL", redis_url.as_str()),
        ("KEYGATE_LIMITS_FAIL_OPEN", "true"),
        ("KEYGATE_PROVIDER_ANTHROPIC_BASE_URL", mock_url.as_str()),
    ];
    let admin = admin_token(&db, &vars);
    let (_server, base) = serve(&db, &vars);
    let http = http();
    add_key(&http, &base, &admin, json!({"provider": "anthropic", "scope": "operator", "secret": PLATFORM_KEY})).await;
    let caller = user(&http, &base, "fail-open-1").await;

    for _ in 0..3 {
        let reply = send(platform_call(&http, &base, &caller)).await;
        assert_eq!((reply.status, reply.source.as_deref()), (StatusCode::OK, Some("platform")), "{}", reply.json);
    }
    let metrics = http.get(format!("{base}/metrics")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keygate_limits_fail_open_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(counted, Some(3.0), "every call served blind is counted:\n{metrics}");

    let ready = send(http.get(format!("{base}/readyz"))).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.json);
    assert_eq!(ready.json["limits"], "redis (down, failing open)", "{}", ready.json);

    // Without fail_open the same deployment fails closed.
    let closed_vars: Vec<(&str, &str)> = vars
        .iter()
        .copied()
        .map(|(k, v)| if k == "KEYGATE_LIMITS_FAIL_OPEN" { (k, "false") } else { (k, v) })
        .collect();
    let (_closed, closed_base) = serve(&db, &closed_vars);
    let reply = send(platform_call(&http, &closed_base, &caller)).await;
    assert_eq!((reply.status, &reply.json["code"]), (StatusCode::SERVICE_UNAVAILABLE, &json!("limits_unavailable")));
}
