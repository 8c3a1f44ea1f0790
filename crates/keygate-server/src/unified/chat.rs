//! `POST /v1/chat/completions` and `POST /v1/embeddings`: one call through the
//! passthrough's stages. Unlike passthrough, the body is read before resolution (its
//! `model` names the provider), within the same memory budget.
//!
//! authenticate → `body::read` → [`route`] (`auto`: the first provider in the policy's
//! priority order for which the chain yields a credential) → `Services::resolve_call`
//! (with the provider's own path, so the shared-endpoint rule applies) → translate →
//! `Services::admit` (the worst case of the body that goes out) → `upstream::send` →
//! `relay::answer` (passed through) or [`translated`]; `settle::Finish` settles once.

use super::stream::{Scrubbed, Translating};
use super::{authenticate, speaks, OpenAiError, Speaks};
use crate::proxy::request::{payment_policy, Incoming};
use crate::proxy::settle::Finish;
use crate::proxy::sse::Metered;
use crate::proxy::upstream::Sent;
use crate::proxy::{body, relay, upstream};
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keygate_core::proxypath::ProxyPath;
use keygate_core::resolution::PaymentPolicy;
use keygate_core::translate::{anthropic, bedrock, gemini, gemini_embed, route, Refused, Route};
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_service::Principal;
use keygate_vault::redact::scrub;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Which unified call this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Embeddings,
}

pub(super) async fn completions(State(state): State<AppState>, request: Request) -> Response {
    call(&state, Kind::Chat, request).await.unwrap_or_else(|e| OpenAiError(e).into_response())
}

pub(super) async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    call(&state, Kind::Embeddings, request).await.unwrap_or_else(|e| OpenAiError(e).into_response())
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
}

fn refused(e: Refused) -> ApiError {
    invalid(e.0)
}

#[tracing::instrument(level = "debug", skip_all, fields(kind = ?kind))]
async fn call(state: &AppState, kind: Kind, request: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let principal = authenticate(state, &parts).await?;
    let policy = payment_policy(&parts.headers)?;
    let buffered = body::read(body, &parts.headers, &state.body_budget).await?;
    if body::too_many_elements(&buffered.bytes) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body has more than {} JSON elements", body::MAX_JSON_ELEMENTS),
        ));
    }
    let mut request: Value = serde_json::from_slice(&buffered.bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid("the body must be a JSON object in OpenAI's format"))?;
    let named = request.get("model").and_then(Value::as_str).unwrap_or("");
    let routed = route(named, state.services.catalog()).map_err(refused)?;
    let fallback = routed == Route::Auto && state.services.policy().auto_fallback;
    let (mut provider, model) = match routed {
        Route::Model { provider, model } => (provider, Some(model)),
        Route::Provider(provider) => (provider, None),
        Route::Auto => (auto(state, &principal, policy, kind).await?, None),
    };
    // `auto` with fallback on: a provider that answers 429 or 5xx before anything reached
    // the caller hands the call to the next provider in the priority order with a key for
    // the caller; the last one's answer is relayed whatever it is.
    let mut buffered = Arc::new(buffered);
    loop {
        let next = if fallback { next_auto(state, &principal, policy, kind, Some(&provider)).await? } else { None };
        let kept = next.as_ref().map(|_| (Arc::clone(&buffered), request.clone()));
        let attempted = Attempt { kind, started, principal: principal.clone(), policy, may_fall_back: next.is_some() };
        match attempt(state, attempted, buffered, request, provider, model.clone()).await? {
            Attempted::Answered(reply) => return Ok(reply),
            Attempted::FellBack => {}
        }
        let (Some(next), Some((body, json))) = (next, kept) else {
            return Err(ApiError::internal(&"a unified call fell back with no provider left"));
        };
        (provider, buffered, request) = (next, body, json);
    }
}

