//! `/healthz`, `/readyz`, unknown routes, and serving with graceful shutdown.

use crate::support::*;
use axum::http::Method;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(ready_while_the_database_answers, a_real_server_serves_and_shuts_down_gracefully);

async fn ready_while_the_database_answers(db: TestDb) {
    let h = Harness::new(db).await;
    let reply = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((reply.status, reply.json["status"].as_str()), (200, Some("ok")));
    let reply = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((reply.status, reply.json["status"].as_str()), (200, Some("ready")));

    h.store().close().await;
    let reply = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.code(), "database_unreachable");
    assert_eq!(h.call(Method::GET, "/healthz", None, None).await.status, 200, "liveness does not need the database");
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_paths_are_problem_json() {
    let h = Harness::new(TestDb::sqlite()).await;
    let reply = h.call(Method::GET, "/nope", None, None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!((reply.code(), reply.json["status"].as_u64()), ("not_found", Some(404)));
    assert!(reply.json["detail"].as_str().unwrap().contains("/nope"));

    let reply = h.call(Method::DELETE, "/healthz", None, None).await;
    assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"), "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert!(reply.json["detail"].as_str().unwrap().contains("DELETE"));

    // A path that does not decode to UTF-8 never reaches a provider.
    let user = h.user("paths@example.com").await;
    let reply = h.call(Method::GET, "/proxy/openai/v1/%FF", Some(&user.token), None).await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"), "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
}

async fn a_real_server_serves_and_shuts_down_gracefully(db: TestDb) {
    let h = Harness::new(db).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = keygate_server::router(h.state.clone());
    let server = tokio::spawn(keygate_server::serve(listener, app, Default::default(), async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
