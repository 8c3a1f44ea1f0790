//! The quick way to read a [`Report`]: one pass over a document in the plain form
//! providers send — keys and strings without escapes, counts as plain non-negative
//! integers — keeping only what a report keeps and building nothing else.
//!
//! Anything outside that form (an escape, a control character, bytes that are not UTF-8,
//! a fraction, an exponent, a sign, a leading zero, nesting deeper than [`MAX_DEPTH`], a
//! top-level field given twice, text after the document) and it answers `None`: the
//! document is then read with serde, which decides. So a document this reads, serde reads
//! the same way (the tests compare the two on every shape), and one it does not, serde
//! reads as before.

use super::{Counts, Field, Message, Model, Report, Skimmed};

/// Deeper than this, serde decides (it reads up to 127 levels).
const MAX_DEPTH: usize = 100;
/// Longer integers may not fit an i64: serde decides.
const MAX_DIGITS: usize = 18;

/// The report `json` makes, when it is in the plain form; `None` otherwise (not: "no
/// report").
pub(super) fn report(json: &[u8]) -> Option<Report> {
    // UTF-8 checked once for the whole document, so each string is a slice of it.
    let text = std::str::from_utf8(json).ok()?;
    let mut s = Scanner { text, json, at: 0, depth: 0 };
    s.space();
    let report = s.top()?;
    s.space();
    (s.at == json.len()).then_some(report)
}

struct Scanner<'a> {
    text: &'a str,
    /// `text`'s bytes.
    json: &'a [u8],
    at: usize,
    depth: usize,
}

/// A top-level field a report keeps, to refuse one given twice (serde does).
#[derive(Clone, Copy)]
enum Top {
    Model,
    Usage,
    Message,
    UsageMetadata,
    InvocationMetrics,
    Choices,
    Delta,
    Candidates,
}

