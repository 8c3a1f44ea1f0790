//! AWS Bedrock runtime, as keygate's tests need it: requests signed with SigV4 are
//! **verified** with the secret the mock holds for their access key id (configured in
//! [`MockConfig::aws_credentials`](crate::MockConfig)), the way AWS does it: the
//! canonical request rebuilt from what arrived (the path as received, each segment
//! URI-encoded once more; the query sorted; the headers the signature names; the
//! SHA-256 of the body received). A wrong secret gets AWS's 403
//! `InvalidSignatureException`, an unknown key id its `UnrecognizedClientException`.
//!
//! Then: `POST /model/{modelId}/converse` (Converse JSON with `usage.inputTokens`),
//! `/converse-stream` (AWS event-stream frames with correct CRC32s: `messageStart`,
//! `contentBlockDelta`s, `contentBlockStop`, `messageStop`, `metadata` with usage); when
//! `toolConfig` offers tools, both answer with a `toolUse` block per tool (streamed as
//! `contentBlockStart` and input deltas) and `stopReason` `tool_use`;
//! `/invoke` (the Anthropic model's own JSON, counts in `x-amzn-bedrock-*` headers) and
//! `/invoke-with-response-stream` (`chunk` events of base64 Anthropic events, the last
//! with `amazon-bedrock-invocationMetrics`).
//!
//! Written apart from keygate's signer on purpose: the two meet only on the wire.

use crate::config::{Fault, MockConfig};
use crate::server::Shared;
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// An AWS credential the mock accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AwsCredential {
    pub access_key_id: String,
    pub secret_access_key: String,
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
     Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Whether a request is signed with SigV4 (and so is the mock's Bedrock's to answer).
pub(crate) fn is_signed(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 "))
}

/// The access key id a signed request names.
pub(crate) fn access_key_id(authorization: &str) -> Option<String> {
    let credential = authorization.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}

