//! Stage 4 of a proxied call: the answer goes back. A provider error is relayed (SDKs
//! parse it) scrubbed of the key that was sent and of anything key-shaped; a stream is
//! passed through event by event ([`Metered`]), a Bedrock event stream message by message
//! ([`Framed`]); anything else is read whole, metered and
//! relayed with a Content-Length. The call settles exactly once through its [`Finish`].

use super::eventstream::Framed;
use super::settle::Finish;
use super::sse::Metered;
use super::upstream::Sent;
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_service::gateway::{Admission, Admitted};
use keygate_vault::echo::EchoScrubber;
use keygate_vault::redact::scrub;
use std::sync::Arc;

/// Largest non-streamed response keygate reads usage from (larger ones pass unmetered).
pub(crate) const MAX_METERED_BODY: usize = 8 << 20;
/// Largest upstream error body relayed.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

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
pub(crate) async fn answer(
    state: &AppState,
    mut finish: Finish,
    sent: Sent,
    dialect: Dialect,
    strip_usage_chunk: bool,
) -> Result<Response, ApiError> {
    let Sent { response, echo, head } = sent;
    let status = response.status();
    // An interim or protocol-switching answer (1xx, 101) is not an answer to relay: the
    // connection would be handed over to the provider.
    if status.is_informational() {
        finish.status = Some(StatusCode::BAD_GATEWAY);
        finish.settle(Tokens::default());
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!("{} answered {} instead of a response", finish.call.provider.name, status.as_u16()),
        ));
    }
    let call = &finish.call;
    state.metrics.request(&call.provider.id, call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::with_capacity(response.headers().len() + 3);
    for (name, value) in response.headers() {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        match &echo {
            // A header whose name carries the key leaves without it: not at all.
            Some(echo) if echo.found_in(name.as_str().as_bytes()) => {}
            Some(echo) if echo.found_in(value.as_bytes()) => {
                let scrubbed = echo.scrub(value.as_bytes());
                headers
                    .append(name.clone(), HeaderValue::from_bytes(&scrubbed).unwrap_or(HeaderValue::from_static("")));
            }
            _ => {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    annotate(&mut headers, call);
    finish.status = Some(status);

    if !status.is_success() {
        // Scrubbed before the cut, so no part of a key straddling it leaves.
        let bytes = read_limited(response, MAX_ERROR_BODY, echo.as_ref()).await;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            state.services.forget_oauth_token(&finish.call);
            state.services.mark_rejected(&finish.call, status.as_u16()).await;
        }
        finish.settle(Tokens::default());
        let text = scrub(&String::from_utf8_lossy(&bytes)).into_owned();
        let mut reply = (status, text).into_response();
        *reply.headers_mut() = headers;
        return Ok(reply);
    }

    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let event_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/vnd.amazon.eventstream"));
    // git's smart HTTP (`application/x-git-upload-pack-result`, …): packs of any size,
    // relayed as they come; no tokens to read, so the call settles as it starts.
    let git = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-git-"));
    let body = if git {
        finish.settle(Tokens::default());
        Body::from_stream(scrubbed(Box::pin(response.bytes_stream()), echo))
    } else if sse {
        // Scrubbed event by event: Metered relays only whole events, and no form of a
        // key spans the blank line that ends one, so a split echo is whole by then.
        Body::from_stream(Metered::new(response.bytes_stream(), dialect, strip_usage_chunk, echo, finish))
    } else if event_stream {
        Body::from_stream(Framed::new(response.bytes_stream(), echo, finish))
    } else {
        // An answer to HEAD has no body to scrub or meter: the length a GET's answer would
        // have is relayed when the provider announces one number (never a value as sent).
        // Error answers (cut and scrubbed when relayed) and streams (sent chunked) carry
        // none, nor does a 204.
        if head && status != StatusCode::NO_CONTENT {
            if let Some(length) = announced_length(response.headers()) {
                headers.insert(header::CONTENT_LENGTH, length);
            }
        }
        buffered(response, dialect, finish, echo).await?
    };
    let mut reply = Response::new(body);
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    Ok(reply)
}

/// The length an answer announces, when every `Content-Length` it carries is the same
/// decimal number.
fn announced_length(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values =
        headers.get_all(header::CONTENT_LENGTH).iter().map(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let first = values.next()??;
    values.all(|v| v == Some(first)).then(|| HeaderValue::from(first))
}

/// A non-streamed answer: read whole, metered, and relayed with a Content-Length in one
/// piece. One larger than [`MAX_METERED_BODY`] is settled without token counts (so the
/// demo allowance charges its reservation) and streams through as it comes.
async fn buffered(
    response: crate::proxy::client::Upstream,
    dialect: Dialect,
    mut finish: Finish,
    echo: Option<Arc<EchoScrubber>>,
) -> Result<Body, ApiError> {
    let bedrock_counts = bedrock_header_counts(response.headers());
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
            let head = futures_util::stream::iter(parts.into_iter().map(Ok::<_, crate::proxy::client::BodyError>));
            return Ok(Body::from_stream(scrubbed(Box::pin(head.chain(stream)), echo)));
        }
    }
    let body = match parts.len() {
        1 => parts.pop().unwrap_or_default(),
        _ => Bytes::from(parts.concat()),
    };
    let body = match &echo {
        Some(echo) if echo.found_in(&body) => Bytes::from(echo.scrub(&body)),
        _ => body,
    };
    let mut tokens = bedrock_counts;
    if dialect != Dialect::Other && !tokens.reported {
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

/// Bedrock's InvokeModel answers carry their counts in headers (the body is the model's
/// own JSON, whatever its shape).
fn bedrock_header_counts(headers: &HeaderMap) -> Tokens {
    // Names made once (a `&str` name is parsed on every lookup).
    const INPUT: HeaderName = HeaderName::from_static("x-amzn-bedrock-input-token-count");
    const OUTPUT: HeaderName = HeaderName::from_static("x-amzn-bedrock-output-token-count");
    let count =
        |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    match (count(&INPUT), count(&OUTPUT)) {
        (Some(input), Some(output)) => Tokens { input, output, reported: true, final_report: true, estimated: false },
        _ => Tokens::default(),
    }
}

/// A relayed byte stream, scrubbed of every form of the call's secrets across chunk
/// boundaries (a window of the longest form is held back until the next chunk).
fn scrubbed<S>(
    inner: S,
    echo: Option<Arc<EchoScrubber>>,
) -> impl futures_util::Stream<Item = Result<Bytes, crate::proxy::client::BodyError>> + Send
where
    S: futures_util::Stream<Item = Result<Bytes, crate::proxy::client::BodyError>> + Send + Unpin,
{
    let scrub = echo.map(|e| e.stream());
    futures_util::stream::unfold((inner, scrub, false), |(mut inner, mut scrub, done)| async move {
        if done {
            return None;
        }
        let Some(scrub_state) = scrub.as_mut() else {
            let next = inner.next().await?;
            return Some((next, (inner, scrub, false)));
        };
        loop {
            match inner.next().await {
                Some(Ok(chunk)) => {
                    let out = scrub_state.push(&chunk);
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), (inner, scrub, false)));
                    }
                }
                Some(Err(e)) => {
                    scrub_state.discard();
                    return Some((Err(e), (inner, scrub, true)));
                }
                None => {
                    let rest = scrub_state.finish();
                    return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), (inner, scrub, true)));
                }
            }
        }
    })
}

