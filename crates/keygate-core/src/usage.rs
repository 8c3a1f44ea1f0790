//! Reading token usage out of provider responses, streamed or not: OpenAI's `usage`
//! (in the body, or the final chunk of a stream), Anthropic's `usage` (in the body, or
//! `message_start` then the cumulative `message_delta`), Gemini's `usageMetadata`,
//! Bedrock's `usage.inputTokens` (Converse, and ConverseStream's `metadata` event, see
//! [`crate::eventstream`]) or `amazon-bedrock-invocationMetrics` (InvokeModel streams).

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

mod skim;

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
        let message = &report.message.usage;
        match dialect {
            Dialect::OpenAi => {
                if let Some(u) = report.usage.as_ref().filter(|u| u.object) {
                    final_report = take(u.get(Field::PromptTokens), u.get(Field::CompletionTokens));
                }
            }
            Dialect::Anthropic => {
                take(message.get(Field::InputTokens), message.get(Field::OutputTokens));
                if let Some(u) = report.usage.as_ref().filter(|u| u.object) {
                    final_report = take(u.get(Field::InputTokens), u.get(Field::OutputTokens));
                }
            }
            Dialect::Gemini => {
                let u = &report.usage_metadata;
                final_report = take(u.get(Field::PromptTokenCount), u.get(Field::CandidatesTokenCount));
            }
            Dialect::Bedrock => {
                // InvokeModel with an Anthropic model answers in Anthropic's shape.
                take(message.get(Field::InputTokens), message.get(Field::OutputTokens));
                if let Some(u) = report.usage.as_ref().filter(|u| u.object) {
                    final_report = take(
                        u.get(Field::InputTokensCamel).or_else(|| u.get(Field::InputTokens)),
                        u.get(Field::OutputTokensCamel).or_else(|| u.get(Field::OutputTokens)),
                    );
                }
                let m = &report.invocation_metrics;
                final_report |= take(m.get(Field::InputTokenCount), m.get(Field::OutputTokenCount));
            }
            Dialect::Other => {}
        }
        self.final_report |= final_report;
    }
}

/// What one JSON document of an answer (a body, or one SSE event's data) says about the
/// call: only the fields keygate reads are kept, typed as they are read (no JSON tree is
/// built); the rest (the generated text, however long) is skipped over.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Report {
    #[serde(default)]
    model: Option<Model>,
    /// `None` when absent or `null`.
    #[serde(default)]
    usage: Option<Counts>,
    /// Anthropic's `message_start` event.
    #[serde(default)]
    message: Message,
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Counts,
    /// The last chunk of a Bedrock InvokeModel stream.
    #[serde(default, rename = "amazon-bedrock-invocationMetrics")]
    invocation_metrics: Counts,
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
    /// Reads a document; `None` when it is not a JSON object. A document in the plain
    /// form providers send is read in one pass ([`skim`]); any other is read with serde.
    pub fn parse(json: &[u8]) -> Option<Self> {
        if !json.trim_ascii_start().starts_with(b"{") {
            return None;
        }
        skim::report(json).or_else(|| serde_json::from_slice(json).ok())
    }

    /// The model the answer names (`model`, or Anthropic's `message.model`).
    pub fn model(&self) -> Option<String> {
        match &self.model {
            Some(model) => model.as_str(),
            None => self.message.model.as_ref().and_then(Model::as_str),
        }
        .map(str::to_owned)
    }

    /// An OpenAI stream chunk that carries only usage (`"choices": []`): the one keygate
    /// asks for when the caller did not, and removes before the caller sees it.
    pub fn is_usage_only_chunk(&self) -> bool {
        self.usage.is_some() && self.choices.empty_list == Some(true)
    }

    /// Bytes of generated text (and tool-call arguments) this document carries: what an
    /// estimate of output tokens is made from when a stream is cut short.
    pub fn text_bytes(&self) -> usize {
        self.choices.text_bytes + self.delta.text_bytes + self.candidates.text_bytes
    }
}

