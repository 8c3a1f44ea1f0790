//! `/settings/usage`: a person's own calls per UTC day over the last 7, 30 or 90 days,
//! stacked by provider, model, key or source, as three bar charts (requests, tokens,
//! estimated cost). The charts are SVG drawn here, on the server: no chart library, no
//! script, no inline style (colours are SVG presentation attributes, so the strict CSP
//! holds). Each has a title for assistive technology, a legend, and under it a real
//! table of the totals per group. `/settings/usage.csv` answers the same numbers per day
//! and group as a download, its cells escaped against formula injection.
//!
//! Not for: counting or scoping usage (keygate-service's `usage_by_day`: always the
//! signed-in person's own calls, nobody else's).

use super::layout::{page, thousands, usd};
use super::session::Viewer;
use crate::{ApiError, AppState};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{Days, NaiveDate};
use keygate_service::credentials::ListScope;
use keygate_service::usage::{DailyUsage, GroupBy, UsageQuery};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/settings/usage", get(show)).route("/settings/usage.csv", get(csv))
}

/// The periods offered, in days; the default is 30.
const PERIODS: [u32; 3] = [7, 30, 90];
const DEFAULT_DAYS: u32 = 30;

/// Eight colours told apart at a glance, each at least 4.8:1 against white (WCAG asks
/// 3:1 of graphics). With more than eight groups the first seven keep theirs and the
/// rest fold into "other", drawn in the last (grey).
const PALETTE: [&str; 8] = ["#2f5bd3", "#c2410c", "#15803d", "#9333ea", "#0e7490", "#a16207", "#be185d", "#6b7280"];
const OTHER: &str = "other";

/// The chart's drawing box (SVG user units; the stylesheet scales it to the page).
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;
/// At most this many date labels under a chart.
const MAX_DATE_LABELS: usize = 14;
/// Muted text and grid lines, as in the stylesheet.
const INK_MUTED: &str = "#5b6475";
const GRID: &str = "#d9dde5";

/// The query: `?days=7|30|90&by=provider|model|key|source`. Anything else means the
/// default, so an edited address still shows a page.
#[derive(Debug, Default, Deserialize)]
struct Params {
    days: Option<String>,
    by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Provider,
    Model,
    Key,
    Source,
}

impl By {
    const ALL: [By; 4] = [By::Provider, By::Model, By::Key, By::Source];

