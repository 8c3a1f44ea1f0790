//! The pages' HTTP side of a session: the `kg_session` cookie (HttpOnly, SameSite=Strict,
//! Secure behind TLS) that carries a web-session token, the CSRF field every form
//! carries, and the extractors that check both before a handler runs.
//!
//! - [`Viewer`]: a signed-in person; without a session a page answers `303` to
//!   `/login?next=…` (or to `/setup` on a deployment nobody has claimed yet).
//! - [`Posted`]: a form posted by a signed-in person, its `csrf_token` checked.
//! - [`AnonForm`]: a form posted before signing in (sign-in, setup), checked against a
//!   `kg_csrf` cookie (double submit), which [`anon_csrf`] sets.
//!
//! Not for: what a session is allowed to do (the service layer decides, as for tokens).

use crate::extract::source_addr;
use crate::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use keygate_service::setup::SetupState;
use keygate_service::Principal;
use keygate_vault::{constant_time_eq, sha256};
use serde::de::DeserializeOwned;

pub(crate) const SESSION_COOKIE: &str = "kg_session";
const CSRF_COOKIE: &str = "kg_csrf";
/// Forms are small; a pasted key is the largest thing in one.
const FORM_LIMIT: usize = 64 * 1024;

/// A signed-in person, and the CSRF value their forms carry.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub principal: Principal,
    pub csrf: String,
    /// The path asked for (for `aria-current` in the navigation).
    pub path: String,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.principal.user.super_admin
    }

    pub fn manages_workspace(&self) -> bool {
        matches!(self.principal.role, keygate_core::Role::Owner | keygate_core::Role::Admin)
    }
}

/// Where a page without a session sends the browser.
#[derive(Debug)]
pub(crate) enum SignIn {
    /// `stale`: the request carried a session cookie that no longer works.
    Login {
        next: String,
        stale: bool,
    },
    Setup,
    Failed(ApiError),
}

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        match self {
            SignIn::Setup => Redirect::to("/setup").into_response(),
            SignIn::Login { next, stale } => {
                let target = format!("/login?next={}", percent_encode(&next));
                let mut response = Redirect::to(&target).into_response();
                // A stale cookie is dropped, so the sign-in page starts clean. Only a stale
                // one: a request that came without it (a cross-site navigation, where a
                // SameSite=Strict cookie is held back) must not wipe a good session.
                if stale {
                    response.headers_mut().append(header::SET_COOKIE, clear_cookie(SESSION_COOKIE));
                }
                response
            }
            SignIn::Failed(e) => super::error_page(e),
        }
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// The CSRF value of a session: derived from the session token (which no page and no
/// script can read), so a forged form cannot carry it.
fn session_csrf(session: &str) -> String {
    let digest = sha256(format!("keygate/csrf/v1:{session}").as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Whether cookies get `Secure`: the deployment says it is behind TLS, or the request
/// came through a TLS-terminating proxy that says so.
pub(super) fn secure(parts_headers: &HeaderMap, state: &AppState) -> bool {
    state.pages.behind_tls
        || parts_headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub(crate) fn session_cookie(token: &str, headers: &HeaderMap, state: &AppState) -> HeaderValue {
    let secure = if secure(headers, state) { "; Secure" } else { "" };
    let max_age = keygate_service::auth::LOGIN_TOKEN_HOURS * 3600;
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| clear_cookie(SESSION_COOKIE))
}

pub(crate) fn clear_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))
        .unwrap_or(HeaderValue::from_static("kg_session=; Path=/; Max-Age=0"))
}

/// Paths `next` may never name: signing in or out, the wizard, switching workspace.
/// A `next` of `/login/jwt?token=<someone else's link>` would sign a person who just
/// typed their password into another account.
const ACTION_PATHS: [&str; 5] = ["/login", "/logout", "/setup", "/workspace/switch", "/assets"];

/// A safe place to go after signing in: a page on this site, nothing else.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        // Printable ASCII only: browsers drop tabs and line breaks from addresses, so
        // `/\t/evil.example` would become `//evil.example`.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://")
                && n.bytes().all(|b| b.is_ascii_graphic())
                && plain_path(n)
                && !names_action(n) =>
        {
            n.to_owned()
        }
        _ => "/settings/api-keys".to_owned(),
    }
}

/// The path of `next`: before its query and fragment.
fn path_of(next: &str) -> &str {
    next.split(['?', '#']).next().unwrap_or_default()
}

/// Whether the path is one a browser goes to as written: no `.` or `..` segment in any
/// spelling (`%2e`, `%2E`), which a browser resolves (`/./login/jwt`, `/settings/../login`
/// are `/login/…`), and no encoded `/` or `\`.
fn plain_path(next: &str) -> bool {
    let path = path_of(next);
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    !lower.split('/').any(|segment| matches!(segment.replace("%2e", ".").as_str(), "." | ".."))
}

/// Whether the path names an action path (or something under it).
fn names_action(next: &str) -> bool {
    let path = path_of(next);
    ACTION_PATHS.iter().any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path().to_owned();
        let next = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| path.clone());
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE).filter(|s| s.starts_with("kg_")) else {
            return Err(unsigned(state, next, false).await);
        };
        match state.services.authenticate(&session, source_addr(parts)).await {
            // Only a page session opens the pages: an API or sandbox token set as the
            // cookie is treated as no session at all.
            Ok(principal) if principal.is_web_session() => Ok(Viewer { principal, csrf: session_csrf(&session), path }),
            Ok(_) => Err(unsigned(state, next, true).await),
            Err(keygate_service::ServiceError::Unauthenticated(_)) => Err(unsigned(state, next, true).await),
            Err(e) => Err(SignIn::Failed(e.into())),
        }
    }
}

