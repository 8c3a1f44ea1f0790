//! The super-admin pages over HTTP (`/admin/settings`, `/admin/users`,
//! `/admin/workspaces`, `/admin/audit`), as a browser without JavaScript uses them:
//! signed in through `/login`, every form posted with the page's CSRF field.

use crate::pages::Browser;
use crate::support::*;
use keygate_core::policy::Policy;
use keygate_core::*;
use keygate_service::audit::Actor;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use keygate_vault::SecretText;
use serde_json::json;

both_backends!(
    only_super_admins_reach_the_admin_pages,
    settings_are_saved_from_the_form_and_a_bad_value_changes_nothing,
    tiers_are_added_and_removed_on_the_settings_page,
    users_are_searched_paged_and_given_tiers_and_super_admin,
    pausing_a_workspace_on_the_page_stops_its_keys_and_restoring_brings_them_back,
    workspaces_are_created_joined_and_deleted_only_by_their_exact_name,
    the_audit_page_filters_and_pages,
    the_prompt_guard_is_set_on_the_settings_page,
);

const PASSWORD: &str = "CANARY-admin-pages-password-01";

/// A person with a password, signed in; a super-admin or not.
async fn signed_in<'h>(h: &'h Harness, email: &str, super_admin: bool) -> (Browser<'h>, User) {
    h.canary(PASSWORD);
    let mut user =
        keygate_service::accounts::create_admin(&**h.store(), email, &SecretText::new(PASSWORD.into()), &Actor::cli())
            .await
            .unwrap();
    if !super_admin {
        user.super_admin = false;
        h.store().update_user(&user).await.unwrap();
    }
    let mut b = Browser::new(h);
    let signed = b.sign_in(email, PASSWORD).await;
    assert_eq!(signed.status, 303, "{}", signed.html);
    (b, user)
}

/// The settings form's fields for `p`, as the page fills them in.
fn settings_form(p: &Policy) -> Vec<(String, String)> {
    let mut f = Vec::new();
    for (name, t) in &p.tiers {
        f.push(("tier".to_owned(), name.clone()));
        f.push((format!("per_minute.{name}"), t.requests_per_minute.to_string()));
        f.push((format!("per_day.{name}"), t.requests_per_day.to_string()));
        if t.byok {
            f.push((format!("byok.{name}"), "on".to_owned()));
        }
    }
    f.push(("default_tier".into(), p.default_tier.clone()));
    if p.demo.enabled {
        f.push(("demo_enabled".into(), "on".into()));
    }
    f.push(("demo_tokens_per_day".into(), p.demo.tokens_per_day.to_string()));
    f.push(("demo_days".into(), p.demo.days.to_string()));
    f.push(("provider_priority".into(), p.provider_priority.join(", ")));
    f.push(("max_keys_per_user".into(), p.max_keys_per_user.to_string()));
    if p.reject_invalid_keys {
        f.push(("reject_invalid_keys".into(), "on".into()));
    }
    f.push(("guard_mode".into(), p.prompt_guard.mode.as_str().into()));
    for kind in &p.prompt_guard.kinds {
        f.push(("guard_kind".into(), kind.as_str().into()));
    }
    f
}

fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(k, _)| k != name);
    fields.push((name.to_owned(), value.to_owned()));
}

