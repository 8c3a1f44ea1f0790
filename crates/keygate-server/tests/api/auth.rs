//! Authentication: keygate tokens (shown once, hashed, scoped, expiring, revocable),
//! host JWTs (HS256 and RS256 via JWKS, provisioning on first sight), login.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use jsonwebtoken::{encode, EncodingKey, Header};
use keygate_service::throttle::{Clock, ManualClock, ThrottleOptions};
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

both_backends!(
    tokens_are_shown_once_hashed_and_revocable,
    bad_missing_or_expired_credentials_are_401_and_write_nothing,
    host_jwts_provision_users_on_first_sight,
    rs256_jwts_verify_against_the_jwks,
    login_with_a_password_issues_a_short_token,
    a_token_mints_only_tokens_narrower_than_itself,
    jwts_are_refused_before_nbf_and_beyond_the_lifetime_horizon,
    jwt_issuer_and_audience_are_checked_when_configured,
    password_guessing_is_throttled_per_account_before_any_hashing,
    password_guessing_is_throttled_per_source_address,
);

fn hs256(claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap()
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

async fn tokens_are_shown_once_hashed_and_revocable(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let created = h.post("/api/v1/tokens", &alice.token, json!({"name": "laptop"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let token = created.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kg_") && token.len() > 50);
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert_eq!(h.get("/api/v1/me", &token).await.json["user"]["email"], "alice@example.com");
    h.canary(&token);

    h.flush().await; // last use is written in the background
    let listed = h.get("/api/v1/tokens", &alice.token).await;
    let entry = listed.json["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(entry["name"], "laptop");
    assert!(token.starts_with(entry["prefix"].as_str().unwrap()));
    assert!(entry["last_used_at"].is_string(), "use is recorded");
    // Stored as a hash: the secret part appears nowhere in the database row.
    let stored = h.store().tokens_of_user(alice.user.id).await.unwrap();
    let secret_part = token.rsplit('_').next().unwrap();
    assert!(stored.iter().all(|t| t.secret_hash.len() == 32 && !t.public_id.contains(secret_part)));

    let other = h.user("mallory@example.com").await;
    assert_eq!(h.delete(&format!("/api/v1/tokens/{id}"), &other.token).await.status, 404, "only the owner revokes");
    assert_eq!(h.delete(&format!("/api/v1/tokens/{id}"), &alice.token).await.status, 204);
    let after = h.get("/api/v1/me", &token).await;
    assert_eq!((after.status, after.code()), (401, "unauthenticated"));

    let bad_scope = h.post("/api/v1/tokens", &alice.token, json!({"name": "x", "scopes": ["admin"]})).await;
    assert_eq!(bad_scope.status, 403, "only super-admins hold the admin scope");
    let proxy_only = h.post("/api/v1/tokens", &alice.token, json!({"name": "app", "scopes": ["proxy"]})).await;
    let proxy_only = proxy_only.json["token"].as_str().unwrap().to_owned();
    h.canary(&proxy_only);
    assert_eq!(h.get("/api/v1/keys", &proxy_only).await.status, 403, "a proxy-only token cannot manage keys");
    let audit = h.store().audit_events(&Default::default()).await.unwrap();
    assert!(
        audit.iter().any(|e| e.action.as_str() == "token.create")
            && audit.iter().any(|e| e.action.as_str() == "token.revoke")
    );
}

async fn bad_missing_or_expired_credentials_are_401_and_write_nothing(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let expired =
        h.post("/api/v1/tokens", &alice.token, json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"})).await;
    assert_eq!(expired.status, 422, "a token cannot be born expired");
    let before = h.audit_count().await;
    // The same token with its last character changed (never to itself).
    let last = if alice.token.ends_with('X') { 'Y' } else { 'X' };
    let forged = format!("{}{last}", &alice.token[..alice.token.len() - 1]);
    let expired_jwt = hs256(json!({"sub": "host-1", "exp": 1_000_000}));
    let wrong_key = encode(
        &Header::default(),
        &json!({"sub": "host-1", "exp": in_an_hour()}),
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    for credential in [
        None,
        Some("garbage"),
        Some("kg_short_x"),
        Some(forged.as_str()),
        Some(expired_jwt.as_str()),
        Some(wrong_key.as_str()),
    ] {
        let reply = h.call(Method::GET, "/api/v1/keys", credential, None).await;
        assert_eq!((reply.status, reply.code()), (401, "unauthenticated"), "{credential:?}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        let post = h
            .call(
                Method::POST,
                "/api/v1/keys",
                credential,
                Some(json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})),
            )
            .await;
        assert_eq!(post.status, 401);
    }
    assert_eq!(h.audit_count().await, before, "nothing written");
    assert!(h.store().user_by_external_id("host-1").await.unwrap().is_none(), "no user provisioned");
    assert!(h.store().credentials(&Default::default()).await.unwrap().is_empty());
}

async fn host_jwts_provision_users_on_first_sight(db: TestDb) {
    let h = Harness::new(db).await;
    let jwt =
        hs256(json!({"sub": "host-user-7", "email": "seven@host.example", "tier": "premium", "exp": in_an_hour()}));
    let me = h.get("/api/v1/me", &jwt).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        (me.json["user"]["external_id"].as_str(), me.json["user"]["tier"].as_str()),
        (Some("host-user-7"), Some("premium"))
    );
    assert_eq!((me.json["workspace"]["personal"].as_bool(), me.json["role"].as_str()), (Some(true), Some("owner")));
    let again = h.get("/api/v1/me", &jwt).await;
    assert_eq!(again.json["user"]["id"], me.json["user"]["id"], "the same user next time");

    // A host workspace: the first member creates it, later ones join it.
    let in_ws = |sub: &str| hs256(json!({"sub": sub, "workspace": "org-42", "exp": in_an_hour()}));
    let first = h.get("/api/v1/me", &in_ws("host-user-7")).await;
    let second = h.get("/api/v1/me", &in_ws("host-user-8")).await;
    assert_eq!(first.json["workspace"]["external_id"], "org-42");
    assert_eq!(first.json["workspace"]["id"], second.json["workspace"]["id"]);
    assert_eq!((first.json["role"].as_str(), second.json["role"].as_str()), (Some("owner"), Some("member")));

    // The JWT user can store a key and create a keygate token, with curl-level calls only.
    let key = h.post("/api/v1/keys", &jwt, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!((key.status, key.json["validity"].as_str()), (201, Some("valid")), "{}", key.text);
    let token = h.post("/api/v1/tokens", &jwt, json!({"name": "backend"})).await;
    assert_eq!(token.status, 201);
    h.canary(token.json["token"].as_str().unwrap());

    let bad_tier = hs256(json!({"sub": "host-user-9", "tier": "platinum", "exp": in_an_hour()}));
    assert_eq!(h.get("/api/v1/me", &bad_tier).await.status, 401);
    let audit = h
        .store()
        .audit_events(&keygate_store::AuditFilter {
            action: Some(keygate_core::AuditAction::UserProvision),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2, "host-user-7 and host-user-8, once each");
}

async fn rs256_jwts_verify_against_the_jwks(db: TestDb) {
    let h = Harness::new(db).await;
    let key = EncodingKey::from_rsa_pem(include_bytes!("fixtures/test-rsa-private.pem")).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    let jwt = encode(&header, &json!({"sub": "rsa-user", "exp": in_an_hour()}), &key).unwrap();
    let me = h.get("/api/v1/me", &jwt).await;
    assert_eq!((me.status, me.json["user"]["external_id"].as_str()), (200, Some("rsa-user")), "{}", me.text);
    header.kid = Some("unknown-kid".into());
    let jwt = encode(&header, &json!({"sub": "rsa-user", "exp": in_an_hour()}), &key).unwrap();
    assert_eq!(h.get("/api/v1/me", &jwt).await.status, 401);
}

async fn login_with_a_password_issues_a_short_token(db: TestDb) {
    let h = Harness::new(db).await;
    let password = "CANARY-correct-horse-battery";
    h.canary(password);
    let store = h.store().clone();
    keygate_service::accounts::create_admin(
        &*store,
        "root@example.com",
        &keygate_vault::SecretText::new(password.into()),
        &keygate_service::audit::Actor::cli(),
    )
    .await
    .unwrap();
    let wrong = h
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "root@example.com", "password": "nope-nope-nope"})),
        )
        .await;
    assert_eq!((wrong.status, wrong.code()), (401, "unauthenticated"));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"email": "Root@Example.com", "password": password}).to_string()))
        .unwrap();
    let ok = h.send(request).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let token = ok.json["token"].as_str().unwrap().to_owned();
    h.canary(&token);
    assert!(ok.json["expires_at"].is_string());
    assert_eq!(h.get("/api/v1/admin/users", &token).await.status, 200, "a super-admin's session can administer");
    // A password typed into the email box (an unknown email) is refused like any other and
    // never recorded.
    let typed = "canary-password-typed-as-email";
    h.canary(typed);
    let unknown =
        h.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": typed, "password": password}))).await;
    assert_eq!((unknown.status, unknown.code()), (401, "unauthenticated"));
    let logins = h.get("/api/v1/admin/audit?action=auth.login", &token).await;
    let results: Vec<&str> =
        logins.json["events"].as_array().unwrap().iter().map(|e| e["result"].as_str().unwrap()).collect();
    assert_eq!(results, vec!["denied", "ok", "denied"]);
    assert!(!logins.text.contains(typed), "{}", logins.text);
    assert!(logins.text.contains("an unknown email"), "{}", logins.text);
}

