//! The unified endpoint: OpenAI's wire format in, Anthropic (translated) or OpenAI
//! (passed through) behind it; the same resolution, limits, metering and headers as
//! passthrough; errors in OpenAI's shape; the models the caller can use.

use crate::support::*;
use axum::http::Method;
use keygate_mock::Fault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};

both_backends!(
    a_chat_call_is_translated_to_anthropic_and_back_and_metered,
    a_stream_comes_back_as_openai_chunks_with_usage,
    tool_calls_round_trip_streamed_and_not,
    model_names_providers_overrides_and_auto,
    errors_take_openais_shape_with_keygates_code,
    models_lists_what_the_caller_can_use,
    bedrock_chat_is_translated_to_a_signed_converse_call_and_metered,
    bedrock_streams_come_back_as_openai_chunks_with_usage,
    bedrock_tool_calls_round_trip_streamed_and_not,
    a_bedrock_secret_aws_refuses_comes_back_as_an_openai_error,
    a_gemini_call_is_translated_and_metered,
    a_gemini_stream_comes_back_as_openai_chunks_with_usage,
    gemini_tool_calls_round_trip_streamed_and_not,
    gemini_embeddings_are_translated_and_metered_as_estimated,
    gemini_embeddings_refuse_token_arrays_in_openais_shape,
);

const CLAUDE: &str = "anthropic/claude-sonnet-4-20250514";

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}, "offset": {"type": "integer"}}}}}
    ])
}

/// The data of each `data:` line of a streamed answer.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect()
}

fn chunks(text: &str) -> Vec<Value> {
    events(text).iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
}

async fn a_chat_call_is_translated_to_anthropic_and_back_and_metered(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let key = h.valid_key("sk-ant-api03-");
    let id = h.add_key(&alice, json!({"provider": "anthropic", "secret": key})).await;
    h.mock.clear_requests();

    let body = json!({"model": CLAUDE, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                      "max_tokens": 50, "temperature": 0.5, "stop": ["END"], "logprobs": true});
    let reply = h.post("/v1/chat/completions", &alice.token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["object"], "chat.completion");
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(reply.json["choices"][0]["finish_reason"], "stop");
    assert_eq!(reply.json["usage"]["prompt_tokens"], 11);
    assert_eq!(reply.json["usage"]["completion_tokens"], 7);
    assert_eq!(reply.json["usage"]["total_tokens"], 18);
    assert_eq!(reply.headers["x-keygate-provider"], "anthropic");
    assert_eq!(reply.headers["x-keygate-key-source"], "user");
    assert_eq!(reply.headers["x-keygate-credential-id"], id.as_str());

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].path.as_str(), seen[0].credential.as_deref()), ("/v1/messages", Some(key.as_str())));
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-20250514");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert!(sent.get("logprobs").is_none(), "dropped by the documented rule");
    assert!(!seen[0].body.contains(&alice.token));

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &alice.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "anthropic").unwrap().clone();
    assert_eq!(
        (row["requests"].as_i64(), row["input_tokens"].as_i64(), row["output_tokens"].as_i64()),
        (Some(1), Some(11), Some(7))
    );
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "priced by the model: {row}");
}

