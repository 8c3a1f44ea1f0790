//! OpenAI chat completions to and from AWS Bedrock's Converse API
//! (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html>,
//! and `ConverseStream`, whose answer is an AWS event stream decoded by
//! [`crate::eventstream`]).
//!
//! Requests ([`request`]): `system`/`developer` messages become `system` blocks;
//! consecutive turns of one role (tool results included) merge into one turn; text,
//! `data:` images (→ `image.source.bytes`), tool calls (→ `toolUse`) and tool results
//! (→ `toolResult`); `max_tokens`, `temperature`, `top_p`, `stop` go into
//! `inferenceConfig`; `tools` and `tool_choice` into `toolConfig`. Answers ([`response`])
//! and stream events ([`Stream`]) come back as a `chat.completion` and its chunks.
//! The model is in the path ([`path`]), never in the body.

pub use super::anthropic::Out;
use super::openai::{self, Image};
use super::{openai_error, Refused};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Image formats Converse takes (`image.format`), by media type.
const FORMATS: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("image/jpg", "jpeg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

/// The path a unified call is resolved with, before its model is known (the credential
/// may name it): the shared-endpoint rule matches any model here.
pub const RESOLVE_PATH: &str = "model/_/converse";

/// The path a unified chat call to `model` is sent to (`model/{id}/converse`, or
/// `converse-stream`), decoded: the passthrough's signer encodes it (`:` → `%3A`).
/// Model ids are `[A-Za-z0-9._:-]`; ARNs (with `/`) are refused, as in passthrough.
pub fn path(model: &str, stream: bool) -> Result<String, Refused> {
    let valid = !model.is_empty() && model.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !valid {
        return Err(Refused::new(format!(
            "`{model}` is not a Bedrock model id keygate can send (letters, digits, `.`, `_`, `:`, `-`; model ARNs are \
             not supported yet)"
        )));
    }
    Ok(format!("model/{model}/{}", if stream { "converse-stream" } else { "converse" }))
}

/// An OpenAI chat-completions request as a Converse (or ConverseStream) request body.
pub fn request(chat: &Value) -> Result<Value, Refused> {
    let chat = chat.as_object().ok_or_else(|| Refused::new("the request body must be a JSON object"))?;
    refuse_unsupported(chat)?;
    let mut out = Map::new();
    let (system, messages, has_tool_blocks) = messages(chat.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), system.into_iter().map(|text| json!({"text": text})).collect());
    }
    out.insert("messages".into(), messages.into());
    let mut config = Map::new();
    if let Some(max) = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| chat.get(*k).and_then(Value::as_u64))
    {
        config.insert("maxTokens".into(), max.into());
    }
    if let Some(t) = chat.get("temperature").filter(|v| !v.is_null()) {
        config.insert("temperature".into(), t.clone());
    }
    if let Some(p) = chat.get("top_p").filter(|v| !v.is_null()) {
        config.insert("topP".into(), p.clone());
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
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), config.into());
    }
    if let Some(tools) = tool_config(chat, has_tool_blocks)? {
        out.insert("toolConfig".into(), tools);
    }
    Ok(Value::Object(out))
}

/// Parameters whose meaning Converse cannot keep: answered 400, never dropped. The
/// others it has no counterpart for (those of [`super::anthropic::DROPPED`], `user`,
/// anything unknown) are dropped.
fn refuse_unsupported(chat: &Map<String, Value>) -> Result<(), Refused> {
    if chat.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Refused::new("Bedrock answers one choice per call: `n` must be 1 (send several calls instead)"));
    }
    for (name, label) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(t) = chat.get(name).and_then(Value::as_f64) {
            if !(0.0..=1.0).contains(&t) {
                return Err(Refused::new(format!(
                    "Bedrock's {label} runs from 0 to 1; {t} has no equivalent there (keygate does not rescale it)"
                )));
            }
        }
    }
    if let Some(kind) = chat.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        if kind != "text" {
            return Err(Refused::new(format!(
                "`response_format` `{kind}` is not available through Bedrock's Converse: describe the format in the \
                 prompt, or use a tool whose parameters are the schema"
            )));
        }
    }
    if chat.contains_key("functions") || chat.contains_key("function_call") {
        return Err(Refused::new("`functions` and `function_call` are deprecated: send `tools` and `tool_choice`"));
    }
    let audio = chat.contains_key("audio")
        || chat.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|v| v != "text"));
    if audio {
        return Err(Refused::new("keygate asks Bedrock for text only: drop `audio` and `modalities`"));
    }
    let has_tools = chat.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    if has_tools && chat.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        return Err(Refused::new(
            "Bedrock's Converse cannot limit an answer to one tool call: drop `parallel_tool_calls: false`",
        ));
    }
    Ok(())
}

