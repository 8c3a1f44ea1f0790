//! Recorded request/answer pairs (OpenAI in, Converse out and back), the rules for what
//! Converse cannot honour, a recorded ConverseStream with two tool calls, and a property:
//! a streamed answer, translated event by event, reassembles to the non-streamed
//! translation of the same answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

#[test]
fn a_conversation_with_system_images_tools_and_merged_tool_results() {
    let chat = json!({
        "model": "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in both cities?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "tooluse_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "tooluse_2", "type": "function", "function": {"name": "weather", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "tooluse_2", "content": [{"type": "text", "text": "4C"}]},
            {"role": "user", "content": "Thanks."}
        ],
        "max_completion_tokens": 300, "temperature": 0.2, "top_p": 0.9, "stop": "END", "user": "u-42",
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required",
        "stream": true, "stream_options": {"include_usage": true},
        "logprobs": true, "seed": 7, "frequency_penalty": 0.5
    });
    let expected = json!({
        "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [
                {"text": "What is in this picture, and the weather in both cities?"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}
            ]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "tooluse_2", "name": "weather", "input": {}}}
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}},
                {"toolResult": {"toolUseId": "tooluse_2", "content": [{"text": "4C"}]}},
                {"text": "Thanks."}
            ]}
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "weather", "description": "Weather now", "inputSchema": {"json":
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
            "toolChoice": {"any": {}}
        }
    });
    assert_eq!(request(&chat).unwrap(), expected);
    assert_eq!(
        path("anthropic.claude-3-haiku-20240307-v1:0", false).unwrap(),
        "model/anthropic.claude-3-haiku-20240307-v1:0/converse"
    );
    assert_eq!(
        path("us.meta.llama3-2-1b-instruct-v1:0", true).unwrap(),
        "model/us.meta.llama3-2-1b-instruct-v1:0/converse-stream"
    );
    assert!(path("arn:aws:bedrock:us-east-1:1:inference-profile/x", false).unwrap_err().0.contains("ARN"));
    assert!(path("a%2Fb", false).is_err());
}

#[test]
fn tool_choice_maps_each_form_and_none_drops_the_tools() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]});
    let with = |extra: Value| {
        let mut chat = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        request(&chat)
    };
    let plain = with(json!({})).unwrap();
    assert!(plain.get("inferenceConfig").is_none(), "Bedrock's own defaults when nothing is asked: {plain}");
    assert_eq!(
        plain["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]})
    );
    assert_eq!(with(json!({"tool_choice": "auto"})).unwrap()["toolConfig"]["toolChoice"], json!({"auto": {}}));
    assert_eq!(
        with(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}})).unwrap()["toolConfig"]
            ["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
    assert!(with(json!({"tool_choice": "none"})).unwrap().get("toolConfig").is_none());
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ]);
    assert!(with(json!({"tool_choice": "none", "messages": history}))
        .unwrap_err()
        .0
        .contains("no `tool_choice` `none`"));
    assert_eq!(
        with(json!({"stop": ["a", "b"], "max_tokens": 9})).unwrap()["inferenceConfig"],
        json!({"maxTokens": 9, "stopSequences": ["a", "b"]})
    );
    let dropped = with(json!({"logprobs": true, "top_logprobs": 2, "presence_penalty": 1, "logit_bias": {}, "n": 1, "user": "u", "seed": 1})).unwrap();
    assert_eq!(dropped.as_object().unwrap().keys().collect::<Vec<_>>(), ["messages", "toolConfig"]);
}