async fn a_stream_comes_back_as_openai_chunks_with_usage(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;

    let body = json!({"model": CLAUDE, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.post("/v1/chat/completions", &bob.token, body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let chunks = chunks(&reply.text);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from keygate-mock!");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().unwrap();
    assert_eq!((last["choices"].clone(), last["usage"]["prompt_tokens"].clone()), (json!([]), json!(11)));
    assert_eq!(last["usage"]["completion_tokens"], 7);
    // Anthropic was asked for a stream, with the model's maximum output.
    let sent: Value = serde_json::from_str(&h.mock.requests().last().unwrap().body).unwrap();
    assert_eq!((sent["stream"].clone(), sent["max_tokens"].clone()), (json!(true), json!(64_000)));

    // Without include_usage, no usage chunk.
    let mut quiet = body.clone();
    quiet.as_object_mut().unwrap().remove("stream_options");
    let reply = h.post("/v1/chat/completions", &bob.token, quiet).await;
    assert!(!reply.text.contains("\"usage\""), "{}", reply.text);

    // A stream cut mid-way ends with an error event, and what passed is metered.
    h.mock.configure(|c| {
        c.fault = Some(Fault::ResetMidStream { after_chunks: 5 });
        c.fault_times = Some(1);
    });
    let reply = h.post("/v1/chat/completions", &bob.token, body).await;
    let last = events(&reply.text).last().cloned().unwrap();
    let error: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_cut", "{}", reply.text);
    assert!(!reply.text.contains("[DONE]"));

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &bob.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "anthropic").unwrap().clone();
    assert_eq!(row["requests"], 3);
    assert!(row["input_tokens"].as_i64().unwrap() >= 33, "{row}");
}

async fn tool_calls_round_trip_streamed_and_not(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    h.add_key(&carol, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    let ask = json!({"model": CLAUDE, "tools": weather_tools(), "messages": [{"role": "user", "content": "Weather and time in Paris?"}]});

    let reply = h.post("/v1/chat/completions", &carol.token, ask.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "mock city"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"tz": "mock tz", "offset": 42})
    );

    // Streamed: each call's deltas under its own index, reassembling to the same calls.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let reply = h.post("/v1/chat/completions", &carol.token, streamed).await;
    let mut assembled: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks(&reply.text) {
        for call in chunk["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == assembled.len() {
                assembled.push(Default::default());
            }
            if let Some(id) = call["id"].as_str() {
                assembled[i].0 = id.into();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                assembled[i].1 = name.into();
            }
            assembled[i].2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(assembled.len(), 2, "{}", reply.text);
    for (streamed, whole) in assembled.iter().zip(calls) {
        assert_eq!(streamed.1, whole["function"]["name"].as_str().unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&streamed.2).unwrap(),
            serde_json::from_str::<Value>(whole["function"]["arguments"].as_str().unwrap()).unwrap()
        );
    }

    // The results go back: both in one user turn, answered with text.
    h.mock.clear_requests();
    let mut round = ask.clone();
    round["messages"] = json!([
        {"role": "user", "content": "Weather and time in Paris?"},
        choice["message"].clone(),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:00"}
    ]);
    let reply = h.post("/v1/chat/completions", &carol.token, round).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1]["content"][1]["type"], "tool_use");
    let results: Vec<&str> =
        turns[2]["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(results, ["tool_result", "tool_result"]);
}