async fn unsigned(state: &AppState, next: String, stale: bool) -> SignIn {
    match state.services.setup_state().await {
        Ok(SetupState::Unclaimed) => SignIn::Setup,
        Ok(_) => SignIn::Login { next, stale },
        Err(e) => SignIn::Failed(e.into()),
    }
}

/// The form fields, parsed, once the CSRF field has been checked.
fn checked_form<T: DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| bad_form())?;
    let presented = pairs.iter().find(|(k, _)| k == "csrf_token").map(|(_, v)| v.as_str()).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "this form has expired or did not come from keygate's own page: reload the page and try again",
        ));
    }
    serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", format!("the form does not fit: {e}"))
    })
}

fn bad_form() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", "the form could not be read")
}

async fn read_form(req: Request, state: &AppState) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "pages take forms (application/x-www-form-urlencoded)",
        ));
    }
    let req = Request::from_parts(parts.clone(), body);
    let bytes = Bytes::from_request(req, state).await.map_err(|_| bad_form())?;
    if bytes.len() > FORM_LIMIT {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the form is too large"));
    }
    Ok((parts, bytes))
}

/// A form a signed-in person posted, CSRF-checked.
#[derive(Debug)]
pub(crate) struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
    pub headers: HeaderMap,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, bytes) = read_form(req, state).await.map_err(super::error_page)?;
        let viewer = Viewer::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let form = checked_form(&bytes, &viewer.csrf).map_err(super::error_page)?;
        Ok(Posted { viewer, form, headers: parts.headers })
    }
}

/// A form posted before signing in, checked against the `kg_csrf` cookie.
#[derive(Debug)]
pub(crate) struct AnonForm<T> {
    pub form: T,
    pub parts: Parts,
}

impl<T: DeserializeOwned> FromRequest<AppState> for AnonForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_form(req, state).await.map_err(super::error_page)?;
        // The cookie must be one keygate signed, and the field must repeat it.
        let expected = cookie(&parts.headers, CSRF_COOKIE)
            .filter(|v| state.services.is_anonymous_form_token(v))
            .unwrap_or_default();
        let form = checked_form(&bytes, &expected).map_err(super::error_page)?;
        Ok(AnonForm { form, parts })
    }
}

/// The CSRF value for a form shown before signing in, and the cookie to set when the
/// browser has none yet.
pub(crate) fn anon_csrf(headers: &HeaderMap, state: &AppState) -> (String, Option<HeaderValue>) {
    if let Some(value) = cookie(headers, CSRF_COOKIE).filter(|v| state.services.is_anonymous_form_token(v)) {
        return (value, None);
    }
    let value = state.services.anonymous_form_token();
    let secure = if secure(headers, state) { "; Secure" } else { "" };
    let set = HeaderValue::from_str(&format!("{CSRF_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{secure}")).ok();
    (value, set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/settings/usage?days=7")), "/settings/usage?days=7");
        assert_eq!(safe_next(Some("/login-help")), "/login-help", "only the action paths themselves");
        for action in [
            "/login/jwt?token=a.b.c",
            "/login",
            "/logout",
            "/setup?step=2",
            "/workspace/switch",
            "/login#x",
            "/login/jwt#?token=a.b.c",
        ] {
            assert_eq!(safe_next(Some(action)), "/settings/api-keys", "{action}");
        }
        // Dot segments in any spelling, which browsers resolve before asking.
        for dotted in [
            "/./login/jwt?token=a.b.c",
            "/%2e/login/jwt?token=a.b.c",
            "/%2E/login/jwt?token=a.b.c",
            "/settings/../login/jwt?token=a.b.c",
            "/settings/%2e%2E/login/jwt?token=a.b.c",
            "/settings/.%2e/login/jwt",
            "/settings/%2E./login/jwt",
            "/settings/..",
            "/settings/.",
            "/settings/./usage",
            "/settings%2f..%2flogin/jwt",
            "/settings%2F..%2Flogin/jwt",
            "/settings/%5c..%5clogin/jwt",
        ] {
            assert_eq!(safe_next(Some(dotted)), "/settings/api-keys", "{dotted}");
        }
        // What worked before still works: dots inside names, dots and slashes in queries.
        for fine in [
            "/settings/usage?days=7&q=a%2Fb&r=../x",
            "/settings/usage?next=/./login",
            "/settings/keys.json",
            "/settings/...",
            "/settings/.well",
            "/admin/users?q=%2e%2e",
            "/",
            "/setup-guide",
        ] {
            assert_eq!(safe_next(Some(fine)), fine, "{fine}");
        }
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "evil",
            "",
            "/\t/evil.example",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(Some(bad)), "/settings/api-keys", "{bad}");
        }
    }

    #[test]
    fn csrf_is_checked_in_constant_time_and_never_empty() {
        let body = Bytes::from_static(b"csrf_token=abc&name=x");
        #[derive(serde::Deserialize)]
        struct F {
            name: String,
        }
        assert_eq!(checked_form::<F>(&body, "abc").unwrap().name, "x");
        assert!(checked_form::<F>(&body, "abd").is_err());
        assert!(checked_form::<F>(&Bytes::from_static(b"name=x"), "").is_err());
    }
}
