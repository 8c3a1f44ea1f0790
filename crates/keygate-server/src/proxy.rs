//! `ANY /proxy/{provider}/{*path}`: native passthrough. The caller authenticates with a
//! keygate token (as `Authorization: Bearer` or `x-api-key`, the way the OpenAI and
//! Anthropic SDKs send their key) or a host JWT; keygate resolves and admits the call,
//! strips the caller's credential, injects the provider's, forwards method, path, query
//! and body, and relays the answer: a stream event by event, anything else whole, reading
//! usage from it on the way.
//!
//! The plaintext credential is opened inside [`forward`]; the value that went on the wire
//! is kept (zeroizing) only until the upstream status is known, to scrub a relayed error.

use crate::extract::{presented_credential, source_addr};
use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use keygate_core::catalog::{Injection, Provider};
use keygate_core::resolution::PaymentPolicy;
use keygate_core::usage::{self, Dialect, Report, Tokens};
use keygate_service::auth::SCOPE_PROXY;
use keygate_service::gateway::{Admission, Admitted, CallOutcome};
use keygate_service::Services;
use keygate_vault::redact::scrub;
use keygate_vault::SecretText;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Largest request body keygate forwards.
const MAX_REQUEST: usize = 32 << 20;
/// Largest non-streamed response keygate reads usage from (larger ones pass unmetered).
const MAX_METERED_BODY: usize = 8 << 20;
/// Largest upstream error body relayed.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Output tokens assumed for a demo call that names no `max_tokens`.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;
const MAX_OUTPUT_ESTIMATE: u64 = 32_768;

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

type OauthKey = (keygate_core::CredentialId, chrono::DateTime<chrono::Utc>);

/// One pooled HTTP client per provider, and OAuth2 access tokens cached until expiry.
#[derive(Debug)]
pub struct Upstreams {
    /// Per provider: its client, and its base URL parsed once (not on every call).
    clients: HashMap<String, (reqwest::Client, Option<reqwest::Url>)>,
    fallback: reqwest::Client,
    /// Keyed by the credential and its last change: a replaced secret never reuses the
    /// token its predecessor obtained. The only plaintext-derived value keygate caches.
    oauth: Mutex<HashMap<OauthKey, (SecretText, Instant)>>,
}

impl Upstreams {
    pub fn new(services: &Services) -> Self {
        let build = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(services.options.upstream_timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                // Redirects are relayed to the caller, never followed with the injected key.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default()
        };
        let clients = services
            .catalog
            .all()
            .iter()
            .map(|p| (p.id.clone(), (build(), reqwest::Url::parse(&p.base_url).ok())))
            .collect();
        Self { clients, fallback: build(), oauth: Mutex::new(HashMap::new()) }
    }

    fn client(&self, provider: &str) -> &reqwest::Client {
        self.clients.get(provider).map_or(&self.fallback, |(client, _)| client)
    }

    /// The provider's URL for `path` and `query` (already encoded): the base URL parsed
    /// at start (the catalog never changes while keygate runs) with the path and query set.
    fn url(&self, provider: &Provider, path: &str, query: &str) -> Result<reqwest::Url, String> {
        let path = path.trim_start_matches('/');
        let mut url = match self.clients.get(&provider.id) {
            Some((_, Some(base))) => {
                let mut url = base.clone();
                let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
                url.set_path(&joined);
                url
            }
            _ => reqwest::Url::parse(&format!("{}/{path}", provider.base_url))
                .map_err(|e| format!("{}'s URL for this path is invalid: {e}", provider.name))?,
        };
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        Ok(url)
    }
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    ApiError::new(status, code, detail).into_response()
}

