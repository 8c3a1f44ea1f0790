//! Stage 1 of a proxied call: who is calling, what they ask for. Authenticates the
//! caller, reads the per-request payment policy, reads the body, and peeks into a JSON
//! body for what the gateway needs (model, stream, output maximum) without building a
//! tree of it.
//!
//! Not for: deciding anything about the call (the service's `admit` does).

use crate::extract::{presented_credential, source_addr};
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use keygate_core::resolution::PaymentPolicy;
use keygate_core::usage::Dialect;
use keygate_service::gateway::CallRequest;
use keygate_service::Principal;
use serde_json::Value;
use std::borrow::Cow;

/// Largest request body keygate forwards.
const MAX_REQUEST: usize = 32 << 20;

/// A proxied call as the caller sent it, authenticated.
#[derive(Debug)]
pub(super) struct Incoming {
    pub principal: Principal,
    pub provider: String,
    /// The path after `/proxy/{provider}`, as the caller gave it.
    pub path: String,
    /// The query string, still encoded.
    pub query: Option<String>,
    pub method: Method,
    pub headers: HeaderMap,
    pub policy: PaymentPolicy,
    pub body: Bytes,
    pub dialect: Dialect,
    /// The model the body (or a Gemini path) names.
    pub model: Option<String>,
    pub stream: bool,
    /// Whether the caller asked for an OpenAI stream's usage chunk itself.
    pub include_usage: bool,
    pub max_output_tokens: Option<u64>,
}

impl Incoming {
    /// What the gateway judges the call by.
    pub fn call_request(&self) -> CallRequest<'_> {
        CallRequest {
            principal: &self.principal,
            provider: &self.provider,
            policy: self.policy,
            body_len: self.body.len(),
            max_output_tokens: self.max_output_tokens,
        }
    }
}

/// Authenticates the caller and reads their request.
pub(super) async fn read(
    state: &AppState,
    provider: String,
    path: String,
    request: Request,
) -> Result<Incoming, ApiError> {
    let (parts, body) = request.into_parts();
    let credential = presented_credential(&parts).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send a keygate token as the provider SDK's API key")
    })?;
    let principal = state.services.authenticate(credential, source_addr(&parts)).await?;
    let policy = payment_policy(&parts.headers)?;
    let body = axum::body::to_bytes(Body::new(body), MAX_REQUEST).await.map_err(|e| {
        if crate::serve::timed_out(&e) {
            crate::extract::body_timeout()
        } else {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than 32 MiB")
        }
    })?;
    let peek = Peek::of(&body);
    let dialect = Dialect::of(&provider);
    let model = peek.model.as_deref().map(str::to_owned).or_else(|| gemini_model(&path));
    Ok(Incoming {
        principal,
        dialect,
        model,
        stream: peek.stream == Some(true),
        include_usage: peek.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true),
        max_output_tokens: peek.max_output_tokens(),
        provider,
        path,
        query: parts.uri.query().map(str::to_owned),
        method: parts.method,
        headers: parts.headers,
        policy,
        body,
    })
}

/// `x-keygate-policy`: keeps operator-paid and customer-paid calls apart.
fn payment_policy(headers: &HeaderMap) -> Result<PaymentPolicy, ApiError> {
    match headers.get("x-keygate-policy").map(|v| v.to_str().map(PaymentPolicy::parse)) {
        None => Ok(PaymentPolicy::Any),
        Some(Ok(Some(p))) => Ok(p),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "x-keygate-policy must be customer-only, operator-only or any",
        )),
    }
}

/// What the proxy needs from a JSON request body, read without building a tree of it.
#[derive(Debug, Default, serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'a> Peek<'a> {
    /// The fields of a JSON object body (nothing for any other body; it is forwarded
    /// untouched either way). A body the typed reader refuses (a field of an unexpected
    /// type) is read field by field instead, so one odd field hides nothing else.
    fn of(body: &'a [u8]) -> Self {
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Self::default();
        }
        if let Ok(peek) = serde_json::from_slice(body) {
            return peek;
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else { return Self::default() };
        let u64_at = |key: &str| v.get(key).and_then(Value::as_u64);
        Self {
            model: v.get("model").and_then(Value::as_str).map(|m| Cow::Owned(m.to_owned())),
            stream: v.get("stream").and_then(Value::as_bool),
            stream_options: Some(StreamOptions {
                include_usage: v.pointer("/stream_options/include_usage").and_then(Value::as_bool),
            }),
            max_tokens: u64_at("max_tokens"),
            max_completion_tokens: u64_at("max_completion_tokens"),
            max_output_tokens: u64_at("max_output_tokens"),
        }
    }

    fn max_output_tokens(&self) -> Option<u64> {
        self.max_tokens.or(self.max_completion_tokens).or(self.max_output_tokens)
    }
}

/// The model a Gemini path names (`/v1beta/models/{model}:generateContent`).
fn gemini_model(path: &str) -> Option<String> {
    let rest = path.split("models/").nth(1)?;
    Some(rest.split(':').next()?.to_owned())
}
