//! Recorded request/answer pairs (OpenAI in, Gemini out and back), the edge cases the
//! Gemini translation must keep, and a property: a streamed answer, translated event by
//! event, reassembles to the non-streamed translation of the same answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::anthropic::Out;
use super::gemini::{self, Stream};
use proptest::prelude::*;
use serde_json::{json, Value};

#[test]
fn a_conversation_with_system_images_tools_and_merged_tool_results() {
    let chat = json!({
        "model": "gemini/gemini-2.0-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in both cities?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_0~c2lnbmF0dXJl", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_0~c2lnbmF0dXJl", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"time\": \"14:00\"}"},
            {"role": "user", "content": "Thanks."}
        ],
        "max_completion_tokens": 300,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
        "user": "u-42",
        "logprobs": true,
        "parallel_tool_calls": false,
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Weather now",
             "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
                            "properties": {"city": {"type": "string", "minLength": 1}, "unit": {"type": ["string", "null"], "enum": ["C", "F"]}},
                            "required": ["city", "ghost"]}}},
            {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}}
    });
    let expected = json!({
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nAnswer in French."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "What is in this picture, and the weather in both cities?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                {"functionCall": {"name": "time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"result": "18C"}}},
                {"functionResponse": {"name": "time", "response": {"time": "14:00"}}},
                {"text": "Thanks."}
            ]}
        ],
        "generationConfig": {"maxOutputTokens": 300, "temperature": 1.5, "topP": 0.9, "seed": 7, "stopSequences": ["END"]},
        "tools": [{"functionDeclarations": [
            {"name": "weather", "description": "Weather now", "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "minLength": 1}, "unit": {"type": "string", "nullable": true, "enum": ["C", "F"]}},
                "required": ["city"]}},
            {"name": "time"}
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
    });
    assert_eq!(gemini::request(&chat, "gemini-2.0-flash").unwrap(), expected);
}

#[test]
fn tool_choice_n_response_format_and_paths() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]});
    let with = |extra: Value| {
        let mut chat = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        gemini::request(&chat, "gemini-2.0-flash").unwrap()
    };
    assert!(with(json!({})).get("toolConfig").is_none());
    assert!(with(json!({})).get("generationConfig").is_none(), "no default maximum: Gemini's own applies");
    assert_eq!(with(json!({"tool_choice": "auto"}))["toolConfig"]["functionCallingConfig"], json!({"mode": "AUTO"}));
    assert_eq!(with(json!({"tool_choice": "none"}))["toolConfig"]["functionCallingConfig"], json!({"mode": "NONE"}));
    assert_eq!(with(json!({"tool_choice": "required"}))["toolConfig"]["functionCallingConfig"], json!({"mode": "ANY"}));
    assert_eq!(
        with(json!({"n": 3, "max_tokens": 9}))["generationConfig"],
        json!({"maxOutputTokens": 9, "candidateCount": 3})
    );
    assert_eq!(
        with(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "integer"}}}}}})
        )["generationConfig"],
        json!({"responseMimeType": "application/json", "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}})
    );
    let dropped = with(
        json!({"logprobs": true, "top_logprobs": 2, "logit_bias": {}, "stream": true, "stream_options": {"include_usage": true}}),
    );
    for name in ["logprobs", "top_logprobs", "logit_bias", "stream", "stream_options", "model", "messages"] {
        assert!(dropped.get(name).is_none(), "{name}");
    }
    assert_eq!(gemini::path("gemini-2.5-pro", false).unwrap(), "v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(gemini::path("gemini-2.5-pro", true).unwrap(), "v1beta/models/gemini-2.5-pro:streamGenerateContent");
    assert!(gemini::path("../x", false).is_err());
    assert!(gemini::path("a:b", false).is_err());

    // Gemini 3 refuses a function call without a thought signature: one keygate did not
    // hand out gets the documented placeholder, on the first call of a turn.
    let history = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "x1", "function": {"name": "f", "arguments": "{}"}},
            {"id": "x2", "function": {"name": "f", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "x1", "content": "1"},
        {"role": "tool", "tool_call_id": "x2", "content": "2"}
    ]});
    let sent = gemini::request(&history, "gemini-3-pro-preview").unwrap();
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], "skip_thought_signature_validator");
    assert!(sent["contents"][1]["parts"][1].get("thoughtSignature").is_none());
    let sent = gemini::request(&history, "gemini-2.0-flash").unwrap();
    assert!(sent["contents"][1]["parts"][0].get("thoughtSignature").is_none());
}