/// The system texts, the turns (consecutive turns of one role merged) and whether any
/// turn carries a tool call or result (Converse then needs `toolConfig`).
fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Vec<Value>, bool), Refused> {
    let list = messages
        .and_then(Value::as_array)
        .ok_or_else(|| Refused::new("`messages` must be an array of chat messages"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut tool_blocks = false;
    for (i, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = openai::text_of(content, i, "Bedrock")?;
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
                    tool_blocks = true;
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    Refused::new(format!("messages[{i}]: a `tool` message needs the `tool_call_id` it answers"))
                })?;
                tool_blocks = true;
                let text = openai::text_of(content, i, "Bedrock")?;
                ("user", vec![json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}})])
            }
            "function" => {
                return Err(Refused::new(format!(
                    "messages[{i}]: the `function` role is deprecated: answer tool calls with `tool` messages"
                )))
            }
            other => return Err(Refused::new(format!("messages[{i}]: unknown role `{other}`"))),
        };
        if blocks.is_empty() {
            continue; // Converse refuses empty turns and blank text; an empty message says nothing
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns, tool_blocks))
}

/// A user or assistant message's content as Converse content blocks.
fn blocks(content: &Value, i: usize) -> Result<Vec<Value>, Refused> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let text = part.get("text").or_else(|| part.get("refusal")).and_then(Value::as_str);
                        if let Some(text) = text.filter(|t| !t.is_empty()) {
                            out.push(json!({"text": text}));
                        }
                    }
                    Some("image_url") => out.push(image(part, i)?),
                    other => {
                        return Err(Refused::new(format!(
                            "messages[{i}]: `{}` parts are not supported for Bedrock (text and image_url are)",
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

/// An `image_url` part: only `data:` URLs (base64 PNG, JPEG, GIF or WebP) become an
/// `image` block; Converse takes no image URLs, and keygate fetches none for it.
fn image(part: &Value, i: usize) -> Result<Value, Refused> {
    let Image::Data { media_type, data } = openai::image(part, i)? else {
        return Err(Refused::new(format!(
            "messages[{i}]: Bedrock's Converse takes images as bytes, not URLs: send the image as a data URL \
             (`data:image/png;base64,...`)"
        )));
    };
    let format =
        FORMATS.iter().find(|(m, _)| m.eq_ignore_ascii_case(media_type)).map(|(_, f)| *f).ok_or_else(|| {
            Refused::new(format!("messages[{i}]: Bedrock takes PNG, JPEG, GIF and WebP images, not `{media_type}`"))
        })?;
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// An assistant's tool call as a `toolUse` block.
fn tool_use(call: &Value, i: usize) -> Result<Value, Refused> {
    let (id, name, input) = openai::tool_call(call, i)?;
    Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
}

/// `tools` and `tool_choice` as `toolConfig`. Converse has no `none`: the tools are left
/// out instead, unless the conversation already has tool calls or results (Converse
/// then needs the tools defined), which is refused.
fn tool_config(chat: &Map<String, Value>, has_tool_blocks: bool) -> Result<Option<Value>, Refused> {
    let Some(list) = chat.get("tools").filter(|t| !t.is_null()) else { return Ok(None) };
    let list = list.as_array().ok_or_else(|| Refused::new("`tools` must be an array"))?;
    if list.is_empty() {
        return Ok(None);
    }
    let tools = list
        .iter()
        .map(|tool| {
            if tool.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                return Err(Refused::new("only `function` tools can be sent to Bedrock"));
            }
            let f = tool.get("function").unwrap_or(&Value::Null);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| Refused::new("each tool needs a name"))?;
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
            if let Some(d) = f.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                spec["description"] = d.into();
            }
            Ok(json!({"toolSpec": spec}))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let choice =
        match chat.get("tool_choice") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Some(json!({"auto": {}})),
                "required" => Some(json!({"any": {}})),
                "none" if has_tool_blocks => return Err(Refused::new(
                    "Bedrock's Converse has no `tool_choice` `none`, and cannot leave the tools out of a conversation \
                     that has tool calls: send `auto`, or no tools and no tool messages",
                )),
                "none" => return Ok(None),
                other => return Err(Refused::new(format!("unknown `tool_choice` `{other}`"))),
            },
            Some(named) => {
                let name = named.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                    Refused::new(
                    "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"function\": {\"name\"}}",
                )
                })?;
                Some(json!({"tool": {"name": name}}))
            }
        };
    let mut config = json!({"tools": tools});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

/// Converse's `stopReason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, malformed_model_output, malformed_tool_use
    }
}