#[test]
fn what_converse_cannot_honour_is_refused_with_a_reason() {
    let refused = |extra: Value| {
        let mut chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        request(&chat).unwrap_err().0
    };
    assert!(refused(json!({"n": 2})).contains("`n` must be 1"));
    assert!(refused(json!({"temperature": 1.5})).contains("0 to 1"));
    assert!(refused(json!({"top_p": 2})).contains("top_p"));
    assert!(refused(json!({"response_format": {"type": "json_schema"}})).contains("response_format"));
    assert!(refused(json!({"functions": []})).contains("tools"));
    assert!(refused(json!({"audio": {}})).contains("text only"));
    assert!(refused(json!({"tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": false}))
        .contains("parallel_tool_calls"));
    let https = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]});
    assert!(refused(https).contains("not URLs"));
    let tiff = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]});
    assert!(refused(tiff).contains("image/tiff"));
    let audio = json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]});
    assert!(refused(audio).contains("input_audio"));
    assert!(refused(json!({"messages": [{"role": "tool", "content": "x"}]})).contains("tool_call_id"));
}

#[test]
fn an_answer_with_text_and_parallel_tool_calls_and_cache_usage() {
    // Recorded from Converse (Claude 3 Haiku), ids shortened.
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_a", "name": "weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "tooluse_b", "name": "time", "input": {}}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 100, "outputTokens": 40, "totalTokens": 170, "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10},
        "metrics": {"latencyMs": 512}
    });
    let reply = response(&answer, "anthropic.claude-3-haiku-20240307-v1:0", Some("req-1"), 7);
    assert_eq!(
        reply,
        json!({
            "id": "chatcmpl-req-1", "object": "chat.completion", "created": 7, "model": "anthropic.claude-3-haiku-20240307-v1:0",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check.", "refusal": null,
                "tool_calls": [
                    {"id": "tooluse_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "tooluse_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}
                ]}}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 40, "total_tokens": 170, "prompt_tokens_details": {"cached_tokens": 20}}
        })
    );
    let only_calls = json!({"output": {"message": {"content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]}}, "stopReason": "tool_use"});
    assert_eq!(response(&only_calls, "m", None, 0)["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(response(&only_calls, "m", None, 0)["id"], "chatcmpl-keygate");
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        assert_eq!(finish_reason(stop), finish, "{stop}");
    }
}

#[test]
fn aws_errors_take_openais_shape() {
    let e = error(
        403,
        Some("InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"),
        br#"{"message":"The request signature we calculated does not match"}"#,
    );
    assert_eq!(e["error"]["type"], "permission_error");
    assert_eq!(e["error"]["code"], "InvalidSignatureException");
    assert!(e["error"]["message"].as_str().unwrap().starts_with("Bedrock: The request signature"));
    let e = error(429, None, br#"{"Message":"Too many requests"}"#);
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_error"))
    );
    assert_eq!(error(500, None, b"<html>")["error"]["message"], "Bedrock answered 500");
    let e = error(400, Some("ValidationException"), br#"{"message":"bad"}"#);
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str()),
        (Some("invalid_request_error"), Some("ValidationException"))
    );
}

/// A ConverseStream as AWS sends it (the `p` padding fields left out): text, then two
/// tool calls, one of them with no input deltas.
fn recorded_stream() -> Vec<(&'static str, Value)> {
    vec![
        ("messageStart", json!({"role": "assistant"})),
        ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Let me "}})),
        ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "check."}})),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "weather"}}}),
        ),
        ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ""}}})),
        ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\": \"Pa"}}})),
        ("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "ris\"}"}}})),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_b", "name": "time"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 2})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 25, "outputTokens": 40, "totalTokens": 70, "cacheReadInputTokens": 5}, "metrics": {"latencyMs": 900}}),
        ),
    ]
}

