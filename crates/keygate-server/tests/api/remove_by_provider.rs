//! `DELETE /api/v1/keys?provider=…[&scope=workspace]`: removing a provider's key without
//! knowing its id, audited like a delete by id.

use crate::support::*;
use keygate_core::{AuditAction, Role};
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, AuditFilter};
use serde_json::json;

both_backends!(
    a_personal_key_is_removed_by_provider_and_audited,
    a_workspace_key_is_removed_by_provider_by_its_admins_only,
    a_removal_naming_no_known_provider_or_scope_is_a_400,
);

/// The caller's keys for `provider`, as the API lists them.
async fn keys_for(h: &Harness, caller: &Caller, provider: &str) -> Vec<serde_json::Value> {
    let listed = h.get("/api/v1/keys", &caller.token).await;
    listed.json["keys"].as_array().unwrap().iter().filter(|k| k["provider"] == provider).cloned().collect()
}

async fn deletions(h: &Harness) -> Vec<keygate_core::AuditEvent> {
    let filter = AuditFilter { action: Some(AuditAction::CredentialDelete), ..Default::default() };
    h.store().audit_events(&filter).await.unwrap()
}

async fn a_personal_key_is_removed_by_provider_and_audited(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    let bob = h.user("bob@example.com").await;
    // A disabled key beside the active one: removing "my OpenAI key" leaves none.
    let old = h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let patched = h.patch(&format!("/api/v1/keys/{old}"), &alice.token, json!({"status": "disabled"})).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let new = h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let anthropic = h.add_key(&alice, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    let bobs = h.add_key(&bob, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(keys_for(&h, &alice, "openai").await.len(), 2);

    let removed = h.delete("/api/v1/keys?provider=openai", &alice.token).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert!(keys_for(&h, &alice, "openai").await.is_empty());
    assert_eq!(keys_for(&h, &alice, "anthropic").await[0]["id"], anthropic.as_str(), "other providers stay");
    assert_eq!(keys_for(&h, &bob, "openai").await[0]["id"], bobs.as_str(), "other people's keys stay");
    let audited = deletions(&h).await;
    let mut ids: Vec<&str> = audited.iter().map(|e| e.target_id.as_deref().unwrap()).collect();
    ids.sort();
    let mut expected = vec![old.as_str(), new.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "one audit row per key removed");
    assert!(audited.iter().all(|e| e.actor == "alice@example.com" && e.detail.as_deref().unwrap().contains("openai")));

    let again = h.delete("/api/v1/keys?provider=openai&scope=user", &alice.token).await;
    assert_eq!((again.status, again.code()), (404, "not_found"), "{}", again.text);
    assert_eq!(deletions(&h).await.len(), 2, "nothing more written");
}

async fn a_workspace_key_is_removed_by_provider_by_its_admins_only(db: TestDb) {
    let h = Harness::new(db).await;
    let owner = h.user("owner@example.com").await;
    let member = h.join(&h.user("member@example.com").await, owner.workspace, Role::Member).await;
    let admin = h.join(&h.user("admin@example.com").await, owner.workspace, Role::Admin).await;
    let shared =
        h.add_key(&owner, json!({"provider": "openai", "scope": "workspace", "secret": h.valid_key("sk-proj-")})).await;
    let members_own = h.add_key(&member, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;

    let refused = h.delete("/api/v1/keys?provider=openai&scope=workspace", &member.token).await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"), "{}", refused.text);
    // The member's own key is theirs to remove; the workspace's stays.
    assert_eq!(h.delete("/api/v1/keys?provider=openai", &member.token).await.status, 204);
    assert_eq!(h.get(&format!("/api/v1/keys/{members_own}"), &member.token).await.status, 404);
    assert_eq!(h.get(&format!("/api/v1/keys/{shared}"), &owner.token).await.status, 200);
    assert_eq!(h.delete("/api/v1/keys?provider=openai", &admin.token).await.status, 404, "the admin has no own key");

    let removed = h.delete("/api/v1/keys?provider=openai&scope=workspace", &admin.token).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(h.get(&format!("/api/v1/keys/{shared}"), &owner.token).await.status, 404);
    let audited = deletions(&h).await;
    let row = audited.iter().find(|e| e.target_id.as_deref() == Some(shared.as_str())).expect("audited");
    assert_eq!((row.actor.as_str(), row.workspace_id), ("admin@example.com", Some(owner.workspace)));
    let again = h.delete("/api/v1/keys?provider=openai&scope=workspace", &owner.token).await;
    assert_eq!((again.status, again.code()), (404, "not_found"));
}

async fn a_removal_naming_no_known_provider_or_scope_is_a_400(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("alice@example.com").await;
    h.add_key(&alice, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let cases = [
        ("/api/v1/keys", "invalid_request", "provider=openai"),
        ("/api/v1/keys?provider=", "invalid_request", "provider=openai"),
        ("/api/v1/keys?provider=nope", "unknown_provider", "nope"),
        ("/api/v1/keys?provider=openai&scope=operator", "invalid_request", "workspace"),
        ("/api/v1/keys?provider=openai&scope=everything", "invalid_request", "workspace"),
    ];
    for (path, code, says) in cases {
        let reply = h.delete(path, &alice.token).await;
        assert_eq!((reply.status, reply.code()), (400, code), "{path}: {}", reply.text);
        assert!(reply.json["detail"].as_str().unwrap().contains(says), "{path}: {}", reply.text);
    }
    assert_eq!(keys_for(&h, &alice, "openai").await.len(), 1, "nothing removed");
    assert!(deletions(&h).await.is_empty());
}
