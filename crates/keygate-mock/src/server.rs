//! The mock's HTTP server: one handler that records, authenticates, injects faults and
//! hands the request to its dialect.

use crate::config::{Fault, MockConfig};
use crate::dialects::{self, Dialect};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// One request as the mock saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The credential it carried, however presented.
    pub credential: Option<String>,
    /// How: `authorization`, `x-api-key`, `x-goog-api-key`, `query:key`, `basic`, ...
    pub credential_via: Option<String>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// State shared by the handler and the [`MockProvider`] handle.
#[derive(Debug, Default)]
pub struct Shared {
    config: RwLock<MockConfig>,
    requests: Mutex<Vec<Recorded>>,
    tokens: Mutex<HashMap<String, Instant>>,
    counter: AtomicU64,
    /// Provider requests served (admin endpoints not counted), recorded or not.
    served: AtomicU64,
    /// The OpenID Connect issuer at `/oidc`.
    oidc: crate::oidc::IssuerState,
}

impl Shared {
    pub fn new(config: MockConfig) -> Arc<Self> {
        Arc::new(Self { config: RwLock::new(config), ..Self::default() })
    }

    fn config(&self) -> MockConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Keeps `request` for the tests' [`MockProvider::requests`].
    pub(crate) fn record(&self, request: Recorded) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(request);
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The fault to apply to this request, counting it against `fault_times`.
    fn take_fault(&self) -> Option<Fault> {
        let mut config = self.config.write().ok()?;
        let fault = config.fault.clone()?;
        match config.fault_times {
            None => {}
            Some(0) => {
                config.fault = None;
                config.fault_times = None;
                return None;
            }
            Some(1) => {
                config.fault = None;
                config.fault_times = None;
            }
            Some(n) => config.fault_times = Some(n - 1),
        }
        Some(fault)
    }
}