    fn as_str(self) -> &'static str {
        match self {
            By::Provider => "provider",
            By::Model => "model",
            By::Key => "key",
            By::Source => "source",
        }
    }

    fn label(self) -> &'static str {
        match self {
            By::Provider => "Provider",
            By::Model => "Model",
            By::Key => "Key",
            By::Source => "Source",
        }
    }

    fn group_by(self) -> GroupBy {
        match self {
            By::Provider => GroupBy::Provider,
            By::Model => GroupBy::Model,
            By::Key => GroupBy::Credential,
            By::Source => GroupBy::Source,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Filters {
    days: u32,
    by: By,
}

impl Filters {
    fn parse(p: &Params) -> Self {
        let days = p.days.as_deref().and_then(|d| d.parse().ok()).filter(|d| PERIODS.contains(d));
        let by = p.by.as_deref().and_then(|b| By::ALL.into_iter().find(|x| x.as_str() == b));
        Filters { days: days.unwrap_or(DEFAULT_DAYS), by: by.unwrap_or(By::Provider) }
    }

    fn query(self) -> String {
        format!("days={}&by={}", self.days, self.by.as_str())
    }
}

#[tracing::instrument(skip_all)]
async fn show(State(s): State<AppState>, viewer: Viewer, Query(params): Query<Params>) -> Response {
    let filters = Filters::parse(&params);
    match load(&s, &viewer, filters).await {
        Ok(usage) => page(&s, &viewer, "Usage", None, render(&usage)).await,
        Err(e) => super::error_page(e),
    }
}

#[tracing::instrument(skip_all)]
async fn csv(State(s): State<AppState>, viewer: Viewer, Query(params): Query<Params>) -> Response {
    let filters = Filters::parse(&params);
    match load(&s, &viewer, filters).await {
        Ok(usage) => csv_response(&usage),
        Err(e) => super::error_page(e),
    }
}

/// The viewer's usage over the period ending today (UTC), named for people.
async fn load(s: &AppState, viewer: &Viewer, filters: Filters) -> Result<Usage, ApiError> {
    let last = keygate_service::now().date_naive();
    let first = last - Days::new(u64::from(filters.days - 1));
    let query = UsageQuery {
        provider: None,
        since: first.and_hms_opt(0, 0, 0).map(|t| t.and_utc()),
        until: last.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc()),
    };
    let rows = s.services.usage_by_day(&viewer.principal, query, filters.by.group_by()).await?;
    let names = Names::load(s, viewer, filters.by).await?;
    Ok(Usage::build(filters, first, last, rows, |raw| names.name(raw)))
}

/// How a group's raw key (a provider id, a model, a credential id, a key source) reads.
struct Names {
    by: By,
    /// Provider ids, or credential ids, to what a person calls them.
    known: HashMap<String, String>,
}

impl Names {
    async fn load(s: &AppState, viewer: &Viewer, by: By) -> Result<Self, ApiError> {
        let mut known = HashMap::new();
        match by {
            By::Provider => {
                for p in s.services.catalog().all() {
                    known.insert(p.id.clone(), p.name.clone());
                }
            }
            By::Key => {
                let p = &viewer.principal;
                let mut keys = s.services.list_credentials(p, ListScope::Mine).await?;
                if viewer.is_admin() {
                    keys.extend(
                        s.services
                            .list_credentials(p, ListScope::Only(keygate_core::CredentialScope::Operator))
                            .await?,
                    );
                }
                for c in keys {
                    known.insert(c.id.to_string(), format!("{} ({})", c.name, c.hint));
                }
                // The operator's keys that paid for demo or platform calls.
                for (id, label) in s.services.operator_key_labels().await? {
                    known.entry(id.to_string()).or_insert(label);
                }
            }
            By::Model | By::Source => {}
        }
        Ok(Names { by, known })
    }

    fn name(&self, raw: &str) -> String {
        match self.by {
            By::Provider => self.known.get(raw).cloned().unwrap_or_else(|| raw.to_owned()),
            By::Model if raw == "(unknown)" => "unknown model".to_owned(),
            By::Model => raw.to_owned(),
            By::Key if raw == "(none)" => "no key".to_owned(),
            By::Key => self.known.get(raw).cloned().unwrap_or_else(|| "deleted key".to_owned()),
            By::Source => source_name(raw).to_owned(),
        }
    }
}

fn source_name(raw: &str) -> &str {
    match raw {
        "user" => "own key",
        "workspace" => "workspace key",
        "operator_demo" => "demo allowance",
        "platform" => "platform key",
        other => other,
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    requests: i64,
    input: i64,
    output: i64,
    cost: i64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.input += o.input;
        self.output += o.output;
        self.cost += o.cost;
    }
}

/// One group over the period: its name, its colour in the charts, its totals and each
/// day's.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    colour: &'static str,
    total: Totals,
    per_day: Vec<Totals>,
}

/// The period's usage: every day (empty ones too), every group (largest first).
#[derive(Debug)]
struct Usage {
    filters: Filters,
    days: Vec<NaiveDate>,
    groups: Vec<Group>,
    total: Totals,
}

