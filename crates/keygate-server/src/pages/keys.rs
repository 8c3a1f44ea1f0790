//! Key pages: `/settings/api-keys` (a person's own keys), `/workspace/keys` (the
//! workspace's shared keys: its admins manage them, members see which exist) and
//! `/admin/providers` (the operator's keys, each a platform key or shared as the demo
//! allowance). One table and one set of actions serve all three: add (validated live),
//! Test key, replace the secret (same row, same usage), rename, set or clear the model,
//! disable / enable, delete after a confirmation page.
//!
//! Not for: the rules (keygate-service's `credentials`); no page ever holds a secret.

use super::layout::{self, csrf, page, thousands, usd, when, Notice};
use super::session::{Posted, Viewer};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{Datelike, TimeZone, Utc};
use keygate_core::catalog::{CredentialKind, Provider};
use keygate_core::*;
use keygate_service::credentials::{CredentialPatch, ListScope, NewCredential, SecretInput};
use keygate_service::usage::{GroupBy, UsageQuery};
use keygate_vault::SecretText;
use maud::{html, Markup};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Which keys a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Personal,
    Workspace,
    Operator,
}

impl Place {
    fn base(self) -> &'static str {
        match self {
            Place::Personal => "/settings/api-keys",
            Place::Workspace => "/workspace/keys",
            Place::Operator => "/admin/providers",
        }
    }

    fn scope(self) -> CredentialScope {
        match self {
            Place::Personal => CredentialScope::User,
            Place::Workspace => CredentialScope::Workspace,
            Place::Operator => CredentialScope::Operator,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Place::Personal => "API keys",
            Place::Workspace => "Workspace keys",
            Place::Operator => "Providers",
        }
    }

    fn may_manage(self, viewer: &Viewer) -> bool {
        match self {
            Place::Personal => true,
            Place::Workspace => viewer.manages_workspace(),
            Place::Operator => viewer.is_admin(),
        }
    }
}

pub(super) fn router() -> Router<AppState> {
    let mut router = Router::new();
    for place in [Place::Personal, Place::Workspace, Place::Operator] {
        let base = place.base();
        router = router
            .route(
                base,
                get(move |s: State<AppState>, v: Viewer, q: Query<Done>| list(s, v, q, place))
                    .post(move |s: State<AppState>, p: Posted<AddForm>| add(s, p, place)),
            )
            .route(
                &format!("{base}/{{id}}/{{action}}"),
                post(move |s: State<AppState>, path: Path<(String, String)>, p: Posted<ActionForm>| {
                    act(s, path, p, place)
                }),
            )
            .route(
                &format!("{base}/{{id}}/delete"),
                get(move |s: State<AppState>, v: Viewer, path: Path<String>| confirm_delete(s, v, path, place)).post(
                    move |s: State<AppState>, Path(id): Path<String>, p: Posted<ActionForm>| {
                        act(s, Path((id, "delete".to_owned())), p, place)
                    },
                ),
            );
    }
    router
}

/// What a redirect after a change tells the page to say.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Done {
    done: Option<String>,
    key: Option<String>,
}

/// The add form. Secret fields are secrets from the moment they are parsed.
#[derive(Deserialize, Default)]
pub(super) struct AddForm {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: String,
    secret: Option<SecretString>,
    client_id: Option<SecretString>,
    client_secret: Option<SecretString>,
    access_key_id: Option<SecretString>,
    secret_access_key: Option<SecretString>,
    region: Option<SecretString>,
    session_token: Option<SecretString>,
    /// Operator keys: `platform` or `demo`.
    #[serde(default, rename = "use")]
    use_as: String,
}

impl std::fmt::Debug for AddForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddForm").field("provider", &self.provider).finish_non_exhaustive()
    }
}

impl AddForm {
    pub(super) fn provider(&self) -> &str {
        &self.provider
    }

    pub(super) fn use_as(&self) -> &str {
        &self.use_as
    }