/// One provider's try at a unified call (several for `auto` with fallback on).
struct Attempt {
    kind: Kind,
    started: Instant,
    principal: Principal,
    policy: PaymentPolicy,
    /// Whether a 429 or 5xx hands the call to the next provider instead of being relayed.
    may_fall_back: bool,
}

enum Attempted {
    Answered(Response),
    /// The provider answered 429 or 5xx (or could not be reached); the attempt is settled
    /// and metered as a failed call, and nothing reached the caller.
    FellBack,
}

/// Whether a provider's answer lets `auto` try the next provider.
fn falls_back(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

async fn attempt(
    state: &AppState,
    attempt: Attempt,
    buffered: Arc<body::Buffered>,
    mut request: Value,
    provider: String,
    model: Option<String>,
) -> Result<Attempted, ApiError> {
    let Attempt { kind, started, principal, policy, may_fall_back } = attempt;
    let speaks = speaks(&provider).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!("the unified API does not translate to `{provider}` yet: call it through /proxy/{provider}/..."),
        )
    })?;
    let path = match (kind, speaks) {
        (Kind::Chat, Speaks::OpenAi { chat, .. }) if !chat.is_empty() => chat,
        (Kind::Chat, Speaks::Anthropic) => anthropic::PATH,
        // The model is known only once the credential is: set below.
        (Kind::Chat, Speaks::Gemini) => gemini::RESOLVE_PATH,
        (Kind::Chat, Speaks::Bedrock) => bedrock::RESOLVE_PATH,
        (Kind::Embeddings, Speaks::OpenAi { embeddings: Some(path), .. }) => path,
        (Kind::Embeddings, Speaks::Gemini) => gemini_embed::RESOLVE_PATH,
        _ => {
            let what = if kind == Kind::Chat { "chat completions" } else { "embeddings" };
            return Err(invalid(format!("`{provider}` has no {what}: choose another model")));
        }
    };
    let dialect = Dialect::of(&provider);
    let mut incoming = Incoming {
        principal,
        path: ProxyPath::parse(path).map_err(|_| ApiError::internal(&"a unified path is invalid"))?,
        provider,
        query: None,
        method: Method::POST,
        headers: HeaderMap::from_iter([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]),
        policy,
        dialect,
    };
    let resolved = state.services.resolve_call(incoming.call_request()).await?;
    // The prompt guard scans what the caller wrote (before translation), and before
    // anything is reserved: a blocked call costs nothing.
    let mut guarded = state.services.guard_prompt(&resolved.principal, &resolved.provider, &buffered.bytes).await?;
    if let Some(redacted) = &guarded.body {
        let asked_model = request.get("model").cloned();
        request = serde_json::from_slice(redacted).map_err(|e| ApiError::internal(&e))?;
        // The call was routed by the model as written: a secret inside it cannot be
        // redacted away from the path or the provider chosen.
        if request.get("model") != asked_model.as_ref() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "prompt_blocked",
                "the `model` field carries a secret the prompt guard found: nothing was sent",
            ));
        }
    }
    // A provider named alone, or `auto`: the credential's model, else the provider's
    // (Gemini embeddings: its embedding model, since those are chat models).
    let gemini_embeds = kind == Kind::Embeddings && speaks == Speaks::Gemini;
    let model = model
        .or_else(|| gemini_embeds.then(|| gemini_embed::DEFAULT_MODEL.to_owned()))
        .or_else(|| resolved.credential.model.clone())
        .or_else(|| resolved.provider.default_model.clone())
        .ok_or_else(|| invalid(format!("name a model: `{}/<model>`", incoming.provider)))?;
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let gemini_path;
    let bedrock_path;
    let path = if gemini_embeds {
        gemini_path = gemini_embed::path(&model).map_err(refused)?;
        incoming.path = ProxyPath::parse(&gemini_path).map_err(|_| ApiError::internal(&"a Gemini path is invalid"))?;
        gemini_path.as_str()
    } else if speaks == Speaks::Bedrock {
        bedrock_path = bedrock::path(&model, stream).map_err(refused)?;
        incoming.path = ProxyPath::parse(&bedrock_path).map_err(|_| invalid("the Bedrock model id is invalid"))?;
        bedrock_path.as_str()
    } else if speaks == Speaks::Gemini {
        gemini_path = gemini::path(&model, stream).map_err(refused)?;
        incoming.path = ProxyPath::parse(&gemini_path).map_err(|_| ApiError::internal(&"a Gemini path is invalid"))?;
        incoming.query = stream.then(|| gemini::STREAM_QUERY.to_owned());
        gemini_path.as_str()
    } else {
        path
    };
    let translate = matches!(speaks, Speaks::Anthropic | Speaks::Gemini | Speaks::Bedrock);
    let mut embed = None;
    let outbound = match speaks {
        Speaks::Gemini if gemini_embeds => {
            let (body, embedded) = gemini_embed::request(&request, &model).map_err(refused)?;
            embed = Some(embedded);
            body
        }
        Speaks::Anthropic => anthropic::request(&request, &model).map_err(refused)?,
        Speaks::Gemini => gemini::request(&request, &model).map_err(refused)?,
        Speaks::Bedrock => bedrock::request(&request).map_err(refused)?,
        _ => {
            let mut passed = request;
            passed["model"] = Value::String(model.clone());
            passed
        }
    };
    let mut outbound = Bytes::from(serde_json::to_vec(&outbound).map_err(|e| ApiError::internal(&e))?);
    if translate {
        // Translation decodes what the caller wrote (a tool result's JSON text, say):
        // what goes out is scanned too.
        let again = state.services.guard_prompt(&resolved.principal, &resolved.provider, &outbound).await?;
        if let Some(redacted) = again.body {
            outbound = Bytes::from(redacted);
            guarded.redacted.extend(again.redacted);
            guarded.redacted.sort_by_key(|k| k.as_str());
            guarded.redacted.dedup();
        }
    }
    let peek = body::Peek::of(&outbound);
    let size = peek.size(&outbound, path);
    let admitted = state.services.admit(resolved, size).await?;
    let output_cap = admitted.output_cap;

    // From here on the call settles exactly once.
    let mut finish = Finish::new(state.services.clone(), admitted, Some(model.clone()), outbound.len(), started);
    if let Some(cap) = output_cap {
        let (capped, ok) = body::cap_output(outbound, dialect, &incoming.provider, path, cap);
        if !ok {
            return Err(ApiError::internal(&"a unified body could not be capped"));
        }
        outbound = capped;
    }
    let strip_usage_chunk = if !translate && stream && !include_usage {
        let (asked, ok) = body::ask_for_usage(outbound);
        outbound = asked;
        ok
    } else {
        false
    };
    let sent_at = Instant::now();
    finish.sending();
    let sent = match upstream::send(state, &finish.call, &incoming, outbound, started).await {
        Ok(sent) => sent,
        Err(e) => {
            state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), 0);
            finish.settle(Tokens::default());
            if may_fall_back && falls_back(e.status) {
                tracing::info!(provider = %incoming.provider, code = e.code, "auto: falling back to the next provider");
                return Ok(Attempted::FellBack);
            }
            return Err(e);
        }
    };
    if may_fall_back && falls_back(sent.response.status()) {
        let status = sent.response.status();
        state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), status.as_u16());
        finish.status = Some(status);
        finish.settle(Tokens::default());
        tracing::info!(provider = %incoming.provider, status = status.as_u16(), "auto: falling back to the next provider");
        return Ok(Attempted::FellBack);
    }
    drop(buffered);
    state.metrics.upstream_latency(&finish.call.provider.id, sent_at.elapsed());
    let mut reply = if let Some(embed) = embed {
        super::embed::translated(state, finish, sent, &model, &embed).await?
    } else if speaks == Speaks::Bedrock {
        super::bedrock::translated(state, finish, sent, stream, include_usage, &model).await?
    } else if translate {
        translated(state, finish, sent, stream, include_usage, &model, speaks).await?
    } else {
        relay::answer(state, finish, sent, dialect, strip_usage_chunk).await?
    };
    let headers = reply.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&incoming.provider) {
        headers.insert("x-keygate-provider", v);
    }
    if let Some(cap) = output_cap {
        let (name, value) = body::cap_header(cap);
        headers.insert(name, value);
    }
    if let Some(value) = guarded.header().and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(keygate_service::guard::HEADER, value);
    }
    Ok(Attempted::Answered(reply))
}

