//! OpenAI chat completions to and from Google Gemini's `generateContent` and
//! `streamGenerateContent` (<https://ai.google.dev/api/generate-content>, function calling
//! at <https://ai.google.dev/gemini-api/docs/function-calling>).
//!
//! Requests ([`request`]): `system`/`developer` messages become `systemInstruction`;
//! `assistant` turns become `model` turns; consecutive turns of one role (tool results
//! included) merge into one; images from `data:` URLs become `inlineData`; tools become
//! `functionDeclarations` with their JSON schemas cut to the subset Gemini reads
//! ([`schema`]); tool results become `functionResponse` parts named after the call they
//! answer. Answers ([`response`]) and stream events ([`Stream`]) come back as a
//! `chat.completion` and its chunks. Gemini's function calls have no ids: keygate names
//! them `call_<n>` (the n-th call of the answer), with the call's thought signature, when
//! Gemini gives one, carried after a `~` so the next turn can hand it back.

use super::anthropic::Out;
use super::openai::{self, Image};
use super::{openai_error, Refused};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The path a unified chat call for `model` is sent to (`?alt=sse` goes with a stream).
/// Only model ids of letters, digits, `.`, `-` and `_` are sent.
pub fn path(model: &str, stream: bool) -> Result<String, Refused> {
    let valid = !model.is_empty() && model.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid {
        return Err(Refused::new(format!(
            "`{model}` is not a Gemini model id (letters, digits, `.`, `-` and `_`, e.g. `gemini-2.0-flash`)"
        )));
    }
    let method = if stream { "streamGenerateContent" } else { "generateContent" };
    Ok(format!("v1beta/models/{model}:{method}"))
}

/// The path the shared-endpoint rule is checked against before the model is known (the
/// rule names `models/*`, any model); the call itself goes to [`path`].
pub const RESOLVE_PATH: &str = "v1beta/models/model:generateContent";

/// The query a streamed call is sent with: SSE rather than one JSON array.
pub const STREAM_QUERY: &str = "alt=sse";

/// OpenAI parameters Gemini has no counterpart for, dropped (the answer simply lacks what
/// they would have asked for). Any other unknown parameter is dropped too.
pub const DROPPED: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "parallel_tool_calls",
];

/// The thought signature Gemini documents for function calls it did not make itself
/// (history written by the caller, or from another model): sent for Gemini 3 models,
/// which refuse a call without one.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// An OpenAI chat-completions request as a Gemini `generateContent` request body (the
/// model goes in the path, see [`path`]).
pub fn request(chat: &Value, model: &str) -> Result<Value, Refused> {
    let chat = chat.as_object().ok_or_else(|| Refused::new("the request body must be a JSON object"))?;
    refuse_unsupported(chat)?;
    let mut out = Map::new();
    let (system, contents) = contents(chat.get("messages"), model.starts_with("gemini-3"))?;
    out.insert("contents".into(), contents.into());
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": [{"text": system.join("\n\n")}]}));
    }
    let mut config = Map::new();
    if let Some(max) = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| chat.get(*k).and_then(Value::as_u64))
    {
        config.insert("maxOutputTokens".into(), max.into());
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = chat.get(from).filter(|v| v.is_number()) {
            config.insert(to.into(), v.clone());
        }
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            config.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(n) = chat.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        config.insert("candidateCount".into(), n.into());
    }
    if let Some(format) = chat.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                config.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), "application/json".into());
                if let Some(s) = format.pointer("/json_schema/schema").filter(|s| s.is_object()) {
                    config.insert("responseSchema".into(), schema(s));
                }
            }
            _ => {}
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), config.into());
    }
    let declarations = tools(chat.get("tools"))?;
    let has_tools = !declarations.is_empty();
    if has_tools {
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(config) = tool_config(chat.get("tool_choice"), has_tools)? {
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

/// Parameters whose meaning Gemini cannot keep: answered 400, never dropped.
fn refuse_unsupported(chat: &Map<String, Value>) -> Result<(), Refused> {
    if let Some(kind) = chat.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        if !matches!(kind, "text" | "json_object" | "json_schema") {
            return Err(Refused::new(format!("unknown `response_format` `{kind}`")));
        }
    }
    if chat.contains_key("functions") || chat.contains_key("function_call") {
        return Err(Refused::new("`functions` and `function_call` are deprecated: send `tools` and `tool_choice`"));
    }
    let audio = chat.contains_key("audio")
        || chat.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|v| v != "text"));
    if audio {
        return Err(Refused::new("through /v1, Gemini models answer in text only: drop `audio` and `modalities`"));
    }
    Ok(())
}

