//! The gateway: credentials injected by the provider's scheme, streams passed through and
//! metered, the resolution chain, limits, revocation, upstream faults.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_core::Role;
use keygate_mock::Fault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(
    connect_and_trace_are_refused_before_any_key_is_touched,
    a_head_answer_keeps_the_length_the_provider_announced,
    the_users_key_is_injected_and_the_token_never_reaches_the_provider,
    streams_pass_through_and_usage_is_metered,
    the_resolution_chain_in_every_combination,
    concurrent_demo_calls_never_overspend_the_allowance,
    a_rate_limit_of_n_lets_exactly_n_through,
    revocation_takes_effect_on_the_very_next_call,
    a_change_made_through_one_replica_reaches_the_others_at_their_next_poll,
    upstream_faults_come_back_clear_and_scrubbed,
    unauthenticated_calls_reach_nothing_and_write_nothing,
    a_body_without_a_model_gets_the_keys_model,
    a_body_without_a_model_gets_the_providers_default,
    a_body_naming_a_model_is_never_changed,
);

async fn the_users_key_is_injected_and_the_token_never_reaches_the_provider(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let openai = h.valid_key("sk-proj-");
    let anthropic = h.valid_key("sk-ant-api03-");
    let openai_id = h.add_key(&alice, json!({"provider": "openai", "secret": openai})).await;
    h.add_key(&alice, json!({"provider": "anthropic", "secret": anthropic})).await;
    h.mock.clear_requests();

    let reply = h.chat(&alice.token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(reply.headers["x-keygate-key-source"], "user");
    assert_eq!(reply.headers["x-keygate-credential-id"], openai_id.as_str());
    let body =
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.proxy(&alice.token, "anthropic", "v1/messages", body, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let query = h.proxy(&alice.token, "openai", "v1/models?limit=2", json!({}), &[]).await;
    assert_eq!(query.status, 200);

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].credential.as_deref(), seen[0].credential_via.as_deref()),
        (Some(openai.as_str()), Some("authorization"))
    );
    assert_eq!(
        (seen[1].credential.as_deref(), seen[1].credential_via.as_deref()),
        (Some(anthropic.as_str()), Some("x-api-key"))
    );
    assert_eq!((seen[0].path.as_str(), seen[2].query.as_deref()), ("/v1/chat/completions", Some("limit=2")));
    for request in &seen {
        let everything = format!("{request:?}");
        assert!(!everything.contains(&alice.token), "the keygate token reached the provider: {everything}");
        assert!(!everything.contains("kg_"), "{everything}");
    }
}

