//! `/settings/sessions`: sandbox sessions, short-lived `proxy`-only tokens for a
//! container, a CI job or an AI agent's workroom. Lists the live ones (providers, expiry,
//! what each has spent against its caps) with a revoke button, and creates one (its token
//! shown once, with a copy button).
//!
//! Not for: the session rules (keygate-service's `sandbox`).

use super::layout::{csrf, page, thousands, when, Notice};
use super::session::{Posted, Viewer};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use keygate_core::TokenId;
use keygate_service::sandbox::{SessionRequest, SessionStatus};
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/sessions", get(list).post(create))
        .route("/settings/sessions/{id}/revoke", post(revoke))
}

/// The lifetimes the form offers, in seconds, with their labels.
const LIFETIMES: [(u64, &str); 5] =
    [(900, "15 minutes"), (3_600, "1 hour"), (8 * 3_600, "8 hours"), (86_400, "1 day"), (7 * 86_400, "7 days")];

#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
}

async fn list(State(s): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Response {
    let notice = match done.done.as_deref() {
        Some("revoked") => Some(Notice::Done("The session was revoked: its token stops working at once.".into())),
        _ => None,
    };
    render(&s, &viewer, notice, None).await
}

/// A session just created: its name and its token, shown this once.
struct Created {
    name: String,
    token: String,
}

async fn render(s: &AppState, viewer: &Viewer, notice: Option<Notice>, created: Option<Created>) -> Response {
    let sessions = match s.services.list_sessions(&viewer.principal).await {
        Ok(sessions) => sessions,
        Err(e) => return super::error_page(e.into()),
    };
    let providers = s.services.catalog().all();
    let content = html! {
        p.lead { "A session gives a sandbox (a container, a CI job, an AI agent's workroom) a token of its own that "
            "works only for the providers you pick, only until it expires or you revoke it, and only within its caps. "
            "Your provider keys never enter the sandbox: point its SDK at keygate ("
            code { "OPENAI_BASE_URL=<keygate>/proxy/openai/v1" } ") with the session token as its API key." }
        @if let Some(created) = &created {
            section.card.created role="status" {
                h2 { "Session “" (created.name) "” created" }
                p { strong { "Copy its token now: keygate shows it this once." } " It is stored only as a hash." }
                div.copy-row {
                    input #new-token readonly value=(created.token) aria-label="The new session token" spellcheck="false";
                    button.secondary type="button" data-copy="#new-token" { "Copy" }
                }
            }
        }
        h2 { "Active sessions" }
        (table(viewer, &sessions))
        section.card {
            h2 { "Start a session" }
            form.stack method="post" action="/settings/sessions" {
                (csrf(&viewer.csrf))
                label for="session-name" { "Name" }
                input id="session-name" name="name" required maxlength="100" placeholder="e.g. agent workroom 42";
                fieldset {
                    legend { "Providers it may call" }
                    @for provider in providers {
                        label.choice { input type="checkbox" name="provider" value=(provider.id); " " (provider.name) " " code { (provider.id) } }
                    }
                }
                label for="session-ttl" { "Ends" }
                select id="session-ttl" name="ttl_seconds" {
                    @for (seconds, label) in LIFETIMES {
                        option value=(seconds) selected[seconds == 3_600] { "in " (label) }
                    }
                }
                label for="session-requests" { "Most requests " span.muted { "(optional)" } }
                input id="session-requests" name="max_requests" type="number" min="1" inputmode="numeric";
                label for="session-tokens" { "Most tokens, input and output " span.muted { "(optional)" } }
                input id="session-tokens" name="max_tokens" type="number" min="1" inputmode="numeric";
                button type="submit" { "Start session" }
            }
        }
    };
    page(s, viewer, "Sandbox sessions", notice, content).await
}

/// `used of cap`, or `used` when there is no cap.
fn spent(used: u64, cap: Option<u64>) -> Markup {
    html! {
        (thousands(used))
        @if let Some(cap) = cap { " of " (thousands(cap)) } @else { " " span.muted { "(no cap)" } }
    }
}

fn table(viewer: &Viewer, sessions: &[SessionStatus]) -> Markup {
    html! {
        @if sessions.is_empty() {
            p.empty { "No active sessions." }
        } @else {
            div.table-wrap tabindex="0" {
                table.sessions {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Providers" } th scope="col" { "Expires" }
                        th scope="col" { "Requests" } th scope="col" { "Tokens" } th scope="col" { "Last used" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for status in sessions {
                            @let (t, grant) = (&status.session.token, &status.session.grant);
                            tr data-session-id=(t.id) {
                                td data-label="Name" { (t.name) }
                                td data-label="Providers" { @for p in &grant.providers { code { (p) } " " } }
                                td data-label="Expires" { (when(t.expires_at)) }
                                td data-label="Requests" { (spent(status.used.requests, grant.max_requests)) }
                                td data-label="Tokens" { (spent(status.used.tokens, grant.max_tokens)) }
                                td data-label="Last used" { (when(t.last_used_at)) }
                                td.actions {
                                    form.inline method="post" action={"/settings/sessions/" (t.id) "/revoke"} {
                                        (csrf(&viewer.csrf))
                                        button.danger type="submit" { "Revoke" }
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

/// The create form's fields as pairs: `provider` repeats.
#[tracing::instrument(skip_all)]
async fn create(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<Vec<(String, String)>>) -> Response {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).unwrap_or_default();
    let providers: Vec<String> = form.iter().filter(|(k, _)| k == "provider").map(|(_, v)| v.clone()).collect();
    let number = |name: &'static str| -> Result<Option<u64>, Notice> {
        match field(name) {
            "" => Ok(None),
            text => text.parse::<u64>().map(Some).map_err(|_| {
                Notice::Problem(format!(
                    "{}: enter a whole number of at least 1, or leave it empty.",
                    name.replace('_', " ")
                ))
            }),
        }
    };
    let caps = number("max_requests").and_then(|r| Ok((r, number("max_tokens")?)));
    let ((max_requests, max_tokens), ttl_seconds) = match (caps, field("ttl_seconds").parse::<u64>()) {
        (Ok(caps), Ok(ttl)) => (caps, ttl),
        (Err(notice), _) => return render(&s, &viewer, Some(notice), None).await,
        (_, Err(_)) => {
            let notice = Notice::Problem("Ends: choose one of the lifetimes offered.".into());
            return render(&s, &viewer, Some(notice), None).await;
        }
    };
    let request = SessionRequest { name: field("name").to_owned(), providers, ttl_seconds, max_requests, max_tokens };
    match s.services.create_session(&viewer.principal, request).await {
        Ok(issued) => {
            let created = Created { name: issued.session.token.name.clone(), token: issued.secret.expose().to_owned() };
            render(&s, &viewer, None, Some(created)).await
        }
        Err(e) => render(&s, &viewer, Some(Notice::problem(&e.into())), None).await,
    }
}

#[tracing::instrument(skip_all)]
async fn revoke(State(s): State<AppState>, Path(id): Path<String>, posted: Posted<Empty>) -> Response {
    let Ok(id) = id.parse::<TokenId>() else {
        return super::error_page(ApiError::not_found("no such session"));
    };
    match s.services.revoke_session(&posted.viewer.principal, id).await {
        Ok(()) => Redirect::to("/settings/sessions?done=revoked").into_response(),
        Err(e) => render(&s, &posted.viewer, Some(Notice::problem(&e.into())), None).await,
    }
}

#[derive(Debug, Deserialize)]
struct Empty {}
