//! Stage 4 of a proxied call: the answer goes back. A provider error is relayed (SDKs
//! parse it) scrubbed of the key that was sent and of anything key-shaped; a stream is
//! passed through event by event ([`Metered`]); anything else is read whole, metered and
//! relayed with a Content-Length. The call settles exactly once through its [`Finish`].

use super::settle::Finish;
use super::sse::Metered;
use super::upstream::{percent_encode, Sent};
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_service::gateway::{Admission, Admitted};
use keygate_vault::redact::scrub;
use keygate_vault::SecretText;

/// Largest non-streamed response keygate reads usage from (larger ones pass unmetered).
const MAX_METERED_BODY: usize = 8 << 20;
/// Largest upstream error body relayed.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Response headers never relayed.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "set-cookie",
    "trailer",
    "upgrade",
];

/// Relays the provider's answer to an admitted call.
pub(super) async fn answer(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    dialect: Dialect,
    strip_usage_chunk: bool,
) -> Result<Response, ApiError> {
    let Sent { response, injected } = sent;
    let status = response.status();
    let call = &finish.call;
    state.metrics.request(&call.provider.id, call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::with_capacity(response.headers().len() + 3);
    for (name, value) in response.headers() {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    annotate(&mut headers, call);
    finish.status = Some(status);

    if !status.is_success() {
        let bytes = read_limited(response, MAX_ERROR_BODY).await;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            state.services.forget_oauth_token(&finish.call);
            state.services.mark_rejected(&finish.call, status.as_u16()).await;
        }
        finish.settle(Tokens::default());
        let text = scrub_relayed(&String::from_utf8_lossy(&bytes), &injected);
        drop(injected);
        let mut reply = (status, text).into_response();
        *reply.headers_mut() = headers;
        return Ok(reply);
    }

    drop(injected);
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = if sse {
        Body::from_stream(Metered::new(Box::pin(response.bytes_stream()), dialect, strip_usage_chunk, finish))
    } else {
        buffered(response, dialect, finish).await?
    };
    let mut reply = Response::new(body);
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    Ok(reply)
}

/// A non-streamed answer: read whole, metered, and relayed with a Content-Length in one
/// piece. One larger than [`MAX_METERED_BODY`] is settled without token counts (so the
/// demo allowance charges its reservation) and streams through as it comes.
async fn buffered(response: reqwest::Response, dialect: Dialect, mut finish: Finish) -> Result<Body, ApiError> {
    let mut stream = response.bytes_stream();
    let mut parts: Vec<Bytes> = Vec::with_capacity(1);
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::warn!(error = %scrub(&e.to_string()), "the provider's answer broke off");
            finish.settle(Tokens::default());
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the provider's answer broke off before it was complete",
            )
        })?;
        len += chunk.len();
        parts.push(chunk);
        if len > MAX_METERED_BODY {
            finish.settle(Tokens::default());
            let head = futures_util::stream::iter(parts.into_iter().map(Ok::<_, reqwest::Error>));
            return Ok(Body::from_stream(head.chain(stream)));
        }
    }
    let body = match parts.len() {
        1 => parts.pop().unwrap_or_default(),
        _ => Bytes::from(parts.concat()),
    };
    let mut tokens = Tokens::default();
    if dialect != Dialect::Other {
        if let Some(report) = Report::parse(&body) {
            tokens.observe(dialect, &report);
            if finish.model.is_none() {
                finish.model = report.model();
            }
        }
    }
    finish.settle(tokens);
    Ok(Body::from(body))
}

/// A provider's error body, without the key that was sent (as given or percent-encoded)
/// and without anything else key-shaped.
fn scrub_relayed(body: &str, injected: &SecretText) -> String {
    let mut text = body.to_owned();
    let secret = injected.expose();
    if secret.len() >= 8 {
        for form in [secret.to_owned(), percent_encode(secret)] {
            text = text.replace(&form, keygate_vault::redact::REDACTED);
        }
    }
    scrub(&text).into_owned()
}

/// `x-keygate-*` headers: which source and credential served the call, and what is left.
fn annotate(headers: &mut HeaderMap, call: &Admitted) {
    headers.insert("x-keygate-key-source", HeaderValue::from_static(call.source.as_str()));
    if let Ok(v) = HeaderValue::from_str(&call.credential.id.to_string()) {
        headers.insert("x-keygate-credential-id", v);
    }
    match call.admission {
        Admission::Demo(r) => {
            headers.insert("x-keygate-demo-remaining-tokens", HeaderValue::from(r.remaining));
        }
        Admission::Platform(a) => {
            headers.insert("x-keygate-ratelimit-remaining-minute", HeaderValue::from(a.remaining_minute));
            headers.insert("x-keygate-ratelimit-remaining-day", HeaderValue::from(a.remaining_day));
        }
        Admission::Unmetered => {}
    }
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}
