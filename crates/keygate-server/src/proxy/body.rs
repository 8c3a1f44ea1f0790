//! A proxied call's body: read only once the call is admitted to be paid for, within a
//! process-wide memory budget; peeked at (without building a JSON tree) for what the
//! gateway needs; and rewritten where keygate must — asking an OpenAI stream for its
//! usage, or lowering the output maximum of a demo call to what the allowance has left.

use crate::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use keygate_core::usage::Dialect;
use keygate_service::gateway::CallSize;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest request body keygate forwards.
pub(crate) const MAX_REQUEST: usize = 32 << 20;
/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;

/// Memory all buffered request bodies may hold at once.
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new((bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS))))
    }

    /// Permits for `bytes`, if the budget has them now.
    fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).ok()?;
        self.0.clone().try_acquire_many_owned(units).ok()
    }
}

/// A body held in memory, with its share of the budget (given back when dropped).
#[derive(Debug)]
pub(crate) struct Buffered {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

fn overloaded() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "keygate is holding as many request bodies as its memory budget allows; try again shortly",
    );
    e.retry_after = Some(1);
    e
}

/// Reads a request body within the budget: refused at once if its announced length does
/// not fit, and as soon as it outgrows what it could take otherwise.
pub(crate) async fn read(body: Body, headers: &HeaderMap, budget: &BodyBudget) -> Result<Buffered, ApiError> {
    use futures_util::StreamExt;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than 32 MiB");
    let announced =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
    if announced.is_some_and(|n| n > MAX_REQUEST) {
        return Err(too_large());
    }
    let mut permits: Option<OwnedSemaphorePermit> = None;
    let mut hold = |permit: OwnedSemaphorePermit| match permits.as_mut() {
        Some(held) => held.merge(permit),
        None => permits = Some(permit),
    };
    let mut held = 0;
    if let Some(n) = announced.filter(|n| *n > 0) {
        hold(budget.take(n).ok_or_else(overloaded)?);
        held = n.div_ceil(UNIT) * UNIT;
    }
    let mut out: Vec<u8> = Vec::with_capacity(announced.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::serve::timed_out(&e) {
                crate::extract::body_timeout()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the request body could not be read")
            }
        })?;
        if out.len() + chunk.len() > MAX_REQUEST {
            return Err(too_large());
        }
        if out.len() + chunk.len() > held {
            let more = out.len() + chunk.len() - held;
            hold(budget.take(more).ok_or_else(overloaded)?);
            held += more.div_ceil(UNIT) * UNIT;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Buffered { bytes: Bytes::from(out), _permit: permits })
}

/// What the gateway needs from a JSON request body, read without building a tree of it.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Peek<'a> {
    #[serde(borrow)]
    pub model: Option<Cow<'a, str>>,
    pub stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    #[serde(rename = "generationConfig", alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    #[serde(rename = "inferenceConfig")]
    inference_config: Option<InferenceConfig>,
}

