//! The proxy forwards the caller's call and never more: a key the caller does not own
//! serves only the provider's shared endpoints, a path cannot climb out of a base URL's
//! prefix, a smuggled query parameter or header never reaches the provider, and a
//! refusal the caller provoked never disables a shared key.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_mock::Fault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(
    keys_the_caller_does_not_own_serve_only_shared_endpoints,
    paths_cannot_escape_and_smuggled_parameters_never_arrive,
    a_refusal_the_caller_provoked_does_not_disable_a_shared_key,
);

async fn call(h: &Harness, method: Method, uri: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    h.send(request.body(Body::empty()).unwrap()).await
}

async fn keys_the_caller_does_not_own_serve_only_shared_endpoints(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "mapbox", "pk.", false).await;
    h.operator_key(&root, "resend", "re_", false).await;
    h.operator_key(&root, "openai", "sk-proj-", false).await;
    let newcomer = h.user("newcomer@example.com").await;
    let before = h.mock.requests().len();

    // The platform key must not read the operator's tokens or mint keys on its account.
    for (method, uri) in [
        (Method::GET, "/proxy/mapbox/tokens/v2"),
        (Method::POST, "/proxy/resend/api-keys"),
        (Method::GET, "/proxy/resend/domains"),
        (Method::GET, "/proxy/openai/v1/organization/users"),
        (Method::GET, "/proxy/openai/v1/files"),
        (Method::DELETE, "/proxy/openai/v1/models/ft-abc"),
    ] {
        let reply = call(&h, method.clone(), uri, &newcomer.token, &[]).await;
        assert_eq!((reply.status, reply.code()), (403, "endpoint_not_allowed"), "{method} {uri}: {}", reply.text);
        let detail = reply.json["detail"].as_str().unwrap();
        let path = uri.splitn(4, '/').nth(3).unwrap();
        assert!(detail.contains(path), "the refusal names the path: {detail}");
    }
    assert_eq!(h.mock.requests().len(), before, "nothing reached the provider");

    // Its shared endpoints work.
    let tiles = call(&h, Method::GET, "/proxy/mapbox/v4/mapbox.satellite/1/0/0.png", &newcomer.token, &[]).await;
    assert_eq!(tiles.status, 200, "{}", tiles.text);
    let mail = h.proxy(&newcomer.token, "resend", "emails", json!({"to": "a@example.com"}), &[]).await;
    assert_eq!(mail.status, 200, "{}", mail.text);
    assert_eq!(h.chat(&newcomer.token).await.status, 200);

    // A workspace's shared key is no different for a member.
    let owner = h.user("owner@example.com").await;
    h.add_key(&owner, json!({"provider": "mapbox", "scope": "workspace", "secret": h.valid_key("pk.")})).await;
    let member = h.join(&h.user("member@example.com").await, owner.workspace, keygate_core::Role::Member).await;
    let tokens = call(&h, Method::GET, "/proxy/mapbox/tokens/v2", &member.token, &[]).await;
    assert_eq!((tokens.status, tokens.code()), (403, "endpoint_not_allowed"), "{}", tokens.text);

    // The caller's own key serves any call: it is theirs.
    h.add_key(&newcomer, json!({"provider": "mapbox", "secret": h.valid_key("pk.")})).await;
    let own = call(&h, Method::GET, "/proxy/mapbox/tokens/v2", &newcomer.token, &[]).await;
    assert_eq!(own.status, 200, "{}", own.text);

    let providers = h.get("/api/v1/providers", &newcomer.token).await;
    let resend = providers.json["providers"].as_array().unwrap().iter().find(|p| p["id"] == "resend").unwrap().clone();
    assert_eq!(resend["shared_endpoints"], json!(["POST /emails", "POST /emails/batch"]));
}