async fn model_names_providers_overrides_and_auto(db: TestDb) {
    let h = Harness::new(db).await;
    let dave = h.user("dave@example.com").await;
    let hi = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let provider = |r: &Reply| r.headers.get("x-keygate-provider").map(|v| v.to_str().unwrap().to_owned());

    // No key anywhere: `auto` says so in OpenAI's shape.
    let none = h.post("/v1/chat/completions", &dave.token, hi("auto")).await;
    assert_eq!((none.status, none.json["error"]["code"].as_str()), (403, Some("no_credential")), "{}", none.text);

    h.add_key(&dave, json!({"provider": "openai", "secret": h.valid_key("sk-proj-"), "model": "gpt-4o-mini"})).await;
    h.mock.clear_requests();
    // OpenAI passes through, `model` rewritten to the bare id.
    let reply = h.post("/v1/chat/completions", &dave.token, hi("openai/gpt-4o")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(provider(&reply).as_deref(), Some("openai"));
    let auto = h.post("/v1/chat/completions", &dave.token, hi("auto")).await;
    assert_eq!(provider(&auto).as_deref(), Some("openai"), "the first provider with a key");
    h.post("/v1/chat/completions", &dave.token, hi("openai")).await;
    h.post("/v1/chat/completions", &dave.token, hi("gpt-4o")).await;
    let models: Vec<String> = h
        .mock
        .requests()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o"], "the key's override for a provider or auto");
    assert!(h.mock.requests().iter().all(|r| r.path == "/v1/chat/completions"));

    // With an Anthropic key too, `auto` takes Anthropic (first in the priority order),
    // with its default model.
    h.add_key(&dave, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.mock.clear_requests();
    let auto = h.post("/v1/chat/completions", &dave.token, hi("auto")).await;
    assert_eq!(provider(&auto).as_deref(), Some("anthropic"), "{}", auto.text);
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5-20250929", "the catalog's default");
    let bare = h.post("/v1/chat/completions", &dave.token, hi("claude-3-haiku-20240307")).await;
    assert_eq!(provider(&bare).as_deref(), Some("anthropic"));

    // Embeddings pass through to OpenAI.
    let embedded =
        h.post("/v1/embeddings", &dave.token, json!({"model": "openai/text-embedding-3-small", "input": "hi"})).await;
    assert_eq!(embedded.status, 200, "{}", embedded.text);
    assert_eq!(embedded.json["data"][0]["object"], "embedding");
    let refused = h.post("/v1/embeddings", &dave.token, json!({"model": CLAUDE, "input": "hi"})).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
}

async fn errors_take_openais_shape_with_keygates_code(db: TestDb) {
    let h = Harness::new(db).await;
    let erin = h.user("erin@example.com").await;
    let root = h.super_admin("root@example.com").await;
    let hi = json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]});
    let shape = |r: &Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.json["error"]["code"], code, "{}", r.text);
        assert!(r.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.text);
        assert!(r.json["error"]["type"].is_string(), "{}", r.text);
    };

    let anonymous = h.call(Method::POST, "/v1/chat/completions", None, Some(hi.clone())).await;
    shape(&anonymous, 401, "unauthenticated");
    assert_eq!(anonymous.json["error"]["type"], "authentication_error");
    shape(&h.post("/v1/chat/completions", &erin.token, hi.clone()).await, 403, "no_credential");
    shape(&h.get("/v1/nothing", &erin.token).await, 404, "not_found");
    shape(
        &h.post("/v1/chat/completions", &erin.token, json!({"model": "nobody/x", "messages": []})).await,
        400,
        "invalid_request",
    );

    h.add_key(&erin, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    let mut two = hi.clone();
    two["n"] = json!(2);
    let n = h.post("/v1/chat/completions", &erin.token, two).await;
    shape(&n, 400, "invalid_request");
    assert!(n.json["error"]["message"].as_str().unwrap().contains("`n` must be 1"));
    // The provider's own error, translated.
    h.mock.configure(|c| {
        c.fault = Some(Fault::Status { status: 429 });
        c.fault_times = Some(1);
    });
    let limited = h.post("/v1/chat/completions", &erin.token, hi.clone()).await;
    shape(&limited, 429, "rate_limit_error");
    assert!(limited.headers.contains_key("retry-after"));

    // keygate's own limits: a platform key under a one-a-minute tier.
    let frank = h.user("frank@example.com").await;
    h.operator_key(&root, "anthropic", "sk-ant-api03-", false).await;
    h.policy(|p| p.tiers.get_mut("community").unwrap().requests_per_minute = 1).await;
    let first = h.post("/v1/chat/completions", &frank.token, hi.clone()).await;
    assert_eq!((first.status, first.headers["x-keygate-key-source"].to_str().unwrap()), (200, "platform"));
    let second = h.post("/v1/chat/completions", &frank.token, hi.clone()).await;
    shape(&second, 429, "rate_limited");
    assert_eq!(second.json["error"]["type"], "rate_limit_error");
    assert!(second.headers.contains_key("retry-after"));
}