/// Bedrock Converse's output settings.
#[derive(Debug, Default, serde::Deserialize)]
struct InferenceConfig {
    #[serde(rename = "maxTokens")]
    max_tokens: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Gemini's output settings.
#[derive(Debug, Default, serde::Deserialize)]
struct GenerationConfig {
    #[serde(rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(rename = "candidateCount", alias = "candidate_count")]
    candidate_count: Option<u64>,
}

impl<'a> Peek<'a> {
    /// The fields of a JSON object body (nothing for any other body; it is forwarded
    /// untouched either way). A body the typed reader refuses (a field of an unexpected
    /// type) is read field by field instead, so one odd field hides nothing else.
    pub fn of(body: &'a [u8]) -> Self {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Self::default();
        }
        if let Ok(peek) = serde_json::from_slice(body) {
            return peek;
        }
        if too_many_elements(body) {
            return Self::default();
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return Self::default() };
        // A count written as a float (`"n": 5.0`) counts as what a provider would read.
        let u64_at = |pointer: &str| {
            let found = v.pointer(pointer)?;
            found.as_u64().or_else(|| found.as_f64().filter(|f| f.is_finite() && *f > 0.0).map(|f| f.ceil() as u64))
        };
        Self {
            model: v.get("model").and_then(Value::as_str).map(|m| Cow::Owned(m.to_owned())),
            stream: v.get("stream").and_then(Value::as_bool),
            stream_options: Some(StreamOptions {
                include_usage: v.pointer("/stream_options/include_usage").and_then(Value::as_bool),
            }),
            max_tokens: u64_at("/max_tokens"),
            max_completion_tokens: u64_at("/max_completion_tokens"),
            max_output_tokens: u64_at("/max_output_tokens"),
            n: u64_at("/n"),
            generation_config: Some(GenerationConfig {
                max_output_tokens: u64_at("/generationConfig/maxOutputTokens"),
                candidate_count: u64_at("/generationConfig/candidateCount"),
            }),
            inference_config: Some(InferenceConfig { max_tokens: u64_at("/inferenceConfig/maxTokens") }),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// The most output tokens per choice the request allows, in whichever field its
    /// dialect names it.
    fn max_output_tokens(&self) -> Option<u64> {
        let gemini = self.generation_config.as_ref().and_then(|g| g.max_output_tokens);
        let bedrock = self.inference_config.as_ref().and_then(|c| c.max_tokens);
        [self.max_tokens, self.max_completion_tokens, self.max_output_tokens, gemini, bedrock]
            .into_iter()
            .flatten()
            .max()
    }

    fn choices(&self) -> u64 {
        let gemini = self.generation_config.as_ref().and_then(|g| g.candidate_count);
        self.n.or(gemini).unwrap_or(1).max(1)
    }

    /// What the body says about the call's cost.
    pub fn size(&self, body: &[u8], path: &str) -> CallSize {
        CallSize {
            body_len: body.len(),
            images: count_images(body),
            generates: generates(path),
            max_output_tokens: self.max_output_tokens(),
            choices: self.choices(),
        }
    }
}

/// Whether a provider path generates text (and so has an output maximum to reserve).
fn generates(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    ["chat/completions", "/completions", "/responses", "/messages", "/converse", "/converse-stream", "/invoke"]
        .iter()
        .any(|end| path.ends_with(end))
        || path.ends_with("/invoke-with-response-stream")
        || path.ends_with(":generateContent")
        || path.ends_with(":streamGenerateContent")
        || path == "responses"
        || path == "messages"
}

/// Whether a call's JSON body names its model (OpenAI-shaped providers and Anthropic, on
/// their inference and embedding paths; Gemini and Bedrock name it in the path instead).
pub(crate) fn takes_model(dialect: Dialect, method: &axum::http::Method, path: &str) -> bool {
    matches!(dialect, Dialect::OpenAi | Dialect::Anthropic)
        && method == axum::http::Method::POST
        && (generates(path) || path.trim_end_matches('/').ends_with("embeddings"))
}

/// The body with `model` set to `model` if it is a JSON object that names none; any other
/// body (one naming a model, not JSON, not an object) comes back unchanged.
pub(crate) fn with_model(body: Bytes, model: &str) -> Bytes {
    if Peek::of(&body).model.is_some() || body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return body;
    }
    rewrite(body, |obj| {
        if obj.contains_key("model") {
            return false; // `"model": null` or a number: the caller's, left alone
        }
        obj.insert("model".into(), Value::String(model.to_owned()));
        true
    })
    .0
}

/// Images a request body carries, counted by the markers each dialect uses (a mention
/// in ordinary text counts too: the reservation errs on the side of too many).
fn count_images(body: &[u8]) -> u64 {
    const MARKERS: [&[u8]; 5] =
        [b"\"image_url\"", b"\"input_image\"", b"\"inline_data\"", b"\"inlineData\"", b"\"image\""];
    // Every marker starts with `"i` and holds no other quote but its last, so no two
    // matches overlap: one scan for `"i` (its finder built once), each hit compared.
    static START: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"i"));
    START.find_iter(body).filter(|&at| MARKERS.iter().any(|m| body[at..].starts_with(m))).count() as u64
}

/// The body with `stream_options.include_usage` set (so an OpenAI stream reports its
/// usage); whether it could be set.
pub(crate) fn ask_for_usage(body: Bytes) -> (Bytes, bool) {
    rewrite(body, |obj| {
        let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
        let Some(options) = options.as_object_mut() else { return false };
        options.insert("include_usage".into(), Value::Bool(true));
        true
    })
}

