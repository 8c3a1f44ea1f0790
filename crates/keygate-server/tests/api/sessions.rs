//! Sandbox sessions: `proxy`-only tokens for some providers, until they expire or are
//! revoked, within their own caps; usage and audit rows carry the session id.

use crate::pages::person;
use crate::support::*;
use keygate_core::{AuditAction, AuditResult, TokenId};
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, AuditFilter};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

both_backends!(
    sessions_are_minted_listed_and_revoked_and_bad_requests_say_why,
    a_session_token_calls_only_its_providers_natively_and_unified,
    an_expired_session_is_refused,
    a_revoked_session_is_refused_at_once_here_and_on_a_replica,
    a_sessions_request_cap_is_exact_under_concurrency,
    a_sessions_token_cap_lowers_the_output_maximum_then_refuses,
    a_session_token_cannot_mint_or_manage_anything,
    no_token_but_a_page_session_opens_the_pages,
    a_caller_who_hangs_up_is_charged_what_was_reserved,
    only_a_credential_that_may_call_providers_mints_a_session,
    nothing_minted_outlives_the_delegated_token_that_minted_it,
    sessions_are_started_shown_once_and_revoked_on_the_page,
);

fn chat(max_tokens: u64) -> Value {
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
}

/// Mints a session through the API; panics unless 201. Returns (id, token).
async fn mint(h: &Harness, caller: &Caller, body: Value) -> (String, String) {
    let reply = h.post("/api/v1/sessions", &caller.token, body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.json["token"].as_str().unwrap().to_owned();
    h.canary(&token);
    (reply.json["id"].as_str().unwrap().to_owned(), token)
}

/// A user with their own OpenAI and Anthropic keys.
async fn with_keys(h: &Harness, email: &str) -> Caller {
    let caller = h.user(email).await;
    h.add_key(&caller, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&caller, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    caller
}

async fn audit(h: &Harness, action: AuditAction) -> Vec<keygate_core::AuditEvent> {
    h.store().audit_events(&AuditFilter { action: Some(action), ..Default::default() }).await.unwrap()
}

async fn sessions_are_minted_listed_and_revoked_and_bad_requests_say_why(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let bob = h.user("bob@example.com").await;
    let reply = h
        .post(
            "/api/v1/sessions",
            &alice.token,
            json!({"name": "agent room", "providers": ["openai", "anthropic", "openai"], "ttl_seconds": 600, "max_requests": 7}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.json["token"].as_str().unwrap().to_owned();
    h.canary(&token);
    assert!(token.starts_with("kg_"), "{token}");
    assert_eq!(reply.json["name"], "agent room");
    assert_eq!(reply.json["providers"], json!(["anthropic", "openai"]));
    assert_eq!((reply.json["max_requests"].clone(), reply.json["max_tokens"].clone()), (json!(7), Value::Null));
    let id = reply.json["id"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<chrono::Utc> = serde_json::from_value(reply.json["expires_at"].clone()).unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::seconds(500) && ttl <= chrono::Duration::seconds(600), "{ttl}");

    let listed = h.get("/api/v1/sessions", &alice.token).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let sessions = listed.json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{}", listed.text);
    assert_eq!(sessions[0]["id"], id.as_str());
    assert_eq!(sessions[0]["spent"], json!({"requests": 0, "tokens": 0}));
    assert!(!listed.text.contains(&token), "the token is shown once");
    // A session is listed as a session, not among the caller's tokens.
    let tokens = h.get("/api/v1/tokens", &alice.token).await;
    assert!(!tokens.text.contains(&id), "{}", tokens.text);
    assert_eq!(h.get("/api/v1/sessions", &bob.token).await.json["sessions"], json!([]));

    // Someone else's session, or a plain token, is not found.
    assert_eq!(h.delete(&format!("/api/v1/sessions/{id}"), &bob.token).await.status, 404);
    let plain = h.post("/api/v1/tokens", &alice.token, json!({"name": "plain"})).await;
    h.canary(plain.json["token"].as_str().unwrap());
    let plain_id = plain.json["id"].as_str().unwrap();
    assert_eq!(h.delete(&format!("/api/v1/sessions/{plain_id}"), &alice.token).await.code(), "not_found");
    let revoked = h.delete(&format!("/api/v1/sessions/{id}"), &alice.token).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    assert_eq!(h.get("/api/v1/sessions", &alice.token).await.json["sessions"], json!([]));
    let created = audit(&h, AuditAction::SessionCreate).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].target_id.as_deref(), Some(id.as_str()));
    assert!(created[0].detail.as_deref().unwrap().contains("\"max_requests\":7"), "{:?}", created[0].detail);
    assert_eq!(audit(&h, AuditAction::SessionRevoke).await[0].target_id.as_deref(), Some(id.as_str()));

    // Bad input: a clear code and what is wrong, and nothing minted.
    let bad = [
        (json!({"name": "x", "providers": ["openai"], "ttl_seconds": 0}), "invalid_request", "7 days"),
        (json!({"name": "x", "providers": ["openai"], "ttl_seconds": 8 * 86_400}), "invalid_request", "7 days"),
        (json!({"name": "x", "providers": [], "ttl_seconds": 60}), "invalid_request", "providers"),
        (json!({"name": "x", "providers": ["nope"], "ttl_seconds": 60}), "unknown_provider", "nope"),
        (json!({"name": " ", "providers": ["openai"], "ttl_seconds": 60}), "invalid_request", "name"),
        (
            json!({"name": "x", "providers": ["openai"], "ttl_seconds": 60, "max_requests": 0}),
            "invalid_request",
            "max_requests",
        ),
        (
            json!({"name": "x", "providers": ["openai"], "ttl_seconds": 60, "max_tokens": 0}),
            "invalid_request",
            "max_tokens",
        ),
        (json!({"name": "x", "providers": ["openai"]}), "invalid_request", "ttl_seconds"),
        (json!({"name": "x", "providers": ["openai"], "ttl_seconds": -5}), "invalid_request", "-5"),
    ];
    for (body, code, says) in bad {
        let reply = h.post("/api/v1/sessions", &alice.token, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (422, code), "{body}: {}", reply.text);
        assert!(reply.json["detail"].as_str().unwrap().contains(says), "{body}: {}", reply.text);
    }
    assert_eq!(audit(&h, AuditAction::SessionCreate).await.len(), 1, "nothing minted");
}

async fn a_session_token_calls_only_its_providers_natively_and_unified(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let (id, token) = mint(&h, &alice, json!({"name": "ci job", "providers": ["openai"], "ttl_seconds": 600})).await;

    let served = h.proxy(&token, "openai", "v1/chat/completions", chat(20), &[]).await;
    assert_eq!(served.status, 200, "{}", served.text);
    let refused = h
        .proxy(&token, "anthropic", "v1/messages", json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5}), &[])
        .await;
    assert_eq!((refused.status, refused.code()), (403, "provider_not_in_session"), "{}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("openai"), "{}", refused.text);
    let denied = audit(&h, AuditAction::SessionRefused).await;
    assert_eq!(denied.len(), 1);
    assert_eq!((denied[0].target_id.as_deref(), denied[0].result), (Some(id.as_str()), AuditResult::Denied));
    assert!(denied[0].detail.as_deref().unwrap().contains("anthropic"));

    // The unified endpoint: the model's provider must be the session's; `auto` picks
    // among its providers only (anthropic comes first in the default priority), and
    // /v1/models lists only them.
    let unified = h.post("/v1/chat/completions", &token, chat(20)).await;
    assert_eq!(unified.status, 200, "{}", unified.text);
    let other = h
        .post("/v1/chat/completions", &token, json!({"model": "anthropic/claude-sonnet-4-20250514", "messages": []}))
        .await;
    assert_eq!((other.status, other.json["error"]["code"].as_str()), (403, Some("provider_not_in_session")));
    let auto = h.post("/v1/chat/completions", &token, json!({"model": "auto", "max_tokens": 5, "messages": []})).await;
    assert_eq!(auto.status, 200, "{}", auto.text);
    assert_eq!(h.mock.requests().last().unwrap().path, "/v1/chat/completions", "served by OpenAI");
    let models = h.get("/v1/models", &token).await;
    let ids: Vec<&str> = models.json["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|m| m.starts_with("openai/")), "{ids:?}");
    let everything = h.get("/v1/models", &alice.token).await;
    assert!(everything.text.contains("anthropic/"), "the owner's own token still sees every provider");

    // Every call the session made is metered with its id.
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let session = Some(TokenId::from_uuid(id.parse().unwrap()));
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.session_id == session), "{events:?}");
    let listed = h.get("/api/v1/sessions", &alice.token).await;
    assert_eq!(listed.json["sessions"][0]["spent"]["requests"], 3, "{}", listed.text);
}

