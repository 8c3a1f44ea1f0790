//! Reading token usage out of provider responses, streamed or not: OpenAI's `usage`
//! (in the body, or the final chunk of a stream), Anthropic's `usage` (in the body, or
//! `message_start` then the cumulative `message_delta`), Gemini's `usageMetadata`.

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

fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

impl Tokens {
    /// Takes in what one JSON document (a body, or one SSE event's data) reports.
    /// Counts are cumulative in every dialect, so later reports replace earlier ones.
    pub fn observe(&mut self, dialect: Dialect, v: &Value) {
        match dialect {
            Dialect::OpenAi => {
                if let Some(n) = int(v, "/usage/prompt_tokens") {
                    self.input = n;
                    self.reported = true;
                }
                if let Some(n) = int(v, "/usage/completion_tokens") {
                    self.output = n;
                    self.reported = true;
                }
            }
            Dialect::Anthropic => {
                for prefix in ["/usage", "/message/usage"] {
                    if let Some(n) = int(v, &format!("{prefix}/input_tokens")) {
                        self.input = n;
                        self.reported = true;
                    }
                    if let Some(n) = int(v, &format!("{prefix}/output_tokens")) {
                        self.output = n;
                        self.reported = true;
                    }
                }
            }
            Dialect::Gemini => {
                if let Some(n) = int(v, "/usageMetadata/promptTokenCount") {
                    self.input = n;
                    self.reported = true;
                }
                if let Some(n) = int(v, "/usageMetadata/candidatesTokenCount") {
                    self.output = n;
                    self.reported = true;
                }
            }
            Dialect::Other => {}
        }
    }
}

/// An OpenAI stream chunk that carries only usage (`"choices": []`): the one keygate
/// asks for when the caller did not, and removes before the caller sees it.
pub fn is_usage_only_chunk(v: &Value) -> bool {
    v.get("usage").is_some_and(|u| !u.is_null())
        && v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
}

/// The JSON of each `data:` line of one SSE event (`[DONE]` and non-JSON lines skipped).
pub fn sse_data(event: &str) -> impl Iterator<Item = Value> + '_ {
    event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty() && *data != "[DONE]")
        .filter_map(|data| serde_json::from_str(data).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_dialect() {
        let mut t = Tokens::default();
        t.observe(Dialect::OpenAi, &json!({"usage": {"prompt_tokens": 11, "completion_tokens": 7}}));
        assert_eq!(t, Tokens { input: 11, output: 7, reported: true });

        let mut t = Tokens::default();
        t.observe(
            Dialect::Anthropic,
            &json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}}),
        );
        t.observe(Dialect::Anthropic, &json!({"type": "message_delta", "usage": {"output_tokens": 15}}));
        assert_eq!(t, Tokens { input: 25, output: 15, reported: true });

        let mut t = Tokens::default();
        t.observe(Dialect::Gemini, &json!({"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9}}));
        assert_eq!(t, Tokens { input: 4, output: 9, reported: true });
    }

    #[test]
    fn finds_usage_only_chunks_and_sse_data() {
        assert!(is_usage_only_chunk(&json!({"choices": [], "usage": {"prompt_tokens": 1}})));
        assert!(!is_usage_only_chunk(&json!({"choices": [{"delta": {}}], "usage": null})));
        let event = "event: message_delta\ndata: {\"usage\":{\"output_tokens\":3}}\n";
        assert_eq!(sse_data(event).count(), 1);
        assert_eq!(sse_data("data: [DONE]\n").count(), 0);
        assert_eq!(sse_data("data: {not json\n").count(), 0);
    }
}
