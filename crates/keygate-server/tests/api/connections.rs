//! A stranger cannot take keygate offline by holding connections open: slow headers, idle
//! keep-alive connections and trickled bodies are cut off, and past the connection cap
//! health checks still answer while everything else is refused clearly.

use crate::support::*;
use keygate_server::ConnectionLimits;
use keygate_store::testdb::TestDb;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the server to act before it fails (a bound, not a measure).
const PATIENCE: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection; what it sent meanwhile.
async fn until_closed(conn: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open: {}", String::from_utf8_lossy(&seen));
    String::from_utf8_lossy(&seen).into_owned()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    until_closed(&mut conn).await
}

fn short() -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(600),
        max_connections: 1000,
    }
}

#[tokio::test]
async fn slow_headers_idle_connections_and_trickled_bodies_are_cut_off() {
    let h = Harness::new(TestDb::sqlite()).await;
    let server = Server::start_with(&h, short()).await;
    let addr = server.addr;

    // Connected, never a byte: closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    until_closed(&mut idle).await;

    // Headers trickled (slowloris): closed before they are complete.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let seen = until_closed(&mut slow).await;
    assert!(!seen.contains("200 OK"), "{seen}");

    // A keep-alive connection left idle after its answer: closed.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let seen = until_closed(&mut kept).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "it was served first: {seen}");

    // A body that never arrives whole: 408 once the body timeout passes, and the
    // connection does not stay open. One announced as 10 GB is refused before it is read.
    let user = h.user("trickle@example.com").await;
    h.add_key(&user, serde_json::json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    // Both ways in: a proxied call (straight from the connection) and the unified
    // endpoint (through the router).
    for path in ["/proxy/openai/v1/chat/completions", "/v1/chat/completions"] {
        for (length, expect) in [("1000000", "408"), ("10000000000", "413")] {
            let mut body = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: {length}\r\n\r\n{{\"model\":",
                user.token
            );
            body.write_all(head.as_bytes()).await.unwrap();
            let seen = until_closed(&mut body).await;
            assert!(seen.starts_with(&format!("HTTP/1.1 {expect}")), "{path} {length}: {seen}");
        }
    }
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"), "and keygate keeps serving");
}

/// `serve` takes the paths `App::takes` names past the router: each must be one the
/// router sends to the proxy too (its answers carry no page security headers; the
/// router's own answers, a 404 included, do).
#[tokio::test]
async fn every_path_taken_past_the_router_is_one_the_router_proxies() {
    use tower::ServiceExt;
    let h = Harness::new(TestDb::sqlite()).await;
    let router = keygate_server::router(h.state.clone());
    let segments = ["openai", "github-git", "", "%61", "a%2Fb", ".", "..", "v1", "_status", "%FF"];
    let mut paths = vec!["/proxy".to_owned(), "/proxy/".to_owned(), "/proxyx/openai/v1".to_owned()];
    for a in segments {
        for b in segments {
            paths.push(format!("/proxy/{a}/{b}"));
            paths.push(format!("/proxy/{a}/{b}/"));
            for c in ["", "chat", "..", "%2e"] {
                paths.push(format!("/proxy/{a}/{b}/{c}"));
            }
        }
    }
    let mut taken = 0;
    for path in &paths {
        let request = axum::http::Request::get(path.as_str()).body(axum::body::Body::empty()).unwrap();
        let reply = router.clone().oneshot(request).await.unwrap();
        let from_router = reply.headers().contains_key("x-frame-options");
        if keygate_server::App::takes(path) {
            taken += 1;
            assert!(!from_router, "{path}: taken past the router, which does not proxy it ({})", reply.status());
        }
    }
    assert!(taken > paths.len() / 2, "the common paths are taken: {taken} of {}", paths.len());
    assert!(keygate_server::App::takes("/proxy/openai/v1/chat/completions"));
    assert!(!keygate_server::App::takes("/v1/chat/completions"));
}

#[tokio::test]
async fn proxied_calls_from_a_connection_reach_the_proxy_and_nothing_else_does() {
    let h = Harness::new(TestDb::sqlite()).await;
    let server = Server::start_with(&h, short()).await;
    let addr = server.addr;
    let user = h.user("direct@example.com").await;
    h.add_key(&user, serde_json::json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let call = |path: &str| {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            user.token,
            body.len()
        )
    };
    for (path, expect) in [
        ("/proxy/openai/v1/chat/completions", "200"),
        ("/proxy/open%61i/v1/chat/completions", "200"),
        ("/proxy/openai/v1/chat/completions?x=1", "200"),
        // Not the proxy's route: the router's answers, with its security headers.
        ("/proxy/openai/", "404"),
        ("/proxy/openai", "404"),
        ("/proxyx/openai/v1/chat/completions", "404"),
    ] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(call(path).as_bytes()).await.unwrap();
        let seen = until_closed(&mut conn).await;
        assert!(seen.starts_with(&format!("HTTP/1.1 {expect}")), "{path}: {seen}");
        let lower = seen.to_ascii_lowercase();
        if expect == "200" {
            assert!(lower.contains("x-keygate-key-source: user"), "{path}: {seen}");
            assert!(!lower.contains("x-frame-options"), "a provider's answer is relayed as it came: {seen}");
        } else {
            assert!(lower.contains("x-content-type-options: nosniff"), "{path}: {seen}");
        }
    }
}

#[tokio::test]
async fn past_the_connection_cap_health_checks_answer_and_the_rest_is_refused() {
    let h = Harness::new(TestDb::sqlite()).await;
    let limits = ConnectionLimits { header_timeout: Duration::from_secs(30), max_connections: 3, ..short() };
    let server = Server::start_with(&h, limits).await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        // A served request proves the connection holds a slot.
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(conn);
    }
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"), "liveness answers past the cap");
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"), "readiness answers past the cap");
    let refused = get(addr, "/api/v1/providers").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("too_many_connections") && refused.to_ascii_lowercase().contains("retry-after"),
        "{refused}"
    );

    drop(held);
    // Slots come back once those connections are gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = get(addr, "/api/v1/providers").await;
        if reply.starts_with("HTTP/1.1 401") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never came back: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_cap_leaves_room_in_the_open_file_limit() {
    assert_eq!(keygate_server::effective_max_connections(4096, Some(1024)), 1024 - 256 - 64);
    assert_eq!(keygate_server::effective_max_connections(100, Some(1_048_576)), 100);
    assert_eq!(keygate_server::effective_max_connections(100, None), 100);
    assert_eq!(keygate_server::effective_max_connections(100, Some(10)), 1);
}