async fn an_expired_session_is_refused(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let (_, token) = mint(&h, &alice, json!({"name": "brief", "providers": ["openai"], "ttl_seconds": 1})).await;
    // The session lives one second: within a little more, it is refused, cached or not.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        let reply = h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await;
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((refused.status, refused.code()), (401, "unauthenticated"), "{}", refused.text);
    assert_eq!(h.get("/api/v1/sessions", &alice.token).await.json["sessions"], json!([]), "no longer listed");
}

async fn a_revoked_session_is_refused_at_once_here_and_on_a_replica(db: TestDb) {
    let h = Harness::new(db).await;
    let replica = h.replica().await;
    // The replica's background watcher, as `keygate serve` runs it (polling quickly here).
    let _watch = replica.services.watch_changes(Duration::from_millis(20));
    let alice = with_keys(&h, "alice@example.com").await;
    let (id, token) = mint(&h, &alice, json!({"name": "room", "providers": ["openai"], "ttl_seconds": 600})).await;
    let body = chat(5);
    assert_eq!(h.proxy(&token, "openai", "v1/chat/completions", body.clone(), &[]).await.status, 200);
    let there = h.proxy_via(&replica, &token, "openai", "v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(there.status, 200, "the replica has the session cached: {}", there.text);
    assert_eq!(h.delete(&format!("/api/v1/sessions/{id}"), &alice.token).await.status, 204);
    let here = h.proxy(&token, "openai", "v1/chat/completions", body.clone(), &[]).await;
    assert_eq!((here.status, here.code()), (401, "unauthenticated"), "at once: {}", here.text);
    // The replica hears of it within the change-propagation bound (its next change poll;
    // on PostgreSQL, a notification).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = h.proxy_via(&replica, &token, "openai", "v1/chat/completions", body.clone(), &[]).await;
        if reply.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica still serves a revoked session: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_sessions_request_cap_is_exact_under_concurrency(db: TestDb) {
    let h = Arc::new(Harness::new(db).await);
    let alice = with_keys(&h, "alice@example.com").await;
    let (id, token) =
        mint(&h, &alice, json!({"name": "capped", "providers": ["openai"], "ttl_seconds": 600, "max_requests": 5}))
            .await;
    let before = h.mock.served();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (h, token) = (h.clone(), token.clone());
            tokio::spawn(async move { h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await })
        })
        .collect();
    let (mut served, mut capped) = (0, 0);
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status {
            200 => served += 1,
            429 => {
                assert_eq!(reply.code(), "session_cap_reached", "{}", reply.text);
                assert!(reply.json["detail"].as_str().unwrap().contains("5 requests"), "{}", reply.text);
                capped += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert_eq!((served, capped), (5, 15), "exactly max_requests served");
    assert_eq!(h.mock.served() - before, 5, "the provider saw exactly 5 calls");
    let listed = h.get("/api/v1/sessions", &alice.token).await;
    assert_eq!(listed.json["sessions"][0]["spent"]["requests"], 5, "{}", listed.text);
    let refused = audit(&h, AuditAction::SessionRefused).await;
    assert_eq!(refused.len(), 15);
    assert!(refused
        .iter()
        .all(|e| e.target_id.as_deref() == Some(id.as_str())
            && e.detail.as_deref().unwrap().contains("session_cap_reached")));
}

async fn a_sessions_token_cap_lowers_the_output_maximum_then_refuses(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    h.mock.configure(|c| {
        c.input_tokens = 10;
        c.output_tokens = 500; // capped by each call's max_tokens, as providers do
    });
    let cap = 200u64;
    let (_, token) =
        mint(&h, &alice, json!({"name": "budget", "providers": ["openai"], "ttl_seconds": 600, "max_tokens": cap}))
            .await;
    // A batch would generate where the cap cannot follow: refused before anything is sent.
    let batch = json!({"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let refused = h.proxy(&token, "openai", "v1/batches", batch, &[]).await;
    assert_eq!((refused.status, refused.code()), (403, "endpoint_not_allowed"), "{}", refused.text);
    // A call asking for more than the session has left goes out with its maximum lowered.
    let first = h.proxy(&token, "openai", "v1/chat/completions", chat(50_000), &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let sent: Value = serde_json::from_str(&h.mock.requests().pop().unwrap().body).unwrap();
    let asked = sent["max_tokens"].as_u64().unwrap();
    assert!(asked < cap, "the provider was asked for {asked}, more than the session's {cap}");
    // Then calls go on until the cap cannot cover one more.
    let mut last = first;
    for _ in 0..10 {
        last = h.proxy(&token, "openai", "v1/chat/completions", chat(50), &[]).await;
        if last.status != 200 {
            break;
        }
    }
    assert_eq!((last.status, last.code()), (429, "session_cap_reached"), "{}", last.text);
    assert!(last.json["detail"].as_str().unwrap().contains("token cap"), "{}", last.text);
    h.flush().await;
    let used: i64 = h
        .store()
        .usage_events(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.input_tokens + e.output_tokens)
        .sum();
    assert!(used > 0 && used as u64 <= cap, "spent {used} of {cap}");
    let listed = h.get("/api/v1/sessions", &alice.token).await;
    assert_eq!(listed.json["sessions"][0]["spent"]["tokens"].as_i64(), Some(used), "settled to what was used");
}

async fn a_session_token_cannot_mint_or_manage_anything(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let (id, token) = mint(&h, &alice, json!({"name": "room", "providers": ["openai"], "ttl_seconds": 600})).await;
    let session = json!({"name": "again", "providers": ["openai"], "ttl_seconds": 60});
    let attempts = [
        h.post("/api/v1/tokens", &token, json!({"name": "escape"})).await,
        h.post("/api/v1/sessions", &token, session).await,
        h.get("/api/v1/sessions", &token).await,
        h.delete(&format!("/api/v1/sessions/{id}"), &token).await,
        h.get("/api/v1/keys", &token).await,
        h.post("/api/v1/keys", &token, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await,
        h.delete("/api/v1/keys?provider=openai", &token).await,
        h.get("/api/v1/tokens", &token).await,
        // Nor learn who it acts for, or which key would pay.
        h.get("/api/v1/me", &token).await,
        h.get("/api/v1/quota", &token).await,
        h.get("/api/v1/providers", &token).await,
        h.post("/api/v1/resolve", &token, json!({"provider": "openai"})).await,
    ];
    for reply in attempts {
        assert_eq!((reply.status, reply.code()), (403, "forbidden"), "{}", reply.text);
    }
    assert_eq!(h.get("/api/v1/keys", &alice.token).await.json["keys"].as_array().unwrap().len(), 2, "untouched");
    assert_eq!(h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await.status, 200, "still works");
}

async fn sessions_are_started_shown_once_and_revoked_on_the_page(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut b, alice) = person(&h, "alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let form = b.get("/settings/sessions").await;
    assert_eq!(form.status, 200, "{}", form.html);
    assert!(form.html.contains("No active sessions") && form.html.contains("href=\"/settings/sessions\""));
    let fields = [
        ("name", "workroom"),
        ("provider", "openai"),
        ("ttl_seconds", "3600"),
        ("max_requests", "3"),
        ("max_tokens", ""),
    ];
    let created = b.submit("/settings/sessions", "/settings/sessions", &fields).await;
    assert_eq!(created.status, 200, "{}", created.html);
    let at = created.html.find("value=\"kg_").expect("the new session's token is shown once");
    let token = created.html[at + 7..].split('"').next().unwrap().to_owned();
    h.canary(&token);
    assert!(created.html.contains("shows it this once") && created.html.contains("data-copy"));
    assert_eq!(h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await.status, 200, "the token works");
    let listed = b.get("/settings/sessions").await;
    assert!(!listed.html.contains("value=\"kg_"), "never shown again");
    assert!(
        listed.html.contains("workroom") && listed.html.contains("1 of 3"),
        "spent against the cap: {}",
        listed.html
    );
    // Bad input is said in words, and nothing is minted.
    let bad = b.submit("/settings/sessions", "/settings/sessions", &[("name", "x"), ("ttl_seconds", "3600")]).await;
    assert_eq!(bad.status, 422, "{}", bad.html);
    assert!(bad.html.contains("providers"), "{}", bad.html);
    let bad = b
        .submit(
            "/settings/sessions",
            "/settings/sessions",
            &[("name", "x"), ("provider", "openai"), ("ttl_seconds", "3600"), ("max_requests", "many")],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.html);
    // Revoked with the page's CSRF field; without it, nothing happens.
    let principal = h.services().authenticate(&alice.token, None).await.unwrap();
    let id = h.services().list_sessions(&principal).await.unwrap()[0].session.token.id;
    let action = format!("/settings/sessions/{id}/revoke");
    assert_eq!(b.post(&action, &[]).await.status, 403, "no CSRF field");
    let revoked = b.submit("/settings/sessions", &action, &[]).await;
    assert_eq!(revoked.location.as_deref(), Some("/settings/sessions?done=revoked"));
    assert_eq!(h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await.status, 401);
}

/// A sandbox's token, or any API token, set as the pages' cookie is no session: the
/// pages send it to sign in, and switching workspace (which issues a full session) is out
/// of reach. API callers cannot mint a token under the pages' reserved name either.
async fn no_token_but_a_page_session_opens_the_pages(db: TestDb) {
    let h = Harness::new(db).await;
    let (_, alice) = person(&h, "alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let (_, session) = mint(&h, &alice, json!({"name": "room", "providers": ["openai"], "ttl_seconds": 600})).await;
    let proxy_only = h.post("/api/v1/tokens", &alice.token, json!({"name": "ci", "scopes": ["proxy"]})).await;
    assert_eq!(proxy_only.status, 201, "{}", proxy_only.text);
    let proxy_only = proxy_only.json["token"].as_str().unwrap().to_owned();
    h.canary(&proxy_only);
    let workspace = h.get("/api/v1/me", &alice.token).await.json["workspace"]["id"].as_str().unwrap().to_owned();
    for token in [&session, &proxy_only, &alice.token] {
        let mut b = crate::pages::Browser::new(&h);
        b.set_cookie("kg_session", token);
        let page = b.get("/settings/api-keys").await;
        assert_eq!(page.status, 303, "{}", page.html);
        assert!(page.location.as_deref().is_some_and(|l| l.starts_with("/login")), "{:?}", page.location);
        let switched = b.post("/workspace/switch", &[("csrf_token", "x"), ("workspace_id", &workspace)]).await;
        assert_eq!(switched.status, 303, "{}", switched.html);
        assert!(switched.location.as_deref().is_some_and(|l| l.starts_with("/login")), "{:?}", switched.location);
        assert!(b.cookie("kg_session").is_none_or(|c| c == token), "no new session was issued");
    }
    for name in ["web session", " Web Session ", "login", "LOGIN"] {
        let reserved = h.post("/api/v1/tokens", &alice.token, json!({"name": name})).await;
        assert!(reserved.status == 400 || reserved.status == 422, "{}", reserved.text);
        assert!(reserved.text.contains("reserved"), "{}", reserved.text);
    }
}

/// A caller who hangs up while the call is on its way gets nothing back: the provider may
/// still do (and bill) the work, so the session keeps the request and the tokens it held,
/// and the usage row says 499 with that estimate.
async fn a_caller_who_hangs_up_is_charged_what_was_reserved(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let body =
        json!({"name": "room", "providers": ["openai"], "ttl_seconds": 600, "max_requests": 2, "max_tokens": 10_000});
    let (id, token) = mint(&h, &alice, body).await;
    h.mock.configure(|c| c.latency_ms = 3_000);
    for _ in 0..2 {
        let call = h.proxy(&token, "openai", "v1/chat/completions", chat(500), &[]);
        assert!(tokio::time::timeout(Duration::from_millis(300), call).await.is_err(), "the caller hung up first");
    }
    h.mock.configure(|c| c.latency_ms = 0);
    let refused = h.proxy(&token, "openai", "v1/chat/completions", chat(5), &[]).await;
    assert_eq!((refused.status, refused.code()), (429, "session_cap_reached"), "{}", refused.text);
    h.flush().await;
    let listed = h.get("/api/v1/sessions", &alice.token).await;
    let spent = &listed.json["sessions"][0]["spent"];
    assert_eq!(spent["requests"], 2, "{}", listed.text);
    assert!(spent["tokens"].as_u64().is_some_and(|t| t >= 2 * 500), "the reservations were kept: {}", listed.text);
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let abandoned: Vec<_> = events.iter().filter(|e| e.status == 499).collect();
    assert_eq!(abandoned.len(), 2, "{events:?}");
    assert!(abandoned.iter().all(|e| e.estimated && e.input_tokens >= 500), "{abandoned:?}");
    assert!(abandoned.iter().all(|e| e.session_id.map(|s| s.to_string()) == Some(id.clone())), "{abandoned:?}");
}

async fn only_a_credential_that_may_call_providers_mints_a_session(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let keys_only = h.post("/api/v1/tokens", &alice.token, json!({"name": "admin", "scopes": ["keys"]})).await;
    assert_eq!(keys_only.status, 201, "{}", keys_only.text);
    let keys_only = keys_only.json["token"].as_str().unwrap().to_owned();
    h.canary(&keys_only);
    let body = json!({"name": "room", "providers": ["openai"], "ttl_seconds": 600});
    let refused = h.post("/api/v1/sessions", &keys_only, body).await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"), "{}", refused.text);
}

/// A short-lived delegated token cannot mint a lasting one: tokens and sessions it mints
/// end when it does, whatever they ask for.
async fn nothing_minted_outlives_the_delegated_token_that_minted_it(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = with_keys(&h, "alice@example.com").await;
    let ends = chrono::Utc::now() + chrono::Duration::seconds(90);
    let body = json!({"name": "short", "scopes": ["keys", "proxy"], "expires_at": ends.to_rfc3339()});
    let short = h.post("/api/v1/tokens", &alice.token, body).await;
    assert_eq!(short.status, 201, "{}", short.text);
    let short = short.json["token"].as_str().unwrap().to_owned();
    h.canary(&short);
    let expiry = |v: &Value| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v["expires_at"].clone()).ok();
    let child = h.post("/api/v1/tokens", &short, json!({"name": "child"})).await;
    assert_eq!(child.status, 201, "{}", child.text);
    h.canary(child.json["token"].as_str().unwrap());
    assert!(expiry(&child.json).is_some_and(|e| e <= ends), "{}", child.text);
    let body = json!({"name": "room", "providers": ["openai"], "ttl_seconds": 604_800});
    let session = h.post("/api/v1/sessions", &short, body).await;
    assert_eq!(session.status, 201, "{}", session.text);
    h.canary(session.json["token"].as_str().unwrap());
    assert!(expiry(&session.json).is_some_and(|e| e <= ends), "{}", session.text);
    // A person's own token (the harness's, like a sign-in's) sets no such limit.
    let lasting = h
        .post(
            "/api/v1/sessions",
            &alice.token,
            json!({"name": "week", "providers": ["openai"], "ttl_seconds": 604_800}),
        )
        .await;
    assert!(
        expiry(&lasting.json).is_some_and(|e| e > chrono::Utc::now() + chrono::Duration::days(6)),
        "{}",
        lasting.text
    );
    h.canary(lasting.json["token"].as_str().unwrap());
}
