//! Extractors that turn every way a request can be wrong into the same problem+json:
//! [`Auth`] (who is calling), [`ApiJson`] (a body that parses, with no unknown fields)
//! and [`ApiPath`] (path parameters that parse).

use crate::{ApiError, AppState};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use keygate_service::Principal;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

/// The authenticated caller: `Authorization: Bearer <keygate token or host JWT>`, or
/// `x-api-key: <keygate token>` (as the Anthropic SDK sends it).
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

/// The credential a request presents, if any.
pub fn presented_credential(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let mut words = value.splitn(2, ' ');
        if let (Some(scheme), Some(credential)) = (words.next(), words.next()) {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(credential.trim());
            }
        }
        return None;
    }
    const X_API_KEY: axum::http::HeaderName = axum::http::HeaderName::from_static("x-api-key");
    parts.headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The keygate token sent as the password of HTTP Basic authentication
/// (`Authorization: Basic base64(<anything>:kg_…)`), the only way git's smart HTTP sends
/// a credential. Accepted only where a provider speaks git (see `proxy::request::read`):
/// elsewhere a browser that once saw a Basic challenge would send it on its own. Only
/// keygate tokens: an account password (or a JWT) there is refused, never tried.
pub fn basic_token(parts: &Parts) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    let Some(value) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return Ok(None) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a keygate token (kg_…) as the password of HTTP Basic authentication (any user name), \
             e.g. git clone http://x:<token>@<keygate>/proxy/github-git/<owner>/<repo>.git",
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| refused())?;
    let text = String::from_utf8(decoded).map_err(|_| refused())?;
    let (_, password) = text.split_once(':').ok_or_else(refused)?;
    if !password.starts_with("kg_") {
        return Err(refused());
    }
    Ok(Some(password.to_owned()))
}

/// The client's address, when the server was started with connect info.
pub fn source_addr(parts: &Parts) -> Option<String> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ip_text(ci.0.ip()))
}

/// An address as its `Display` writes it; IPv4 (every proxied call's, usually) without
/// the formatter's machinery.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = presented_credential(parts).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send a keygate token or a host JWT as `Authorization: Bearer <credential>`",
            )
        })?;
        let principal = state.services.authenticate(credential, source_addr(parts)).await?;
        // A sandbox's token calls providers and nothing else: not even who it acts for.
        if principal.session().is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a sandbox session's token works only on /proxy/{provider}/... and /v1/...",
            ));
        }
        Ok(Auth(principal))
    }
}

/// A JSON body; malformed JSON, a wrong content type and unknown or mistyped fields all
/// come back as problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("the JSON body does not fit: {}", body_error(e)),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {}", body_error(e)),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `content-type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if crate::serve::timed_out(e) => body_timeout(),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the API accepts (2 MiB); proxied calls may carry up to 32 MiB",
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", other.body_text()),
    }
}

/// A request body that did not arrive within the body timeout.
pub(crate) fn body_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body did not arrive in time; send it whole without pausing",
    )
}

/// serde's own message (field names, line and column), never the offending value.
fn body_error(e: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

/// Path parameters; a malformed id is a 404 like any other unknown id.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::not_found("no such resource")),
            Err(other) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", other.body_text())),
        }
    }
}

/// Query parameters that parse, or problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("query parameters: {}", body_error(&e)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_read_as_their_display_form() {
        for octets in [[0, 0, 0, 0], [127, 0, 0, 1], [10, 9, 99, 100], [255, 255, 255, 255], [192, 168, 1, 10]] {
            let ip = IpAddr::V4(Ipv4Addr::from(octets));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for b in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(b, b.wrapping_mul(7), 0, b));
            assert_eq!(ip_text(ip), ip.to_string());
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1));
        assert_eq!(ip_text(v6), "::ffff:127.0.0.1");
    }
}
