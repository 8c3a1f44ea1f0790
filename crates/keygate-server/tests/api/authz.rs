//! Who may see and do what. Another user's or workspace's keys are 404, never 403, so
//! ids do not leak; roles decide what members may change.

use crate::support::*;
use keygate_core::Role;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;

both_backends!(
    nobody_reaches_another_users_or_workspaces_keys,
    members_admins_and_super_admins_have_their_own_rights,
    a_paused_workspaces_keys_are_refused_and_a_deleted_ones_are_unopenable,
);

async fn nobody_reaches_another_users_or_workspaces_keys(db: TestDb) {
    let h = Harness::new(db).await;
    let a = h.user("a@example.com").await;
    let b = h.user("b@example.com").await;
    let b_key = h.add_key(&b, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let b_shared = h
        .add_key(&b, json!({"provider": "anthropic", "scope": "workspace", "secret": h.valid_key("sk-ant-api03-")}))
        .await;
    h.mock.clear_requests();

    assert!(h.get("/api/v1/keys", &a.token).await.json["keys"].as_array().unwrap().is_empty());
    for id in [&b_key, &b_shared] {
        let path = format!("/api/v1/keys/{id}");
        let attempts = [
            h.get(&path, &a.token).await,
            h.post(&format!("{path}/test"), &a.token, json!({})).await,
            h.put(&format!("{path}/secret"), &a.token, json!({"secret": h.valid_key("sk-proj-")})).await,
            h.patch(&path, &a.token, json!({"name": "mine now"})).await,
            h.delete(&path, &a.token).await,
        ];
        for reply in attempts {
            assert_eq!((reply.status, reply.code()), (404, "not_found"), "{}", reply.text);
        }
    }
    // A key for B's workspace cannot be created by A either.
    let into_b = h
        .post(
            "/api/v1/keys",
            &a.token,
            json!({"provider": "openai", "secret": h.valid_key("sk-proj-"), "workspace_id": b.workspace.to_string()}),
        )
        .await;
    assert_eq!(into_b.status, 404, "{}", into_b.text);
    assert!(h.mock.requests().is_empty(), "no attempt reached the provider");
    assert_eq!(
        h.get(&format!("/api/v1/keys/{b_key}"), &b.token).await.json["name"],
        "OpenAI key",
        "B's key is untouched"
    );
}

async fn members_admins_and_super_admins_have_their_own_rights(db: TestDb) {
    let h = Harness::new(db).await;
    let owner = h.user("owner@example.com").await;
    let member = h.join(&h.user("member@example.com").await, owner.workspace, Role::Member).await;
    let admin = h.join(&h.user("admin@example.com").await, owner.workspace, Role::Admin).await;
    let root = h.super_admin("root@example.com").await;

    // Workspace keys: admins create and manage, members see and test but do not change.
    let denied = h
        .post(
            "/api/v1/keys",
            &member.token,
            json!({"provider": "openai", "scope": "workspace", "secret": h.valid_key("sk-proj-")}),
        )
        .await;
    assert_eq!((denied.status, denied.code()), (403, "forbidden"), "{}", denied.text);
    let shared =
        h.add_key(&admin, json!({"provider": "openai", "scope": "workspace", "secret": h.valid_key("sk-proj-")})).await;
    let listed = h.get("/api/v1/keys", &member.token).await;
    assert_eq!(listed.json["keys"][0]["id"], shared.as_str(), "members see their workspace's keys");
    assert_eq!(
        h.post(&format!("/api/v1/keys/{shared}/test"), &member.token, json!({})).await.status,
        403,
        "testing a key is managing it: members cannot set off probes of shared keys"
    );
    assert_eq!(h.patch(&format!("/api/v1/keys/{shared}"), &member.token, json!({"name": "x"})).await.status, 403);
    assert_eq!(h.delete(&format!("/api/v1/keys/{shared}"), &member.token).await.status, 403);
    assert_eq!(h.patch(&format!("/api/v1/keys/{shared}"), &owner.token, json!({"name": "team"})).await.status, 200);

    // Personal keys stay personal, even from the workspace's owner and from super-admins.
    let personal = h.add_key(&member, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")})).await;
    assert_eq!(h.get(&format!("/api/v1/keys/{personal}"), &owner.token).await.status, 404);
    assert_eq!(h.get(&format!("/api/v1/keys/{personal}"), &root.token).await.status, 404);

    // Operator keys and admin endpoints: super-admins only.
    let op = h
        .post(
            "/api/v1/keys",
            &admin.token,
            json!({"provider": "openai", "scope": "operator", "secret": h.valid_key("sk-proj-")}),
        )
        .await;
    assert_eq!(op.status, 403, "{}", op.text);
    let op = h.post("/api/v1/keys", &root.token, json!({"provider": "openai", "scope": "operator", "operator_shared": true, "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!((op.status, op.json["operator_shared"].as_bool()), (201, Some(true)), "{}", op.text);
    let op_id = op.json["id"].as_str().unwrap();
    assert_eq!(h.get(&format!("/api/v1/keys/{op_id}"), &admin.token).await.status, 404);
    assert_eq!(h.get("/api/v1/admin/keys", &root.token).await.json["keys"][0]["id"], op_id);
    for path in [
        "/api/v1/admin/keys",
        "/api/v1/admin/users",
        "/api/v1/admin/workspaces",
        "/api/v1/admin/settings",
        "/api/v1/admin/audit",
    ] {
        assert_eq!(h.get(path, &owner.token).await.status, 403, "{path}");
        assert_eq!(h.get(path, &root.token).await.status, 200, "{path}");
    }
    // A super-admin's token without the admin scope is not an admin credential.
    let narrow = h.post("/api/v1/tokens", &root.token, json!({"name": "ci", "scopes": ["keys"]})).await;
    let narrow = narrow.json["token"].as_str().unwrap().to_owned();
    h.canary(&narrow);
    assert_eq!(h.get("/api/v1/admin/users", &narrow).await.status, 403);

    // Users: tiers and super-admin; the last super-admin stays.
    let users = h.get("/api/v1/admin/users", &root.token).await;
    assert_eq!(users.json["users"].as_array().unwrap().len(), 4);
    let path = format!("/api/v1/admin/users/{}", member.user.id);
    let premium = h.patch(&path, &root.token, json!({"tier": "premium"})).await;
    assert_eq!(premium.json["tier"], "premium");
    assert_eq!(h.patch(&path, &root.token, json!({"tier": "gold"})).await.code(), "invalid_request");
    let last =
        h.patch(&format!("/api/v1/admin/users/{}", root.user.id), &root.token, json!({"super_admin": false})).await;
    assert_eq!((last.status, last.code()), (409, "conflict"));
}

async fn a_paused_workspaces_keys_are_refused_and_a_deleted_ones_are_unopenable(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    let user = h.user("user@example.com").await;
    let id = h.add_key(&user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let ws = format!("/api/v1/admin/workspaces/{}", user.workspace);

    let paused = h.patch(&ws, &root.token, json!({"status": "paused"})).await;
    assert_eq!(paused.json["status"], "paused", "{}", paused.text);
    let refused = h.post(&format!("/api/v1/keys/{id}/test"), &user.token, json!({})).await;
    assert_eq!((refused.status, refused.code()), (403, "workspace_inactive"), "{}", refused.text);
    let refused = h
        .post("/api/v1/keys", &user.token, json!({"provider": "anthropic", "secret": h.valid_key("sk-ant-api03-")}))
        .await;
    assert_eq!(refused.code(), "workspace_inactive");
    assert_eq!(h.get("/api/v1/keys", &user.token).await.json["keys"].as_array().unwrap().len(), 1, "still listed");

    assert_eq!(h.patch(&ws, &root.token, json!({"status": "active"})).await.status, 200);
    assert_eq!(h.post(&format!("/api/v1/keys/{id}/test"), &user.token, json!({})).await.json["validity"], "valid");

    assert_eq!(h.patch(&ws, &root.token, json!({"status": "deleted"})).await.status, 200);
    let credential = h.store().credential(id.parse().unwrap()).await.unwrap();
    assert!(!credential.sealed.is_empty(), "the ciphertext is still stored");
    assert!(h.vault().open_credential(&credential).await.is_err(), "and can never be opened");
    assert_eq!(h.get(&format!("/api/v1/keys/{id}"), &user.token).await.json["validity"], "undecryptable");
    let restore = h.patch(&ws, &root.token, json!({"status": "active"})).await;
    assert_eq!((restore.status, restore.code()), (409, "conflict"));
    let events = h.get("/api/v1/admin/audit?action=workspace.status", &root.token).await;
    assert_eq!(events.json["events"].as_array().unwrap().len(), 3);
}