pub(crate) async fn proxy(
    state: State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Response {
    match path {
        Ok(Path((provider, path))) => relay(state, provider, path, request).await,
        Err(_) => problem(StatusCode::BAD_REQUEST, "invalid_request", "the request path is not valid UTF-8"),
    }
}

#[allow(clippy::too_many_lines)]
#[tracing::instrument(skip_all, fields(provider = %provider))]
async fn relay(State(state): State<AppState>, provider: String, path: String, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let Some(credential) = presented_credential(&parts) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a keygate token as the provider SDK's API key",
        );
    };
    let services = state.services.clone();
    let principal = match services.authenticate(credential, source_addr(&parts)).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = principal.require_scope(SCOPE_PROXY) {
        return ApiError::from(e).into_response();
    }
    let policy = match parts.headers.get("x-keygate-policy").map(|v| v.to_str().map(PaymentPolicy::parse)) {
        None => PaymentPolicy::Any,
        Some(Ok(Some(p))) => p,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "x-keygate-policy must be customer-only, operator-only or any",
            )
        }
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST).await else {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than 32 MiB");
    };
    // Refused before admission: a call that cannot go out must not reserve or start anything.
    if services.catalog.get(&provider).is_some_and(|p| matches!(p.inject, Injection::Sigv4 { .. })) {
        return problem(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "AWS Bedrock calls are not proxied yet (SigV4 signing)",
        );
    }
    let dialect = Dialect::of(&provider);
    let peek = Peek::of(&body);
    let estimate = estimate_tokens(body.len(), peek.max_output_tokens());
    let call = match services.admit(&principal, &provider, policy, estimate).await {
        Ok(call) => call,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Ask OpenAI-style streams for their usage; hide that extra chunk from a caller who did
    // not ask. Only then is the body parsed whole and rewritten.
    let strip_usage_chunk = dialect == Dialect::OpenAi
        && peek.stream == Some(true)
        && peek.stream_options.as_ref().and_then(|o| o.include_usage) != Some(true);
    let model = peek.model.as_deref().map(str::to_owned).or_else(|| gemini_model(&path));
    let (body, strip_usage_chunk) = if strip_usage_chunk { ask_for_usage(body) } else { (body, false) };

    // From here on the call settles exactly once, even if the caller goes away mid-way.
    let mut finish = Finish { services: services.clone(), call, status: 0, model, started, settled: false };
    let call = &finish.call;
    let sent = Instant::now();
    let result = forward(&state, call, &parts.method, &path, parts.uri.query(), &parts.headers, body, started).await;
    let metrics = &state.metrics;
    let (response, injected) = match result {
        Ok(r) => r,
        Err((status, code, detail)) => {
            metrics.request(&call.provider.id, call.source.as_str(), 0);
            finish.settle(Tokens::default());
            return problem(status, code, detail);
        }
    };
    let status = response.status();
    metrics.upstream_latency(&call.provider.id, sent.elapsed());
    metrics.request(&call.provider.id, call.source.as_str(), status.as_u16());
    let mut headers = HeaderMap::with_capacity(response.headers().len() + 3);
    for (name, value) in response.headers() {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    annotate(&mut headers, call);
    finish.status = status.as_u16();

    if !status.is_success() {
        // Relay the provider's own error (SDKs parse it), scrubbed of anything key-shaped.
        let bytes = read_limited(response, MAX_ERROR_BODY).await;
        if matches!(status.as_u16(), 401 | 403) {
            // A refused OAuth2 access token is not reused; the next call exchanges afresh.
            if let Ok(mut cache) = state.upstreams.oauth.lock() {
                cache.remove(&(call.credential.id, call.credential.updated_at));
            }
            services.mark_rejected(call, status.as_u16()).await;
        }
        finish.settle(Tokens::default());
        let text = scrub_relayed(&String::from_utf8_lossy(&bytes), &injected);
        drop(injected);
        let mut reply = (status, text).into_response();
        *reply.headers_mut() = headers;
        return reply;
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
        match buffered(response, dialect, finish).await {
            Ok(body) => body,
            Err(reply) => return reply,
        }
    };
    let mut reply = Response::new(body);
    *reply.status_mut() = status;
    *reply.headers_mut() = headers;
    reply
}

/// A non-streamed answer: read whole, metered, and relayed with a Content-Length in one
/// piece. One larger than [`MAX_METERED_BODY`] is settled without token counts and
/// streams through as it comes.
async fn buffered(response: reqwest::Response, dialect: Dialect, mut finish: Finish) -> Result<Body, Response> {
    use futures_util::StreamExt;
    let mut stream = response.bytes_stream();
    let mut parts: Vec<Bytes> = Vec::with_capacity(1);
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %scrub(&e.to_string()), "the provider's answer broke off");
                finish.settle(Tokens::default());
                return Err(problem(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the provider's answer broke off before it was complete",
                ));
            }
        };
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
    if dialect == Dialect::Other {
        // Not an AI API: nothing to read from the answer.
    } else if let Some(report) = Report::parse(&body) {
        tokens.observe(dialect, &report);
        if finish.model.is_none() {
            finish.model = report.model();
        }
    }
    finish.settle(tokens);
    Ok(Body::from(body))
}

