//! Bad input gets problem+json with a stable code, and nothing is written.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_store::testdb::TestDb;
use serde_json::json;

#[tokio::test]
async fn malformed_bodies_unknown_fields_and_bad_ids_are_problem_json() {
    let h = Harness::new(TestDb::sqlite()).await;
    let alice = h.user("alice@example.com").await;
    let before = h.audit_count().await;
    let raw = |body: String, content_type: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/keys")
            .header("authorization", format!("Bearer {}", alice.token))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let huge = format!("{{\"provider\": \"openai\", \"secret\": \"{}\"}}", "x".repeat(3 << 20));
    let cases = [
        (raw("{\"provider\": ".into(), "application/json"), 400, "malformed_json"),
        (raw(huge, "application/json"), 413, "payload_too_large"),
        (raw("provider=openai".into(), "application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
        (
            raw("{\"provider\": \"openai\", \"secret\": \"sk-x\", \"colour\": \"blue\"}".into(), "application/json"),
            422,
            "invalid_request",
        ),
        (raw("{\"provider\": \"openai\"}".into(), "application/json"), 422, "invalid_request"),
        (raw("{\"provider\": \"openai\", \"secret\": 42}".into(), "application/json"), 422, "invalid_request"),
        (
            raw("{\"provider\": \"openai\", \"secret\": \"sk-x\", \"scope\": \"galaxy\"}".into(), "application/json"),
            422,
            "invalid_request",
        ),
    ];
    for (request, status, code) in cases {
        let reply = h.send(request).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert!(reply.json["detail"].is_string() && reply.json["title"].is_string() && reply.json["type"].is_string());
    }
    let unknown_field =
        h.post("/api/v1/keys", &alice.token, json!({"provider": "openai", "secret": "sk-x", "colour": "blue"})).await;
    assert!(
        unknown_field.json["detail"].as_str().unwrap().contains("colour"),
        "names the field: {}",
        unknown_field.text
    );
    assert_eq!(h.get("/api/v1/keys/not-a-uuid", &alice.token).await.code(), "not_found");
    assert_eq!(h.get("/api/v1/keys?scope=galaxy", &alice.token).await.code(), "invalid_request");
    assert_eq!(h.audit_count().await, before, "nothing written");
    assert!(h.store().credentials(&Default::default()).await.unwrap().is_empty());
}
