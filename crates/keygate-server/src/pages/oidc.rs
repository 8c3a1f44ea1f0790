//! Single sign-on's HTTP side. `GET /login/oidc/{id}` starts a sign-in: a short-lived
//! `kg_oidc` cookie holds the signed flow and the browser goes to the issuer.
//! `GET /login/oidc/{id}/callback` is where the issuer sends it back: on success the
//! session cookie is set on a landing page (as for host sign-in links: the callback is a
//! cross-site navigation, which would hold a SameSite=Strict cookie back through a
//! redirect), and the code leaves the address bar; otherwise a page says what went wrong
//! and what to do. The wizard's start (the setup code first) is in `setup`.
//!
//! The flow cookie is `SameSite=Lax`: the issuer sends the browser back with a top-level
//! cross-site `GET`, which must carry it. It is scoped to `/login/oidc`, HttpOnly, lives
//! ten minutes and is dropped as the callback answers.
//!
//! Not for: the protocol and who may sign in (keygate-service's `oidc`).

use super::layout::{self, html_response};
use super::session::{self, safe_next};
use crate::extract::source_addr;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use keygate_service::oidc::{OidcCallback, OidcRefusal, OidcStart, RefusalKind};
use keygate_service::setup::SetupState;
use maud::html;
use serde::Deserialize;

const FLOW_COOKIE: &str = "kg_oidc";
const FLOW_PATH: &str = "/login/oidc";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/login/oidc/{id}", get(start)).route("/login/oidc/{id}/callback", get(callback))
}

#[derive(Debug, Deserialize)]
struct Next {
    next: Option<String>,
}

#[tracing::instrument(skip_all, fields(provider = %id))]
async fn start(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    // A fresh deployment is claimed in the wizard, which asks for the setup code first.
    if let Ok(SetupState::Unclaimed) = s.services.setup_state().await {
        return Redirect::to("/setup").into_response();
    }
    match s.services.oidc_begin(&id, &safe_next(q.next.as_deref()), None).await {
        Ok(start) => to_issuer(&s, &headers, start),
        Err(refusal) => refusal_page(&refusal),
    }
}

/// `303` to the issuer, with the flow cookie set.
fn to_issuer(s: &AppState, headers: &HeaderMap, start: OidcStart) -> Response {
    let mut response = Redirect::to(&start.authorize_url).into_response();
    response.headers_mut().append(header::SET_COOKIE, flow_cookie(&start.flow, headers, s));
    response
}

/// The flow cookie for `value`.
pub(super) fn flow_cookie(value: &str, headers: &HeaderMap, s: &AppState) -> HeaderValue {
    let secure = if session::secure(headers, s) { "; Secure" } else { "" };
    let max_age = keygate_service::oidc::FLOW_SECS;
    HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={value}; Path={FLOW_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| drop_flow_cookie())
}

fn drop_flow_cookie() -> HeaderValue {
    HeaderValue::from_static("kg_oidc=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0")
}

#[tracing::instrument(skip_all, fields(provider = %id))]
async fn callback(State(s): State<AppState>, Path(id): Path<String>, parts: axum::http::request::Parts) -> Response {
    // A HEAD (a link preview, a prefetch) must not use the code up.
    if parts.method == Method::HEAD {
        return StatusCode::OK.into_response();
    }
    let answer: OidcCallback = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    let flow = session::cookie(&parts.headers, FLOW_COOKIE);
    let mut response = match s.services.oidc_finish(&id, flow.as_deref(), &answer, source_addr(&parts)).await {
        Ok(done) => super::signin::landed(&s, &parts.headers, done.session.secret.expose(), &done.next),
        Err(refusal) => {
            tracing::info!(kind = ?refusal.kind, "single sign-on refused: {}", refusal.title);
            refusal_page(&refusal)
        }
    };
    response.headers_mut().append(header::SET_COOKIE, drop_flow_cookie());
    response
}

/// A refused sign-in as a page: what happened, what to do, where to go.
pub(super) fn refusal_page(refusal: &OidcRefusal) -> Response {
    let status = match refusal.kind {
        RefusalKind::Invalid => StatusCode::BAD_REQUEST,
        RefusalKind::Denied => StatusCode::FORBIDDEN,
        RefusalKind::Unreachable => StatusCode::BAD_GATEWAY,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let detail = keygate_vault::redact::scrub(&refusal.detail);
    let body = html! {
        main #main.narrow {
            p.brand-big { span.mark aria-hidden="true" { "◆" } " keygate" }
            h1 { (refusal.title) }
            div.notice.problem role="alert" { (detail) }
            p { a.button href="/login" { "Back to sign-in" } }
        }
    };
    html_response(status, layout::document(refusal.title, body))
}

/// The wizard's page between the setup code and the issuer: a link, not a redirect,
/// because a form's answer may not send the browser to another site (`form-action 'self'`).
pub(super) fn continue_page(s: &AppState, headers: &HeaderMap, name: &str, start: OidcStart) -> Response {
    let body = html! {
        main #main.narrow {
            p.brand-big { span.mark aria-hidden="true" { "◆" } " keygate" }
            h1 { "Setup code accepted" }
            p { "Now sign in with " (name) ". The account you sign in with becomes this keygate's first super-admin." }
            p { a.button #continue href=(start.authorize_url) { "Continue with " (name) } }
            p.muted { "This link works for 10 minutes, in this browser." }
        }
    };
    let mut response = html_response(StatusCode::OK, layout::document("Continue setup", body));
    response.headers_mut().append(header::SET_COOKIE, flow_cookie(&start.flow, headers, s));
    response
}