/// Verifies and answers a signed request.
pub(crate) async fn answer(
    shared: &Shared,
    config: &MockConfig,
    fault: Option<Fault>,
    parts: &Parts,
    body: &Bytes,
) -> Response {
    if let Some(refusal) = verify(config, parts, body) {
        return refusal;
    }
    if let Some(Fault::Status { status }) = fault {
        return failure(status);
    }
    if let Some(Fault::Delay { ms }) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
    }
    let path = parts.uri.path();
    let mut segments = path.trim_start_matches('/').split('/');
    let (Some("model"), Some(model), Some(action), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation");
    };
    let model = percent_decode(model);
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if parts.method != axum::http::Method::POST {
        return error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation");
    }
    if action.starts_with("converse") && !request.get("messages").is_some_and(Value::is_array) {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "1 validation error detected: messages");
    }
    let id = shared.next_id();
    let words = words(config);
    let (input, output) = (config.input_tokens, config.output_tokens);
    let calls = if action.starts_with("converse") { converse_tool_calls(&request, id) } else { None };
    match action {
        "converse" if calls.is_some() => {
            let calls = calls.unwrap_or_default();
            let mut content = vec![json!({"text": TOOL_PREFACE.concat()})];
            content.extend(
                calls
                    .into_iter()
                    .map(|(id, name, input)| json!({"toolUse": {"toolUseId": id, "name": name, "input": input}})),
            );
            axum::Json(json!({
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output},
                "metrics": {"latencyMs": 1}
            }))
            .into_response()
        }
        "converse-stream" if calls.is_some() => {
            let calls = calls.unwrap_or_default();
            let mut frames = vec![event("messageStart", &json!({"p": "abcdefgh", "role": "assistant"}))];
            for piece in TOOL_PREFACE {
                frames.push(event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": "ab"}),
                ));
            }
            frames.push(event("contentBlockStop", &json!({"contentBlockIndex": 0, "p": "abc"})));
            for (i, (tool_id, name, tool_input)) in calls.iter().enumerate() {
                let index = i + 1;
                frames.push(event(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_id, "name": name}}, "p": "abcd"}),
                ));
                // The input in two pieces, cut inside the JSON, as Bedrock streams it.
                let text = tool_input.to_string();
                let cut = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(at, _)| at);
                for piece in [&text[..cut], &text[cut..]].into_iter().filter(|p| !p.is_empty()) {
                    frames.push(event(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}, "p": "abcdef"}),
                    ));
                }
                frames.push(event("contentBlockStop", &json!({"contentBlockIndex": index, "p": "abcdefg"})));
            }
            frames.push(event("messageStop", &json!({"p": "abcdefghij", "stopReason": "tool_use"})));
            frames.push(event(
                "metadata",
                &json!({"metrics": {"latencyMs": 1}, "p": "abc", "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output}}),
            ));
            stream(config, fault, frames)
        }
        "converse" => axum::Json(json!({
            "output": {"message": {"role": "assistant", "content": [{"text": words.concat()}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output},
            "metrics": {"latencyMs": 1}
        }))
        .into_response(),
        "converse-stream" => {
            let mut frames =
                vec![event("messageStart", &json!({"p": "abcdefghijklmnopqrstuvwxyzABCDEFGH", "role": "assistant"}))];
            for word in &words {
                frames.push(event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": word}, "p": "abcd"}),
                ));
            }
            frames.push(event("contentBlockStop", &json!({"contentBlockIndex": 0, "p": "abcdefghijklm"})));
            frames.push(event("messageStop", &json!({"p": "abcdefghijklmnopqrs", "stopReason": "end_turn"})));
            frames.push(event(
                "metadata",
                &json!({"metrics": {"latencyMs": 1}, "p": "abc", "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output}}),
            ));
            stream(config, fault, frames)
        }
        "invoke" => {
            let mut response =
                axum::Json(anthropic_message(id, &model, &words.concat(), input, output)).into_response();
            let headers = response.headers_mut();
            headers.insert("x-amzn-bedrock-input-token-count", HeaderValue::from(input));
            headers.insert("x-amzn-bedrock-output-token-count", HeaderValue::from(output));
            headers.insert("x-amzn-bedrock-invocation-latency", HeaderValue::from(1));
            response
        }
        "invoke-with-response-stream" => {
            let mut docs =
                vec![json!({"type": "message_start", "message": anthropic_message(id, &model, "", input, 1)})];
            docs.push(
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            for word in &words {
                docs.push(
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
                );
            }
            docs.push(json!({"type": "content_block_stop", "index": 0}));
            docs.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}));
            docs.push(json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": input, "outputTokenCount": output, "invocationLatency": 1, "firstByteLatency": 1}}));
            let frames = docs
                .iter()
                .map(|doc| event("chunk", &json!({"bytes": base64(doc.to_string().as_bytes()), "p": "abcdefgh"})))
                .collect();
            stream(config, fault, frames)
        }
        _ => error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation"),
    }
}

/// The text a Converse answer that calls tools starts with.
const TOOL_PREFACE: [&str; 2] = ["Let me ", "check."];

/// The tool calls a Converse request gets, as a model on Bedrock would make them: when
/// its `toolConfig` offers tools and its last turn is not a tool result, one call per
/// tool offered (only the named one for `toolChoice.tool`), with an input made from each
/// tool's JSON schema.
fn converse_tool_calls(request: &Value, id: u64) -> Option<Vec<(String, String, Value)>> {
    let tools = request.pointer("/toolConfig/tools")?.as_array().filter(|t| !t.is_empty())?;
    let last = request.get("messages")?.as_array()?.last()?;
    let answered = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b.get("toolResult").is_some()));
    if answered {
        return None;
    }
    let named = request.pointer("/toolConfig/toolChoice/tool/name");
    let calls = tools
        .iter()
        .filter_map(|t| t.get("toolSpec"))
        .filter(|spec| named.is_none_or(|n| spec.get("name") == Some(n)))
        .enumerate()
        .map(|(i, spec)| {
            let name = spec.get("name").and_then(Value::as_str).unwrap_or("tool").to_owned();
            let mut input = serde_json::Map::new();
            let properties = spec.pointer("/inputSchema/json/properties").and_then(Value::as_object);
            for (field, schema) in properties.into_iter().flatten() {
                let value = match schema.get("type").and_then(Value::as_str) {
                    Some("integer") | Some("number") => json!(42),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!(format!("mock {field}")),
                };
                input.insert(field.clone(), value);
            }
            (format!("tooluse_mock_{id}_{i}"), name, Value::Object(input))
        })
        .collect();
    Some(calls)
}

