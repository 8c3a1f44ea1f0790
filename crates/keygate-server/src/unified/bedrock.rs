//! AWS Bedrock behind `/v1/chat/completions`: the request goes to Converse
//! (`model/{id}/converse`) or ConverseStream (`converse-stream`), signed by the
//! passthrough's `upstream::send` (SigV4 over the bytes sent, the model id's `:` as
//! `%3A`); the answer comes back translated ([`keygate_core::translate::bedrock`]):
//! an AWS error in OpenAI's shape, an event stream through the passthrough's [`Framed`]
//! (usage metered from `metadata`, each message scrubbed) and then [`Frames`], or a whole
//! Converse answer, metered from its `usage` as passthrough meters it.

use super::chat::{read_whole, scrubbed, seconds_only, unix_now};
use super::stream::{Frames, Scrubbed};
use crate::proxy::eventstream::Framed;
use crate::proxy::relay;
use crate::proxy::settle::Finish;
use crate::proxy::upstream::Sent;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::translate::bedrock;
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_vault::redact::scrub;
use serde_json::Value;

pub(super) async fn translated(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    stream: bool,
    include_usage: bool,
    model: &str,
) -> Result<Response, ApiError> {
    let Sent { response, echo, .. } = sent;
    let outgoing = echo.clone();
    let status = response.status();
    state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::new();
    relay::annotate(&mut headers, &finish.call);
    finish.status = Some(status);
    let header_text = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Header values an upstream could fill with anything (an echo of the key) are taken
    // only in the shape AWS gives them.
    let request_id = header_text("x-amzn-requestid")
        .filter(|id| (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));

    if !status.is_success() {
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        let error_type: Option<String> = header_text("x-amzn-errortype").map(|t| {
            t.split(':').next().unwrap_or_default().chars().filter(char::is_ascii_alphanumeric).take(64).collect()
        });
        let bytes = relay::read_limited(response, relay::MAX_ERROR_BODY, echo.as_ref()).await;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // keygate's own probe decides whether the key is bad (AccessDeniedException,
            // a model the key may not call, leaves it in use).
            state.services.mark_rejected(&finish.call, status.as_u16()).await;
        }
        finish.settle(Tokens::default());
        let text = scrub(&bedrock::error(status.as_u16(), error_type.as_deref(), &bytes).to_string()).into_owned();
        let text = scrubbed(echo.as_deref(), text);
        let mut reply = (status, text).into_response();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(v) = retry_after.and_then(seconds_only) {
            headers.insert(header::RETRY_AFTER, v);
        }
        *reply.headers_mut() = headers;
        return Ok(reply);
    }

    let event_stream = header_text(header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"));
    let body = if stream && event_stream {
        let framed = Framed::new(response.bytes_stream(), echo, finish);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let state = bedrock::Stream::new(model, request_id.as_deref(), unix_now(), include_usage);
        Body::from_stream(Scrubbed::new(Frames::new(framed, state), outgoing))
    } else if stream {
        finish.settle(Tokens::default());
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_invalid",
            "Bedrock answered a ConverseStream call without an event stream",
        ));
    } else {
        let answer = read_whole(response, &mut finish, echo.as_deref()).await?;
        let mut tokens = Tokens::default();
        if let Some(report) = Report::parse(&answer) {
            tokens.observe(Dialect::Bedrock, &report);
        }
        finish.settle(tokens);
        let answer: Value = serde_json::from_slice(&answer)
            .map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "upstream_invalid", "Bedrock's answer was not JSON"))?;
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Body::from(scrubbed(
            outgoing.as_deref(),
            bedrock::response(&answer, model, request_id.as_deref(), unix_now()).to_string(),
        ))
    };
    let mut reply = Response::new(body);
    *reply.headers_mut() = headers;
    Ok(reply)
}