async fn models_lists_what_the_caller_can_use(db: TestDb) {
    let h = Harness::new(db).await;
    let gina = h.user("gina@example.com").await;
    let ids = |r: &Reply| -> Vec<String> {
        r.json["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
    };
    let empty = h.get("/v1/models", &gina.token).await;
    assert_eq!((empty.status, empty.json["object"].as_str()), (200, Some("list")), "{}", empty.text);
    assert!(ids(&empty).is_empty());

    h.add_key(
        &gina,
        json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-"), "model": "claude-opus-4-1"}),
    )
    .await;
    let listed = h.get("/v1/models", &gina.token).await;
    let listed_ids = ids(&listed);
    assert!(listed_ids.contains(&CLAUDE.to_owned()), "{listed_ids:?}");
    assert!(listed_ids.contains(&"anthropic/claude-opus-4-1".to_owned()), "the key's override: {listed_ids:?}");
    assert!(listed_ids.iter().all(|id| id.starts_with("anthropic/")), "{listed_ids:?}");
    assert_eq!(listed.json["data"][0]["object"], "model");
    assert_eq!(listed.json["data"][0]["owned_by"], "anthropic");
    let anonymous = h.call(Method::GET, "/v1/models", None, None).await;
    assert_eq!((anonymous.status, anonymous.json["error"]["code"].as_str()), (401, Some("unauthenticated")));
}

const GEMINI: &str = "gemini/gemini-2.0-flash";

async fn a_gemini_call_is_translated_and_metered(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let key = h.valid_key("AIzaSy");
    h.add_key(&alice, json!({"provider": "gemini", "secret": key})).await;
    h.mock.clear_requests();

    let body = json!({"model": GEMINI, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                      "max_tokens": 50, "temperature": 1.5, "stop": ["END"], "logprobs": true});
    let reply = h.post("/v1/chat/completions", &alice.token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["object"], "chat.completion");
    assert_eq!(reply.json["model"], "gemini-2.0-flash");
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(reply.json["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (reply.json["usage"]["prompt_tokens"].clone(), reply.json["usage"]["completion_tokens"].clone()),
        (json!(11), json!(7))
    );
    assert_eq!(reply.headers["x-keygate-provider"], "gemini");

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(
        (seen[0].credential.as_deref(), seen[0].credential_via.as_deref()),
        (Some(key.as_str()), Some("x-goog-api-key"))
    );
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(sent["contents"], json!([{"role": "user", "parts": [{"text": "hi"}]}]));
    assert_eq!(sent["generationConfig"], json!({"maxOutputTokens": 50, "temperature": 1.5, "stopSequences": ["END"]}));
    assert!(sent.get("logprobs").is_none() && sent.get("model").is_none());

    // A bare `gemini-…` id routes here too; an https image is refused by the documented rule.
    let reply = h
        .post(
            "/v1/chat/completions",
            &alice.token,
            json!({"model": "gemini-1.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(h.mock.requests().last().unwrap().path, "/v1beta/models/gemini-1.5-flash:generateContent");
    let image = json!({"model": GEMINI, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let reply = h.post("/v1/chat/completions", &alice.token, image).await;
    assert_eq!((reply.status, reply.json["error"]["code"].clone()), (400, json!("invalid_request")), "{}", reply.text);

    // Gemini's own error comes back in OpenAI's shape, its status as `code`.
    h.mock.configure(|c| {
        c.fault = Some(Fault::Status { status: 429 });
        c.fault_times = Some(1);
    });
    let reply = h
        .post(
            "/v1/chat/completions",
            &alice.token,
            json!({"model": GEMINI, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(
        (reply.json["error"]["type"].clone(), reply.json["error"]["code"].clone()),
        (json!("rate_limit_error"), json!("RESOURCE_EXHAUSTED"))
    );

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &alice.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "gemini").unwrap().clone();
    assert_eq!(
        (row["requests"].as_i64(), row["input_tokens"].as_i64(), row["output_tokens"].as_i64()),
        (Some(3), Some(22), Some(14)),
        "{row}"
    );
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "priced by the model: {row}");
}

async fn a_gemini_stream_comes_back_as_openai_chunks_with_usage(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "gemini", "secret": h.valid_key("AIzaSy")})).await;
    h.mock.clear_requests();

    let body = json!({"model": GEMINI, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.post("/v1/chat/completions", &bob.token, body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let seen = h.mock.requests();
    assert_eq!(
        (seen[0].path.as_str(), seen[0].query.as_deref()),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", Some("alt=sse"))
    );
    let chunks = chunks(&reply.text);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from keygate-mock!");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().unwrap();
    assert_eq!((last["choices"].clone(), last["usage"]["prompt_tokens"].clone()), (json!([]), json!(11)));
    assert_eq!(last["usage"]["completion_tokens"], 7);

    let mut quiet = body.clone();
    quiet.as_object_mut().unwrap().remove("stream_options");
    let reply = h.post("/v1/chat/completions", &bob.token, quiet).await;
    assert!(!reply.text.contains("\"usage\""), "{}", reply.text);
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);

    // A stream cut mid-way ends with an error event, never [DONE], and is metered.
    h.mock.configure(|c| {
        c.fault = Some(Fault::ResetMidStream { after_chunks: 2 });
        c.fault_times = Some(1);
    });
    let reply = h.post("/v1/chat/completions", &bob.token, body).await;
    let last = events(&reply.text).last().cloned().unwrap();
    let error: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_cut", "{}", reply.text);
    assert!(!reply.text.contains("[DONE]"));

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &bob.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "gemini").unwrap().clone();
    assert_eq!(row["requests"], 3);
    assert!(row["input_tokens"].as_i64().unwrap() >= 33, "{row}");
}

async fn gemini_tool_calls_round_trip_streamed_and_not(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    h.add_key(&carol, json!({"provider": "gemini", "secret": h.valid_key("AIzaSy")})).await;
    let ask = json!({"model": GEMINI, "tools": weather_tools(), "messages": [{"role": "user", "content": "Weather and time in Paris?"}]});

    let reply = h.post("/v1/chat/completions", &carol.token, ask.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0]["id"].as_str(), calls[1]["id"].as_str()), (Some("call_0"), Some("call_1")));
    assert_eq!(calls[1]["function"]["name"], "time");
    assert_eq!(
        serde_json::from_str::<Value>(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"tz": "mock tz", "offset": 42})
    );
    let sent: Value = serde_json::from_str(&h.mock.requests().last().unwrap().body).unwrap();
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["name"], "weather");

    // Streamed: each call under its own index, the same calls.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let reply = h.post("/v1/chat/completions", &carol.token, streamed).await;
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let mut assembled: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks(&reply.text) {
        for call in chunk["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == assembled.len() {
                assembled.push(Default::default());
            }
            assembled[i].0.push_str(call["id"].as_str().unwrap_or(""));
            assembled[i].1.push_str(call["function"]["name"].as_str().unwrap_or(""));
            assembled[i].2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(assembled.len(), 2, "{}", reply.text);
    for (streamed, whole) in assembled.iter().zip(calls) {
        assert_eq!(
            (streamed.0.as_str(), streamed.1.as_str()),
            (whole["id"].as_str().unwrap(), whole["function"]["name"].as_str().unwrap())
        );
        assert_eq!(
            serde_json::from_str::<Value>(&streamed.2).unwrap(),
            serde_json::from_str::<Value>(whole["function"]["arguments"].as_str().unwrap()).unwrap()
        );
    }
    assert!(chunks(&reply.text).iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));

    // The results go back, matched by name, merged into one user turn; answered with text.
    h.mock.clear_requests();
    let mut round = ask.clone();
    round["messages"] = json!([
        {"role": "user", "content": "Weather and time in Paris?"},
        choice["message"].clone(),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:00"}
    ]);
    let reply = h.post("/v1/chat/completions", &carol.token, round).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    let turns = sent["contents"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1]["role"], "model");
    assert_eq!(turns[1]["parts"][1]["functionCall"]["name"], "weather");
    assert_eq!(
        turns[2]["parts"],
        json!([{"functionResponse": {"name": "weather", "response": {"result": "18C"}}}, {"functionResponse": {"name": "time", "response": {"result": "14:00"}}}])
    );
}

const BEDROCK: &str = "bedrock/anthropic.claude-3-haiku-20240307-v1:0";

/// A Bedrock key the mock verifies signatures for; its secret is a canary.
async fn bedrock_key(h: &Harness, user: &Caller) -> (String, String) {
    let id = uuid::Uuid::now_v7().simple().to_string().to_uppercase();
    let access_key_id = format!("AKIA{}", &id[id.len() - 16..]);
    let secret = format!("CANARY{}/+", uuid::Uuid::now_v7().simple());
    h.canary(&secret);
    let known = keygate_mock::AwsCredential { access_key_id: access_key_id.clone(), secret_access_key: secret.clone() };
    h.mock.configure(|c| c.aws_credentials.push(known));
    let key = json!({"access_key_id": access_key_id, "secret_access_key": secret, "region": "eu-west-3"});
    let stored = h.add_key(user, json!({"provider": "bedrock", "secret": key})).await;
    (access_key_id, stored)
}

/// Each call's tool calls put back together by index: (id, name, arguments).
fn assembled_calls(text: &str) -> Vec<(String, String, String)> {
    let mut assembled: Vec<(String, String, String)> = Vec::new();
    for chunk in chunks(text) {
        for call in chunk["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == assembled.len() {
                assembled.push(Default::default());
            }
            if let Some(id) = call["id"].as_str() {
                assembled[i].0 = id.into();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                assembled[i].1 = name.into();
            }
            assembled[i].2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assembled
}

async fn bedrock_chat_is_translated_to_a_signed_converse_call_and_metered(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let (access_key_id, id) = bedrock_key(&h, &alice).await;
    h.mock.clear_requests();

    let body = json!({"model": BEDROCK, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                      "max_tokens": 50, "temperature": 0.5, "stop": ["END"], "logprobs": true});
    let reply = h.post("/v1/chat/completions", &alice.token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["object"], "chat.completion");
    assert_eq!(reply.json["model"], "anthropic.claude-3-haiku-20240307-v1:0");
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(reply.json["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (reply.json["usage"]["prompt_tokens"].as_u64(), reply.json["usage"]["completion_tokens"].as_u64()),
        (Some(11), Some(7))
    );
    assert_eq!(reply.headers["x-keygate-provider"], "bedrock");
    assert_eq!(reply.headers["x-keygate-credential-id"], id.as_str());

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", "the `:` as the SDKs send it");
    assert_eq!(
        (seen[0].credential.as_deref(), seen[0].credential_via.as_deref()),
        (Some(access_key_id.as_str()), Some("sigv4"))
    );
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"system": [{"text": "Be brief."}], "messages": [{"role": "user", "content": [{"text": "hi"}]}],
               "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "stopSequences": ["END"]}})
    );
    assert!(!seen[0].body.contains(&alice.token));

    // Converse takes no image URLs: refused before anything is sent.
    let url = json!({"model": BEDROCK, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let refused = h.post("/v1/chat/completions", &alice.token, url).await;
    assert_eq!(
        (refused.status, refused.json["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{}",
        refused.text
    );
    assert_eq!(h.mock.requests().len(), 1);

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &alice.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "bedrock").unwrap().clone();
    assert_eq!(
        (row["requests"].as_i64(), row["input_tokens"].as_i64(), row["output_tokens"].as_i64()),
        (Some(1), Some(11), Some(7))
    );
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "priced by the model: {row}");
    let models = h.get("/v1/models", &alice.token).await;
    assert!(models.text.contains(BEDROCK), "{}", models.text);
}

async fn bedrock_streams_come_back_as_openai_chunks_with_usage(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    bedrock_key(&h, &bob).await;
    h.mock.clear_requests();

    let body = json!({"model": BEDROCK, "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.post("/v1/chat/completions", &bob.token, body.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let chunks = chunks(&reply.text);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from keygate-mock!");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().unwrap();
    assert_eq!((last["choices"].clone(), last["usage"]["prompt_tokens"].clone()), (json!([]), json!(11)));
    assert_eq!(last["usage"]["completion_tokens"], 7);
    assert_eq!(h.mock.requests()[0].path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream");

    // Without include_usage, no usage chunk.
    let mut quiet = body.clone();
    quiet.as_object_mut().unwrap().remove("stream_options");
    let reply = h.post("/v1/chat/completions", &bob.token, quiet).await;
    assert!(!reply.text.contains("\"usage\"") && reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);

    // A stream cut mid-way ends with an error event, and what passed is metered.
    h.mock.configure(|c| {
        c.fault = Some(Fault::ResetMidStream { after_chunks: 3 });
        c.fault_times = Some(1);
    });
    let reply = h.post("/v1/chat/completions", &bob.token, body).await;
    let last = events(&reply.text).last().cloned().unwrap();
    let error: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(error["error"]["code"], "upstream_stream_cut", "{}", reply.text);
    assert!(!reply.text.contains("[DONE]"));

    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &bob.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "bedrock").unwrap().clone();
    assert_eq!(row["requests"], 3);
    assert!(row["input_tokens"].as_i64().unwrap() >= 22, "{row}");
}

async fn bedrock_tool_calls_round_trip_streamed_and_not(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    bedrock_key(&h, &carol).await;
    h.mock.clear_requests();
    let ask = json!({"model": BEDROCK, "tools": weather_tools(), "tool_choice": "auto", "messages": [{"role": "user", "content": "Weather and time in Paris?"}]});

    let reply = h.post("/v1/chat/completions", &carol.token, ask.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"auto": {}}));
    assert_eq!(sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"], json!(["city"]));
    let choice = &reply.json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Let me check.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0]["function"]["name"].as_str(), calls[1]["function"]["name"].as_str()),
        (Some("weather"), Some("time"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "mock city"})
    );
    assert_eq!(
        serde_json::from_str::<Value>(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"tz": "mock tz", "offset": 42})
    );

    // Streamed: each call's deltas under its own index, reassembling to the same calls.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let reply = h.post("/v1/chat/completions", &carol.token, streamed).await;
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let assembled = assembled_calls(&reply.text);
    assert_eq!(assembled.len(), 2, "{}", reply.text);
    for (streamed, whole) in assembled.iter().zip(calls) {
        assert!(streamed.0.starts_with("tooluse_mock_"), "{streamed:?}");
        assert_eq!(streamed.1, whole["function"]["name"].as_str().unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&streamed.2).unwrap(),
            serde_json::from_str::<Value>(whole["function"]["arguments"].as_str().unwrap()).unwrap()
        );
    }
    assert!(chunks(&reply.text).iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));

    // The results go back: both in one user turn, answered with text.
    h.mock.clear_requests();
    let mut round = ask.clone();
    round["messages"] = json!([
        {"role": "user", "content": "Weather and time in Paris?"},
        choice["message"].clone(),
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:00"}
    ]);
    let reply = h.post("/v1/chat/completions", &carol.token, round).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    let turns = sent["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1]["content"][1]["toolUse"]["toolUseId"], calls[0]["id"]);
    assert_eq!(
        turns[2]["content"][0]["toolResult"],
        json!({"toolUseId": calls[0]["id"], "content": [{"text": "18C"}]})
    );
    assert_eq!(turns[2]["content"][1]["toolResult"]["toolUseId"], calls[1]["id"]);

    // `none`: Converse has no such choice, so the tools are left out.
    h.mock.clear_requests();
    let mut none = ask.clone();
    none["tool_choice"] = json!("none");
    let reply = h.post("/v1/chat/completions", &carol.token, none).await;
    assert_eq!(reply.json["choices"][0]["message"]["content"], "Hello from keygate-mock!", "{}", reply.text);
    let sent: Value = serde_json::from_str(&h.mock.requests()[0].body).unwrap();
    assert!(sent.get("toolConfig").is_none(), "{sent}");
}

