//! The keys API through the real binary, as a host app would use it with curl: mint a
//! JWT, provision a user, create a keygate token, store and test an OpenAI key against
//! keygate-mock, see it listed as `…abcd` and `valid`; a wrong key comes back `invalid`.
//! Also `keygate token create`.

use crate::support::*;
use keygate_mock::{MockConfig, MockProvider};
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

const JWT_SECRET: &str = "host-app-shared-secret-0123456789abcdef";
const GOOD: &str = "sk-proj-CANARYgood00000000000000000001";
const BAD: &str = "sk-proj-CANARYbad000000000000000000002";

both_backends!(a_host_app_stores_and_tests_a_key_with_http_alone);

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

async fn a_host_app_stores_and_tests_a_key_with_http_alone(db: TestDb) {
    let mock = MockProvider::start(MockConfig::with_keys([GOOD])).await.unwrap();
    let vars = [
        ("KEYGATE_MASTER_KEY", KEY_A),
        ("KEYGATE_LISTEN", "127.0.0.1:0"),
        ("KEYGATE_JWT_HS256_SECRET", JWT_SECRET),
        ("KEYGATE_PROVIDER_OPENAI_BASE_URL", &mock.url()),
    ];
    let (_server, base) = serve(&db, &vars);
    let http = reqwest::Client::new();
    let exp = chrono::Utc::now().timestamp() + 600;
    let claims = json!({"sub": "host-42", "email": "dev@host.example", "exp": exp});
    let jwt = jsonwebtoken::encode(
        &Default::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();

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

    let good = http
        .post(format!("{base}/api/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "secret": GOOD}))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 201);
    let good: Value = good.json().await.unwrap();
    let id = good["id"].as_str().unwrap().to_owned();
    let tested: Value = http
        .post(format!("{base}/api/v1/keys/{id}/test"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tested["validity"], "valid");
    let listed: Value =
        http.get(format!("{base}/api/v1/keys")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["keys"][0]["hint"], "…0001");
    assert_eq!(listed["keys"][0]["validity"], "valid");
    assert!(
        mock.requests().iter().all(|r| r.credential.as_deref() == Some(GOOD)),
        "the mock saw the user's key, never a keygate credential"
    );

    let bad = http
        .post(format!("{base}/api/v1/keys"))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "secret": BAD}))
        .send()
        .await
        .unwrap();
    let bad_text = bad.text().await.unwrap();
    let bad: Value = serde_json::from_str(&bad_text).unwrap();
    assert_eq!(bad["validity"], "invalid");
    assert!(bad["validity_detail"].as_str().unwrap().contains("rejected the key"));
    assert!(!bad_text.contains("CANARY"), "no response carries a secret: {bad_text}");

    let doc: Value = http.get(format!("{base}/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in ["/api/v1/tokens", "/api/v1/keys", "/api/v1/keys/{id}/test"] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }

    // Audit rows name where each request came from: the peer address of its connection.
    let store = store(&db).await;
    let created =
        keygate_store::AuditFilter { action: Some(keygate_core::AuditAction::TokenCreate), ..Default::default() };
    let events = store.audit_events(&created).await.unwrap();
    let sources: Vec<Option<&str>> = events.iter().map(|e| e.source_addr.as_deref()).collect();
    assert_eq!(sources, vec![Some("127.0.0.1")]);
}

#[test]
fn token_create_prints_the_token_alone_on_its_last_line() {
    let db = TestDb::sqlite();
    let vars = [("KEYGATE_MASTER_KEY", KEY_A)];
    let (ok, _, stderr) = run_with_stdin(
        keygate(&db, &vars),
        &["admin", "create", "--email", "ops@example.com"],
        "a-long-enough-password\n",
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) =
        run(keygate(&db, &vars), &["token", "create", "--user", "ops@example.com", "--name", "ci"]);
    assert!(ok, "{stderr}");
    let token = stdout.lines().last().unwrap();
    assert!(token.starts_with("kg_") && !token.contains(' '), "{stdout}");
    assert!(stderr.contains("shown this once"));
    assert!(!stderr.contains(token), "the token is printed once, on standard output");
    let (ok, _, stderr) = run(keygate(&db, &vars), &["token", "create", "--user", "nobody@example.com", "--name", "x"]);
    assert!(!ok && stderr.contains("no user has the email"), "{stderr}");
    let (ok, _, stderr) =
        run(keygate(&db, &vars), &["token", "create", "--user", "ops@example.com", "--name", "x", "--scopes", "root"]);
    assert!(!ok && stderr.contains("not one of"), "{stderr}");
}