/// Builds and sends the upstream request: the only place a plaintext key is handled.
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &AppState,
    call: &Admitted,
    method: &axum::http::Method,
    path: &str,
    query: Option<&str>,
    incoming: &HeaderMap,
    body: Bytes,
    started: Instant,
) -> Result<(reqwest::Response, SecretText), (StatusCode, &'static str, String)> {
    let services = &state.services;
    let provider = &call.provider;
    let secret = services.vault.open_credential(&call.credential).await.map_err(|e| {
        tracing::warn!(credential = %call.credential.id, error = %e, "a credential could not be opened for a call");
        (
            StatusCode::BAD_GATEWAY,
            "credential_undecryptable",
            "the stored key cannot be decrypted: add it again".to_owned(),
        )
    })?;
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).or_else(|| Some((p.to_owned(), String::new())))
        })
        .collect();
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in incoming {
        let lower = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&lower) || lower.starts_with("x-keygate-") {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in &provider.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.entry(name).or_insert(value);
        }
    }
    let bad_gateway = |detail: String| (StatusCode::BAD_GATEWAY, "upstream_unreachable", detail);
    // The value that goes on the wire: kept (zeroizing) only so a relayed error can be
    // scrubbed of it exactly; the caller drops it as soon as the status is known.
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
            let token = oauth_token(state, call, provider, token_path, &secret).await?;
            headers.insert(header::AUTHORIZATION, sensitive(&format!("Bearer {}", token.expose())));
            token
        }
        Injection::Sigv4 { .. } => return Err(bad_gateway("SigV4 is not supported yet".into())),
    };
    let query: Vec<String> =
        pairs.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
    let url = state.upstreams.url(provider, path, &query.join("&")).map_err(bad_gateway)?;
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let request = state.upstreams.client(&provider.id).request(method, url).headers(headers).body(body);
    state.metrics.overhead(started.elapsed());
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", format!("{} did not answer in time", provider.name))
        } else {
            bad_gateway(format!(
                "{} could not be reached: {}",
                provider.name,
                if e.is_connect() { "connection failed" } else { "the request failed" }
            ))
        }
    })?;
    Ok((response, injected))
}

/// An OAuth2 client-credentials access token, from the cache or a fresh exchange.
async fn oauth_token(
    state: &AppState,
    call: &Admitted,
    provider: &Provider,
    token_path: &str,
    secret: &SecretText,
) -> Result<SecretText, (StatusCode, &'static str, String)> {
    if let Ok(cache) = state.upstreams.oauth.lock() {
        if let Some((token, until)) = cache.get(&(call.credential.id, call.credential.updated_at)) {
            if *until > Instant::now() {
                return Ok(token.clone());
            }
        }
    }
    let fields = keygate_service::validation::fields(provider, secret).unwrap_or_default();
    let field = |n: &str| fields.get(n).map(|s| s.expose().to_owned()).unwrap_or_default();
    let form = [
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", field("client_id")),
        ("client_secret", field("client_secret")),
    ];
    let failed = |detail: String| (StatusCode::BAD_GATEWAY, "upstream_auth_failed", detail);
    let response = state
        .upstreams
        .client(&provider.id)
        .post(format!("{}{token_path}", provider.base_url))
        .form(&form)
        .send()
        .await
        .map_err(|_| failed(format!("{}'s token endpoint could not be reached", provider.name)))?;
    if !response.status().is_success() {
        return Err(failed(format!(
            "{} refused the client credentials (HTTP {})",
            provider.name,
            response.status().as_u16()
        )));
    }
    let body: Value = response.json().await.map_err(|_| failed("the token endpoint's answer is not JSON".into()))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| failed("no access_token in the answer".into()))?;
    let ttl = body.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
    let token = SecretText::new(token.to_owned());
    if let Ok(mut cache) = state.upstreams.oauth.lock() {
        // Tokens of superseded versions of this credential are of no use any more.
        cache.retain(|(id, _), _| *id != call.credential.id);
        cache.insert(
            (call.credential.id, call.credential.updated_at),
            (token.clone(), Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1))),
        );
    }
    Ok(token)
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

fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
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