/// The fields of a usage object keygate reads (token counts), by the name each dialect
/// gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PromptTokens,
    CompletionTokens,
    InputTokens,
    OutputTokens,
    PromptTokenCount,
    CandidatesTokenCount,
    InputTokensCamel,
    OutputTokensCamel,
    InputTokenCount,
    OutputTokenCount,
}

impl Field {
    /// How many there are (the last one's index, plus one).
    const COUNT: usize = Field::OutputTokenCount as usize + 1;

    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "prompt_tokens" => Field::PromptTokens,
            "completion_tokens" => Field::CompletionTokens,
            "input_tokens" => Field::InputTokens,
            "output_tokens" => Field::OutputTokens,
            "promptTokenCount" => Field::PromptTokenCount,
            "candidatesTokenCount" => Field::CandidatesTokenCount,
            "inputTokens" => Field::InputTokensCamel,
            "outputTokens" => Field::OutputTokensCamel,
            "inputTokenCount" => Field::InputTokenCount,
            "outputTokenCount" => Field::OutputTokenCount,
            _ => return None,
        })
    }
}

/// A usage object (`usage`, `usageMetadata`, Bedrock's invocation metrics), read as a
/// JSON tree would be: whether it is an object, and each count that is an integer
/// (within i64; a float, a string or anything else reads as absent). A key given twice
/// counts as its last value; a value of any other shape is skipped.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    object: bool,
    counts: [Option<i64>; Field::COUNT],
}

impl Counts {
    fn get(&self, field: Field) -> Option<i64> {
        self.counts[field as usize]
    }
}

/// A value read as an integer count the way `serde_json::Value::as_i64` reads one:
/// integers that fit i64, nothing else.
#[derive(Default)]
struct Integer(Option<i64>);

/// A `model` field: its text when it is a string (a number, an object, … names none).
#[derive(Debug, Default, PartialEq, Eq)]
struct Model(Option<String>);

impl Model {
    fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// Anthropic's `message` (of `message_start`, or Bedrock's InvokeModel answer): its
/// `usage` and `model`; a value of any other shape holds neither.
#[derive(Debug, Default, PartialEq, Eq)]
struct Message {
    usage: Counts,
    /// `None` when absent or `null`.
    model: Option<Model>,
}

/// A field read from whatever JSON value stands there: the shapes it takes are read,
/// any other reads as the default. What is not kept is still read through ([`Skip`]), so
/// a value a JSON tree would refuse (nested too deep, a number out of range, a broken
/// escape) makes the document unreadable, as it did when these fields were trees.
trait Lenient<'de>: Default {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        Skip.visit_map(map)?;
        Ok(Self::default())
    }
    fn str(_: &str) -> Self {
        Self::default()
    }
    fn int(_: Option<i64>) -> Self {
        Self::default()
    }
}

impl<'de> Lenient<'de> for Counts {
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut counts = Counts { object: true, ..Counts::default() };
        while let Some(field) = map.next_key_seed(KeyAs(Field::of))? {
            match field {
                Some(field) => counts.counts[field as usize] = map.next_value::<Integer>()?.0,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(counts)
    }
}

impl Lenient<'_> for Integer {
    fn int(n: Option<i64>) -> Self {
        Integer(n)
    }
}

impl Lenient<'_> for Model {
    fn str(name: &str) -> Self {
        Model(Some(name.to_owned()))
    }
}