async fn a_bedrock_secret_aws_refuses_comes_back_as_an_openai_error(db: TestDb) {
    let h = Harness::new(db).await;
    let dave = h.user("dave@example.com").await;
    let (access_key_id, key) = bedrock_key(&h, &dave).await;
    // Rotated at AWS: the mock now verifies with another secret.
    h.mock.configure(|c| {
        let known = c.aws_credentials.iter_mut().find(|k| k.access_key_id == access_key_id).unwrap();
        known.secret_access_key = format!("rotated{}", &known.secret_access_key[7..]);
    });
    let hi = json!({"model": BEDROCK, "messages": [{"role": "user", "content": "hi"}]});

    let reply = h.post("/v1/chat/completions", &dave.token, hi.clone()).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.json["error"]["type"], "permission_error", "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], "InvalidSignatureException", "{}", reply.text);
    let message = reply.json["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Bedrock: The request signature we calculated does not match"), "{message}");
    assert_eq!(reply.headers["x-keygate-provider"], "bedrock");

    // keygate's own probe confirmed it: the key is marked invalid, and the next call
    // finds no key.
    let stored = h.get(&format!("/api/v1/keys/{key}"), &dave.token).await;
    assert_eq!(stored.json["validity"], "invalid", "{}", stored.text);
    let next = h.post("/v1/chat/completions", &dave.token, hi).await;
    assert_eq!((next.status, next.json["error"]["code"].as_str()), (403, Some("no_credential")), "{}", next.text);
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    assert_eq!((events.len(), events[0].status, events[0].input_tokens), (1, 403, 0));
}

