//! Builders shared by the API tests.

use axum::body::Body;
use axum::http::{Request, Response};
use keygate_server::AppState;
use keygate_service::{boot, keys::KeyVault};
use keygate_store::testdb::TestDb;
use keygate_vault::{KeyEncryptionKeys, Keyring};
use std::sync::Arc;
use tower::ServiceExt;

pub const MASTER_KEY: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

pub async fn state(db: &TestDb) -> AppState {
    let store = keygate_store::connect(&db.location).await.unwrap();
    let keks: Arc<dyn KeyEncryptionKeys> = Arc::new(Keyring::from_hex("test", MASTER_KEY).unwrap());
    boot::check(&*store, &*keks).await.unwrap();
    AppState::new(store.clone(), Arc::new(KeyVault::new(store, keks)))
}

pub async fn get(state: &AppState, path: &str) -> (u16, Option<String>, serde_json::Value) {
    let app = keygate_server::router(state.clone());
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    decode(response).await
}

pub async fn decode(response: Response<Body>) -> (u16, Option<String>, serde_json::Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, content_type, json)
}