/// A scope-limited token must not be a way up: minting needs `keys`, and what it mints is
/// a subset of its own scopes; listing and revoking tokens need `keys` too.
async fn a_token_mints_only_tokens_narrower_than_itself(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let mint = |token: String, body: Value| {
        let h = &h;
        async move { h.post("/api/v1/tokens", &token, body).await }
    };
    let made = mint(root.token.clone(), json!({"name": "sdk", "scopes": ["proxy"]})).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let proxy_only = made.json["token"].as_str().unwrap().to_owned();
    h.canary(&proxy_only);
    let before = h.store().tokens_of_user(root.user.id).await.unwrap().len();

    for body in
        [json!({"name": "up"}), json!({"name": "up", "scopes": ["admin"]}), json!({"name": "up", "scopes": ["proxy"]})]
    {
        let refused = mint(proxy_only.clone(), body.clone()).await;
        assert_eq!((refused.status, refused.code()), (403, "forbidden"), "{body}: {}", refused.text);
        assert!(refused.json.get("token").is_none());
    }
    let listed = h.get("/api/v1/tokens", &proxy_only).await;
    assert_eq!(listed.status, 403, "a proxy-only token cannot list tokens: {}", listed.text);
    let some_id = made.json["id"].as_str().unwrap();
    let revoke = h.delete(&format!("/api/v1/tokens/{some_id}"), &proxy_only).await;
    assert_eq!(revoke.status, 403, "nor revoke them: {}", revoke.text);
    assert_eq!(h.store().tokens_of_user(root.user.id).await.unwrap().len(), before, "nothing was minted");

    // A keys+usage token (a super-admin's, so admin would be grantable to the user) cannot
    // mint admin or proxy, and minting with no scopes named gives exactly its own.
    let narrow = mint(root.token.clone(), json!({"name": "ops", "scopes": ["keys", "usage"]})).await;
    let narrow = narrow.json["token"].as_str().unwrap().to_owned();
    h.canary(&narrow);
    for scope in ["admin", "proxy"] {
        let refused = mint(narrow.clone(), json!({"name": "x", "scopes": [scope]})).await;
        assert_eq!(refused.status, 403, "{scope}: {}", refused.text);
        assert!(refused.json["detail"].as_str().unwrap().contains(scope), "{}", refused.text);
    }
    let child = mint(narrow.clone(), json!({"name": "child"})).await;
    assert_eq!(child.status, 201, "{}", child.text);
    assert_eq!(child.json["scopes"], json!(["keys", "usage"]), "the minter's own scopes, not every scope");
    h.canary(child.json["token"].as_str().unwrap());
    let subset = mint(narrow.clone(), json!({"name": "child", "scopes": ["usage"]})).await;
    assert_eq!((subset.status, subset.json["scopes"].clone()), (201, json!(["usage"])), "{}", subset.text);
    assert_eq!(h.get("/api/v1/tokens", &narrow).await.status, 200, "keys may list");
}

