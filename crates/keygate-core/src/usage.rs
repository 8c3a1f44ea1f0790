//! Reading token usage out of provider responses, streamed or not: OpenAI's `usage`
//! (in the body, or the final chunk of a stream), Anthropic's `usage` (in the body, or
//! `message_start` then the cumulative `message_delta`), Gemini's `usageMetadata`,
//! Bedrock's `usage.inputTokens` (Converse, and ConverseStream's `metadata` event, see
//! [`crate::eventstream`]) or `amazon-bedrock-invocationMetrics` (InvokeModel streams).

use serde::Deserialize;
use serde_json::Value;

/// Which response format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
    /// AWS Bedrock: Converse JSON, or event-stream frames.
    Bedrock,
    /// Not an AI API: requests are counted, tokens are not.
    Other,
}

impl Dialect {
    pub fn of(provider: &str) -> Self {
        match provider {
            "openai" | "openrouter" | "voyage" => Dialect::OpenAi,
            "anthropic" => Dialect::Anthropic,
            "gemini" => Dialect::Gemini,
            "bedrock" => Dialect::Bedrock,
            _ => Dialect::Other,
        }
    }
}

/// Tokens seen so far in one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: i64,
    pub output: i64,
    /// Whether the provider reported any count at all (zero reported is not unknown).
    pub reported: bool,
    /// Whether the provider sent the report that closes an answer (OpenAI's usage,
    /// Anthropic's top-level `usage` of `message_delta` or a whole message, Gemini's
    /// cumulative `usageMetadata`): the counts are then the provider's final word.
    pub final_report: bool,
    /// Whether the counts are keygate's estimate (a stream cut before its usage event)
    /// rather than the provider's report.
    pub estimated: bool,
}

/// Bytes of text per token assumed when a count must be estimated: about four for
/// English; three errs on the side of counting too much rather than too little.
const BYTES_PER_TOKEN: usize = 3;

impl Tokens {
    /// Fills in what a stream cut short never reported, from what passed: the request's
    /// size for an input never reported, the text relayed for its output. Never lowers
    /// a reported count; marks the result estimated when it changed one.
    pub fn estimate_unreported(&mut self, request_bytes: usize, relayed_text_bytes: usize) {
        let input = if self.input > 0 { self.input } else { request_bytes.div_ceil(BYTES_PER_TOKEN) as i64 };
        let output = self.output.max(relayed_text_bytes.div_ceil(BYTES_PER_TOKEN) as i64);
        if (input, output) != (self.input, self.output) {
            self.input = input;
            self.output = output;
            self.estimated = true;
        }
    }
}

impl Tokens {
    /// Takes in what one JSON document (a body, or one SSE event's data) reports.
    /// Counts are cumulative in every dialect, so later reports replace earlier ones.
    pub fn observe(&mut self, dialect: Dialect, report: &Report) {
        let mut final_report = false;
        let mut take = |input: Option<i64>, output: Option<i64>| {
            if let Some(n) = input {
                self.input = n;
                self.reported = true;
            }
            if let Some(n) = output {
                self.output = n;
                self.reported = true;
            }
            input.is_some() || output.is_some()
        };
        match dialect {
            Dialect::OpenAi => {
                if let Some(u) = report.usage.as_ref().filter(|u| u.is_object()) {
                    final_report = take(int(u, "prompt_tokens"), int(u, "completion_tokens"));
                }
            }
            Dialect::Anthropic => {
                if let Some(u) = report.message.as_ref().and_then(|m| m.get("usage")) {
                    take(int(u, "input_tokens"), int(u, "output_tokens"));
                }
                if let Some(u) = report.usage.as_ref().filter(|u| u.is_object()) {
                    final_report = take(int(u, "input_tokens"), int(u, "output_tokens"));
                }
            }
            Dialect::Gemini => {
                if let Some(u) = &report.usage_metadata {
                    final_report = take(int(u, "promptTokenCount"), int(u, "candidatesTokenCount"));
                }
            }
            Dialect::Bedrock => {
                // InvokeModel with an Anthropic model answers in Anthropic's shape.
                if let Some(u) = report.message.as_ref().and_then(|m| m.get("usage")) {
                    take(int(u, "input_tokens"), int(u, "output_tokens"));
                }
                if let Some(u) = report.usage.as_ref().filter(|u| u.is_object()) {
                    final_report = take(
                        int(u, "inputTokens").or_else(|| int(u, "input_tokens")),
                        int(u, "outputTokens").or_else(|| int(u, "output_tokens")),
                    );
                }
                if let Some(m) = &report.invocation_metrics {
                    final_report |= take(int(m, "inputTokenCount"), int(m, "outputTokenCount"));
                }
            }
            Dialect::Other => {}
        }
        self.final_report |= final_report;
    }
}

