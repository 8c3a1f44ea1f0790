//! Each provider's answers and error bodies, streamed or not.

use crate::config::{Fault, MockConfig};
use crate::server::Shared;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WORDS: [&str; 5] = ["Hello", " from", " keygate", "-mock", "!"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
    /// GitHub's REST API (calls carry `x-github-api-version`).
    GitHub,
    Generic,
}

impl Dialect {
    pub(crate) fn of(path: &str, headers: &HeaderMap) -> Self {
        if headers.contains_key("x-github-api-version") {
            Dialect::GitHub
        } else if path == "/v1/messages" || (path.starts_with("/v1/") && headers.contains_key("anthropic-version")) {
            Dialect::Anthropic
        } else if path.starts_with("/v1beta/") || headers.contains_key("x-goog-api-key") {
            Dialect::Gemini
        } else if path.starts_with("/v1/") || path.starts_with("/api/v1/") {
            Dialect::OpenAi
        } else {
            Dialect::Generic
        }
    }
}

/// The provider's own answer to a bad or missing key. OpenAI's echoes the key (as the
/// real one echoes part of it) so tests can prove keygate scrubs what it relays.
pub(crate) fn unauthorized(dialect: Dialect, key: Option<&str>) -> Response {
    let shown = key.unwrap_or("");
    let (status, body) = match dialect {
        Dialect::OpenAi => (
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": format!("Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
        ),
        Dialect::Anthropic => (
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ),
        Dialect::Gemini => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_INVALID"}]}}),
        ),
        Dialect::GitHub => (
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        ),
        Dialect::Generic => (StatusCode::UNAUTHORIZED, json!({"message": "Not Authorized - Invalid Token"})),
    };
    (status, axum::Json(body)).into_response()
}

