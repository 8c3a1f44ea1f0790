//! `/setup`, the first-run wizard. On a deployment nobody has claimed, every page leads
//! here and step 1 asks for the setup code from keygate's log plus the first
//! super-admin's email and password, or, when single sign-on is configured, offers to
//! create the first super-admin by signing in with an issuer (`/setup/oidc/{id}`: the
//! code is checked before the browser leaves and spent when it returns signed in). Steps 2–5 (AI providers, maps, satellite, email)
//! add operator keys, each validated live and shown with its outcome; each can be
//! skipped and revisited, and what was saved is in the database, so a reload loses
//! nothing. Finishing needs at least one key and locks the wizard: `/setup` then leads
//! to `/admin/providers`.
//!
//! Not for: the rules of claiming and locking (keygate-service's `setup`).

use super::keys::{verdict, AddForm};
use super::layout::{self, csrf, html_response, page, Notice};
use super::session::{anon_csrf, AnonForm, Posted, Viewer};
use super::signin::signed_in;
use crate::extract::source_addr;
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use keygate_core::catalog::{CredentialKind, Provider};
use keygate_core::*;
use keygate_service::credentials::{ListScope, NewCredential};
use keygate_service::oidc::RefusalKind;
use keygate_service::setup::SetupState;
use keygate_vault::SecretText;
use maud::{html, Markup};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;

/// Steps 2–5: which provider kinds each offers, in order.
const STEPS: [(u8, &str, &str, &[&str]); 4] = [
    (2, "ai", "AI providers", &["anthropic", "openai", "voyage", "gemini", "openrouter"]),
    (3, "maps", "Maps", &["mapbox", "google_maps", "maptiler"]),
    (4, "satellite", "Satellite", &["sentinel_hub"]),
    (5, "email", "Email", &["resend"]),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/setup", get(wizard))
        .route("/setup/claim", post(claim))
        .route("/setup/oidc/{id}", post(claim_with_oidc))
        .route("/setup/key", post(add_key))
        .route("/setup/finish", post(finish))
}

#[derive(Debug, Default, Deserialize)]
struct StepQuery {
    step: Option<u8>,
    done: Option<String>,
    key: Option<String>,
}

async fn wizard(
    State(s): State<AppState>,
    headers: HeaderMap,
    viewer: Result<Viewer, super::session::SignIn>,
    Query(q): Query<StepQuery>,
) -> Response {
    match s.services.setup_state().await {
        Err(e) => super::error_page(e.into()),
        Ok(SetupState::Unclaimed) => claim_page(&s, &headers, "", None, StatusCode::OK),
        Ok(SetupState::Locked) => Redirect::to("/admin/providers").into_response(),
        Ok(SetupState::Open) => match viewer {
            Err(sign_in) => sign_in.into_response(),
            Ok(v) if !v.is_admin() => super::error_page(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the setup wizard is for super-admins",
            )),
            Ok(v) => {
                let notice = match (q.done.as_deref(), q.key.as_deref().and_then(|k| k.parse().ok())) {
                    (Some("added"), Some(id)) => match s.services.get_credential(&v.principal, id).await {
                        Ok(c) => Some(outcome(&s, &c)),
                        Err(e) => Some(Notice::problem(&e.into())),
                    },
                    (Some("claimed"), _) => {
                        Some(Notice::Done("Your super-admin account is ready and you are signed in.".into()))
                    }
                    _ => None,
                };
                step_page(&s, &v, q.step.unwrap_or(2), notice, None).await
            }
        },
    }
}

fn outcome(s: &AppState, c: &Credential) -> Notice {
    let provider = s.services.catalog().get(&c.provider).map(|p| p.name.clone()).unwrap_or_default();
    let text = format!("{provider} key {} saved. {}", c.hint, verdict(s, c));
    match c.validity {
        Validity::Invalid | Validity::Undecryptable => Notice::Warning(text),
        _ => Notice::Done(text),
    }
}