async fn gemini_embeddings_are_translated_and_metered_as_estimated(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let key = h.valid_key("AIzaSy");
    h.add_key(&alice, json!({"provider": "gemini", "secret": key})).await;
    h.mock.clear_requests();

    let body = json!({"model": "gemini/gemini-embedding-001", "input": ["first text", "second"], "dimensions": 256,
                      "user": "u-1"});
    let reply = h.post("/v1/embeddings", &alice.token, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-keygate-provider"], "gemini");
    assert_eq!(
        (reply.json["object"].as_str(), reply.json["model"].as_str()),
        (Some("list"), Some("gemini-embedding-001"))
    );
    let data = reply.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!((item["object"].as_str(), item["index"].as_u64()), (Some("embedding"), Some(i as u64)));
        assert_eq!(item["embedding"].as_array().unwrap().len(), 256);
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    // 16 bytes of text, estimated at three bytes a token.
    assert_eq!(reply.json["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(
        (seen[0].credential.as_deref(), seen[0].credential_via.as_deref()),
        (Some(key.as_str()), Some("x-goog-api-key"))
    );
    let sent: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "first text"}]}, "outputDimensionality": 256},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]}, "outputDimensionality": 256}
        ]})
    );

    // base64, as OpenAI encodes it (little-endian f32): the same numbers.
    let encoded = h
        .post(
            "/v1/embeddings",
            &alice.token,
            json!({"model": "gemini/gemini-embedding-001", "input": "first text", "dimensions": 256, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(encoded.status, 200, "{}", encoded.text);
    let text = encoded.json["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(text.len(), (256 * 4_usize).div_ceil(3) * 4, "256 f32s");
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)));
    // `gemini` alone: its embedding model, with the model's full length.
    let bare = h.post("/v1/embeddings", &alice.token, json!({"model": "gemini", "input": "x"})).await;
    assert_eq!(bare.status, 200, "{}", bare.text);
    assert_eq!(h.mock.requests().last().unwrap().path, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(bare.json["data"][0]["embedding"].as_array().unwrap().len(), 3072);

    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        assert_eq!((event.provider.as_str(), event.model.as_deref()), ("gemini", Some("gemini-embedding-001")));
        assert!(event.estimated, "Gemini reports no counts: {event:?}");
        assert!(event.input_tokens > 0 && event.output_tokens == 0, "{event:?}");
    }
    let first = events.iter().find(|e| e.input_tokens == 6).expect("the first call, as its answer said");
    // gemini-embedding-001: $0.15 per million input tokens.
    assert_eq!(first.cost_nano_usd, 6 * 150);
}