/// `auto`: the first provider in the policy's priority order that the unified endpoint
/// serves for `kind` and for which the chain yields the caller a credential.
async fn auto(state: &AppState, principal: &Principal, policy: PaymentPolicy, kind: Kind) -> Result<String, ApiError> {
    if let Some(provider) = next_auto(state, principal, policy, kind, None).await? {
        return Ok(provider);
    }
    let priority = state.services.policy().provider_priority.clone();
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "no_credential",
        format!(
            "`auto` found no provider with a key for you (tried, in order: {}): add one with POST /api/v1/keys",
            priority.join(", ")
        ),
    ))
}

/// The first provider after `after` (from the start: `None`) in the policy's priority
/// order that the unified endpoint serves for `kind` and for which the chain yields the
/// caller a credential.
async fn next_auto(
    state: &AppState,
    principal: &Principal,
    policy: PaymentPolicy,
    kind: Kind,
    after: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let priority = state.services.policy().provider_priority.clone();
    let from = after.and_then(|a| priority.iter().position(|p| p == a)).map_or(0, |i| i + 1);
    for provider in &priority[from.min(priority.len())..] {
        let served = match speaks(provider) {
            Some(Speaks::OpenAi { chat, embeddings }) => match kind {
                Kind::Chat => !chat.is_empty(),
                Kind::Embeddings => embeddings.is_some(),
            },
            Some(Speaks::Gemini) => true,
            Some(Speaks::Anthropic | Speaks::Bedrock) => kind == Kind::Chat,
            None => false,
        };
        if served && state.services.explain(principal, provider, policy).await?.chosen.is_some() {
            return Ok(Some(provider.clone()));
        }
    }
    Ok(None)
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An Anthropic or Gemini answer, translated: an error in OpenAI's shape, a stream chunk
/// by chunk, or a whole message. Metered from the provider's own usage, as passthrough
/// meters it.
async fn translated(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    stream: bool,
    include_usage: bool,
    model: &str,
    speaks: Speaks,
) -> Result<Response, ApiError> {
    let gemini = speaks == Speaks::Gemini;
    let dialect = if gemini { Dialect::Gemini } else { Dialect::Anthropic };
    let Sent { response, echo, .. } = sent;
    let outgoing = echo.clone();
    let status = response.status();
    state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::new();
    relay::annotate(&mut headers, &finish.call);
    finish.status = Some(status);

    if !status.is_success() {
        return Ok(failed(state, finish, response, echo, headers, dialect).await);
    }

    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = if stream && sse {
        let metered = Metered::new(response.bytes_stream(), dialect, false, echo, finish);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if gemini {
            let translating = Translating::new(metered, gemini::Stream::new(model, unix_now(), include_usage));
            Body::from_stream(Scrubbed::new(translating, outgoing))
        } else {
            let translating = Translating::new(metered, anthropic::Stream::new(model, unix_now(), include_usage));
            Body::from_stream(Scrubbed::new(translating, outgoing))
        }
    } else {
        let message = read_whole(response, &mut finish, echo.as_deref()).await?;
        let mut tokens = Tokens::default();
        if let Some(report) = Report::parse(&message) {
            tokens.observe(dialect, &report);
            if let Some(m) = report.model() {
                finish.model = Some(m);
            }
        }
        finish.settle(tokens);
        let message: Value = serde_json::from_slice(&message).map_err(|_| {
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_invalid", "the provider's answer was not JSON")
        })?;
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let reply = if gemini {
            gemini::response(&message, model, unix_now())
        } else {
            anthropic::response(&message, unix_now())
        };
        Body::from(scrubbed(outgoing.as_deref(), reply.to_string()))
    };
    let mut reply = Response::new(body);
    *reply.headers_mut() = headers;
    Ok(reply)
}

/// A provider's error answer (Anthropic or Gemini), settled and relayed in OpenAI's shape
/// with its status and `retry-after`; a 401/403 marks the key rejected.
pub(super) async fn failed(
    state: &AppState,
    mut finish: Finish,
    response: crate::proxy::client::Upstream,
    echo: Option<Arc<keygate_vault::echo::EchoScrubber>>,
    mut headers: HeaderMap,
    dialect: Dialect,
) -> Response {
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let bytes = relay::read_limited(response, relay::MAX_ERROR_BODY, echo.as_ref()).await;
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        state.services.forget_oauth_token(&finish.call);
        state.services.mark_rejected(&finish.call, status.as_u16()).await;
    }
    finish.settle(Tokens::default());
    let error = if dialect == Dialect::Gemini {
        gemini::error(status.as_u16(), &bytes)
    } else {
        anthropic::error(status.as_u16(), &bytes)
    };
    let text = scrubbed(echo.as_deref(), scrub(&error.to_string()).into_owned());
    let mut reply = (status, text).into_response();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(v) = retry_after.and_then(seconds_only) {
        headers.insert(header::RETRY_AFTER, v);
    }
    *reply.headers_mut() = headers;
    reply
}

