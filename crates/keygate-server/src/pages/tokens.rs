//! `/settings/tokens`: the keygate tokens a person holds (name, scopes, created, last
//! used, expiry), creating one (shown once, with a copy button) and revoking one. Web
//! sessions are tokens too and are listed apart, so a person can end a session left
//! open elsewhere.
//!
//! Not for: the minting rules (keygate-service's `auth`: a token only grants scopes its
//! minter holds).

use super::layout::{csrf, page, when, Notice};
use super::session::{Posted, Viewer};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use keygate_core::{ApiToken, Scope, TokenId};
use keygate_service::auth::TokenRequest;
use keygate_service::sessions::SESSION_TOKEN_NAME;
use keygate_service::Via;
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/settings/tokens", get(list).post(create)).route("/settings/tokens/{id}/revoke", post(revoke))
}

#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
}

async fn list(State(s): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Response {
    let notice = match done.done.as_deref() {
        Some("revoked") => Some(Notice::Done("The token was revoked: it stops working at once.".into())),
        _ => None,
    };
    render(&s, &viewer, notice, None).await
}

async fn render(s: &AppState, viewer: &Viewer, notice: Option<Notice>, created: Option<(String, String)>) -> Response {
    let tokens = match s.services.list_tokens(&viewer.principal).await {
        Ok(tokens) => tokens,
        Err(e) => return super::error_page(e.into()),
    };
    let now = Utc::now();
    let live = |t: &&ApiToken| t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now);
    let current = match &viewer.principal.via {
        Via::Token { id, .. } => Some(*id),
        Via::Jwt => None,
    };
    let (sessions, apps): (Vec<&ApiToken>, Vec<&ApiToken>) =
        tokens.iter().filter(live).partition(|t| t.name == SESSION_TOKEN_NAME);
    let ended: Vec<&ApiToken> = tokens.iter().filter(|t| !live(t)).collect();
    let grantable = viewer.principal.scopes();
    let content = html! {
        p.lead { "Tokens let your application or scripts call keygate as you: send one as "
            code { "Authorization: Bearer kg_…" } " (or as an SDK's API key). Give each one only the scopes it needs: "
            code { "proxy" } " to make provider calls, " code { "keys" } " to manage keys, " code { "usage" } " to read usage." }
        @if let Some((name, token)) = &created {
            section.card.created role="status" {
                h2 { "Token “" (name) "” created" }
                p { strong { "Copy it now: keygate shows it this once." } " It is stored only as a hash." }
                div.copy-row {
                    input #new-token readonly value=(token) aria-label="The new token" spellcheck="false";
                    button.secondary type="button" data-copy="#new-token" { "Copy" }
                }
            }
        }
        h2 { "Tokens" }
        (table(viewer, &apps, current, "No tokens yet."))
        h2 { "Signed-in sessions" }
        (table(viewer, &sessions, current, "No other sessions."))
        section.card {
            h2 { "Create a token" }
            form.stack method="post" action="/settings/tokens" {
                (csrf(&viewer.csrf))
                label for="token-name" { "Name" }
                input id="token-name" name="name" required maxlength="100" placeholder="e.g. backend production";
                fieldset {
                    legend { "Scopes" }
                    @for scope in &grantable {
                        label.choice { input type="checkbox" name="scope" value=(scope) checked[*scope == Scope::Proxy]; " " code { (scope) } " " span.muted { (scope_help(*scope)) } }
                    }
                }
                label for="token-expiry" { "Expires" }
                select id="token-expiry" name="expires" {
                    option value="30" { "in 30 days" }
                    option value="90" selected { "in 90 days" }
                    option value="365" { "in a year" }
                    option value="never" { "never" }
                }
                button type="submit" { "Create token" }
            }
        }
        @if !ended.is_empty() {
            details {
                summary { "Revoked and expired (" (ended.len()) ")" }
                (table(viewer, &ended, current, ""))
            }
        }
    };
    page(s, viewer, "Tokens", notice, content).await
}

fn scope_help(scope: Scope) -> &'static str {
    match scope {
        Scope::Keys => "manage keys and tokens",
        Scope::Proxy => "make provider calls",
        Scope::Usage => "read usage and quotas",
        Scope::Admin => "administer keygate",
        Scope::Metrics => "read /metrics",
    }
}

fn table(viewer: &Viewer, tokens: &[&ApiToken], current: Option<TokenId>, empty: &str) -> Markup {
    let now = Utc::now();
    html! {
        @if tokens.is_empty() {
            p.empty { (empty) }
        } @else {
            div.table-wrap tabindex="0" {
                table.tokens {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Created" }
                        th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for t in tokens {
                            tr data-token-id=(t.id) {
                                td data-label="Name" { (t.name) @if Some(t.id) == current { " " span.badge { "this session" } } }
                                td data-label="Scopes" { @for sc in &t.scopes { code { (sc) } " " } }
                                td data-label="Created" { (when(Some(t.created_at))) }
                                td data-label="Last used" { (when(t.last_used_at)) }
                                td data-label="Expires" {
                                    @if let Some(r) = t.revoked_at { "revoked " (when(Some(r))) }
                                    @else if let Some(e) = t.expires_at { @if e <= now { "expired " } (when(Some(e))) }
                                    @else { span.muted { "never" } }
                                }
                                td.actions {
                                    @if t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now) {
                                        form.inline method="post" action={"/settings/tokens/" (t.id) "/revoke"} {
                                            (csrf(&viewer.csrf))
                                            button.danger type="submit" {
                                                @if Some(t.id) == current { "Sign out" } @else { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[tracing::instrument(skip_all)]
/// The create form's fields as pairs: `scope` repeats.
async fn create(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<Vec<(String, String)>>) -> Response {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default();
    let mut scopes = Vec::new();
    for (k, v) in &form {
        if k == "scope" {
            match v.parse::<Scope>() {
                Ok(scope) => scopes.push(scope),
                Err(_) => return super::error_page(ApiError::not_found("no such scope")),
            }
        }
    }
    let expires_at = match field("expires") {
        "never" => None,
        days => match days.parse::<i64>() {
            Ok(d) if (1..=3650).contains(&d) => Some(keygate_service::now() + chrono::Duration::days(d)),
            _ => Some(keygate_service::now() + chrono::Duration::days(90)),
        },
    };
    let request = TokenRequest { name: field("name").to_owned(), scopes: Some(scopes), expires_at, workspace_id: None };
    match s.services.create_token(&viewer.principal, request).await {
        Ok(issued) => {
            let name = issued.token.name.clone();
            render(&s, &viewer, None, Some((name, issued.secret.expose().to_owned()))).await
        }
        Err(e) => render(&s, &viewer, Some(Notice::problem(&e.into())), None).await,
    }
}

#[tracing::instrument(skip_all)]
async fn revoke(State(s): State<AppState>, Path(id): Path<String>, posted: Posted<Empty>) -> Response {
    let Ok(id) = id.parse::<TokenId>() else {
        return super::error_page(ApiError::not_found("no such token"));
    };
    let this_session = matches!(&posted.viewer.principal.via, Via::Token { id: current, .. } if *current == id);
    match s.services.revoke_token(&posted.viewer.principal, id).await {
        Ok(()) if this_session => Redirect::to("/login").into_response(),
        Ok(()) => Redirect::to("/settings/tokens?done=revoked").into_response(),
        Err(e) => render(&s, &posted.viewer, Some(Notice::problem(&e.into())), None).await,
    }
}

#[derive(Debug, Deserialize)]
struct Empty {}
