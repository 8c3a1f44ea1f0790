//! OpenAI chat completions to and from Anthropic Messages
//! (<https://docs.anthropic.com/en/api/messages>, and its streaming reference).
//!
//! Requests ([`request`]): `system`/`developer` messages become `system`; consecutive
//! turns of one role (tool results included) merge into one turn, as Anthropic wants;
//! `max_tokens` is always set; images (data URLs and http(s) URLs), tools, `tool_choice`
//! and tool calls and results become Anthropic's blocks. Answers ([`response`]) and
//! stream events ([`Stream`]) come back as a `chat.completion` and its chunks, with
//! `stop_reason` as `finish_reason` and usage counting cache tokens as prompt tokens.

use super::openai::{self, Image};
use super::{openai_error, Refused};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The path a unified chat call is sent to.
pub const PATH: &str = "v1/messages";

/// OpenAI parameters Anthropic has no counterpart for, dropped (the answer simply lacks
/// what they would have asked for). Any other unknown parameter is dropped too.
pub const DROPPED: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "reasoning_effort",
    "web_search_options",
];

/// Output maximum for a call that names none: the model's own maximum output, at most
/// [`MAX_DEFAULT_NON_STREAMED`] for a call that is not streamed.
pub fn default_max_tokens(model: &str, stream: bool) -> u64 {
    let model_max = if ["opus-4-5", "sonnet-4", "haiku-4", "3-7-sonnet"].iter().any(|m| model.contains(m)) {
        64_000
    } else if model.contains("opus-4") {
        32_000
    } else if model.contains("3-5") {
        8_192
    } else {
        4_096
    };
    if stream {
        model_max
    } else {
        model_max.min(MAX_DEFAULT_NON_STREAMED)
    }
}

/// A non-streamed answer longer than this takes minutes; Anthropic's SDKs refuse such
/// calls unless streamed, so keygate's default stays under it.
pub const MAX_DEFAULT_NON_STREAMED: u64 = 16_384;

/// An OpenAI chat-completions request as an Anthropic Messages request for `model`.
pub fn request(chat: &Value, model: &str) -> Result<Value, Refused> {
    let chat = chat.as_object().ok_or_else(|| Refused::new("the request body must be a JSON object"))?;
    refuse_unsupported(chat)?;
    let stream = chat.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let (system, messages) = messages(chat.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), messages.into());
    let max = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| chat.get(*k).and_then(Value::as_u64))
        .unwrap_or_else(|| default_max_tokens(model, stream));
    out.insert("max_tokens".into(), max.into());
    if let Some(t) = chat.get("temperature").filter(|v| !v.is_null()) {
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = chat.get("top_p").filter(|v| !v.is_null()) {
        out.insert("top_p".into(), p.clone());
    }
    match chat.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if stream {
        out.insert("stream".into(), true.into());
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = tools(chat.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), tools.into());
    }
    if let Some(choice) = tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"), has_tools)? {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// Parameters whose meaning Anthropic cannot keep: answered 400, never dropped.
fn refuse_unsupported(chat: &Map<String, Value>) -> Result<(), Refused> {
    if chat.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Refused::new("Anthropic answers one choice per call: `n` must be 1 (send several calls instead)"));
    }
    if let Some(t) = chat.get("temperature").and_then(Value::as_f64) {
        if !(0.0..=1.0).contains(&t) {
            return Err(Refused::new(format!(
                "Anthropic's temperature runs from 0 to 1; {t} has no equivalent there (keygate does not rescale it)"
            )));
        }
    }
    if let Some(kind) = chat.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        if kind != "text" {
            return Err(Refused::new(format!(
                "`response_format` `{kind}` is not available for Anthropic models: describe the format in the prompt, \
                 or use a tool whose parameters are the schema"
            )));
        }
    }
    if chat.contains_key("functions") || chat.contains_key("function_call") {
        return Err(Refused::new("`functions` and `function_call` are deprecated: send `tools` and `tool_choice`"));
    }
    let audio = chat.contains_key("audio")
        || chat.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|v| v != "text"));
    if audio {
        return Err(Refused::new("Anthropic models answer in text only: drop `audio` and `modalities`"));
    }
    Ok(())
}

