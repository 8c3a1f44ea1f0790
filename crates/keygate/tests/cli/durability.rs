//! Usage totals across a crash: `keygate serve` is SIGKILLed while four callers keep it
//! busy, started again, and what it recorded is compared with the calls it answered. What
//! may be lost is the usage writer's open batch (`keygate-service/src/usage.rs`: written
//! every 200 ms or 1,024 events) and a write in flight: the calls answered in the last
//! moments before the kill. The bound asserted is five windows (1 s), so a slow machine
//! cannot fail it; the figure measured is printed (BENCHMARKS.md).

use crate::support::*;
use keygate_mock::{MockConfig, MockProvider};
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JWT_SECRET: &str = "host-app-shared-secret-0123456789abcdef";
const GOOD: &str = "sk-proj-CANARYdurable000000000000000001";
/// Calls answered this close to the kill may be lost; older ones never.
const LOSS_WINDOW: Duration = Duration::from_secs(1);

both_backends!(a_sigkill_loses_at_most_the_usage_of_the_last_batch_window);

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
            std::thread::spawn(move || for _ in stderr.lines() {});
            return (server, url);
        }
    }
}

async fn recorded(db: &TestDb) -> i64 {
    let store = store(db).await;
    let rows = store.usage_report(&Default::default(), keygate_store::UsageGrouping::Provider).await.unwrap();
    store.close().await;
    rows.iter().map(|r| r.requests).sum()
}

async fn a_sigkill_loses_at_most_the_usage_of_the_last_batch_window(db: TestDb) {
    let mock = MockProvider::start(MockConfig::with_keys([GOOD])).await.unwrap();
    let vars = [
        ("KEYGATE_MASTER_KEY", KEY_A),
        ("KEYGATE_LISTEN", "127.0.0.1:0"),
        ("KEYGATE_JWT_HS256_SECRET", JWT_SECRET),
        ("KEYGATE_PROVIDER_OPENAI_BASE_URL", &mock.url()),
    ];
    let (mut server, base) = serve(&db, &vars);
    let http = reqwest::Client::new();
    let claims = json!({"sub": "host-7", "email": "crash@host.example", "exp": chrono::Utc::now().timestamp() + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let jwt = jsonwebtoken::encode(&Default::default(), &claims, &key).unwrap();
    let created: Value = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&jwt)
        .json(&json!({"name": "backend"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().expect("a token").to_owned();
    let added = http
        .post(format!("{base}/api/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "secret": GOOD}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);

    // Four callers keep calling; the server dies under them.
    let answered = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                let body = json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
                while !stop.load(Ordering::Relaxed) {
                    let sent = http
                        .post(format!("{base}/proxy/openai/v1/chat/completions"))
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(reply) = sent else { break };
                    if reply.status() == 200 && reply.bytes().await.is_ok() {
                        answered.lock().unwrap().push(Instant::now());
                    }
                }
            })
        })
        .collect();
    // Wait until a good many calls were answered (a deadline, not a duration).
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.0.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    server.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let recent = answered.iter().filter(|at| killed.duration_since(**at) < LOSS_WINDOW).count();
    let last_200ms = answered.iter().filter(|at| killed.duration_since(**at) < Duration::from_millis(200)).count();
    let stored = recorded(&db).await;
    let lost = i64::try_from(answered.len()).unwrap() - stored;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "durability ({:?}): {} calls answered, {stored} recorded, {lost} lost; {last_200ms} answered in the last 200 ms",
            db.location.describe().split(' ').next(),
            answered.len()
        );
    }
    assert!(answered.len() >= 100, "too few calls to say anything: {}", answered.len());
    assert!(
        lost <= i64::try_from(recent).unwrap(),
        "{lost} usage events lost, more than the {recent} calls answered in the last {LOSS_WINDOW:?}"
    );

    // Started again on the same database, it serves and records as before.
    let (_server, base) = serve(&db, &vars);
    let body = json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let reply = http
        .post(format!("{base}/proxy/openai/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorded(&db).await < stored + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded(&db).await, stored + 1, "the restarted replica records its calls");
}