async fn streams_pass_through_and_usage_is_metered(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    let id = h.add_key(&bob, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&bob, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.mock.clear_requests();

    // The caller did not ask for usage: keygate asks, reads it, and hides the extra chunk.
    let stream = json!({"model": "gpt-4o", "stream": true, "messages": []});
    let reply = h.proxy(&bob.token, "openai", "v1/chat/completions", stream.clone(), &[]).await;
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    assert!(!reply.text.contains("\"usage\""), "the injected usage chunk is not passed on: {}", reply.text);
    assert!(h.mock.requests()[0].body.contains("\"include_usage\":true"));
    // A caller who asked gets it.
    let mut asked = stream.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let reply = h.proxy(&bob.token, "openai", "v1/chat/completions", asked, &[]).await;
    assert!(reply.text.contains("\"prompt_tokens\":11"), "{}", reply.text);
    // Non-streamed, and Anthropic's streamed dialect.
    h.chat(&bob.token).await;
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20, "stream": true, "messages": []});
    let reply = h.proxy(&bob.token, "anthropic", "v1/messages", body, &[]).await;
    assert!(reply.text.contains("message_stop"));

    h.flush().await;
    let by_provider = h.get("/api/v1/usage?group_by=provider", &bob.token).await;
    assert_eq!(by_provider.status, 200, "{}", by_provider.text);
    let rows = by_provider.json["rows"].as_array().unwrap();
    let openai = rows.iter().find(|r| r["key"] == "openai").unwrap();
    assert_eq!(
        (openai["requests"].as_i64(), openai["input_tokens"].as_i64(), openai["output_tokens"].as_i64()),
        (Some(3), Some(33), Some(21))
    );
    let anthropic = rows.iter().find(|r| r["key"] == "anthropic").unwrap();
    assert_eq!((anthropic["input_tokens"].as_i64(), anthropic["output_tokens"].as_i64()), (Some(11), Some(7)));
    // gpt-4o: 11 in at $2.50/M and 7 out at $10/M, three times.
    let expected = 3.0 * (11.0 * 2.5 + 7.0 * 10.0) / 1e6;
    assert!((openai["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{openai}");
    let by_model = h.get("/api/v1/usage?group_by=model", &bob.token).await;
    assert!(by_model.json["rows"].as_array().unwrap().iter().any(|r| r["key"] == "gpt-4o"));
    let key = h.get(&format!("/api/v1/keys/{id}"), &bob.token).await;
    assert_eq!(key.json["usage"]["requests"], 3);
    assert_eq!(key.json["usage"]["input_tokens"], 33);
    assert!(key.json["last_used_at"].is_string());
}

async fn the_resolution_chain_in_every_combination(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let owner = h.user("owner@example.com").await;
    let carol = h.join(&h.user("carol@example.com").await, owner.workspace, Role::Member).await;
    let source = |r: &Reply| r.headers.get("x-keygate-key-source").map(|v| v.to_str().unwrap().to_owned());

    let none = h.chat(&carol.token).await;
    assert_eq!((none.status, none.code()), (403, "no_credential"), "{}", none.text);
    assert!(none.json["detail"].as_str().unwrap().contains("POST /api/v1/keys"), "says where to add a key");

    h.operator_key(&root, "openai", "sk-proj-", false).await;
    assert_eq!(source(&h.chat(&carol.token).await).as_deref(), Some("platform"));
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    let demo = h.chat(&carol.token).await;
    assert_eq!(source(&demo).as_deref(), Some("operator_demo"));
    assert!(demo.headers.contains_key("x-keygate-demo-remaining-tokens"));
    h.add_key(&owner, json!({"provider": "openai", "scope": "workspace", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(source(&h.chat(&carol.token).await).as_deref(), Some("workspace"));
    let own = h.add_key(&carol, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(source(&h.chat(&carol.token).await).as_deref(), Some("user"));

    // The dry run explains it.
    let dry = h.post("/api/v1/resolve", &carol.token, json!({"provider": "openai"})).await;
    assert_eq!((dry.json["source"].as_str(), dry.json["credential_id"].as_str()), (Some("user"), Some(own.as_str())));
    let dry = h.post("/api/v1/resolve", &carol.token, json!({"provider": "openai", "policy": "operator-only"})).await;
    assert_eq!(dry.json["source"], "platform", "{}", dry.text);
    let reasons: Vec<&str> =
        dry.json["skipped"].as_array().unwrap().iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("operator-only")) && reasons.iter().any(|r| r.contains("your own key")),
        "{reasons:?}"
    );

    // An own key turns the demo off, even where the own key itself may not be used.
    let dave = h.user("dave@example.com").await;
    assert_eq!(source(&h.chat(&dave.token).await).as_deref(), Some("operator_demo"));
    h.add_key(&dave, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let operator_only = h
        .proxy(
            &dave.token,
            "openai",
            "v1/chat/completions",
            json!({"model": "gpt-4o"}),
            &[("x-keygate-policy", "operator-only")],
        )
        .await;
    assert_eq!(source(&operator_only).as_deref(), Some("platform"));
    let customer_only = h
        .proxy(
            &dave.token,
            "openai",
            "v1/chat/completions",
            json!({"model": "gpt-4o"}),
            &[("x-keygate-policy", "customer-only")],
        )
        .await;
    assert_eq!(source(&customer_only).as_deref(), Some("user"));
    let erin = h.user("erin@example.com").await;
    let refused = h
        .proxy(
            &erin.token,
            "openai",
            "v1/chat/completions",
            json!({"model": "gpt-4o"}),
            &[("x-keygate-policy", "customer-only")],
        )
        .await;
    assert_eq!(refused.code(), "no_credential", "customer-only never touches an operator key");
    let operator_seen =
        h.mock.requests().iter().filter(|r| r.credential.as_deref().is_some_and(|c| c.contains("CANARY"))).count();
    assert!(operator_seen > 0);

    // A tier without BYOK keeps the key stored but unused.
    h.policy(|p| p.tiers.get_mut("community").unwrap().byok = false).await;
    let frank = h.user("frank@example.com").await;
    h.add_key(&frank, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    let gated = h
        .proxy(
            &frank.token,
            "anthropic",
            "v1/messages",
            json!({"model": "claude-sonnet-4-20250514", "max_tokens": 5}),
            &[],
        )
        .await;
    assert_eq!((gated.status, gated.code()), (403, "byok_not_in_plan"), "{}", gated.text);
}

async fn concurrent_demo_calls_never_overspend_the_allowance(db: TestDb) {
    let h = std::sync::Arc::new(Harness::new(db).await);
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    let limit = 2_000u64;
    h.policy(|p| p.demo.tokens_per_day = limit).await;
    h.mock.configure(|c| {
        c.input_tokens = 10;
        c.output_tokens = 500; // capped by each call's max_tokens (50), as providers do
    });
    let user = h.user("demo@example.com").await;
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let (h, token) = (h.clone(), user.token.clone());
            tokio::spawn(async move { h.chat(&token).await })
        })
        .collect();
    let mut ok = 0;
    let mut exhausted = 0;
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status {
            200 => ok += 1,
            429 => {
                assert_eq!(reply.code(), "quota_exhausted");
                assert!(reply.headers.contains_key("retry-after"));
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    h.flush().await;
    let used: i64 = h
        .store()
        .usage_events(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.input_tokens + e.output_tokens)
        .sum();
    // Each call uses 10 + 50 tokens, under its reservation (body / 3 + max_tokens 50):
    // the allowance holds exactly.
    assert!(used as u64 <= limit, "spent {used} of {limit}");
    assert!(ok >= 15 && exhausted > 0, "ok {ok}, exhausted {exhausted}");
    let quota = h.get("/api/v1/quota", &user.token).await;
    assert_eq!(quota.json["demo"]["tokens_per_day"], limit);
    assert_eq!(
        quota.json["demo"]["tokens_remaining_today"].as_u64().unwrap(),
        limit.saturating_sub(used as u64),
        "settled to what was used"
    );
    assert_eq!(quota.json["demo"]["days_remaining"], 30);
}

async fn a_rate_limit_of_n_lets_exactly_n_through(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "openai", "sk-proj-", false).await;
    h.policy(|p| {
        let community = p.tiers.get_mut("community").unwrap();
        community.requests_per_minute = 1000;
        community.requests_per_day = 7;
    })
    .await;
    let user = h.user("limited@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let reply = h.chat(&user.token).await;
        if reply.status == 429 {
            assert_eq!(reply.code(), "rate_limited");
            assert!(reply.headers.contains_key("retry-after"));
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 7, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3);
    let quota = h.get("/api/v1/quota", &user.token).await;
    assert_eq!(
        (quota.json["platform"]["requests_per_day"].as_u64(), quota.json["platform"]["remaining_today"].as_u64()),
        (Some(7), Some(0))
    );
}

async fn revocation_takes_effect_on_the_very_next_call(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let user = h.user("revoke@example.com").await;
    let id = h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat(&user.token).await.status, 200);
    assert_eq!(h.patch(&format!("/api/v1/keys/{id}"), &user.token, json!({"status": "disabled"})).await.status, 200);
    assert_eq!(h.chat(&user.token).await.code(), "no_credential");
    assert_eq!(h.patch(&format!("/api/v1/keys/{id}"), &user.token, json!({"status": "active"})).await.status, 200);
    assert_eq!(h.chat(&user.token).await.status, 200);
    assert_eq!(h.delete(&format!("/api/v1/keys/{id}"), &user.token).await.status, 204);
    assert_eq!(h.chat(&user.token).await.code(), "no_credential");

    h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat(&user.token).await.status, 200);
    h.patch(&format!("/api/v1/admin/workspaces/{}", user.workspace), &root.token, json!({"status": "paused"})).await;
    let paused = h.chat(&user.token).await;
    assert_eq!((paused.status, paused.code()), (403, "workspace_inactive"));
    h.patch(&format!("/api/v1/admin/workspaces/{}", user.workspace), &root.token, json!({"status": "active"})).await;
    assert_eq!(h.chat(&user.token).await.status, 200);

    let tokens = h.get("/api/v1/tokens", &user.token).await;
    let token_id = tokens.json["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(h.delete(&format!("/api/v1/tokens/{token_id}"), &user.token).await.status, 204);
    assert_eq!(h.chat(&user.token).await.status, 401);
}

async fn a_change_made_through_one_replica_reaches_the_others_at_their_next_poll(db: TestDb) {
    let h = Harness::new(db).await;
    let replica = h.replica().await;
    let user = h.user("replicas@example.com").await;
    let id = h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat_via(&replica, &user.token).await.status, 200);

    // Disabled through the first process: the replica's cache still holds the key until
    // it looks at the change epoch, then never again.
    assert_eq!(h.patch(&format!("/api/v1/keys/{id}"), &user.token, json!({"status": "disabled"})).await.status, 200);
    assert_eq!(h.chat_via(&replica, &user.token).await.status, 200, "served from the replica's cache until its poll");
    assert!(replica.services.poll_changes().await.unwrap());
    assert_eq!(h.chat_via(&replica, &user.token).await.code(), "no_credential");
    assert!(!replica.services.poll_changes().await.unwrap(), "nothing changed since");

    // Two polls at once after a policy change elsewhere: whichever answers, and whatever
    // it answers, the new policy is in force by then (no "nothing changed" mid-reload).
    h.policy(|p| p.demo.tokens_per_day = 4321).await;
    let poll = || async {
        let changed = replica.services.poll_changes().await.unwrap();
        (changed, replica.services.policy().demo.tokens_per_day)
    };
    let (first, second) = tokio::join!(poll(), poll());
    assert_eq!((first.1, second.1), (4321, 4321), "both polls returned with the new policy in force");
    assert!(first.0 ^ second.0, "exactly one of the two polls did the reload: {first:?} {second:?}");

    // A revoked token, likewise; the background watcher does the polling on its own.
    let _watch = replica.services.watch_changes(std::time::Duration::from_millis(20));
    let tokens = h.get("/api/v1/tokens", &user.token).await;
    let token_id = tokens.json["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(h.delete(&format!("/api/v1/tokens/{token_id}"), &user.token).await.status, 204);
    let mut status = 0;
    for _ in 0..100 {
        status = h.chat_via(&replica, &user.token).await.status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 401, "the replica saw the revocation");

    // A policy change, too: the replica reads it again when the epoch moves. (Its watcher
    // is still polling, so wait for it rather than race it with a poll of our own.)
    h.policy(|p| p.demo.tokens_per_day = 1234).await;
    for _ in 0..100 {
        if replica.services.policy().demo.tokens_per_day == 1234 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(replica.services.policy().demo.tokens_per_day, 1234, "the replica read the new policy");
}

async fn upstream_faults_come_back_clear_and_scrubbed(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("faults@example.com").await;
    let id = h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    for (status, expect) in [(429u16, 429u16), (500, 500)] {
        h.mock.configure(|c| {
            c.fault = Some(Fault::Status { status });
            c.fault_times = Some(1);
        });
        let reply = h.chat(&user.token).await;
        assert_eq!(reply.status, expect, "{}", reply.text);
        assert!(reply.text.contains("mock fault"), "the provider's own error is relayed: {}", reply.text);
        if status == 429 {
            assert_eq!(reply.headers["retry-after"], "1");
        }
    }
    // The stream breaks off: the caller's stream is cut too, and what passed is metered.
    h.mock.configure(|c| {
        c.fault = Some(Fault::ResetMidStream { after_chunks: 2 });
        c.fault_times = Some(1);
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", user.token))
        .header("content-type", "application/json")
        .body(Body::from(json!({"model": "gpt-4o", "stream": true}).to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(keygate_server::router(h.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(axum::body::to_bytes(response.into_body(), 1 << 20).await.is_err(), "the caller sees the stream break");
    assert_eq!(h.chat(&user.token).await.status, 200, "keygate keeps serving");

    // The provider rejects the key: its error (which echoes the key) is relayed scrubbed,
    // and the key is marked invalid so the next call does not use it.
    h.mock.configure(|c| c.valid_keys.clear());
    let rejected = h.chat(&user.token).await;
    assert_eq!(rejected.status, 401);
    assert!(rejected.text.contains("Incorrect API key provided: [REDACTED]"), "{}", rejected.text);
    let key = h.get(&format!("/api/v1/keys/{id}"), &user.token).await;
    assert_eq!(key.json["validity"], "invalid");
    assert_eq!(h.chat(&user.token).await.code(), "no_credential");
    h.flush().await;
    let statuses: Vec<i32> =
        h.store().usage_events(&Default::default()).await.unwrap().iter().map(|e| e.status).collect();
    assert!(statuses.contains(&500) && statuses.contains(&429) && statuses.contains(&401), "{statuses:?}");
}

async fn unauthenticated_calls_reach_nothing_and_write_nothing(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("owner@example.com").await;
    h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.mock.clear_requests();
    for token in ["kg_nope_nope", "garbage", ""] {
        let reply = h.chat(token).await;
        assert_eq!((reply.status, reply.code()), (401, "unauthenticated"), "{}", reply.text);
    }
    let proxy_less = h.post("/api/v1/tokens", &user.token, json!({"name": "keys only", "scopes": ["keys"]})).await;
    let narrow = proxy_less.json["token"].as_str().unwrap().to_owned();
    h.canary(&narrow);
    assert_eq!(h.chat(&narrow).await.status, 403, "a token without the proxy scope");
    h.flush().await;
    assert!(h.mock.requests().is_empty());
    assert!(h.store().usage_events(&Default::default()).await.unwrap().is_empty());
}

both_backends!(metrics_count_calls_and_show_no_database_queries_in_steady_state);

async fn metrics_count_calls_and_show_no_database_queries_in_steady_state(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("metrics@example.com").await;
    h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat(&user.token).await.status, 200); // warms the caches
    let queries = |text: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with("keygate_proxy_db_queries_total")).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = h.scrape().await;
    for _ in 0..20 {
        assert_eq!(h.chat(&user.token).await.status, 200);
    }
    let after = h.scrape().await;
    assert_eq!(after.headers["content-type"], "text/plain; version=0.0.4");
    assert_eq!(queries(&after.text), queries(&before.text), "steady state: no database query per call\n{}", after.text);
    assert!(
        after.text.contains("keygate_proxy_requests_total{provider=\"openai\",source=\"user\",status=\"200\"} 21"),
        "{}",
        after.text
    );
    assert!(after.text.contains("keygate_overhead_seconds_count 21"));
    assert!(after.text.contains("keygate_upstream_latency_seconds_bucket{provider=\"openai\",le=\"+Inf\"} 21"));
    assert!(after.text.contains("keygate_cache_requests_total{cache=\"principals\",result=\"hit\"}"));
    assert!(!after.text.contains("CANARY") && !after.text.contains("kg_"), "no secret in metrics");
}

both_backends!(upstream_connections_are_pooled_and_calls_after_one_given_up_on_are_answered);

async fn upstream_connections_are_pooled_and_calls_after_one_given_up_on_are_answered(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("pooled@example.com").await;
    let key = h.valid_key("sk-proj-");
    h.add_key(&alice, json!({"provider": "openai", "secret": key})).await;
    let before = h.mock.connections_accepted();
    for _ in 0..6 {
        let reply = h.chat(&alice.token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    // Six calls one after another on one pooled connection (two, if one call looked
    // while the connection was still finishing the answer before).
    let used = h.mock.connections_accepted() - before;
    assert!((1..=2).contains(&used), "{used} upstream connections for six calls in a row");

    // A call given up on: its connection is closed, and the calls after it are answered.
    // (That it is never lent again, with its late answer, is pool.rs's unit test, where
    // each answer names its request.)
    h.mock.configure(|c| {
        c.fault = Some(Fault::Delay { ms: UPSTREAM_TIMEOUT.as_millis() as u64 * 3 });
        c.fault_times = Some(1);
    });
    let slow = h.chat(&alice.token).await;
    assert_eq!((slow.status, slow.code()), (504, "upstream_timeout"), "{}", slow.text);
    for _ in 0..3 {
        let reply = h.chat(&alice.token).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    }
}

both_backends!(a_timeout_is_a_clear_504_and_a_disconnect_still_meters_what_passed);

async fn a_timeout_is_a_clear_504_and_a_disconnect_still_meters_what_passed(db: TestDb) {
    use futures_util::StreamExt;
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "anthropic", "sk-ant-api03-", true).await;
    let user = h.user("leaver@example.com").await;

    h.mock.configure(|c| {
        c.fault = Some(Fault::Delay { ms: UPSTREAM_TIMEOUT.as_millis() as u64 * 3 });
        c.fault_times = Some(1);
    });
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 100, "stream": true, "messages": []});
    let slow = h.proxy(&user.token, "anthropic", "v1/messages", body.clone(), &[]).await;
    assert_eq!((slow.status, slow.code()), (504, "upstream_timeout"), "{}", slow.text);

    // A demo call whose caller leaves after the first event: what passed is metered and
    // the rest of the reservation goes back to the allowance.
    h.mock.configure(|c| {
        c.chunk_interval_ms = 100;
        c.chunks = 20;
    });
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/anthropic/v1/messages")
        .header("x-api-key", user.token.as_str())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(keygate_server::router(h.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body().into_data_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(stream);
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let left = events.iter().find(|e| e.status == 200).expect("the abandoned call is metered");
    assert_eq!((left.input_tokens, left.output_tokens, left.key_source.as_str()), (11, 1, "operator_demo"));
    let quota = h.get("/api/v1/quota", &user.token).await;
    assert_eq!(quota.json["demo"]["tokens_remaining_today"], 10_000 - 12, "settled to what passed: {}", quota.text);

    // An OpenAI stream reports usage only at its end: a caller who leaves before it is
    // charged the reservation (input estimate + max_tokens), never nothing.
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    let chat = json!({"model": "gpt-4o", "max_tokens": 100, "stream": true, "messages": []}).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", user.token))
        .header("content-type", "application/json")
        .body(Body::from(chat.clone()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(keygate_server::router(h.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body().into_data_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let reserved = chat.len() as i64 / 3 + 100;
    let quota = h.get("/api/v1/quota", &user.token).await;
    assert_eq!(quota.json["demo"]["tokens_remaining_today"], 10_000 - 12 - reserved, "{}", quota.text);

    // A body with leading whitespace and one field of an odd type is still read: keygate
    // asks for usage and meters the stream's real count (11 + 7 from the mock).
    h.mock.configure(|c| c.chunk_interval_ms = 0);
    let odd = format!("  \n{}", json!({"model": "gpt-4o", "max_tokens": "100", "stream": true, "messages": []}));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", user.token))
        .header("content-type", "application/json")
        .body(Body::from(odd))
        .unwrap();
    let response = tower::ServiceExt::oneshot(keygate_server::router(h.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(!text.contains("\"usage\""), "the usage chunk keygate asked for is not shown: {text}");
    let quota = h.get("/api/v1/quota", &user.token).await;
    assert_eq!(quota.json["demo"]["tokens_remaining_today"], 10_000 - 12 - reserved - 18, "{}", quota.text);
}

both_backends!(query_keys_and_oauth2_tokens_are_injected);

async fn query_keys_and_oauth2_tokens_are_injected(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("maps@example.com").await;
    let mapbox = h.valid_key("pk.eyJ");
    h.add_key(&user, json!({"provider": "mapbox", "secret": mapbox})).await;
    h.canary(SH_CLIENT.1);
    h.add_key(
        &user,
        json!({"provider": "sentinel_hub", "secret": {"client_id": SH_CLIENT.0, "client_secret": SH_CLIENT.1}}),
    )
    .await;
    h.mock.clear_requests();

    let get = |path: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("authorization", format!("Bearer {}", user.token))
            .body(Body::empty())
            .unwrap()
    };
    // The caller's own access_token parameter (here: their keygate token) is replaced.
    let tiles =
        h.send(get(&format!("/proxy/mapbox/geocoding/v5/places/paris.json?limit=1&access_token={}", user.token))).await;
    assert_eq!(tiles.status, 200, "{}", tiles.text);
    let seen = h.mock.requests().pop().unwrap();
    assert_eq!(
        (seen.credential.as_deref(), seen.credential_via.as_deref()),
        (Some(mapbox.as_str()), Some("query:access_token"))
    );
    assert!(seen.query.as_deref().unwrap().starts_with("limit=1&access_token="), "{:?}", seen.query);
    assert!(!seen.query.as_deref().unwrap().contains("kg_"));

    h.mock.clear_requests();
    for _ in 0..3 {
        let reply = h.send(get("/proxy/sentinel_hub/api/v1/catalog/collections")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let seen = h.mock.requests();
    let exchanges = seen.iter().filter(|r| r.path.ends_with("/openid-connect/token")).count();
    assert_eq!(exchanges, 1, "the access token is cached until it expires");
    let calls: Vec<_> = seen.iter().filter(|r| r.path == "/api/v1/catalog/collections").collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|r| r.credential.as_deref().is_some_and(|c| c.starts_with("mock-access-"))));
}

both_backends!(the_demo_allowance_is_never_overspent_whatever_the_request_asks);

/// Concurrent bursts that ask for many choices, use Gemini's field, or name no maximum at
/// all never spend more than the allowance; a call that asks for more than is left goes
/// out with its maximum lowered; once it is spent, callers get 429 quota_exhausted.
async fn the_demo_allowance_is_never_overspent_whatever_the_request_asks(db: TestDb) {
    let h = std::sync::Arc::new(Harness::new(db).await);
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    h.operator_key(&root, "gemini", "AIzaSy", true).await;
    let limit = 10_000u64;
    h.mock.configure(|c| {
        c.input_tokens = 10;
        c.output_tokens = 100_000; // a model that would write as much as it is allowed to
    });
    let bodies = [
        ("openai", "v1/chat/completions", json!({"model": "gpt-4o", "max_tokens": 1000, "n": 8, "messages": []})),
        (
            "gemini",
            "v1beta/models/gemini-2.0-flash:generateContent",
            json!({"contents": [], "generationConfig": {"maxOutputTokens": 1000, "candidateCount": 2}}),
        ),
        ("openai", "v1/chat/completions", json!({"model": "gpt-4o", "messages": []})),
    ];
    for (round, (provider, path, body)) in bodies.into_iter().enumerate() {
        let user = h.user(&format!("burst{round}@example.com")).await;
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let (h, token, body) = (h.clone(), user.token.clone(), body.clone());
                tokio::spawn(async move { h.proxy(&token, provider, path, body, &[]).await })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap();
            assert!(
                reply.status == 200 || (reply.status == 429 && reply.code() == "quota_exhausted"),
                "{}: {}",
                reply.status,
                reply.text
            );
        }
        h.flush().await;
        let used: i64 = h
            .store()
            .usage_events(&Default::default())
            .await
            .unwrap()
            .iter()
            .filter(|e| e.user_id == Some(user.user.id))
            .map(|e| e.input_tokens + e.output_tokens)
            .sum();
        assert!(used as u64 <= limit, "round {round}: spent {used} of {limit}");
        assert!(used as u64 >= limit / 2, "round {round}: the allowance was usable ({used})");

        // Spent (or nearly): the next call is a quota, with when to come back.
        let last = h
            .proxy(&user.token, provider, path, json!({"model": "gpt-4o", "max_tokens": 1000, "messages": []}), &[])
            .await;
        if last.status == 429 {
            assert_eq!(last.code(), "quota_exhausted", "{}", last.text);
            assert!(last.headers.contains_key("retry-after"));
        }
    }

    // One call asking for more than is left is sent with its maximum lowered to fit.
    let user = h.user("capped@example.com").await;
    let reply = h
        .proxy(
            &user.token,
            "openai",
            "v1/chat/completions",
            json!({"model": "gpt-4o", "max_tokens": 50_000, "messages": []}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let cap: u64 = reply.headers["x-keygate-demo-output-cap"].to_str().unwrap().parse().unwrap();
    assert!(cap < limit, "{cap}");
    let sent: serde_json::Value = serde_json::from_str(&h.mock.requests().pop().unwrap().body).unwrap();
    assert_eq!(sent["max_tokens"], cap, "the provider was asked for no more than is left");
    let spent =
        h.proxy(&user.token, "openai", "v1/chat/completions", json!({"model": "gpt-4o", "messages": []}), &[]).await;
    assert_eq!((spent.status, spent.code()), (429, "quota_exhausted"), "{}", spent.text);
    assert!(spent.headers.contains_key("retry-after"));
}

both_backends!(a_stream_cut_before_its_usage_is_recorded_from_what_passed);

/// The provider cuts an OpenAI stream after two content chunks, before its usage chunk:
/// the call is recorded with the text that passed, marked estimated, never as zero.
async fn a_stream_cut_before_its_usage_is_recorded_from_what_passed(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("cut@example.com").await;
    h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.mock.configure(|c| {
        c.fault = Some(Fault::ResetMidStream { after_chunks: 2 });
        c.fault_times = Some(1);
        // Paced like a model, so the chunks reach keygate before the connection resets.
        c.chunk_interval_ms = 30;
    });
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    let request = Request::builder()
        .method(Method::POST)
        .uri("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", user.token))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(keygate_server::router(h.state.clone()), request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut relayed = String::new();
    let mut stream = response.into_body().into_data_stream();
    let mut broke = false;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        match chunk {
            Ok(bytes) => relayed.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => broke = true,
        }
    }
    assert!(broke, "the caller sees the stream break");
    assert!(relayed.contains("\"content\""), "text passed before the cut: {relayed}");
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let cut = events.first().expect("the cut call is metered");
    assert!(cut.estimated, "{cut:?}");
    assert!(cut.output_tokens > 0 && cut.input_tokens > 0, "never zero for a stream that carried text: {cut:?}");

    // A stream that ends normally is recorded exactly as the provider reported it.
    let whole = h.proxy(&user.token, "openai", "v1/chat/completions", body, &[]).await;
    assert_eq!(whole.status, 200);
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let exact = events.iter().find(|e| e.id != cut.id).unwrap();
    assert_eq!((exact.input_tokens, exact.output_tokens, exact.estimated), (11, 7, false), "{exact:?}");
}

both_backends!(a_key_without_a_known_shape_is_still_scrubbed_from_relayed_errors);

async fn a_key_without_a_known_shape_is_still_scrubbed_from_relayed_errors(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("tiles@example.com").await;
    // MapTiler keys have no recognisable prefix: only the exact value can be removed.
    let key = h.valid_key("MT");
    h.add_key(&user, json!({"provider": "maptiler", "secret": key})).await;
    h.mock.configure(|c| c.valid_keys.clear());
    let request = Request::builder()
        .method(Method::GET)
        .uri("/proxy/maptiler/v1/tiles/0/0/0.png")
        .header("authorization", format!("Bearer {}", user.token))
        .body(Body::empty())
        .unwrap();
    // The mock answers like OpenAI here, echoing the key it was given; `send` fails the
    // test if the key comes back.
    let reply = h.send(request).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert!(reply.text.contains("Incorrect API key provided: [REDACTED]"), "{}", reply.text);
}

/// The model each request the mock saw named in its body.
fn models_sent(h: &Harness) -> Vec<Option<String>> {
    h.mock
        .requests()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).ok().and_then(|b| b["model"].as_str().map(str::to_owned))
        })
        .collect()
}

async fn a_body_without_a_model_gets_the_keys_model(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-"), "model": "gpt-4.1-mini"})).await;
    h.add_key(
        &alice,
        json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-"), "model": "claude-haiku-4-5"}),
    )
    .await;
    h.mock.clear_requests();

    let chat = json!({"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.proxy(&alice.token, "openai", "v1/chat/completions", chat.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let streamed = json!({"stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.proxy(&alice.token, "anthropic", "v1/messages", streamed, &[]).await;
    assert!(reply.text.contains("message_stop"), "{}", reply.text);
    assert_eq!(
        models_sent(&h),
        [Some("gpt-4.1-mini".to_owned()), Some("claude-haiku-4-5".to_owned())],
        "the key's model override, in a body whose length is the one sent"
    );
    let sent: serde_json::Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(sent["messages"][0]["content"], "hi", "the rest of the body is kept");
    // Not a generation or embedding call: nothing is added.
    h.mock.clear_requests();
    h.proxy(&alice.token, "openai", "v1/moderations", json!({"input": "hi"}), &[]).await;
    assert_eq!(models_sent(&h), [None]);

    h.flush().await;
    let by_model = h.get("/api/v1/usage?group_by=model", &alice.token).await;
    let models: Vec<&str> =
        by_model.json["rows"].as_array().unwrap().iter().filter_map(|r| r["key"].as_str()).collect();
    assert!(models.contains(&"gpt-4.1-mini") && models.contains(&"claude-haiku-4-5"), "metered by it: {models:?}");
}

async fn a_body_without_a_model_gets_the_providers_default(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&bob, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.mock.clear_requests();
    let default = |id: &str| h.services().catalog().get(id).unwrap().default_model.clone().unwrap();

    let chat = json!({"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.proxy(&bob.token, "openai", "v1/chat/completions", chat.clone(), &[]).await.status, 200);
    assert_eq!(h.proxy(&bob.token, "anthropic", "v1/messages", chat, &[]).await.status, 200);
    assert_eq!(models_sent(&h), [Some(default("openai")), Some(default("anthropic"))]);
}

async fn a_body_naming_a_model_is_never_changed(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    h.add_key(&carol, json!({"provider": "openai", "secret": h.valid_key("sk-proj-"), "model": "gpt-4.1-mini"})).await;
    h.mock.clear_requests();

    let body = json!({"model": "gpt-4o", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.proxy(&carol.token, "openai", "v1/chat/completions", body.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = h.mock.requests();
    assert_eq!(seen[0].body, body.to_string(), "the caller's bytes, unchanged");
}

/// A tunnel or a reflected request is no API call: refused before a key is chosen, and
/// nothing reaches the provider.
async fn connect_and_trace_are_refused_before_any_key_is_touched(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.mock.clear_requests();
    for method in [Method::CONNECT, Method::TRACE] {
        let reply = h.call(method.clone(), "/proxy/openai/v1/models", Some(&alice.token), None).await;
        assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"), "{method}: {}", reply.text);
    }
    assert!(h.mock.requests().is_empty(), "nothing reached the provider");
}

/// HEAD has no body to scrub or meter: the length the provider announces (what a GET
/// would carry) reaches the caller over a real connection, and no body follows.
async fn a_head_answer_keeps_the_length_the_provider_announced(db: TestDb) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let get = h.call(Method::GET, "/proxy/openai/v1/models", Some(&alice.token), None).await;
    assert_eq!(get.status, 200, "{}", get.text);

    let server = Server::start(&h).await;
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "HEAD /proxy/openai/v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        alice.token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(15), conn.read_to_string(&mut reply)).await.unwrap().unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200"), "{reply}");
    let lengths: Vec<&str> = head.lines().filter_map(|l| l.strip_prefix("content-length: ")).collect();
    assert_eq!(lengths, [get.text.len().to_string()], "{reply}");
    assert!(head.contains("x-keygate-key-source: user"), "{reply}");
    assert_eq!(body, "", "no body after a HEAD's answer");
    assert_eq!(h.mock.requests().last().map(|r| r.method.clone()), Some("HEAD".to_owned()));
    server.stop().await;
}
