//! Stage 3 of a proxied call: the outbound request. Copies the caller's method, path,
//! query, headers (less their credentials, hop-by-hop headers and keygate's own) and
//! body, injects the provider's credential the way the catalog says (a header, a query
//! parameter, an OAuth2 access token obtained with it, or an AWS SigV4 signature over
//! the final path, query and body), and sends it on the provider's pooled client.
//!
//! The only place a plaintext key is handled on the proxy path: it is opened here, and
//! dropped once the request is sent; what goes back to the relay is an [`EchoScrubber`]
//! of every form of it, so the answer can be scrubbed of an echo.

use super::client::{SendError, Upstream};
use super::request::Incoming;
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use keygate_core::catalog::Injection;
use keygate_core::proxypath::query_without;
use keygate_core::resolution::KeySource;
use keygate_service::aws::AwsCredential;
use keygate_service::gateway::Admitted;
use keygate_service::ServiceError;
use keygate_vault::echo::EchoScrubber;
use std::sync::Arc;
use std::time::Instant;

/// What keygate calls itself when the caller's client did not say.
const USER_AGENT: &str = concat!("keygate/", env!("CARGO_PKG_VERSION"));

/// Request headers never forwarded: the caller's credentials, hop-by-hop headers,
/// where the request came from, and what the client stack sets itself.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    // credentials, in every spelling providers accept
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-auth-token",
    "authentication",
    "cookie",
    // hop-by-hop
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // where the request came from
    "forwarded",
    "x-real-ip",
    "via",
    // set by the outbound client
    "host",
    "content-length",
    "accept-encoding",
];

/// Headers that pick an account or project on the provider's side: only the key's owner
/// may choose them.
const OWNER_ONLY_HEADERS: &[&str] = &["openai-organization", "openai-project"];

/// What came back, with what the answer must be scrubbed of: every form of the value
/// that went on the wire (and, for OAuth2, of the client secret behind it).
pub(crate) struct Sent {
    pub response: Upstream,
    pub echo: Option<Arc<EchoScrubber>>,
    /// The call was a HEAD: its answer has no body.
    pub head: bool,
}

/// What goes out: bytes read whole (API calls: metered, guarded, signable), or a body
/// passed on as it arrives (git's packs, never signed).
pub(crate) enum Outbound {
    Whole(Bytes),
    Stream(axum::body::Body),
}

impl From<Bytes> for Outbound {
    fn from(bytes: Bytes) -> Self {
        Self::Whole(bytes)
    }
}

