//! The web pages: server-rendered HTML for people, shipped inside the binary. Forms
//! work without JavaScript; `/assets/keygate.js` only adds copy buttons and small
//! conveniences. Every page goes through the same services as the API (same owner
//! scoping, same audit rows, same errors, shown as readable messages), is sent with a
//! strict `Content-Security-Policy`, and never holds a secret: not a key, not a token
//! other than the one a person just created, not in a form sent back after an error.
//!
//! - `session`: cookies, CSRF, the signed-in [`session::Viewer`];
//! - `layout`: the shared frame, the demo banner, formatting;
//! - `setup`: the first-run wizard; `signin`: sign-in, sign-out, sign-in links,
//!   workspace switch; `oidc`: single sign-on (OpenID Connect); `keys`: personal, workspace and operator keys; `usage`,
//!   `tokens`, `sessions` (sandbox sessions), `admin`: the other pages.
//!
//! Not for: business rules (keygate-service) or the JSON API (`routes`).

mod admin;
mod keys;
mod layout;
mod oidc;
mod session;
mod sessions;
mod setup;
mod signin;
mod tokens;
mod usage;

use crate::{ApiError, AppState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::html;

/// Options for the pages, from configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct PagesOptions {
    /// The deployment is reached over TLS (a proxy terminates it): cookies get `Secure`.
    pub behind_tls: bool,
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/assets/keygate.css", get(css))
        .route("/assets/keygate.js", get(js))
        .merge(setup::router())
        .merge(signin::router())
        .merge(oidc::router())
        .merge(admin::router())
        .merge(keys::router())
        .merge(tokens::router())
        .merge(sessions::router())
        .merge(usage::router())
}

async fn home(viewer: Result<session::Viewer, session::SignIn>) -> Response {
    match viewer {
        Ok(_) => Redirect::to("/settings/api-keys").into_response(),
        Err(sign_in) => sign_in.into_response(),
    }
}

/// The headers every answer keygate writes itself carries (see [`crate::router`]).
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/keygate.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/keygate.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// An error shown as a page of its own (a form that could not be read, a page that is
/// not yours): what happened and where to go.
pub(crate) fn error_page(e: ApiError) -> Response {
    let detail = keygate_vault::redact::scrub(&e.detail);
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let body = html! {
        main #main.narrow {
            h1 { (title) }
            div.notice.problem role="alert" { (detail) }
            p { a href="/settings/api-keys" { "Back to your keys" } " · " a href="/login" { "Sign in" } }
        }
    };
    layout::html_response(e.status, layout::document(title, body))
}
