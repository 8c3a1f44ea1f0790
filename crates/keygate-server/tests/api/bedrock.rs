//! AWS Bedrock through keygate: keys validated with a signed call, Converse, ConverseStream
//! and InvokeModel signed with SigV4 and verified by the mock (which rebuilds the
//! signature from what it received), usage read from JSON, headers and event-stream
//! frames, a model id's `:` sent as `%3A`, the caller's own `x-amz-*` headers never
//! forwarded, and no secret in any response, log line or upstream request.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_core::eventstream;
use keygate_mock::AwsCredential;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};
use tower::ServiceExt;

both_backends!(
    bedrock_keys_are_validated_with_a_signed_call,
    converse_and_its_stream_are_signed_metered_and_relayed_unchanged,
    invoke_calls_are_metered_from_headers_and_chunks,
    a_secret_aws_no_longer_accepts_is_refused_and_the_key_marked_invalid,
    a_shared_bedrock_key_serves_only_inference,
);

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// A fresh AWS credential the mock verifies signatures with; its secret is a canary.
fn aws_key(h: &Harness) -> (String, String) {
    let id = uuid::Uuid::now_v7().simple().to_string().to_uppercase();
    let access_key_id = format!("AKIA{}", &id[id.len() - 16..]);
    let secret = format!("CANARY{}/+", uuid::Uuid::now_v7().simple());
    assert_eq!((access_key_id.len(), secret.len()), (20, 40));
    h.canary(&secret);
    let known = AwsCredential { access_key_id: access_key_id.clone(), secret_access_key: secret.clone() };
    h.mock.configure(|c| c.aws_credentials.push(known));
    (access_key_id, secret)
}

fn secret_json(access_key_id: &str, secret: &str) -> Value {
    json!({"access_key_id": access_key_id, "secret_access_key": secret, "region": "eu-west-3"})
}

fn converse_body() -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"maxTokens": 50}})
}

/// A raw call (the answer's bytes as they came), for binary event streams.
async fn raw(h: &Harness, token: &str, path: &str, body: &Value) -> (u16, String, Vec<u8>) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/proxy/bedrock/{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = keygate_server::router(h.state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let ct = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
    (status, ct, bytes)
}

/// Every message of an event stream, decoded (both CRCs checked).
fn messages(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = eventstream::message_len(rest).unwrap().unwrap();
        let message = eventstream::decode(&rest[..len]).unwrap();
        let doc = eventstream::bedrock_document(&message).unwrap();
        out.push((message.header(":event-type").unwrap().to_owned(), serde_json::from_slice(&doc).unwrap()));
        rest = &rest[len..];
    }
    out
}

async fn bedrock_keys_are_validated_with_a_signed_call(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let (id, secret) = aws_key(&h);
    h.mock.clear_requests();

    let good =
        h.post("/api/v1/keys", &alice.token, json!({"provider": "bedrock", "secret": secret_json(&id, &secret)})).await;
    assert_eq!((good.status, good.json["validity"].as_str()), (201, Some("valid")), "{}", good.text);
    assert_eq!(good.json["hint"], format!("…{}", &id[16..]));
    let probe = &h.mock.requests()[0];
    assert_eq!(
        (probe.method.as_str(), probe.path.as_str()),
        ("POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse")
    );
    assert_eq!((probe.credential.as_deref(), probe.credential_via.as_deref()), (Some(id.as_str()), Some("sigv4")));
    let authorization = probe.header("authorization").unwrap();
    assert!(
        authorization.contains(
            "/eu-west-3/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, "
        ),
        "{authorization}"
    );
    assert!(probe.body.contains("\"maxTokens\":1"), "one output token: {}", probe.body);

    // The same key id with another secret: the mock's signature differs, 403, invalid.
    let wrong = format!("CANARYwrong{}", &secret[11..]);
    h.canary(&wrong);
    let bad =
        h.post("/api/v1/keys", &alice.token, json!({"provider": "bedrock", "secret": secret_json(&id, &wrong)})).await;
    assert_eq!((bad.status, bad.json["validity"].as_str()), (201, Some("invalid")), "{}", bad.text);
    assert!(bad.json["validity_detail"].as_str().unwrap().contains("HTTP 403"), "{}", bad.text);

    // Temporary credentials: the session token is sent and signed.
    let token = format!("IQoJb3JpZ2luCANARY{}", uuid::Uuid::now_v7().simple());
    h.canary(&token);
    let mut temporary = secret_json(&id, &secret);
    temporary["access_key_id"] = json!(format!("ASIA{}", &id[4..]));
    temporary["session_token"] = json!(token);
    let asia = AwsCredential { access_key_id: format!("ASIA{}", &id[4..]), secret_access_key: secret.clone() };
    h.mock.configure(|c| c.aws_credentials.push(asia));
    h.mock.clear_requests();
    let sts = h.post("/api/v1/keys", &alice.token, json!({"provider": "bedrock", "secret": temporary})).await;
    assert_eq!(sts.json["validity"], "valid", "{}", sts.text);
    let probe = &h.mock.requests()[0];
    assert_eq!(probe.header("x-amz-security-token"), Some(token.as_str()));
    assert!(probe.header("authorization").unwrap().contains(";x-amz-security-token, "));

    let everything = format!("{:?}", h.mock.requests());
    assert!(!everything.contains(&secret), "the secret access key is never sent anywhere");
}

