//! `auto` with fallback (the `auto_fallback` setting): a provider that answers 429 or 5xx
//! before anything reached the caller hands the call to the next provider in the
//! priority order; the failed attempt is settled and metered; a 400, a named provider or
//! the setting off relay the provider's answer.

use crate::support::*;
use keygate_mock::Fault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};

both_backends!(
    auto_falls_back_on_429_and_5xx_when_the_setting_is_on,
    auto_fallback_refunds_the_failed_attempts_demo_reservation,
    without_the_setting_or_on_a_400_the_providers_answer_is_relayed,
);

fn chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn hi_auto() -> Value {
    json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
}

fn provider_of(r: &Reply) -> Option<String> {
    r.headers.get("x-keygate-provider").map(|v| v.to_str().unwrap().to_owned())
}

fn fault(h: &Harness, status: u16, times: u32) {
    h.mock.configure(|c| {
        c.fault = Some(Fault::Status { status });
        c.fault_times = Some(times);
    });
}

async fn auto_falls_back_on_429_and_5xx_when_the_setting_is_on(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let ivan = h.user("ivan@example.com").await;
    let anthropic = h.add_key(&ivan, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    let openai = h.add_key(&ivan, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    // Off by default; turned on through the admin settings API.
    let mut settings = h.get("/api/v1/admin/settings", &root.token).await.json;
    assert_eq!(settings["auto_fallback"], false, "{settings}");
    settings["auto_fallback"] = json!(true);
    let saved = h.put("/api/v1/admin/settings", &root.token, settings).await;
    assert_eq!((saved.status, saved.json["auto_fallback"].as_bool()), (200, Some(true)), "{}", saved.text);

    for (status, stream) in [(429, false), (503, false), (429, true), (500, true)] {
        h.mock.clear_requests();
        fault(&h, status, 1);
        let mut body = hi_auto();
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let reply = h.post("/v1/chat/completions", &ivan.token, body).await;
        assert_eq!(reply.status, 200, "{status} {stream}: {}", reply.text);
        assert_eq!(provider_of(&reply).as_deref(), Some("openai"), "the provider that answered");
        assert_eq!(reply.headers["x-keygate-credential-id"], openai.as_str());
        if stream {
            let text: String = chunks(&reply.text)
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(text, "Hello from keygate-mock!", "{}", reply.text);
            assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
            assert!(!reply.text.contains("\"error\""), "nothing of the failed attempt reached the caller");
        } else {
            assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
        }
        let paths: Vec<String> = h.mock.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/v1/messages", "/v1/chat/completions"], "Anthropic first, then OpenAI");
    }
    // Without a fault, `auto` still takes Anthropic first.
    let plain = h.post("/v1/chat/completions", &ivan.token, hi_auto()).await;
    assert_eq!(provider_of(&plain).as_deref(), Some("anthropic"));
    // The last provider's failure is relayed: nothing is left to fall back to.
    fault(&h, 503, 2);
    let both = h.post("/v1/chat/completions", &ivan.token, hi_auto()).await;
    assert_eq!((both.status, provider_of(&both).as_deref()), (503, Some("openai")), "{}", both.text);

    // Usage: each failed attempt metered as a failed call of its own provider and key,
    // each answer under the provider that answered.
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let mut seen: Vec<(String, i32)> = events.iter().map(|e| (e.provider.clone(), e.status)).collect();
    seen.sort();
    let mut expected: Vec<(String, i32)> = [
        ("anthropic", 429),
        ("anthropic", 503),
        ("anthropic", 429),
        ("anthropic", 500),
        ("openai", 200),
        ("openai", 200),
        ("openai", 200),
        ("openai", 200),
        ("anthropic", 200),
        ("anthropic", 503),
        ("openai", 503),
    ]
    .iter()
    .map(|(p, s)| ((*p).to_owned(), *s))
    .collect();
    expected.sort();
    assert_eq!(seen, expected);
    let failed = events.iter().find(|e| e.provider == "anthropic" && e.status == 429).unwrap();
    assert_eq!(failed.credential_id.map(|c| c.to_string()).as_deref(), Some(anthropic.as_str()));
    assert_eq!((failed.input_tokens, failed.output_tokens), (0, 0));
}

async fn auto_fallback_refunds_the_failed_attempts_demo_reservation(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "anthropic", "sk-ant-api03-", true).await;
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    h.policy(|p| p.auto_fallback = true).await;
    let judy = h.user("judy@example.com").await;

    fault(&h, 529, 1);
    let reply = h.post("/v1/chat/completions", &judy.token, hi_auto()).await;
    assert_eq!((reply.status, provider_of(&reply).as_deref()), (200, Some("openai")), "{}", reply.text);
    assert_eq!(reply.headers["x-keygate-key-source"], "operator_demo");
    h.flush().await;
    let quota = h.get("/api/v1/quota", &judy.token).await;
    let demo = &quota.json["demo"];
    assert_eq!(
        demo["tokens_per_day"].as_i64().unwrap() - demo["tokens_remaining_today"].as_i64().unwrap(),
        18,
        "only OpenAI's 11 + 7 are spent; Anthropic's reservation went back: {}",
        quota.text
    );
}

async fn without_the_setting_or_on_a_400_the_providers_answer_is_relayed(db: TestDb) {
    let h = Harness::new(db).await;
    let kim = h.user("kim@example.com").await;
    h.add_key(&kim, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.add_key(&kim, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;

    // Off (the default): Anthropic's 429 comes back in OpenAI's shape; nothing else is tried.
    h.mock.clear_requests();
    fault(&h, 429, 1);
    let limited = h.post("/v1/chat/completions", &kim.token, hi_auto()).await;
    assert_eq!((limited.status, provider_of(&limited).as_deref()), (429, Some("anthropic")), "{}", limited.text);
    assert_eq!(limited.json["error"]["code"], "rate_limit_error", "{}", limited.text);
    assert!(limited.headers.contains_key("retry-after"));
    assert_eq!(h.mock.requests().len(), 1);

    // On, but a 400 is the request's own problem: relayed, never tried elsewhere.
    h.policy(|p| p.auto_fallback = true).await;
    h.mock.clear_requests();
    fault(&h, 400, 1);
    let bad = h.post("/v1/chat/completions", &kim.token, hi_auto()).await;
    assert_eq!((bad.status, provider_of(&bad).as_deref()), (400, Some("anthropic")), "{}", bad.text);
    assert_eq!(h.mock.requests().len(), 1);

    // Only `auto` falls back: a call naming its provider gets that provider's answer.
    h.mock.clear_requests();
    fault(&h, 503, 1);
    let hi = json!({"model": "anthropic", "messages": [{"role": "user", "content": "hi"}]});
    let named = h.post("/v1/chat/completions", &kim.token, hi).await;
    assert_eq!((named.status, provider_of(&named).as_deref()), (503, Some("anthropic")), "{}", named.text);
    assert_eq!(h.mock.requests().len(), 1);
}