/// Asserts that `jwt` is refused with 401 `unauthenticated`, a reason containing `why`,
/// without the token in the answer, and that its subject was not provisioned.
async fn refused(h: &Harness, jwt: &str, sub: &str, why: &str) {
    h.canary(jwt);
    let reply = h.get("/api/v1/me", jwt).await;
    assert_eq!((reply.status, reply.code()), (401, "unauthenticated"), "{why}: {}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let detail = reply.json["detail"].as_str().unwrap();
    assert!(detail.contains(why), "expected `{why}` in: {detail}");
    assert!(!reply.text.contains(jwt), "the token is never echoed");
    assert!(h.store().user_by_external_id(sub).await.unwrap().is_none(), "nothing provisioned for {sub}");
}

/// `nbf` is honoured (with the 30 s leeway), and a token valid for longer than the
/// configured horizon (24 h by default) is refused: a leaked long-lived token is not a
/// permanent key.
async fn jwts_are_refused_before_nbf_and_beyond_the_lifetime_horizon(db: TestDb) {
    let h = Harness::new(db).await;
    let now = chrono::Utc::now().timestamp();
    refused(
        &h,
        &hs256(json!({"sub": "early", "nbf": now + 600, "exp": now + 3600})),
        "early",
        "not valid yet (`nbf` is in the future)",
    )
    .await;
    refused(
        &h,
        &hs256(json!({"sub": "forever", "exp": now + 7 * 24 * 3600})),
        "forever",
        "`exp` lies further in the future than this keygate accepts (86400 s at most, jwt_max_lifetime_secs)",
    )
    .await;
    refused(&h, &hs256(json!({"sub": "nobody", "exp": now - 3600})), "nobody", "expired").await;

    // Within the leeway and within the horizon: accepted.
    let skewed = hs256(json!({"sub": "skewed", "nbf": now + 10, "exp": now + 23 * 3600}));
    h.canary(&skewed);
    let me = h.get("/api/v1/me", &skewed).await;
    assert_eq!((me.status, me.json["user"]["external_id"].as_str()), (200, Some("skewed")), "{}", me.text);
    let started = hs256(json!({"sub": "started", "nbf": now - 60, "exp": now + 3600}));
    h.canary(&started);
    assert_eq!(h.get("/api/v1/me", &started).await.status, 200);

    // A shorter horizon is configurable.
    let short = Harness::with(
        TestDb::sqlite(),
        Setup {
            jwt: keygate_service::jwt::JwtOptions {
                max_lifetime: std::time::Duration::from_secs(600),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    refused(&short, &hs256(json!({"sub": "hour", "exp": now + 3600})), "hour", "(600 s at most").await;
    let ok = hs256(json!({"sub": "minutes", "exp": now + 300}));
    short.canary(&ok);
    assert_eq!(short.get("/api/v1/me", &ok).await.status, 200);
}

/// With `jwt_issuer` and `jwt_audience` set, both claims are required and must match;
/// unset, a token minted for another audience is refused rather than accepted.
async fn jwt_issuer_and_audience_are_checked_when_configured(db: TestDb) {
    let exp = in_an_hour();
    let unconfigured = Harness::new(TestDb::sqlite()).await;
    refused(
        &unconfigured,
        &hs256(json!({"sub": "elsewhere", "aud": "another-app", "exp": exp})),
        "elsewhere",
        "names an audience (`aud`) but this keygate has none configured",
    )
    .await;
    let plain = hs256(json!({"sub": "plain", "iss": "whoever", "exp": exp}));
    unconfigured.canary(&plain);
    assert_eq!(unconfigured.get("/api/v1/me", &plain).await.status, 200, "no issuer configured: any issuer");

    let h = Harness::with(
        db,
        Setup {
            jwt: keygate_service::jwt::JwtOptions {
                issuer: Some("https://auth.example.com".into()),
                audience: Some("keygate".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let iss = "https://auth.example.com";
    refused(&h, &hs256(json!({"sub": "a", "aud": "keygate", "exp": exp})), "a", "the `iss` claim is missing").await;
    refused(
        &h,
        &hs256(json!({"sub": "b", "iss": "https://evil.example.com", "aud": "keygate", "exp": exp})),
        "b",
        "its issuer (`iss`) is not `https://auth.example.com` (jwt_issuer)",
    )
    .await;
    refused(&h, &hs256(json!({"sub": "c", "iss": iss, "exp": exp})), "c", "the `aud` claim is missing").await;
    refused(
        &h,
        &hs256(json!({"sub": "d", "iss": iss, "aud": "billing", "exp": exp})),
        "d",
        "its audience (`aud`) does not name `keygate` (jwt_audience)",
    )
    .await;
    for (sub, aud) in [("e", json!("keygate")), ("f", json!(["billing", "keygate"]))] {
        let jwt = hs256(json!({"sub": sub, "iss": iss, "aud": aud, "exp": exp}));
        h.canary(&jwt);
        let me = h.get("/api/v1/me", &jwt).await;
        assert_eq!((me.status, me.json["user"]["external_id"].as_str()), (200, Some(sub)), "{}", me.text);
    }
}

/// A harness whose login throttle runs on a clock the test moves.
async fn throttled(db: TestDb, per_account: usize, per_source: usize) -> (Harness, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let login_throttle = ThrottleOptions {
        per_account,
        per_source,
        window: Duration::from_secs(15 * 60),
        clock: Clock::Manual(clock.clone()),
        ..Default::default()
    };
    (Harness::with(db, Setup { login_throttle, ..Default::default() }).await, clock)
}

async fn admin(h: &Harness, email: &str, password: &str) {
    h.canary(password);
    keygate_service::accounts::create_admin(
        &**h.store(),
        email,
        &keygate_vault::SecretText::new(password.into()),
        &keygate_service::audit::Actor::cli(),
    )
    .await
    .unwrap();
}

/// A login from `source` (as a real listener would record it), or from nowhere known.
async fn login(h: &Harness, email: &str, password: &str, source: Option<&str>) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(json!({"email": email, "password": password}).to_string()))
        .unwrap();
    if let Some(ip) = source {
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    }
    let reply = h.send(request).await;
    if reply.status == 200 {
        h.canary(reply.json["token"].as_str().unwrap());
    }
    reply
}

fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

/// The default policy: 5 attempts per email in 15 minutes. The 6th is refused with 429 and
/// Retry-After before the password is checked (even the right one); another email is
/// unaffected; once the window has passed, the right password works again. (That a
/// success resets the count is a unit test of `throttle`.)
async fn password_guessing_is_throttled_per_account_before_any_hashing(db: TestDb) {
    let (h, clock) = throttled(db, 5, 20).await;
    let password = "CANARY-correct-horse-battery";
    admin(&h, "root@example.com", password).await;
    admin(&h, "ops@example.com", "CANARY-ops-staple-battery").await;
    for i in 0..5 {
        let wrong = login(&h, "root@example.com", &format!("wrong-guess-{i}"), None).await;
        assert_eq!((wrong.status, wrong.code()), (401, "unauthenticated"), "{}", wrong.text);
        clock.advance(Duration::from_secs(10));
    }
    let sixth = login(&h, "Root@Example.com ", "wrong-guess-6", None).await;
    assert_eq!((sixth.status, sixth.code()), (429, "rate_limited"), "{}", sixth.text);
    assert_eq!(sixth.headers["content-type"], "application/problem+json");
    assert_eq!(retry_after(&sixth), 15 * 60 - 50, "until the first attempt leaves the window");
    assert!(sixth.json["detail"].as_str().unwrap().contains("try again in 850 s"), "{}", sixth.text);
    let right = login(&h, "root@example.com", password, None).await;
    assert_eq!(right.status, 429, "the right password does not get past the throttle either");

    let other = login(&h, "ops@example.com", "wrong-guess", None).await;
    assert_eq!(other.status, 401, "another email is unaffected: {}", other.text);
    assert_eq!(login(&h, "ops@example.com", "CANARY-ops-staple-battery", None).await.status, 200);

    // A password typed into the email box is throttled like any email, and not recorded.
    let typed = "canary-password-typed-as-email";
    h.canary(typed);
    for _ in 0..5 {
        assert_eq!(login(&h, typed, "x", None).await.status, 401);
    }
    assert_eq!(login(&h, typed, "x", None).await.status, 429);

    clock.advance(Duration::from_secs(15 * 60));
    let after = login(&h, "root@example.com", password, None).await;
    assert_eq!(after.status, 200, "after the window: {}", after.text);

    let token = after.json["token"].as_str().unwrap();
    let logins = h.get("/api/v1/admin/audit?action=auth.login&limit=100", token).await;
    let events = logins.json["events"].as_array().unwrap();
    let throttled: Vec<&Value> = events.iter().filter(|e| e["detail"]["throttled"].is_string()).collect();
    assert_eq!(throttled.len(), 3, "two for root, one for the typed password: {}", logins.text);
    assert!(throttled.iter().all(|e| e["result"] == "denied"));
    assert!(!logins.text.contains(typed), "{}", logins.text);
}

/// Past 20 attempts from one address (3 here), in 15 minutes, any email is refused from
/// there; other addresses are not.
async fn password_guessing_is_throttled_per_source_address(db: TestDb) {
    let (h, clock) = throttled(db, 5, 3).await;
    let password = "CANARY-source-horse-battery";
    admin(&h, "root@example.com", password).await;
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        assert_eq!(login(&h, email, "guess", Some("203.0.113.7")).await.status, 401);
    }
    let refused = login(&h, "d@example.com", "guess", Some("203.0.113.7")).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"), "{}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("from this address"), "{}", refused.text);
    assert!(retry_after(&refused) >= 1);
    assert_eq!(login(&h, "root@example.com", password, Some("203.0.113.7")).await.status, 429);
    assert_eq!(login(&h, "root@example.com", password, Some("198.51.100.1")).await.status, 200, "another address");
    clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(login(&h, "root@example.com", password, Some("203.0.113.7")).await.status, 200);
}
