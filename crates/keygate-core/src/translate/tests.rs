//! Recorded request/answer pairs (OpenAI in, Anthropic out and back), the edge cases
//! each translation must keep, and a property: a streamed answer, translated chunk by
//! chunk, reassembles to the non-streamed translation of the same answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::anthropic::{self, Out, Stream};
use proptest::prelude::*;
use serde_json::{json, Value};

#[test]
fn a_conversation_with_system_images_tools_and_merged_tool_results() {
    let chat = json!({
        "model": "anthropic/claude-sonnet-4-20250514",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in both cities?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "4C"}]},
            {"role": "user", "content": "Thanks."}
        ],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-42",
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "logprobs": true, "seed": 7, "frequency_penalty": 0.5
    });
    let expected = json!({
        "model": "claude-sonnet-4-20250514",
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in both cities?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Oslo"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4C"},
                {"type": "text", "text": "Thanks."}
            ]}
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
        "tools": [{"name": "weather", "description": "Weather now",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
    });
    assert_eq!(anthropic::request(&chat, "claude-sonnet-4-20250514").unwrap(), expected);
}

#[test]
fn max_tokens_is_always_set_and_tool_choice_maps_each_form() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]});
    let with = |extra: Value| {
        let mut chat = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        anthropic::request(&chat, "claude-3-haiku-20240307").unwrap()
    };
    assert_eq!(with(json!({}))["max_tokens"], 4096);
    assert_eq!(with(json!({"max_tokens": 12}))["max_tokens"], 12);
    assert_eq!(anthropic::default_max_tokens("claude-sonnet-4-20250514", true), 64_000);
    assert_eq!(anthropic::default_max_tokens("claude-sonnet-4-20250514", false), 16_384);
    assert_eq!(with(json!({}))["tools"][0]["input_schema"], json!({"type": "object", "properties": {}}));
    assert!(with(json!({})).get("tool_choice").is_none());
    assert_eq!(with(json!({"tool_choice": "auto"}))["tool_choice"], json!({"type": "auto"}));
    assert_eq!(with(json!({"tool_choice": "none"}))["tool_choice"], json!({"type": "none"}));
    assert_eq!(with(json!({"tool_choice": "required"}))["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        with(json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}))["tool_choice"],
        json!({"type": "tool", "name": "f"})
    );
    assert_eq!(with(json!({"stop": ["a", "b"], "stream": true}))["stop_sequences"], json!(["a", "b"]));
    assert_eq!(with(json!({"stream": true}))["stream"], true);
    let dropped = with(json!({"logprobs": true, "top_logprobs": 2, "presence_penalty": 1, "logit_bias": {}, "n": 1}));
    for name in ["logprobs", "top_logprobs", "presence_penalty", "logit_bias", "n", "stream_options"] {
        assert!(dropped.get(name).is_none(), "{name}");
    }
}

#[test]
fn what_anthropic_cannot_honour_is_refused_with_a_reason() {
    let refused = |extra: Value| {
        let mut chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        anthropic::request(&chat, "claude-3-haiku-20240307").unwrap_err().0
    };
    assert!(refused(json!({"n": 2})).contains("`n` must be 1"));
    assert!(refused(json!({"temperature": 1.5})).contains("0 to 1"));
    assert!(refused(json!({"response_format": {"type": "json_object"}})).contains("response_format"));
    assert!(refused(json!({"functions": []})).contains("tools"));
    assert!(refused(json!({"modalities": ["text", "audio"]})).contains("text only"));
    assert!(
        refused(json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})).contains("input_audio")
    );
    assert!(refused(
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]})
    )
    .contains("http(s)"));
    assert!(refused(json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}]}))
        .contains("not a JSON object"));
    assert!(refused(json!({"messages": "hi"})).contains("array"));
}

#[test]
fn an_answer_with_text_and_parallel_tool_calls_and_cache_usage() {
    let message = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000, "output_tokens": 30}
    });
    let expected = json!({
        "id": "msg_01", "object": "chat.completion", "created": 1700000000, "model": "claude-sonnet-4-20250514",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking both.", "refusal": null,
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]}}],
        "usage": {"prompt_tokens": 1110, "completion_tokens": 30, "total_tokens": 1140, "prompt_tokens_details": {"cached_tokens": 1000}}
    });
    assert_eq!(anthropic::response(&message, 1_700_000_000), expected);
}