async fn paths_cannot_escape_and_smuggled_parameters_never_arrive(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("paths@example.com").await;
    h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let before = h.mock.requests().len();
    for path in [
        "../anthropic/v1/messages",
        "v1/../../admin",
        "..%2F..%2Fadmin",
        "%2e%2e/anthropic/v1/messages",
        "%2E%2E/anthropic",
        "..%5Canthropic",
        "v1%2Fchat%2Fcompletions",
    ] {
        let reply = call(&h, Method::POST, &format!("/proxy/openai/{path}"), &user.token, &[]).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_request"), "{path}: {}", reply.text);
    }
    assert_eq!(h.mock.requests().len(), before, "nothing went upstream");

    // Query-key providers: a parameter whose decoded name is the injected one is dropped.
    let root = h.super_admin("maps@example.com").await;
    let injected = h.operator_key(&root, "google_maps", "AIza", false).await;
    let _ = injected;
    let reply = call(
        &h,
        Method::GET,
        "/proxy/google_maps/maps/api/geocode/json?address=Paris&k%65y=AIzaStolenStolenStolenStolen00&KEY=x",
        &user.token,
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = h.mock.requests().pop().unwrap();
    let query = seen.query.unwrap_or_default();
    assert!(!query.contains("Stolen") && !query.contains("KEY=x"), "{query}");
    assert_eq!(query.matches("key=").count(), 1, "only the injected key: {query}");

    // Headers that carry credentials, pick another account, or describe where the call
    // came from are never forwarded; neither are headers the caller named in Connection.
    let reply = call(
        &h,
        Method::GET,
        "/proxy/openai/v1/models",
        &user.token,
        &[
            ("api-key", "sk-caller-own"),
            ("x-goog-api-key", "AIzaCaller"),
            ("x-amz-security-token", "t"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = h.mock.requests().pop().unwrap();
    for name in
        ["api-key", "x-goog-api-key", "x-amz-security-token", "forwarded", "x-forwarded-for", "x-real-ip", "x-drop-me"]
    {
        assert!(seen.header(name).is_none(), "{name} was forwarded");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

async fn a_refusal_the_caller_provoked_does_not_disable_a_shared_key(db: TestDb) {
    let h = Harness::new(db).await;
    let owner = h.user("team@example.com").await;
    let id =
        h.add_key(&owner, json!({"provider": "openai", "scope": "workspace", "secret": h.valid_key("sk-proj-")})).await;
    let member = h.join(&h.user("reader@example.com").await, owner.workspace, keygate_core::Role::Member).await;

    // The provider refuses this one call (as a crafted request can make it do), but the
    // key itself is good: keygate's own probe says so, and the key stays in use.
    h.mock.configure(|c| {
        c.fault = Some(Fault::Status { status: 401 });
        c.fault_times = Some(1);
    });
    assert_eq!(h.chat(&member.token).await.status, 401);
    let key = h.get(&format!("/api/v1/keys/{id}"), &owner.token).await;
    assert_eq!(key.json["validity"], "valid", "{}", key.text);
    assert_eq!(h.chat(&member.token).await.status, 200, "the shared key still serves");

    // A key the provider really revoked is marked once the probe confirms it.
    h.mock.configure(|c| c.valid_keys.clear());
    assert_eq!(h.chat(&member.token).await.status, 401);
    let key = h.get(&format!("/api/v1/keys/{id}"), &owner.token).await;
    assert_eq!(key.json["validity"], "invalid", "{}", key.text);
}

both_backends!(a_provider_echoing_the_key_in_any_encoding_is_scrubbed_everywhere);

/// A hostile provider repeats the key keygate sent it in an encoding of its choice, in a
/// header, a success or error body, and a stream event split across chunks: nothing of
/// it reaches the caller.
async fn a_provider_echoing_the_key_in_any_encoding_is_scrubbed_everywhere(db: TestDb) {
    let h = Harness::new(db).await;
    let user = h.user("echo@example.com").await;
    let key = h.valid_key("sk-proj-");
    h.add_key(&user, json!({"provider": "openai", "secret": key})).await;
    let encodings = ["raw", "base64", "base64url", "hex", "percent", "json_u"];
    for encoding in encodings {
        let echoed = encode(&key, encoding);
        for (status, stream) in [(200u16, false), (401, false), (200, true)] {
            h.mock.configure(|c| {
                c.fault = Some(Fault::Echo { encoding: encoding.into(), status });
                c.fault_times = Some(1);
            });
            let body = json!({"model": "gpt-4o", "stream": stream, "messages": []});
            let reply = h.proxy(&user.token, "openai", "v1/chat/completions", body, &[]).await;
            assert_eq!(reply.status, status, "{encoding}/{status}/{stream}: {}", reply.text);
            let headers = format!("{:?}", reply.headers);
            for (what, text) in [("body", reply.text.as_str()), ("headers", headers.as_str())] {
                assert!(!text.contains(&echoed), "{encoding}/{status}/{stream}: the key leaked in the {what}: {text}");
                assert!(
                    !text.contains(&echoed[..echoed.len() / 2]),
                    "{encoding}/{status}/{stream}: half the key in the {what}"
                );
            }
            assert!(reply.text.contains("[REDACTED]"), "{encoding}/{status}/{stream}: {}", reply.text);
        }
    }
}

/// The mock's own encoders, so the test checks what a provider would really send.
fn encode(key: &str, encoding: &str) -> String {
    keygate_mock::encode_echo(key, encoding)
}
