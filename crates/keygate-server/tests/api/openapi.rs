//! The OpenAPI document is generated from the route table: every documented operation
//! is served, and every operation the design names is documented.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_store::testdb::TestDb;

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_served_routes() {
    let h = Harness::new(TestDb::sqlite()).await;
    let doc = h.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.json["paths"].as_object().unwrap();

    let expected = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/v1/keys"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys/{id}"),
        ("patch", "/api/v1/keys/{id}"),
        ("delete", "/api/v1/keys/{id}"),
        ("put", "/api/v1/keys/{id}/secret"),
        ("post", "/api/v1/keys/{id}/test"),
        ("get", "/api/v1/tokens"),
        ("post", "/api/v1/tokens"),
        ("delete", "/api/v1/tokens/{id}"),
        ("get", "/api/v1/providers"),
        ("post", "/api/v1/auth/login"),
        ("get", "/api/v1/me"),
        ("get", "/api/v1/admin/workspaces"),
        ("post", "/api/v1/admin/workspaces"),
        ("get", "/api/v1/admin/workspaces/{id}"),
        ("patch", "/api/v1/admin/workspaces/{id}"),
        ("post", "/api/v1/admin/workspaces/{id}/members"),
        ("get", "/api/v1/admin/users"),
        ("patch", "/api/v1/admin/users/{id}"),
        ("get", "/api/v1/admin/keys"),
        ("get", "/api/v1/admin/settings"),
        ("put", "/api/v1/admin/settings"),
        ("get", "/api/v1/admin/audit"),
        ("post", "/api/v1/resolve"),
        ("get", "/api/v1/quota"),
        ("get", "/api/v1/usage"),
        ("get", "/proxy/{provider}/{path}"),
        ("post", "/proxy/{provider}/{path}"),
    ];
    for (method, path) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    // Every documented operation is routed: never the fallback's "no route".
    let id = uuid::Uuid::nil();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let uri =
                path.replace("{id}", &id.to_string()).replace("{provider}", "openai").replace("{path}", "v1/models");
            let request =
                Request::builder().method(method.to_uppercase().as_str()).uri(&uri).body(Body::empty()).unwrap();
            let reply = h.send(request).await;
            assert!(!reply.text.contains("no route for"), "{method} {path} is documented but not routed");
            assert_ne!(reply.status, 405, "{method} {path} is documented but not routed for that method");
        }
    }
    let key_object = &doc.json["components"]["schemas"]["KeyObject"]["properties"];
    for field in [
        "id",
        "provider",
        "name",
        "scope",
        "hint",
        "status",
        "validity",
        "validity_detail",
        "model",
        "created_at",
        "updated_at",
        "last_used_at",
        "usage",
    ] {
        assert!(key_object.get(field).is_some(), "KeyObject.{field} is not documented");
    }
    assert!(doc.json["components"]["securitySchemes"]["bearer"].is_object());
}