#[test]
fn what_gemini_cannot_honour_is_refused_with_a_reason() {
    let refused = |extra: Value| {
        let mut chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            chat[k] = v.clone();
        }
        gemini::request(&chat, "gemini-2.0-flash").unwrap_err().0
    };
    assert!(refused(json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]}))
        .contains("data: URL"));
    assert!(refused(json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]})).contains("nope"));
    assert!(refused(json!({"functions": []})).contains("tools"));
    assert!(refused(json!({"modalities": ["audio"]})).contains("text only"));
    assert!(refused(json!({"messages": [{"role": "user", "content": [{"type": "file"}]}]})).contains("`file`"));
    assert!(refused(json!({"tools": [{"type": "web_search"}]})).contains("function"));
    assert!(refused(json!({"messages": "hi"})).contains("array"));
}

#[test]
fn an_answer_with_text_parallel_calls_thoughts_and_usage() {
    let answer = json!({
        "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": true},
            {"text": "Checking "},
            {"text": "both."},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}
        ]}}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 30, "thoughtsTokenCount": 5, "cachedContentTokenCount": 60, "totalTokenCount": 135},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc"
    });
    let expected = json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gemini-2.5-flash",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking both.", "refusal": null,
            "tool_calls": [
                {"id": "call_0~c2ln", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 35, "total_tokens": 135,
                  "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}
    });
    assert_eq!(gemini::response(&answer, "gemini-2.5-flash", 1_700_000_000), expected);

    // The answer's calls go back as the next turn, signature included.
    let round = json!({"messages": [
        {"role": "user", "content": "Weather?"},
        expected["choices"][0]["message"].clone(),
        {"role": "tool", "tool_call_id": "call_0~c2ln", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"}
    ]});
    let sent = gemini::request(&round, "gemini-2.5-flash").unwrap();
    assert_eq!(
        sent["contents"][1]["parts"][1],
        json!({"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"})
    );
    assert_eq!(sent["contents"][2]["parts"].as_array().unwrap().len(), 2);
}

#[test]
fn finish_reasons_candidates_and_blocked_prompts() {
    for (reason, called, finish) in [
        ("STOP", false, "stop"),
        ("STOP", true, "tool_calls"),
        ("MAX_TOKENS", false, "length"),
        ("MAX_TOKENS", true, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("OTHER", false, "stop"),
    ] {
        assert_eq!(gemini::finish_reason(reason, called), finish, "{reason}");
    }
    let two = gemini::response(
        &json!({"candidates": [
            {"index": 0, "finishReason": "STOP", "content": {"parts": [{"text": "a"}]}},
            {"index": 1, "finishReason": "MAX_TOKENS", "content": {"parts": [{"text": "b"}]}}
        ]}),
        "m",
        0,
    );
    assert_eq!(two["choices"][1]["index"], 1);
    assert_eq!(two["choices"][1]["finish_reason"], "length");
    assert_eq!(two["model"], "m");
    let blocked = gemini::response(
        &json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}),
        "m",
        0,
    );
    assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(blocked["usage"]["prompt_tokens"], 4);
}

#[test]
fn errors_take_openais_shape() {
    let body = br#"{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}"#;
    let e = gemini::error(429, body);
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(e["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(e["error"]["message"], "Gemini: Resource has been exhausted");
    let wrapped = format!("[{}]", String::from_utf8_lossy(body));
    assert_eq!(gemini::error(429, wrapped.as_bytes())["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(gemini::error(503, b"<html>")["error"]["type"], "api_error");
}

/// A recorded `alt=sse` stream: text in two events, then two function calls in one.
fn recorded_stream() -> Vec<Value> {
    vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Let me "}]}, "index": 0}],
               "usageMetadata": {"promptTokenCount": 25, "totalTokenCount": 25}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "check."}]}, "index": 0}],
               "usageMetadata": {"promptTokenCount": 25, "totalTokenCount": 25}, "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "time", "args": {"tz": "CET"}}}
                ]}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 25, "candidatesTokenCount": 40, "cachedContentTokenCount": 5, "totalTokenCount": 65},
               "modelVersion": "gemini-2.0-flash", "responseId": "r1"}),
    ]
}

fn data(out: &[Out]) -> Vec<&Value> {
    out.iter().filter_map(|o| if let Out::Chunk(c) = o { Some(c) } else { None }).collect()
}

