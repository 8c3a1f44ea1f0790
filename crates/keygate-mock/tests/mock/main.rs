//! The mock behaves like the providers it stands in for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keygate_mock::{Fault, MockConfig, MockProvider, OAuthClient};
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-proj-mock-valid-0001";
const ANTHROPIC_KEY: &str = "sk-ant-api03-mock-valid-0002";

async fn mock() -> MockProvider {
    let mut config = MockConfig::with_keys([OPENAI_KEY, ANTHROPIC_KEY, "maps-key-0003"]);
    config.oauth_clients.push(OAuthClient { client_id: "sh-client".into(), client_secret: "sh-secret".into() });
    MockProvider::start(config).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn openai_chat_answers_valid_keys_and_rejects_others_in_openais_words() {
    let m = mock().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .bearer_auth(OPENAI_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from keygate-mock!");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 7);

    let r = client()
        .post(format!("{}/v1/chat/completions", m.url()))
        .bearer_auth("sk-wrong-key-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(v["error"]["message"].as_str().unwrap().contains("sk-wrong-key-123"), "echoes the key like OpenAI");

    let seen = m.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].credential.as_deref(), Some(OPENAI_KEY));
    assert_eq!(seen[0].credential_via.as_deref(), Some("authorization"));
}

#[tokio::test]
async fn openai_streams_with_a_usage_chunk_only_when_asked() {
    let m = mock().await;
    for include_usage in [false, true] {
        let mut body = json!({"model": "gpt-4o", "stream": true, "messages": []});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let r = client()
            .post(format!("{}/v1/chat/completions", m.url()))
            .bearer_auth(OPENAI_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            text.contains(r#""usage":{"completion_tokens":7"#) || text.contains(r#""prompt_tokens":11"#),
            include_usage,
            "{text}"
        );
    }
}

#[tokio::test]
async fn anthropic_messages_stream_usage_in_start_and_delta() {
    let m = mock().await;
    let body = json!({"model": "claude-sonnet-4-20250514", "max_tokens": 10, "stream": true, "messages": []});
    let r = client()
        .post(format!("{}/v1/messages", m.url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.contains(r#""input_tokens":11"#) && text.contains(r#""usage":{"output_tokens":7}"#));
    assert!(text.trim_end().ends_with(r#"data: {"type":"message_stop"}"#));

    let r = client()
        .get(format!("{}/v1/models", m.url()))
        .header("x-api-key", "bad")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(m.requests()[0].credential_via.as_deref(), Some("x-api-key"));
}

#[tokio::test]
async fn query_keys_and_oauth_client_credentials() {
    let m = mock().await;
    let r = client()
        .get(format!("{}/geocoding/v5/places.json?q=x&access_token=maps-key-0003", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(m.requests()[0].credential_via.as_deref(), Some("query:access_token"));
    let r = client().get(format!("{}/maps/api/geocode/json?key=nope", m.url())).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let token_url = format!("{}/auth/realms/main/protocol/openid-connect/token", m.url());
    let bad = client()
        .post(&token_url)
        .form(&[("grant_type", "client_credentials"), ("client_id", "sh-client"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let good: Value = client()
        .post(&token_url)
        .form(&[("grant_type", "client_credentials"), ("client_id", "sh-client"), ("client_secret", "sh-secret")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = good["access_token"].as_str().unwrap();
    assert_eq!(good["expires_in"], 3600);
    let r = client().post(format!("{}/api/v1/process", m.url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "an issued token authenticates");
    let basic = client()
        .post(&token_url)
        .basic_auth("sh-client", Some("sh-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
}

#[tokio::test]
async fn faults_status_reset_and_malformed_sse() {
    let m = mock().await;
    let url = format!("{}/v1/chat/completions", m.url());
    let body = json!({"model": "gpt-4o", "stream": true});

    m.configure(|c| {
        c.fault = Some(Fault::Status { status: 429 });
        c.fault_times = Some(1);
    });
    let r = client().post(&url).bearer_auth(OPENAI_KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let r = client().post(&url).bearer_auth(OPENAI_KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "fault_times = 1 applies once");
    r.text().await.unwrap();

    m.configure(|c| c.fault = Some(Fault::ResetMidStream { after_chunks: 2 }));
    let r = client().post(&url).bearer_auth(OPENAI_KEY).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.is_err(), "the body is cut off");

    m.configure(|c| c.fault = Some(Fault::MalformedSse));
    let text = client().post(&url).bearer_auth(OPENAI_KEY).json(&body).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("not json"));

    m.configure(|c| c.fault = Some(Fault::Status { status: 500 }));
    assert_eq!(client().post(&url).bearer_auth(OPENAI_KEY).json(&body).send().await.unwrap().status(), 500);
}

#[tokio::test]
async fn admin_endpoints_reconfigure_and_list_requests() {
    let m = mock().await;
    let config = json!({"valid_keys": ["new-key-xyz"], "latency_ms": 1});
    let r = client().put(format!("{}/__mock/config", m.url())).json(&config).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        client().get(format!("{}/v1/models", m.url())).bearer_auth(OPENAI_KEY).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        client().get(format!("{}/v1/models", m.url())).bearer_auth("new-key-xyz").send().await.unwrap().status(),
        200
    );
    let seen: Value = client().get(format!("{}/__mock/requests", m.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 2);
    // The served count goes on when recording is off (benchmarks read it).
    m.configure(|c| c.record = false);
    let r = client().get(format!("{}/v1/models", m.url())).bearer_auth("new-key-xyz").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let stats: Value = client().get(format!("{}/__mock/stats", m.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["served"], 3);
    assert_eq!(m.served(), 3);
    let bad = client().put(format!("{}/__mock/config", m.url())).json(&json!({"nope": 1})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn the_openid_connect_issuer_checks_client_redirect_pkce_and_single_use() {
    let mut config = MockConfig::default();
    config.oidc_clients.push(OAuthClient { client_id: "kg".into(), client_secret: "kg-secret".into() });
    let m = MockProvider::start(config).await.unwrap();
    let issuer = m.oidc_issuer();
    let discovery: Value =
        client().get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // RFC 7636's example pair.
    let (verifier, challenge) =
        ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    let authorize = |client_id: &str, challenge: &str| {
        format!(
            "{issuer}/authorize?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2Fapp.test%2Fcb\
             &scope=openid%20email&state=st&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256"
        )
    };
    assert_eq!(no_redirects.get(authorize("nobody", challenge)).send().await.unwrap().status(), 400);
    assert_eq!(no_redirects.get(authorize("kg", "short")).send().await.unwrap().status(), 400, "PKCE required");
    let code = || async {
        let answer = no_redirects.get(authorize("kg", challenge)).send().await.unwrap();
        assert_eq!(answer.status(), 303);
        let location = answer.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with("http://app.test/cb?code=") && location.ends_with("&state=st"), "{location}");
        location["http://app.test/cb?code=".len()..location.find("&state").unwrap()].to_owned()
    };
    let exchange = |code: String, secret: &'static str, redirect: &'static str, verifier: &'static str| {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", redirect.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ];
        client().post(format!("{issuer}/token")).basic_auth("kg", Some(secret)).form(&form).send()
    };
    let refused = |status: u16, error: &'static str| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status(), status);
            assert_eq!(r.json::<Value>().await.unwrap()["error"], error);
        }
    };
    refused(401, "invalid_client")(exchange(code().await, "wrong", "http://app.test/cb", verifier).await.unwrap())
        .await;
    refused(400, "invalid_grant")(
        exchange(code().await, "kg-secret", "http://app.test/other", verifier).await.unwrap(),
    )
    .await;
    refused(400, "invalid_grant")(exchange(code().await, "kg-secret", "http://app.test/cb", "not-it").await.unwrap())
        .await;

    let good = code().await;
    let answer: Value =
        exchange(good.clone(), "kg-secret", "http://app.test/cb", verifier).await.unwrap().json().await.unwrap();
    let id_token = answer["id_token"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet =
        client().get(format!("{issuer}/jwks")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[&issuer]);
    validation.set_audience(&["kg"]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation).unwrap().claims;
    assert_eq!((claims["nonce"].as_str(), claims["email_verified"].as_bool()), (Some("n-1"), Some(true)));
    // A code works once.
    refused(400, "invalid_grant")(exchange(good, "kg-secret", "http://app.test/cb", verifier).await.unwrap()).await;
    assert_eq!(m.oidc_fetches(), (1, 1));
}
