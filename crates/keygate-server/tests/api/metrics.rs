//! Who may read `/metrics`: on the main listener, a super-admin's credential carrying the
//! `metrics` scope; with a listener of its own, only there, and absent from the main one.

use crate::support::*;
use axum::http::Method;
use keygate_core::Scope;
use keygate_service::audit::Actor;
use keygate_service::auth::TokenRequest;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(metrics_need_a_super_admins_metrics_scope, metrics_served_apart_are_absent_from_the_main_listener);

async fn scrape_with(h: &Harness, token: Option<&str>) -> Reply {
    h.call(Method::GET, "/metrics", token, None).await
}

async fn minted(h: &Harness, user: &keygate_core::User, scopes: Option<Vec<Scope>>) -> String {
    let request = TokenRequest { name: "scoped".into(), scopes, expires_at: None, workspace_id: None };
    let issued = h.services().create_token_for_user(user, request, &Actor::cli()).await.unwrap();
    let token = issued.secret.expose().to_owned();
    h.canary(&token);
    token
}

async fn metrics_need_a_super_admins_metrics_scope(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let alice = h.user("alice@example.com").await;

    let anonymous = scrape_with(&h, None).await;
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthenticated"), "{}", anonymous.text);
    assert_eq!(anonymous.headers["content-type"], "application/problem+json");
    assert_eq!(scrape_with(&h, Some("kg_not_a_token")).await.status, 401);

    // A user's token carries every scope the user may hold: never `metrics`.
    let user = scrape_with(&h, Some(&alice.token)).await;
    assert_eq!((user.status, user.code()), (403, "forbidden"), "{}", user.text);
    assert_eq!(user.headers["content-type"], "application/problem+json");
    let refused = h.post("/api/v1/tokens", &alice.token, json!({"name": "m", "scopes": ["metrics"]})).await;
    assert_eq!(refused.status, 403, "only super-admins hold the metrics scope: {}", refused.text);
    assert!(refused.json["detail"].as_str().unwrap().contains("`metrics`"), "{}", refused.text);

    // A super-admin's token without the scope, and what it mints naming no scopes: 403.
    let older = minted(&h, &root.user, Some(vec![Scope::Keys, Scope::Proxy, Scope::Usage, Scope::Admin])).await;
    assert_eq!(scrape_with(&h, Some(&older)).await.status, 403, "a token made before the scope existed");
    let child = h.post("/api/v1/tokens", &older, json!({"name": "child"})).await;
    assert_eq!(child.status, 201, "{}", child.text);
    assert_eq!(child.json["scopes"], json!(["keys", "proxy", "usage", "admin"]), "no silent metrics scope");
    let child = child.json["token"].as_str().unwrap().to_owned();
    h.canary(&child);
    assert_eq!(scrape_with(&h, Some(&child)).await.status, 403);
    let proxy_only = h.post("/api/v1/tokens", &root.token, json!({"name": "sdk", "scopes": ["proxy"]})).await;
    let proxy_only = proxy_only.json["token"].as_str().unwrap().to_owned();
    h.canary(&proxy_only);
    assert_eq!(scrape_with(&h, Some(&proxy_only)).await.status, 403);

    // A super-admin's token with the scope (minted naming it, or naming nothing: every
    // scope a super-admin may hold): 200.
    let scraper = h.post("/api/v1/tokens", &root.token, json!({"name": "prometheus", "scopes": ["metrics"]})).await;
    assert_eq!((scraper.status, scraper.json["scopes"].clone()), (201, json!(["metrics"])), "{}", scraper.text);
    let scraper = scraper.json["token"].as_str().unwrap().to_owned();
    h.canary(&scraper);
    for token in [&scraper, &root.token] {
        let ok = scrape_with(&h, Some(token)).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(ok.headers["content-type"], "text/plain; version=0.0.4");
        assert!(ok.text.contains("keygate_proxy_db_queries_total"), "{}", ok.text);
    }
    // A metrics-only token administers nothing.
    assert_eq!(h.get("/api/v1/admin/users", &scraper).await.status, 403);

    // A super-admin who is no longer one loses it.
    let mut demoted = root.user.clone();
    demoted.super_admin = false;
    h.store().update_user(&demoted).await.unwrap();
    let after = h.replica().await;
    let request = axum::http::Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {scraper}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send_to(&after, request).await.status, 403);
}

async fn metrics_served_apart_are_absent_from_the_main_listener(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let apart = h.state.clone().with_metrics_apart();
    for token in [Some(root.token.as_str()), None] {
        let request = axum::http::Request::builder().uri("/metrics");
        let request = match token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        let absent = h.send_to(&apart, request.body(axum::body::Body::empty()).unwrap()).await;
        assert_eq!((absent.status, absent.code()), (404, "not_found"), "{}", absent.text);
        assert_eq!(absent.headers["content-type"], "application/problem+json");
    }
    // The rest of the API is there as before.
    let me = axum::http::Request::builder()
        .uri("/api/v1/me")
        .header("authorization", format!("Bearer {}", root.token))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send_to(&apart, me).await.status, 200);

    // The metrics listener: no credential needed, and nothing else served.
    let scraped = h.scrape().await;
    assert_eq!(scraped.status, 200, "{}", scraped.text);
    assert!(scraped.text.contains("keygate_proxy_requests_total"), "{}", scraped.text);
    for path in ["/healthz", "/api/v1/me", "/proxy/openai/v1/models"] {
        let other = h.on_metrics_listener(path).await;
        assert_eq!((other.status, other.code()), (404, "not_found"), "{path}: {}", other.text);
    }
}