    /// What a form shows again after an error: the choices, never the secret.
    pub(super) fn choices(&self) -> AddForm {
        AddForm {
            provider: self.provider.clone(),
            name: self.name.clone(),
            model: self.model.clone(),
            use_as: self.use_as.clone(),
            ..Default::default()
        }
    }

    /// The pasted credential, shaped as the provider takes it.
    pub(super) fn secret_input(&self, provider: &Provider) -> Result<SecretInput, ApiError> {
        let text = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default();
        let missing = |what: &str| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("paste the {what} for {}", provider.name),
            )
        };
        match provider.credential {
            CredentialKind::ApiKey => {
                let key = text(&self.secret);
                if key.trim().is_empty() {
                    return Err(missing("key"));
                }
                Ok(SecretInput::Key(SecretText::new(key)))
            }
            CredentialKind::ClientCredentials => {
                let mut fields = BTreeMap::new();
                for (name, value) in [("client_id", &self.client_id), ("client_secret", &self.client_secret)] {
                    let value = text(value);
                    if value.trim().is_empty() {
                        return Err(missing(&name.replace('_', " ")));
                    }
                    fields.insert(name.to_owned(), SecretText::new(value));
                }
                Ok(SecretInput::Fields(fields))
            }
            CredentialKind::Aws => {
                let mut fields = BTreeMap::new();
                for (name, value) in [
                    ("access_key_id", &self.access_key_id),
                    ("secret_access_key", &self.secret_access_key),
                    ("region", &self.region),
                ] {
                    let value = text(value);
                    if value.trim().is_empty() {
                        return Err(missing(&name.replace('_', " ")));
                    }
                    fields.insert(name.to_owned(), SecretText::new(value));
                }
                let token = text(&self.session_token);
                if !token.trim().is_empty() {
                    fields.insert("session_token".into(), SecretText::new(token));
                }
                Ok(SecretInput::Fields(fields))
            }
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct ActionForm {
    name: Option<String>,
    model: Option<String>,
    status: Option<String>,
    #[serde(rename = "use")]
    use_as: Option<String>,
    secret: Option<SecretString>,
    client_id: Option<SecretString>,
    client_secret: Option<SecretString>,
    access_key_id: Option<SecretString>,
    secret_access_key: Option<SecretString>,
    region: Option<SecretString>,
    session_token: Option<SecretString>,
}

impl std::fmt::Debug for ActionForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionForm").field("name", &self.name).finish_non_exhaustive()
    }
}

async fn list(State(s): State<AppState>, viewer: Viewer, Query(done): Query<Done>, place: Place) -> Response {
    if place == Place::Operator && !viewer.is_admin() {
        return super::error_page(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this page is for super-admins",
        ));
    }
    let notice = match done_notice(&s, &viewer, &done).await {
        Ok(n) => n,
        Err(e) => Some(Notice::problem(&e)),
    };
    render(&s, &viewer, place, notice, &AddForm::default()).await
}

async fn done_notice(s: &AppState, viewer: &Viewer, done: &Done) -> Result<Option<Notice>, ApiError> {
    let Some(what) = done.done.as_deref() else { return Ok(None) };
    let credential = match done.key.as_deref().and_then(|k| k.parse().ok()) {
        Some(id) => Some(s.services.get_credential(&viewer.principal, id).await?),
        None => None,
    };
    let name = |c: &Credential| {
        let provider = s.services.catalog().get(&c.provider).map(|p| p.name.clone()).unwrap_or_default();
        format!("{provider} key “{}” ({})", c.name, c.hint)
    };
    let text = match (what, &credential) {
        ("added", Some(c)) => format!("{} saved. {}", name(c), verdict(s, c)),
        ("replaced", Some(c)) => format!("The secret of {} was replaced. {}", name(c), verdict(s, c)),
        ("tested", Some(c)) => format!("Tested {}: {}", name(c), verdict(s, c)),
        ("edited", Some(c)) => format!("{} updated.", name(c)),
        ("disabled", Some(c)) => format!("{} is disabled: it is not used for calls until you enable it.", name(c)),
        ("enabled", Some(c)) => format!("{} is enabled again.", name(c)),
        ("deleted", _) => "The key was deleted; keygate no longer holds it.".to_owned(),
        ("setup", _) => "Setup is finished: the wizard is locked. Manage the platform's keys here.".to_owned(),
        _ => return Ok(None),
    };
    let fix =
        credential.as_ref().is_some_and(|c| c.validity != Validity::Valid && c.status == CredentialStatus::Active);
    Ok(Some(if fix && what != "deleted" { Notice::Warning(text) } else { Notice::Done(text) }))
}

