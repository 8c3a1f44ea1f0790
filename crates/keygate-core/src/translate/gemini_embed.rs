//! OpenAI embeddings (`POST /v1/embeddings`) to and from Google Gemini's
//! `batchEmbedContents` (<https://ai.google.dev/api/embeddings>).
//!
//! Requests ([`request`]): each string of `input` (one string, or an array of strings)
//! becomes one `EmbedContentRequest` of the batch, in order:
//! `{"model": "models/<model>", "content": {"parts": [{"text": …}]}}`; `dimensions` becomes
//! `outputDimensionality` (Gemini truncates the vector to it); keygate's own `task_type`
//! (an OpenAI SDK sends it in `extra_body`) becomes `taskType`; `user` and any other
//! unknown parameter are dropped. Refused (`400`): token arrays (OpenAI's tokenizer's ids
//! mean nothing to Gemini), an empty `input` or empty string, `dimensions` that is not a
//! positive integer, an `encoding_format` other than `float` / `base64`, an unknown
//! `task_type`.
//!
//! Answers ([`response`]): `embeddings[i].values` become `data[i].embedding`, as Gemini
//! gave them (not normalized again), or, with `encoding_format: "base64"` (what the
//! OpenAI Python SDK asks for by default), as OpenAI encodes them: the little-endian
//! `f32` bytes in standard base64. Gemini reports no token counts: `usage` carries the
//! count the caller estimated (see [`Embed::text_bytes`]).

use super::{gemini, Refused};
use serde_json::{json, Map, Value};

/// The path the shared-endpoint rule is checked against before the model is known.
pub const RESOLVE_PATH: &str = "v1beta/models/model:batchEmbedContents";

/// The model a Gemini embeddings call names when it names none (`gemini`, `auto`): a
/// key's model override is a chat model, never this.
pub const DEFAULT_MODEL: &str = "gemini-embedding-001";

/// Gemini's `TaskType` values, for keygate's `task_type` extension.
const TASK_TYPES: &[&str] = &[
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
];

/// What the answer's translation needs to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    /// How many vectors the answer must carry (one per input string).
    pub inputs: usize,
    /// `encoding_format: "base64"`.
    pub base64: bool,
    /// The bytes of text embedded: what the call's usage is estimated from.
    pub text_bytes: usize,
}

/// The path an embeddings call for `model` is sent to (model ids as [`gemini::path`]
/// accepts them).
pub fn path(model: &str) -> Result<String, Refused> {
    let chat = gemini::path(model, false)?;
    let base = chat.strip_suffix(":generateContent").unwrap_or(&chat);
    Ok(format!("{base}:batchEmbedContents"))
}

/// An OpenAI embeddings request as a `batchEmbedContents` body.
pub fn request(body: &Value, model: &str) -> Result<(Value, Embed), Refused> {
    let body = body.as_object().ok_or_else(|| Refused::new("the request body must be a JSON object"))?;
    let texts = inputs(body.get("input"))?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(v) if v == "float" => false,
        Some(v) if v == "base64" => true,
        Some(other) => return Err(Refused::new(format!("`encoding_format` must be `float` or `base64`, not {other}"))),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|d| *d > 0)
                .ok_or_else(|| Refused::new(format!("`dimensions` must be a positive integer, not {v}")))?,
        ),
    };
    let task_type = match body.get("task_type") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_str().filter(|t| TASK_TYPES.contains(t)).ok_or_else(|| {
            Refused::new(format!("`task_type` must be one of Gemini's task types ({}), not {v}", TASK_TYPES.join(", ")))
        })?),
    };
    let name = format!("models/{model}");
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut one = Map::new();
            one.insert("model".into(), name.clone().into());
            one.insert("content".into(), json!({"parts": [{"text": text}]}));
            if let Some(task) = task_type {
                one.insert("taskType".into(), task.into());
            }
            if let Some(d) = dimensions {
                one.insert("outputDimensionality".into(), d.into());
            }
            Value::Object(one)
        })
        .collect();
    let embed = Embed { inputs: texts.len(), base64, text_bytes: texts.iter().map(|t| t.len()).sum() };
    Ok((json!({"requests": requests}), embed))
}

/// `input` as strings: one string, or an array of them; token arrays are refused.
fn inputs(input: Option<&Value>) -> Result<Vec<&str>, Refused> {
    const TEXT: &str = "`input` must be a string or an array of strings";
    let list = match input {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if items.is_empty() => return Err(Refused::new("`input` must not be empty")),
        Some(Value::Array(items)) => {
            if items.iter().any(|v| v.is_number() || v.is_array()) {
                return Err(Refused::new(
                    "Gemini embeds text only: send `input` as a string or an array of strings, not token arrays",
                ));
            }
            items.iter().map(|v| v.as_str().ok_or_else(|| Refused::new(TEXT))).collect::<Result<_, _>>()?
        }
        _ => return Err(Refused::new(TEXT)),
    };
    if let Some(i) = list.iter().position(|s| s.is_empty()) {
        return Err(Refused::new(format!("`input` [{i}] is an empty string: Gemini embeds no empty text")));
    }
    Ok(list)
}

