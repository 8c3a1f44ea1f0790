//! The frame every page shares: head, navigation, who is signed in and in which
//! workspace (a switcher when there are several), the demo banner, the notice of what
//! just happened, and small formatting helpers. Templates are `maud` macros compiled
//! into the binary; every interpolated value is HTML-escaped by maud.
//!
//! Not for: page content (one module per page).

use super::session::Viewer;
use crate::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keygate_service::gateway::DemoBanner;
use maud::{html, Markup, DOCTYPE};

/// What just happened, shown above the page's content.
#[derive(Debug, Clone)]
pub(crate) enum Notice {
    Done(String),
    /// Done, but with something to fix (a key saved as invalid).
    Warning(String),
    Problem(String),
}

impl Notice {
    pub fn problem(e: &crate::ApiError) -> Self {
        Notice::Problem(keygate_vault::redact::scrub(&e.detail).into_owned())
    }
}

/// `<head>` and the opening of `<body>`, shared by signed-in and anonymous pages.
pub(crate) fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · keygate" }
                link rel="stylesheet" href="/assets/keygate.css";
                script src="/assets/keygate.js" defer {}
            }
            body { a.skip href="#main" { "Skip to content" } (body) }
        }
    }
}

pub(crate) fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(text)) => div.notice.done role="status" { (text) },
            Some(Notice::Warning(text)) => div.notice.warning role="status" { (text) },
            Some(Notice::Problem(text)) => div.notice.problem role="alert" { strong { "Not done: " } (text) },
            None => {},
        }
    }
}

/// A page for a signed-in person.
pub(crate) async fn page(
    s: &AppState,
    viewer: &Viewer,
    title: &str,
    notice_: Option<Notice>,
    content: Markup,
) -> Response {
    let status = match &notice_ {
        Some(Notice::Problem(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    page_with_status(s, viewer, title, notice_, content, status).await
}

pub(crate) async fn page_with_status(
    s: &AppState,
    viewer: &Viewer,
    title: &str,
    notice_: Option<Notice>,
    content: Markup,
    status: StatusCode,
) -> Response {
    let p = &viewer.principal;
    let workspaces = s.services.my_workspaces(p).await.unwrap_or_default();
    let banner = s.services.demo_banner(p).await.unwrap_or(None);
    let link = |href: &'static str, label: &'static str| {
        let current = viewer.path == href;
        html! { a href=(href) aria-current=[current.then_some("page")] { (label) } }
    };
    let who = p.user.email.clone().or_else(|| p.user.external_id.clone()).unwrap_or_else(|| p.user.id.to_string());
    let body = html! {
        header.top {
            a.brand href="/settings/api-keys" { span.mark aria-hidden="true" { "◆" } " keygate" }
            nav aria-label="Main" {
                (link("/settings/api-keys", "API keys"))
                (link("/settings/usage", "Usage"))
                (link("/settings/tokens", "Tokens"))
                (link("/settings/sessions", "Sessions"))
                (link("/workspace/keys", "Workspace keys"))
                @if viewer.is_admin() {
                    span.sep aria-hidden="true" {}
                    (link("/admin/providers", "Providers"))
                    (link("/admin/settings", "Settings"))
                    (link("/admin/users", "Users"))
                    (link("/admin/workspaces", "Workspaces"))
                    (link("/admin/audit", "Audit log"))
                }
            }
            div.who {
                span.user { (who) @if p.user.super_admin { " " span.badge { "super-admin" } } }
                @if workspaces.len() > 1 {
                    form.switch method="post" action="/workspace/switch" {
                        input type="hidden" name="csrf_token" value=(viewer.csrf);
                        label for="workspace-switch" { "Workspace" }
                        select id="workspace-switch" name="workspace_id" {
                            @for (ws, role) in &workspaces {
                                option value=(ws.id) selected[ws.id == p.workspace.id] { (ws.name) " (" (role) ")" }
                            }
                        }
                        button.secondary type="submit" { "Switch" }
                    }
                } @else {
                    span.ws { "Workspace: " (p.workspace.name) " (" (p.role) ")" }
                }
                form method="post" action="/logout" {
                    input type="hidden" name="csrf_token" value=(viewer.csrf);
                    button.link type="submit" { "Sign out" }
                }
            }
        }
        @if let Some(banner) = banner { (demo_banner(&banner)) }
        main id="main" {
            h1 { (title) }
            (notice(notice_.as_ref()))
            (content)
        }
    };
    (status, maud::Markup::into_string(document(title, body))).into_response().with_html()
}

fn demo_banner(b: &DemoBanner) -> Markup {
    let midnight_in = {
        let now = Utc::now();
        let tomorrow = now.date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0));
        tomorrow.map(|t| (t.and_utc() - now).num_minutes()).unwrap_or(0)
    };
    html! {
        aside.banner role="status" aria-label="Demo allowance" {
            @if !b.serving.is_empty() {
                p {
                    strong { (thousands(b.status.tokens_left)) " of " (thousands(b.tokens_per_day)) " demo tokens left today" }
                    " · resets at 00:00 UTC (in " (midnight_in / 60) " h " (midnight_in % 60) " min)"
                    @match b.status.days_left {
                        Some(days) => { " · " (days) " " (if days == 1 { "day" } else { "days" }) " of demo left" }
                        None => { " · " (b.days) " days of demo from your first call" }
                    }
                    " · for " (b.serving.join(", ")) ". "
                    a href="/settings/api-keys" { "Add your own key" } " to use it without limits."
                }
            }
            @if !b.own_key.is_empty() {
                p.muted { "The demo allowance is off for " (b.own_key.join(", ")) ": your own key is used." }
            }
        }
    }
}

trait WithHtml {
    fn with_html(self) -> Response;
}

impl WithHtml for Response {
    fn with_html(mut self) -> Response {
        self.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("text/html; charset=utf-8"));
        self
    }
}

/// An HTML response for pages without the signed-in frame.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, markup.into_string()).into_response().with_html()
}

pub(crate) fn thousands(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `$0.0123` from nano-dollars.
pub(crate) fn usd(nano: i64) -> String {
    let dollars = nano as f64 / 1e9;
    if dollars != 0.0 && dollars.abs() < 0.01 {
        format!("${dollars:.4}")
    } else {
        format!("${dollars:.2}")
    }
}

pub(crate) fn when(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        None => html! { span.muted { "never" } },
        Some(t) => html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } },
    }
}

/// A hidden CSRF field.
pub(crate) fn csrf(value: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(value); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(thousands(7412u64), "7,412");
        assert_eq!(thousands(10_000u64), "10,000");
        assert_eq!(thousands(999u64), "999");
        assert_eq!(thousands(1_234_567i64), "1,234,567");
        assert_eq!(usd(12_340_000_000), "$12.34");
        assert_eq!(usd(123_000), "$0.0001");
        assert_eq!(usd(0), "$0.00");
    }
}