/// The system text and the turns, consecutive turns of one role merged.
fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Vec<Value>), Refused> {
    let list = messages
        .and_then(Value::as_array)
        .ok_or_else(|| Refused::new("`messages` must be an array of chat messages"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = openai::text_of(content, i, "Anthropic")?;
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            "user" => ("user", blocks(content, i)?),
            "assistant" => {
                let mut blocks = blocks(content, i)?;
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    blocks.push(tool_use(call, i)?);
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    Refused::new(format!("messages[{i}]: a `tool` message needs the `tool_call_id` it answers"))
                })?;
                let mut result = json!({"type": "tool_result", "tool_use_id": id});
                let text = openai::text_of(content, i, "Anthropic")?;
                if !text.is_empty() {
                    result["content"] = text.into();
                }
                ("user", vec![result])
            }
            "function" => {
                return Err(Refused::new(format!(
                    "messages[{i}]: the `function` role is deprecated: answer tool calls with `tool` messages"
                )))
            }
            other => return Err(Refused::new(format!("messages[{i}]: unknown role `{other}`"))),
        };
        if blocks.is_empty() {
            continue; // Anthropic refuses empty turns; an empty message says nothing
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns))
}

/// A user or assistant message's content as Anthropic blocks.
fn blocks(content: &Value, i: usize) -> Result<Vec<Value>, Refused> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let text = part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str);
                        if let Some(text) = text.filter(|t| !t.is_empty()) {
                            out.push(json!({"type": "text", "text": text}));
                        }
                    }
                    Some("image_url") => out.push(image(part, i)?),
                    other => {
                        return Err(Refused::new(format!(
                            "messages[{i}]: `{}` parts are not supported for Anthropic (text and image_url are)",
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

/// An `image_url` part: a `data:` URL becomes a base64 source, an http(s) URL a URL source.
fn image(part: &Value, i: usize) -> Result<Value, Refused> {
    match openai::image(part, i)? {
        Image::Data { media_type, data } => {
            Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
        }
        Image::Link(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
        }
        Image::Link(_) => {
            Err(Refused::new(format!("messages[{i}]: an image URL must be a data: URL or an http(s) URL")))
        }
    }
}

/// An assistant's tool call as a `tool_use` block.
fn tool_use(call: &Value, i: usize) -> Result<Value, Refused> {
    let (id, name, input) = openai::tool_call(call, i)?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tools(tools: Option<&Value>) -> Result<Vec<Value>, Refused> {
    let Some(list) = tools.filter(|t| !t.is_null()) else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| Refused::new("`tools` must be an array"))?;
    list.iter()
        .map(|tool| {
            if tool.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                return Err(Refused::new("only `function` tools can be sent to Anthropic"));
            }
            let f = tool.get("function").unwrap_or(&Value::Null);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| Refused::new("each tool needs a name"))?;
            let mut out = json!({
                "name": name,
                "input_schema": f.get("parameters").filter(|p| p.is_object()).cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                out["description"] = d.into();
            }
            Ok(out)
        })
        .collect()
}

fn tool_choice(choice: Option<&Value>, parallel: Option<&Value>, has_tools: bool) -> Result<Option<Value>, Refused> {
    if !has_tools {
        return Ok(None); // Anthropic refuses a tool_choice without tools; without tools there is no choice
    }
    let mut out = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => return Err(Refused::new(format!("unknown `tool_choice` `{other}`"))),
        }),
        Some(named) => {
            let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                Refused::new(
                    "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\"}}",
                )
            })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if parallel.and_then(Value::as_bool) == Some(false) {
        let choice = out.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
    }
    Ok(out)
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Token counts as Anthropic reports them (all cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
}

impl Counts {
    fn take(&mut self, usage: &Value) {
        let field = |name: &str| usage.get(name).and_then(Value::as_u64);
        if let Some(n) = field("input_tokens") {
            self.input = n;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output = n;
        }
    }

    /// OpenAI's `usage`: cache writes and reads are prompt tokens; reads are "cached".
    fn openai(self) -> Value {
        let prompt = self.input + self.cache_creation + self.cache_read;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// A Messages answer as a `chat.completion`. Thinking blocks are left out.
pub fn response(message: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }, "refusal": null});
    if !calls.is_empty() {
        reply["tool_calls"] = calls.into();
    }
    let mut counts = Counts::default();
    if let Some(u) = message.get("usage") {
        counts.take(u);
    }
    let finish = message.get("stop_reason").and_then(Value::as_str).map(finish_reason);
    json!({
        "id": message.get("id").cloned().unwrap_or_else(|| "chatcmpl-keygate".into()),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish}],
        "usage": counts.openai(),
    })
}