/// `x-keygate-*` headers: which source and credential served the call, and what is left.
/// (Names built once: a custom name given as text is copied into every map it enters.)
pub(crate) fn annotate(headers: &mut HeaderMap, call: &Admitted) {
    const KEY_SOURCE: HeaderName = HeaderName::from_static("x-keygate-key-source");
    const CREDENTIAL_ID: HeaderName = HeaderName::from_static("x-keygate-credential-id");
    const DEMO_REMAINING: HeaderName = HeaderName::from_static("x-keygate-demo-remaining-tokens");
    const MINUTE_REMAINING: HeaderName = HeaderName::from_static("x-keygate-ratelimit-remaining-minute");
    const DAY_REMAINING: HeaderName = HeaderName::from_static("x-keygate-ratelimit-remaining-day");
    headers.insert(KEY_SOURCE, HeaderValue::from_static(call.source.as_str()));
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    if let Ok(v) = HeaderValue::from_str(call.credential.id.as_uuid().hyphenated().encode_lower(&mut id)) {
        headers.insert(CREDENTIAL_ID, v);
    }
    match call.admission {
        Admission::Demo(r) => {
            headers.insert(DEMO_REMAINING, HeaderValue::from(r.remaining));
        }
        Admission::Platform(a) => {
            headers.insert(MINUTE_REMAINING, HeaderValue::from(a.remaining_minute));
            headers.insert(DAY_REMAINING, HeaderValue::from(a.remaining_day));
        }
        Admission::Unmetered => {}
    }
}

/// Up to `limit` bytes of an answer, scrubbed before the cut.
pub(crate) async fn read_limited(
    response: crate::proxy::client::Upstream,
    limit: usize,
    echo: Option<&Arc<EchoScrubber>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut scrub = echo.map(|e| e.stream());
    let mut stream = response.bytes_stream();
    let mut complete = true;
    while let Some(Ok(chunk)) = stream.next().await {
        let chunk = match scrub.as_mut() {
            Some(s) => s.push(&chunk),
            None => chunk.to_vec(),
        };
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            complete = false;
            break;
        }
    }
    if let Some(s) = scrub.as_mut() {
        if complete {
            let rest = s.finish();
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(&rest[..rest.len().min(room)]);
        } else {
            s.discard();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_decimal_length_is_announced() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            announced_length(&headers).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(of(&["179"]), Some("179".to_owned()));
        assert_eq!(of(&["0"]), Some("0".to_owned()));
        assert_eq!(of(&["179", "179"]), Some("179".to_owned()));
        assert_eq!(of(&[]), None);
        for refused in [&["abc"][..], &["-1"], &["5, 5"], &["5", "6"], &["18446744073709551616"], &["0x10"]] {
            assert_eq!(of(refused), None, "{refused:?}");
        }
    }
}