/// A running mock on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Connections accepted so far.
    accepted: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockProvider {
    /// Starts on a free loopback port.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(listener, config)
    }

    /// Starts on `listener`.
    pub fn start_on(listener: TcpListener, config: MockConfig) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Shared::new(config);
        let app = router(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let _ = serve_counting(listener, app, stopped, counter).await;
        });
        Ok(Self { addr, shared, accepted, stop: Some(stop) })
    }

    /// `http://127.0.0.1:<port>`: the base URL to give keygate for a provider.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections the mock has accepted (a client that pools its connections
    /// opens few).
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes the configuration; later requests see the change.
    pub fn configure(&self, change: impl FnOnce(&mut MockConfig)) {
        if let Ok(mut config) = self.shared.config.write() {
            change(&mut config);
        }
    }

    /// Every request recorded so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Provider requests served so far, whether recorded or not.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:<port>/oidc`: the OpenID Connect issuer's URL.
    pub fn oidc_issuer(&self) -> String {
        format!("{}{}", self.url(), crate::oidc::ISSUER_PATH)
    }

    /// Changes how the OpenID Connect issuer behaves from the next sign-in on.
    pub fn oidc(&self, change: impl FnOnce(&mut crate::oidc::OidcBehaviour)) {
        if let Ok(mut behaviour) = self.shared.oidc.behaviour.lock() {
            change(&mut behaviour);
        }
    }

    /// Every authorization code and ID token the issuer has handed out, oldest first.
    pub fn oidc_issued(&self) -> Vec<String> {
        self.shared.oidc.issued.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How often the issuer's discovery document and JWKS were fetched.
    pub fn oidc_fetches(&self) -> (u64, u64) {
        (
            self.shared.oidc.discovery_fetches.load(Ordering::Relaxed),
            self.shared.oidc.jwks_fetches.load(Ordering::Relaxed),
        )
    }

    pub fn clear_requests(&self) {
        if let Ok(mut r) = self.shared.requests.lock() {
            r.clear();
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, with Nagle's algorithm off on every
/// connection (as keygate and real providers do), so streamed chunks are not held back.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_counting(listener, app, shutdown, Arc::default()).await
}

/// [`serve`], counting the connections accepted in `accepted`.
async fn serve_counting(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    accepted: Arc<std::sync::atomic::AtomicU64>,
) -> std::io::Result<()> {
    let listener = listener.tap_io(move |tcp| {
        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// The mock as an axum router (the binary serves this).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

const MAX_BODY: usize = 16 << 20;

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // git's smart HTTP streams its bodies: answered before anything is read.
    if crate::git::is_git_path(parts.uri.path()) {
        shared.served.fetch_add(1, Ordering::Relaxed);
        let config = shared.config();
        return crate::git::answer(&shared, &config, parts, body).await;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response(),
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    if let Some(admin) = path.strip_prefix("/__mock/") {
        return admin_endpoint(&shared, &parts.method, admin, &body);
    }
    if path.starts_with("/oidc/") || path.starts_with("/__oidc/") {
        let config = shared.config();
        return crate::oidc::handle(&shared.oidc, &config, &parts.method, &parts.uri, &parts.headers, &body);
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
    let config = shared.config();
    let (credential, via) = credential(&parts.headers, query.as_deref());
    if config.record {
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            credential: credential.clone(),
            credential_via: via,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        if let Ok(mut requests) = shared.requests.lock() {
            requests.push(recorded);
        }
    }

    if crate::bedrock::is_signed(&parts) {
        let fault = shared.take_fault();
        return crate::bedrock::answer(&shared, &config, fault, &parts, &body).await;
    }
    if parts.method == Method::POST && (path == "/oauth/token" || path.ends_with("/protocol/openid-connect/token")) {
        return oauth_token(&shared, &config, &parts.headers, &body);
    }

    let dialect = Dialect::of(&path, &parts.headers);
    let authorized =
        credential.as_deref().is_some_and(|c| config.valid_keys.iter().any(|k| k == c) || token_is_live(&shared, c));
    if !authorized {
        return dialects::unauthorized(dialect, credential.as_deref());
    }

    let fault = shared.take_fault();
    match &fault {
        Some(Fault::Status { status }) => return dialects::failure(dialect, *status),
        Some(Fault::Echo { encoding, status }) => {
            let request = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
            let stream = request.get("stream").and_then(serde_json::Value::as_bool).unwrap_or(false);
            return crate::echo::answer(credential.as_deref().unwrap_or(""), encoding, *status, stream);
        }
        Some(Fault::Delay { ms }) => tokio::time::sleep(Duration::from_millis(*ms)).await,
        _ => {}
    }
    if config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
    }
    let request = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
    dialects::answer(&shared, &config, fault, &parts.method, &path, dialect, &request)
}

/// The credential a request carries, and how it carried it.
fn credential(headers: &HeaderMap, query: Option<&str>) -> (Option<String>, Option<String>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(v) = header("x-api-key") {
        return (Some(v), Some("x-api-key".into()));
    }
    if let Some(v) = header("x-goog-api-key") {
        return (Some(v), Some("x-goog-api-key".into()));
    }
    if let Some(auth) = header("authorization") {
        if auth.starts_with("AWS4-HMAC-SHA256 ") {
            return (crate::bedrock::access_key_id(&auth), Some("sigv4".into()));
        }
        if let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")) {
            return (Some(token.trim().to_owned()), Some("authorization".into()));
        }
    }
    for (name, value) in query.unwrap_or("").split('&').filter_map(|p| p.split_once('=')) {
        if matches!(name, "key" | "access_token" | "api_key") {
            return (Some(value.to_owned()), Some(format!("query:{name}")));
        }
    }
    (None, None)
}

fn token_is_live(shared: &Shared, token: &str) -> bool {
    shared.tokens.lock().map(|t| t.get(token).is_some_and(|exp| *exp > Instant::now())).unwrap_or(false)
}

fn oauth_token(shared: &Shared, config: &MockConfig, headers: &HeaderMap, body: &Bytes) -> Response {
    let form: HashMap<String, String> = String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%40", "@")))
        .collect();
    let (id, secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => basic_auth(headers).unwrap_or_default(),
    };
    let grant_ok = form.get("grant_type").map(String::as_str) == Some("client_credentials");
    let client_ok = config.oauth_clients.iter().any(|c| c.client_id == id && c.client_secret == secret);
    if !grant_ok || !client_ok {
        let body = serde_json::json!({"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let token = format!("mock-access-{}-{}", shared.next_id(), id);
    let expiry = Instant::now() + Duration::from_secs(config.token_ttl_secs);
    if let Ok(mut tokens) = shared.tokens.lock() {
        tokens.insert(token.clone(), expiry);
    }
    let body = serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": config.token_ttl_secs});
    axum::Json(body).into_response()
}

pub(crate) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = decode_base64(value.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Standard base64, enough for Basic auth headers.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in input.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn admin_endpoint(shared: &Shared, method: &Method, what: &str, body: &Bytes) -> Response {
    match (method.as_str(), what) {
        ("GET", "config") => axum::Json(shared.config()).into_response(),
        ("PUT", "config") => match serde_json::from_slice::<MockConfig>(body) {
            Ok(config) => {
                if let Ok(mut current) = shared.config.write() {
                    *current = config;
                }
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        ("GET", "stats") => {
            axum::Json(serde_json::json!({"served": shared.served.load(Ordering::Relaxed)})).into_response()
        }
        ("GET", "requests") => {
            axum::Json(shared.requests.lock().map(|r| r.clone()).unwrap_or_default()).into_response()
        }
        ("DELETE", "requests") => {
            if let Ok(mut r) = shared.requests.lock() {
                r.clear();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::NOT_FOUND, Body::from("unknown mock admin endpoint")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_auth() {
        assert_eq!(decode_base64("aWQ6c2VjcmV0").unwrap(), b"id:secret");
    }
}