/// Builds and sends the upstream request for an admitted call.
pub(crate) async fn send(
    state: &AppState,
    call: &Admitted,
    incoming: &Incoming,
    body: impl Into<Outbound>,
    started: Instant,
) -> Result<Sent, ApiError> {
    let body: Outbound = body.into();
    let services = &state.services;
    let provider = &call.provider;
    let secret = services.open_for_call(call).await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "credential_undecryptable",
            "the stored key cannot be decrypted: add it again",
        )
    })?;
    let query = incoming.query.as_deref().unwrap_or("");
    let mut pairs = match &provider.inject {
        // Compared by decoded name: `?k%65y=` cannot ride along next to the injected `key`.
        Injection::Query { name } => query_without(query, name),
        _ => query_without(query, ""),
    };
    let mut headers = forwarded_headers(&incoming.headers, call.source == KeySource::User);
    for (name, value) in &provider.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.entry(name).or_insert(value);
        }
    }
    let mut aws: Option<AwsCredential> = None;
    let echo = match &provider.inject {
        Injection::Bearer => {
            headers.insert(header::AUTHORIZATION, sensitive_with("Bearer ", secret.expose()));
            echo_of(&[secret.expose()])
        }
        Injection::Header { name } => {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad_gateway("the catalog's header name is invalid".into()))?;
            headers.insert(name, sensitive(secret.expose()));
            echo_of(&[secret.expose()])
        }
        Injection::Query { name } => {
            pairs.push((name.clone(), percent_encode(secret.expose())));
            echo_of(&[secret.expose()])
        }
        Injection::Oauth2 { token_path } => {
            let token = services.oauth_token(call, token_path, &secret).await.map_err(|e| match e {
                ServiceError::UpstreamAuthFailed(detail) => {
                    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_auth_failed", detail)
                }
                other => ApiError::from(other),
            })?;
            headers.insert(header::AUTHORIZATION, sensitive_with("Bearer ", token.expose()));
            let fields = keygate_service::validation::fields(provider, &secret).unwrap_or_default();
            let client_secret = fields.get("client_secret").map(|s| s.expose()).unwrap_or_default();
            echo_of(&[token.expose(), client_secret])
        }
        // Signed below, once the URL and body are final.
        Injection::Sigv4 { .. } => {
            let credential = AwsCredential::of(provider, &secret)
                .ok_or_else(|| bad_gateway("the stored AWS credential lacks one of its fields: add it again".into()))?;
            // Only keygate's signature: no query-string authentication riding along.
            // Names compared decoded: `X%2DAmz-Security-Token` is `X-Amz-Security-Token`.
            pairs.retain(|(k, _)| {
                let name = keygate_core::proxypath::percent_decode(&k.replace('+', " ")).unwrap_or_default();
                !String::from_utf8_lossy(&name).to_ascii_lowercase().starts_with("x-amz-")
            });
            let echo = echo_of(&credential.secrets());
            aws = Some(credential);
            echo
        }
        Injection::Basic { username } => {
            use base64::Engine;
            // Built at their final sizes (a growing buffer leaves copies behind) and
            // zeroized on drop: both carry the key.
            let secret = secret.expose();
            let mut pair = zeroize::Zeroizing::new(String::with_capacity(username.len() + 1 + secret.len()));
            pair.push_str(username);
            pair.push(':');
            pair.push_str(secret);
            let engine = base64::engine::general_purpose::STANDARD;
            let size = base64::encoded_len(pair.len(), true).unwrap_or_default();
            let mut encoded = zeroize::Zeroizing::new(String::with_capacity(size));
            engine.encode_string(pair.as_bytes(), &mut encoded);
            headers.insert(header::AUTHORIZATION, sensitive_with("Basic ", &encoded));
            echo_of(&[secret, &pair])
        }
    };
    let query: Vec<String> =
        pairs.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
    let query = query.join("&");
    let upstreams = services.upstreams();
    let uri = match (&aws, keygate_service::aws::service(provider)) {
        (Some(credential), Some(service)) => {
            // The path as AWS's SDKs send it (a model id's `:` as `%3A`), the host of
            // the credential's region, and a signature over exactly what is sent.
            let Outbound::Whole(bytes) = &body else {
                return Err(bad_gateway("a signed call's body must be read whole".into()));
            };
            let path = keygate_service::aws::encode_path(incoming.path.decoded());
            let mut url = upstreams.url(provider, &path, &query)?;
            keygate_service::aws::regional(&mut url, credential.region.expose());
            if !bytes.is_empty() {
                headers.entry(header::CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
            }
            keygate_service::aws::sign(credential, service, incoming.method.as_str(), &url, &mut headers, bytes);
            url.as_str()
                .parse::<axum::http::Uri>()
                .map_err(|e| bad_gateway(format!("the signed URL is not valid: {e}")))?
        }
        _ => state.proxy_client.uri(provider, incoming.path.raw(), &query).map_err(bad_gateway)?,
    };
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }
    let mut request = axum::http::Request::new(match body {
        Outbound::Whole(bytes) => axum::body::Body::from(bytes),
        Outbound::Stream(stream) => stream,
    });
    *request.method_mut() = incoming.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    state.metrics.overhead(started.elapsed());
    let response = state.proxy_client.send(request).await.map_err(|e| match e {
        SendError::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("{} did not answer in time", provider.name),
        ),
        SendError::Connect => bad_gateway(format!("{} could not be reached: connection failed", provider.name)),
        SendError::Failed => bad_gateway(format!("{} could not be reached: the request failed", provider.name)),
    })?;
    drop(secret);
    drop(aws);
    Ok(Sent { response, echo: echo.map(Arc::new), head: incoming.method == axum::http::Method::HEAD })
}

/// The scrubber for an answer to a call that sent `secrets`. (A benchmark build measures
/// what scrubbing costs by going without it.)
fn echo_of(secrets: &[&str]) -> Option<EchoScrubber> {
    if cfg!(feature = "bench-without-echo-scrub") {
        None
    } else {
        EchoScrubber::new(secrets)
    }
}

/// The caller's headers that go on to the provider. `owner`: the call uses the
/// caller's own key.
fn forwarded_headers(incoming: &HeaderMap, owner: bool) -> HeaderMap {
    // Headers the caller named in `Connection` are hop-by-hop too.
    let named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    // Room for what is added after: the credential, `Host`, `User-Agent`.
    let mut headers = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        let lower = name.as_str();
        let dropped = DROPPED_REQUEST_HEADERS.contains(&lower)
            || lower.starts_with("x-keygate-")
            || lower.starts_with("x-forwarded-")
            || lower.starts_with("x-amz-")
            || (!owner && OWNER_ONLY_HEADERS.contains(&lower))
            || named.iter().any(|n| n == lower);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn bad_gateway(detail: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", detail)
}

fn sensitive(value: &str) -> HeaderValue {
    sensitive_with("", value)
}

/// `prefix` then `secret`, as a header value marked sensitive, written straight into
/// the header's own bytes (no formatted copy first).
fn sensitive_with(prefix: &str, secret: &str) -> HeaderValue {
    let mut bytes = Vec::with_capacity(prefix.len() + secret.len());
    bytes.extend_from_slice(prefix.as_bytes());
    bytes.extend_from_slice(secret.as_bytes());
    let mut v = HeaderValue::from_maybe_shared(Bytes::from(bytes)).unwrap_or_else(|_| HeaderValue::from_static(""));
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