fn steps_nav(current: u8) -> Markup {
    let names = [(1u8, "Account"), (2, "AI providers"), (3, "Maps"), (4, "Satellite"), (5, "Email")];
    html! {
        nav.steps aria-label="Setup steps" {
            ol {
                @for (n, name) in names {
                    li class=(if n == current { "current" } else if n < current { "past" } else { "" }) {
                        @if n == 1 || n == current {
                            span aria-current=[(n == current).then_some("step")] { (n) ". " (name) }
                        } @else {
                            a href={"/setup?step=" (n)} { (n) ". " (name) }
                        }
                    }
                }
            }
        }
    }
}

fn claim_page(s: &AppState, headers: &HeaderMap, email: &str, notice: Option<Notice>, status: StatusCode) -> Response {
    let (token, set_cookie) = anon_csrf(headers, s);
    let providers = s.services.oidc_providers();
    let body = html! {
        main #main.narrow {
            p.brand-big { span.mark aria-hidden="true" { "◆" } " keygate" }
            h1 { "Set up keygate" }
            (steps_nav(1))
            (layout::notice(notice.as_ref()))
            form.card.stack method="post" action="/setup/claim" autocomplete="off" {
                (csrf(&token))
                p { "This keygate has no administrator yet. To prove you run it, enter the "
                    strong { "setup code" } " that " code { "keygate serve" } " printed in its log (the line with "
                    code { "setup code:" } "). It works once." }
                label for="setup_code" { "Setup code" }
                input id="setup_code" name="setup_code" required autocomplete="off" spellcheck="false" autocapitalize="characters";
                h2 { "1. Your super-admin account" }
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required value=(email);
                label for="password" { "Password " span.muted { "(at least 12 characters)" } }
                input id="password" name="password" type="password" autocomplete="new-password" minlength="12" required;
                button type="submit" { "Create account and continue" }
                @if !providers.is_empty() {
                    h2 { "Or with single sign-on" }
                    p.muted { "Enter the setup code above, then choose: the account you sign in with becomes the first super-admin (no password here)." }
                    @for (id, name) in &providers {
                        button.secondary type="submit" formaction={"/setup/oidc/" (id)} formnovalidate {
                            "Create the first super-admin with " (name)
                        }
                    }
                }
            }
        }
    };
    let mut response = html_response(status, layout::document("Set up keygate", body));
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
struct ClaimForm {
    setup_code: SecretString,
    email: String,
    password: SecretString,
}

impl std::fmt::Debug for ClaimForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimForm").field("email", &self.email).finish_non_exhaustive()
    }
}

#[tracing::instrument(skip_all)]
async fn claim(State(s): State<AppState>, AnonForm { form, parts }: AnonForm<ClaimForm>) -> Response {
    let code = SecretText::new(form.setup_code.expose_secret().to_owned());
    let password = SecretText::new(form.password.expose_secret().to_owned());
    match s.services.claim_setup(&code, &form.email, &password, source_addr(&parts)).await {
        Ok((_, issued)) => signed_in(&s, &parts.headers, issued.secret.expose(), "/setup?step=2&done=claimed"),
        Err(e) => {
            let e = ApiError::from(e);
            if e.status == StatusCode::CONFLICT {
                return Redirect::to("/login").into_response();
            }
            claim_page(&s, &parts.headers, &form.email, Some(Notice::problem(&e)), e.status)
        }
    }
}

#[derive(Deserialize)]
struct OidcClaimForm {
    setup_code: SecretString,
}

impl std::fmt::Debug for OidcClaimForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OidcClaimForm")
    }
}