/// An Anthropic error body (`{"type": "error", "error": {"type", "message"}}`) in
/// OpenAI's shape: Anthropic's error type as both `type` and `code`.
pub fn error(status: u16, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = parsed.pointer("/error/type").and_then(Value::as_str).unwrap_or(match status {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    });
    let message = parsed
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| format!("Anthropic answered {status}"), |m| format!("Anthropic: {m}"));
    openai_error(&message, kind, kind)
}

/// What one Anthropic stream event becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A `chat.completion.chunk`.
    Chunk(Value),
    /// An error event (`{"error": {...}}`); the stream ends after it.
    Error(Value),
    /// The stream is complete: `data: [DONE]`.
    Done,
}

/// Anthropic SSE events to OpenAI chunks. Each tool call gets the next `index` (0, 1,
/// ...) when its block starts, kept for all of its argument deltas, however the blocks
/// interleave.
#[derive(Debug)]
pub struct Stream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Anthropic block index → (OpenAI tool-call index, input given at the block's start
    /// when no delta follows).
    tools: HashMap<u64, (usize, Option<String>)>,
    counts: Counts,
    done: bool,
}

impl Stream {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            id: "chatcmpl-keygate".into(),
            model: model.into(),
            created,
            include_usage,
            tools: HashMap::new(),
            counts: Counts::default(),
            done: false,
        }
    }

    /// Whether the stream ended (`message_stop`, an error event, or [`Self::cut`]).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Out {
        Out::Chunk(json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    }

    fn tool_delta(&self, index: usize, arguments: &str) -> Out {
        self.chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}), None)
    }

    /// Translates one event's `data` (parsed JSON).
    pub fn event(&mut self, data: &Value) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.model = model.to_owned();
                }
                if let Some(u) = message.get("usage") {
                    self.counts.take(u);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                        Some(text) => vec![self.chunk(json!({"content": text}), None)],
                        None => Vec::new(),
                    },
                    Some("tool_use") => {
                        let at = self.tools.len();
                        let given = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .map(Value::to_string);
                        self.tools.insert(index, (at, given));
                        let call = json!({
                            "index": at, "id": block.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        });
                        vec![self.chunk(json!({"tool_calls": [call]}), None)]
                    }
                    _ => Vec::new(), // thinking and server-tool blocks are left out
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => match delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                        Some(text) => vec![self.chunk(json!({"content": text}), None)],
                        None => Vec::new(),
                    },
                    Some("input_json_delta") => {
                        let partial = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        match self.tools.get_mut(&index) {
                            Some((at, given)) if !partial.is_empty() => {
                                *given = None; // the deltas carry the input
                                let at = *at;
                                vec![self.tool_delta(at, partial)]
                            }
                            _ => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                }
            }
            "content_block_stop" => match self.tools.get_mut(&index).and_then(|(at, given)| Some((*at, given.take()?)))
            {
                Some((at, input)) => vec![self.tool_delta(at, &input)],
                None => Vec::new(),
            },
            "message_delta" => {
                if let Some(u) = data.get("usage") {
                    self.counts.take(u);
                }
                match data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    Some(reason) => vec![self.chunk(json!({}), Some(finish_reason(reason)))],
                    None => Vec::new(),
                }
            }
            "message_stop" => {
                self.done = true;
                let mut out = Vec::new();
                if self.include_usage {
                    out.push(Out::Chunk(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": self.counts.openai(),
                    })));
                }
                out.push(Out::Done);
                out
            }
            "error" => {
                self.done = true;
                let kind = data.pointer("/error/type").and_then(Value::as_str).unwrap_or("api_error");
                let message = data.pointer("/error/message").and_then(Value::as_str).unwrap_or("the provider failed");
                vec![Out::Error(openai_error(&format!("Anthropic: {message}"), kind, kind))]
            }
            _ => Vec::new(), // ping, and events added later
        }
    }

    /// The stream ended or broke before `message_stop`: an error event, never a silent
    /// truncation. Nothing once the stream is done.
    pub fn cut(&mut self, why: &str) -> Vec<Out> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        vec![Out::Error(openai_error(why, "api_error", "upstream_stream_cut"))]
    }
}