/// The body with its output maximum per choice set to `cap`, in the field the provider
/// reads for this path; whether it could be set (a body that is not a JSON object
/// cannot, and such a call is refused rather than sent uncapped).
pub(crate) fn cap_output(body: Bytes, dialect: Dialect, provider: &str, path: &str, cap: u64) -> (Bytes, bool) {
    let responses_api = path.trim_end_matches('/').ends_with("responses");
    rewrite(body, |obj| {
        match dialect {
            Dialect::Gemini => {
                let config = obj.entry("generationConfig").or_insert_with(|| Value::Object(Default::default()));
                let Some(config) = config.as_object_mut() else { return false };
                config.insert("maxOutputTokens".into(), cap.into());
            }
            Dialect::Anthropic => {
                obj.insert("max_tokens".into(), cap.into());
            }
            // Converse names it `inferenceConfig.maxTokens`; InvokeModel takes the model's
            // own body, where Anthropic's models (and most others) read `max_tokens`.
            Dialect::Bedrock
                if path.trim_end_matches('/').ends_with("/converse") || path.ends_with("/converse-stream") =>
            {
                let config = obj.entry("inferenceConfig").or_insert_with(|| Value::Object(Default::default()));
                let Some(config) = config.as_object_mut() else { return false };
                config.insert("maxTokens".into(), cap.into());
            }
            Dialect::Bedrock => {
                obj.insert("max_tokens".into(), cap.into());
            }
            _ if responses_api => {
                obj.insert("max_output_tokens".into(), cap.into());
            }
            _ => {
                // Every field the caller used, lowered to the cap (a provider may read
                // either); none: the provider's own.
                let fields = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
                let mut any = false;
                for field in fields {
                    if let Some(value) = obj.get_mut(field) {
                        let asked = value.as_u64().unwrap_or(u64::MAX);
                        *value = asked.min(cap).into();
                        any = true;
                    }
                }
                if !any {
                    let field = if provider == "openai" { "max_completion_tokens" } else { "max_tokens" };
                    obj.insert(field.into(), cap.into());
                }
            }
        }
        true
    })
}

/// How many JSON elements (counted by their commas, erring high) a body may have for
/// keygate to parse it into a tree: a tree costs tens of bytes per element, so a 32 MiB
/// array of zeros would take more than half a gigabyte.
pub(crate) const MAX_JSON_ELEMENTS: usize = 1_000_000;

/// Whether a body has too many elements to be parsed into a tree ([`MAX_JSON_ELEMENTS`]).
pub(crate) fn too_many_elements(body: &[u8]) -> bool {
    memchr::memchr_iter(b',', body).nth(MAX_JSON_ELEMENTS).is_some()
}

fn rewrite(body: Bytes, change: impl FnOnce(&mut serde_json::Map<String, Value>) -> bool) -> (Bytes, bool) {
    if too_many_elements(&body) {
        return (body, false);
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else { return (body, false) };
    let Some(obj) = v.as_object_mut() else { return (body, false) };
    if !change(obj) {
        return (body, false);
    }
    match serde_json::to_vec(&v) {
        Ok(bytes) => (Bytes::from(bytes), true),
        Err(_) => (body, false),
    }
}

/// Whether a request body comes compressed (any `Content-Encoding` but identity).
pub(crate) fn compressed(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| v.split(',').any(|e| !e.trim().eq_ignore_ascii_case("identity"))))
}