fn words(config: &MockConfig) -> Vec<String> {
    let base = ["Hello", " from", " keygate", "-mock", "!"];
    (0..config.chunks.max(1) as usize).map(|i| base[i % base.len()].to_owned()).collect()
}

fn anthropic_message(id: u64, model: &str, text: &str, input: u64, output: u64) -> Value {
    json!({
        "id": format!("msg_bdrk_{id:024}"), "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output}
    })
}

/// AWS's error shape: `{"message"}` and the type in `x-amzn-errortype`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({"message": message}))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

fn failure(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status {
        429 => "ThrottlingException",
        400 => "ValidationException",
        403 => "AccessDeniedException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    };
    error(code, kind, &format!("mock fault: {status}"))
}

/// Checks the signature as AWS would: `None` when it verifies, else AWS's refusal.
fn verify(config: &MockConfig, parts: &Parts, body: &Bytes) -> Option<Response> {
    let forbidden = |kind: &str, message: &str| error(StatusCode::FORBIDDEN, kind, message);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header("authorization").unwrap_or_default();
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256 ").unwrap_or_default();
    let field = |name: &str| {
        rest.split(',').map(str::trim).find_map(|part| part.strip_prefix(name)).map(str::to_owned).unwrap_or_default()
    };
    let (credential, signed_headers, signature) = (field("Credential="), field("SignedHeaders="), field("Signature="));
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Some(forbidden("IncompleteSignatureException", "Authorization header requires a valid Credential."));
    };
    let Some(known) = config.aws_credentials.iter().find(|c| c.access_key_id == key_id) else {
        return Some(forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    let names: Vec<&str> = signed_headers.split(';').collect();
    let amz_date = header("x-amz-date").unwrap_or_default();
    if terminator != "aws4_request"
        || service != "bedrock"
        || !names.contains(&"host")
        || !names.contains(&"x-amz-date")
        || !amz_date.starts_with(date)
        || (header("x-amz-security-token").is_some() && !names.contains(&"x-amz-security-token"))
    {
        return Some(forbidden("IncompleteSignatureException", "The request signature is incomplete or mis-scoped."));
    }
    let body_hash = hex::encode(Sha256::digest(body));
    if header("x-amz-content-sha256").is_some_and(|h| h != body_hash) {
        return Some(forbidden("InvalidSignatureException", SIGNATURE_MISMATCH));
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = parts
            .headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical_uri: String =
        parts.uri.path().split('/').map(|segment| encode(segment.as_bytes())).collect::<Vec<_>>().join("/");
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&percent_decode_bytes(k)), encode(&percent_decode_bytes(v)))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical = format!(
        "{}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed_headers}\n{body_hash}",
        parts.method,
        query.join("&")
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", known.secret_access_key).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    if hex::encode(hmac(&key, string_to_sign.as_bytes())) != signature {
        return Some(forbidden("InvalidSignatureException", SIGNATURE_MISMATCH));
    }
    None
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { return Vec::new() };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode_bytes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| bytes.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(text)).into_owned()
}

/// One event-stream message with string headers, CRCs included.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = (12 + head.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn event(kind: &str, payload: &Value) -> Vec<u8> {
    frame(
        &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
        payload.to_string().as_bytes(),
    )
}

/// CRC-32/ISO-HDLC, bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Streams frames with the configured pacing; `ResetMidStream` cuts the connection.
fn stream(config: &MockConfig, fault: Option<Fault>, frames: Vec<Vec<u8>>) -> Response {
    let reset_after = match fault {
        Some(Fault::ResetMidStream { after_chunks }) => Some(after_chunks as usize),
        _ => None,
    };
    let interval = Duration::from_millis(config.chunk_interval_ms);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if reset_after == Some(i) {
                let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: reset mid-stream");
                let _ = tx.send(Err(reset)).await;
                return;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.amazon.eventstream"));
    response.headers_mut().insert("x-amzn-requestid", HeaderValue::from_static("00000000-0000-0000-0000-000000000000"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_ieee_crc_and_base64_is_standard() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(frame(&[], b""), [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff]);
        assert_eq!(base64(b"hi"), "aGk=");
        assert_eq!(base64(b"{\"a\":1}"), "eyJhIjoxfQ==");
    }
}