/// An injected failure with the dialect's error shape.
pub(crate) fn failure(dialect: Dialect, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("mock fault: {status}");
    let body = match dialect {
        Dialect::Anthropic => {
            let kind = if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "api_error" };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Dialect::Gemini => {
            let kind = match status.as_u16() {
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                400 => "INVALID_ARGUMENT",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status.as_u16(), "message": message, "status": kind}})
        }
        _ => {
            json!({"error": {"message": message, "type": "server_error", "code": status.as_u16()}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub(crate) fn answer(
    shared: &Shared,
    config: &MockConfig,
    fault: Option<Fault>,
    method: &Method,
    path: &str,
    dialect: Dialect,
    request: &Value,
) -> Response {
    let model = request.get("model").and_then(Value::as_str).unwrap_or("mock-model").to_owned();
    // Like a real provider, never report more output per choice than the request's
    // maximum allows (in whichever field its dialect names it), and count every choice.
    let cap = ["/max_tokens", "/max_completion_tokens", "/max_output_tokens", "/generationConfig/maxOutputTokens"]
        .iter()
        .find_map(|k| request.pointer(k).and_then(Value::as_u64));
    let choices = ["/n", "/generationConfig/candidateCount"]
        .iter()
        .find_map(|k| request.pointer(k).and_then(Value::as_u64))
        .unwrap_or(1)
        .max(1);
    let per_choice = cap.map_or(config.output_tokens, |cap| cap.min(config.output_tokens));
    let capped = MockConfig { output_tokens: per_choice * choices, ..config.clone() };
    let config = &capped;
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = shared.next_id();
    // HEAD is answered as GET is, without the body (hyper leaves it out, keeping its length).
    let verb = if method == Method::HEAD { "GET" } else { method.as_str() };
    match (verb, path, dialect) {
        ("GET", "/v1/models", Dialect::Anthropic) => axum::Json(json!({
            "data": [{"type": "model", "id": "claude-sonnet-4-20250514", "display_name": "Claude Sonnet 4", "created_at": "2025-05-14T00:00:00Z"}],
            "has_more": false, "first_id": "claude-sonnet-4-20250514", "last_id": "claude-sonnet-4-20250514"
        }))
        .into_response(),
        ("GET", "/v1/models" | "/api/v1/models", _) => axum::Json(json!({
            "object": "list",
            "data": [
                {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
                {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}
            ]
        }))
        .into_response(),
        ("POST", "/v1/chat/completions" | "/api/v1/chat/completions", _) => {
            if stream {
                let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
                sse(config, fault, openai_chunks(config, id, &model, include_usage), 0, "text/event-stream")
            } else {
                axum::Json(json!({
                    "id": format!("chatcmpl-mock-{id}"), "object": "chat.completion", "created": unix_now(), "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text(config)}, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": config.input_tokens, "completion_tokens": config.output_tokens, "total_tokens": config.input_tokens + config.output_tokens}
                }))
                .into_response()
            }
        }
        ("POST", "/v1/embeddings", _) => crate::embeddings::openai(config, &model, request),
        ("GET", "/user", Dialect::GitHub) => axum::Json(json!({
            "login": "mock-octocat", "id": 583231, "type": "User", "name": "Mock Octocat",
            "html_url": "https://github.com/mock-octocat"
        }))
        .into_response(),
        ("POST", "/v1/messages", _) => {
            let calls = anthropic_tool_calls(request, id);
            if stream {
                let events = match &calls {
                    Some(calls) => anthropic_tool_events(config, id, &model, calls),
                    None => anthropic_events(config, id, &model),
                };
                sse(config, fault, events, ANTHROPIC_PREAMBLE, "text/event-stream")
            } else {
                let (content, stop) = match calls {
                    Some(calls) => {
                        let mut blocks = vec![json!({"type": "text", "text": TOOL_PREFACE.concat()})];
                        blocks.extend(calls.into_iter().map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input})));
                        (blocks, "tool_use")
                    }
                    None => (vec![json!({"type": "text", "text": text(config)})], "end_turn"),
                };
                axum::Json(json!({
                    "id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model,
                    "content": content,
                    "stop_reason": stop, "stop_sequence": null,
                    "usage": anthropic_usage(config, config.output_tokens)
                }))
                .into_response()
            }
        }
        ("POST", p, Dialect::Gemini) if p.ends_with(":generateContent") => {
            let parts = match gemini_tool_calls(request) {
                Some(calls) => gemini_call_parts(&calls),
                None => vec![json!({"text": text(config)})],
            };
            axum::Json(gemini_answer(config, &model_of_path(p), id, parts, true)).into_response()
        }
        ("POST", p, Dialect::Gemini) if p.ends_with(":batchEmbedContents") => {
            crate::embeddings::gemini_batch(&model_of_path(p), request)
        }
        ("POST", p, Dialect::Gemini) if p.ends_with(":embedContent") => crate::embeddings::gemini_one(&model_of_path(p), request),
        ("POST", p, Dialect::Gemini) if p.ends_with(":streamGenerateContent") => {
            sse(config, fault, gemini_events(config, &model_of_path(p), id, request), 0, "text/event-stream")
        }
        _ => axum::Json(json!({"ok": true, "method": method.as_str(), "path": path})).into_response(),
    }
}

/// The model a Gemini path names (`/v1beta/models/{model}:generateContent`).
fn model_of_path(path: &str) -> String {
    path.rsplit('/').next().and_then(|m| m.split(':').next()).unwrap_or("gemini").to_owned()
}