fn refs(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn rows(html: &str, marker: &str) -> usize {
    html.matches(marker).count()
}

async fn only_super_admins_reach_the_admin_pages(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, _) = signed_in(&h, "root@example.com", true).await;
    let (mut person, someone) = signed_in(&h, "person@example.com", false).await;
    let ws = h.store().memberships_of_user(someone.id).await.unwrap()[0].workspace_id;
    let delete = format!("/admin/workspaces/{ws}/delete");
    for path in ["/admin/settings", "/admin/users", "/admin/workspaces", "/admin/audit", delete.as_str()] {
        let denied = person.get(path).await;
        assert_eq!(denied.status, 403, "{path}: {}", denied.html);
        assert!(denied.html.contains("super-admins"), "{path}: {}", denied.html);
        let shown = root.get(path).await;
        assert_eq!(shown.status, 200, "{path}: {}", shown.html);
        assert!(shown.html.contains("th scope=\"col\"") || path == delete, "{path}");
    }
    // Forms posted with a valid session and CSRF field are refused too, and change nothing.
    let before = h.services().policy().as_ref().clone();
    let mut fields = settings_form(&before);
    set(&mut fields, "max_keys_per_user", "99");
    let csrf = person.get("/settings/api-keys").await.csrf();
    let mut posted = vec![("csrf_token", csrf.as_str())];
    posted.extend(refs(&fields));
    assert_eq!(person.post("/admin/settings", &posted).await.status, 403);
    assert_eq!(*h.services().policy(), before);
    let pause =
        person.post(&format!("/admin/workspaces/{ws}/status"), &[("csrf_token", &csrf), ("status", "paused")]).await;
    assert_eq!(pause.status, 403);
    let made =
        person.post(&format!("/admin/users/{}", someone.id), &[("csrf_token", &csrf), ("super_admin", "true")]).await;
    assert_eq!(made.status, 403);
    let confirm = [("csrf_token", csrf.as_str()), ("confirm_name", "person@example.com's workspace")];
    assert_eq!(person.post(&format!("/admin/workspaces/{ws}/delete"), &confirm).await.status, 403);
    assert_eq!(h.store().workspace(ws).await.unwrap().status, WorkspaceStatus::Active);
    assert!(!h.store().user(someone.id).await.unwrap().super_admin);
    // Without a session, the pages lead to sign-in.
    let mut stranger = Browser::new(&h);
    let page = stranger.get("/admin/audit?action=auth.login").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/login?next=/admin/audit%3Faction%3Dauth.login"));
}

async fn settings_are_saved_from_the_form_and_a_bad_value_changes_nothing(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, root_user) = signed_in(&h, "root@example.com", true).await;
    let token = h.token_for(&root_user, None).await;
    let page = root.get("/admin/settings").await;
    assert!(page.html.contains("name=\"per_minute.community\"") && page.html.contains("value=\"10\""), "{}", page.html);

    let mut fields = settings_form(&h.services().policy());
    set(&mut fields, "per_minute.community", "42");
    set(&mut fields, "per_day.community", "4,200");
    fields.retain(|(k, _)| k != "byok.premium");
    set(&mut fields, "default_tier", "subscriber");
    fields.retain(|(k, _)| k != "demo_enabled");
    set(&mut fields, "demo_tokens_per_day", "1234");
    set(&mut fields, "demo_days", "7");
    set(&mut fields, "provider_priority", " openai,anthropic , ");
    set(&mut fields, "max_keys_per_user", "7");
    set(&mut fields, "reject_invalid_keys", "on");
    let saved = root.submit("/admin/settings", "/admin/settings", &refs(&fields)).await;
    assert_eq!((saved.status, saved.location.as_deref()), (303, Some("/admin/settings?done=saved")), "{}", saved.html);
    let api = h.get("/api/v1/admin/settings", &token).await;
    assert_eq!(
        api.json["tiers"]["community"],
        json!({"requests_per_minute": 42, "requests_per_day": 4200, "byok": true})
    );
    assert_eq!(api.json["tiers"]["premium"]["byok"], false);
    assert_eq!(api.json["default_tier"], "subscriber");
    assert_eq!(api.json["demo"], json!({"enabled": false, "tokens_per_day": 1234, "days": 7}));
    assert_eq!(api.json["provider_priority"], json!(["openai", "anthropic"]));
    assert_eq!(
        (api.json["max_keys_per_user"].as_u64(), api.json["reject_invalid_keys"].as_bool()),
        (Some(7), Some(true))
    );
    let shown = root.get("/admin/settings?done=saved").await;
    assert!(shown.html.contains("Settings saved"), "{}", shown.html);
    assert!(shown.html.contains("value=\"openai, anthropic\""), "{}", shown.html);
    let audited = h.get("/api/v1/admin/audit?action=settings.update", &token).await;
    assert_eq!(audited.json["events"].as_array().unwrap().len(), 1);

    // Each bad value is shown again as typed, with what is wrong, and nothing changes.
    let saved_policy = h.services().policy().as_ref().clone();
    let mut fields = settings_form(&saved_policy);
    let bad = [
        ("provider_priority", "openai, nope", "`nope` is not a provider"),
        ("per_minute.community", "abc", "`abc` is not a whole number"),
        ("per_day.premium", "-5", "tier premium: requests per day"),
        ("per_minute.lifetime", "0", "limits must be at least 1"),
        ("default_tier", "gold", "`gold` is not one of the tiers"),
        ("max_keys_per_user", "0", "max_keys_per_user: must be at least 1"),
    ];
    for (name, value, says) in bad {
        let good = fields.iter().find(|(k, _)| k == name).unwrap().1.clone();
        set(&mut fields, name, value);
        let refused = root.submit("/admin/settings", "/admin/settings", &refs(&fields)).await;
        assert_eq!(refused.status, 422, "{name}={value}: {}", refused.html);
        assert!(
            refused.html.contains("role=\"alert\"") && refused.html.contains(says),
            "{name}={value}: {}",
            refused.html
        );
        if name != "default_tier" {
            assert!(refused.html.contains(&format!("value=\"{value}\"")), "{name}: typed value kept: {}", refused.html);
        }
        assert_eq!(*h.services().policy(), saved_policy, "{name}={value} changed nothing");
        set(&mut fields, name, &good);
    }
    assert_eq!(
        h.get("/api/v1/admin/audit?action=settings.update", &token).await.json["events"].as_array().unwrap().len(),
        1
    );

    // A form without its CSRF field is refused before anything is read.
    set(&mut fields, "max_keys_per_user", "3");
    let forged = root.post("/admin/settings", &refs(&fields)).await;
    assert_eq!(forged.status, 403, "{}", forged.html);
    let mut wrong = vec![("csrf_token", "0000")];
    wrong.extend(refs(&fields));
    assert_eq!(root.post("/admin/settings", &wrong).await.status, 403);
    assert_eq!(*h.services().policy(), saved_policy);
}