/// What a key's validity means for the person, and what to do about it.
pub(super) fn verdict(s: &AppState, c: &Credential) -> String {
    let provider = s.services.catalog().get(&c.provider);
    let detail = c.validity_detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
    match (c.status, c.validity) {
        (CredentialStatus::Disabled, _) => "Disabled: not used for calls. Enable it to use it again.".into(),
        (_, Validity::Valid) => "Valid: the provider accepted it.".into(),
        // The probe's own words already say what to do.
        (_, Validity::Invalid) if c.validity_detail.is_some() => {
            format!("Invalid: the provider rejected it. {}", c.validity_detail.as_deref().unwrap_or_default())
        }
        (_, Validity::Invalid) => format!(
            "Invalid: the provider rejected it. Check that you copied the whole key and that it is still active{}, then replace it.",
            provider.and_then(|p| p.key_url.as_deref()).map(|u| format!(" at {u}")).unwrap_or_default()
        ),
        (_, Validity::Unverified) => format!(
            "Unverified: saved, but the provider could not be asked{detail}. It will be checked on first use; press Test key to try again."
        ),
        (_, Validity::Undecryptable) => {
            "Cannot be decrypted: the master key it was sealed with is not loaded. Tell the operator, or replace the key.".into()
        }
    }
}

fn status_label(c: &Credential) -> (&'static str, &'static str) {
    match (c.status, c.validity) {
        (CredentialStatus::Disabled, _) => ("Disabled", "disabled"),
        (_, Validity::Valid) => ("Active", "ok"),
        (_, Validity::Invalid) => ("Invalid", "bad"),
        (_, Validity::Unverified) => ("Unverified", "warn"),
        (_, Validity::Undecryptable) => ("Undecryptable", "bad"),
    }
}

pub(super) async fn render(
    s: &AppState,
    viewer: &Viewer,
    place: Place,
    notice: Option<Notice>,
    form: &AddForm,
) -> Response {
    let p = &viewer.principal;
    let keys = match s.services.list_credentials(p, ListScope::Only(place.scope())).await {
        Ok(keys) => keys,
        Err(e) => return super::error_page(e.into()),
    };
    let month = month_usage(s, viewer, place).await;
    let manage = place.may_manage(viewer);
    let catalog = s.services.catalog();
    let policy = s.services.policy();
    let content = html! {
        (intro(place, policy.max_keys_per_user, keys.len()))
        @if keys.is_empty() {
            p.empty { "No keys yet." @if manage { " Add one below." } }
        } @else {
            div.table-wrap tabindex="0" {
                table.keys {
                    caption.visually-hidden { (place.title()) }
                    thead { tr {
                        th scope="col" { "Provider" } th scope="col" { "Name" } th scope="col" { "Key" }
                        @if place == Place::Operator { th scope="col" { "Use" } }
                        th scope="col" { "Model" } th scope="col" { "Created" } th scope="col" { "Last used" }
                        th scope="col" { @if place == Place::Personal { "This month" } @else { "Usage (all time)" } }
                        @if manage { th scope="col" { span.visually-hidden { "Actions" } } }
                    } }
                    tbody {
                        @for c in &keys {
                            (row(s, viewer, place, c, month.get(&c.id.to_string()), manage))
                        }
                    }
                }
            }
        }
        @if manage { (add_form(s, viewer, place, form)) }
        (where_to_get(catalog.all()))
    };
    page(s, viewer, place.title(), notice, content).await
}