/// The system text and the turns (`user` / `model`), consecutive turns of one role merged.
fn contents(messages: Option<&Value>, needs_signature: bool) -> Result<(Vec<String>, Vec<Value>), Refused> {
    let list = messages
        .and_then(Value::as_array)
        .ok_or_else(|| Refused::new("`messages` must be an array of chat messages"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    // Each tool call id → its function's name, from the latest assistant turn naming it.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (i, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match role {
            "system" | "developer" => {
                let text = openai::text_of(content, i, "Gemini")?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", parts(content, i)?),
            "assistant" => {
                let mut parts = parts(content, i)?;
                let calls = message.get("tool_calls").and_then(Value::as_array).into_iter().flatten();
                for (n, call) in calls.enumerate() {
                    let (part, id, name) = function_call(call, i, needs_signature && n == 0)?;
                    names.insert(id, name);
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    Refused::new(format!("messages[{i}]: a `tool` message needs the `tool_call_id` it answers"))
                })?;
                let name = names.get(id).ok_or_else(|| {
                    Refused::new(format!(
                        "messages[{i}]: `tool_call_id` `{id}` answers no tool call of an earlier assistant message \
                         (Gemini matches results to calls by the function's name)"
                    ))
                })?;
                let text = openai::text_of(content, i, "Gemini")?;
                // Gemini wants an object: a JSON object is sent as it is, anything else
                // as `{"result": <text>}`.
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                ("user", vec![json!({"functionResponse": {"name": name, "response": response}})])
            }
            "function" => {
                return Err(Refused::new(format!(
                    "messages[{i}]: the `function` role is deprecated: answer tool calls with `tool` messages"
                )))
            }
            other => return Err(Refused::new(format!("messages[{i}]: unknown role `{other}`"))),
        };
        if parts.is_empty() {
            continue; // an empty message says nothing
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let turns = turns.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    Ok((system, turns))
}

/// A user or assistant message's content as Gemini parts.
fn parts(content: &Value, i: usize) -> Result<Vec<Value>, Refused> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(list) => {
            let mut out = Vec::with_capacity(list.len());
            for part in list {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let text = part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str);
                        if let Some(text) = text.filter(|t| !t.is_empty()) {
                            out.push(json!({"text": text}));
                        }
                    }
                    Some("image_url") => out.push(image(part, i)?),
                    Some("input_audio") => {
                        let audio = part.get("input_audio").unwrap_or(&Value::Null);
                        let data = audio.get("data").and_then(Value::as_str);
                        let format = audio.get("format").and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(Refused::new(format!(
                                "messages[{i}]: an `input_audio` part needs `data` and `format`"
                            )));
                        };
                        out.push(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}));
                    }
                    other => {
                        return Err(Refused::new(format!(
                        "messages[{i}]: `{}` parts are not supported for Gemini (text, image_url and input_audio are)",
                        other.unwrap_or("?")
                    )))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(Refused::new(format!("messages[{i}]: `content` must be a string or an array of parts"))),
    }
}

/// An `image_url` part: a base64 `data:` URL becomes `inlineData`. Gemini's `fileData`
/// takes only files uploaded to its Files API, so an http(s) URL is refused.
fn image(part: &Value, i: usize) -> Result<Value, Refused> {
    match openai::image(part, i)? {
        Image::Data { media_type, data } => Ok(json!({"inlineData": {"mimeType": media_type, "data": data}})),
        Image::Link(_) => Err(Refused::new(format!(
            "messages[{i}]: Gemini reads images sent inline only: send the image as a base64 data: URL \
             (`data:image/png;base64,...`), not a link"
        ))),
    }
}