/// What one JSON document of an answer (a body, or one SSE event's data) says about the
/// call: only the fields keygate reads are kept; the rest (the generated text, however
/// long) is skipped over without being built into a tree.
#[derive(Debug, Default, Deserialize)]
pub struct Report {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    /// Anthropic's `message_start` event.
    #[serde(default)]
    message: Option<Value>,
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Value>,
    /// The last chunk of a Bedrock InvokeModel stream.
    #[serde(default, rename = "amazon-bedrock-invocationMetrics")]
    invocation_metrics: Option<Value>,
    /// Whether `choices` is an empty array, and how much text it carries (what it holds
    /// is never kept).
    #[serde(default)]
    choices: Skimmed,
    /// Anthropic's `content_block_delta`.
    #[serde(default)]
    delta: Skimmed,
    /// Gemini's answer.
    #[serde(default)]
    candidates: Skimmed,
}

impl Report {
    /// Reads a document; `None` when it is not a JSON object.
    pub fn parse(json: &[u8]) -> Option<Self> {
        if !json.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    /// The model the answer names (`model`, or Anthropic's `message.model`).
    pub fn model(&self) -> Option<String> {
        self.model
            .as_ref()
            .or_else(|| self.message.as_ref().and_then(|m| m.get("model")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// An OpenAI stream chunk that carries only usage (`"choices": []`): the one keygate
    /// asks for when the caller did not, and removes before the caller sees it.
    pub fn is_usage_only_chunk(&self) -> bool {
        self.usage.as_ref().is_some_and(|u| !u.is_null()) && self.choices.empty_list == Some(true)
    }

    /// Bytes of generated text (and tool-call arguments) this document carries: what an
    /// estimate of output tokens is made from when a stream is cut short.
    pub fn text_bytes(&self) -> usize {
        self.choices.text_bytes + self.delta.text_bytes + self.candidates.text_bytes
    }
}

/// An integer field of a usage object.
fn int(usage: &Value, field: &str) -> Option<i64> {
    usage.get(field).and_then(Value::as_i64)
}

/// A field skimmed without being built: whether it is an empty array (`None` when
/// absent), and the bytes of the strings inside it that are generated text (`content`,
/// `text`, `arguments`, `partial_json`), at any depth.
#[derive(Debug, Default, PartialEq, Eq)]
struct Skimmed {
    empty_list: Option<bool>,
    text_bytes: usize,
}

impl<'de> Deserialize<'de> for Skimmed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut text_bytes = 0;
        let empty = d.deserialize_any(TextVisitor { text_bytes: &mut text_bytes, counts: false })?;
        Ok(Skimmed { empty_list: Some(empty == Some(true)), text_bytes })
    }
}

/// Walks any JSON value, adding up the lengths of generated-text strings. Answers
/// Some(whether it was an empty array) for arrays, None for anything else.
struct TextVisitor<'a> {
    text_bytes: &'a mut usize,
    /// Whether a string met here is generated text (the value of a text key).
    counts: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for TextVisitor<'_> {
    type Value = Option<bool>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TextVisitor<'_> {
    type Value = Option<bool>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut empty = true;
        while seq.next_element_seed(TextVisitor { text_bytes: &mut *self.text_bytes, counts: false })?.is_some() {
            empty = false;
        }
        Ok(Some(empty))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let counts = matches!(key.as_ref(), "content" | "text" | "arguments" | "partial_json");
            map.next_value_seed(TextVisitor { text_bytes: &mut *self.text_bytes, counts })?;
        }
        Ok(None)
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        if self.counts {
            *self.text_bytes += v.len();
        }
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// What each `data:` line of one SSE event reports (`[DONE]` and non-JSON lines skipped).
pub fn sse_data(event: &str) -> impl Iterator<Item = Report> + '_ {
    event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty() && *data != "[DONE]")
        .filter_map(|data| Report::parse(data.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(v: Value) -> Report {
        Report::parse(v.to_string().as_bytes()).expect("an object")
    }

    #[test]
    fn reads_each_dialect() {
        let mut t = Tokens::default();
        t.observe(Dialect::OpenAi, &report(json!({"usage": {"prompt_tokens": 11, "completion_tokens": 7}})));
        assert_eq!(t, Tokens { input: 11, output: 7, reported: true, final_report: true, estimated: false });

        let mut t = Tokens::default();
        t.observe(
            Dialect::Anthropic,
            &report(json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}})),
        );
        t.observe(Dialect::Anthropic, &report(json!({"type": "message_delta", "usage": {"output_tokens": 15}})));
        assert_eq!(t, Tokens { input: 25, output: 15, reported: true, final_report: true, estimated: false });

        let mut t = Tokens::default();
        t.observe(
            Dialect::Gemini,
            &report(json!({"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9}})),
        );
        assert_eq!(t, Tokens { input: 4, output: 9, reported: true, final_report: true, estimated: false });
    }

    #[test]
    fn reads_bedrock_converse_and_invoke_answers() {
        let mut t = Tokens::default();
        t.observe(
            Dialect::Bedrock,
            &report(json!({"output": {"message": {"content": [{"text": "hi"}]}}, "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}})),
        );
        assert_eq!(t, Tokens { input: 12, output: 3, reported: true, final_report: true, estimated: false });
        let mut t = Tokens::default();
        t.observe(
            Dialect::Bedrock,
            &report(json!({"type": "message_start", "message": {"usage": {"input_tokens": 9}}})),
        );
        assert!(!t.final_report);
        t.observe(
            Dialect::Bedrock,
            &report(json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9, "outputTokenCount": 4}})),
        );
        assert_eq!(t, Tokens { input: 9, output: 4, reported: true, final_report: true, estimated: false });
        assert_eq!(report(json!({"contentBlockIndex": 0, "delta": {"text": "abc"}})).text_bytes(), 3);
    }

    #[test]
    fn finds_usage_only_chunks_and_sse_data() {
        assert!(report(json!({"choices": [], "usage": {"prompt_tokens": 1}})).is_usage_only_chunk());
        assert!(Report::parse(br#"{"choices": [ ] , "usage": {"prompt_tokens": 1}}"#).unwrap().is_usage_only_chunk());
        assert!(!report(json!({"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1}})).is_usage_only_chunk());
        assert!(!report(json!({"choices": [], "usage": null})).is_usage_only_chunk());
        assert!(!report(json!({"choices": {}, "usage": {"prompt_tokens": 1}})).is_usage_only_chunk());
        assert!(!report(json!({"usage": {"prompt_tokens": 1}})).is_usage_only_chunk());
        let event = "event: message_delta\ndata: {\"usage\":{\"output_tokens\":3}}\n";
        assert_eq!(sse_data(event).count(), 1);
        assert_eq!(sse_data("data: [DONE]\n").count(), 0);
        assert_eq!(sse_data("data: {not json\n").count(), 0);
        assert_eq!(sse_data("data: [1, 2]\n").count(), 0);
    }

    #[test]
    fn reads_answers_whatever_else_they_hold() {
        // Fields of unexpected types, and long content, neither hide the counts nor the model.
        let body = json!({
            "model": "gpt-4o-mini", "choices": [{"message": {"content": "x".repeat(10_000)}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": "many", "extra": [1, {"a": null}]},
            "message": 7, "usageMetadata": "n/a", "other": {"deep": [[[]]]}
        });
        let r = report(body);
        let mut t = Tokens::default();
        t.observe(Dialect::OpenAi, &r);
        assert_eq!(t, Tokens { input: 3, output: 0, reported: true, final_report: true, estimated: false });
        assert_eq!(r.model().as_deref(), Some("gpt-4o-mini"));
        let mut t = Tokens::default();
        t.observe(Dialect::Anthropic, &r);
        t.observe(Dialect::Gemini, &r);
        assert!(!t.reported, "{t:?}");
        let anthropic = report(json!({"type": "message_start", "message": {"model": "claude", "usage": {}}}));
        assert_eq!(anthropic.model().as_deref(), Some("claude"));
        assert!(Report::parse(b"not json").is_none());
        assert_eq!(r.text_bytes(), 10_000);
        assert!(Report::parse(b"\"a string\"").is_none());
    }

    #[test]
    fn counts_generated_text_in_each_dialect_and_estimates_what_was_never_reported() {
        let openai =
            report(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello there"}}]}));
        assert_eq!(openai.text_bytes(), 11);
        let tool = report(
            json!({"choices": [{"delta": {"tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}),
        );
        assert_eq!(tool.text_bytes(), 7);
        let anthropic = report(json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abcd"}}));
        assert_eq!(anthropic.text_bytes(), 4);
        let gemini = report(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "xyz"}]}}]}));
        assert_eq!(gemini.text_bytes(), 3);

        let mut t = Tokens::default();
        t.estimate_unreported(300, 31);
        assert_eq!(t, Tokens { input: 100, output: 11, estimated: true, ..Tokens::default() });
        // A reported count is never lowered, and one already above the estimate stays exact.
        let mut t = Tokens { input: 25, output: 1, reported: true, ..Tokens::default() };
        t.estimate_unreported(30, 90);
        assert_eq!(t, Tokens { input: 25, output: 30, reported: true, estimated: true, ..Tokens::default() });
        let mut t = Tokens { input: 500, output: 400, reported: true, ..Tokens::default() };
        t.estimate_unreported(30, 90);
        assert!(!t.estimated);
    }
}