impl Usage {
    fn build(
        filters: Filters,
        first: NaiveDate,
        last: NaiveDate,
        rows: Vec<DailyUsage>,
        name: impl Fn(&str) -> String,
    ) -> Self {
        let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let Some(day) = days.iter().position(|d| *d == row.day) else { continue };
            let t = &row.totals;
            let add =
                Totals { requests: t.requests, input: t.input_tokens, output: t.output_tokens, cost: t.cost_nano_usd };
            // Keys that read the same (two deleted keys) are one group.
            let label = name(&t.key);
            let i = *index.entry(label.clone()).or_insert_with(|| {
                groups.push(Group {
                    name: label,
                    colour: PALETTE[0],
                    total: Totals::default(),
                    per_day: vec![Totals::default(); days.len()],
                });
                groups.len() - 1
            });
            groups[i].total += add;
            groups[i].per_day[day] += add;
        }
        groups.sort_by(|a, b| {
            (b.total.requests, b.total.input + b.total.output, b.total.cost)
                .cmp(&(a.total.requests, a.total.input + a.total.output, a.total.cost))
                .then_with(|| a.name.cmp(&b.name))
        });
        let folds = groups.len() > PALETTE.len();
        for (i, g) in groups.iter_mut().enumerate() {
            g.colour = if folds && i >= PALETTE.len() - 1 { PALETTE[PALETTE.len() - 1] } else { PALETTE[i] };
        }
        let mut total = Totals::default();
        for g in &groups {
            total += g.total;
        }
        Usage { filters, days, groups, total }
    }

    /// What the charts stack: each group, or with more groups than colours, the largest
    /// seven and "other".
    fn series(&self) -> Vec<Group> {
        if self.groups.len() <= PALETTE.len() {
            return self.groups.clone();
        }
        let keep = PALETTE.len() - 1;
        let mut series: Vec<Group> = self.groups[..keep].to_vec();
        let mut other = Group {
            name: OTHER.to_owned(),
            colour: PALETTE[keep],
            total: Totals::default(),
            per_day: vec![Totals::default(); self.days.len()],
        };
        for g in &self.groups[keep..] {
            other.total += g.total;
            for (sum, day) in other.per_day.iter_mut().zip(&g.per_day) {
                *sum += *day;
            }
        }
        series.push(other);
        series
    }
}

/// What a chart measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    Requests,
    Tokens,
    Cost,
}

impl Measure {
    fn of(self, t: &Totals) -> i64 {
        match self {
            Measure::Requests => t.requests,
            Measure::Tokens => t.input + t.output,
            Measure::Cost => t.cost,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
            Measure::Cost => "cost",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Measure::Requests => "Requests",
            Measure::Tokens => "Tokens (input + output)",
            Measure::Cost => "Estimated cost",
        }
    }

    /// The smallest step between gridlines: one request or token, a millionth of a
    /// dollar (costs are in billionths).
    fn min_step(self) -> i64 {
        match self {
            Measure::Requests | Measure::Tokens => 1,
            Measure::Cost => 1_000,
        }
    }

    fn value(self, v: i64) -> String {
        match self {
            Measure::Requests => format!("{} {}", thousands(v), if v == 1 { "request" } else { "requests" }),
            Measure::Tokens => format!("{} {}", thousands(v), if v == 1 { "token" } else { "tokens" }),
            Measure::Cost => usd(v),
        }
    }

    fn tick(self, v: i64, step: i64) -> String {
        match self {
            Measure::Requests | Measure::Tokens => compact(v),
            Measure::Cost => usd_at(v, step),
        }
    }
}

/// A chart's vertical scale: gridlines every `step` from 0 to `top`, at most six, on
/// round numbers (1, 2 or 5 times a power of ten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scale {
    step: i64,
    top: i64,
}

impl Scale {
    fn new(max: i64, min_step: i64) -> Self {
        let max = i128::from(max.max(0));
        let min_step = i128::from(min_step.max(1));
        let mut power: i128 = 1;
        let step = 'found: loop {
            for m in [1, 2, 5] {
                let step = m * power;
                if step >= min_step && step * 5 >= max {
                    break 'found step;
                }
            }
            power *= 10;
        };
        let top = ((max + step - 1) / step * step).max(step);
        let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
        Scale { step: clamp(step), top: clamp(top) }
    }

    fn ticks(self) -> Vec<i64> {
        (0..=self.top / self.step).map(|i| i * self.step).collect()
    }
}

/// `950`, `9,500`, `95k`, `1.5M`: short enough for an axis.
fn compact(v: i64) -> String {
    for (div, at, suffix) in [(1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e3, 1e4, "k")] {
        let f = v as f64;
        if f.abs() >= at {
            let text = format!("{:.1}", f / div);
            return format!("{}{suffix}", text.trim_end_matches(".0"));
        }
    }
    thousands(v)
}

/// Dollars from billionths, with as many decimals as `step` needs (at least two).
fn usd_at(nano: i64, step: i64) -> String {
    let digits = step.max(1).ilog10() as usize;
    let decimals = 9usize.saturating_sub(digits).max(2);
    format!("${:.*}", decimals, nano as f64 / 1e9)
}

