//! The key lifecycle and validation outcomes, over HTTP, against keygate-mock.

use crate::support::*;
use keygate_mock::Fault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(
    the_full_key_lifecycle,
    validation_outcomes_against_the_provider,
    pasted_keys_are_trimmed_and_checked_before_any_call,
    a_sixth_key_is_refused_and_a_same_provider_key_replaces,
    invalid_keys_can_be_refused_by_policy,
    multi_field_credentials_validate_too,
    the_catalog_shows_what_the_caller_has_configured,
    a_verdict_on_a_replaced_secret_never_lands_on_its_successor,
    a_replaced_secret_written_back_from_an_older_copy_fails_closed,
);

async fn the_full_key_lifecycle(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let key = h.valid_key("sk-proj-");
    let reply = h
        .post(
            "/api/v1/keys",
            &alice.token,
            json!({"provider": "openai", "secret": key, "name": "work", "model": "gpt-4o-mini"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let k = &reply.json;
    let id = k["id"].as_str().unwrap().to_owned();
    assert_eq!(k["hint"], format!("…{}", &key[key.len() - 4..]));
    assert_eq!(
        (k["validity"].as_str(), k["status"].as_str(), k["scope"].as_str()),
        (Some("valid"), Some("active"), Some("user"))
    );
    assert_eq!((k["name"].as_str(), k["model"].as_str()), (Some("work"), Some("gpt-4o-mini")));
    assert_eq!(k["usage"], json!({"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}));
    // The probe carried the user's key, as OpenAI takes it.
    let probe = h.mock.requests().pop().unwrap();
    assert_eq!(
        (probe.path.as_str(), probe.credential.as_deref(), probe.credential_via.as_deref()),
        ("/v1/models", Some(key.as_str()), Some("authorization"))
    );

    let list = h.get("/api/v1/keys", &alice.token).await;
    assert_eq!(list.json["keys"].as_array().unwrap().len(), 1);
    assert_eq!(list.json["keys"][0]["id"], id.as_str());
    let one = h.get(&format!("/api/v1/keys/{id}"), &alice.token).await;
    assert_eq!(one.json["hint"], k["hint"]);

    let patched = h
        .patch(
            &format!("/api/v1/keys/{id}"),
            &alice.token,
            json!({"name": "renamed", "model": null, "status": "disabled"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(
        (patched.json["name"].as_str(), patched.json["model"].as_str(), patched.json["status"].as_str()),
        (Some("renamed"), None, Some("disabled"))
    );

    let fresh = h.valid_key("sk-proj-");
    let replaced = h.put(&format!("/api/v1/keys/{id}/secret"), &alice.token, json!({"secret": fresh})).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.json["id"], id.as_str(), "the id is kept");
    assert_eq!(replaced.json["hint"], format!("…{}", &fresh[fresh.len() - 4..]));
    assert_eq!(h.mock.requests().pop().unwrap().credential.as_deref(), Some(fresh.as_str()));

    h.mock.configure(|c| c.valid_keys.retain(|k| k != &fresh));
    let tested = h.post(&format!("/api/v1/keys/{id}/test"), &alice.token, json!({})).await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    assert_eq!(tested.json["validity"], "invalid", "the provider no longer accepts it");
    assert_eq!(
        h.mock.requests().pop().unwrap().credential.as_deref(),
        Some(fresh.as_str()),
        "test opened the stored secret"
    );

    assert_eq!(h.delete(&format!("/api/v1/keys/{id}"), &alice.token).await.status, 204);
    assert_eq!(h.get(&format!("/api/v1/keys/{id}"), &alice.token).await.status, 404);
    let actions: Vec<String> =
        h.store().audit_events(&Default::default()).await.unwrap().into_iter().map(|e| e.action.to_string()).collect();
    for action in
        ["credential.create", "credential.update", "credential.replace_secret", "credential.test", "credential.delete"]
    {
        assert!(actions.iter().any(|a| a == action), "{action} missing from {actions:?}");
    }
}

async fn validation_outcomes_against_the_provider(db: TestDb) {
    let h = Harness::new(db).await;
    let bob = h.user("bob@example.com").await;
    let cases = [
        (None, h.valid_key("sk-ant-api03-"), "valid", "accepted"),
        (None, h.invalid_key("sk-ant-api03-"), "invalid", "rejected the key (HTTP 401)"),
        (Some(Fault::Status { status: 500 }), h.valid_key("sk-ant-api03-"), "unverified", "HTTP 500"),
        (Some(Fault::Status { status: 429 }), h.valid_key("sk-ant-api03-"), "unverified", "rate limiting"),
        (
            Some(Fault::Delay { ms: PROBE_TIMEOUT.as_millis() as u64 * 5 }),
            h.valid_key("sk-ant-api03-"),
            "unverified",
            "did not answer in time",
        ),
    ];
    for (fault, key, validity, detail) in cases {
        h.mock.configure(|c| {
            c.fault = fault.clone();
            c.fault_times = fault.as_ref().map(|_| 1);
        });
        // One key per provider: each case replaces the previous one.
        let reply = h.post("/api/v1/keys", &bob.token, json!({"provider": "anthropic", "secret": key})).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json["validity"], validity, "{fault:?}: {}", reply.text);
        let shown = reply.json["validity_detail"].as_str().unwrap();
        assert!(shown.contains(detail), "{fault:?}: {shown}");
        if validity == "invalid" {
            assert!(shown.contains("console.anthropic.com"), "says where to get a fresh key: {shown}");
        }
        let probe = h.mock.requests().pop().unwrap();
        assert_eq!(
            (probe.credential_via.as_deref(), probe.header("anthropic-version")),
            (Some("x-api-key"), Some("2023-06-01"))
        );
    }
}

async fn pasted_keys_are_trimmed_and_checked_before_any_call(db: TestDb) {
    let h = Harness::new(db).await;
    let carol = h.user("carol@example.com").await;
    let key = h.valid_key("sk-proj-");
    let reply =
        h.post("/api/v1/keys", &carol.token, json!({"provider": "openai", "secret": format!("  {key}\r\n")})).await;
    assert_eq!((reply.status, reply.json["validity"].as_str()), (201, Some("valid")), "{}", reply.text);
    assert_eq!(h.mock.requests().pop().unwrap().credential.as_deref(), Some(key.as_str()), "the trimmed key was sent");

    h.mock.clear_requests();
    let before = h.audit_count().await;
    let inner = format!("{} {}", &key[..12], &key[12..]);
    h.canary(&inner);
    for (secret, provider, expected) in [
        (inner.as_str(), "openai", "inside it"),
        ("sk-proj-wrongprovider000000000", "anthropic", "looks like an OpenAI key, not an Anthropic key"),
        ("sk-ant-api03-wrongprovider00000", "openai", "looks like an Anthropic key, not an OpenAI key"),
        ("AIzaSywrongprovider000000000000", "anthropic", "a Google Gemini or Google Maps key"),
        ("xyz-wrongprovider0000000000000", "anthropic", "start with `sk-ant-`"),
        ("sk-proj-x", "openai", "too short"),
        ("", "openai", "empty"),
    ] {
        let reply = h.post("/api/v1/keys", &carol.token, json!({"provider": provider, "secret": secret})).await;
        assert_eq!((reply.status, reply.code()), (422, "invalid_key_format"), "{}", reply.text);
        let detail = reply.json["detail"].as_str().unwrap();
        assert!(expected.split('|').any(|e| detail.contains(e)), "{detail}");
    }
    let unknown = h.post("/api/v1/keys", &carol.token, json!({"provider": "nope", "secret": "x"})).await;
    assert_eq!((unknown.status, unknown.code()), (422, "unknown_provider"));
    assert!(h.mock.requests().is_empty(), "nothing was sent to the provider");
    assert_eq!(h.audit_count().await, before, "nothing was written");
    assert_eq!(h.get("/api/v1/keys", &carol.token).await.json["keys"].as_array().unwrap().len(), 1);
}

async fn a_sixth_key_is_refused_and_a_same_provider_key_replaces(db: TestDb) {
    let h = Harness::new(db).await;
    let dave = h.user("dave@example.com").await;
    let providers = [
        ("openai", "sk-proj-"),
        ("anthropic", "sk-ant-api03-"),
        ("openrouter", "sk-or-v1-"),
        ("voyage", "pa-"),
        ("resend", "re_"),
    ];
    let mut first_openai = String::new();
    for (provider, prefix) in providers {
        let id = h.add_key(&dave, json!({"provider": provider, "secret": h.valid_key(prefix)})).await;
        if provider == "openai" {
            first_openai = id;
        }
    }
    let sixth =
        h.post("/api/v1/keys", &dave.token, json!({"provider": "mapbox", "secret": h.valid_key("pk.eyJ")})).await;
    assert_eq!((sixth.status, sixth.code()), (409, "credential_limit_reached"), "{}", sixth.text);
    assert!(sixth.json["detail"].as_str().unwrap().contains("(5)"));

    // Another OpenAI key replaces the first rather than counting as a sixth.
    let replacement =
        h.post("/api/v1/keys", &dave.token, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(replacement.status, 201, "{}", replacement.text);
    assert_ne!(replacement.json["id"], first_openai.as_str());
    assert_eq!(h.get(&format!("/api/v1/keys/{first_openai}"), &dave.token).await.status, 404);
    let keys = h.get("/api/v1/keys", &dave.token).await.json["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys.iter().filter(|k| k["provider"] == "openai").count(), 1);
    let history = h
        .store()
        .audit_events(&keygate_store::AuditFilter {
            action: Some(keygate_core::AuditAction::CredentialReplace),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].detail.as_deref().unwrap().contains(&first_openai), "the audit log keeps what was replaced");
}

async fn invalid_keys_can_be_refused_by_policy(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let mut policy = h.get("/api/v1/admin/settings", &root.token).await.json;
    policy["reject_invalid_keys"] = json!(true);
    assert_eq!(h.put("/api/v1/admin/settings", &root.token, policy).await.status, 200);
    let erin = h.user("erin@example.com").await;
    let reply =
        h.post("/api/v1/keys", &erin.token, json!({"provider": "openai", "secret": h.invalid_key("sk-proj-")})).await;
    assert_eq!((reply.status, reply.code()), (422, "provider_rejected_key"), "{}", reply.text);
    assert!(reply.json["detail"].as_str().unwrap().contains("rotated or revoked"));
    assert!(h.get("/api/v1/keys", &erin.token).await.json["keys"].as_array().unwrap().is_empty(), "nothing stored");
}

async fn multi_field_credentials_validate_too(db: TestDb) {
    let h = Harness::new(db).await;
    let frank = h.user("frank@example.com").await;
    h.canary(SH_CLIENT.1);
    let good = h.post("/api/v1/keys", &frank.token, json!({"provider": "sentinel_hub", "secret": {"client_id": SH_CLIENT.0, "client_secret": format!(" {}\n", SH_CLIENT.1)}})).await;
    assert_eq!((good.status, good.json["validity"].as_str()), (201, Some("valid")), "{}", good.text);
    assert_eq!(good.json["hint"], format!("…{}", &SH_CLIENT.1[SH_CLIENT.1.len() - 4..]));
    let token_call = h.mock.requests().pop().unwrap();
    assert!(
        token_call.path.ends_with("/protocol/openid-connect/token") && token_call.body.contains("client_credentials")
    );

    let bad = h.post("/api/v1/keys", &frank.token, json!({"provider": "sentinel_hub", "secret": {"client_id": SH_CLIENT.0, "client_secret": "CANARYwrong-secret"}})).await;
    assert_eq!(bad.json["validity"], "invalid", "{}", bad.text);
    let wrong_shape =
        h.post("/api/v1/keys", &frank.token, json!({"provider": "sentinel_hub", "secret": "just-a-string"})).await;
    assert_eq!(wrong_shape.code(), "invalid_key_format");

    let aws = json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "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", "region": "us-east-1"});
    h.canary("wJalrXUtnFEMI/K7MDENG/bPxRfiCYCANARYKEY1");
    let bedrock = h.post("/api/v1/keys", &frank.token, json!({"provider": "bedrock", "secret": aws})).await;
    // Probed with a signed call: the mock knows no such access key id (more in bedrock.rs).
    assert_eq!((bedrock.status, bedrock.json["validity"].as_str()), (201, Some("invalid")), "{}", bedrock.text);
    assert!(bedrock.json["validity_detail"].as_str().unwrap().contains("rejected the key (HTTP 403)"));
    let bad_region = json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "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", "region": "moon"});
    assert_eq!(
        h.post("/api/v1/keys", &frank.token, json!({"provider": "bedrock", "secret": bad_region})).await.code(),
        "invalid_key_format"
    );
}

async fn the_catalog_shows_what_the_caller_has_configured(db: TestDb) {
    let h = Harness::new(db).await;
    let gina = h.user("gina@example.com").await;
    h.add_key(&gina, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    h.add_key(&gina, json!({"provider": "anthropic", "scope": "workspace", "secret": h.valid_key("sk-ant-api03-")}))
        .await;
    let reply = h.get("/api/v1/providers", &gina.token).await;
    let providers = reply.json["providers"].as_array().unwrap();
    let ids: Vec<&str> = providers.iter().map(|p| p["id"].as_str().unwrap()).collect();
    for id in [
        "openai",
        "anthropic",
        "openrouter",
        "gemini",
        "bedrock",
        "voyage",
        "mapbox",
        "maptiler",
        "google_maps",
        "sentinel_hub",
        "resend",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let find = |id: &str| providers.iter().find(|p| p["id"] == id).unwrap();
    assert_eq!(find("anthropic")["configured"], json!(["user", "workspace"]));
    assert_eq!(find("openai")["configured"], json!([]));
    assert_eq!(find("sentinel_hub")["credential_fields"], json!(["client_id", "client_secret"]));
    assert_eq!(find("anthropic")["key_prefixes"], json!(["sk-ant-"]));
    assert_eq!(find("bedrock")["validated_live"], json!(true));
    assert!(reply.text.find("base_url").is_none(), "provider origins are the operator's business");
}

both_backends!(concurrent_creates_keep_the_cap_and_one_key_per_provider);

/// Parallel creates cannot beat the 5-key cap, and parallel creates for one provider
/// leave exactly one active key; every refusal is problem+json with a stable code.
async fn concurrent_creates_keep_the_cap_and_one_key_per_provider(db: TestDb) {
    let h = std::sync::Arc::new(Harness::new(db).await);
    let alice = h.user("racer@example.com").await;
    let providers =
        ["openai", "anthropic", "openrouter", "gemini", "voyage", "mapbox", "maptiler", "google_maps", "resend"];
    let prefixes = ["sk-proj-", "sk-ant-api03-", "sk-or-v1-", "AIzaSy", "pa-", "pk.", "", "AIzaSy", "re_"];
    let mut tasks = Vec::new();
    for (provider, prefix) in providers.iter().zip(prefixes) {
        let (h, token) = (h.clone(), alice.token.clone());
        let secret = h.valid_key(prefix) + "0123456789abcdef0123456789";
        h.canary(&secret);
        let body = json!({"provider": provider, "secret": secret});
        tasks.push(tokio::spawn(async move { h.post("/api/v1/keys", &token, body).await }));
    }
    let mut created = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            201 => created += 1,
            409 => {
                assert_eq!(reply.code(), "credential_limit_reached", "{}", reply.text);
                assert_eq!(reply.headers["content-type"], "application/problem+json");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    let keys = h.get("/api/v1/keys", &alice.token).await;
    let held = keys.json["keys"].as_array().unwrap().len();
    assert_eq!((created, held), (5, 5), "{}", keys.text);

    let bob = h.user("samekey@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h, token) = (h.clone(), bob.token.clone());
        let body = json!({"provider": "openai", "secret": h.valid_key("sk-proj-")});
        tasks.push(tokio::spawn(async move { h.post("/api/v1/keys", &token, body).await }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(
            reply.status == 201 || (reply.status == 409 && reply.code() == "conflict"),
            "{}: {}",
            reply.status,
            reply.text
        );
        assert!(!reply.text.to_ascii_lowercase().contains("constraint"), "no database text: {}", reply.text);
    }
    let keys = h.get("/api/v1/keys", &bob.token).await;
    let active: Vec<_> = keys.json["keys"].as_array().unwrap().iter().filter(|k| k["status"] == "active").collect();
    assert_eq!(active.len(), 1, "{}", keys.text);
    h.flush().await;
    let audit = h.store().audit_events(&Default::default()).await.unwrap();
    for key in keys.json["keys"].as_array().unwrap() {
        let id = key["id"].as_str().unwrap();
        assert!(audit.iter().any(|e| e.target_id.as_deref() == Some(id)), "every stored key has its audit row: {id}");
    }
}

fn call_request(principal: &keygate_service::Principal) -> keygate_service::gateway::CallRequest<'_> {
    keygate_service::gateway::CallRequest {
        principal,
        provider: "openai",
        method: "POST",
        path: "v1/chat/completions",
        policy: keygate_core::resolution::PaymentPolicy::default(),
    }
}

async fn admit(
    services: &keygate_service::Services,
    principal: &keygate_service::Principal,
) -> keygate_service::gateway::Admitted {
    let resolved = services.resolve_call(call_request(principal)).await.unwrap();
    let size = keygate_service::gateway::CallSize {
        body_len: 3,
        max_output_tokens: Some(1),
        choices: 1,
        generates: true,
        images: 0,
    };
    services.admit(resolved, size).await.unwrap()
}

/// A call (or a test) that used a key which was replaced while it ran: the provider's
/// refusal of the old secret must not mark the new one invalid, and a stale update must
/// not put the old secret back.
async fn a_verdict_on_a_replaced_secret_never_lands_on_its_successor(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let id = h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let services = h.services();
    let principal = services.authenticate(&alice.token, None).await.unwrap();
    let call = admit(services, &principal).await;

    let fresh = h.valid_key("sk-proj-");
    let replaced = h.put(&format!("/api/v1/keys/{id}/secret"), &alice.token, json!({"secret": fresh})).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    services.mark_rejected(&call, 401).await;
    let key = h.get(&format!("/api/v1/keys/{id}"), &alice.token).await;
    assert_eq!(key.json["validity"], "valid", "the refusal was of the old secret: {}", key.text);
    assert_eq!(h.chat(&alice.token).await.status, 200);
    assert_eq!(h.mock.requests().pop().unwrap().credential.as_deref(), Some(fresh.as_str()));

    // The same call's refusal while its key is still the stored one does mark it, once
    // keygate's own probe confirms the provider no longer takes it.
    let call = admit(services, &principal).await;
    h.mock.configure(|c| c.valid_keys.retain(|k| k != &fresh));
    services.mark_rejected(&call, 401).await;
    let key = h.get(&format!("/api/v1/keys/{id}"), &alice.token).await;
    assert_eq!(key.json["validity"], "invalid", "{}", key.text);

    // A stale whole-row write (read before the replacement) is refused and changes nothing.
    h.flush().await; // the calls' usage totals land in the background: not during the comparison
    let stored = h.store().credential(call.credential.id).await.unwrap();
    let mut stale = stored.clone();
    stale.name = "stale".into();
    let err = h.store().update_credential(&stale, b"an older sealing", None).await.unwrap_err();
    assert!(matches!(err, keygate_store::StoreError::Changed { .. }), "{err:?}");
    assert_eq!(h.store().credential(stored.id).await.unwrap(), stored);
}

/// Replacing a key's secret moves it to a new secret version, bound into the sealed
/// record. Writing the old record back into the row (alone, or with its old version) must
/// not bring the replaced key back into use: the key fails closed as undecryptable, the
/// provider never sees the old key, and `doctor` names the credential.
async fn a_replaced_secret_written_back_from_an_older_copy_fails_closed(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    // The old key stays one the provider accepts: only keygate stands in the way.
    let old_key = h.valid_key("sk-proj-");
    let id = h.add_key(&alice, json!({"provider": "openai", "secret": old_key})).await;
    let cid: keygate_core::CredentialId = id.parse().unwrap();
    let before = h.store().credential(cid).await.unwrap();
    assert_eq!(before.secret_version, 1);
    let new_key = h.valid_key("sk-proj-");
    let replaced = h.put(&format!("/api/v1/keys/{id}/secret"), &alice.token, json!({"secret": new_key})).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    let current = h.store().credential(cid).await.unwrap();
    assert_eq!(current.secret_version, 2, "a replacement moves the secret version on");
    assert_eq!(h.chat(&alice.token).await.status, 200);

    let keks = h.vault().keks().clone();
    for (what, version) in [("the old record", 2), ("the old record and its old version", 1)] {
        let rolled_back =
            keygate_core::Credential { sealed: before.sealed.clone(), secret_version: version, ..current.clone() };
        h.store().update_credential(&rolled_back, &current.sealed, None).await.unwrap();
        let row = h.store().credential(cid).await.unwrap();
        assert_eq!(row.sealed, before.sealed, "{what} is in the row");
        let err = h.vault().open_credential(&row).await.unwrap_err();
        assert_eq!(err.code(), "credential_undecryptable", "{what}: {err}");
        assert!(err.to_string().contains("secret version 2"), "{err}");

        // A process with cold caches (the rollback bumped no change epoch).
        let replica = h.replica().await;
        h.mock.clear_requests();
        let call = h.chat_via(&replica, &alice.token).await;
        assert_eq!((call.status, call.code()), (502, "credential_undecryptable"), "{what}: {}", call.text);
        assert!(
            h.mock.requests().iter().all(|r| r.credential.as_deref() != Some(old_key.as_str())),
            "{what}: the replaced key is never sent"
        );
        let test = h.post(&format!("/api/v1/keys/{id}/test"), &alice.token, json!({})).await;
        assert_eq!(test.json["validity"], "undecryptable", "{what}: {}", test.text);
        assert!(h.mock.requests().iter().all(|r| r.credential.as_deref() != Some(old_key.as_str())));

        let checks = keygate_service::doctor::run(h.store().clone(), keks.clone()).await;
        let failed: Vec<_> = checks.iter().filter(|c| c.status == keygate_service::doctor::Status::Fail).collect();
        assert_eq!(failed.len(), 1, "{what}: {checks:?}");
        assert!(failed[0].detail.contains(&id), "doctor names the credential: {}", failed[0].detail);
        assert!(!failed[0].detail.contains(&old_key) && !failed[0].detail.contains(&new_key));

        // Put the current record back (the test above marked the row undecryptable).
        let row = h.store().credential(cid).await.unwrap();
        let restored = keygate_core::Credential { validity: keygate_core::Validity::Valid, ..current.clone() };
        h.store().update_credential(&restored, &row.sealed, None).await.unwrap();
        let replica = h.replica().await;
        assert_eq!(h.chat_via(&replica, &alice.token).await.status, 200, "the current record still opens");
    }

    // The next replacement starts from the newest version, whatever the row said.
    let newer = h.valid_key("sk-proj-");
    let replaced = h.put(&format!("/api/v1/keys/{id}/secret"), &alice.token, json!({"secret": newer})).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(h.store().credential(cid).await.unwrap().secret_version, 3);
}