#[test]
fn a_stream_with_two_function_calls_gives_each_its_own_index() {
    let mut stream = Stream::new("gemini-2.0-flash", 1, true);
    let mut out: Vec<Out> = recorded_stream().iter().flat_map(|e| stream.event(e)).collect();
    assert!(!out.contains(&Out::Done), "Gemini sends no end event: the end of the stream is");
    out.extend(stream.end());
    assert_eq!(out.last(), Some(&Out::Done));
    let chunks = data(&out);
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(chunks[0]["id"], "chatcmpl-r1");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<(u64, String, String)> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0].as_object().cloned())
        .map(|t| {
            (
                t["index"].as_u64().unwrap(),
                t["id"].as_str().unwrap().to_owned(),
                t["function"]["arguments"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![(0, "call_0".into(), "{\"city\":\"Paris\"}".into()), (1, "call_1".into(), "{\"tz\":\"CET\"}".into())]
    );
    let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str()).unwrap();
    assert_eq!(finish, "tool_calls");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 25);
    assert_eq!(usage["usage"]["completion_tokens"], 40);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 5);

    let mut quiet = Stream::new("m", 1, false);
    let mut out: Vec<Out> = recorded_stream().iter().flat_map(|e| quiet.event(e)).collect();
    out.extend(quiet.end());
    assert!(!out.iter().any(|o| matches!(o, Out::Chunk(c) if c.get("usage").is_some())));
}

#[test]
fn a_stream_that_breaks_ends_early_or_errors_ends_with_an_error_event() {
    // Ended before any candidate finished.
    let mut stream = Stream::new("m", 1, false);
    stream.event(&recorded_stream()[0]);
    let end = stream.end();
    assert!(matches!(&end[..], [Out::Error(e)] if e["error"]["code"] == "upstream_stream_cut"));
    assert!(stream.cut("again").is_empty(), "once");

    // Broken off.
    let mut stream = Stream::new("m", 1, false);
    stream.event(&recorded_stream()[0]);
    assert!(matches!(&stream.cut("broke")[..], [Out::Error(_)]));
    assert!(stream.end().is_empty());

    // An error event mid-stream.
    let mut stream = Stream::new("m", 1, false);
    stream.event(&recorded_stream()[0]);
    let out =
        stream.event(&json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}));
    assert!(matches!(&out[..], [Out::Error(e)] if e["error"]["code"] == "UNAVAILABLE"));
    assert!(stream.is_done());
    assert!(stream.end().is_empty());
}

/// One part of a generated answer.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Call { name: String, args: Value },
}

fn part() -> impl Strategy<Value = Part> {
    let text = "[a-zA-Z0-9 ,.!?\"\\\\é€🦀\n]{1,40}".prop_map(Part::Text);
    let value = prop_oneof![
        any::<i32>().prop_map(Value::from),
        "[a-z \"\\\\é]{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let args = proptest::collection::btree_map("[a-z_]{1,8}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()));
    let call = ("[a-z_]{1,10}", args).prop_map(|(name, args)| Part::Call { name, args });
    prop_oneof![text, call]
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
    for c in data(out) {
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
        parts in proptest::collection::vec(part(), 1..6),
        cuts in proptest::collection::vec(0.0f64..1.0, 0..4),
        signed in any::<bool>(),
        prompt in 0u64..5000, cached in 0u64..5000, output in 1u64..5000,
    ) {
        let as_json = |p: &Part, first_call: bool| match p {
            Part::Text(t) => json!({"text": t}),
            Part::Call { name, args } => {
                let mut part = json!({"functionCall": {"name": name, "args": args}});
                if signed && first_call {
                    part["thoughtSignature"] = "c2ln".into();
                }
                part
            }
        };
        let first_call = parts.iter().position(|p| matches!(p, Part::Call { .. }));
        let usage = json!({"promptTokenCount": prompt, "cachedContentTokenCount": cached.min(prompt), "candidatesTokenCount": output, "totalTokenCount": prompt + output});
        let whole_parts: Vec<Value> = parts.iter().enumerate().map(|(i, p)| as_json(p, Some(i) == first_call)).collect();
        let answer = json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": whole_parts}}],
                            "usageMetadata": usage, "modelVersion": "gemini-x", "responseId": "p"});
        let whole = gemini::response(&answer, "gemini-x", 0);

        // Streamed: text split into pieces across events, each call whole in its own.
        let mut events = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let pieces = match p {
                Part::Text(t) => split(t, &cuts).into_iter().map(|t| json!({"text": t})).collect(),
                Part::Call { .. } => vec![as_json(p, Some(i) == first_call)],
            };
            for piece in pieces {
                events.push(json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [piece]}}],
                                   "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, "responseId": "p"}));
            }
        }
        events.push(json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [{"text": ""}]}}],
                           "usageMetadata": usage, "modelVersion": "gemini-x", "responseId": "p"}));

        let mut stream = Stream::new("gemini-x", 0, true);
        let mut out: Vec<Out> = events.iter().flat_map(|e| stream.event(e)).collect();
        out.extend(stream.end());
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