async fn gemini_embeddings_refuse_token_arrays_in_openais_shape(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "gemini", "secret": h.valid_key("AIzaSy")})).await;
    h.mock.clear_requests();
    for (input, says) in [
        (json!([1, 2, 3]), "token arrays"),
        (json!([[1, 2], [3]]), "token arrays"),
        (json!([]), "empty"),
        (json!({"text": "x"}), "array of strings"),
    ] {
        let reply =
            h.post("/v1/embeddings", &bob.token, json!({"model": "gemini/gemini-embedding-001", "input": input})).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(
            (reply.json["error"]["type"].as_str(), reply.json["error"]["code"].as_str()),
            (Some("invalid_request_error"), Some("invalid_request")),
            "{}",
            reply.text
        );
        assert!(reply.json["error"]["message"].as_str().unwrap().contains(says), "{}", reply.text);
        assert!(reply.json["error"].as_object().unwrap().contains_key("param"));
    }
    let format = json!({"model": "gemini/gemini-embedding-001", "input": "x", "encoding_format": "int8"});
    assert_eq!(h.post("/v1/embeddings", &bob.token, format).await.status, 400);
    assert!(h.mock.requests().is_empty(), "nothing refused reached Gemini");

    // Gemini's own refusal comes back in OpenAI's shape.
    h.mock.configure(|c| {
        c.fault = Some(Fault::Status { status: 400 });
        c.fault_times = Some(1);
    });
    let reply =
        h.post("/v1/embeddings", &bob.token, json!({"model": "gemini/gemini-embedding-001", "input": "x"})).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], "INVALID_ARGUMENT", "{}", reply.text);
}