fn intro(place: Place, max_keys: u32, held: usize) -> Markup {
    html! {
        @match place {
            Place::Personal => p.lead {
                "Your own provider keys. keygate encrypts each one, checks it with the provider, and never shows it again: "
                "you see its last four characters. Calls you make through keygate use your key first. "
                strong { "You can hold up to " (max_keys) " keys (" (held) " now), one per provider:" }
                " adding a key for a provider you already have replaces the old one."
            },
            Place::Workspace => p.lead {
                "Keys shared by everyone in this workspace. They serve calls for members who have no key of their own, "
                "only on the provider's inference endpoints. Members see which keys exist, never the keys themselves; "
                "workspace owners and admins add and change them."
            },
            Place::Operator => p.lead {
                "The platform's own keys. A " strong { "platform" } " key serves users under their tier's rate limits; "
                "a " strong { "demo" } " key is shared as the daily demo allowance for users without a key of their own. "
                "One of each per provider."
            },
        }
    }
}

fn row(s: &AppState, viewer: &Viewer, place: Place, c: &Credential, month: Option<&Totals>, manage: bool) -> Markup {
    let provider = s.services.catalog().get(&c.provider);
    let provider_name = provider.map(|p| p.name.as_str()).unwrap_or(c.provider.as_str());
    let (label, class) = status_label(c);
    let base = format!("{}/{}", place.base(), c.id);
    let usage = match month {
        Some(t) => (t.requests, t.input + t.output, t.cost),
        None if place == Place::Personal => (0, 0, 0),
        None => (c.usage.requests, c.usage.input_tokens + c.usage.output_tokens, c.usage.cost_nano_usd),
    };
    html! {
        tr data-key-id=(c.id) data-provider=(c.provider) {
            td data-label="Provider" { (provider_name) }
            td data-label="Name" { (c.name) }
            td data-label="Key" {
                span.hint { (c.hint) } " · " span class={"status " (class)} { (label) }
                @if !(c.validity == Validity::Valid && c.status == CredentialStatus::Active) {
                    p.why { (verdict(s, c)) }
                }
                @if let Some(checked) = c.validity_checked_at { p.muted.small { "checked " (when(Some(checked))) } }
            }
            @if place == Place::Operator {
                td data-label="Use" { @if c.operator_shared { "Demo allowance" } @else { "Platform (tier limits)" } }
            }
            td data-label="Model" {
                @match &c.model {
                    Some(m) => code { (m) },
                    None => span.muted { "default" @if let Some(d) = provider.and_then(|p| p.default_model.as_deref()) { " (" (d) ")" } },
                }
            }
            td data-label="Created" { (when(Some(c.created_at))) }
            td data-label="Last used" { (when(c.last_used_at)) }
            td data-label="Usage" {
                (thousands(usage.0)) " requests" br;
                (thousands(usage.1)) " tokens" br;
                (usd(usage.2))
            }
            @if manage {
                td.actions {
                    form.inline method="post" action={(base) "/test"} {
                        (csrf(&viewer.csrf))
                        button.secondary type="submit" { "Test key" }
                    }
                    @if c.status == CredentialStatus::Active {
                        form.inline method="post" action={(base) "/status"} {
                            (csrf(&viewer.csrf)) input type="hidden" name="status" value="disabled";
                            button.secondary type="submit" { "Disable" }
                        }
                    } @else {
                        form.inline method="post" action={(base) "/status"} {
                            (csrf(&viewer.csrf)) input type="hidden" name="status" value="active";
                            button.secondary type="submit" { "Enable" }
                        }
                    }
                    a.button.danger href={(base) "/delete"} { "Delete…" }
                    details {
                        summary { "Edit" }
                        form.stack method="post" action={(base) "/edit"} {
                            (csrf(&viewer.csrf))
                            label for={"name-" (c.id)} { "Name" }
                            input id={"name-" (c.id)} name="name" value=(c.name) maxlength="100" required;
                            label for={"model-" (c.id)} { "Model override " span.muted { "(empty: the provider's default)" } }
                            input id={"model-" (c.id)} name="model" value=(c.model.clone().unwrap_or_default());
                            @if place == Place::Operator {
                                fieldset {
                                    legend { "Use" }
                                    label.choice { input type="radio" name="use" value="platform" checked[!c.operator_shared]; " Platform key (tier limits)" }
                                    label.choice { input type="radio" name="use" value="demo" checked[c.operator_shared]; " Shared as the demo allowance" }
                                }
                            }
                            button type="submit" { "Save" }
                        }
                    }
                    details {
                        summary { "Replace key" }
                        form.stack method="post" action={(base) "/replace"} autocomplete="off" {
                            (csrf(&viewer.csrf))
                            @if let Some(p) = provider { (secret_fields(p, &format!("r-{}", c.id))) }
                            p.muted.small { "Same row, same usage history; the new key is checked first." }
                            button type="submit" { "Replace" }
                        }
                    }
                }
            }
        }
    }
}