#[test]
fn stop_reasons_become_finish_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(anthropic::finish_reason(stop), finish);
    }
    let only_tools = anthropic::response(
        &json!({"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use"}),
        0,
    );
    assert_eq!(only_tools["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn errors_take_openais_shape() {
    let e = anthropic::error(429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#);
    assert_eq!(e["error"]["code"], "rate_limit_error");
    assert_eq!(e["error"]["message"], "Anthropic: slow down");
    assert_eq!(anthropic::error(529, b"<html>")["error"]["type"], "overloaded_error");
}

/// A recorded stream: text, then two tool calls whose argument deltas arrive split.
fn recorded_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [], "stop_reason": null, "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"tz\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"CET\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 40}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn a_stream_with_two_tool_calls_keeps_each_ones_index() {
    let mut stream = Stream::new("claude-sonnet-4-20250514", 1, true);
    let out: Vec<Out> = recorded_stream().iter().flat_map(|e| stream.event(e)).collect();
    assert_eq!(out.last(), Some(&Out::Done));
    let chunks: Vec<&Value> = out.iter().filter_map(|o| if let Out::Chunk(c) = o { Some(c) } else { None }).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(chunks[0]["id"], "msg_02");
    let tool_deltas: Vec<(u64, String)> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0].as_object().cloned())
        .map(|t| (t["index"].as_u64().unwrap(), t["function"]["arguments"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        tool_deltas,
        vec![
            (0, String::new()),
            (0, "{\"city\": \"Pa".into()),
            (0, "ris\"}".into()),
            (1, String::new()),
            (1, "{\"tz\":".into()),
            (1, "\"CET\"}".into())
        ]
    );
    let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str()).unwrap();
    assert_eq!(finish, "tool_calls");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 30);
    assert_eq!(usage["usage"]["completion_tokens"], 40);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 5);

    // Without include_usage: no usage chunk.
    let mut quiet = Stream::new("m", 1, false);
    let out: Vec<Out> = recorded_stream().iter().flat_map(|e| quiet.event(e)).collect();
    assert!(!out.iter().any(|o| matches!(o, Out::Chunk(c) if c.get("usage").is_some())));
}

#[test]
fn a_stream_that_breaks_or_errors_ends_with_an_error_event() {
    let mut stream = Stream::new("m", 1, false);
    for e in &recorded_stream()[..4] {
        stream.event(e);
    }
    let cut = stream.cut("the provider's stream broke off");
    assert!(matches!(&cut[..], [Out::Error(e)] if e["error"]["code"] == "upstream_stream_cut"));
    assert!(stream.cut("again").is_empty(), "once");

    let mut stream = Stream::new("m", 1, false);
    stream.event(&recorded_stream()[0]);
    let out = stream.event(&json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    assert!(matches!(&out[..], [Out::Error(e)] if e["error"]["type"] == "overloaded_error"));
    assert!(stream.is_done());
    assert!(stream.cut("late").is_empty());
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
    #[test]
    fn a_streamed_answer_reassembles_to_the_unstreamed_one(
        blocks in proptest::collection::vec(block(), 1..6),
        cuts in proptest::collection::vec(0.0f64..1.0, 0..4),
        input_tokens in 0u64..5000, cached in 0u64..5000, output in 1u64..5000,
    ) {
        let stop = if blocks.iter().any(|b| matches!(b, Block::Tool { .. })) { "tool_use" } else { "end_turn" };
        let content: Vec<Value> = blocks.iter().enumerate().map(|(i, b)| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::Tool { name, input } => json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": input}),
        }).collect();
        let usage = json!({"input_tokens": input_tokens, "cache_read_input_tokens": cached, "output_tokens": output});
        let message = json!({"id": "msg_p", "model": "claude-x", "content": content, "stop_reason": stop, "usage": usage});
        let whole = anthropic::response(&message, 0);

        let mut events = vec![json!({"type": "message_start", "message": {"id": "msg_p", "model": "claude-x", "content": [],
            "usage": {"input_tokens": input_tokens, "cache_read_input_tokens": cached, "output_tokens": 1}}})];
        for (i, b) in blocks.iter().enumerate() {
            match b {
                Block::Text(t) => {
                    events.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
                    for piece in split(t, &cuts) {
                        events.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}));
                    }
                }
                Block::Tool { name, input } => {
                    events.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}}));
                    events.push(json!({"type": "ping"}));
                    for piece in split(&input.to_string(), &cuts) {
                        events.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": piece}}));
                    }
                }
            }
            events.push(json!({"type": "content_block_stop", "index": i}));
        }
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": output}}));
        events.push(json!({"type": "message_stop"}));

        let mut stream = Stream::new("claude-x", 0, true);
        let out: Vec<Out> = events.iter().flat_map(|e| stream.event(e)).collect();
        prop_assert_eq!(out.last(), Some(&Out::Done));
        let (text, calls, finish, streamed_usage) = reassemble(&out);
        let reply = &whole["choices"][0]["message"];
        prop_assert_eq!(text, reply["content"].as_str().unwrap_or("").to_owned());
        let expected: Vec<(String, String, Value)> = reply["tool_calls"].as_array().into_iter().flatten().map(|c| (
            c["id"].as_str().unwrap().to_owned(),
            c["function"]["name"].as_str().unwrap().to_owned(),
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
        )).collect();
        prop_assert_eq!(calls, expected);
        prop_assert_eq!(finish.as_deref(), whole["choices"][0]["finish_reason"].as_str());
        prop_assert_eq!(&streamed_usage, &whole["usage"]);
    }
}