/// An assistant's tool call as a `functionCall` part, with its id and name. The thought
/// signature an id carries (see the module's doc) goes back with it; `skip` asks for
/// Gemini's documented placeholder when there is none.
fn function_call(call: &Value, i: usize, skip: bool) -> Result<(Value, String, String), Refused> {
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() || id.is_empty() {
        return Err(Refused::new(format!("messages[{i}]: each tool call needs an `id` and a `function.name`")));
    }
    let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or("");
    let args = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Refused::new(format!("messages[{i}]: tool call `{id}`'s arguments are not a JSON object")))?
    };
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    match id.split_once('~').map(|(_, s)| s).filter(|s| !s.is_empty()) {
        Some(signature) => part["thoughtSignature"] = signature.into(),
        None if skip => part["thoughtSignature"] = SKIP_SIGNATURE.into(),
        None => {}
    }
    Ok((part, id.to_owned(), name.to_owned()))
}

fn tools(tools: Option<&Value>) -> Result<Vec<Value>, Refused> {
    let Some(list) = tools.filter(|t| !t.is_null()) else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| Refused::new("`tools` must be an array"))?;
    list.iter()
        .map(|tool| {
            if tool.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                return Err(Refused::new("only `function` tools can be sent to Gemini"));
            }
            let f = tool.get("function").unwrap_or(&Value::Null);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| Refused::new("each tool needs a name"))?;
            let mut out = json!({"name": name});
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                out["description"] = d.into();
            }
            // A function without parameters declares none (Gemini refuses an object
            // schema with no properties).
            let parameters = f.get("parameters").filter(|p| p.is_object()).map(schema);
            if let Some(p) = parameters
                .filter(|p| p.get("properties").is_some() || p.get("type").and_then(Value::as_str) != Some("object"))
            {
                out["parameters"] = p;
            }
            Ok(out)
        })
        .collect()
}

/// The JSON-schema keywords Gemini's `Schema` (a subset of OpenAPI 3.0) reads. Any other
/// keyword (`additionalProperties`, `$schema`, `$ref`, `$defs`, `oneOf`, `allOf`, `not`,
/// `const`, `examples`, `patternProperties`, ...) is dropped.
const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// A function's JSON schema cut to what Gemini reads: unknown keywords dropped (see
/// [`SCHEMA_KEYWORDS`]); a type list such as `["string", "null"]` becomes its first
/// non-null type with `nullable: true`; `enum` kept only when all its values are
/// strings; `required` kept only for properties that are declared; an empty
/// `properties` dropped.
pub fn schema(s: &Value) -> Value {
    let Some(object) = s.as_object() else { return s.clone() };
    let mut out = Map::new();
    for (key, value) in object {
        if !SCHEMA_KEYWORDS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "type" => match value {
                Value::Array(types) => {
                    if types.iter().any(|t| t == "null") {
                        out.insert("nullable".into(), true.into());
                    }
                    if let Some(t) = types.iter().find(|t| *t != "null") {
                        out.insert("type".into(), t.clone());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                let properties: Map<String, Value> =
                    value.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), schema(v))).collect();
                if !properties.is_empty() {
                    out.insert("properties".into(), properties.into());
                }
            }
            "items" => {
                out.insert("items".into(), schema(value));
            }
            "anyOf" => {
                let any: Vec<Value> = value.as_array().into_iter().flatten().map(schema).collect();
                out.insert("anyOf".into(), any.into());
            }
            "enum" => {
                if value.as_array().is_some_and(|e| e.iter().all(Value::is_string)) {
                    out.insert("enum".into(), value.clone());
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let declared: Vec<String> =
        out.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default();
    if let Some(required) = out.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| r.as_str().is_some_and(|r| declared.iter().any(|d| d == r)));
        if required.is_empty() {
            out.remove("required");
        }
    }
    Value::Object(out)
}

/// `tool_choice` as `toolConfig.functionCallingConfig`: `auto` → AUTO, `none` → NONE,
/// `required` → ANY, a named function → ANY limited to it.
fn tool_config(choice: Option<&Value>, has_tools: bool) -> Result<Option<Value>, Refused> {
    if !has_tools {
        return Ok(None);
    }
    let config = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => return Err(Refused::new(format!("unknown `tool_choice` `{other}`"))),
        },
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                Refused::new(
                    "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\"}}",
                )
            })?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
    };
    Ok(Some(json!({"functionCallingConfig": config})))
}