async fn tiers_are_added_and_removed_on_the_settings_page(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, _) = signed_in(&h, "root@example.com", true).await;
    let add = [("name", "gold"), ("per_minute", "5"), ("per_day", "50"), ("byok", "on")];
    let added = root.submit("/admin/settings", "/admin/settings/tiers", &add).await;
    assert_eq!(added.location.as_deref(), Some("/admin/settings?done=tier-added"), "{}", added.html);
    let gold = h.services().policy().tiers["gold"].clone();
    assert_eq!((gold.requests_per_minute, gold.requests_per_day, gold.byok), (5, 50, true));
    assert!(root.get("/admin/settings").await.html.contains("name=\"per_minute.gold\""));

    let before = h.services().policy().as_ref().clone();
    for (fields, says) in [
        (vec![("name", "gold"), ("per_minute", "5"), ("per_day", "50")], "already a tier `gold`"),
        (vec![("name", "bad name"), ("per_minute", "5"), ("per_day", "50")], "must be letters, digits"),
        (vec![("name", "silver"), ("per_minute", "lots"), ("per_day", "50")], "`lots` is not a whole number"),
        (vec![("name", ""), ("per_minute", "5"), ("per_day", "50")], "name the new tier"),
    ] {
        let refused = root.submit("/admin/settings", "/admin/settings/tiers", &fields).await;
        assert_eq!(refused.status, 422, "{fields:?}: {}", refused.html);
        assert!(refused.html.contains(says), "{fields:?}: {}", refused.html);
        assert!(refused.html.contains(&format!("value=\"{}\"", fields[1].1)), "typed values kept");
        assert_eq!(*h.services().policy(), before);
    }

    let refused = root.submit("/admin/settings", "/admin/settings/tiers/remove", &[("tier", "community")]).await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("is the default tier"), "{}", refused.html);
    let removed = root.submit("/admin/settings", "/admin/settings/tiers/remove", &[("tier", "gold")]).await;
    assert_eq!(removed.location.as_deref(), Some("/admin/settings?done=tier-removed"), "{}", removed.html);
    assert!(!h.services().policy().tiers.contains_key("gold"));
}

