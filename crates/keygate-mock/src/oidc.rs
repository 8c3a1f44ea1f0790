//! An OpenID Connect issuer for tests, at `<mock>/oidc`: the discovery document
//! (`/oidc/.well-known/openid-configuration`), a JWKS (`/oidc/jwks`), an authorization
//! endpoint that approves at once as the configured user (`/oidc/authorize`: redirects
//! back with a code, or with `error=access_denied`), and a token endpoint
//! (`/oidc/token`) that checks the client (`client_secret_post` or `_basic`), the
//! `redirect_uri`, the PKCE `code_verifier` (S256), and that a code is used once (a
//! replayed code answers `invalid_grant`). ID tokens are RS256, signed with a fixed test
//! key.
//!
//! Knobs for tests ([`OidcBehaviour`], also `PUT /__oidc/behaviour` and
//! `POST /__oidc/next-user`): who signs in next, an expired ID token, one not valid yet (`nbf`), another audience,
//! a wrong nonce, a key rotation (a second key published and used: an unknown `kid`
//! until the JWKS is fetched again), a key never published, a denied authorization.
//! `GET /__oidc/stats` counts discovery and JWKS fetches.
//!
//! Not for: anything but tests. The keys below are TEST FIXTURES, generated once with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` and checked in: they
//! protect nothing.

use crate::config::MockConfig;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Where the issuer lives on the mock: its `iss` is `http://<host>/oidc`.
pub const ISSUER_PATH: &str = "/oidc";

/// TEST FIXTURE: the issuer's first signing key (kid `mock-key-1`), always published.
const KEY_1_PEM: &[u8] = include_bytes!("oidc/test-key-1.pem");
const KEY_1_N: &str = "xjZ7p25DQ4sdzSLBwqRngDcBXHBgutmq-GHsvSsMFYw-m4bZxKVQ10aOpHXtmop6BiUIJz-x5MUJcKf3kIlAUvKIZqRUcjMUaJziWyq4vq6aLlga2svVPn_Fexl2qggiUXXsCQlYn2j0j1fMAqGaIEBMHQzzY95teec4a8iN8lhrFcJWEUpsr7v9IcbfZJ4AC1Yoboq8P8H7Ho3p0UdKdTleDwVDqxU-SDGrQfM1outwPx6Wlo6LpgGeCV1L8EpYN_Su9OYxJnAv0IGN6clDK74apLjQ31Uieu30VmzkHaDikUiWmw0Rtf-38gePyrhqxhMCDlp_gn_qEh586KlQSQ";
/// TEST FIXTURE: the second key (kid `mock-key-2`), published and used after a rotation.
const KEY_2_PEM: &[u8] = include_bytes!("oidc/test-key-2.pem");
const KEY_2_N: &str = "7C4_acWX-KOCOuUN8PZWqnV0dTUB4D5spol0-GnvKgi-pfNTOkTJ9oQyG8f8JtyTs--q3324rkqHwc9vDcsfPEsuj50k0ZecKTl4_P67H_P9gSOiTDKq1RfCoYqs3dJyri0XgLF0qM7y3WUKZtZpZI8a4ZUHrygCyLAAmktw9wLN9mZz_nasNpTqyBvHEPsc3mOAFT9fb3K7M_YnpV8KCNkykvQecDCY-cRRv--Rh1ULzecNc3gx1zREUAfv7YjySVMQnBAB2OdQeS6QWy08_fDv90hO-v6L4hXaEWNgrdL5jkHkIVT5Y07wgV6D8PqUUHdfqc5LtqsWnDlDxIKXpQ";

/// Who the authorization endpoint signs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcUser {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
}

impl Default for OidcUser {
    fn default() -> Self {
        Self { sub: "mock-user-1".into(), email: "user@example.com".into(), email_verified: true, name: None }
    }
}