/// Gemini's `finishReason` as OpenAI's `finish_reason`; a candidate that calls functions
/// and stopped normally finishes with `tool_calls`.
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop", // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, ...
    }
}

/// `usageMetadata` as OpenAI's `usage`: thinking tokens are completion tokens (and
/// `reasoning_tokens`), cached content is counted in `prompt_tokens` and in
/// `cached_tokens`.
fn usage(metadata: Option<&Value>) -> Value {
    let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(Value::as_u64).unwrap_or(0);
    let prompt = field("promptTokenCount") + field("toolUsePromptTokenCount");
    let thoughts = field("thoughtsTokenCount");
    let completion = field("candidatesTokenCount") + thoughts;
    let total = metadata.and_then(|m| m.get("totalTokenCount")).and_then(Value::as_u64).unwrap_or(prompt + completion);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": field("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// A tool call's id: `call_<n>`, with the thought signature after `~` when there is one.
fn call_id(n: usize, part: &Value) -> String {
    match part.get("thoughtSignature").and_then(Value::as_str) {
        Some(signature) if !signature.is_empty() => format!("call_{n}~{signature}"),
        _ => format!("call_{n}"),
    }
}

/// A `functionCall` part as an OpenAI tool call (without its index).
fn tool_call(n: usize, part: &Value) -> Value {
    let call = &part["functionCall"];
    json!({
        "id": call_id(n, part),
        "type": "function",
        "function": {
            "name": call.get("name").cloned().unwrap_or(Value::Null),
            "arguments": call.get("args").filter(|a| !a.is_null()).map_or_else(|| "{}".to_owned(), Value::to_string),
        },
    })
}

/// Whether a part is generated text the caller sees (thought summaries are left out).
fn visible_text(part: &Value) -> Option<&str> {
    if part.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    part.get("text").and_then(Value::as_str)
}

/// The position a candidate's choice takes.
fn candidate_index(candidate: &Value, position: usize) -> u64 {
    candidate.get("index").and_then(Value::as_u64).unwrap_or(position as u64)
}

/// A `generateContent` answer as a `chat.completion`. An answer whose prompt was blocked
/// (no candidates, `promptFeedback.blockReason`) is one empty choice finished by
/// `content_filter`.
pub fn response(answer: &Value, model: &str, created: u64) -> Value {
    let mut choices = Vec::new();
    for (position, candidate) in answer.get("candidates").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let mut text = String::new();
        let mut calls = Vec::new();
        for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if part.get("functionCall").is_some() {
                calls.push(tool_call(calls.len(), part));
            } else if let Some(t) = visible_text(part) {
                text.push_str(t);
            }
        }
        let finish = candidate.get("finishReason").and_then(Value::as_str).map(|r| finish_reason(r, !calls.is_empty()));
        let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() };
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = calls.into();
        }
        choices.push(json!({"index": candidate_index(candidate, position), "message": message, "logprobs": null, "finish_reason": finish}));
    }
    if choices.is_empty() && answer.pointer("/promptFeedback/blockReason").is_some() {
        choices.push(json!({"index": 0, "message": {"role": "assistant", "content": null, "refusal": null}, "logprobs": null, "finish_reason": "content_filter"}));
    }
    json!({
        "id": answer.get("responseId").and_then(Value::as_str).map_or_else(|| "chatcmpl-keygate".to_owned(), |id| format!("chatcmpl-{id}")),
        "object": "chat.completion",
        "created": created,
        "model": answer.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
        "usage": usage(answer.get("usageMetadata")),
    })
}

/// OpenAI's error `type` for an HTTP status.
fn kind(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// A Gemini error body (`{"error": {"code", "message", "status"}}`) in OpenAI's shape:
/// the type by the HTTP status, Gemini's `status` (e.g. `RESOURCE_EXHAUSTED`) as `code`.
pub fn error(status: u16, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // A streamed call's error may come as a one-element array.
    let parsed = parsed.get(0).cloned().unwrap_or(parsed);
    error_of(&parsed, status)
}

fn error_of(parsed: &Value, status: u16) -> Value {
    let status = parsed.pointer("/error/code").and_then(Value::as_u64).map_or(status, |c| c as u16);
    let code = parsed.pointer("/error/status").and_then(Value::as_str).unwrap_or(kind(status));
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("Gemini answered {status}"), |m| format!("Gemini: {m}"));
    openai_error(&message, kind(status), code)
}