#[test]
fn a_stream_with_two_tool_calls_keeps_each_ones_index() {
    let mut stream = Stream::new("anthropic.claude-3-haiku-20240307-v1:0", Some("req-9"), 3, true);
    let out: Vec<Out> = recorded_stream().iter().flat_map(|(kind, payload)| stream.event(kind, payload)).collect();
    let deltas: Vec<Value> = out
        .iter()
        .filter_map(|o| match o {
            Out::Chunk(c) => c["choices"].get(0).map(|c| c["delta"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Let me "}),
            json!({"content": "check."}),
            json!({"tool_calls": [{"index": 0, "id": "tooluse_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ris\"}"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "tooluse_b", "type": "function", "function": {"name": "time", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            json!({}),
        ]
    );
    let Out::Chunk(first) = &out[0] else { panic!() };
    assert_eq!(
        (first["id"].as_str(), first["object"].as_str()),
        (Some("chatcmpl-req-9"), Some("chat.completion.chunk"))
    );
    let n = out.len();
    assert!(matches!(&out[n - 3], Out::Chunk(c) if c["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(matches!(&out[n - 2], Out::Chunk(c) if c["choices"] == json!([]) && c["usage"]["prompt_tokens"] == 30));
    assert_eq!(out[n - 1], Out::Done);
    assert!(stream.is_done());
    assert!(stream.cut("late").is_empty());
}

#[test]
fn a_stream_that_breaks_or_raises_ends_with_an_error_event() {
    let mut stream = Stream::new("m", None, 1, false);
    for (kind, payload) in &recorded_stream()[..4] {
        stream.event(kind, payload);
    }
    let cut = stream.cut("the provider's stream broke off");
    assert!(matches!(&cut[..], [Out::Error(e)] if e["error"]["code"] == "upstream_stream_cut"));
    assert!(stream.cut("again").is_empty(), "once");

    let mut stream = Stream::new("m", None, 1, false);
    stream.event("messageStart", &json!({"role": "assistant"}));
    let out = stream.exception("throttlingException", &json!({"message": "Too many tokens"}));
    assert!(matches!(&out[..], [Out::Error(e)] if e["error"]["type"] == "rate_limit_error"
        && e["error"]["code"] == "throttlingException" && e["error"]["message"] == "Bedrock: Too many tokens"));
    assert!(stream.is_done());
    assert!(stream.event("metadata", &json!({})).is_empty());

    // Whole but for its usage: the answer stands.
    let mut stream = Stream::new("m", None, 1, true);
    for (kind, payload) in &recorded_stream()[..12] {
        stream.event(kind, payload);
    }
    assert_eq!(stream.cut("ended"), [Out::Done]);
}

/// One content block of a generated answer.
#[derive(Debug, Clone)]
enum Block {
    Text(String),
    Tool { name: String, input: Value },
}

fn block() -> impl Strategy<Value = Block> {
    let text = "[a-zA-Z0-9 ,.!?\"\\\\é€🦀\n]{1,40}".prop_map(Block::Text);
    let value = prop_oneof![
        any::<i32>().prop_map(Value::from),
        "[a-z \"\\\\é]{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let input = proptest::collection::btree_map("[a-z_]{1,8}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let tool = ("[a-z_]{1,10}", input).prop_map(|(name, input)| Block::Tool { name, input });
    prop_oneof![text, tool]
}

/// `s` cut at the given fractions (on character boundaries).
fn split(s: &str, cuts: &[f64]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|f| (f * chars.len() as f64) as usize).collect();
    at.push(chars.len());
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        if to > from {
            out.push(chars[from..to].iter().collect());
            from = to;
        }
    }
    out
}

/// The chunks' content and tool calls put back together, by tool-call index.
type Reassembled = (String, Vec<(String, String, Value)>, Option<String>, Value);

fn reassemble(out: &[Out]) -> Reassembled {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = Value::Null;
    for o in out {
        let Out::Chunk(c) = o else { continue };
        if let Some(u) = c.get("usage") {
            usage = u.clone();
        }
        let Some(choice) = c["choices"].get(0) else { continue };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(Default::default());
            }
            let entry = &mut calls[i];
            if let Some(id) = call["id"].as_str() {
                entry.0 = id.to_owned();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.1 = name.to_owned();
            }
            entry.2.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    let calls = calls.into_iter().map(|(id, name, args)| (id, name, serde_json::from_str(&args).unwrap())).collect();
    (text, calls, finish, usage)
}

proptest! {
    /// Tool blocks' deltas interleave (as several streamed at once would), each keeping
    /// its own `contentBlockIndex`: every call still reassembles under one OpenAI index.
    #[test]
    fn a_streamed_answer_reassembles_to_the_unstreamed_one(
        blocks in proptest::collection::vec(block(), 1..6),
        cuts in proptest::collection::vec(0.0f64..1.0, 0..4),
        interleave in any::<bool>(),
        input_tokens in 0u64..5000, cached in 0u64..5000, written in 0u64..5000, output in 1u64..5000,
    ) {
        let stop = if blocks.iter().any(|b| matches!(b, Block::Tool { .. })) { "tool_use" } else { "end_turn" };
        let content: Vec<Value> = blocks.iter().enumerate().map(|(i, b)| match b {
            Block::Text(t) => json!({"text": t}),
            Block::Tool { name, input } => json!({"toolUse": {"toolUseId": format!("tooluse_{i}"), "name": name, "input": input}}),
        }).collect();
        let usage = json!({"inputTokens": input_tokens, "cacheReadInputTokens": cached, "cacheWriteInputTokens": written,
            "outputTokens": output, "totalTokens": input_tokens + cached + written + output});
        let answer = json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop, "usage": usage});
        let whole = response(&answer, "m", Some("r"), 0);

        let mut events = vec![("messageStart", json!({"role": "assistant"}))];
        // Tool inputs are streamed after all blocks have started when interleaving, so
        // the deltas of several calls alternate; text blocks stay in order.
        let mut pending: Vec<Vec<(&str, Value)>> = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            match b {
                Block::Text(t) => {
                    for piece in split(t, &cuts) {
                        events.push(("contentBlockDelta", json!({"contentBlockIndex": i, "delta": {"text": piece}})));
                    }
                    events.push(("contentBlockStop", json!({"contentBlockIndex": i})));
                }
                Block::Tool { name, input } => {
                    events.push(("contentBlockStart", json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": format!("tooluse_{i}"), "name": name}}})));
                    let mut rest: Vec<(&str, Value)> = split(&input.to_string(), &cuts).into_iter()
                        .map(|piece| ("contentBlockDelta", json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": piece}}})))
                        .collect();
                    rest.push(("contentBlockStop", json!({"contentBlockIndex": i})));
                    if interleave { pending.push(rest) } else { events.extend(rest) }
                }
            }
        }
        while pending.iter().any(|p| !p.is_empty()) {
            for p in pending.iter_mut().filter(|p| !p.is_empty()) {
                events.push(p.remove(0));
            }
        }
        events.push(("messageStop", json!({"stopReason": stop})));
        events.push(("metadata", json!({"usage": usage, "metrics": {"latencyMs": 1}})));

        let mut stream = Stream::new("m", Some("r"), 0, true);
        let out: Vec<Out> = events.iter().flat_map(|(kind, payload)| stream.event(kind, payload)).collect();
        prop_assert_eq!(out.last(), Some(&Out::Done));
        let (text, calls, finish, streamed_usage) = reassemble(&out);
        let reply = &whole["choices"][0]["message"];
        prop_assert_eq!(text, reply["content"].as_str().unwrap_or("").to_owned());
        let mut expected: Vec<(String, String, Value)> = reply["tool_calls"].as_array().into_iter().flatten().map(|c| (
            c["id"].as_str().unwrap().to_owned(),
            c["function"]["name"].as_str().unwrap().to_owned(),
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
        )).collect();
        let mut calls = calls;
        calls.sort_by(|a, b| a.0.cmp(&b.0));
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(calls, expected);
        prop_assert_eq!(finish.as_deref(), whole["choices"][0]["finish_reason"].as_str());
        prop_assert_eq!(&streamed_usage, &whole["usage"]);
    }
}