/// How the issuer behaves for the next sign-ins (until changed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcBehaviour {
    pub user: OidcUser,
    /// ID tokens expired ten minutes ago.
    pub expired: bool,
    /// ID tokens not valid for another hour (`nbf` = now + 3600).
    pub not_yet_valid: bool,
    /// ID tokens for this audience instead of the client.
    pub audience: Option<String>,
    /// ID tokens carry a nonce other than the one the authorization request sent.
    pub wrong_nonce: bool,
    /// The second key is published and signs ID tokens (the first stays published).
    pub rotate_keys: bool,
    /// The second key signs ID tokens but is never published.
    pub unpublished_key: bool,
    /// The person declines: the authorization endpoint redirects with `error=access_denied`.
    pub deny: bool,
}

/// What an authorization code stands for.
#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    behaviour: OidcBehaviour,
    used: bool,
}

/// The issuer's state, inside the mock's shared state.
#[derive(Debug, Default)]
pub(crate) struct IssuerState {
    pub(crate) behaviour: Mutex<OidcBehaviour>,
    grants: Mutex<HashMap<String, Grant>>,
    counter: AtomicU64,
    pub(crate) discovery_fetches: AtomicU64,
    pub(crate) jwks_fetches: AtomicU64,
    /// Every code and ID token issued, so tests can check none leaks.
    pub(crate) issued: Mutex<Vec<String>>,
}

/// Requests under `/oidc/` and `/__oidc/`.
pub(crate) fn handle(
    state: &IssuerState,
    config: &MockConfig,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    let issuer = format!("http://{host}{ISSUER_PATH}");
    match (method.as_str(), path) {
        ("GET", "/oidc/.well-known/openid-configuration") => {
            state.discovery_fetches.fetch_add(1, Ordering::Relaxed);
            axum::Json(serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
            }))
            .into_response()
        }
        ("GET", "/oidc/jwks") => {
            state.jwks_fetches.fetch_add(1, Ordering::Relaxed);
            let behaviour = lock(&state.behaviour).clone();
            let jwk = |kid: &str, n: &str| serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": "AQAB"});
            let mut keys = vec![jwk("mock-key-1", KEY_1_N)];
            if behaviour.rotate_keys {
                keys.push(jwk("mock-key-2", KEY_2_N));
            }
            axum::Json(serde_json::json!({ "keys": keys })).into_response()
        }
        ("GET", "/oidc/authorize") => authorize(state, config, uri),
        ("POST", "/oidc/token") => token(state, config, &issuer, headers, body),
        ("GET", "/__oidc/behaviour") => axum::Json(lock(&state.behaviour).clone()).into_response(),
        ("PUT", "/__oidc/behaviour") => match serde_json::from_slice::<OidcBehaviour>(body) {
            Ok(b) => {
                *lock(&state.behaviour) = b;
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        ("POST", "/__oidc/next-user") => match serde_json::from_slice::<OidcUser>(body) {
            Ok(user) => {
                lock(&state.behaviour).user = user;
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        ("GET", "/__oidc/stats") => axum::Json(serde_json::json!({
            "discovery_fetches": state.discovery_fetches.load(Ordering::Relaxed),
            "jwks_fetches": state.jwks_fetches.load(Ordering::Relaxed),
        }))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, "unknown OpenID Connect endpoint").into_response(),
    }
}

fn lock<T: Default>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bad_request(what: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("invalid authorization request: {what}")).into_response()
}

