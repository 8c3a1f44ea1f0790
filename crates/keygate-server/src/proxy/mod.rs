//! `ANY /proxy/{provider}/{*path}`: native passthrough. The caller authenticates with a
//! keygate token (as `Authorization: Bearer` or `x-api-key`, the way the OpenAI and
//! Anthropic SDKs send their key) or a host JWT; keygate resolves and admits the call,
//! strips the caller's credential, injects the provider's, forwards method, path, query
//! and body, and relays the answer, reading usage from it on the way.
//!
//! One call reads top to bottom through four stages, entering the service twice (admit,
//! finish):
//!
//! 1. [`request`]: authenticate, check the path, read the payment policy;
//! 2. resolve: [`Services::resolve_call`](keygate_service::Services::resolve_call) decides
//!    who pays, before the body is read (a refused call is never buffered);
//! 3. [`body`]: read the body within the memory budget, let
//!    [`Services::guard_prompt`](keygate_service::Services::guard_prompt) block or redact
//!    the secrets in an AI prompt, peek at it, and
//!    [`Services::admit`](keygate_service::Services::admit) it under the limits
//!    (a demo call may come back with its output maximum capped);
//! 4. [`upstream`]: build the outbound request, inject the credential, send;
//! 5. [`relay`]: relay the answer, buffered or streamed ([`sse`], or AWS event streams
//!    with [`eventstream`]); [`settle`]'s guard
//!    calls `Services::finish` exactly once.
//!
//! A git host's smart HTTP (`/proxy/github-git/...`) leaves this path after stage 2 for
//! [`git`], which streams both ways instead of buffering the body.

// The stages are shared with the unified endpoint (`crate::unified`).
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod eventstream;
mod git;
mod pool;
pub(crate) mod relay;
pub(crate) mod request;
pub(crate) mod settle;
pub(crate) mod sse;
pub(crate) mod upstream;

use crate::{ApiError, AppState};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_core::usage::Dialect;
use settle::Finish;

pub use body::BodyBudget;
use std::net::SocketAddr;
use std::time::Instant;

pub(crate) async fn proxy(State(state): State<AppState>, request: Request) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    handle(&state, peer, request).await
}

/// Whether the proxy's route (`/proxy/{provider}/{*path}`) takes `path`: a provider
/// segment and something after it, both non-empty. [`crate::serve`] sends such requests
/// here straight from the connection, past the router.
pub(crate) fn routes_here(path: &str) -> bool {
    segments(path).is_some_and(|(provider, rest)| !provider.is_empty() && !rest.is_empty())
}

/// `/proxy/{provider}/{rest}` as `(provider, rest)`, both still percent-encoded (`rest`
/// empty when nothing follows the provider); `None` off the proxy's prefix.
pub(crate) fn segments(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/proxy/")?;
    Some(after.split_once('/').unwrap_or((after, "")))
}

/// A proxied call from `peer`.
pub(crate) async fn handle(state: &AppState, peer: Option<SocketAddr>, request: Request) -> Response {
    // The provider segment read straight off the path (the route matched it): axum's
    // `Path` extractor would copy and deserialize both segments on every call.
    let Some(provider) = provider_segment(request.uri().path()) else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the request path is not valid UTF-8")
            .into_response();
    };
    let git = state.services.catalog().get(&provider).is_some_and(|p| p.speaks_git());
    // Boxed: the call's future is large, and axum moves the handler's future several times.
    let mut reply =
        Box::pin(call(state, peer, provider, git, request)).await.unwrap_or_else(IntoResponse::into_response);
    if git {
        git::challenge(&mut reply);
    }
    reply
}