/// Dollars from billionths, exactly: `0.0000935`, `12.34`.
fn dollars(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let n = nano.unsigned_abs();
    let frac = format!("{:09}", n % 1_000_000_000);
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
    format!("{sign}{}.{frac}", n / 1_000_000_000)
}

fn render(u: &Usage) -> Markup {
    let f = u.filters;
    let period = format!("last {} days", f.days);
    html! {
        p.lead {
            "Your own calls through keygate, per UTC day, whichever key paid for them. "
            "Costs are estimates from list prices; the provider's bill is what counts."
        }
        form.filters method="get" action="/settings/usage" {
            label {
                "Period"
                select name="days" {
                    @for d in PERIODS { option value=(d) selected[d == f.days] { "Last " (d) " days" } }
                }
            }
            label {
                "Group by"
                select name="by" {
                    @for b in By::ALL { option value=(b.as_str()) selected[b == f.by] { (b.label()) } }
                }
            }
            button type="submit" { "Show" }
            @if !u.groups.is_empty() {
                a.button.secondary href={ "/settings/usage.csv?" (f.query()) } download { "Download CSV" }
            }
        }
        @if u.groups.is_empty() {
            div.empty role="status" {
                p { strong { "No calls in this period yet." } }
                p {
                    "Send a call through keygate (a keygate token as the SDK's API key, and "
                    code { "/v1" } " or " code { "/proxy/openai/v1" } " on this server as its base URL) "
                    "and it shows up here within a few seconds. "
                    a href="/settings/tokens" { "Create a token" } " · " a href="/settings/api-keys" { "Add a key" }
                }
            }
        } @else {
            p.muted {
                (thousands(u.total.requests)) " " (if u.total.requests == 1 { "request" } else { "requests" }) ", "
                (thousands(u.total.input + u.total.output)) " tokens, " (usd(u.total.cost)) " estimated, "
                (period) " (" (u.days[0].format("%b %-d")) " – " (u.days[u.days.len() - 1].format("%b %-d, %Y")) ", UTC)."
            }
            @let series = u.series();
            @for m in [Measure::Requests, Measure::Tokens, Measure::Cost] {
                section aria-labelledby={ "usage-" (m.slug()) } {
                    h2 id={ "usage-" (m.slug()) } { (m.heading()) " per day" }
                    div.chart tabindex="0" { (chart(u, &series, m)) }
                    // Outside `.chart`, whose rule stretches every SVG in it to full width.
                    ul.legend {
                        @for s in &series { li { (swatch(s.colour)) (s.name) } }
                    }
                    (table(u, m))
                }
            }
        }
    }
}

/// A coloured square for a legend or a table row: SVG, so the colour needs no style.
fn swatch(colour: &str) -> Markup {
    html! {
        svg.swatch viewBox="0 0 10 10" aria-hidden="true" focusable="false" {
            rect width="10" height="10" fill=(colour) {}
        }
    }
}