/// The secret inputs a provider's credential needs. Never pre-filled.
fn secret_fields(p: &Provider, id_prefix: &str) -> Markup {
    let field = |name: &str, label: &str, secret: bool| {
        let id = format!("{id_prefix}-{name}");
        html! {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(if secret { "password" } else { "text" }) autocomplete="off"
                spellcheck="false" autocapitalize="off" required;
        }
    };
    html! {
        @match p.credential {
            CredentialKind::ApiKey => {
                @let id = format!("{id_prefix}-secret");
                label for=(id) { (p.name) " key" }
                input id=(id) name="secret" type="password" autocomplete="off" spellcheck="false" autocapitalize="off"
                    required placeholder=(p.key_prefixes.first().map(|k| format!("{k}…")).unwrap_or_default());
            }
            CredentialKind::ClientCredentials => {
                (field("client_id", "Client ID", false))
                (field("client_secret", "Client secret", true))
            }
            CredentialKind::Aws => {
                (field("access_key_id", "Access key ID", false))
                (field("secret_access_key", "Secret access key", true))
                (field("region", "Region (e.g. us-east-1)", false))
                @let id = format!("{id_prefix}-session_token");
                label for=(id) { "Session token " span.muted { "(optional)" } }
                input id=(id) name="session_token" type="password" autocomplete="off";
            }
        }
    }
}

/// Adding a key: one form for the providers that take a single key, one per provider
/// with several fields (no script needed to show the right fields).
fn add_form(s: &AppState, viewer: &Viewer, place: Place, form: &AddForm) -> Markup {
    let catalog = s.services.catalog();
    // Providers that hold keys in this place (`github-git` uses `github`'s; a GitHub
    // token is never an operator key).
    let keyed = |p: &&Arc<Provider>| p.uses_key_of.is_none() && p.key_scopes.contains(&place.scope());
    let single: Vec<&Arc<Provider>> =
        catalog.all().iter().filter(keyed).filter(|p| p.credential == CredentialKind::ApiKey).collect();
    let multi: Vec<&Arc<Provider>> =
        catalog.all().iter().filter(keyed).filter(|p| p.credential != CredentialKind::ApiKey).collect();
    let kinds = [("ai", "AI"), ("maps", "Maps"), ("satellite", "Satellite"), ("email", "Email"), ("code", "Code")];
    let common = |prefix: &str| {
        html! {
            label for={(prefix) "-name"} { "Name " span.muted { "(optional)" } }
            input id={(prefix) "-name"} name="name" maxlength="100" value=(form.name);
            label for={(prefix) "-model"} { "Model override " span.muted { "(optional)" } }
            input id={(prefix) "-model"} name="model" value=(form.model);
            @if place == Place::Operator {
                fieldset {
                    legend { "Use this key as" }
                    label.choice { input type="radio" name="use" value="platform" checked[form.use_as != "demo"]; " Platform key (under tier limits)" }
                    label.choice { input type="radio" name="use" value="demo" checked[form.use_as == "demo"]; " Shared as the demo allowance" }
                }
            }
        }
    };
    html! {
        section.card #add {
            h2 { "Add a key" }
            form.stack method="post" action=(place.base()) autocomplete="off" {
                (csrf(&viewer.csrf))
                label for="add-provider" { "Provider" }
                select id="add-provider" name="provider" required {
                    @for (kind, label) in kinds {
                        @let group: Vec<_> = single.iter().filter(|p| p.kind == kind).collect();
                        @if !group.is_empty() {
                            optgroup label=(label) {
                                @for p in group { option value=(p.id) selected[form.provider == p.id] { (p.name) } }
                            }
                        }
                    }
                }
                label for="add-secret" { "Key" }
                input id="add-secret" name="secret" type="password" autocomplete="off" spellcheck="false"
                    autocapitalize="off" required aria-describedby="add-secret-help";
                p.muted.small #add-secret-help {
                    "Paste the whole key; spaces and line breaks around it are removed. keygate checks that it "
                    "matches the provider you chose before sending it anywhere, then asks the provider whether it works."
                }
                (common("add"))
                button type="submit" { "Add and test key" }
            }
            @for p in &multi {
                details.more {
                    summary { "Add " (p.name) " credentials" }
                    form.stack method="post" action=(place.base()) autocomplete="off" {
                        (csrf(&viewer.csrf))
                        input type="hidden" name="provider" value=(p.id);
                        (secret_fields(p, &format!("add-{}", p.id)))
                        (common(&format!("add-{}", p.id)))
                        button type="submit" { "Add and test" }
                    }
                }
            }
        }
    }
}

