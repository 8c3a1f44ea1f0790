//! Stage 3 of a proxied call: the outbound request. Copies the caller's method, path,
//! query, headers (less their credentials, hop-by-hop headers and keygate's own) and
//! body, injects the provider's credential the way the catalog says (a header, a query
//! parameter, or an OAuth2 access token obtained with it), and sends it on the
//! provider's pooled client.
//!
//! The only place a plaintext key is handled on the proxy path: it is opened here, and
//! the value that went on the wire is handed back (zeroizing) only so the relayed answer
//! can be scrubbed of it.

use super::request::Incoming;
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use keygate_core::catalog::Injection;
use keygate_service::gateway::Admitted;
use keygate_service::ServiceError;
use keygate_vault::SecretText;
use serde_json::Value;
use std::time::Instant;

/// Request headers never forwarded: hop-by-hop, the caller's credentials, keygate's own.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "accept-encoding",
    "cookie",
];

/// What came back, with the value that went on the wire.
pub(super) struct Sent {
    pub response: reqwest::Response,
    pub injected: SecretText,
}

/// Builds and sends the upstream request for an admitted call.
pub(super) async fn send(
    state: &AppState,
    call: &Admitted,
    incoming: &Incoming,
    body: Bytes,
    started: Instant,
) -> Result<Sent, ApiError> {
    let services = &state.services;
    let provider = &call.provider;
    let secret = services.open_for_call(call).await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "credential_undecryptable",
            "the stored key cannot be decrypted: add it again",
        )
    })?;
    let mut pairs: Vec<(String, String)> = incoming
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or_else(|| (p.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let mut headers = forwarded_headers(&incoming.headers);
    for (name, value) in &provider.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.entry(name).or_insert(value);
        }
    }
    let injected = match &provider.inject {
        Injection::Bearer => {
            headers.insert(header::AUTHORIZATION, sensitive(&format!("Bearer {}", secret.expose())));
            secret
        }
        Injection::Header { name } => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad_gateway("the catalog's header name is invalid".into()))?;
            headers.insert(name, sensitive(secret.expose()));
            secret
        }
        Injection::Query { name } => {
            pairs.retain(|(k, _)| k != name);
            pairs.push((name.clone(), percent_encode(secret.expose())));
            secret
        }
        Injection::Oauth2 { token_path } => {
            let token = services.oauth_token(call, token_path, &secret).await.map_err(|e| match e {
                ServiceError::UpstreamAuthFailed(detail) => {
                    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_auth_failed", detail)
                }
                other => ApiError::from(other),
            })?;
            headers.insert(header::AUTHORIZATION, sensitive(&format!("Bearer {}", token.expose())));
            token
        }
        // Refused by the gateway before admission; kept exhaustive on purpose.
        Injection::Sigv4 { .. } => return Err(bad_gateway("SigV4 signing is not supported yet".into())),
    };
    let query: Vec<String> =
        pairs.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
    let upstreams = services.upstreams();
    let url = upstreams.url(provider, &incoming.path, &query.join("&"))?;
    let method = reqwest::Method::from_bytes(incoming.method.as_str().as_bytes())
        .map_err(|_| ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "unsupported method"))?;
    let request = upstreams.client(provider)?.request(method, url).headers(headers).body(body);
    state.metrics.overhead(started.elapsed());
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("{} did not answer in time", provider.name),
            )
        } else {
            bad_gateway(format!(
                "{} could not be reached: {}",
                provider.name,
                if e.is_connect() { "connection failed" } else { "the request failed" }
            ))
        }
    })?;
    Ok(Sent { response, injected })
}

/// The caller's headers that go on to the provider.
fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(incoming.len() + 2);
    for (name, value) in incoming {
        let lower = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&lower) || lower.starts_with("x-keygate-") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

fn bad_gateway(detail: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", detail)
}

fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

pub(super) fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body with `stream_options.include_usage` set (so an OpenAI stream reports its
/// usage); whether it could be set.
pub(super) fn ask_for_usage(body: Bytes) -> (Bytes, bool) {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else { return (body, false) };
    let Some(obj) = v.as_object_mut() else { return (body, false) };
    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
    let Some(options) = options.as_object_mut() else { return (body, false) };
    options.insert("include_usage".into(), Value::Bool(true));
    match serde_json::to_vec(&v) {
        Ok(bytes) => (Bytes::from(bytes), true),
        Err(_) => (body, false),
    }
}