/// `x-keygate-demo-output-cap`: the call went out with its output maximum lowered.
pub(crate) fn cap_header(cap: u64) -> (&'static str, HeaderValue) {
    ("x-keygate-demo-output-cap", HeaderValue::from(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn size(body: Value, path: &str) -> CallSize {
        let bytes = body.to_string().into_bytes();
        Peek::of(&bytes).size(&bytes, path)
    }

    #[test]
    fn images_are_counted_in_every_dialect_and_nothing_else_is() {
        let body = br#"{"messages":[{"content":[{"type":"image_url","image_url":{"url":"x"}},
            {"type":"input_image"},{"inline_data":{}},{"inlineData":{}},{"source":{"image":1}},
            {"text":"\"image\" is a word; "},{"i":"imagery"},{"image_urls":[]},{"input":"image"}]}]}"#;
        // image_url (as a value and as a key), input_image, inline_data, inlineData,
        // image as a key and as a value (a worst case may overcount); not the escaped
        // word inside a text, nor imagery or image_urls.
        assert_eq!(count_images(body), 7);
        assert_eq!(count_images(b""), 0);
        assert_eq!(count_images(b"\"i"), 0);
    }

    #[test]
    fn the_worst_case_counts_every_dialect_and_every_choice() {
        let s = size(json!({"max_tokens": 1000, "n": 8}), "v1/chat/completions");
        assert_eq!((s.max_output_tokens, s.choices, s.generates), (Some(1000), 8, true));
        let s = size(
            json!({"generationConfig": {"maxOutputTokens": 500, "candidateCount": 4}}),
            "v1beta/models/g:generateContent",
        );
        assert_eq!((s.max_output_tokens, s.choices, s.generates), (Some(500), 4, true));
        let s = size(json!({"max_completion_tokens": 9, "max_tokens": 3}), "v1/chat/completions");
        assert_eq!(s.max_output_tokens, Some(9), "the larger of two fields");
        let s = size(json!({"input": ["x"], "model": "voyage-3"}), "v1/embeddings");
        assert!(!s.generates);
        let s = size(
            json!({"messages": [{"content": [{"type": "image", "source": {}}, {"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "v1/messages",
        );
        assert_eq!(s.images, 3, "markers are counted, erring high");
    }

    #[test]
    fn a_demo_cap_lowers_every_output_field_and_counts_float_choices() {
        let body = Bytes::from(json!({"max_completion_tokens": 5, "max_tokens": 100000}).to_string());
        let (capped, ok) = cap_output(body, Dialect::OpenAi, "openrouter", "api/v1/chat/completions", 9380);
        let capped: Value = serde_json::from_slice(&capped).unwrap();
        assert!(ok);
        assert_eq!((capped["max_completion_tokens"].as_u64(), capped["max_tokens"].as_u64()), (Some(5), Some(9380)));
        let s = size(json!({"max_tokens": 10, "n": 5.0}), "v1/chat/completions");
        assert_eq!(s.choices, 5, "n written as a float still counts");
    }

    #[test]
    fn a_missing_model_is_filled_in_and_a_named_one_never_changed() {
        let filled = with_model(Bytes::from_static(br#"{"messages":[]}"#), "m-1");
        assert_eq!(serde_json::from_slice::<Value>(&filled).unwrap(), json!({"messages": [], "model": "m-1"}));
        for untouched in [&br#"{"model":"mine","messages":[]}"#[..], br#"{"model":null}"#, b"[1]", b"not json", b""] {
            assert_eq!(&with_model(Bytes::copy_from_slice(untouched), "m-1")[..], untouched);
        }
        let post = axum::http::Method::POST;
        assert!(takes_model(Dialect::OpenAi, &post, "v1/chat/completions"));
        assert!(takes_model(Dialect::OpenAi, &post, "v1/embeddings"));
        assert!(takes_model(Dialect::Anthropic, &post, "v1/messages"));
        assert!(!takes_model(Dialect::OpenAi, &axum::http::Method::GET, "v1/models"));
        assert!(!takes_model(Dialect::OpenAi, &post, "v1/moderations"));
        assert!(!takes_model(Dialect::Gemini, &post, "v1beta/models/g:generateContent"));
        assert!(!takes_model(Dialect::Bedrock, &post, "model/m/converse"));
    }

    #[test]
    fn caps_go_where_each_provider_reads_them() {
        let cap = |body: Value, dialect, provider, path| {
            let (bytes, ok) = cap_output(Bytes::from(body.to_string()), dialect, provider, path, 42);
            assert!(ok);
            serde_json::from_slice::<Value>(&bytes).unwrap()
        };
        assert_eq!(
            cap(json!({"model": "gpt-4o"}), Dialect::OpenAi, "openai", "v1/chat/completions")["max_completion_tokens"],
            42
        );
        assert_eq!(
            cap(json!({"max_tokens": 9000}), Dialect::OpenAi, "openai", "v1/chat/completions")["max_tokens"],
            42
        );
        assert_eq!(cap(json!({}), Dialect::OpenAi, "openrouter", "api/v1/chat/completions")["max_tokens"], 42);
        assert_eq!(cap(json!({}), Dialect::OpenAi, "openai", "v1/responses")["max_output_tokens"], 42);
        assert_eq!(cap(json!({"max_tokens": 4096}), Dialect::Anthropic, "anthropic", "v1/messages")["max_tokens"], 42);
        let converse =
            cap(json!({"inferenceConfig": {"maxTokens": 900}}), Dialect::Bedrock, "bedrock", "model/m:0/converse");
        assert_eq!(converse["inferenceConfig"]["maxTokens"], 42);
        assert_eq!(cap(json!({}), Dialect::Bedrock, "bedrock", "model/m:0/invoke")["max_tokens"], 42);
        assert_eq!(
            size(json!({"inferenceConfig": {"maxTokens": 77}}), "model/m/converse-stream").max_output_tokens,
            Some(77)
        );
        let g = cap(
            json!({"generationConfig": {"temperature": 1}}),
            Dialect::Gemini,
            "gemini",
            "v1beta/models/g:generateContent",
        );
        assert_eq!(
            (g["generationConfig"]["maxOutputTokens"].clone(), g["generationConfig"]["temperature"].clone()),
            (json!(42), json!(1))
        );
        assert!(!cap_output(Bytes::from_static(b"not json"), Dialect::OpenAi, "openai", "v1/chat/completions", 1).1);
    }
}