/// What the proxy needs from a JSON request body, read without building a tree of it.
#[derive(Debug, Default, serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
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
            model: v.get("model").and_then(Value::as_str).map(|m| std::borrow::Cow::Owned(m.to_owned())),
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

/// The body with `stream_options.include_usage` set; whether it could be set.
fn ask_for_usage(body: Bytes) -> (Bytes, bool) {
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

fn estimate_tokens(body_len: usize, max_output: Option<u64>) -> u64 {
    let output = max_output.unwrap_or(DEFAULT_OUTPUT_ESTIMATE).min(MAX_OUTPUT_ESTIMATE);
    // Roughly four bytes per token; bytes/3 errs on the side of reserving too much.
    (body_len as u64) / 3 + output
}

fn gemini_model(path: &str) -> Option<String> {
    let rest = path.split("models/").nth(1)?;
    Some(rest.split(':').next()?.to_owned())
}

fn outcome(status: u16, model: Option<String>, tokens: Tokens, started: Instant) -> CallOutcome {
    CallOutcome { status, model, tokens, latency: started.elapsed() }
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Vec<u8> {
    use futures_util::StreamExt;
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

/// Settles and meters a call exactly once: when its answer is complete, or (with what is
/// known by then) when it is dropped because the caller went away.
struct Finish {
    services: Arc<Services>,
    call: Admitted,
    /// The provider's status; 0 until it answered.
    status: u16,
    model: Option<String>,
    started: Instant,
    settled: bool,
}

impl Finish {
    fn settle(&mut self, tokens: Tokens) {
        if !std::mem::replace(&mut self.settled, true) {
            let outcome = outcome(self.status, self.model.take(), tokens, self.started);
            self.services.finish(&self.call, outcome);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.settle(Tokens::default());
    }
}

/// A streamed (SSE) answer on its way to the caller: passed through event by event, with
/// usage read on the way.
struct Metered {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
    dialect: Dialect,
    strip_usage_chunk: bool,
    buffer: Vec<u8>,
    pending: VecDeque<Bytes>,
    tokens: Tokens,
    done: bool,
    finish: Option<Finish>,
}

impl Metered {
    fn new(
        inner: Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>,
        dialect: Dialect,
        strip_usage_chunk: bool,
        finish: Finish,
    ) -> Self {
        Self {
            inner,
            dialect,
            strip_usage_chunk,
            buffer: Vec::new(),
            pending: VecDeque::new(),
            tokens: Tokens::default(),
            done: false,
            finish: Some(finish),
        }
    }

    fn take_events(&mut self, at_end: bool) {
        loop {
            let boundary = find_event_end(&self.buffer);
            let end = match boundary {
                Some(end) => end,
                None if at_end && !self.buffer.is_empty() => self.buffer.len(),
                None => return,
            };
            let event: Vec<u8> = self.buffer.drain(..end).collect();
            let text = String::from_utf8_lossy(&event);
            let mut usage_only = false;
            for report in usage::sse_data(&text) {
                self.tokens.observe(self.dialect, &report);
                if self.model_unknown() {
                    self.note_model(&report);
                }
                usage_only |= report.is_usage_only_chunk();
            }
            if !(self.strip_usage_chunk && usage_only) {
                self.pending.push_back(Bytes::from(event));
            }
        }
    }

    fn model_unknown(&self) -> bool {
        self.finish.as_ref().is_some_and(|f| f.model.is_none())
    }

    fn note_model(&mut self, report: &Report) {
        if let (Some(finish), Some(model)) = (self.finish.as_mut(), report.model()) {
            finish.model = Some(model);
        }
    }

    fn complete(&mut self) {
        if let Some(mut f) = self.finish.take() {
            f.settle(self.tokens);
        }
    }
}

fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.done {
                this.complete();
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buffer.extend_from_slice(&chunk);
                    this.take_events(false);
                }
                Poll::Ready(Some(Err(e))) => {
                    // Cut off upstream: record what passed, and cut the caller's stream too.
                    this.take_events(true);
                    this.complete();
                    tracing::warn!(error = %scrub(&e.to_string()), "the provider's stream broke off");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "upstream stream broke off",
                    ))));
                }
                Poll::Ready(None) => {
                    this.take_events(true);
                    this.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Metered {
    /// A caller that goes away mid-stream still has what passed recorded.
    fn drop(&mut self) {
        self.complete();
    }
}