fn px(v: f64) -> String {
    format!("{v:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Which days get a date under the axis: today, and every `n`th day before it, so that
/// at most [`MAX_DATE_LABELS`] are drawn.
fn labelled(days: usize, i: usize) -> bool {
    let every = days.div_ceil(MAX_DATE_LABELS).max(1);
    (days - 1 - i) % every == 0
}

/// One group's part of one day's bar.
struct Segment<'a> {
    name: &'a str,
    colour: &'static str,
    value: i64,
    top: f64,
    height: f64,
}

/// One stacked bar chart: a bar per day, a segment per group, gridlines with values.
fn chart(u: &Usage, series: &[Group], m: Measure) -> Markup {
    let n = u.days.len().max(1);
    let max = (0..u.days.len()).map(|d| series.iter().map(|s| m.of(&s.per_day[d])).sum::<i64>()).max().unwrap_or(0);
    let scale = Scale::new(max, m.min_step());
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let y = |v: i64| base - v as f64 / scale.top as f64 * plot_h;
    let slot = plot_w / n as f64;
    let bar = (slot * 0.72).max(1.0);
    let title_id = format!("chart-{}-title", m.slug());
    let desc_id = format!("chart-{}-desc", m.slug());
    let by = u.filters.by.as_str();
    let total: i64 = series.iter().map(|s| m.of(&s.total)).sum();
    let shares: Vec<String> = series.iter().map(|s| format!("{}: {}", s.name, m.value(m.of(&s.total)))).collect();
    // Each day's bar: its left edge, its day, its segments from the bottom up.
    let bars: Vec<(f64, NaiveDate, Vec<Segment>)> = u
        .days
        .iter()
        .enumerate()
        .map(|(d, day)| {
            let mut below = 0i64;
            let mut segments = Vec::new();
            for s in series {
                let value = m.of(&s.per_day[d]);
                if value > 0 {
                    let (bottom, top) = (y(below), y(below + value));
                    segments.push(Segment {
                        name: &s.name,
                        colour: s.colour,
                        value,
                        top,
                        height: (bottom - top).max(0.5),
                    });
                    below += value;
                }
            }
            (LEFT + d as f64 * slot + (slot - bar) / 2.0, *day, segments)
        })
        .collect();
    html! {
        svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby=(title_id) aria-describedby=(desc_id) {
            title id=(title_id) { (m.heading()) " per day by " (by) ", last " (u.filters.days) " days" }
            desc id=(desc_id) { "In total " (m.value(total)) ". " (shares.join("; ")) "." }
            @for t in scale.ticks() {
                line x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(y(t))) y2=(px(y(t))) stroke=(GRID) stroke-width="1" {}
                text x=(px(LEFT - 8.0)) y=(px(y(t) + 4.0)) text-anchor="end" font-size="13" fill=(INK_MUTED) {
                    (m.tick(t, scale.step))
                }
            }
            @for (x, day, segments) in &bars {
                @for seg in segments {
                    rect x=(px(*x)) y=(px(seg.top)) width=(px(bar)) height=(px(seg.height)) fill=(seg.colour)
                        stroke="#ffffff" stroke-width="0.5" {
                        title { (day.format("%b %-d")) " · " (seg.name) ": " (m.value(seg.value)) }
                    }
                }
            }
            @for (i, (x, day, _)) in bars.iter().enumerate() {
                @if labelled(bars.len(), i) {
                    text x=(px(x + bar / 2.0)) y=(px(HEIGHT - 10.0)) text-anchor="middle" font-size="13" fill=(INK_MUTED) {
                        (day.format("%b %-d"))
                    }
                }
            }
            line x1=(px(LEFT)) x2=(px(WIDTH - RIGHT)) y1=(px(base)) y2=(px(base)) stroke=(INK_MUTED) stroke-width="1" {}
        }
    }
}

/// The totals per group under a chart, with a total row.
fn table(u: &Usage, m: Measure) -> Markup {
    html! {
        div.table-wrap tabindex="0" {
            table {
                caption.visually-hidden { (m.heading()) ": totals by " (u.filters.by.as_str()) ", last " (u.filters.days) " days" }
                thead { tr {
                    th scope="col" { (u.filters.by.label()) }
                    th.num scope="col" { "Requests" }
                    th.num scope="col" { "Input tokens" }
                    th.num scope="col" { "Output tokens" }
                    th.num scope="col" { "Estimated cost" }
                } }
                tbody {
                    @for g in &u.groups {
                        tr {
                            th scope="row" { (swatch(g.colour)) (g.name) }
                            td.num { (thousands(g.total.requests)) }
                            td.num { (thousands(g.total.input)) }
                            td.num { (thousands(g.total.output)) }
                            td.num { (usd(g.total.cost)) }
                        }
                    }
                }
                tfoot { tr {
                    th scope="row" { "Total" }
                    td.num { (thousands(u.total.requests)) }
                    td.num { (thousands(u.total.input)) }
                    td.num { (thousands(u.total.output)) }
                    td.num { (usd(u.total.cost)) }
                } }
            }
        }
    }
}

