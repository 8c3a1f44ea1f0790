//! Signing in and out: `/login` (email and password), `/login/jwt?token=…` (a host
//! application's short-lived sign-in link: a session is set and the token dropped from
//! the address bar), `/logout`, and `/workspace/switch`.
//!
//! Not for: checking passwords or links (keygate-service's `sessions`).

use super::layout::{self, csrf, html_response, Notice};
use super::session::{self, anon_csrf, safe_next, AnonForm, Posted, SESSION_COOKIE};
use crate::extract::source_addr;
use crate::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use keygate_service::setup::SetupState;
use keygate_vault::SecretText;
use maud::html;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/jwt", get(link))
        .route("/logout", post(logout))
        .route("/workspace/switch", post(switch))
}

#[derive(Debug, Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

async fn login_page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<Next>) -> Response {
    if let Ok(SetupState::Unclaimed) = s.services.setup_state().await {
        return Redirect::to("/setup").into_response();
    }
    render(&s, &headers, q.next.as_deref(), "", None, StatusCode::OK)
}

fn render(
    s: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    email: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let (token, set_cookie) = anon_csrf(headers, s);
    let next = safe_next(next);
    let providers = s.services.oidc_providers();
    let body = html! {
        main #main.narrow {
            p.brand-big { span.mark aria-hidden="true" { "◆" } " keygate" }
            h1 { "Sign in" }
            (layout::notice(notice.as_ref()))
            @if !providers.is_empty() {
                div.card.stack.sso {
                    @for (id, name) in &providers {
                        a.button.sso href={"/login/oidc/" (id) "?next=" (session::percent_encode(&next))} { "Sign in with " (name) }
                    }
                }
                p.muted.or { "Or with your email and password:" }
            }
            form.card.stack method="post" action="/login" {
                (csrf(&token))
                input type="hidden" name="next" value=(next);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required value=(email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            p.muted { "Coming from an application? It signs you in with a link; ask it for a new one if yours expired." }
        }
    };
    let mut response = html_response(status, layout::document("Sign in", body));
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: SecretString,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").field("email", &self.email).finish_non_exhaustive()
    }
}

#[tracing::instrument(skip_all)]
async fn login(State(s): State<AppState>, AnonForm { form, parts }: AnonForm<LoginForm>) -> Response {
    let password = SecretText::new(form.password.expose_secret().to_owned());
    match s.services.sign_in(&form.email, &password, source_addr(&parts)).await {
        Ok(issued) => signed_in(&s, &parts.headers, issued.secret.expose(), &safe_next(form.next.as_deref())),
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status;
            render(&s, &parts.headers, form.next.as_deref(), &form.email, Some(Notice::problem(&e)), status)
        }
    }
}

/// 303 to `to`, with the session cookie set.
pub(super) fn signed_in(s: &AppState, headers: &HeaderMap, token: &str, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().append(header::SET_COOKIE, session::session_cookie(token, headers, s));
    response
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
    next: Option<String>,
}

impl std::fmt::Debug for LinkQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkQuery")
    }
}

#[tracing::instrument(skip_all)]
async fn link(State(s): State<AppState>, headers: HeaderMap, parts: axum::http::request::Parts) -> Response {
    let query: LinkQuery = match serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()) {
        Ok(q) => q,
        Err(_) => LinkQuery { token: None, next: None },
    };
    let Some(token) = query.token.filter(|t| !t.is_empty()) else {
        return render(
            &s,
            &headers,
            None,
            "",
            Some(Notice::Problem("the sign-in link carries no token: ask the application for a new link".into())),
            StatusCode::BAD_REQUEST,
        );
    };
    // A HEAD (a link preview, a prefetch) must not use the link up.
    if parts.method == axum::http::Method::HEAD {
        return StatusCode::OK.into_response();
    }
    match s.services.sign_in_with_link(&token, source_addr(&parts)).await {
        Ok(issued) => landed(&s, &headers, issued.secret.expose(), &safe_next(query.next.as_deref())),
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status;
            render(&s, &headers, None, "", Some(Notice::problem(&e)), status)
        }
    }
}

/// Where a sign-in link lands: a page of keygate's own that sets the session and says
/// whose it is, then moves on to `next`. Not a redirect: a link followed from the host
/// application's site is a cross-site navigation, and browsers hold a SameSite=Strict
/// cookie back for the whole redirect chain it starts; the step from this page is
/// same-site, so the session travels. The page's script drops the token from the
/// address bar and the history at once.
pub(super) fn landed(s: &AppState, headers: &HeaderMap, token: &str, next: &str) -> Response {
    let body = html! {
        main #main.narrow {
            p.brand-big { span.mark aria-hidden="true" { "◆" } " keygate" }
            h1 { "Signed in" }
            p { "You are signed in to keygate. " a #continue href=(next) { "Continue" } }
        }
    };
    let document = html! {
        (maud::DOCTYPE)
        html lang="en" data-drop-query="true" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                meta http-equiv="refresh" content={"0; url=" (next)};
                title { "Signed in · keygate" }
                link rel="stylesheet" href="/assets/keygate.css";
                script src="/assets/keygate.js" {}
            }
            body { (body) }
        }
    };
    let mut response = html_response(StatusCode::OK, document);
    response.headers_mut().append(header::SET_COOKIE, session::session_cookie(token, headers, s));
    response
}

#[derive(Debug, Deserialize)]
struct Empty {}

#[tracing::instrument(skip_all)]
async fn logout(State(s): State<AppState>, posted: Posted<Empty>) -> Response {
    if let Err(e) = s.services.end_session(&posted.viewer.principal).await {
        return super::error_page(e.into());
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, session::clear_cookie(SESSION_COOKIE));
    response
}

#[derive(Debug, Deserialize)]
struct SwitchForm {
    workspace_id: String,
}

#[tracing::instrument(skip_all)]
async fn switch(State(s): State<AppState>, posted: Posted<SwitchForm>) -> Response {
    let Ok(to) = posted.form.workspace_id.parse() else {
        return super::error_page(ApiError::not_found("no such workspace"));
    };
    match s.services.switch_workspace(&posted.viewer.principal, to).await {
        Ok(issued) => signed_in(&s, &posted.headers, issued.secret.expose(), "/settings/api-keys"),
        Err(e) => super::error_page(e.into()),
    }
}