/// Step 1 through single sign-on: the setup code is checked here (not spent), then the
/// browser goes on to the issuer; the code is spent when it comes back signed in.
#[tracing::instrument(skip_all, fields(provider = %id))]
async fn claim_with_oidc(
    State(s): State<AppState>,
    Path(id): Path<String>,
    AnonForm { form, parts }: AnonForm<OidcClaimForm>,
) -> Response {
    let code = SecretText::new(form.setup_code.expose_secret().to_owned());
    if code.expose().trim().is_empty() {
        let notice =
            Notice::Problem("enter the setup code from keygate's log first (the line with `setup code:`)".into());
        return claim_page(&s, &parts.headers, "", Some(notice), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let Some((_, name)) = s.services.oidc_providers().into_iter().find(|(p, _)| *p == id) else {
        return super::error_page(ApiError::not_found("no such sign-in provider"));
    };
    match s.services.oidc_begin(&id, "/setup?step=2&done=claimed", Some(&code)).await {
        Ok(start) => super::oidc::continue_page(&s, &parts.headers, &name, start),
        Err(refusal) if refusal.kind == RefusalKind::Conflict => Redirect::to("/login").into_response(),
        // A wrong setup code: the same page and status as the password form's.
        Err(refusal) if refusal.kind == RefusalKind::Invalid => {
            claim_page(&s, &parts.headers, "", Some(Notice::Problem(refusal.detail)), StatusCode::UNAUTHORIZED)
        }
        Err(refusal) => super::oidc::refusal_page(&refusal),
    }
}

async fn step_page(s: &AppState, v: &Viewer, step: u8, notice: Option<Notice>, form: Option<&AddForm>) -> Response {
    let Some(&(n, kind, title, order)) = STEPS.iter().find(|(n, ..)| *n == step) else {
        return Redirect::to("/setup?step=2").into_response();
    };
    let noun = match kind {
        "ai" => "keys for AI providers",
        "maps" => "keys for maps",
        "satellite" => "credentials for satellite imagery",
        _ => "key for sending email",
    };
    let keys = match s.services.list_credentials(&v.principal, ListScope::Only(CredentialScope::Operator)).await {
        Ok(keys) => keys,
        Err(e) => return super::error_page(e.into()),
    };
    let catalog = s.services.catalog();
    let mut providers: Vec<&Arc<Provider>> = catalog.all().iter().filter(|p| p.kind == kind).collect();
    providers.sort_by_key(|p| order.iter().position(|id| *id == p.id).unwrap_or(usize::MAX));
    let total = keys.len();
    let content = html! {
        (steps_nav(n))
        p.lead {
            "Add the platform's own " (noun) ". Every provider is optional; at least one key, in any step, "
            "is needed to finish. Each key is checked with the provider as you save it. Choose for each whether it is a "
            strong { "platform key" } " (users call it under their tier's limits) or " strong { "shared as the demo allowance" }
            " (a small daily allowance for users without a key of their own)."
        }
        div.providers { @for p in &providers {
            @let saved: Vec<&Credential> = keys.iter().filter(|c| c.provider == p.id).collect();
            section.card.provider id={"provider-" (p.id)} {
                h2 { (p.name) }
                @for c in &saved {
                    p.saved {
                        span.hint { (c.hint) } " · "
                        (status_badge(c))
                        " · " (if c.operator_shared { "demo allowance" } else { "platform key" })
                    }
                    @if c.validity != Validity::Valid { p.why { (verdict(s, c)) } }
                }
                form.stack method="post" action="/setup/key" autocomplete="off" {
                    (csrf(&v.csrf))
                    input type="hidden" name="step" value=(n);
                    input type="hidden" name="provider" value=(p.id);
                    (key_fields(p))
                    @let prior = form.filter(|f| f.provider() == p.id);
                    fieldset {
                        legend { "Use as" }
                        label.choice { input type="radio" name="use" value="platform" checked[prior.is_none_or(|f| f.use_as() != "demo")]; " Platform key (tier limits)" }
                        label.choice { input type="radio" name="use" value="demo" checked[prior.is_some_and(|f| f.use_as() == "demo")]; " Shared as the demo allowance" }
                    }
                    button type="submit" { "Save and check" }
                    @if let Some(url) = &p.key_url { p.muted.small { "Get a key: " a href=(url) rel="noopener noreferrer" target="_blank" { (url) } } }
                }
            }
        } }
        div.wizard-nav {
            @if n > 2 { a.button.secondary href={"/setup?step=" (n - 1)} { "Back" } }
            @if n < 5 {
                a.button href={"/setup?step=" (n + 1)} { "Next" @if !providers.iter().any(|p| keys.iter().any(|c| c.provider == p.id)) { " (skip this step)" } }
            } @else {
                form.inline method="post" action="/setup/finish" {
                    (csrf(&v.csrf))
                    button type="submit" { "Finish setup" }
                }
            }
        }
        p.muted { (total) " provider " (if total == 1 { "key" } else { "keys" }) " saved so far."
            @if total == 0 { " Add at least one to finish." } }
    };
    page(s, v, &format!("Set up keygate: {title}"), notice, content).await
}

fn status_badge(c: &Credential) -> Markup {
    let (label, class) = match c.validity {
        Validity::Valid => ("Valid", "ok"),
        Validity::Invalid => ("Invalid", "bad"),
        Validity::Unverified => ("Unverified", "warn"),
        Validity::Undecryptable => ("Undecryptable", "bad"),
    };
    html! { span class={"status " (class)} { (label) } }
}

fn key_fields(p: &Provider) -> Markup {
    let id = |field: &str| format!("{}-{field}", p.id);
    html! {
        @match p.credential {
            CredentialKind::ApiKey => {
                label for=(id("secret")) { (p.name) " key" }
                input id=(id("secret")) name="secret" type="password" autocomplete="off" spellcheck="false" required;
            }
            CredentialKind::ClientCredentials => {
                label for=(id("client_id")) { "Client ID" }
                input id=(id("client_id")) name="client_id" autocomplete="off" spellcheck="false" required;
                label for=(id("client_secret")) { "Client secret" }
                input id=(id("client_secret")) name="client_secret" type="password" autocomplete="off" required;
            }
            CredentialKind::Aws => {
                label for=(id("access_key_id")) { "Access key ID" }
                input id=(id("access_key_id")) name="access_key_id" autocomplete="off" required;
                label for=(id("secret_access_key")) { "Secret access key" }
                input id=(id("secret_access_key")) name="secret_access_key" type="password" autocomplete="off" required;
                label for=(id("region")) { "Region" }
                input id=(id("region")) name="region" autocomplete="off" required;
            }
        }
    }
}

#[derive(Deserialize)]
struct KeyForm {
    /// Text, not a number: serde_urlencoded cannot parse numbers inside a flattened form.
    step: String,
    #[serde(flatten)]
    key: AddForm,
}

impl std::fmt::Debug for KeyForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyForm").field("step", &self.step).finish_non_exhaustive()
    }
}

