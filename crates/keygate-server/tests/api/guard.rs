//! The prompt guard on proxied calls: each kind blocked (422 `prompt_blocked`, nothing
//! sent, an audit row, nothing reserved), redacted (the provider gets the redacted body,
//! the caller a header saying so), off, not applied to non-AI providers, and overridden
//! per workspace. The values found are canaries: no response or log line may carry them.

use crate::support::*;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};

both_backends!(
    each_kind_is_blocked_and_nothing_reaches_the_provider,
    a_blocked_call_reserves_nothing_from_the_demo_or_the_platform_limits,
    redact_mode_forwards_the_redacted_body_and_says_so,
    off_mode_and_non_ai_providers_forward_the_body_unchanged,
    a_workspace_override_wins_over_the_operators_default,
    the_unified_endpoint_is_guarded_too,
    escaped_and_compressed_secrets_do_not_slip_past,
);

const PEM_BODY: &str = "MIIEowIBAAKCAQEAguardCANARYpem0001xyzQ8vP2";
const AWS: &str = "AKIAGUARDCANARY00001";
const CARD: &str = "4666 1760 3137 2159";
const PROVIDER_KEY: &str = "sk-ant-api03-guardCANARY0123456789xyz";

fn pem() -> String {
    format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----")
}

fn canaries(h: &Harness) {
    for value in [PEM_BODY, AWS, CARD, &CARD.replace(' ', ""), PROVIDER_KEY] {
        h.canary(value);
    }
}

/// An OpenAI chat body whose second message (index 1) says `text`.
fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o", "max_tokens": 20, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": format!("please look at this:\n{text}\nthanks")}]},
    ]})
}

async fn events(h: &Harness, action: &str) -> Vec<keygate_core::AuditEvent> {
    let all = h.store().audit_events(&Default::default()).await.unwrap();
    all.into_iter().filter(|e| e.action.as_str() == action).collect()
}

async fn each_kind_is_blocked_and_nothing_reaches_the_provider(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&alice, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.policy(|p| p.prompt_guard.kinds.push(keygate_core::guard::Kind::ProviderKey)).await;
    h.mock.clear_requests();

    let cases = [
        (pem(), "private_key"),
        (format!("aws_access_key_id = {AWS}"), "aws_access_key"),
        (format!("my card is {CARD}, exp 12/27"), "card_number"),
        (format!("ANTHROPIC_API_KEY={PROVIDER_KEY}"), "provider_key"),
    ];
    for (text, kind) in &cases {
        let reply = h.proxy(&alice.token, "openai", "v1/chat/completions", chat(text), &[]).await;
        assert_eq!((reply.status, reply.code()), (422, "prompt_blocked"), "{kind}: {}", reply.text);
        let detail = reply.json["detail"].as_str().unwrap();
        assert!(detail.contains(kind) && detail.contains("in message 1"), "{kind}: {detail}");
    }
    // Anthropic's dialect, the secret in a tool result three messages down.
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20, "system": "be brief", "messages": [
        {"role": "user", "content": "read the file"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "~/.aws"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": format!("[default]\n{AWS}")}]},
    ]});
    let reply = h.proxy(&alice.token, "anthropic", "v1/messages", body, &[]).await;
    assert_eq!((reply.status, reply.code()), (422, "prompt_blocked"), "{}", reply.text);
    assert!(reply.json["detail"].as_str().unwrap().contains("aws_access_key) in message 2"), "{}", reply.text);
    // A body that is not JSON: found all the same, its place unknown.
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/proxy/openai/v1/completions")
        .header("authorization", format!("Bearer {}", alice.token))
        .header("content-type", "text/plain")
        .body(axum::body::Body::from(format!("prompt {AWS}")))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.code(), "prompt_blocked");
    assert!(reply.json["detail"].as_str().unwrap().contains("message index unknown"), "{}", reply.text);

    assert!(h.mock.requests().is_empty(), "nothing reached the provider: {:?}", h.mock.requests());
    let blocked = events(&h, "prompt.blocked").await;
    assert_eq!(blocked.len(), 6);
    for event in &blocked {
        assert_eq!(event.result.as_str(), "denied");
        let detail: Value = serde_json::from_str(event.detail.as_deref().unwrap()).unwrap();
        assert!(detail["provider"] == "openai" || detail["provider"] == "anthropic", "{detail}");
        assert_eq!(detail.as_object().unwrap().len(), 2, "provider and findings only: {detail}");
        for f in detail["findings"].as_array().unwrap() {
            assert_eq!(f.as_object().unwrap().len(), 2, "kind and message index only: {f}");
        }
        assert_eq!(event.workspace_id, Some(alice.workspace));
    }
    let in_message_1 = blocked.iter().filter_map(|e| e.detail.as_deref()).filter(|d| d.contains("\"message\":1"));
    assert_eq!(in_message_1.count(), 4, "{blocked:?}");
    // The admin API shows them; no value anywhere in it (swept as every response is).
    let root = h.super_admin("root@example.com").await;
    let listed = h.get("/api/v1/admin/audit?action=prompt.blocked", &root.token).await;
    assert_eq!(listed.json["events"].as_array().unwrap().len(), 6, "{}", listed.text);
}