impl Top {
    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "model" => Top::Model,
            "usage" => Top::Usage,
            "message" => Top::Message,
            "usageMetadata" => Top::UsageMetadata,
            "amazon-bedrock-invocationMetrics" => Top::InvocationMetrics,
            "choices" => Top::Choices,
            "delta" => Top::Delta,
            "candidates" => Top::Candidates,
            _ => return None,
        })
    }
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self.json[start..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.json[start + len] != b'"' {
            return None;
        }
        self.at += len + 1;
        // Both ends are ASCII quotes: character boundaries.
        self.text.get(start..start + len)
    }

    /// A plain non-negative integer of at most [`MAX_DIGITS`] digits.
    fn integer(&mut self) -> Option<i64> {
        let rest = &self.json[self.at..];
        let len = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
        if len == 0 || len > MAX_DIGITS || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += len;
        rest[..len].iter().try_fold(0i64, |n, &d| n.checked_mul(10)?.checked_add(i64::from(d - b'0')))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.json[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// An object, handing each key to `value`, which must read the value that follows.
    fn object(&mut self, mut value: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.nest()?;
        self.space();
        if self.eat(b'}').is_none() {
            loop {
                let key = self.string()?;
                self.space();
                self.eat(b':')?;
                self.space();
                value(self, key)?;
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// An array, each element read by `element`; whether it was empty.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<bool> {
        self.eat(b'[')?;
        self.nest()?;
        self.space();
        let empty = self.eat(b']').is_some();
        if !empty {
            loop {
                element(self)?;
                if !self.more(b']')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(empty)
    }

    /// After a member of an object or an array: `true` past a comma (another follows),
    /// `false` past `close` (the end).
    fn more(&mut self, close: u8) -> Option<bool> {
        self.space();
        let next = self.peek()?;
        self.at += 1;
        if next == b',' {
            self.space();
            Some(true)
        } else {
            (next == close).then_some(false)
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Any value, read through and dropped.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|s, _| s.skip()),
            b'[' => self.array(Self::skip).map(drop),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.integer().map(drop),
        }
    }

    /// Whether a `null` stands here (read if so).
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null").is_some()
    }

    /// A usage object's counts; any other value holds none.
    fn counts(&mut self) -> Option<Counts> {
        if self.peek()? != b'{' {
            self.skip()?;
            return Some(Counts::default());
        }
        let mut counts = Counts { object: true, ..Counts::default() };
        self.object(|s, key| {
            match Field::of(key) {
                Some(field) => counts.counts[field as usize] = s.count()?,
                None => s.skip()?,
            }
            Some(())
        })?;
        Some(counts)
    }

    /// A count: an integer, or (any other value) none.
    fn count(&mut self) -> Option<Option<i64>> {
        if self.peek()?.is_ascii_digit() {
            return self.integer().map(Some);
        }
        self.skip()?;
        Some(None)
    }

    /// A `model` field: its text when it is a string; `None` for `null`.
    fn model(&mut self) -> Option<Option<Model>> {
        if self.null() {
            return Some(None);
        }
        if self.peek()? == b'"' {
            return Some(Some(Model(Some(self.string()?.to_owned()))));
        }
        self.skip()?;
        Some(Some(Model(None)))
    }

    /// Anthropic's `message`: its `usage` and `model`; any other value holds neither.
    fn message(&mut self) -> Option<Message> {
        let mut message = Message::default();
        if self.peek()? != b'{' {
            self.skip()?;
            return Some(message);
        }
        self.object(|s, key| {
            match key {
                "usage" => message.usage = s.counts()?,
                "model" => message.model = s.model()?,
                _ => s.skip()?,
            }
            Some(())
        })?;
        Some(message)
    }

    /// Whether the value is an empty array, and the bytes of generated text inside it.
    fn skimmed(&mut self) -> Option<Skimmed> {
        let mut text_bytes = 0;
        let empty = self.text(false, &mut text_bytes)?;
        Some(Skimmed { empty_list: Some(empty == Some(true)), text_bytes })
    }

    /// Walks a value adding up generated text (a string that is the value of a text key);
    /// `Some(empty)` for an array.
    fn text(&mut self, counts: bool, bytes: &mut usize) -> Option<Option<bool>> {
        match self.peek()? {
            b'[' => self.array(|s| s.text(false, bytes).map(drop)).map(Some),
            b'{' => {
                let text = |k: &str| matches!(k, "content" | "text" | "arguments" | "partial_json");
                self.object(|s, key| s.text(text(key), bytes).map(drop))?;
                Some(None)
            }
            b'"' => {
                let text = self.string()?;
                if counts {
                    *bytes += text.len();
                }
                Some(None)
            }
            _ => self.skip().map(|()| None),
        }
    }

    /// The document: an object whose kept fields each appear once.
    fn top(&mut self) -> Option<Report> {
        let mut report = Report::default();
        let mut seen = [false; Top::Candidates as usize + 1];
        self.object(|s, key| {
            let Some(field) = Top::of(key) else { return s.skip() };
            if std::mem::replace(&mut seen[field as usize], true) {
                return None;
            }
            match field {
                Top::Model => report.model = s.model()?,
                Top::Usage => report.usage = if s.null() { None } else { Some(s.counts()?) },
                Top::Message => report.message = s.message()?,
                Top::UsageMetadata => report.usage_metadata = s.counts()?,
                Top::InvocationMetrics => report.invocation_metrics = s.counts()?,
                Top::Choices => report.choices = s.skimmed()?,
                Top::Delta => report.delta = s.skimmed()?,
                Top::Candidates => report.candidates = s.skimmed()?,
            }
            Some(())
        })?;
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn by_serde(json: &str) -> Option<Report> {
        serde_json::from_str(json).ok()
    }

    /// The top-level fields serde reads into a [`Report`], by name, as its derive declares
    /// them (asked for with a deserializer that only notes what it is asked).
    fn report_fields() -> &'static [&'static str] {
        struct Names(Option<&'static [&'static str]>);
        impl<'de> serde::Deserializer<'de> for &mut Names {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = Some(fields);
                Err(serde::de::Error::custom("noted"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
                unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut names = Names(None);
        let _ = <Report as serde::Deserialize>::deserialize(&mut names);
        names.0.unwrap()
    }

    #[test]
    fn knows_every_top_level_field_serde_reads() {
        // A field added to `Report` and not here would be skipped here and read by serde.
        let fields = report_fields();
        assert_eq!(fields.len(), TOP.len(), "{fields:?}");
        for name in fields {
            assert!(Top::of(name).is_some() && TOP.contains(name), "{name}");
        }
    }

    #[test]
    fn reads_what_providers_send_as_serde_does() {
        let plain = [
            // OpenAI: an answer, a stream chunk, the usage-only last chunk.
            r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#,
            // Anthropic: an answer, message_start, a delta, message_delta.
            r#"{"id":"msg_1","type":"message","model":"claude-sonnet-4","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":25,"output_tokens":3}}"#,
            r#"{"type":"message_start","message":{"id":"m","model":"claude","usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"abcd"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
            // Gemini, Bedrock.
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"xyz"}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":9}}"#,
            r#"{"output":{"message":{"content":[{"text":"hi"}]}},"usage":{"inputTokens":12,"outputTokens":3,"totalTokens":15}}"#,
            "{\n  \"amazon-bedrock-invocationMetrics\" : { \"inputTokenCount\" : 9 , \"outputTokenCount\" : 4 } ,\n  \"x\": [true, false, null, 0, {}] }\n",
            r#"{"model": null, "usage": {"prompt_tokens": "3", "completion_tokens": [1]}, "message": 7, "choices": {}}"#,
            r#"{"usage": {"prompt_tokens": 3, "prompt_tokens": null}, "message": {"model": "a", "model": "b"}}"#,
            r#"{"choices": "text", "delta": null, "candidates": 5, "é": "ü"}"#,
            // Within an object the last of a key given twice counts, even a `null` or
            // another shape.
            r#"{"usage": {"input_tokens": 1, "input_tokens": 2}, "message": {"usage": {"output_tokens": 3}, "usage": 7}}"#,
            r#"{"message": {"model": "a", "model": null}, "usageMetadata": {"promptTokenCount": 1, "promptTokenCount": {}}}"#,
            // Every count name, and every kind of generated text.
            r#"{"usage": {"inputTokens": 1, "outputTokens": 2, "input_tokens": 3, "output_tokens": 4}, "amazon-bedrock-invocationMetrics": {"inputTokenCount": 5, "outputTokenCount": 6}}"#,
            r#"{"usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 8}, "delta": {"partial_json": "{a", "text": "b", "x": {"content": ["not counted"], "arguments": "cd"}}}"#,
            // The largest integer read here, and the deepest nesting.
            r#"{"usage": {"prompt_tokens": 999999999999999999}}"#,
            // Whitespace of every kind, and nothing but it after the document.
            "{\t\"usage\"\r\n:\t{\"prompt_tokens\" :\r1}}\n\t ",
            "{}",
        ];
        let deepest = format!(r#"{{"x": {}1{}}}"#, "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        for doc in plain.iter().copied().chain([deepest.as_str()]) {
            let skimmed = report(doc.as_bytes());
            assert!(skimmed.is_some(), "read in one pass: {doc}");
            assert_eq!(skimmed, by_serde(doc), "{doc}");
        }
        let texts = plain.iter().find(|doc| doc.contains("partial_json")).unwrap();
        assert_eq!(report(texts.as_bytes()).unwrap().text_bytes(), "{a".len() + "b".len() + "cd".len());
    }

    #[test]
    fn leaves_every_other_form_to_serde() {
        let deep = format!(r#"{{"x": {}1{}}}"#, "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        for doc in [
            r#"{"usage": {"prompt\u005ftokens": 6}}"#,
            r#"{"model": "a\"b"}"#,
            r#"{"usage": {"prompt_tokens": 3.0}}"#,
            r#"{"usage": {"prompt_tokens": 3e2}}"#,
            r#"{"usage": {"prompt_tokens": -2}}"#,
            r#"{"usage": {"prompt_tokens": 1234567890123456789}}"#,
            r#"{"usage": {"prompt_tokens": 01}}"#,
            r#"{"usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 2}}"#,
            r#"{"model": "a"} x"#,
            "{\"model\": \"a\tb\"}",
            r#"{"other": 1e400}"#,
            deep.as_str(),
            r#"{"model": tru}"#,
            r#"{"model": "a",}"#,
            r#"{"usage": {"prompt_tokens": -0}}"#,
            r#"{"model": nullx}"#,
            "\u{feff}{}",
            "{\"model\": \"a\"}\u{0}",
            "{\u{c}}",
        ] {
            assert_eq!(report(doc.as_bytes()), None, "{doc}");
        }
        assert_eq!(report(b"{\"model\": \"\xff\"}"), None);
        assert_eq!(report(b"{\"x\": 1, \xff}"), None);
        // The same documents, read whole: what serde says (some read, some refused).
        assert!(super::Report::parse(br#"{"usage": {"prompt\u005ftokens": 6}}"#).is_some());
        assert!(super::Report::parse(br#"{"usage": {"prompt_tokens": 1}, "usage": {"prompt_tokens": 2}}"#).is_none());
    }

    /// The top-level fields a report keeps.
    const TOP: [&str; 8] = [
        "model",
        "usage",
        "message",
        "usageMetadata",
        "amazon-bedrock-invocationMetrics",
        "choices",
        "delta",
        "candidates",
    ];

    /// Keys a report reads below the top: every count's name, the text keys, and a few
    /// others.
    const KEYS: [&str; 17] = [
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "promptTokenCount",
        "candidatesTokenCount",
        "inputTokens",
        "outputTokens",
        "inputTokenCount",
        "outputTokenCount",
        "usage",
        "model",
        "content",
        "text",
        "arguments",
        "partial_json",
        "id",
    ];

    /// Any JSON value of a few levels, with keys a report reads and strings that need
    /// escapes now and then.
    fn value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![prop::sample::select(&KEYS[..]).prop_map(str::to_owned), "[a-z\"\\\\é]{0,4}"];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (0u32..1000).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-z \"\\\\\n\u{1}é😀]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// A document's top-level fields, duplicates allowed, spaced or not.
    fn document() -> impl Strategy<Value = String> {
        let top = prop_oneof![prop::sample::select(&TOP[..]), Just("id")];
        (prop::collection::vec((top, value()), 0..6), any::<bool>()).prop_map(|(fields, spaced)| {
            let sep = if spaced { ", " } else { "," };
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    let v = if spaced { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) };
                    format!("\"{k}\":{}", v.unwrap_or_default())
                })
                .collect();
            format!("{{{}}}", fields.join(sep))
        })
    }

    /// A value in the plain form: small non-negative integers, strings without escapes,
    /// keys that name counts and text (given twice now and then).
    fn plain_value() -> impl Strategy<Value = String> {
        let key = prop::sample::select(&KEYS[..]);
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            (0u64..1_000_000).prop_map(|n| n.to_string()),
            "[a-z é😀]{0,6}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|pairs| {
                    let members: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
                    format!("{{{}}}", members.join(", "))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Documents in the plain form, each kept top-level field once: always read in
        /// one pass, and as serde reads them.
        #[test]
        fn plain_documents_are_read_in_one_pass_as_serde_reads_them(
            fields in prop::sample::subsequence(&TOP[..], 0..=TOP.len()),
            values in prop::collection::vec(plain_value(), 8),
            extra in plain_value(),
        ) {
            let mut members: Vec<String> = fields.iter().zip(&values).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            members.push(format!("\"id\":{extra}"));
            let doc = format!("{{{}}}", members.join(","));
            let skimmed = report(doc.as_bytes());
            prop_assert!(skimmed.is_some(), "{}", doc);
            prop_assert_eq!(skimmed, by_serde(&doc), "{}", doc);
        }

        #[test]
        fn whatever_it_reads_serde_reads_the_same(doc in document(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            if let Some(skimmed) = report(doc.as_bytes()) {
                prop_assert_eq!(Some(skimmed), by_serde(&doc));
            }
            // And the document with one byte changed: refused, or read as serde reads it.
            let mut changed = doc.into_bytes();
            let at = cut.index(changed.len());
            changed[at] = byte;
            if let Some(skimmed) = report(&changed) {
                prop_assert_eq!(Some(skimmed), serde_json::from_slice::<Report>(&changed).ok());
            }
        }
    }
}