fn where_to_get(providers: &[Arc<Provider>]) -> Markup {
    html! {
        section.help {
            h2 { "Where to get a key" }
            ul.links {
                @for p in providers {
                    @if let Some(url) = &p.key_url {
                        li { a href=(url) rel="noopener noreferrer" target="_blank" { (p.name) } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: i64,
    input: i64,
    output: i64,
    cost: i64,
}

/// This month's usage per credential, for a person's own keys.
async fn month_usage(s: &AppState, viewer: &Viewer, place: Place) -> HashMap<String, Totals> {
    if place != Place::Personal {
        return HashMap::new();
    }
    let now = Utc::now();
    let since = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single();
    let query = UsageQuery { provider: None, since, until: None };
    match s.services.usage_report(&viewer.principal, query, GroupBy::Credential).await {
        Ok(report) => report
            .rows
            .into_iter()
            .map(|r| {
                (
                    r.key,
                    Totals {
                        requests: r.requests,
                        input: r.input_tokens,
                        output: r.output_tokens,
                        cost: r.cost_nano_usd,
                    },
                )
            })
            .collect(),
        Err(_) => HashMap::new(),
    }
}

#[tracing::instrument(skip_all)]
async fn add(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<AddForm>, place: Place) -> Response {
    let Some(provider) = s.services.catalog().get(&form.provider).cloned() else {
        let e = ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_provider",
            "choose a provider from the list",
        );
        return render(&s, &viewer, place, Some(Notice::problem(&e)), &form.choices()).await;
    };
    let secret = match form.secret_input(&provider) {
        Ok(secret) => secret,
        Err(e) => return render(&s, &viewer, place, Some(Notice::problem(&e)), &form.choices()).await,
    };
    let input = NewCredential {
        provider: provider.id.clone(),
        name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
        secret,
        model: Some(form.model.trim().to_owned()).filter(|m| !m.is_empty()),
        scope: Some(place.scope()),
        workspace_id: None,
        operator_shared: (place == Place::Operator).then_some(form.use_as == "demo"),
    };
    match s.services.create_credential(&viewer.principal, input).await {
        Ok(c) => Redirect::to(&format!("{}?done=added&key={}", place.base(), c.id)).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            render(&s, &viewer, place, Some(Notice::problem(&e)), &form.choices()).await
        }
    }
}

#[tracing::instrument(skip_all, fields(action = %action))]
async fn act(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Posted { viewer, form, .. }: Posted<ActionForm>,
    place: Place,
) -> Response {
    let Ok(id) = id.parse::<CredentialId>() else {
        return super::error_page(ApiError::not_found("no such key"));
    };
    let p = &viewer.principal;
    let services = &s.services;
    let result = match action.as_str() {
        "test" => services.test_credential(p, id).await.map(|_| "tested"),
        "edit" => {
            let patch = CredentialPatch {
                name: form.name.clone(),
                model: form.model.as_ref().map(|m| Some(m.trim().to_owned()).filter(|m| !m.is_empty())),
                operator_shared: (place == Place::Operator).then(|| form.use_as.as_deref() == Some("demo")),
                status: None,
            };
            services.update_credential(p, id, patch).await.map(|_| "edited")
        }
        "status" => {
            let status = match form.status.as_deref() {
                Some("active") => CredentialStatus::Active,
                Some("disabled") => CredentialStatus::Disabled,
                _ => return super::error_page(ApiError::not_found("no such action")),
            };
            let patch = CredentialPatch { status: Some(status), ..Default::default() };
            let done = if status == CredentialStatus::Active { "enabled" } else { "disabled" };
            services.update_credential(p, id, patch).await.map(|_| done)
        }
        "replace" => {
            let credential = match services.get_credential(p, id).await {
                Ok(c) => c,
                Err(e) => return super::error_page(e.into()),
            };
            let Some(provider) = services.catalog().get(&credential.provider).cloned() else {
                return super::error_page(ApiError::not_found("no such provider"));
            };
            let as_add = AddForm {
                secret: form.secret,
                client_id: form.client_id,
                client_secret: form.client_secret,
                access_key_id: form.access_key_id,
                secret_access_key: form.secret_access_key,
                region: form.region,
                session_token: form.session_token,
                ..Default::default()
            };
            match as_add.secret_input(&provider) {
                Ok(secret) => services.replace_secret(p, id, secret).await.map(|_| "replaced"),
                Err(e) => return render(&s, &viewer, place, Some(Notice::problem(&e)), &AddForm::default()).await,
            }
        }
        "delete" => services.delete_credential(p, id).await.map(|_| "deleted"),
        _ => return super::error_page(ApiError::not_found("no such action")),
    };
    match result {
        Ok("deleted") => Redirect::to(&format!("{}?done=deleted", place.base())).into_response(),
        Ok(done) => Redirect::to(&format!("{}?done={done}&key={id}", place.base())).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            // Not yours, or not allowed: a page of its own, with its status.
            if matches!(e.status.as_u16(), 403 | 404) {
                return super::error_page(e);
            }
            render(&s, &viewer, place, Some(Notice::problem(&e)), &AddForm::default()).await
        }
    }
}

async fn confirm_delete(State(s): State<AppState>, viewer: Viewer, Path(id): Path<String>, place: Place) -> Response {
    let Ok(id) = id.parse::<CredentialId>() else {
        return super::error_page(ApiError::not_found("no such key"));
    };
    let c = match s.services.get_credential(&viewer.principal, id).await {
        Ok(c) => c,
        Err(e) => return super::error_page(e.into()),
    };
    let provider = s.services.catalog().get(&c.provider).map(|p| p.name.clone()).unwrap_or_default();
    let content = html! {
        section.card.danger-zone {
            p { "Delete the " (provider) " key " strong { "“" (c.name) "”" } " (" span.hint { (c.hint) } ")?" }
            p { "keygate forgets the key at once; calls that used it fall back to the next key in line, if any. "
                "Its usage history stays in your usage reports. This cannot be undone: to use the key again you would paste it again." }
            form.inline method="post" action={(place.base()) "/" (c.id) "/delete"} {
                (csrf(&viewer.csrf))
                button.danger type="submit" { "Delete key" }
            }
            " "
            a.button.secondary href=(place.base()) { "Cancel" }
        }
    };
    layout::page(&s, &viewer, "Delete key", None, content).await
}
