//! `POST /v1/chat/completions` and `POST /v1/embeddings`: one call through the
//! passthrough's stages. Unlike passthrough, the body is read before resolution (its
//! `model` names the provider), within the same memory budget.
//!
//! authenticate → `body::read` → [`route`] (`auto`: the first provider in the policy's
//! priority order for which the chain yields a credential) → `Services::resolve_call`
//! (with the provider's own path, so the shared-endpoint rule applies) → translate →
//! `Services::admit` (the worst case of the body that goes out) → `upstream::send` →
//! `relay::answer` (passed through) or [`translated`]; `settle::Finish` settles once.

use super::stream::Translating;
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
use keygate_core::translate::{anthropic, route, Refused, Route};
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_service::Principal;
use keygate_vault::redact::scrub;
use serde_json::Value;
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

#[tracing::instrument(skip_all, fields(kind = ?kind))]
async fn call(state: &AppState, kind: Kind, request: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let principal = authenticate(state, &parts).await?;
    let policy = payment_policy(&parts.headers)?;
    let buffered = body::read(body, &parts.headers, &state.body_budget).await?;
    let mut request: Value = serde_json::from_slice(&buffered.bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid("the body must be a JSON object in OpenAI's format"))?;
    let named = request.get("model").and_then(Value::as_str).unwrap_or("");
    let (provider, model) = match route(named, state.services.catalog()).map_err(refused)? {
        Route::Model { provider, model } => (provider, Some(model)),
        Route::Provider(provider) => (provider, None),
        Route::Auto => (auto(state, &principal, policy, kind).await?, None),
    };
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
        (Kind::Embeddings, Speaks::OpenAi { embeddings: Some(path), .. }) => path,
        _ => {
            let what = if kind == Kind::Chat { "chat completions" } else { "embeddings" };
            return Err(invalid(format!("`{provider}` has no {what}: choose another model")));
        }
    };
    let dialect = Dialect::of(&provider);
    let incoming = Incoming {
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
    let guarded = state.services.guard_prompt(&resolved.principal, &resolved.provider, &buffered.bytes).await?;
    if let Some(redacted) = &guarded.body {
        request = serde_json::from_slice(redacted).map_err(|e| ApiError::internal(&e))?;
    }
    // A provider named alone, or `auto`: the credential's model, else the provider's.
    let model = model
        .or_else(|| resolved.credential.model.clone())
        .or_else(|| resolved.provider.default_model.clone())
        .ok_or_else(|| invalid(format!("name a model: `{}/<model>`", incoming.provider)))?;
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let translate = speaks == Speaks::Anthropic;
    let outbound = if translate {
        anthropic::request(&request, &model).map_err(refused)?
    } else {
        let mut passed = request;
        passed["model"] = Value::String(model.clone());
        passed
    };
    let outbound = Bytes::from(serde_json::to_vec(&outbound).map_err(|e| ApiError::internal(&e))?);
    let peek = body::Peek::of(&outbound);
    let size = peek.size(&outbound, path);
    let admitted = state.services.admit(resolved, size).await?;
    let output_cap = admitted.output_cap;

    // From here on the call settles exactly once.
    let mut finish = Finish::new(state.services.clone(), admitted, Some(model.clone()), outbound.len(), started);
    let mut outbound = outbound;
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
    let sent = match upstream::send(state, &finish.call, &incoming, outbound, started).await {
        Ok(sent) => sent,
        Err(e) => {
            state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), 0);
            finish.settle(Tokens::default());
            return Err(e);
        }
    };
    drop(buffered);
    state.metrics.upstream_latency(&finish.call.provider.id, sent_at.elapsed());
    let mut reply = if translate {
        translated(state, finish, sent, stream, include_usage, &model).await?
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
    Ok(reply)
}

/// `auto`: the first provider in the policy's priority order that the unified endpoint
/// serves for `kind` and for which the chain yields the caller a credential.
async fn auto(state: &AppState, principal: &Principal, policy: PaymentPolicy, kind: Kind) -> Result<String, ApiError> {
    let priority = state.services.policy().provider_priority.clone();
    for provider in &priority {
        let served = match speaks(provider) {
            Some(Speaks::OpenAi { chat, embeddings }) => match kind {
                Kind::Chat => !chat.is_empty(),
                Kind::Embeddings => embeddings.is_some(),
            },
            Some(Speaks::Anthropic) => kind == Kind::Chat,
            None => false,
        };
        if served && state.services.explain(principal, provider, policy).await?.chosen.is_some() {
            return Ok(provider.clone());
        }
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "no_credential",
        format!(
            "`auto` found no provider with a key for you (tried, in order: {}): add one with POST /api/v1/keys",
            priority.join(", ")
        ),
    ))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An Anthropic answer, translated: an error in OpenAI's shape, a stream chunk by chunk,
/// or a whole message. Metered from Anthropic's own usage, as passthrough meters it.
async fn translated(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    stream: bool,
    include_usage: bool,
    model: &str,
) -> Result<Response, ApiError> {
    let Sent { response, echo } = sent;
    let status = response.status();
    state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::new();
    relay::annotate(&mut headers, &finish.call);
    finish.status = Some(status);

    if !status.is_success() {
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let bytes = relay::read_limited(response, relay::MAX_ERROR_BODY, echo.as_ref()).await;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            state.services.forget_oauth_token(&finish.call);
            state.services.mark_rejected(&finish.call, status.as_u16()).await;
        }
        finish.settle(Tokens::default());
        let text = scrub(&anthropic::error(status.as_u16(), &bytes).to_string()).into_owned();
        let mut reply = (status, text).into_response();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(v) = retry_after {
            headers.insert(header::RETRY_AFTER, v);
        }
        *reply.headers_mut() = headers;
        return Ok(reply);
    }

    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = if stream && sse {
        let metered = Metered::new(Box::pin(response.bytes_stream()), Dialect::Anthropic, false, echo, finish);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Body::from_stream(Translating::new(metered, anthropic::Stream::new(model, unix_now(), include_usage)))
    } else {
        let message = read_whole(response, &mut finish, echo.as_deref()).await?;
        let mut tokens = Tokens::default();
        if let Some(report) = Report::parse(&message) {
            tokens.observe(Dialect::Anthropic, &report);
            if let Some(m) = report.model() {
                finish.model = Some(m);
            }
        }
        finish.settle(tokens);
        let message: Value = serde_json::from_slice(&message).map_err(|_| {
            ApiError::new(StatusCode::BAD_GATEWAY, "upstream_invalid", "Anthropic's answer was not JSON")
        })?;
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Body::from(anthropic::response(&message, unix_now()).to_string())
    };
    let mut reply = Response::new(body);
    *reply.headers_mut() = headers;
    Ok(reply)
}

/// A non-streamed answer, read whole (within the metered maximum) and scrubbed of the
/// key that was sent.
async fn read_whole(
    response: reqwest::Response,
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