/// Token counts as Converse reports them (`inputTokens` leaves out cache reads and writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    cache_write: u64,
    cache_read: u64,
    output: u64,
}

impl Counts {
    fn of(usage: Option<&Value>) -> Self {
        let field = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64).unwrap_or(0);
        Self {
            input: field("inputTokens"),
            cache_write: field("cacheWriteInputTokens"),
            cache_read: field("cacheReadInputTokens"),
            output: field("outputTokens"),
        }
    }

    /// OpenAI's `usage`: cache writes and reads are prompt tokens; reads are "cached".
    fn openai(self) -> Value {
        let prompt = self.input + self.cache_write + self.cache_read;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// The id of a translated answer: AWS's request id when it gave one.
fn completion_id(request_id: Option<&str>) -> String {
    match request_id.filter(|r| !r.is_empty()) {
        Some(r) => format!("chatcmpl-{r}"),
        None => "chatcmpl-keygate".to_owned(),
    }
}

/// A Converse answer as a `chat.completion` for `model`. Reasoning blocks are left out.
pub fn response(answer: &Value, model: &str, request_id: Option<&str>, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    let content = answer.pointer("/output/message/content").and_then(Value::as_array);
    for block in content.into_iter().flatten() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": tool.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }));
        }
    }
    let content = if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() };
    let mut reply = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty() {
        reply["tool_calls"] = calls.into();
    }
    let finish = answer.get("stopReason").and_then(Value::as_str).map(finish_reason);
    json!({
        "id": completion_id(request_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish}],
        "usage": Counts::of(answer.get("usage")).openai(),
    })
}

/// OpenAI's error `type` for an AWS exception (the `x-amzn-errortype` header or an
/// event stream's `:exception-type`, either spelling) or, failing that, the status.
fn kind(exception: &str, status: u16) -> &'static str {
    let e = exception.to_ascii_lowercase();
    if e.starts_with("throttling") || e.starts_with("servicequotaexceeded") || status == 429 {
        "rate_limit_error"
    } else if e.starts_with("validation") || status == 400 || status == 413 {
        "invalid_request_error"
    } else if e.starts_with("accessdenied") || e.contains("signature") || status == 403 {
        "permission_error"
    } else if e.starts_with("unrecognizedclient") || status == 401 {
        "authentication_error"
    } else if e.starts_with("resourcenotfound") || status == 404 {
        "not_found_error"
    } else {
        "api_error"
    }
}

/// An AWS error answer (`{"message"}` or `{"Message"}`, its type in `x-amzn-errortype`:
/// `InvalidSignatureException:http://…`) in OpenAI's shape: AWS's error type as `code`.
pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let exception = error_type
        .map(|t| t.split(':').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty())
        .or_else(|| parsed.get("__type").and_then(Value::as_str).map(|t| t.rsplit('#').next().unwrap_or(t)))
        .unwrap_or("");
    let kind = kind(exception, status);
    let message = ["message", "Message"]
        .iter()
        .find_map(|k| parsed.get(*k).and_then(Value::as_str))
        .map_or_else(|| format!("Bedrock answered {status}"), |m| format!("Bedrock: {m}"));
    openai_error(&message, kind, if exception.is_empty() { kind } else { exception })
}