fn authorize(state: &IssuerState, config: &MockConfig, uri: &Uri) -> Response {
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    if get("response_type") != "code" {
        return bad_request("response_type must be code");
    }
    if !config.oidc_clients.iter().any(|c| c.client_id == get("client_id")) {
        return bad_request("unknown client_id");
    }
    let redirect_uri = get("redirect_uri");
    if !(redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://")) {
        return bad_request("redirect_uri must be an http(s) URL");
    }
    if !get("scope").split(' ').any(|s| s == "openid") {
        return bad_request("scope must include openid");
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        return bad_request("PKCE with S256 is required");
    }
    let behaviour = lock(&state.behaviour).clone();
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let state_param = query.get("state").cloned().unwrap_or_default();
    let params = if behaviour.deny {
        vec![
            ("error", "access_denied".to_owned()),
            ("error_description", "The user declined".to_owned()),
            ("state", state_param),
        ]
    } else {
        let code = format!("mock-code-{}-{}", state.counter.fetch_add(1, Ordering::Relaxed), random_suffix());
        let grant = Grant {
            client_id: get("client_id").to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: get("code_challenge").to_owned(),
            nonce: query.get("nonce").cloned(),
            behaviour,
            used: false,
        };
        lock(&state.grants).insert(code.clone(), grant);
        lock(&state.issued).push(code.clone());
        vec![("code", code), ("state", state_param)]
    };
    let location = format!("{redirect_uri}{separator}{}", serde_urlencoded::to_string(params).unwrap_or_default());
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Some unpredictability in codes, from the clock and a hash (tests only).
fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    hex::encode(&sha2::Sha256::digest(nanos.to_be_bytes())[..8])
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": error, "error_description": description}))).into_response()
}

fn token(state: &IssuerState, config: &MockConfig, issuer: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let (client_id, client_secret) = match (form.get("client_secret"), crate::server::basic_auth(headers)) {
        (Some(secret), _) => (get("client_id").to_owned(), secret.clone()),
        (None, Some(pair)) => pair,
        (None, None) => (String::new(), String::new()),
    };
    if !config.oidc_clients.iter().any(|c| c.client_id == client_id && c.client_secret == client_secret) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    }
    if get("grant_type") != "authorization_code" {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "authorization_code only");
    }
    let grant = {
        let mut grants = lock(&state.grants);
        let Some(grant) = grants.get_mut(get("code")) else {
            return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown authorization code");
        };
        if grant.used {
            return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "authorization code already used");
        }
        grant.used = true;
        grant.clone()
    };
    if grant.client_id != client_id {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code was issued to another client");
    }
    if grant.redirect_uri != get("redirect_uri") {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "redirect_uri does not match");
    }
    if base64url(&sha2::Sha256::digest(get("code_verifier").as_bytes())) != grant.challenge {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE verification failed");
    }
    let b = &grant.behaviour;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (iat, exp) = if b.expired { (now - 1200, now - 600) } else { (now, now + 300) };
    let nonce = if b.wrong_nonce { Some("not-the-nonce-you-sent".to_owned()) } else { grant.nonce.clone() };
    let mut claims = serde_json::json!({
        "iss": issuer,
        "sub": b.user.sub,
        "aud": b.audience.clone().unwrap_or_else(|| client_id.clone()),
        "azp": client_id,
        "iat": iat,
        "exp": exp,
        "email": b.user.email,
        "email_verified": b.user.email_verified,
    });
    if b.not_yet_valid {
        claims["nbf"] = serde_json::Value::from(now + 3600);
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = serde_json::Value::String(nonce);
    }
    if let Some(name) = &b.user.name {
        claims["name"] = serde_json::Value::String(name.clone());
    }
    let (kid, pem) =
        if b.rotate_keys || b.unpublished_key { ("mock-key-2", KEY_2_PEM) } else { ("mock-key-1", KEY_1_PEM) };
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jwt_header.kid = Some(kid.to_owned());
    let id_token = match jsonwebtoken::EncodingKey::from_rsa_pem(pem)
        .and_then(|key| jsonwebtoken::encode(&jwt_header, &claims, &key))
    {
        Ok(t) => t,
        Err(e) => return token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    };
    lock(&state.issued).push(id_token.clone());
    let access_token = format!("mock-oidc-access-{}", state.counter.fetch_add(1, Ordering::Relaxed));
    axum::Json(serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

/// Unpadded base64url (RFC 7636's code challenge).
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_7636s_example() {
        // RFC 7636, appendix B.
        let challenge = base64url(&sha2::Sha256::digest(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(base64url(b"ab"), "YWI");
    }

    #[test]
    fn the_test_keys_sign() {
        for pem in [KEY_1_PEM, KEY_2_PEM] {
            assert!(jsonwebtoken::EncodingKey::from_rsa_pem(pem).is_ok());
        }
    }
}