/// A caller no key can serve is refused before its body is read, and bodies that would
/// take the process past its memory budget are refused with 503 and Retry-After.
#[tokio::test]
async fn bodies_are_read_only_for_admitted_calls_and_within_the_memory_budget() {
    use axum::body::Body;
    use axum::http::Request;
    let h = Harness::new(TestDb::sqlite()).await;
    let stranger = h.user("nokey@example.com").await;
    // A body that never arrives: reading it would hang this call forever.
    let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let request = Request::post("/proxy/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", stranger.token))
        .header("content-length", "31000000")
        .body(Body::from_stream(never))
        .unwrap();
    let reply = tokio::time::timeout(PATIENCE, h.send(request)).await.expect("answered without reading the body");
    assert_eq!((reply.status, reply.code()), (403, "no_credential"), "{}", reply.text);

    let user = h.user("big@example.com").await;
    h.add_key(&user, serde_json::json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let small = h.state.clone().with_body_budget(1 << 20);
    let big = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(1_500_000)}]});
    let reply = h.proxy_via(&small, &user.token, "openai", "v1/chat/completions", big.clone(), &[]).await;
    assert_eq!((reply.status, reply.code()), (503, "overloaded"), "{}", reply.text);
    assert_eq!(reply.headers["retry-after"], "1");
    let fits = h.state.clone().with_body_budget(4 << 20);
    assert_eq!(h.proxy_via(&fits, &user.token, "openai", "v1/chat/completions", big, &[]).await.status, 200);
    // The budget comes back once a body has gone upstream.
    for _ in 0..3 {
        assert_eq!(h.chat_via(&small, &user.token).await.status, 200);
    }
}