/// ConverseStream events to OpenAI chunks. Each tool call gets the next `index` (0, 1,
/// ...) when its block starts, kept for all of its input deltas, however the blocks
/// interleave. The finish reason goes out at `messageStop`; the usage chunk (when asked
/// for) and `[DONE]` at `metadata`, which follows it.
#[derive(Debug)]
pub struct Stream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// `contentBlockIndex` → (OpenAI tool-call index, whether any input delta came).
    tools: HashMap<u64, (usize, bool)>,
    started: bool,
    stopped: bool,
    done: bool,
}

impl Stream {
    pub fn new(model: &str, request_id: Option<&str>, created: u64, include_usage: bool) -> Self {
        Self {
            id: completion_id(request_id),
            model: model.into(),
            created,
            include_usage,
            tools: HashMap::new(),
            started: false,
            stopped: false,
            done: false,
        }
    }

    /// Whether the stream ended (`metadata`, an exception, or [`Self::cut`]).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    /// The first chunk carries the role; a stream that starts without `messageStart`
    /// still gets it.
    fn start(&mut self, out: &mut Vec<Out>) {
        if !std::mem::replace(&mut self.started, true) {
            out.push(Out::Chunk(self.chunk(json!({"role": "assistant", "content": ""}), None)));
        }
    }

    fn tool_delta(&self, index: usize, arguments: &str) -> Out {
        Out::Chunk(self.chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}), None))
    }

    /// Translates one event (its `:event-type` and JSON payload).
    pub fn event(&mut self, event_type: &str, payload: &Value) -> Vec<Out> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        let index = payload.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event_type {
            "messageStart" => self.start(&mut out),
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    self.start(&mut out);
                    let at = self.tools.len();
                    self.tools.insert(index, (at, false));
                    let call = json!({
                        "index": at, "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null), "type": "function",
                        "function": {"name": tool.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                    });
                    out.push(Out::Chunk(self.chunk(json!({"tool_calls": [call]}), None)));
                }
            }
            "contentBlockDelta" => {
                let delta = payload.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.start(&mut out);
                    out.push(Out::Chunk(self.chunk(json!({"content": text}), None)));
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str) {
                    if let Some((at, seen)) = self.tools.get_mut(&index).filter(|_| !input.is_empty()) {
                        *seen = true;
                        let at = *at;
                        out.push(self.tool_delta(at, input));
                    }
                }
                // reasoningContent and citations are left out
            }
            "contentBlockStop" => {
                // A tool whose input never streamed was called with no arguments.
                if let Some((at, seen)) = self.tools.get_mut(&index) {
                    if !std::mem::replace(seen, true) {
                        let at = *at;
                        out.push(self.tool_delta(at, "{}"));
                    }
                }
            }
            "messageStop" => {
                self.start(&mut out);
                self.stopped = true;
                let reason = payload.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
                out.push(Out::Chunk(self.chunk(json!({}), Some(finish_reason(reason)))));
            }
            "metadata" => {
                self.done = true;
                if self.include_usage {
                    out.push(Out::Chunk(json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                        "choices": [], "usage": Counts::of(payload.get("usage")).openai(),
                    })));
                }
                out.push(Out::Done);
            }
            _ => {} // events added later
        }
        out
    }

    /// An exception event (`:message-type: exception`, its type in `:exception-type`):
    /// an error event, and the stream ends.
    pub fn exception(&mut self, exception_type: &str, payload: &Value) -> Vec<Out> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(Value::as_str))
            .unwrap_or("the provider failed");
        let code = if exception_type.is_empty() { "api_error" } else { exception_type };
        vec![Out::Error(openai_error(&format!("Bedrock: {message}"), kind(exception_type, 0), code))]
    }

    /// The stream ended or broke before `metadata`. After `messageStop` the answer is
    /// whole and only its usage is missing: `[DONE]` (no usage chunk). Before it, an
    /// error event, never a silent truncation. Nothing once the stream is done.
    pub fn cut(&mut self, why: &str) -> Vec<Out> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        if self.stopped {
            return vec![Out::Done];
        }
        vec![Out::Error(openai_error(why, "api_error", "upstream_stream_cut"))]
    }
}

#[cfg(test)]
mod tests;