async fn converse_and_its_stream_are_signed_metered_and_relayed_unchanged(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    let (id, secret) = aws_key(&h);
    let key_id = h.add_key(&bob, json!({"provider": "bedrock", "secret": secret_json(&id, &secret)})).await;
    h.mock.clear_requests();

    // The caller's own AWS headers (a date, a token, a hash) never reach AWS.
    let own = [
        ("x-amz-date", "19990101T000000Z"),
        ("x-amz-security-token", "callers-own-token"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("x-amzn-trace-id", "Root=1-abc"),
        ("user-agent", "caller/1.0"),
    ];
    let reply = h.proxy(&bob.token, "bedrock", &format!("model/{HAIKU}/converse"), converse_body(), &own).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["output"]["message"]["content"][0]["text"], "Hello from keygate-mock!");
    assert_eq!(reply.headers["x-keygate-credential-id"], key_id.as_str());
    let sent = &h.mock.requests()[0];
    assert_eq!(sent.path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", "`:` goes out as %3A");
    assert_ne!(sent.header("x-amz-date"), Some("19990101T000000Z"));
    assert_eq!(sent.header("x-amz-security-token"), None);
    assert_ne!(sent.header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    assert_eq!(sent.header("x-amzn-trace-id"), Some("Root=1-abc"), "other headers ride along unsigned");
    let authorization = sent.header("authorization").unwrap();
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, "),
        "{authorization}"
    );
    assert!(!format!("{sent:?}").contains(&bob.token));

    // Already encoded by the caller (as AWS's SDKs do): the same path goes out, streamed.
    let (status, ct, bytes) =
        raw(&h, &bob.token, "model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream", &converse_body()).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/vnd.amazon.eventstream"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let events = messages(&bytes);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(&kinds[kinds.len() - 3..], ["contentBlockStop", "messageStop", "metadata"]);
    let text: String = events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello from keygate-mock!");
    assert_eq!(h.mock.requests()[1].path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream");
    // The same stream through the checking harness: no secret in it, in any encoding.
    let checked = h.proxy(&bob.token, "bedrock", &format!("model/{HAIKU}/converse-stream"), converse_body(), &[]).await;
    assert_eq!(checked.status, 200);

    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        assert_eq!((event.provider.as_str(), event.model.as_deref()), ("bedrock", Some(HAIKU)));
        assert_eq!((event.input_tokens, event.output_tokens, event.estimated), (11, 7, false), "{event:?}");
        // Claude 3 Haiku: $0.25 / $1.25 per million tokens.
        assert_eq!(event.cost_nano_usd, 11 * 250 + 7 * 1250);
    }
    let usage = h.get("/api/v1/usage?group_by=model", &bob.token).await;
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == HAIKU).cloned().unwrap();
    assert_eq!((row["requests"].as_i64(), row["input_tokens"].as_i64()), (Some(3), Some(33)), "{row}");
}

async fn invoke_calls_are_metered_from_headers_and_chunks(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    let (id, secret) = aws_key(&h);
    h.add_key(&carol, json!({"provider": "bedrock", "secret": secret_json(&id, &secret)})).await;
    h.mock.configure(|c| {
        c.input_tokens = 21;
        c.output_tokens = 5;
    });
    let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let invoke = h.proxy(&carol.token, "bedrock", &format!("model/{HAIKU}/invoke"), body.clone(), &[]).await;
    assert_eq!(invoke.status, 200, "{}", invoke.text);
    assert_eq!(invoke.json["content"][0]["text"], "Hello from keygate-mock!");
    let (status, _, bytes) = raw(&h, &carol.token, &format!("model/{HAIKU}/invoke-with-response-stream"), &body).await;
    assert_eq!(status, 200);
    let chunks = messages(&bytes);
    assert!(chunks.iter().all(|(kind, _)| kind == "chunk"));
    assert_eq!(chunks.last().unwrap().1["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 5);

    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    let counts: Vec<(i64, i64, bool)> = events.iter().map(|e| (e.input_tokens, e.output_tokens, e.estimated)).collect();
    assert_eq!(counts, [(21, 5, false), (21, 5, false)]);
}

async fn a_secret_aws_no_longer_accepts_is_refused_and_the_key_marked_invalid(db: TestDb) {
    let h = Harness::new(db).await;
    let dave = h.user("dave@example.com").await;
    let (id, secret) = aws_key(&h);
    let key = h.add_key(&dave, json!({"provider": "bedrock", "secret": secret_json(&id, &secret)})).await;
    // Rotated at AWS: the mock now verifies with another secret.
    h.mock.configure(|c| c.aws_credentials[0].secret_access_key = format!("rotated{}", &secret[7..]));

    let reply = h.proxy(&dave.token, "bedrock", &format!("model/{HAIKU}/converse"), converse_body(), &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert!(
        reply.text.contains("The request signature we calculated does not match"),
        "AWS's answer is relayed: {}",
        reply.text
    );
    assert!(reply.headers["x-amzn-errortype"].to_str().unwrap().starts_with("InvalidSignatureException"));
    let stored = h.get(&format!("/api/v1/keys/{key}"), &dave.token).await;
    assert_eq!(stored.json["validity"], "invalid", "keygate's own probe confirmed it: {}", stored.text);
    h.flush().await;
    let events = h.store().usage_events(&Default::default()).await.unwrap();
    assert_eq!((events.len(), events[0].status, events[0].input_tokens), (1, 403, 0));
}

async fn a_shared_bedrock_key_serves_only_inference(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let erin = h.user("erin@example.com").await;
    let (id, secret) = aws_key(&h);
    let operator = json!({"provider": "bedrock", "scope": "operator", "operator_shared": true, "secret": secret_json(&id, &secret)});
    h.add_key(&root, operator).await;

    let reply = h.proxy(&erin.token, "bedrock", &format!("model/{HAIKU}/converse"), converse_body(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-keygate-key-source"], "operator_demo");
    let other = h.proxy(&erin.token, "bedrock", "model-customization-jobs", json!({}), &[]).await;
    assert_eq!((other.status, other.code()), (403, "endpoint_not_allowed"), "{}", other.text);
}
