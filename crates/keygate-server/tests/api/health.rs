//! `/healthz`, `/readyz`, unknown routes, and serving with graceful shutdown.

use crate::support::*;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

both_backends!(
    ready_while_the_database_answers,
    a_real_server_serves_and_shuts_down_gracefully
);

async fn ready_while_the_database_answers(db: TestDb) {
    let state = state(&db).await;
    let (status, _, body) = get(&state, "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = get(&state, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    state.store.close().await;
    let (status, content_type, body) = get(&state, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["code"], "database_unreachable");
    // Liveness does not depend on the database.
    assert_eq!(get(&state, "/healthz").await.0, 200);
}

#[tokio::test]
async fn unknown_routes_are_problem_json() {
    let db = TestDb::sqlite();
    let (status, content_type, body) = get(&state(&db).await, "/nope").await;
    assert_eq!(status, 404);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);
    assert!(body["detail"].as_str().unwrap().contains("/nope"));
}

async fn a_real_server_serves_and_shuts_down_gracefully(db: TestDb) {
    let state = state(&db).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(keygate_server::serve(
        listener,
        keygate_server::router(state),
        async {
            let _ = stopped.await;
        },
    ));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