/// One `GenerateContentResponse`: a candidate with `parts`; the last one of an answer
/// finishes and reports every count, earlier stream events report the prompt's only.
fn gemini_answer(config: &MockConfig, model: &str, id: u64, parts: Vec<Value>, last: bool) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let usage = if last {
        candidate["finishReason"] = "STOP".into();
        json!({"promptTokenCount": config.input_tokens, "candidatesTokenCount": config.output_tokens, "totalTokenCount": config.input_tokens + config.output_tokens,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": config.input_tokens}]})
    } else {
        json!({"promptTokenCount": config.input_tokens, "totalTokenCount": config.input_tokens})
    };
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": format!("mock-{id}")})
}

/// The function calls a Gemini request gets, as Gemini would make them: when it declares
/// functions (and `functionCallingConfig.mode` is not `NONE`) and its last turn answers
/// none, one call per function declared (only those in `allowedFunctionNames` when it
/// is set), with arguments made from each function's schema.
fn gemini_tool_calls(request: &Value) -> Option<Vec<(String, Value)>> {
    let declarations: Vec<&Value> = request
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .collect();
    if declarations.is_empty() {
        return None;
    }
    let config = request.pointer("/toolConfig/functionCallingConfig");
    if config.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
        return None;
    }
    let last = request.get("contents")?.as_array()?.last()?;
    let answered = last
        .get("parts")
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    if answered {
        return None;
    }
    let allowed = config.and_then(|c| c.get("allowedFunctionNames")).and_then(Value::as_array);
    let calls = declarations
        .into_iter()
        .filter(|d| allowed.is_none_or(|a| d.get("name").is_some_and(|n| a.contains(n))))
        .map(|d| {
            let name = d.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned();
            let mut args = serde_json::Map::new();
            let properties = d.pointer("/parameters/properties").and_then(Value::as_object);
            for (field, schema) in properties.into_iter().flatten() {
                let value = match schema.get("type").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                    Some("integer") | Some("number") => json!(42),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!(format!("mock {field}")),
                };
                args.insert(field.clone(), value);
            }
            (name, Value::Object(args))
        })
        .collect();
    Some(calls)
}

/// An answer that calls functions: a short text, then one `functionCall` part per call.
fn gemini_call_parts(calls: &[(String, Value)]) -> Vec<Value> {
    let mut parts = vec![json!({"text": TOOL_PREFACE.concat()})];
    parts.extend(calls.iter().map(|(name, args)| json!({"functionCall": {"name": name, "args": args}})));
    parts
}

/// A `streamGenerateContent?alt=sse` answer: one event per piece of text (the parts
/// generated since the previous event); function calls arrive whole, all in the last
/// event, with the finish reason and the full usage.
fn gemini_events(config: &MockConfig, model: &str, id: u64, request: &Value) -> Vec<String> {
    let event = |data: Value| format!("data: {data}\r\n\r\n");
    let mut events = Vec::new();
    match gemini_tool_calls(request) {
        Some(calls) => {
            for piece in TOOL_PREFACE {
                events.push(event(gemini_answer(config, model, id, vec![json!({"text": piece})], false)));
            }
            let parts =
                calls.iter().map(|(name, args)| json!({"functionCall": {"name": name, "args": args}})).collect();
            events.push(event(gemini_answer(config, model, id, parts, true)));
        }
        None => {
            let n = config.chunks.max(1) as usize;
            for i in 0..n {
                let parts = vec![json!({"text": WORDS[i % WORDS.len()]})];
                events.push(event(gemini_answer(config, model, id, parts, i + 1 == n)));
            }
        }
    }
    events
}