/// A `batchEmbedContents` answer as OpenAI's embeddings list, with `prompt_tokens` (the
/// caller's estimate) as usage. An answer without one vector of numbers per input is
/// refused (the server answers `502`).
pub fn response(answer: &Value, model: &str, embed: &Embed, prompt_tokens: i64) -> Result<Value, Refused> {
    let invalid = || Refused::new("Gemini's answer carries no embedding for every input");
    let embeddings = answer.get("embeddings").and_then(Value::as_array).ok_or_else(invalid)?;
    if embeddings.len() != embed.inputs {
        return Err(invalid());
    }
    let mut data = Vec::with_capacity(embeddings.len());
    for (index, e) in embeddings.iter().enumerate() {
        let values = e.get("values").and_then(Value::as_array).filter(|v| v.iter().all(Value::is_number));
        let values = values.ok_or_else(invalid)?;
        let embedding = if embed.base64 {
            let bytes: Vec<u8> = values.iter().flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes()).collect();
            Value::String(base64(&bytes))
        } else {
            Value::Array(values.clone())
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
}

/// Standard base64 with padding (RFC 4648), as OpenAI encodes embeddings.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_become_one_request_each_with_dimensions_and_task_type() {
        let (body, embed) = request(
            &json!({"model": "gemini/gemini-embedding-001", "input": ["a", "bcd"], "dimensions": 256,
                    "task_type": "RETRIEVAL_QUERY", "user": "u-1", "encoding_format": "base64"}),
            "gemini-embedding-001",
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 256},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "bcd"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 256}
            ]})
        );
        assert_eq!(embed, Embed { inputs: 2, base64: true, text_bytes: 4 });
        let (one, embed) = request(&json!({"input": "hi"}), "text-embedding-004").unwrap();
        assert_eq!(
            one,
            json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}}]})
        );
        assert!(!embed.base64);
        assert_eq!(path("gemini-embedding-001").unwrap(), "v1beta/models/gemini-embedding-001:batchEmbedContents");
        assert!(path("../x").is_err());
    }

    #[test]
    fn token_arrays_and_bad_parameters_are_refused() {
        let refused = |body: Value| request(&body, "gemini-embedding-001").unwrap_err().0;
        assert!(refused(json!({"input": [1, 2, 3]})).contains("token arrays"));
        assert!(refused(json!({"input": [[1, 2], [3]]})).contains("token arrays"));
        assert!(refused(json!({"input": []})).contains("empty"));
        assert!(refused(json!({"input": ["a", ""]})).contains("[1]"));
        assert!(refused(json!({})).contains("`input`"));
        assert!(refused(json!({"input": [{"text": "a"}]})).contains("array of strings"));
        assert!(refused(json!({"input": "a", "dimensions": 0})).contains("dimensions"));
        assert!(refused(json!({"input": "a", "dimensions": "256"})).contains("dimensions"));
        assert!(refused(json!({"input": "a", "encoding_format": "int8"})).contains("encoding_format"));
        assert!(refused(json!({"input": "a", "task_type": "poetry"})).contains("task_type"));
    }

    #[test]
    fn answers_come_back_as_floats_or_openais_base64() {
        let answer = json!({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]});
        let floats = Embed { inputs: 2, base64: false, text_bytes: 6 };
        let reply = response(&answer, "gemini-embedding-001", &floats, 2).unwrap();
        assert_eq!(
            reply,
            json!({"object": "list", "model": "gemini-embedding-001",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                            {"object": "embedding", "index": 1, "embedding": [0.25, 2.0]}],
                   "usage": {"prompt_tokens": 2, "total_tokens": 2}})
        );
        let encoded = response(&answer, "m", &Embed { base64: true, ..floats.clone() }, 2).unwrap();
        // 0.5f32 = 00 00 00 3f, -1.0f32 = 00 00 80 bf (little-endian).
        assert_eq!(encoded["data"][0]["embedding"], "AAAAPwAAgL8=");
        assert!(response(&json!({"embeddings": [{"values": [0.5]}]}), "m", &floats, 1).is_err(), "one short");
        assert!(response(&json!({"embeddings": [{"values": ["x"]}, {"values": []}]}), "m", &floats, 1).is_err());
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