/// One candidate's progress through a stream.
#[derive(Debug, Default)]
struct Choice {
    /// Tool calls sent so far (the next one gets this index).
    calls: usize,
    /// The role chunk was sent.
    started: bool,
    finished: bool,
}

/// Gemini `streamGenerateContent?alt=sse` events to OpenAI chunks. Each event is a
/// whole `GenerateContentResponse` whose candidates carry the parts generated since the
/// previous one; a function call arrives whole, and gets the next `index` of its choice
/// (0, 1, ...) with its whole arguments in one chunk. Gemini sends no end event: the
/// stream is complete when it ends ([`Self::end`]) after every candidate finished.
#[derive(Debug)]
pub struct Stream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    choices: BTreeMap<u64, Choice>,
    usage: Option<Value>,
    done: bool,
}

impl Stream {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            id: "chatcmpl-keygate".into(),
            model: model.into(),
            created,
            include_usage,
            choices: BTreeMap::new(),
            usage: None,
            done: false,
        }
    }

    /// Whether the stream ended ([`Self::end`], an error event, or [`Self::cut`]).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> Out {
        Out::Chunk(json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    /// Translates one event's `data` (parsed JSON).
    pub fn event(&mut self, data: &Value) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        if data.get("error").is_some() {
            self.done = true;
            return vec![Out::Error(error_of(data, 500))];
        }
        if let Some(id) = data.get("responseId").and_then(Value::as_str) {
            self.id = format!("chatcmpl-{id}");
        }
        if let Some(model) = data.get("modelVersion").and_then(Value::as_str) {
            self.model = model.to_owned();
        }
        if let Some(u) = data.get("usageMetadata") {
            self.usage = Some(u.clone());
        }
        let mut out = Vec::new();
        let candidates = data.get("candidates").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if candidates.is_empty() && data.pointer("/promptFeedback/blockReason").is_some() {
            let choice = self.choices.entry(0).or_default();
            choice.finished = true;
            out.push(self.chunk(0, json!({"role": "assistant", "content": null}), Some("content_filter")));
        }
        for (position, candidate) in candidates.iter().enumerate() {
            let index = candidate_index(candidate, position);
            let choice = self.choices.entry(index).or_default();
            if choice.finished {
                continue;
            }
            let first = !std::mem::replace(&mut choice.started, true);
            let mut deltas = Vec::new();
            if first {
                deltas.push(json!({"role": "assistant", "content": ""}));
            }
            for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
                if part.get("functionCall").is_some() {
                    let mut call = tool_call(choice.calls, part);
                    call["index"] = choice.calls.into();
                    choice.calls += 1;
                    deltas.push(json!({"tool_calls": [call]}));
                } else if let Some(text) = visible_text(part).filter(|t| !t.is_empty()) {
                    deltas.push(json!({"content": text}));
                }
            }
            let finish =
                candidate.get("finishReason").and_then(Value::as_str).map(|r| finish_reason(r, choice.calls > 0));
            choice.finished = finish.is_some();
            out.extend(deltas.into_iter().map(|d| self.chunk(index, d, None)));
            if finish.is_some() {
                out.push(self.chunk(index, json!({}), finish));
            }
        }
        out
    }

    /// The provider ended the stream: complete (usage chunk when asked, `[DONE]`) when
    /// every candidate finished, else an error event.
    pub fn end(&mut self) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        if self.choices.is_empty() || self.choices.values().any(|c| !c.finished) {
            return self.cut("the provider's stream ended before it was complete");
        }
        self.done = true;
        let mut out = Vec::new();
        if self.include_usage {
            out.push(Out::Chunk(json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage(self.usage.as_ref()),
            })));
        }
        out.push(Out::Done);
        out
    }

    /// The stream broke before it was complete: an error event, never a silent
    /// truncation. Nothing once the stream is done.
    pub fn cut(&mut self, why: &str) -> Vec<Out> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        vec![Out::Error(openai_error(why, "api_error", "upstream_stream_cut"))]
    }
}
