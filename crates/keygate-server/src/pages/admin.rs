//! The super-admin pages: `/admin/settings` (the policy: tiers and their limits, the
//! default tier, the demo allowance, provider priority, key limits, the prompt guard;
//! adding and removing a tier), `/admin/users` (search, tier, super-admin), `/admin/workspaces` (pause, cancel,
//! restore, create, add a member, delete after typing its name) and `/admin/audit`
//! (the audit log, filtered and paged). Each handler checks [`Viewer::is_admin`] first
//! and the service checks again; a form that does not fit is shown again as typed, with
//! what is wrong.
//!
//! Not for: the rules (keygate-service's `admin`, `Policy::problems`); operator keys
//! (`keys`, `/admin/providers`); a workspace's own prompt guard (the admin API's
//! `/api/v1/admin/workspaces/{id}/prompt-guard`).

use super::layout::{csrf, page, when, Notice};
use super::session::{percent_encode, Posted, Viewer};
use crate::{ApiError, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use keygate_core::guard::{Kind, Mode, PromptGuard};
use keygate_core::policy::{DemoAllowance, Policy, TierLimits};
use keygate_core::*;
use keygate_service::admin::{AuditPage, AuditQuery};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// Rows per page on the users, workspaces and audit pages.
const PAGE_SIZE: usize = 50;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/settings", get(settings).post(save_settings))
        .route("/admin/settings/tiers", post(add_tier))
        .route("/admin/settings/tiers/remove", post(remove_tier))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}", post(update_user))
        .route("/admin/workspaces", get(workspaces).post(create_workspace))
        .route("/admin/workspaces/{id}/status", post(set_workspace_status))
        .route("/admin/workspaces/{id}/members", post(add_member))
        .route("/admin/workspaces/{id}/delete", get(confirm_delete).post(delete_workspace))
        .route("/admin/audit", get(audit))
}

fn forbidden() -> Response {
    super::error_page(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "these pages are for super-admins"))
}

fn problem(e: keygate_service::ServiceError) -> Notice {
    Notice::problem(&ApiError::from(e))
}

/// A form whose field names are not fixed (a tier's limits are named after the tier):
/// read as pairs.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// `?done=…` after a change, and which row it was about.
#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
    id: Option<String>,
}

/// `?q=…&page=…` on a list.
#[derive(Debug, Default, Clone, Deserialize)]
struct Listing {
    #[serde(default)]
    q: String,
    page: Option<String>,
}

impl Listing {
    fn page(&self) -> usize {
        self.page.as_deref().and_then(|p| p.trim().parse().ok()).filter(|p| *p >= 1).unwrap_or(1)
    }

    fn matches(&self, texts: &[Option<&str>]) -> bool {
        let q = self.q.trim().to_lowercase();
        q.is_empty() || texts.iter().flatten().any(|t| t.to_lowercase().contains(&q))
    }

    /// The query string for page `page` of this listing.
    fn href(&self, base: &str, page: usize) -> String {
        let q = self.q.trim();
        match (q.is_empty(), page) {
            (true, 1) => base.to_owned(),
            (true, _) => format!("{base}?page={page}"),
            (false, _) => format!("{base}?q={}&page={page}", percent_encode(q)),
        }
    }
}

/// One page of `rows`, and how many pages there are.
fn paginate<T>(rows: &[T], page: usize) -> (&[T], usize) {
    let pages = rows.len().div_ceil(PAGE_SIZE).max(1);
    let start = (page.clamp(1, pages) - 1) * PAGE_SIZE;
    (&rows[start..rows.len().min(start + PAGE_SIZE)], pages)
}