impl<'de> Lenient<'de> for Message {
    fn map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut message = Message::default();
        // Some(true): `usage`; Some(false): `model`.
        let key = |k: &str| match k {
            "usage" => Some(true),
            "model" => Some(false),
            _ => None,
        };
        while let Some(usage) = map.next_key_seed(KeyAs(key))? {
            match usage {
                Some(true) => message.usage = map.next_value()?,
                Some(false) => message.model = map.next_value()?,
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(message)
    }
}

/// Deserializes a [`Lenient`] field from any JSON value.
struct LenientVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        Skip.visit_seq(seq)?;
        Ok(T::default())
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::str(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::int(Some(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::int(i64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::int(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

/// A value read through and dropped, checked as a JSON tree checks it (nesting depth,
/// numbers in range, strings and escapes valid), without building it; serde_json skips
/// serde's own ignored values unchecked.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
}

/// A map's key read for what it names, without copying its text (serde's `Cow<str>`
/// key is always an owned copy).
struct KeyAs<T>(fn(&str) -> T);

impl<'de, T> DeserializeSeed<'de> for KeyAs<T> {
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<T> Visitor<'_> for KeyAs<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<T, E> {
        Ok((self.0)(key))
    }
}

macro_rules! lenient {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(LenientVisitor(std::marker::PhantomData))
            }
        }
    )*};
}
lenient!(Counts, Integer, Model, Message);

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
        let text = |k: &str| matches!(k, "content" | "text" | "arguments" | "partial_json");
        while let Some(counts) = map.next_key_seed(KeyAs(text))? {
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
    use serde_json::{json, Value};

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

    /// The reading before documents were typed: a JSON tree of each usage object. The
    /// typed reader must say what it said, on every shape of document.
    fn by_tree(dialect: Dialect, doc: &Value) -> (Tokens, Option<String>, bool) {
        let int = |u: &Value, f: &str| u.get(f).and_then(Value::as_i64);
        let field = |name: &str| doc.get(name).filter(|v| !v.is_null());
        let (usage, message) = (field("usage"), field("message"));
        let mut t = Tokens::default();
        let take = |t: &mut Tokens, i: Option<i64>, o: Option<i64>| {
            if let Some(n) = i {
                t.input = n;
                t.reported = true;
            }
            if let Some(n) = o {
                t.output = n;
                t.reported = true;
            }
            i.is_some() || o.is_some()
        };
        let mut fin = false;
        let object = usage.filter(|u| u.is_object());
        match dialect {
            Dialect::OpenAi => {
                if let Some(u) = object {
                    fin = take(&mut t, int(u, "prompt_tokens"), int(u, "completion_tokens"));
                }
            }
            Dialect::Anthropic | Dialect::Bedrock => {
                if let Some(u) = message.and_then(|m| m.get("usage")) {
                    take(&mut t, int(u, "input_tokens"), int(u, "output_tokens"));
                }
                if let Some(u) = object {
                    fin = if dialect == Dialect::Anthropic {
                        take(&mut t, int(u, "input_tokens"), int(u, "output_tokens"))
                    } else {
                        take(
                            &mut t,
                            int(u, "inputTokens").or_else(|| int(u, "input_tokens")),
                            int(u, "outputTokens").or_else(|| int(u, "output_tokens")),
                        )
                    };
                }
                if dialect == Dialect::Bedrock {
                    if let Some(m) = field("amazon-bedrock-invocationMetrics") {
                        fin |= take(&mut t, int(m, "inputTokenCount"), int(m, "outputTokenCount"));
                    }
                }
            }
            Dialect::Gemini => {
                if let Some(u) = field("usageMetadata") {
                    fin = take(&mut t, int(u, "promptTokenCount"), int(u, "candidatesTokenCount"));
                }
            }
            Dialect::Other => {}
        }
        t.final_report = fin;
        let model =
            field("model").or_else(|| message.and_then(|m| m.get("model"))).and_then(Value::as_str).map(str::to_owned);
        let only_usage = usage.is_some() && doc.get("choices").is_some_and(|c| c.as_array().is_some_and(Vec::is_empty));
        (t, model, only_usage)
    }

    #[test]
    fn the_typed_reader_reads_what_a_json_tree_reads() {
        let docs = [
            r#"{"usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens": 9}}"#,
            r#"{"usage": {"prompt_tokens": 3.0, "completion_tokens": 18446744073709551615}}"#,
            r#"{"usage": {"prompt_tokens": -2, "completion_tokens": 9223372036854775807}}"#,
            r#"{"usage": {"prompt_tokens": "3", "completion_tokens": [1], "x": {"prompt_tokens": 5}}}"#,
            r#"{"usage": {"prompt_tokens": 3, "prompt_tokens": null}}"#,
            r#"{"usage": {"prompt\u005ftokens": 6}}"#,
            r#"{"usage": [1, 2], "choices": []}"#,
            r#"{"usage": 5, "choices": []}"#,
            r#"{"usage": null, "choices": []}"#,
            r#"{"usage": {}, "choices": [], "model": null, "message": {"model": "m2"}}"#,
            r#"{"model": 7, "message": {"model": "m2"}}"#,
            r#"{"model": "m1", "message": {"model": "m2", "model": "m3"}}"#,
            r#"{"message": {"model": null, "usage": {"input_tokens": 4, "output_tokens": 1}}}"#,
            r#"{"message": {"usage": {"input_tokens": 4}, "usage": {"output_tokens": 2}}}"#,
            r#"{"message": "text", "usage": {"input_tokens": 8, "output_tokens": 2}}"#,
            r#"{"message": [{"usage": {"input_tokens": 1}}], "usage": {"output_tokens": 2}}"#,
            r#"{"usage": {"inputTokens": 5, "input_tokens": 6, "outputTokens": 1.5, "output_tokens": 2}}"#,
            r#"{"amazon-bedrock-invocationMetrics": {"inputTokenCount": 9, "outputTokenCount": 4}}"#,
            r#"{"amazon-bedrock-invocationMetrics": [9, 4]}"#,
            r#"{"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9, "totalTokenCount": 13}}"#,
            r#"{"usageMetadata": "n/a", "candidates": [{"content": {"parts": [{"text": "hi"}]}}]}"#,
            r#"{"usageMetadata": {"promptTokenCount": {"a": 1}, "candidatesTokenCount": true}}"#,
        ];
        for doc in docs {
            let tree: Value = serde_json::from_str(doc).expect(doc);
            let report = Report::parse(doc.as_bytes()).expect(doc);
            for dialect in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini, Dialect::Bedrock, Dialect::Other] {
                let mut t = Tokens::default();
                t.observe(dialect, &report);
                let (expected, model, only_usage) = by_tree(dialect, &tree);
                assert_eq!(t, expected, "{dialect:?} {doc}");
                assert_eq!(report.model(), model, "{doc}");
                assert_eq!(report.is_usage_only_chunk(), only_usage, "{doc}");
            }
        }
        // A top-level field given twice is not a document keygate reads (as before).
        assert!(Report::parse(br#"{"usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 2}}"#).is_none());
        // Neither is one whose read fields hold what a JSON tree refuses, however deep in
        // the parts not kept (as when they were trees); an unread top-level field is
        // skipped unchecked, as before.
        let deep = format!(r#"{{"usage": {{"x": {}1{}, "prompt_tokens": 5}}}}"#, "[".repeat(200), "]".repeat(200));
        for refused in [
            deep.as_str(),
            r#"{"usage": {"x": 1e400, "prompt_tokens": 5}}"#,
            r#"{"message": {"x": "\ud800", "usage": {"input_tokens": 4}}}"#,
            r#"{"usageMetadata": {"promptTokenCount": 4, "y": [1, "\q"]}}"#,
            r#"{"model": {"a": 1e999}}"#,
            r#"{"choices": [{"delta": {"content": "\x"}}]}"#,
        ] {
            assert!(serde_json::from_str::<Value>(refused).is_err(), "{refused}");
            assert!(Report::parse(refused.as_bytes()).is_none(), "{refused}");
        }
        assert!(Report::parse(br#"{"other": 1e400, "usage": {"prompt_tokens": 5}}"#).is_some());
        let mut invalid_utf8 = br#"{"message": {"x": "?", "usage": {"input_tokens": 4}}}"#.to_vec();
        let at = invalid_utf8.iter().position(|&b| b == b'?').expect("the marker");
        invalid_utf8[at] = 0xff;
        assert!(Report::parse(&invalid_utf8).is_none());
        // Keys with escapes name their fields as a tree reads them.
        let escaped = Report::parse(br#"{"usage": {"prompt\u005ftokens": 6}, "message": {"mod\u0065l": "m"}}"#);
        let escaped = escaped.expect("an object");
        let mut t = Tokens::default();
        t.observe(Dialect::OpenAi, &escaped);
        assert_eq!((t.input, escaped.model().as_deref()), (6, Some("m")));
    }
}