/// A translated text scrubbed once more of the key sent: translation decodes JSON
/// escapes, so a partly escaped echo would otherwise come out whole.
pub(super) fn scrubbed(echo: Option<&keygate_vault::echo::EchoScrubber>, text: String) -> String {
    match echo {
        Some(echo) if echo.found_in(text.as_bytes()) => {
            String::from_utf8_lossy(&echo.scrub(text.as_bytes())).into_owned()
        }
        _ => text,
    }
}

/// A provider's `Retry-After`, passed on only as a number of seconds: any other text
/// (an echo of the key, say) stays behind.
pub(super) fn seconds_only(value: HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?.trim();
    (!text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())).then_some(value)
}

/// A non-streamed answer, read whole (within the metered maximum) and scrubbed of the
/// key that was sent.
pub(super) async fn read_whole(
    response: crate::proxy::client::Upstream,
    finish: &mut Finish,
    echo: Option<&keygate_vault::echo::EchoScrubber>,
) -> Result<Bytes, ApiError> {
    let broke = |finish: &mut Finish, detail: &str| {
        finish.settle(Tokens::default());
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", detail.to_owned())
    };
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(broke(finish, "the provider's answer broke off before it was complete"));
        };
        body.extend_from_slice(&chunk);
        if body.len() > relay::MAX_METERED_BODY {
            return Err(broke(finish, "the provider's answer is too large to translate"));
        }
    }
    Ok(match echo {
        Some(echo) if echo.found_in(&body) => Bytes::from(echo.scrub(&body)),
        _ => Bytes::from(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_number_of_seconds_passes_as_retry_after() {
        assert!(seconds_only(HeaderValue::from_static("30")).is_some());
        assert!(seconds_only(HeaderValue::from_static("sk-ant-api03-echoed")).is_none());
        assert!(seconds_only(HeaderValue::from_static("")).is_none());
    }

    #[test]
    fn a_partly_escaped_echo_is_scrubbed_once_translated() {
        let key = "sk-ant-api03-ECHOtestkey0000000000";
        let echo = keygate_vault::echo::EchoScrubber::new(&[key]).unwrap();
        let out = scrubbed(Some(&echo), format!("{{\"content\":\"{key}\"}}"));
        assert!(!out.contains(key), "{out}");
    }
}
