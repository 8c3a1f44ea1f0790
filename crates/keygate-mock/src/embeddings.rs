//! Embeddings as OpenAI (and Voyage) and Gemini answer them: one deterministic vector per
//! input text, of the model's own length or the length asked for.
//!
//! - OpenAI `POST /v1/embeddings`: `input` a string, strings, or token arrays; `dimensions`
//!   (the vector shortened and normalized again, as OpenAI's are); `encoding_format:
//!   "base64"` (little-endian `f32`, standard base64); `usage` from the configured input
//!   tokens.
//! - Gemini `:batchEmbedContents` (`{"requests": [{"model", "content": {"parts"}, "outputDimensionality"?}]}`,
//!   each request's model the path's, at most 100) and `:embedContent`: `values` cut to
//!   `outputDimensionality` (Matryoshka truncation: a prefix of the full vector, which is
//!   normalized at full length only); no token counts, as Gemini gives none.

use crate::config::MockConfig;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The vector length a model gives when none is asked for.
fn full_length(model: &str) -> usize {
    match model {
        m if m.starts_with("gemini-embedding") || m == "text-embedding-3-large" => 3072,
        m if m.starts_with("text-embedding-004") || m.starts_with("embedding-") => 768,
        m if m.starts_with("voyage-") => 1024,
        _ => 1536,
    }
}

/// A unit vector of `len` numbers, the same for the same text and length.
fn vector(text: &str, len: usize) -> Vec<f32> {
    // FNV-1a of the text seeds a xorshift generator.
    let mut state =
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let values: Vec<f32> = (0..len.max(1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    normalized(values)
}

fn normalized(mut values: Vec<f32>) -> Vec<f32> {
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    values.iter_mut().for_each(|v| *v /= norm);
    values
}

/// OpenAI's `POST /v1/embeddings` (Voyage's too).
pub(crate) fn openai(config: &MockConfig, model: &str, request: &Value) -> Response {
    let texts: Vec<String> = match request.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(|v| v.is_number()) => {
            vec![items_text(items)]
        }
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Array(tokens) => items_text(tokens),
                other => other.to_string(),
            })
            .collect(),
        _ => {
            let error = json!({"error": {"message": "'input' is a required property", "type": "invalid_request_error", "param": "input", "code": null}});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
    };
    let dimensions = request.get("dimensions").and_then(Value::as_u64).map(|d| d as usize);
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut values = vector(text, full_length(model));
            if let Some(d) = dimensions.filter(|d| *d < values.len()) {
                values.truncate(d.max(1));
                values = normalized(values);
            }
            let embedding = if base64 {
                json!(encode(&values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(values)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    axum::Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": config.input_tokens, "total_tokens": config.input_tokens}
    }))
    .into_response()
}

fn items_text(tokens: &[Value]) -> String {
    tokens.iter().map(Value::to_string).collect::<Vec<_>>().join(" ")
}

fn invalid_argument(message: &str) -> Response {
    let error = json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
    (StatusCode::BAD_REQUEST, axum::Json(error)).into_response()
}

/// One `EmbedContentRequest`'s vector, or why Gemini would refuse it.
fn gemini_values(model: &str, request: &Value) -> Result<Vec<f32>, &'static str> {
    let parts = request.pointer("/content/parts").and_then(Value::as_array);
    let text: String = parts.into_iter().flatten().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
    if text.is_empty() {
        return Err("* EmbedContentRequest.content: contents must not be empty");
    }
    let mut values = vector(&text, full_length(model));
    if let Some(d) = request.get("outputDimensionality").and_then(Value::as_u64) {
        values.truncate((d as usize).max(1));
    }
    Ok(values)
}

/// Gemini's `POST /v1beta/models/{model}:batchEmbedContents`.
pub(crate) fn gemini_batch(model: &str, request: &Value) -> Response {
    let Some(requests) = request.get("requests").and_then(Value::as_array).filter(|r| !r.is_empty()) else {
        return invalid_argument("* BatchEmbedContentsRequest.requests: requests must not be empty");
    };
    if requests.len() > 100 {
        return invalid_argument("* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch");
    }
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, one) in requests.iter().enumerate() {
        if one.get("model").and_then(Value::as_str) != Some(&format!("models/{model}")) {
            return invalid_argument(&format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: the model of each request must match the batch's (models/{model})"
            ));
        }
        match gemini_values(model, one) {
            Ok(values) => embeddings.push(json!({"values": values})),
            Err(refused) => return invalid_argument(refused),
        }
    }
    axum::Json(json!({"embeddings": embeddings})).into_response()
}

/// Gemini's `POST /v1beta/models/{model}:embedContent`.
pub(crate) fn gemini_one(model: &str, request: &Value) -> Response {
    match gemini_values(model, request) {
        Ok(values) => axum::Json(json!({"embedding": {"values": values}})).into_response(),
        Err(refused) => invalid_argument(refused),
    }
}

/// Standard base64 with padding.
fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]) } else { '=' });
        }
    }
    out
}