/// `{provider}` of `/proxy/{provider}/...`, percent-decoded (a segment with a malformed
/// escape stays as written: no provider has such a name); `None` when it decodes to
/// something other than UTF-8.
fn provider_segment(path: &str) -> Option<String> {
    let (segment, _) = segments(path)?;
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    match keygate_core::proxypath::percent_decode(segment) {
        Some(bytes) => String::from_utf8(bytes).ok(),
        None => Some(segment.to_owned()),
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(provider = %provider))]
async fn call(
    state: &AppState,
    peer: Option<SocketAddr>,
    provider: String,
    git: bool,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (incoming, body) = request::read(state, peer, provider, git, request).await?;
    let resolved = state.services.resolve_call(incoming.call_request()).await?;
    // git's smart HTTP: streamed both ways, never buffered (see `git`). Its future is
    // boxed: held inline it made every call's state, held for as long as the call runs
    // (a stream's whole life), three times larger (14.8 KB; 5.1 KB without it).
    if resolved.provider.speaks_git() {
        return Box::pin(git::call(state, incoming, body, resolved, started)).await;
    }
    // The prompt guard reads every AI prompt: a compressed one would pass it unread.
    if resolved.provider.kind == "ai" && body::compressed(&incoming.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send AI request bodies uncompressed (no Content-Encoding): keygate scans every prompt",
        ));
    }
    let mut buffered = body::read(body, &incoming.headers, &state.body_budget).await?;
    // The prompt guard, before anything is reserved: a blocked call costs nothing.
    let mut guarded = state.services.guard_prompt(&resolved.principal, &resolved.provider, &buffered.bytes).await?;
    if let Some(redacted) = guarded.body.take() {
        buffered.bytes = axum::body::Bytes::from(redacted); // its length is the one sent
    }
    // A JSON body without `model`, to a provider that takes it in the body: the key's
    // model override, else the provider's default (a body naming a model is never changed).
    // The body is peeked at once (again only when a model was filled in).
    let fill = body::takes_model(incoming.dialect, &incoming.method, incoming.path.decoded())
        .then(|| resolved.credential.model.as_deref().or(resolved.provider.default_model.as_deref()))
        .flatten();
    let mut peek = body::Peek::of(&buffered.bytes);
    if let Some(model) = fill.filter(|_| peek.model.is_none()) {
        buffered.bytes = body::with_model(std::mem::take(&mut buffered.bytes), model);
        peek = body::Peek::of(&buffered.bytes);
    }
    let size = peek.size(&buffered.bytes, incoming.path.decoded());
    let model = incoming.model(peek.model.as_deref());
    let (stream, include_usage) = (peek.stream == Some(true), peek.include_usage());
    let admitted = state.services.admit(resolved, size).await?;
    let output_cap = admitted.output_cap;

    // From here on the call settles exactly once, even if the caller goes away mid-way.
    let mut finish = Finish::new(state.services.clone(), admitted, model, buffered.bytes.len(), started);
    let mut body = buffered.bytes.clone();
    if let Some(cap) = output_cap {
        let (capped, ok) = body::cap_output(body, incoming.dialect, &incoming.provider, incoming.path.decoded(), cap);
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "the demo allowance (or the session's token cap) can only serve this call with its output maximum \
                 lowered, and its body is not a JSON object keygate can set it in",
            ));
        }
        body = capped;
    }
    // Ask OpenAI-style streams for their usage; hide that extra chunk from a caller who
    // did not ask.
    let strip_usage_chunk = if incoming.dialect == Dialect::OpenAi && stream && !include_usage {
        let (asked, ok) = body::ask_for_usage(body);
        body = asked;
        ok
    } else {
        false
    };
    let sent_at = Instant::now();
    finish.sending();
    let sent = match upstream::send(state, &finish.call, &incoming, body, started).await {
        Ok(sent) => sent,
        Err(e) => {
            state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), 0);
            finish.settle(keygate_core::usage::Tokens::default());
            return Err(e);
        }
    };
    drop(buffered); // the body is on its way: its share of the memory budget goes back
    state.metrics.upstream_latency(&finish.call.provider.id, sent_at.elapsed());
    let mut reply = relay::answer(state, finish, sent, incoming.dialect, strip_usage_chunk).await?;
    if let Some(cap) = output_cap {
        let (name, value) = body::cap_header(cap);
        reply.headers_mut().insert(name, value);
    }
    if let Some(value) = guarded.header().and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
        reply.headers_mut().insert(keygate_service::guard::HEADER, value);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::{provider_segment, routes_here, segments};

    /// Which paths go straight to the proxy (that each is one the router's proxy route
    /// takes too is tested against the real router in the API tests, `connections.rs`).
    #[test]
    fn the_direct_path_takes_a_provider_and_a_path_after_it() {
        for path in ["/proxy/openai/v1/chat/completions", "/proxy/open%61i/x", "/proxy/openai//v1", "/proxy/a/b/c/d/e"]
        {
            assert!(routes_here(path), "{path}");
        }
        for path in
            ["/proxy/openai/", "/proxy/openai", "/proxy//v1", "/proxy/", "/proxyx/openai/v1", "/v1/chat/completions"]
        {
            assert!(!routes_here(path), "{path}");
        }
        assert_eq!(segments("/proxy/openai/v1/models"), Some(("openai", "v1/models")));
        assert_eq!(segments("/proxy/openai"), Some(("openai", "")));
        assert_eq!(segments("/v1/models"), None);
    }

    #[test]
    fn the_provider_is_the_first_segment_decoded() {
        assert_eq!(provider_segment("/proxy/openai/v1/chat/completions").as_deref(), Some("openai"));
        assert_eq!(provider_segment("/proxy/open%61i/v1/models").as_deref(), Some("openai"));
        assert_eq!(provider_segment("/proxy/anthropic").as_deref(), Some("anthropic"));
        // An escape that is not one stays as written (no provider has such a name).
        assert_eq!(provider_segment("/proxy/open%zzai/v1").as_deref(), Some("open%zzai"));
        assert_eq!(provider_segment("/proxy/%FF%FE/v1"), None);
        assert_eq!(provider_segment("/elsewhere/openai/v1"), None);
    }
}