async fn a_blocked_call_reserves_nothing_from_the_demo_or_the_platform_limits(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    h.operator_key(&root, "anthropic", "sk-ant-api03-", false).await;
    let demo = h.user("demo@example.com").await;
    h.mock.clear_requests();
    let before = h.get("/api/v1/quota", &demo.token).await;
    for _ in 0..3 {
        let reply = h.proxy(&demo.token, "openai", "v1/chat/completions", chat(AWS), &[]).await;
        assert_eq!(reply.code(), "prompt_blocked", "{}", reply.text);
        let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20,
            "messages": [{"role": "user", "content": format!("card {CARD}")}]});
        let reply = h.proxy(&demo.token, "anthropic", "v1/messages", body, &[]).await;
        assert_eq!(reply.code(), "prompt_blocked", "{}", reply.text);
    }
    h.flush().await;
    let after = h.get("/api/v1/quota", &demo.token).await;
    assert_eq!(after.json, before.json, "nothing reserved, nothing used, the demo window not started");
    assert_eq!(after.json["demo"]["tokens_remaining_today"], after.json["demo"]["tokens_per_day"]);
    assert!(h.mock.requests().is_empty());
    // And the next clean call goes out.
    assert_eq!(h.chat(&demo.token).await.status, 200);
}

async fn redact_mode_forwards_the_redacted_body_and_says_so(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.policy(|p| p.prompt_guard.mode = keygate_core::guard::Mode::Redact).await;
    h.mock.clear_requests();

    let body = json!({"model": "gpt-4o", "max_tokens": 20, "messages": [
        {"role": "user", "content": format!("card {CARD} please")},
        {"role": "user", "content": format!("{}\nand {AWS}", pem())},
    ]});
    let reply = h.proxy(&alice.token, "openai", "v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-keygate-prompt-guard"], "redacted=private_key,aws_access_key,card_number");

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    let sent: Value = serde_json::from_str(&seen[0].body).expect("the redacted body is JSON");
    assert_eq!(sent["messages"][0]["content"], "card [REDACTED:card_number] please");
    assert_eq!(sent["messages"][1]["content"], "[REDACTED:private_key]\nand [REDACTED:aws_access_key]");
    assert_eq!((sent["model"].clone(), sent["max_tokens"].clone()), (json!("gpt-4o"), json!(20)));
    let length = seen[0].headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.clone());
    assert_eq!(length, Some(seen[0].body.len().to_string()), "Content-Length is the redacted body's");
    for value in [PEM_BODY, AWS, CARD] {
        assert!(!seen[0].body.contains(value));
    }
    let redacted = events(&h, "prompt.redacted").await;
    assert_eq!(redacted.len(), 1);
    assert!(!redacted[0].detail.as_deref().unwrap().contains("4666"));

    // A clean call is not touched and carries no header.
    let reply = h.chat(&alice.token).await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get("x-keygate-prompt-guard").is_none());
    assert!(!h.mock.requests()[1].body.contains("REDACTED"));
}

async fn off_mode_and_non_ai_providers_forward_the_body_unchanged(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&alice, json!({"provider": "resend", "secret": h.valid_key("re_")})).await;
    h.mock.clear_requests();

    // Resend is not an AI provider: an email may carry a card number, under block.
    let email = json!({"from": "a@example.com", "to": "b@example.com", "subject": "receipt",
        "text": format!("card {CARD}, key {AWS}")});
    let reply = h.proxy(&alice.token, "resend", "emails", email.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.headers.get("x-keygate-prompt-guard").is_none());
    assert_eq!(serde_json::from_str::<Value>(&h.mock.requests()[0].body).unwrap(), email);

    h.policy(|p| p.prompt_guard.mode = keygate_core::guard::Mode::Off).await;
    let body = chat(&format!("{} {AWS} {CARD}", pem()));
    let reply = h.proxy(&alice.token, "openai", "v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.headers.get("x-keygate-prompt-guard").is_none());
    let sent: Value = serde_json::from_str(&h.mock.requests()[1].body).unwrap();
    assert_eq!(sent["messages"], body["messages"], "forwarded unchanged");
    assert!(events(&h, "prompt.blocked").await.is_empty());
}