/// One CSV cell: quoted when it holds a separator, a quote or a line break, and with a
/// `'` before a leading `=`, `+`, `-`, `@`, tab or carriage return, so a spreadsheet
/// never runs a key's or a model's name as a formula.
fn cell(value: &str) -> String {
    let mut text = String::with_capacity(value.len() + 3);
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.push('\'');
    }
    text.push_str(value);
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// `day,group,requests,input_tokens,output_tokens,cost_usd`, a row per day and group
/// with calls, by day, then group (largest first).
fn csv_text(u: &Usage) -> String {
    let mut out = String::from("day,group,requests,input_tokens,output_tokens,cost_usd\r\n");
    for (d, day) in u.days.iter().enumerate() {
        for g in &u.groups {
            let t = g.per_day[d];
            if t == Totals::default() {
                continue;
            }
            let _ = write!(
                out,
                "{},{},{},{},{},{}\r\n",
                cell(&day.to_string()),
                cell(&g.name),
                t.requests,
                t.input,
                t.output,
                dollars(t.cost)
            );
        }
    }
    out
}

fn csv_response(u: &Usage) -> Response {
    let last = u.days.last().map(|d| d.to_string()).unwrap_or_default();
    let name = format!("keygate-usage-{last}-{}d-by-{}.csv", u.filters.days, u.filters.by.as_str());
    let mut response = csv_text(u).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_service::usage::UsageTotals;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    fn row(d: u32, key: &str, requests: i64, tokens: i64, cost: i64) -> DailyUsage {
        DailyUsage {
            day: day(d),
            totals: UsageTotals {
                key: key.into(),
                requests,
                input_tokens: tokens,
                output_tokens: tokens / 2,
                cost_nano_usd: cost,
            },
        }
    }

    fn usage(days: u32, rows: Vec<DailyUsage>) -> Usage {
        let filters = Filters { days, by: By::Provider };
        Usage::build(filters, day(1), day(days), rows, |raw| raw.to_owned())
    }

    #[test]
    fn scales_land_on_round_numbers() {
        let ticks = |max| Scale::new(max, 1).ticks();
        assert_eq!(ticks(0), vec![0, 1]);
        assert_eq!(ticks(1), vec![0, 1]);
        assert_eq!(ticks(7), vec![0, 2, 4, 6, 8]);
        assert_eq!(ticks(10), vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(ticks(12_345), vec![0, 5_000, 10_000, 15_000]);
        assert_eq!(ticks(-3), vec![0, 1]);
        assert_eq!(Scale::new(i64::MAX, 1).top, i64::MAX, "no overflow");
        // Costs: never finer than a millionth of a dollar.
        assert_eq!(Scale::new(0, 1_000), Scale { step: 1_000, top: 1_000 });
        assert_eq!(Scale::new(93_500, 1_000), Scale { step: 20_000, top: 100_000 });
        for max in [1, 3, 9, 99, 101, 4_999, 1_234_567] {
            let s = Scale::new(max, 1);
            assert!(s.top >= max && s.top / s.step <= 6, "{max}: {s:?}");
        }
    }

    #[test]
    fn axis_labels_stay_short_and_exact() {
        assert_eq!(compact(950), "950");
        assert_eq!(compact(9_500), "9,500");
        assert_eq!(compact(15_000), "15k");
        assert_eq!(compact(2_500_000), "2.5M");
        assert_eq!(compact(3_000_000_000), "3B");
        assert_eq!(usd_at(20_000, 20_000), "$0.00002");
        assert_eq!(usd_at(500_000_000, 500_000_000), "$0.50");
        assert_eq!(usd_at(5_000_000_000, 1_000_000_000), "$5.00");
        assert_eq!(dollars(0), "0.00");
        assert_eq!(dollars(93_500), "0.0000935");
        assert_eq!(dollars(12_340_000_000), "12.34");
        assert_eq!(dollars(5_000_000_000_001), "5000.000000001");
    }

    #[test]
    fn date_labels_thin_out_when_crowded_and_today_always_has_one() {
        let count = |n: usize| (0..n).filter(|i| labelled(n, *i)).count();
        assert_eq!(count(7), 7);
        assert!(count(30) <= MAX_DATE_LABELS && count(30) >= 7, "{}", count(30));
        assert!(count(90) <= MAX_DATE_LABELS && count(90) >= 7, "{}", count(90));
        for n in [7, 30, 90] {
            assert!(labelled(n, n - 1));
        }
    }

    #[test]
    fn filters_fall_back_to_the_defaults() {
        let p = |days: &str, by: &str| Filters::parse(&Params { days: Some(days.into()), by: Some(by.into()) });
        assert_eq!(p("7", "key"), Filters { days: 7, by: By::Key });
        assert_eq!(p("31", "nope"), Filters { days: 30, by: By::Provider });
        assert_eq!(Filters::parse(&Params::default()), Filters { days: 30, by: By::Provider });
        assert_eq!(p("90", "source").query(), "days=90&by=source");
    }

    #[test]
    fn groups_add_up_per_day_and_fold_into_other_past_eight() {
        let u = usage(7, vec![row(1, "openai", 2, 100, 10), row(1, "anthropic", 1, 50, 5), row(3, "openai", 1, 10, 1)]);
        assert_eq!(u.days.len(), 7);
        assert_eq!(u.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["openai", "anthropic"]);
        assert_eq!(u.groups[0].per_day[0].requests, 2);
        assert_eq!(u.groups[0].per_day[2].requests, 1);
        assert_eq!(u.groups[0].total, Totals { requests: 3, input: 110, output: 55, cost: 11 });
        assert_eq!(u.total.requests, 4);
        assert_ne!(u.groups[0].colour, u.groups[1].colour);

        let many: Vec<DailyUsage> = (0..10).map(|i| row(2, &format!("p{i}"), 20 - i, 1, 1)).collect();
        let u = usage(7, many);
        let series = u.series();
        assert_eq!(series.len(), 8);
        assert_eq!(series[7].name, OTHER);
        assert_eq!(series[7].total.requests, 13 + 12 + 11);
        assert_eq!(u.groups.len(), 10, "the table keeps every group");
        let colours: std::collections::HashSet<_> = series.iter().map(|s| s.colour).collect();
        assert_eq!(colours.len(), 8);
        assert_eq!(usage(7, (0..8).map(|i| row(2, &format!("p{i}"), 9, 1, 1)).collect()).series().len(), 8);
    }

    #[test]
    fn charts_are_svg_with_a_name_and_no_inline_style() {
        let u =
            usage(30, vec![row(1, "openai", 2, 100, 10), row(1, "anthropic", 1, 50, 5), row(30, "openai", 1, 10, 0)]);
        let html = render(&u).into_string();
        assert_eq!(html.matches("<svg viewBox=\"0 0 960 280\" role=\"img\"").count(), 3);
        assert!(html.contains("aria-labelledby=\"chart-requests-title\""));
        assert!(html.contains("<title id=\"chart-requests-title\">Requests per day by provider, last 30 days</title>"));
        assert!(!html.contains("style="), "the CSP allows no inline style");
        assert!(!html.contains("<script"));
        // Requests: two segments on day 1, one on day 30; cost has none on day 30.
        let requests = &html[html.find("chart-requests-title").unwrap()..html.find("chart-tokens-title").unwrap()];
        assert_eq!(requests[..requests.find("</svg>").unwrap()].matches("<rect ").count(), 3);
        let cost = &html[html.find("chart-cost-title").unwrap()..];
        assert_eq!(cost[..cost.find("</svg>").unwrap()].matches("<rect ").count(), 2);
        assert!(html.contains("<td class=\"num\">3</td>"), "openai's requests in the table");
        assert!(html.contains("href=\"/settings/usage.csv?days=30&amp;by=provider\""));

        let empty = render(&usage(7, vec![])).into_string();
        assert!(empty.contains("No calls in this period yet"));
        assert!(!empty.contains("<svg viewBox"));
    }

    #[test]
    fn csv_cells_cannot_become_formulas() {
        assert_eq!(cell("openai"), "openai");
        assert_eq!(cell("=HYPERLINK(\"http://evil\")"), "\"'=HYPERLINK(\"\"http://evil\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
        assert_eq!(cell("gpt-4o"), "gpt-4o", "a dash inside is fine");

        let u = usage(7, vec![row(1, "=cmd|' /C calc'!A0", 1, 10, 1_500), row(2, "openai", 2, 20, 0)]);
        assert_eq!(
            csv_text(&u),
            "day,group,requests,input_tokens,output_tokens,cost_usd\r\n\
             2026-03-01,'=cmd|' /C calc'!A0,1,10,5,0.0000015\r\n\
             2026-03-02,openai,2,20,10,0.00\r\n"
        );
    }
}
