//! Stage 1 of a proxied call: who is calling, what they ask for. Authenticates the
//! caller, reads the per-request payment policy, reads the body, and peeks into a JSON
//! body for what the gateway needs (model, stream, output maximum) without building a
//! tree of it.
//!
//! Not for: deciding anything about the call (the service's `admit` does).

use crate::extract::{basic_token, ip_text, presented_credential};
use crate::{ApiError, AppState};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use keygate_core::proxypath::ProxyPath;
use keygate_core::resolution::PaymentPolicy;
use keygate_core::usage::Dialect;
use keygate_service::gateway::CallRequest;
use keygate_service::Principal;

/// A proxied call as the caller sent it, authenticated.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub principal: Principal,
    pub provider: String,
    /// The path after `/proxy/{provider}`, checked (see [`ProxyPath`]).
    pub path: ProxyPath,
    /// The query string, still encoded.
    pub query: Option<String>,
    pub method: Method,
    pub headers: HeaderMap,
    pub policy: PaymentPolicy,
    pub dialect: Dialect,
}

impl Incoming {
    /// What the gateway decides who pays by.
    pub fn call_request(&self) -> CallRequest<'_> {
        CallRequest {
            principal: &self.principal,
            provider: &self.provider,
            method: self.method.as_str(),
            path: self.path.decoded(),
            policy: self.policy,
        }
    }

    /// The model the body (or, for Gemini and Bedrock, the path) names.
    pub fn model(&self, named: Option<&str>) -> Option<String> {
        if self.dialect == Dialect::Bedrock {
            return bedrock_model(self.path.decoded()).or_else(|| named.map(str::to_owned));
        }
        named.map(str::to_owned).or_else(|| gemini_model(self.path.decoded()))
    }
}

/// Authenticates the caller and reads what they ask for; the body is left unread until
/// the call is resolved (see `body::read`).
/// `git`: the provider speaks git's smart HTTP (looked up once, by the route); `peer`:
/// the client's address (audited with what the call does).
pub(crate) async fn read(
    state: &AppState,
    peer: Option<std::net::SocketAddr>,
    provider: String,
    git: bool,
    request: Request,
) -> Result<(Incoming, axum::body::Body), ApiError> {
    let (parts, body) = request.into_parts();
    // CONNECT asks the provider for a tunnel and TRACE to reflect the request, key and all:
    // neither is an API call, and neither goes out with a key.
    if parts.method == Method::CONNECT || parts.method == Method::TRACE {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not proxied: keygate forwards API calls only", parts.method),
        ));
    }
    // The path as it arrived (still encoded), after `/proxy/{provider}/`.
    let raw = super::segments(parts.uri.path()).map_or("", |(_, rest)| rest);
    let path = ProxyPath::parse(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{e}: send the provider's path as it is, without `.` or `..` segments or backslashes"),
        )
    })?;
    // git sends its credential only as Basic auth: accepted for providers that speak git.
    let basic = if git { basic_token(&parts)? } else { None };
    let credential = presented_credential(&parts).or(basic.as_deref()).ok_or_else(|| {
        let how = if git {
            "send a keygate token as git's password: git clone http://x:<token>@<keygate>/proxy/<provider>/<owner>/<repo>.git"
        } else {
            "send a keygate token as the provider SDK's API key"
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", how)
    })?;
    let principal = state.services.authenticate(credential, peer.map(|p| ip_text(p.ip()))).await?;
    let policy = payment_policy(&parts.headers)?;
    let dialect = Dialect::of(&provider);
    let incoming = Incoming {
        principal,
        dialect,
        provider,
        path,
        query: parts.uri.query().map(str::to_owned),
        method: parts.method,
        headers: parts.headers,
        policy,
    };
    Ok((incoming, body))
}

/// `x-keygate-policy`: keeps operator-paid and customer-paid calls apart.
pub(crate) fn payment_policy(headers: &HeaderMap) -> Result<PaymentPolicy, ApiError> {
    const POLICY: HeaderName = HeaderName::from_static("x-keygate-policy");
    match headers.get(&POLICY).map(|v| v.to_str().map(PaymentPolicy::parse)) {
        None => Ok(PaymentPolicy::Any),
        Some(Ok(Some(p))) => Ok(p),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "x-keygate-policy must be customer-only, operator-only or any",
        )),
    }
}

/// The model a Gemini path names (`/v1beta/models/{model}:generateContent`).
fn gemini_model(path: &str) -> Option<String> {
    let rest = path.split("models/").nth(1)?;
    Some(rest.split(':').next()?.to_owned())
}

/// The model a Bedrock path names (`model/{modelId}/converse`, decoded).
fn bedrock_model(path: &str) -> Option<String> {
    let mut segments = path.trim_start_matches('/').split('/');
    (segments.next()? == "model").then(|| segments.next().map(str::to_owned)).flatten().filter(|m| !m.is_empty())
}