async fn users_are_searched_paged_and_given_tiers_and_super_admin(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, root_user) = signed_in(&h, "root@example.com", true).await;
    let mut bulk = Vec::new();
    for i in 0..55 {
        bulk.push(h.user(&format!("bulk-{i:03}@example.com")).await);
    }
    // 56 users: 50 on the first page, 6 on the second.
    let first = root.get("/admin/users").await;
    assert_eq!(rows(&first.html, "data-user-id="), 50, "{}", first.html);
    assert!(first.html.contains("Page 1 of 2") && first.html.contains("href=\"/admin/users?page=2\""));
    let second = root.get("/admin/users?page=2").await;
    assert_eq!(rows(&second.html, "data-user-id="), 6);
    assert_eq!(rows(&root.get("/admin/users?page=99").await.html, "data-user-id="), 6, "past the end: the last page");

    let found = root.get("/admin/users?q=BULK-007").await;
    assert_eq!(rows(&found.html, "data-user-id="), 1, "{}", found.html);
    assert!(found.html.contains("bulk-007@example.com") && found.html.contains("1 of 56 users"));
    assert_eq!(rows(&root.get("/admin/users?q=bulk-00").await.html, "data-user-id="), 10);
    assert_eq!(rows(&root.get("/admin/users?q=nobody").await.html, "data-user-id="), 0);

    let target = &bulk[7].user;
    let path = format!("/admin/users/{}", target.id);
    let saved =
        root.submit("/admin/users?q=bulk-007", &path, &[("tier", "premium"), ("q", "bulk-007"), ("page", "1")]).await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let back = saved.location.unwrap();
    assert_eq!(back, format!("/admin/users?q=bulk-007&page=1&done=saved&id={}", target.id));
    assert_eq!(h.store().user(target.id).await.unwrap().tier, "premium");
    let shown = root.get(&back).await;
    assert!(shown.html.contains("Saved bulk-007@example.com: tier premium, not a super-admin."), "{}", shown.html);

    let refused = root.submit("/admin/users", &path, &[("tier", "gold")]).await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("`gold` is not a tier"), "{}", refused.html);
    assert_eq!(h.store().user(target.id).await.unwrap().tier, "premium");

    let made = root.submit("/admin/users", &path, &[("super_admin", "true")]).await;
    assert_eq!(made.status, 303, "{}", made.html);
    assert!(h.store().user(target.id).await.unwrap().super_admin);
    let unmade = root.submit("/admin/users", &path, &[("super_admin", "false")]).await;
    assert_eq!(unmade.status, 303);
    assert!(!h.store().user(target.id).await.unwrap().super_admin);
    // The last super-admin stays one.
    let last =
        root.submit("/admin/users", &format!("/admin/users/{}", root_user.id), &[("super_admin", "false")]).await;
    assert_eq!(last.status, 422, "{}", last.html);
    assert!(last.html.contains("last super-admin"), "{}", last.html);
    assert!(h.store().user(root_user.id).await.unwrap().super_admin);

    let forged = root.post(&path, &[("tier", "community")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(h.store().user(target.id).await.unwrap().tier, "premium");
}

async fn pausing_a_workspace_on_the_page_stops_its_keys_and_restoring_brings_them_back(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, _) = signed_in(&h, "root@example.com", true).await;
    let member = h.user("member@example.com").await;
    h.add_key(&member, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    assert_eq!(h.chat(&member.token).await.status, 200);
    let status = format!("/admin/workspaces/{}/status", member.workspace);

    let paused = root.submit("/admin/workspaces", &status, &[("status", "paused")]).await;
    assert_eq!(paused.status, 303, "{}", paused.html);
    let shown = root.get(paused.location.as_deref().unwrap()).await;
    assert!(shown.html.contains("“member@example.com ws” is paused"), "{}", shown.html);
    assert!(shown.html.contains("status warn\">paused"), "{}", shown.html);
    let refused = h.chat(&member.token).await;
    assert_eq!((refused.status, refused.code()), (403, "workspace_inactive"), "{}", refused.text);

    let cancelled = root.submit("/admin/workspaces", &status, &[("status", "cancelled")]).await;
    assert_eq!(cancelled.status, 303);
    assert_eq!(h.chat(&member.token).await.code(), "workspace_inactive");

    let restored = root.submit("/admin/workspaces", &status, &[("status", "active")]).await;
    assert_eq!(restored.status, 303);
    assert!(root.get(restored.location.as_deref().unwrap()).await.html.contains("is active again"));
    let again = h.chat(&member.token).await;
    assert_eq!(again.status, 200, "{}", again.text);

    // Deleting is never a status button: only the confirmation page deletes.
    let sneaky = root.submit("/admin/workspaces", &status, &[("status", "deleted")]).await;
    assert_eq!(sneaky.status, 404);
    assert_eq!(h.store().workspace(member.workspace).await.unwrap().status, WorkspaceStatus::Active);
    let forged = root.post(&status, &[("status", "paused")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(h.chat(&member.token).await.status, 200);
    let statuses = keygate_store::AuditFilter { action: Some(AuditAction::WorkspaceStatus), ..Default::default() };
    assert_eq!(h.store().audit_events(&statuses).await.unwrap().len(), 3);
}

async fn workspaces_are_created_joined_and_deleted_only_by_their_exact_name(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, _) = signed_in(&h, "root@example.com", true).await;

    // Creating one.
    let created = root.submit("/admin/workspaces", "/admin/workspaces", &[("name", "  Team Blue ")]).await;
    assert_eq!(created.status, 303, "{}", created.html);
    assert!(root.get(created.location.as_deref().unwrap()).await.html.contains("Workspace “Team Blue” created."));
    let team = h.store().workspaces().await.unwrap().into_iter().find(|w| w.name == "Team Blue").unwrap();
    assert!(!team.personal && team.status == WorkspaceStatus::Active);
    let empty = root.submit("/admin/workspaces", "/admin/workspaces", &[("name", "  ")]).await;
    assert_eq!(empty.status, 422);
    assert!(empty.html.contains("name: must be 1 to 100 characters"), "{}", empty.html);

    // Adding a member, by email.
    let joiner = h.user("joiner@example.com").await;
    let members = format!("/admin/workspaces/{}/members", team.id);
    let joined =
        root.submit("/admin/workspaces", &members, &[("user", " JOINER@example.com "), ("role", "admin")]).await;
    assert_eq!(joined.status, 303, "{}", joined.html);
    assert!(root.get(joined.location.as_deref().unwrap()).await.html.contains("Member added to “Team Blue”"));
    let membership = h.store().membership(team.id, joiner.user.id).await.unwrap().unwrap();
    assert_eq!(membership.role, Role::Admin);
    let unknown =
        root.submit("/admin/workspaces", &members, &[("user", "nobody@example.com"), ("role", "member")]).await;
    assert_eq!(unknown.status, 422);
    assert!(unknown.html.contains("nobody is known as “nobody@example.com”"), "{}", unknown.html);
    assert_eq!(root.post(&members, &[("user", "joiner@example.com"), ("role", "owner")]).await.status, 403);
    assert_eq!(h.store().membership(team.id, joiner.user.id).await.unwrap().unwrap().role, Role::Admin);

    let owner = h.user("doomed@example.com").await;
    let key = h.add_key(&owner, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
    let confirm = format!("/admin/workspaces/{}/delete", owner.workspace);
    let page = root.get(&confirm).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("unrecoverable") && page.html.contains("crypto-shredding"), "{}", page.html);
    assert!(page.html.contains("<label for=\"confirm_name\"") && page.html.contains("name=\"confirm_name\""));

    for wrong in ["doomed", "DOOMED@example.com ws", ""] {
        let refused = root.submit(&confirm, &confirm, &[("confirm_name", wrong)]).await;
        assert_eq!(refused.status, 422, "{wrong}: {}", refused.html);
        assert!(refused.html.contains("nothing was deleted"), "{}", refused.html);
        assert_eq!(h.store().workspace(owner.workspace).await.unwrap().status, WorkspaceStatus::Active);
    }
    let credential = h.store().credential(key.parse().unwrap()).await.unwrap();
    assert!(h.vault().open_credential(&credential).await.is_ok(), "still opens");
    assert_eq!(root.post(&confirm, &[("confirm_name", "doomed@example.com ws")]).await.status, 403, "no CSRF field");
    assert_eq!(h.store().workspace(owner.workspace).await.unwrap().status, WorkspaceStatus::Active);

    let deleted = root.submit(&confirm, &confirm, &[("confirm_name", "doomed@example.com ws")]).await;
    assert_eq!(deleted.status, 303, "{}", deleted.html);
    assert_eq!(h.store().workspace(owner.workspace).await.unwrap().status, WorkspaceStatus::Deleted);
    let credential = h.store().credential(key.parse().unwrap()).await.unwrap();
    assert!(h.vault().open_credential(&credential).await.is_err(), "can never be opened again");
    let listed = root.get(deleted.location.as_deref().unwrap()).await;
    assert!(listed.html.contains("was deleted and its data key destroyed"), "{}", listed.html);
    assert!(!listed.html.contains(&confirm), "no second delete link");
    assert!(root.get(&confirm).await.html.contains("is already deleted"));
}

async fn the_audit_page_filters_and_pages(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, _) = signed_in(&h, "root@example.com", true).await;
    root.submit("/admin/workspaces", "/admin/workspaces", &[("name", "Audited")]).await;
    let ws = h.store().workspaces().await.unwrap().into_iter().find(|w| w.name == "Audited").unwrap().id;
    let at = keygate_service::now();
    for i in 0..60 {
        let event = AuditEvent {
            id: AuditEventId::new(),
            at: at - chrono::Duration::seconds(i + 1),
            actor_user_id: None,
            actor: "bulk@example.com".into(),
            action: AuditAction::TokenCreate,
            target_type: "token".into(),
            target_id: Some(format!("t{i}")),
            workspace_id: None,
            source_addr: Some("203.0.113.9".into()),
            result: AuditResult::Ok,
            detail: Some(r#"{"name":"ci"}"#.into()),
        };
        h.store().insert_audit_event(&event).await.unwrap();
    }

    let created = root.get("/admin/audit?action=workspace.create").await;
    assert_eq!(created.status, 200);
    assert_eq!(rows(&created.html, "data-audit-id="), 1, "{}", created.html);
    assert_eq!(rows(&created.html, "<code>workspace.create</code>"), 1);
    assert!(created.html.contains("<option value=\"workspace.create\" selected>"), "the filter stays chosen");
    assert!(created.html.contains(&ws.to_string()) && created.html.contains("root@example.com"));
    let logins = root.get("/admin/audit?action=auth.login").await;
    assert!(rows(&logins.html, "data-audit-id=") >= 1);
    assert_eq!(rows(&logins.html, "<code>workspace.create</code>"), 0);
    assert_eq!(rows(&logins.html, "<code>token.create</code>"), 0);
    let by_workspace = root.get(&format!("/admin/audit?workspace={ws}")).await;
    assert_eq!(rows(&by_workspace.html, "data-audit-id="), 1);
    assert_eq!(rows(&root.get("/admin/audit?target=t7").await.html, "data-audit-id="), 1);

    // 60 rows by one actor: 50, then 10.
    let first = root.get("/admin/audit?actor=BULK%40example.com").await;
    assert_eq!(rows(&first.html, "data-audit-id="), 50, "{}", first.html);
    assert!(first.html.contains("203.0.113.9") && first.html.contains("{&quot;name&quot;:&quot;ci&quot;}"));
    let next = "href=\"/admin/audit?actor=BULK%40example.com&amp;page=2\"";
    assert!(first.html.contains(next), "{}", first.html);
    let second = root.get("/admin/audit?actor=BULK%40example.com&page=2").await;
    assert_eq!(rows(&second.html, "data-audit-id="), 10);
    assert!(!second.html.contains("rel=\"next\"") && second.html.contains("rel=\"prev\""));
    let everything = root.get("/admin/audit").await;
    assert_eq!(rows(&everything.html, "data-audit-id="), 50);
    assert!(everything.html.contains("rel=\"next\""));

    // Dates: the until day is included.
    let today = at.date_naive();
    let tomorrow = today.succ_opt().unwrap();
    let from_tomorrow = root.get(&format!("/admin/audit?since={tomorrow}")).await;
    assert_eq!(rows(&from_tomorrow.html, "data-audit-id="), 0);
    assert!(from_tomorrow.html.contains("No rows match these filters."));
    let until_today = root.get(&format!("/admin/audit?action=workspace.create&until={today}")).await;
    assert_eq!(rows(&until_today.html, "data-audit-id="), 1);

    for (query, says) in [
        ("action=nope", "unknown audit action `nope`"),
        ("workspace=xyz", "`xyz` is not a workspace id"),
        ("since=31.12.2025", "is not a date"),
    ] {
        let refused = root.get(&format!("/admin/audit?{query}")).await;
        assert_eq!(refused.status, 422, "{query}");
        assert!(refused.html.contains(says), "{query}: {}", refused.html);
        assert_eq!(rows(&refused.html, "data-audit-id="), 0);
    }
}

async fn the_prompt_guard_is_set_on_the_settings_page(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut root, root_user) = signed_in(&h, "root@example.com", true).await;
    let token = h.token_for(&root_user, None).await;
    let page = root.get("/admin/settings").await;
    assert!(
        page.html.contains("Prompt guard") && page.html.contains("<option value=\"block\" selected>"),
        "{}",
        page.html
    );
    assert!(page.html.contains("value=\"card_number\" checked"), "{}", page.html);
    assert!(page.html.contains("value=\"provider_key\">"), "off by default: {}", page.html);

    let mut fields = settings_form(&h.services().policy());
    set(&mut fields, "guard_mode", "redact");
    fields.retain(|(k, v)| !(k == "guard_kind" && v == "card_number"));
    fields.push(("guard_kind".into(), "provider_key".into()));
    let saved = root.submit("/admin/settings", "/admin/settings", &refs(&fields)).await;
    assert_eq!((saved.status, saved.location.as_deref()), (303, Some("/admin/settings?done=saved")), "{}", saved.html);
    let api = h.get("/api/v1/admin/settings", &token).await;
    assert_eq!(
        api.json["prompt_guard"],
        json!({"mode": "redact", "kinds": ["private_key", "aws_access_key", "provider_key"]})
    );
    let shown = root.get("/admin/settings").await;
    assert!(shown.html.contains("<option value=\"redact\" selected>"), "{}", shown.html);
    assert!(shown.html.contains("value=\"provider_key\" checked"), "{}", shown.html);

    // A mode that does not exist, or one that blocks nothing, changes nothing.
    let saved_policy = h.services().policy().as_ref().clone();
    let mut bad = settings_form(&saved_policy);
    set(&mut bad, "guard_mode", "sometimes");
    let refused = root.submit("/admin/settings", "/admin/settings", &refs(&bad)).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(refused.html.contains("`sometimes` is not block, redact or off"), "{}", refused.html);
    let mut none = settings_form(&saved_policy);
    none.retain(|(k, _)| k != "guard_kind");
    let refused = root.submit("/admin/settings", "/admin/settings", &refs(&none)).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(refused.html.contains("prompt_guard.kinds"), "{}", refused.html);
    assert_eq!(*h.services().policy(), saved_policy);

    // The API takes it as part of the policy document.
    let mut policy = api.json.clone();
    policy["prompt_guard"] = json!({"mode": "off", "kinds": []});
    let put = h.put("/api/v1/admin/settings", &token, policy).await;
    assert_eq!((put.status, put.json["prompt_guard"]["mode"].as_str()), (200, Some("off")), "{}", put.text);
}