#[tracing::instrument(skip_all)]
async fn add_key(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<KeyForm>) -> Response {
    match s.services.setup_state().await {
        Ok(SetupState::Open) => {}
        Ok(_) => return Redirect::to("/setup").into_response(),
        Err(e) => return super::error_page(e.into()),
    }
    let step = form.step.parse::<u8>().unwrap_or(2);
    let Some(provider) = s.services.catalog().get(form.key.provider()).cloned() else {
        return super::error_page(ApiError::not_found("no such provider"));
    };
    let secret = match form.key.secret_input(&provider) {
        Ok(secret) => secret,
        Err(e) => return step_page(&s, &viewer, step, Some(Notice::problem(&e)), Some(&form.key.choices())).await,
    };
    let input = NewCredential {
        provider: provider.id.clone(),
        name: None,
        secret,
        model: None,
        scope: Some(CredentialScope::Operator),
        workspace_id: None,
        operator_shared: Some(form.key.use_as() == "demo"),
    };
    match s.services.create_credential(&viewer.principal, input).await {
        Ok(c) => Redirect::to(&format!("/setup?step={step}&done=added&key={}#provider-{}", c.id, provider.id))
            .into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            step_page(&s, &viewer, step, Some(Notice::problem(&e)), Some(&form.key.choices())).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct Empty {}

#[tracing::instrument(skip_all)]
async fn finish(State(s): State<AppState>, Posted { viewer, .. }: Posted<Empty>) -> Response {
    match s.services.finish_setup(&viewer.principal).await {
        Ok(()) => Redirect::to("/admin/providers?done=setup").into_response(),
        Err(e) => step_page(&s, &viewer, 5, Some(Notice::problem(&e.into())), None).await,
    }
}
