//! `/settings/usage` and `/settings/usage.csv` over HTTP, signed in with cookies as a
//! browser without JavaScript is: calls made through the proxy show up in the charts'
//! legends, the totals tables and the CSV, grouped as asked, and nobody else's do.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(
    the_usage_page_shows_a_persons_own_calls_by_provider_source_model_and_key,
    the_usage_csv_has_a_row_per_day_and_group_with_formulas_defused,
    a_period_without_calls_says_so_and_the_page_needs_a_session,
);

/// A person with a password and a token, and a page session (the `kg_session` cookie)
/// from the sign-in form.
async fn signed_in(h: &Harness, email: &str) -> (Caller, String) {
    let password = format!("CANARY-{email}-password");
    h.canary(&password);
    let user = keygate_service::accounts::create_admin(
        &**h.store(),
        email,
        &keygate_vault::SecretText::new(password.clone()),
        &keygate_service::audit::Actor::cli(),
    )
    .await
    .unwrap();
    let token = h.token_for(&user, None).await;
    let workspace = h.services().authenticate(&token, None).await.unwrap().workspace.id;

    // The sign-in form sets `kg_csrf`; the form posts it back as `csrf_token`.
    let login = h.send(Request::get("/login").body(Body::empty()).unwrap()).await;
    let csrf = cookie(&login, "kg_csrf").expect("the sign-in page sets kg_csrf");
    let form = serde_urlencoded::to_string([
        ("csrf_token", csrf.as_str()),
        ("email", email),
        ("password", password.as_str()),
        ("next", "/settings/usage"),
    ])
    .unwrap();
    let posted = h
        .send(
            Request::post("/login")
                .header("cookie", format!("kg_csrf={csrf}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap(),
        )
        .await;
    assert_eq!(posted.status, 303, "{}", posted.text);
    assert_eq!(posted.headers["location"], "/settings/usage");
    let session = cookie(&posted, "kg_session").expect("signing in sets kg_session");
    (Caller { user, workspace, token }, session)
}

fn cookie(reply: &Reply, name: &str) -> Option<String> {
    reply.headers.get_all("set-cookie").iter().find_map(|v| {
        let pair = v.to_str().unwrap().split(';').next().unwrap();
        pair.split_once('=').filter(|(n, v)| *n == name && !v.is_empty()).map(|(_, v)| v.to_owned())
    })
}

async fn page(h: &Harness, session: &str, path: &str) -> Reply {
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("cookie", format!("kg_session={session}"))
        .body(Body::empty())
        .unwrap();
    h.send(request).await
}

/// The HTML of the first element that starts with `open`, up to `close`.
fn part<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html.find(open).unwrap_or_else(|| panic!("no {open} in {html}"));
    let end = html[start..].find(close).unwrap_or_else(|| panic!("no {close} after {open}"));
    &html[start..start + end]
}

/// Two chats on Ada's own OpenAI key, and Bob's calls (OpenAI and Anthropic) which
/// must never show on Ada's pages.
async fn calls(h: &Harness, key_name: &str) -> (Caller, String) {
    let (ada, session) = signed_in(h, "ada@example.com").await;
    h.add_key(&ada, json!({"provider": "openai", "name": key_name, "secret": h.valid_key("sk-proj-")})).await;
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    h.add_key(&bob, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    for caller in [&ada, &ada, &bob] {
        assert_eq!(h.chat(&caller.token).await.status, 200);
    }
    let body =
        json!({"model": "claude-sonnet-4-20250514", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let reply = h.proxy(&bob.token, "anthropic", "v1/messages", body, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    h.flush().await;
    (ada, session)
}

async fn the_usage_page_shows_a_persons_own_calls_by_provider_source_model_and_key(db: TestDb) {
    let h = Harness::new(db).await;
    let (_ada, session) = calls(&h, "Main key").await;

    let by_provider = page(&h, &session, "/settings/usage").await;
    assert_eq!(by_provider.status, 200, "{}", by_provider.text);
    let html = &by_provider.text;
    assert!(by_provider.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert!(!html.contains("style="), "no inline style under the CSP");
    assert_eq!(html.matches("role=\"img\"").count(), 3, "requests, tokens and cost charts");
    assert!(html.contains("<title id=\"chart-requests-title\">Requests per day by provider, last 30 days</title>"));
    assert!(part(html, "<ul class=\"legend\">", "</ul>").contains("OpenAI"), "the provider is in the legend");
    // Two chats of 11 input and 7 output tokens each, Ada's only: Bob's third OpenAI call
    // and his Anthropic call are not counted.
    let table = part(html, "<tbody>", "</tbody>");
    assert!(
        table.contains("OpenAI</th><td class=\"num\">2</td><td class=\"num\">22</td><td class=\"num\">14</td>"),
        "{table}"
    );
    assert!(part(html, "<tfoot>", "</tfoot>").contains("<td class=\"num\">2</td>"));
    assert!(!html.contains("Anthropic"), "another person's usage never appears");
    assert!(html.contains("<option value=\"30\" selected>"));
    assert!(html.contains("href=\"/settings/usage.csv?days=30&amp;by=provider\""));

    let by_source = page(&h, &session, "/settings/usage?days=7&by=source").await;
    assert_eq!(by_source.status, 200, "{}", by_source.text);
    assert!(part(&by_source.text, "<ul class=\"legend\">", "</ul>").contains("own key"), "{}", by_source.text);
    assert!(by_source.text.contains("<option value=\"7\" selected>"));
    assert!(by_source.text.contains("<option value=\"source\" selected>"));
    assert!(part(&by_source.text, "<tbody>", "</tbody>").contains("own key</th><td class=\"num\">2</td>"));

    let by_model = page(&h, &session, "/settings/usage?by=model").await;
    assert!(part(&by_model.text, "<ul class=\"legend\">", "</ul>").contains("gpt-4o"), "{}", by_model.text);

    let by_key = page(&h, &session, "/settings/usage?days=90&by=key").await;
    let legend = part(&by_key.text, "<ul class=\"legend\">", "</ul>");
    assert!(legend.contains("Main key (…"), "the key's name and hint: {legend}");
}

async fn the_usage_csv_has_a_row_per_day_and_group_with_formulas_defused(db: TestDb) {
    let h = Harness::new(db).await;
    let (_ada, session) = calls(&h, "=HYPERLINK(\"http://evil.example\")").await;

    let csv = page(&h, &session, "/settings/usage.csv?days=7&by=provider").await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    let disposition = csv.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"keygate-usage-"), "{disposition}");
    assert!(disposition.ends_with("-7d-by-provider.csv\""), "{disposition}");
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines[0], "day,group,requests,input_tokens,output_tokens,cost_usd");
    assert_eq!(lines.len(), 2, "{}", csv.text);
    // gpt-4o: 11 in at $2.50/M and 7 out at $10/M, twice.
    let (day, rest) = lines[1].split_once(',').unwrap();
    assert!(chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok(), "{day}");
    assert_eq!(rest, "OpenAI,2,22,14,0.000195");

    // A key named like a formula is written so a spreadsheet shows it as text.
    let by_key = page(&h, &session, "/settings/usage.csv?by=key").await;
    let row = by_key.text.lines().nth(1).unwrap();
    assert!(row.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\") (…"), "{row}");
    assert!(row.ends_with(",2,22,14,0.000195"), "{row}");
}

async fn a_period_without_calls_says_so_and_the_page_needs_a_session(db: TestDb) {
    let h = Harness::new(db).await;
    let (_ada, session) = signed_in(&h, "ada@example.com").await;
    // Someone else's calls do not make Ada's period any less empty.
    let bob = h.user("bob@example.com").await;
    h.add_key(&bob, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat(&bob.token).await.status, 200);
    h.flush().await;

    let empty = page(&h, &session, "/settings/usage").await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    assert!(empty.text.contains("No calls in this period yet"), "{}", empty.text);
    assert!(empty.text.contains("through keygate"));
    assert!(!empty.text.contains("role=\"img\""));
    assert!(!empty.text.contains("Download CSV"));
    let csv = page(&h, &session, "/settings/usage.csv").await;
    assert_eq!(csv.text, "day,group,requests,input_tokens,output_tokens,cost_usd\r\n");

    let anonymous = h.send(Request::get("/settings/usage?days=7").body(Body::empty()).unwrap()).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.headers["location"], "/login?next=/settings/usage%3Fdays%3D7");
    let anonymous = h.send(Request::get("/settings/usage.csv").body(Body::empty()).unwrap()).await;
    assert_eq!(anonymous.status, 303);
}