async fn a_workspace_override_wins_over_the_operators_default(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let root = h.super_admin("root@example.com").await;
    let alice = h.user("alice@example.com").await;
    let bob = h.user("bob@example.com").await;
    for caller in [&alice, &bob] {
        h.add_key(caller, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    }
    let path = format!("/api/v1/admin/workspaces/{}/prompt-guard", alice.workspace);
    let shown = h.get(&path, &root.token).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(
        shown.json,
        json!({"override": null, "effective": {"mode": "block", "kinds": ["private_key", "aws_access_key", "card_number"]}})
    );
    // Only super-admins; a setting that cannot work is refused; an unknown workspace is 404.
    assert_eq!(h.put(&path, &alice.token, json!({"mode": "off"})).await.status, 403);
    let bad = h.put(&path, &root.token, json!({"mode": "block", "kinds": []})).await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_request"), "{}", bad.text);
    let unknown = h.put(&path, &root.token, json!({"mode": "sometimes", "kinds": []})).await;
    assert!(matches!(unknown.status, 400 | 422), "{}", unknown.text);
    let nowhere = format!("/api/v1/admin/workspaces/{}/prompt-guard", uuid::Uuid::now_v7());
    assert_eq!(h.get(&nowhere, &root.token).await.status, 404);

    let set = h.put(&path, &root.token, json!({"mode": "redact", "kinds": ["aws_access_key"]})).await;
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(set.json["override"], json!({"mode": "redact", "kinds": ["aws_access_key"]}));
    let mine = h.proxy(&alice.token, "openai", "v1/chat/completions", chat(AWS), &[]).await;
    assert_eq!(
        (mine.status, mine.headers["x-keygate-prompt-guard"].to_str().unwrap()),
        (200, "redacted=aws_access_key")
    );
    let card = h.proxy(&alice.token, "openai", "v1/chat/completions", chat(CARD), &[]).await;
    assert_eq!(card.status, 200, "card numbers are not among alice's workspace's kinds");
    let theirs = h.proxy(&bob.token, "openai", "v1/chat/completions", chat(AWS), &[]).await;
    assert_eq!(theirs.code(), "prompt_blocked", "another workspace keeps the operator's default");

    let cleared = h.delete(&path, &root.token).await;
    assert_eq!((cleared.status, cleared.json["override"].clone()), (200, Value::Null), "{}", cleared.text);
    let mine = h.proxy(&alice.token, "openai", "v1/chat/completions", chat(AWS), &[]).await;
    assert_eq!(mine.code(), "prompt_blocked");
    let audited = h.get("/api/v1/admin/audit?action=settings.update", &root.token).await;
    assert_eq!(audited.json["events"].as_array().unwrap().len(), 2, "{}", audited.text);
}

async fn the_unified_endpoint_is_guarded_too(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.mock.clear_requests();
    let mut body = chat(&format!("aws_access_key_id = {AWS}"));
    body["model"] = json!("anthropic/claude-sonnet-4-20250514");
    let reply = h.post("/v1/chat/completions", &alice.token, body.clone()).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], "prompt_blocked", "OpenAI's error shape: {}", reply.text);
    assert!(h.mock.requests().is_empty(), "nothing reached the provider");

    h.policy(|p| p.prompt_guard.mode = keygate_core::guard::Mode::Redact).await;
    let reply = h.post("/v1/chat/completions", &alice.token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-keygate-prompt-guard"], "redacted=aws_access_key");
    let sent = h.mock.requests().pop().unwrap().body;
    assert!(sent.contains("[REDACTED:aws_access_key]") && !sent.contains(AWS), "{sent}");
}

async fn escaped_and_compressed_secrets_do_not_slip_past(db: TestDb) {
    let h = Harness::new(db).await;
    canaries(&h);
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&alice, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.mock.clear_requests();
    // `\u0041KIA…` is what the provider reads as `AKIA…`.
    let escaped = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"\u0041{}"}}]}}"#, &AWS[1..]);
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", alice.token))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(escaped.clone()))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!((reply.status, reply.code()), (422, "prompt_blocked"), "{}", reply.text);
    let unified = escaped.replace("gpt-4o", "anthropic/claude-sonnet-4-20250514");
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {}", alice.token))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(unified))
        .unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], "prompt_blocked");
    // A compressed AI body is refused: the guard could not read it.
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", alice.token))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(axum::body::Body::from(vec![0x1f, 0x8b, 0, 0]))
        .unwrap();
    assert_eq!(h.send(request).await.status, 415);
    assert!(h.mock.requests().is_empty(), "nothing reached the provider");

    // Redact: a secret in `model` cannot be redacted out of the route: refused.
    h.policy(|p| p.prompt_guard.mode = keygate_core::guard::Mode::Redact).await;
    let mut body = chat("hello");
    body["model"] = json!(format!("anthropic/{AWS}"));
    let reply = h.post("/v1/chat/completions", &alice.token, body).await;
    assert_eq!((reply.status, reply.json["error"]["code"].as_str()), (422, Some("prompt_blocked")), "{}", reply.text);
    assert!(h.mock.requests().is_empty());
}