fn pager(prev: Option<String>, next: Option<String>, label: String) -> Markup {
    html! {
        @if prev.is_some() || next.is_some() {
            nav.pager aria-label="Pages" {
                p {
                    @if let Some(href) = prev { a href=(href) rel="prev" { "← Previous" } " · " }
                    (label)
                    @if let Some(href) = next { " · " a href=(href) rel="next" { "Next →" } }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// /admin/settings

/// The settings form as typed: text until it parses, so a form with a mistake is shown
/// again exactly as it was sent.
#[derive(Debug, Clone, Default)]
struct PolicyDraft {
    tiers: Vec<TierDraft>,
    default_tier: String,
    demo_enabled: bool,
    demo_tokens_per_day: String,
    demo_days: String,
    provider_priority: String,
    auto_fallback: bool,
    max_keys_per_user: String,
    reject_invalid_keys: bool,
    guard_mode: String,
    guard_kinds: Vec<Kind>,
}

#[derive(Debug, Clone, Default)]
struct TierDraft {
    name: String,
    per_minute: String,
    per_day: String,
    byok: bool,
}

impl TierDraft {
    fn of(name: &str, t: &TierLimits) -> Self {
        TierDraft {
            name: name.to_owned(),
            per_minute: t.requests_per_minute.to_string(),
            per_day: t.requests_per_day.to_string(),
            byok: t.byok,
        }
    }

    fn limits(&self, problems: &mut Vec<String>) -> TierLimits {
        TierLimits {
            requests_per_minute: number(
                &format!("tier {}: requests per minute", self.name),
                &self.per_minute,
                problems,
            ),
            requests_per_day: number(&format!("tier {}: requests per day", self.name), &self.per_day, problems),
            byok: self.byok,
        }
    }
}

/// A whole number, or a problem naming the field.
fn number<T: FromStr + Default>(field: &str, text: &str, problems: &mut Vec<String>) -> T {
    let text = text.trim().replace([',', '_'], "");
    match text.parse() {
        Ok(n) => n,
        Err(_) => {
            problems.push(format!("{field}: `{text}` is not a whole number of 0 or more"));
            T::default()
        }
    }
}

impl PolicyDraft {
    fn of(p: &Policy) -> Self {
        PolicyDraft {
            tiers: p.tiers.iter().map(|(name, t)| TierDraft::of(name, t)).collect(),
            default_tier: p.default_tier.clone(),
            demo_enabled: p.demo.enabled,
            demo_tokens_per_day: p.demo.tokens_per_day.to_string(),
            demo_days: p.demo.days.to_string(),
            provider_priority: p.provider_priority.join(", "),
            auto_fallback: p.auto_fallback,
            max_keys_per_user: p.max_keys_per_user.to_string(),
            reject_invalid_keys: p.reject_invalid_keys,
            guard_mode: p.prompt_guard.mode.as_str().to_owned(),
            guard_kinds: p.prompt_guard.kinds.clone(),
        }
    }

    /// The settings form: each `tier` field names a tier, whose limits are
    /// `per_minute.<tier>`, `per_day.<tier>` and `byok.<tier>`.
    fn from_form(f: &Fields) -> Self {
        let tiers =
            f.0.iter()
                .filter(|(k, _)| k == "tier")
                .map(|(_, name)| TierDraft {
                    name: name.clone(),
                    per_minute: f.get(&format!("per_minute.{name}")).to_owned(),
                    per_day: f.get(&format!("per_day.{name}")).to_owned(),
                    byok: f.checked(&format!("byok.{name}")),
                })
                .collect();
        PolicyDraft {
            tiers,
            default_tier: f.get("default_tier").to_owned(),
            demo_enabled: f.checked("demo_enabled"),
            demo_tokens_per_day: f.get("demo_tokens_per_day").to_owned(),
            demo_days: f.get("demo_days").to_owned(),
            provider_priority: f.get("provider_priority").to_owned(),
            auto_fallback: f.checked("auto_fallback"),
            max_keys_per_user: f.get("max_keys_per_user").to_owned(),
            reject_invalid_keys: f.checked("reject_invalid_keys"),
            guard_mode: f.get("guard_mode").to_owned(),
            guard_kinds: Kind::ALL
                .into_iter()
                .filter(|k| f.0.iter().any(|(n, v)| n == "guard_kind" && v == k.as_str()))
                .collect(),
        }
    }

    /// The policy this draft spells, or what does not parse. Whether the policy makes
    /// sense is the service's to say.
    fn policy(&self) -> Result<Policy, String> {
        let mut problems = Vec::new();
        let mut tiers = BTreeMap::new();
        for t in &self.tiers {
            let limits = t.limits(&mut problems);
            if tiers.insert(t.name.clone(), limits).is_some() {
                problems.push(format!("tier {}: named twice", t.name));
            }
        }
        let policy = Policy {
            tiers,
            default_tier: self.default_tier.trim().to_owned(),
            demo: DemoAllowance {
                enabled: self.demo_enabled,
                tokens_per_day: number("demo allowance: tokens per day", &self.demo_tokens_per_day, &mut problems),
                days: number("demo allowance: days", &self.demo_days, &mut problems),
            },
            provider_priority: self
                .provider_priority
                .split([',', ' ', '\n'])
                .map(|id| id.trim().to_lowercase())
                .filter(|id| !id.is_empty())
                .collect(),
            max_keys_per_user: number("keys per user", &self.max_keys_per_user, &mut problems),
            reject_invalid_keys: self.reject_invalid_keys,
            prompt_guard: PromptGuard {
                mode: self.guard_mode.parse().unwrap_or_else(|e: String| {
                    problems.push(format!("prompt guard: {e}"));
                    Mode::default()
                }),
                kinds: self.guard_kinds.clone(),
            },
            auto_fallback: self.auto_fallback,
        };
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The add-a-tier form as typed.
#[derive(Debug, Clone, Deserialize)]
struct NewTier {
    #[serde(default)]
    name: String,
    #[serde(default)]
    per_minute: String,
    #[serde(default)]
    per_day: String,
    byok: Option<String>,
}

impl Default for NewTier {
    fn default() -> Self {
        NewTier { name: String::new(), per_minute: "10".into(), per_day: "100".into(), byok: Some("on".into()) }
    }
}

#[tracing::instrument(skip_all)]
async fn settings(State(s): State<AppState>, viewer: Viewer, Query(done): Query<Done>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let policy = match s.services.admin_policy(&viewer.principal) {
        Ok(p) => p,
        Err(e) => return super::error_page(e.into()),
    };
    let notice = match done.done.as_deref() {
        Some("saved") => Some(Notice::Done("Settings saved. They apply from the next call.".into())),
        Some("tier-added") => Some(Notice::Done("Tier added. Assign it to users on the Users page.".into())),
        Some("tier-removed") => {
            Some(Notice::Done("Tier removed. Its users now have the default tier's limits.".into()))
        }
        _ => None,
    };
    render_settings(&s, &viewer, notice, &PolicyDraft::of(&policy), &NewTier::default()).await
}

#[tracing::instrument(skip_all)]
async fn save_settings(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<Fields>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let draft = PolicyDraft::from_form(&form);
    let policy = match draft.policy() {
        Ok(policy) => policy,
        Err(text) => {
            return render_settings(&s, &viewer, Some(Notice::Problem(text)), &draft, &NewTier::default()).await
        }
    };
    match s.services.admin_set_policy(&viewer.principal, policy).await {
        Ok(_) => Redirect::to("/admin/settings?done=saved").into_response(),
        Err(e) => render_settings(&s, &viewer, Some(problem(e)), &draft, &NewTier::default()).await,
    }
}

#[tracing::instrument(skip_all)]
async fn add_tier(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<NewTier>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let current = match s.services.admin_policy(&viewer.principal) {
        Ok(p) => p,
        Err(e) => return super::error_page(e.into()),
    };
    let draft = PolicyDraft::of(&current);
    let name = form.name.trim().to_owned();
    let tier = TierDraft {
        name: name.clone(),
        per_minute: form.per_minute.clone(),
        per_day: form.per_day.clone(),
        byok: form.byok.is_some(),
    };
    let mut problems = Vec::new();
    let limits = tier.limits(&mut problems);
    if name.is_empty() {
        problems.push("name the new tier".into());
    } else if current.tiers.contains_key(&name) {
        problems.push(format!("there is already a tier `{name}`: change its limits in the table above"));
    }
    if !problems.is_empty() {
        return render_settings(&s, &viewer, Some(Notice::Problem(problems.join("; "))), &draft, &form).await;
    }
    let mut policy = current.as_ref().clone();
    policy.tiers.insert(name, limits);
    match s.services.admin_set_policy(&viewer.principal, policy).await {
        Ok(_) => Redirect::to("/admin/settings?done=tier-added").into_response(),
        Err(e) => render_settings(&s, &viewer, Some(problem(e)), &draft, &form).await,
    }
}

#[derive(Debug, Deserialize)]
struct RemoveTier {
    #[serde(default)]
    tier: String,
}

#[tracing::instrument(skip_all)]
async fn remove_tier(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<RemoveTier>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let current = match s.services.admin_policy(&viewer.principal) {
        Ok(p) => p,
        Err(e) => return super::error_page(e.into()),
    };
    let draft = PolicyDraft::of(&current);
    let refuse = |text: String| Notice::Problem(text);
    let notice = if !current.tiers.contains_key(&form.tier) {
        Some(refuse(format!("there is no tier `{}`", form.tier)))
    } else if current.default_tier == form.tier {
        Some(refuse(format!("`{}` is the default tier: choose another default tier and save first", form.tier)))
    } else {
        None
    };
    if notice.is_some() {
        return render_settings(&s, &viewer, notice, &draft, &NewTier::default()).await;
    }
    let mut policy = current.as_ref().clone();
    policy.tiers.remove(&form.tier);
    match s.services.admin_set_policy(&viewer.principal, policy).await {
        Ok(_) => Redirect::to("/admin/settings?done=tier-removed").into_response(),
        Err(e) => render_settings(&s, &viewer, Some(problem(e)), &draft, &NewTier::default()).await,
    }
}

async fn render_settings(
    s: &AppState,
    viewer: &Viewer,
    notice: Option<Notice>,
    d: &PolicyDraft,
    new_tier: &NewTier,
) -> Response {
    let providers: Vec<&str> = s.services.catalog().all().iter().map(|p| p.id.as_str()).collect();
    let saved_tiers: Vec<String> = s.services.policy().tiers.keys().cloned().collect();
    let content = html! {
        p.lead { "How keygate treats calls: each tier's limits on platform keys and whether its users may bring their own keys, "
            "the demo allowance on shared operator keys, the order providers are tried in, and how many keys a person may hold. "
            "Changes apply from the next call, on every keygate process." }
        section.card {
            h2 { "Policy" }
            form method="post" action="/admin/settings" {
                (csrf(&viewer.csrf))
                fieldset {
                    legend { "Tiers" }
                    p.muted.small { "Limits apply to calls paid by platform keys. Without “own keys”, a tier's users' keys stay stored but unused." }
                    div.table-wrap tabindex="0" {
                        table.keys.tiers {
                            thead { tr {
                                th scope="col" { "Tier" } th scope="col" { "Requests per minute" }
                                th scope="col" { "Requests per day" } th scope="col" { "Own keys (BYOK)" }
                            } }
                            tbody {
                                @for t in &d.tiers {
                                    tr {
                                        td data-label="Tier" { code { (t.name) } input type="hidden" name="tier" value=(t.name); }
                                        td data-label="Per minute" {
                                            label.visually-hidden for={"per_minute." (t.name)} { (t.name) ": requests per minute" }
                                            input id={"per_minute." (t.name)} name={"per_minute." (t.name)} type="number" min="1" step="1"
                                                inputmode="numeric" required value=(t.per_minute);
                                        }
                                        td data-label="Per day" {
                                            label.visually-hidden for={"per_day." (t.name)} { (t.name) ": requests per day" }
                                            input id={"per_day." (t.name)} name={"per_day." (t.name)} type="number" min="1" step="1"
                                                inputmode="numeric" required value=(t.per_day);
                                        }
                                        td data-label="Own keys" {
                                            label.choice for={"byok." (t.name)} {
                                                input id={"byok." (t.name)} name={"byok." (t.name)} type="checkbox" value="on" checked[t.byok];
                                                " allowed"
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    label for="default_tier" { "Default tier " span.muted { "(users nobody assigned a tier, and users of a removed tier)" } }
                    select id="default_tier" name="default_tier" {
                        @for t in &d.tiers { option value=(t.name) selected[t.name == d.default_tier] { (t.name) } }
                        @if !d.tiers.iter().any(|t| t.name == d.default_tier) {
                            option value=(d.default_tier) selected { (d.default_tier) " (not a tier)" }
                        }
                    }
                }
                fieldset {
                    legend { "Demo allowance" }
                    p.muted.small { "Operator keys shared as the demo serve users without a key of their own, up to this many tokens per UTC day, "
                        "for this many days from their first demo call." }
                    label.choice for="demo_enabled" {
                        input id="demo_enabled" name="demo_enabled" type="checkbox" value="on" checked[d.demo_enabled];
                        " Offer the demo allowance"
                    }
                    label for="demo_tokens_per_day" { "Tokens per user per day" }
                    input id="demo_tokens_per_day" name="demo_tokens_per_day" type="number" min="0" step="1" inputmode="numeric"
                        required value=(d.demo_tokens_per_day);
                    label for="demo_days" { "Days from first use" }
                    input id="demo_days" name="demo_days" type="number" min="0" step="1" inputmode="numeric" required value=(d.demo_days);
                }
                label for="provider_priority" { "Provider priority" }
                input id="provider_priority" name="provider_priority" value=(d.provider_priority) spellcheck="false"
                    autocapitalize="off" aria-describedby="provider_priority-help";
                p.muted.small #provider_priority-help {
                    "Provider ids, comma separated: unified calls that name no provider try them in this order. Known ids: "
                    @for (i, id) in providers.iter().enumerate() { @if i > 0 { ", " } code { (id) } }
                }
                label.choice for="auto_fallback" {
                    input id="auto_fallback" name="auto_fallback" type="checkbox" value="on" checked[d.auto_fallback]
                        aria-describedby="auto_fallback-help";
                    " Fall back to the next provider"
                }
                p.muted.small #auto_fallback-help {
                    "When an " code { "auto" } " call's provider answers 429 or 5xx before anything reached the caller, "
                    "try the next provider in this order that has a key for the caller."
                }
                label for="max_keys_per_user" { "Keys per person " span.muted { "(personal keys one user may hold)" } }
                input id="max_keys_per_user" name="max_keys_per_user" type="number" min="1" step="1" inputmode="numeric"
                    required value=(d.max_keys_per_user);
                label.choice for="reject_invalid_keys" {
                    input id="reject_invalid_keys" name="reject_invalid_keys" type="checkbox" value="on" checked[d.reject_invalid_keys];
                    " Refuse keys the provider rejects " span.muted { "(otherwise they are saved and marked invalid)" }
                }
                fieldset {
                    legend { "Prompt guard" }
                    p.muted.small { "Every request to an AI provider is scanned for secrets that must never be pasted into a chat. "
                        "Block refuses the call (422 prompt_blocked, with an audit row); redact replaces each match with "
                        "[REDACTED:kind] and sends the rest. What was found is never logged or shown. "
                        "A workspace can be given its own setting through the admin API." }
                    label for="guard_mode" { "What to do with a match" }
                    select id="guard_mode" name="guard_mode" {
                        @for (mode, label) in [(Mode::Block, "Block the call"), (Mode::Redact, "Redact and send"), (Mode::Off, "Off")] {
                            option value=(mode.as_str()) selected[d.guard_mode == mode.as_str()] { (label) }
                        }
                    }
                    @for kind in Kind::ALL {
                        label.choice for={"guard_kind." (kind.as_str())} {
                            input id={"guard_kind." (kind.as_str())} name="guard_kind" type="checkbox" value=(kind.as_str())
                                checked[d.guard_kinds.contains(&kind)];
                            " " (guard_kind_label(kind))
                        }
                    }
                }
                button type="submit" { "Save settings" }
            }
        }
        section.card {
            h2 { "Add a tier" }
            form method="post" action="/admin/settings/tiers" {
                (csrf(&viewer.csrf))
                label for="new-tier-name" { "Name " span.muted { "(letters, digits, _ or -)" } }
                input id="new-tier-name" name="name" required maxlength="50" pattern="[A-Za-z0-9_-]+" spellcheck="false"
                    autocapitalize="off" value=(new_tier.name);
                label for="new-tier-per_minute" { "Requests per minute" }
                input id="new-tier-per_minute" name="per_minute" type="number" min="1" step="1" inputmode="numeric" required
                    value=(new_tier.per_minute);
                label for="new-tier-per_day" { "Requests per day" }
                input id="new-tier-per_day" name="per_day" type="number" min="1" step="1" inputmode="numeric" required
                    value=(new_tier.per_day);
                label.choice for="new-tier-byok" {
                    input id="new-tier-byok" name="byok" type="checkbox" value="on" checked[new_tier.byok.is_some()];
                    " Its users may bring their own keys"
                }
                button type="submit" { "Add tier" }
            }
        }
        @if saved_tiers.len() > 1 {
            section.card {
                h2 { "Remove a tier" }
                form method="post" action="/admin/settings/tiers/remove" {
                    (csrf(&viewer.csrf))
                    label for="remove-tier" { "Tier" }
                    select id="remove-tier" name="tier" {
                        @for t in &saved_tiers { option value=(t) { (t) } }
                    }
                    p.muted.small { "Its users keep the tier's name but get the default tier's limits. The default tier cannot be removed." }
                    button.danger type="submit" { "Remove tier" }
                }
            }
        }
    };
    page(s, viewer, "Settings", notice, content).await
}

/// A prompt guard kind as the settings form names it.
fn guard_kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::PrivateKey => "Private keys (PEM, OpenSSH)",
        Kind::AwsAccessKey => "AWS access key ids",
        Kind::CardNumber => "Card numbers (passing the Luhn check)",
        Kind::ProviderKey => "API keys of the providers keygate knows (sk-…, AIza…)",
    }
}

// ---------------------------------------------------------------------------------
// /admin/users

#[tracing::instrument(skip_all)]
async fn users(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(listing): Query<Listing>,
    Query(done): Query<Done>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    render_users(&s, &viewer, &listing, None, &done).await
}

fn who(u: &User) -> String {
    u.email.clone().or_else(|| u.external_id.clone()).unwrap_or_else(|| u.id.to_string())
}

async fn render_users(
    s: &AppState,
    viewer: &Viewer,
    listing: &Listing,
    notice: Option<Notice>,
    done: &Done,
) -> Response {
    let all = match s.services.admin_users(&viewer.principal).await {
        Ok(all) => all,
        Err(e) => return super::error_page(e.into()),
    };
    let policy = s.services.policy();
    let notice = notice.or_else(|| {
        let user = all.iter().find(|u| Some(u.id.to_string()) == done.id)?;
        match done.done.as_deref() {
            Some("saved") => Some(Notice::Done(format!(
                "Saved {}: tier {}{}.",
                who(user),
                user.tier,
                if user.super_admin { ", super-admin" } else { ", not a super-admin" }
            ))),
            _ => None,
        }
    });
    let found: Vec<&User> =
        all.iter().filter(|u| listing.matches(&[u.email.as_deref(), u.external_id.as_deref()])).collect();
    let page_no = listing.page();
    let (shown, pages) = paginate(&found, page_no);
    let page_no = page_no.min(pages);
    let back_q = listing.q.trim().to_owned();
    let content = html! {
        p.lead { "Everyone keygate knows: people who sign in here and users of host applications. "
            "A user's tier sets their limits on platform keys; super-admins manage all of keygate." }
        form.filters method="get" action="/admin/users" role="search" {
            label for="users-q" { "Email or external id contains" input id="users-q" name="q" type="search" value=(listing.q); }
            button.secondary type="submit" { "Search" }
            @if !back_q.is_empty() { a href="/admin/users" { "Show all" } }
        }
        p.muted { (found.len()) " of " (all.len()) " users" @if !back_q.is_empty() { " match “" (back_q) "”" } "." }
        @if shown.is_empty() {
            p.empty { "No users match." }
        } @else {
            div.table-wrap tabindex="0" {
                table.keys.users {
                    thead { tr {
                        th scope="col" { "User" } th scope="col" { "Tier" } th scope="col" { "Super-admin" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for u in shown {
                            tr data-user-id=(u.id) {
                                td data-label="User" {
                                    (who(u))
                                    @if u.email.is_some() { @if let Some(ext) = &u.external_id { br; span.muted.small { "external id " code { (ext) } } } }
                                    @if u.id == viewer.principal.user.id { " " span.badge { "you" } }
                                }
                                td data-label="Tier" {
                                    form.inline method="post" action={"/admin/users/" (u.id)} {
                                        (csrf(&viewer.csrf)) (return_fields(&back_q, page_no))
                                        label.visually-hidden for={"tier-" (u.id)} { "Tier of " (who(u)) }
                                        select id={"tier-" (u.id)} name="tier" {
                                            @for t in policy.tiers.keys() { option value=(t) selected[*t == u.tier] { (t) } }
                                            @if !policy.tiers.contains_key(&u.tier) {
                                                option value=(u.tier) selected disabled { (u.tier) " (removed: default limits)" }
                                            }
                                        }
                                        " "
                                        button.secondary type="submit" { "Save" }
                                    }
                                }
                                td data-label="Super-admin" {
                                    form.inline method="post" action={"/admin/users/" (u.id)} {
                                        (csrf(&viewer.csrf)) (return_fields(&back_q, page_no))
                                        @if u.super_admin {
                                            span.status.ok { "Yes" } " "
                                            input type="hidden" name="super_admin" value="false";
                                            button.danger type="submit" { "Remove super-admin" }
                                        } @else {
                                            span.muted { "No" } " "
                                            input type="hidden" name="super_admin" value="true";
                                            button.secondary type="submit" { "Make super-admin" }
                                        }
                                    }
                                }
                                td data-label="Created" { (when(Some(u.created_at))) }
                            }
                        }
                    }
                }
            }
        }
        (pager(
            (page_no > 1).then(|| listing.href("/admin/users", page_no - 1)),
            (page_no < pages).then(|| listing.href("/admin/users", page_no + 1)),
            format!("Page {page_no} of {pages}"),
        ))
    };
    page(s, viewer, "Users", notice, content).await
}

/// Hidden fields that bring a person back to the same search and page after a change.
fn return_fields(q: &str, page: usize) -> Markup {
    html! {
        input type="hidden" name="q" value=(q);
        input type="hidden" name="page" value=(page);
    }
}

#[derive(Debug, Deserialize)]
struct UserForm {
    tier: Option<String>,
    super_admin: Option<String>,
    #[serde(default)]
    q: String,
    page: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn update_user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, form, .. }: Posted<UserForm>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let Ok(id) = id.parse::<UserId>() else {
        return super::error_page(ApiError::not_found("no such user"));
    };
    let super_admin = match form.super_admin.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return super::error_page(ApiError::not_found("no such action")),
    };
    let listing = Listing { q: form.q.clone(), page: form.page.clone() };
    match s.services.admin_update_user(&viewer.principal, id, form.tier, super_admin).await {
        Ok(_) => {
            let back = listing.href("/admin/users", listing.page());
            let sep = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{sep}done=saved&id={id}")).into_response()
        }
        Err(e) => render_users(&s, &viewer, &listing, Some(problem(e)), &Done::default()).await,
    }
}

// ---------------------------------------------------------------------------------
// /admin/workspaces

fn status_class(status: WorkspaceStatus) -> &'static str {
    match status {
        WorkspaceStatus::Active => "ok",
        WorkspaceStatus::Paused => "warn",
        WorkspaceStatus::Cancelled | WorkspaceStatus::Deleted => "bad",
    }
}

#[tracing::instrument(skip_all)]
async fn workspaces(
    State(s): State<AppState>,
    viewer: Viewer,
    Query(listing): Query<Listing>,
    Query(done): Query<Done>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    render_workspaces(&s, &viewer, &listing, None, &done, "").await
}

async fn render_workspaces(
    s: &AppState,
    viewer: &Viewer,
    listing: &Listing,
    notice: Option<Notice>,
    done: &Done,
    new_name: &str,
) -> Response {
    let all = match s.services.admin_workspaces(&viewer.principal).await {
        Ok(all) => all,
        Err(e) => return super::error_page(e.into()),
    };
    let notice = notice.or_else(|| {
        let ws = all.iter().find(|w| Some(w.id.to_string()) == done.id)?;
        let text = match (done.done.as_deref()?, ws.status) {
            ("created", _) => format!("Workspace “{}” created.", ws.name),
            ("member", _) => format!("Member added to “{}”: they can switch to it once signed in.", ws.name),
            ("status", WorkspaceStatus::Active) => {
                format!("“{}” is active again: its keys work again from the next call.", ws.name)
            }
            ("status", WorkspaceStatus::Paused) => format!(
                "“{}” is paused: its keys, shared and personal, are refused from now on until you restore it.",
                ws.name
            ),
            ("status", WorkspaceStatus::Cancelled) => {
                format!("“{}” is cancelled: its keys are refused from now on. Restore it to use them again.", ws.name)
            }
            ("deleted", _) | ("status", WorkspaceStatus::Deleted) => format!(
                "“{}” was deleted and its data key destroyed: the keys stored in it can never be opened again.",
                ws.name
            ),
            _ => return None,
        };
        Some(Notice::Done(text))
    });
    let found: Vec<&Workspace> =
        all.iter().filter(|w| listing.matches(&[Some(w.name.as_str()), w.external_id.as_deref()])).collect();
    let page_no = listing.page();
    let (shown, pages) = paginate(&found, page_no);
    let page_no = page_no.min(pages);
    let back_q = listing.q.trim().to_owned();
    let content = html! {
        p.lead { "Every workspace, personal ones included. Pausing or cancelling a workspace makes its keys (shared keys "
            "and its members' personal keys held there) unusable at once; restoring it brings them back. "
            "Deleting destroys its data key, so its keys can never be opened again." }
        form.filters method="get" action="/admin/workspaces" role="search" {
            label for="workspaces-q" { "Name contains" input id="workspaces-q" name="q" type="search" value=(listing.q); }
            button.secondary type="submit" { "Search" }
            @if !back_q.is_empty() { a href="/admin/workspaces" { "Show all" } }
        }
        p.muted { (found.len()) " of " (all.len()) " workspaces" @if !back_q.is_empty() { " match “" (back_q) "”" } "." }
        @if shown.is_empty() {
            p.empty { "No workspaces match." }
        } @else {
            div.table-wrap tabindex="0" {
                table.keys.workspaces {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Personal" }
                        th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for w in shown {
                            tr data-workspace-id=(w.id) {
                                td data-label="Name" {
                                    (w.name)
                                    @if let Some(ext) = &w.external_id { br; span.muted.small { "external id " code { (ext) } } }
                                }
                                td data-label="Status" { span class={"status " (status_class(w.status))} { (w.status) } }
                                td data-label="Personal" { @if w.personal { "Yes" } @else { span.muted { "No" } } }
                                td data-label="Created" { (when(Some(w.created_at))) }
                                td.actions {
                                    @match w.status {
                                        WorkspaceStatus::Active => {
                                            (status_button(viewer, w, WorkspaceStatus::Paused, "Pause"))
                                            (status_button(viewer, w, WorkspaceStatus::Cancelled, "Cancel"))
                                        }
                                        WorkspaceStatus::Paused => {
                                            (status_button(viewer, w, WorkspaceStatus::Active, "Restore"))
                                            (status_button(viewer, w, WorkspaceStatus::Cancelled, "Cancel"))
                                        }
                                        WorkspaceStatus::Cancelled => {
                                            (status_button(viewer, w, WorkspaceStatus::Active, "Restore"))
                                        }
                                        WorkspaceStatus::Deleted => span.muted { "Keys destroyed" },
                                    }
                                    @if w.status != WorkspaceStatus::Deleted {
                                        a.button.danger href={"/admin/workspaces/" (w.id) "/delete"} { "Delete…" }
                                        details {
                                            summary { "Add member" }
                                            form.stack method="post" action={"/admin/workspaces/" (w.id) "/members"} {
                                                (csrf(&viewer.csrf))
                                                label for={"member-" (w.id)} { "Email or external id" }
                                                input id={"member-" (w.id)} name="user" required spellcheck="false" autocapitalize="off";
                                                label for={"role-" (w.id)} { "Role" }
                                                select id={"role-" (w.id)} name="role" {
                                                    @for r in Role::ALL { option value=(r) selected[*r == Role::Member] { (r) } }
                                                }
                                                p.muted.small { "A member already there gets this role instead." }
                                                button type="submit" { "Add member" }
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
        (pager(
            (page_no > 1).then(|| listing.href("/admin/workspaces", page_no - 1)),
            (page_no < pages).then(|| listing.href("/admin/workspaces", page_no + 1)),
            format!("Page {page_no} of {pages}"),
        ))
        section.card {
            h2 { "Create a workspace" }
            form method="post" action="/admin/workspaces" {
                (csrf(&viewer.csrf))
                label for="new-workspace-name" { "Name" }
                input id="new-workspace-name" name="name" required maxlength="100" value=(new_name);
                p.muted.small { "Then add its members from its row above." }
                button type="submit" { "Create workspace" }
            }
        }
    };
    page(s, viewer, "Workspaces", notice, content).await
}

fn status_button(viewer: &Viewer, w: &Workspace, to: WorkspaceStatus, label: &str) -> Markup {
    let class = if to == WorkspaceStatus::Active { "secondary" } else { "danger" };
    html! {
        form.inline method="post" action={"/admin/workspaces/" (w.id) "/status"} {
            (csrf(&viewer.csrf))
            input type="hidden" name="status" value=(to);
            button class=(class) type="submit" { (label) }
        }
    }
}

#[derive(Debug, Deserialize)]
struct NewWorkspace {
    #[serde(default)]
    name: String,
}

#[tracing::instrument(skip_all)]
async fn create_workspace(State(s): State<AppState>, Posted { viewer, form, .. }: Posted<NewWorkspace>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    match s.services.admin_create_workspace(&viewer.principal, &form.name).await {
        Ok(ws) => Redirect::to(&format!("/admin/workspaces?done=created&id={}", ws.id)).into_response(),
        Err(e) => {
            render_workspaces(&s, &viewer, &Listing::default(), Some(problem(e)), &Done::default(), &form.name).await
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatusForm {
    #[serde(default)]
    status: String,
}

#[tracing::instrument(skip_all)]
async fn set_workspace_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, form, .. }: Posted<StatusForm>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let Ok(id) = id.parse::<WorkspaceId>() else {
        return super::error_page(ApiError::not_found("no such workspace"));
    };
    // Deleting goes through its confirmation page, never through this button.
    let status = match form.status.parse::<WorkspaceStatus>() {
        Ok(status) if status != WorkspaceStatus::Deleted => status,
        _ => return super::error_page(ApiError::not_found("no such action")),
    };
    match s.services.admin_set_workspace_status(&viewer.principal, id, status).await {
        Ok(ws) => Redirect::to(&format!("/admin/workspaces?done=status&id={}", ws.id)).into_response(),
        Err(e) => render_workspaces(&s, &viewer, &Listing::default(), Some(problem(e)), &Done::default(), "").await,
    }
}

#[derive(Debug, Deserialize)]
struct MemberForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
}

#[tracing::instrument(skip_all)]
async fn add_member(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, form, .. }: Posted<MemberForm>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let Ok(id) = id.parse::<WorkspaceId>() else {
        return super::error_page(ApiError::not_found("no such workspace"));
    };
    let again = |text: String| Some(Notice::Problem(text));
    let Ok(role) = form.role.parse::<Role>() else {
        return render_workspaces(
            &s,
            &viewer,
            &Listing::default(),
            again("choose a role".into()),
            &Done::default(),
            "",
        )
        .await;
    };
    // People are named by email (or a host application's id), not by their keygate id.
    let users = match s.services.admin_users(&viewer.principal).await {
        Ok(users) => users,
        Err(e) => return super::error_page(e.into()),
    };
    let wanted = form.user.trim();
    let found = users.iter().find(|u| {
        u.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(wanted)) || u.external_id.as_deref() == Some(wanted)
    });
    let Some(user) = found else {
        let text = format!("nobody is known as “{wanted}”: they appear once they sign in or call keygate");
        return render_workspaces(&s, &viewer, &Listing::default(), again(text), &Done::default(), "").await;
    };
    match s.services.admin_add_member(&viewer.principal, id, user.id, role).await {
        Ok(_) => Redirect::to(&format!("/admin/workspaces?done=member&id={id}")).into_response(),
        Err(e) => render_workspaces(&s, &viewer, &Listing::default(), Some(problem(e)), &Done::default(), "").await,
    }
}

#[tracing::instrument(skip_all)]
async fn confirm_delete(State(s): State<AppState>, viewer: Viewer, Path(id): Path<String>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let Ok(id) = id.parse::<WorkspaceId>() else {
        return super::error_page(ApiError::not_found("no such workspace"));
    };
    match s.services.admin_workspace(&viewer.principal, id).await {
        Ok(ws) => render_delete(&s, &viewer, &ws, None, "").await,
        Err(e) => super::error_page(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm_name: String,
}

#[tracing::instrument(skip_all)]
async fn delete_workspace(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, form, .. }: Posted<DeleteForm>,
) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let Ok(id) = id.parse::<WorkspaceId>() else {
        return super::error_page(ApiError::not_found("no such workspace"));
    };
    let ws = match s.services.admin_workspace(&viewer.principal, id).await {
        Ok(ws) => ws,
        Err(e) => return super::error_page(e.into()),
    };
    if form.confirm_name.trim() != ws.name {
        let text = format!("the name you typed is not “{}”: nothing was deleted", ws.name);
        return render_delete(&s, &viewer, &ws, Some(Notice::Problem(text)), &form.confirm_name).await;
    }
    match s.services.admin_set_workspace_status(&viewer.principal, id, WorkspaceStatus::Deleted).await {
        Ok(ws) => Redirect::to(&format!("/admin/workspaces?done=deleted&id={}", ws.id)).into_response(),
        Err(e) => render_delete(&s, &viewer, &ws, Some(problem(e)), &form.confirm_name).await,
    }
}

async fn render_delete(s: &AppState, viewer: &Viewer, ws: &Workspace, notice: Option<Notice>, typed: &str) -> Response {
    let content = html! {
        @if ws.status == WorkspaceStatus::Deleted {
            p { "“" (ws.name) "” is already deleted; its keys can never be opened again." }
            p { a href="/admin/workspaces" { "Back to workspaces" } }
        } @else {
            section.card.danger-zone {
                p { "Delete the workspace " strong { "“" (ws.name) "”" } @if ws.personal { " (a personal workspace)" } "?" }
                p { strong { "Its keys become unrecoverable." } " keygate destroys the workspace's data key (crypto-shredding): "
                    "every key stored in it, the workspace's shared keys and its members' personal keys held there, can never be "
                    "decrypted again. Calls that used them fail or fall back to other keys at once. The workspace cannot be "
                    "restored; its usage history and audit rows stay." }
                p.muted.small { "A database backup taken before now still holds the data key, sealed under the master key: "
                    "keep that in mind for backups you retain." }
                form method="post" action={"/admin/workspaces/" (ws.id) "/delete"} autocomplete="off" {
                    (csrf(&viewer.csrf))
                    label for="confirm_name" { "To confirm, type the workspace's name: " code { (ws.name) } }
                    input id="confirm_name" name="confirm_name" required autocomplete="off" spellcheck="false"
                        autocapitalize="off" value=(typed);
                    button.danger type="submit" { "Delete workspace and destroy its keys" }
                }
                p { a.button.secondary href="/admin/workspaces" { "Cancel" } }
            }
        }
    };
    page(s, viewer, "Delete workspace", notice, content).await
}

// ---------------------------------------------------------------------------------
// /admin/audit

/// The audit filters as typed (GET query).
#[derive(Debug, Default, Clone, Deserialize)]
struct AuditFilters {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    workspace: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    page: Option<String>,
}

impl AuditFilters {
    fn page(&self) -> usize {
        self.page.as_deref().and_then(|p| p.trim().parse().ok()).filter(|p| (1..=100_000).contains(p)).unwrap_or(1)
    }

    /// The service's query, or what does not parse.
    fn query(&self) -> Result<(AuditQuery, AuditPage), String> {
        let mut problems = Vec::new();
        let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        let action = match text(&self.action) {
            None => None,
            Some(a) => a.parse::<AuditAction>().map_err(|e| problems.push(e.to_string())).ok(),
        };
        let workspace_id = match text(&self.workspace) {
            None => None,
            Some(w) => w
                .parse::<WorkspaceId>()
                .map_err(|_| problems.push(format!("workspace: `{w}` is not a workspace id")))
                .ok(),
        };
        let date = |name: &str, t: &str, problems: &mut Vec<String>| -> Option<NaiveDate> {
            let t = text(t)?;
            NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .map_err(|_| problems.push(format!("{name}: `{t}` is not a date (YYYY-MM-DD)")))
                .ok()
        };
        let midnight = |d: NaiveDate| -> Option<DateTime<Utc>> { d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()) };
        let since = date("from", &self.since, &mut problems).and_then(midnight);
        // The until day is included: rows before the next midnight.
        let until = date("to", &self.until, &mut problems).and_then(|d| d.succ_opt()).and_then(midnight);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let query = AuditQuery {
            action,
            target_id: text(&self.target),
            workspace_id,
            since,
            until,
            limit: Some(PAGE_SIZE as i64 + 1),
            ..Default::default()
        };
        let page = AuditPage { actor: text(&self.actor), offset: ((self.page() - 1) * PAGE_SIZE) as i64 };
        Ok((query, page))
    }

    fn href(&self, page: usize) -> String {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("action", &self.action),
            ("actor", &self.actor),
            ("target", &self.target),
            ("workspace", &self.workspace),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                pairs.push(format!("{name}={}", percent_encode(value.trim())));
            }
        }
        if page > 1 {
            pairs.push(format!("page={page}"));
        }
        if pairs.is_empty() {
            "/admin/audit".into()
        } else {
            format!("/admin/audit?{}", pairs.join("&"))
        }
    }

    /// These filters, narrowed by one more field (for links in the table).
    fn with(&self, name: &str, value: &str) -> String {
        let mut f = AuditFilters { page: None, ..self.clone() };
        match name {
            "actor" => f.actor = value.into(),
            "workspace" => f.workspace = value.into(),
            "target" => f.target = value.into(),
            _ => f.action = value.into(),
        }
        f.href(1)
    }
}

fn result_class(r: AuditResult) -> &'static str {
    match r {
        AuditResult::Ok | AuditResult::Valid => "ok",
        AuditResult::Unverified | AuditResult::Rejected => "warn",
        AuditResult::Denied | AuditResult::Failed | AuditResult::Invalid | AuditResult::Undecryptable => "bad",
    }
}

#[tracing::instrument(skip_all)]
async fn audit(State(s): State<AppState>, viewer: Viewer, Query(filters): Query<AuditFilters>) -> Response {
    if !viewer.is_admin() {
        return forbidden();
    }
    let (events, notice) = match filters.query() {
        Ok((query, page)) => match s.services.admin_audit_page(&viewer.principal, query, page).await {
            Ok(events) => (events, None),
            Err(e) => return super::error_page(e.into()),
        },
        Err(text) => (Vec::new(), Some(Notice::Problem(text))),
    };
    render_audit(&s, &viewer, &filters, notice, &events).await
}

async fn render_audit(
    s: &AppState,
    viewer: &Viewer,
    f: &AuditFilters,
    notice: Option<Notice>,
    events: &[AuditEvent],
) -> Response {
    let page_no = f.page();
    let more = events.len() > PAGE_SIZE;
    let shown = &events[..events.len().min(PAGE_SIZE)];
    let filtered = f.href(1) != "/admin/audit";
    let content = html! {
        p.lead { "Who did what, newest first: sign-ins, keys added, tested, replaced and deleted, tokens, users, workspaces and settings. "
            "Rows never hold a secret." }
        form.filters method="get" action="/admin/audit" role="search" {
            label for="audit-action" { "Action"
                select id="audit-action" name="action" {
                    option value="" { "any" }
                    @for a in AuditAction::ALL { option value=(a) selected[f.action == a.as_str()] { (a) } }
                }
            }
            label for="audit-actor" { "Actor (email)" input id="audit-actor" name="actor" type="search" value=(f.actor) spellcheck="false"; }
            label for="audit-target" { "Target id" input id="audit-target" name="target" type="search" value=(f.target) spellcheck="false"; }
            label for="audit-workspace" { "Workspace id" input id="audit-workspace" name="workspace" type="search" value=(f.workspace) spellcheck="false"; }
            label for="audit-since" { "From" input id="audit-since" name="since" type="date" value=(f.since); }
            label for="audit-until" { "To (inclusive)" input id="audit-until" name="until" type="date" value=(f.until); }
            button.secondary type="submit" { "Filter" }
            @if filtered { a href="/admin/audit" { "Clear filters" } }
        }
        @if shown.is_empty() {
            p.empty { @if page_no > 1 { "No more rows." } @else if filtered { "No rows match these filters." } @else { "Nothing recorded yet." } }
        } @else {
            div.table-wrap tabindex="0" {
                table.keys.audit {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" }
                        th scope="col" { "Workspace" } th scope="col" { "Result" } th scope="col" { "Source address" } th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for e in shown {
                            tr data-audit-id=(e.id) {
                                td data-label="Time" { (when(Some(e.at))) }
                                td data-label="Actor" { a href=(f.with("actor", &e.actor)) { (e.actor) } }
                                td data-label="Action" { a href=(f.with("action", e.action.as_str())) { code { (e.action) } } }
                                td data-label="Target" {
                                    (e.target_type)
                                    @if let Some(t) = &e.target_id { " " a href=(f.with("target", t)) { code { (t) } } }
                                }
                                td data-label="Workspace" {
                                    @match e.workspace_id {
                                        Some(w) => a href=(f.with("workspace", &w.to_string())) { code { (w) } },
                                        None => span.muted { "—" },
                                    }
                                }
                                td data-label="Result" { span class={"status " (result_class(e.result))} { (e.result) } }
                                td data-label="Source address" { @match &e.source_addr { Some(a) => code { (a) }, None => span.muted { "—" } } }
                                td data-label="Detail" { @match &e.detail { Some(d) => code { (d) }, None => span.muted { "—" } } }
                            }
                        }
                    }
                }
            }
        }
        (pager(
            (page_no > 1).then(|| f.href(page_no - 1)),
            more.then(|| f.href(page_no + 1)),
            format!("Page {page_no}"),
        ))
    };
    page(s, viewer, "Audit log", notice, content).await
}