fn text(config: &MockConfig) -> String {
    (0..config.chunks.max(1) as usize).map(|i| WORDS[i % WORDS.len()]).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn openai_chunks(config: &MockConfig, id: u64, model: &str, include_usage: bool) -> Vec<String> {
    let created = unix_now();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = Vec::new();
    for i in 0..config.chunks.max(1) as usize {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": WORDS[0]})
        } else {
            json!({"content": WORDS[i % WORDS.len()]})
        };
        events.push(format!("data: {}\n\n", chunk(delta, Value::Null)));
    }
    events.push(format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    if include_usage {
        let usage = json!({"id": format!("chatcmpl-mock-{id}"), "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                           "usage": {"prompt_tokens": config.input_tokens, "completion_tokens": config.output_tokens, "total_tokens": config.input_tokens + config.output_tokens}});
        events.push(format!("data: {usage}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// Events an Anthropic stream sends before its first content delta.
const ANTHROPIC_PREAMBLE: usize = 3;

/// Anthropic's usage object (cache counts included, as the real one reports them).
fn anthropic_usage(config: &MockConfig, output_tokens: u64) -> Value {
    json!({"input_tokens": config.input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": output_tokens})
}

/// The text an answer that calls tools starts with.
const TOOL_PREFACE: [&str; 2] = ["Let me ", "check."];

/// The tool calls a Messages request gets, as Claude would make them: when it offers
/// tools (and `tool_choice` is not `none`) and its last turn is not a tool result, one
/// call per tool offered (the named one for `{"type": "tool"}`, only the first when
/// parallel use is off), with an input made from each tool's schema.
fn anthropic_tool_calls(request: &Value, id: u64) -> Option<Vec<(String, String, Value)>> {
    let tools = request.get("tools")?.as_array().filter(|t| !t.is_empty())?;
    let choice = request.get("tool_choice");
    if choice.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none") {
        return None;
    }
    let last = request.get("messages")?.as_array()?.last()?;
    let answered = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result")));
    if answered {
        return None;
    }
    let named = choice.filter(|c| c.get("type").and_then(Value::as_str) == Some("tool")).and_then(|c| c.get("name"));
    let single = choice.and_then(|c| c.get("disable_parallel_tool_use")).and_then(Value::as_bool) == Some(true);
    let mut calls: Vec<(String, String, Value)> = tools
        .iter()
        .filter(|t| named.is_none_or(|n| t.get("name") == Some(n)))
        .enumerate()
        .map(|(i, tool)| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned();
            let mut input = serde_json::Map::new();
            let properties = tool.pointer("/input_schema/properties").and_then(Value::as_object);
            for (field, schema) in properties.into_iter().flatten() {
                let value = match schema.get("type").and_then(Value::as_str) {
                    Some("integer") | Some("number") => json!(42),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!(format!("mock {field}")),
                };
                input.insert(field.clone(), value);
            }
            (format!("toolu_mock_{id}_{i}"), name, Value::Object(input))
        })
        .collect();
    if single {
        calls.truncate(1);
    }
    Some(calls)
}

/// A streamed answer that calls tools: a short text block, then one `tool_use` block
/// per call with its input streamed as `input_json_delta` pieces of a few bytes.
fn anthropic_tool_events(config: &MockConfig, id: u64, model: &str, calls: &[(String, String, Value)]) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": anthropic_usage(config, 1)}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for piece in TOOL_PREFACE {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    for (i, (tool_id, name, input)) in calls.iter().enumerate() {
        let index = i + 1;
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
        ));
        let json_text = input.to_string();
        let chars: Vec<char> = json_text.chars().collect();
        let mut pieces: Vec<String> = vec![String::new()];
        pieces.extend(chars.chunks(5).map(|c| c.iter().collect::<String>()));
        for piece in pieces {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": config.output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

fn anthropic_events(config: &MockConfig, id: u64, model: &str) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_mock_{id}"), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": anthropic_usage(config, 1)}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for i in 0..config.chunks.max(1) as usize {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORDS[i % WORDS.len()]}}),
        ));
    }
    events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": config.output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

/// Streams `events` with the configured pacing, applying a stream fault if one is set.
/// Like a real model, only the content is paced: `chunk_interval_ms` passes between the
/// `config.chunks` content events starting at `first_content`; what comes before and
/// after them (preamble, finish, usage, `[DONE]`) follows at once.
fn sse(
    config: &MockConfig,
    fault: Option<Fault>,
    mut events: Vec<String>,
    first_content: usize,
    content_type: &'static str,
) -> Response {
    let paced = first_content + 1..first_content + config.chunks.max(1) as usize;
    if fault == Some(Fault::MalformedSse) {
        let at = events.len() / 2;
        events.insert(at, "data: {\"this is\": not json\n\n".to_owned());
    }
    let reset_after = match fault {
        Some(Fault::ResetMidStream { after_chunks }) => Some(after_chunks as usize),
        _ => None,
    };
    let interval = Duration::from_millis(config.chunk_interval_ms);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if reset_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: reset mid-stream")))
                    .await;
                return;
            }
            if paced.contains(&i) && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return; // the client went away
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
