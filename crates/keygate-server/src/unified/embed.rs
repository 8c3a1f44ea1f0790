//! `POST /v1/embeddings` answered by Gemini's `batchEmbedContents`, translated back
//! ([`keygate_core::translate::gemini_embed`]). Gemini reports no token counts, so the
//! call is metered with keygate's estimate from the text embedded, marked estimated (as
//! passthrough meters a stream cut before its usage), and the answer's `usage` says the
//! same count.

use super::chat::{failed, read_whole};
use crate::proxy::relay;
use crate::proxy::settle::Finish;
use crate::proxy::upstream::Sent;
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use keygate_core::translate::gemini_embed::{self, Embed};
use keygate_core::usage::{Dialect, Tokens};
use serde_json::Value;

pub(super) async fn translated(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    model: &str,
    embed: &Embed,
) -> Result<Response, ApiError> {
    let Sent { response, echo, .. } = sent;
    let status = response.status();
    state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::new();
    relay::annotate(&mut headers, &finish.call);
    finish.status = Some(status);
    if !status.is_success() {
        return Ok(failed(state, finish, response, echo, headers, Dialect::Gemini).await);
    }
    let answer = read_whole(response, &mut finish, echo.as_deref()).await?;
    let mut tokens = Tokens::default();
    tokens.estimate_unreported(embed.text_bytes, 0);
    finish.settle(tokens);
    let invalid = |detail: String| ApiError::new(StatusCode::BAD_GATEWAY, "upstream_invalid", detail);
    let answer: Value =
        serde_json::from_slice(&answer).map_err(|_| invalid("the provider's answer was not JSON".to_owned()))?;
    let reply = gemini_embed::response(&answer, model, embed, tokens.input).map_err(|e| invalid(e.0))?;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut reply = Response::new(Body::from(reply.to_string()));
    *reply.headers_mut() = headers;
    Ok(reply)
}
