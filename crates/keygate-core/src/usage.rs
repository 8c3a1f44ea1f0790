//! Reading token usage out of provider responses, streamed or not: OpenAI's `usage`
//! (in the body, or the final chunk of a stream), Anthropic's `usage` (in the body, or
//! `message_start` then the cumulative `message_delta`), Gemini's `usageMetadata`.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// Which response format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
    /// Not an AI API: requests are counted, tokens are not.
    Other,
}

impl Dialect {
    pub fn of(provider: &str) -> Self {
        match provider {
            "openai" | "openrouter" | "voyage" => Dialect::OpenAi,
            "anthropic" => Dialect::Anthropic,
            "gemini" => Dialect::Gemini,
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
}

impl Tokens {
    /// Takes in what one JSON document (a body, or one SSE event's data) reports.
    /// Counts are cumulative in every dialect, so later reports replace earlier ones.
    pub fn observe(&mut self, dialect: Dialect, report: &Report) {
        let mut take = |input: Option<i64>, output: Option<i64>| {
            if let Some(n) = input {
                self.input = n;
                self.reported = true;
            }
            if let Some(n) = output {
                self.output = n;
                self.reported = true;
            }
        };
        match dialect {
            Dialect::OpenAi => {
                if let Some(u) = &report.usage {
                    take(int(u, "prompt_tokens"), int(u, "completion_tokens"));
                }
            }
            Dialect::Anthropic => {
                for u in
                    [report.usage.as_ref(), report.message.as_ref().and_then(|m| m.get("usage"))].into_iter().flatten()
                {
                    take(int(u, "input_tokens"), int(u, "output_tokens"));
                }
            }
            Dialect::Gemini => {
                if let Some(u) = &report.usage_metadata {
                    take(int(u, "promptTokenCount"), int(u, "candidatesTokenCount"));
                }
            }
            Dialect::Other => {}
        }
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
    /// Whether `choices` is an empty array (what it holds is never kept).
    #[serde(default)]
    choices: EmptyList,
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
        self.usage.as_ref().is_some_and(|u| !u.is_null()) && self.choices == EmptyList(Some(true))
    }
}

/// An integer field of a usage object.
fn int(usage: &Value, field: &str) -> Option<i64> {
    usage.get(field).and_then(Value::as_i64)
}

/// Some(whether it is an empty array) for a field that is present; its elements skipped.
#[derive(Debug, Default, PartialEq, Eq)]
struct EmptyList(Option<bool>);

impl<'de> Deserialize<'de> for EmptyList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EmptyList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EmptyList, A::Error> {
                let mut empty = true;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    empty = false;
                }
                Ok(EmptyList(Some(empty)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EmptyList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(EmptyList(Some(false)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
            fn visit_u64<E>(self, _: u64) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
            fn visit_str<E>(self, _: &str) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
            fn visit_unit<E>(self) -> Result<EmptyList, E> {
                Ok(EmptyList(Some(false)))
            }
        }
        d.deserialize_any(Visitor)
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
        assert_eq!(t, Tokens { input: 11, output: 7, reported: true });

        let mut t = Tokens::default();
        t.observe(
            Dialect::Anthropic,
            &report(json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}})),
        );
        t.observe(Dialect::Anthropic, &report(json!({"type": "message_delta", "usage": {"output_tokens": 15}})));
        assert_eq!(t, Tokens { input: 25, output: 15, reported: true });

        let mut t = Tokens::default();
        t.observe(
            Dialect::Gemini,
            &report(json!({"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9}})),
        );
        assert_eq!(t, Tokens { input: 4, output: 9, reported: true });
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
        assert_eq!(t, Tokens { input: 3, output: 0, reported: true });
        assert_eq!(r.model().as_deref(), Some("gpt-4o-mini"));
        let mut t = Tokens::default();
        t.observe(Dialect::Anthropic, &r);
        t.observe(Dialect::Gemini, &r);
        assert!(!t.reported, "{t:?}");
        let anthropic = report(json!({"type": "message_start", "message": {"model": "claude", "usage": {}}}));
        assert_eq!(anthropic.model().as_deref(), Some("claude"));
        assert!(Report::parse(b"not json").is_none());
        assert!(Report::parse(b"\"a string\"").is_none());
    }
}
