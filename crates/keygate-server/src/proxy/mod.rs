//! `ANY /proxy/{provider}/{*path}`: native passthrough. The caller authenticates with a
//! keygate token (as `Authorization: Bearer` or `x-api-key`, the way the OpenAI and
//! Anthropic SDKs send their key) or a host JWT; keygate resolves and admits the call,
//! strips the caller's credential, injects the provider's, forwards method, path, query
//! and body, and relays the answer, reading usage from it on the way.
//!
//! One call reads top to bottom through four stages, entering the service twice (admit,
//! finish):
//!
//! 1. [`request`]: authenticate, parse, read and peek the body;
//! 2. admit: [`Services::admit`](keygate_service::Services::admit) decides who pays and
//!    whether limits allow it;
//! 3. [`upstream`]: build the outbound request, inject the credential, send;
//! 4. [`relay`]: relay the answer, buffered or streamed ([`sse`]); [`settle`]'s guard
//!    calls `Services::finish` exactly once.

mod relay;
mod request;
mod settle;
mod sse;
mod upstream;

use crate::{ApiError, AppState};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_core::usage::Dialect;
use settle::Finish;
use std::time::Instant;

pub(crate) async fn proxy(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    let Ok(Path((provider, path))) = path else {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the request path is not valid UTF-8")
            .into_response();
    };
    call(&state, provider, path, request).await.unwrap_or_else(IntoResponse::into_response)
}

#[tracing::instrument(skip_all, fields(provider = %provider))]
async fn call(state: &AppState, provider: String, path: String, request: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    let incoming = request::read(state, provider, path, request).await?;
    let admitted = state.services.admit(incoming.call_request()).await?;

    // Ask OpenAI-style streams for their usage; hide that extra chunk from a caller who
    // did not ask. Only then is the body parsed whole and rewritten.
    let wants_usage_chunk = incoming.dialect == Dialect::OpenAi && incoming.stream && !incoming.include_usage;
    let (body, strip_usage_chunk) =
        if wants_usage_chunk { upstream::ask_for_usage(incoming.body.clone()) } else { (incoming.body.clone(), false) };

    // From here on the call settles exactly once, even if the caller goes away mid-way.
    let mut finish =
        Finish::new(state.services.clone(), admitted, incoming.model.clone(), incoming.body.len(), started);
    let sent_at = Instant::now();
    let sent = match upstream::send(state, &finish.call, &incoming, body, started).await {
        Ok(sent) => sent,
        Err(e) => {
            state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), 0);
            finish.settle(keygate_core::usage::Tokens::default());
            return Err(e);
        }
    };
    state.metrics.upstream_latency(&finish.call.provider.id, sent_at.elapsed());
    relay::answer(state, finish, sent, incoming.dialect, strip_usage_chunk).await
}
