//! The store suite: every test runs against SQLite and against a fresh PostgreSQL
//! database (see `keygate_store::testdb`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixtures;
mod save_credential;
mod usage_report;

use chrono::{Duration, DurationRound, TimeDelta, Utc};
use fixtures::*;
use keygate_core::*;
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, connect, AuditFilter, CredentialFilter, UsageFilter};

both_backends!(
    migrations_apply_once_and_leave_nothing_pending,
    workspaces_round_trip_and_change_status,
    users_are_unique_by_email_and_external_id,
    memberships_upsert_roles,
    provisioning_a_user_is_all_or_nothing,
    data_keys_are_one_per_owner_and_rewrap_with_compare_and_set,
    credentials_keep_one_active_per_owner_and_provider,
    credential_queries_stay_scoped_to_their_owner,
    credentials_update_replace_and_delete,
    a_row_written_back_from_an_older_copy_reads_at_its_newest_secret_version,
    tokens_are_found_by_public_id_and_revoked_only_by_their_owner,
    a_tokens_principal_comes_with_its_user_and_acting_workspace,
    sessions_are_tokens_with_rules_listed_while_live_and_revoked_by_their_owner,
    audit_events_filter_and_come_newest_first,
    audit_events_page_by_offset_and_match_their_actor,
    usage_events_add_to_credential_totals,
    meta_compare_and_set,
    settings_and_host_workspaces,
    demo_first_use_and_usage_sums,
);

async fn migrations_apply_once_and_leave_nothing_pending(db: TestDb) {
    let store = keygate_store::connect_unmigrated(&db.location).await.unwrap();
    assert!(!store.pending_migrations().await.unwrap().is_empty());
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn workspaces_round_trip_and_change_status(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let ws = workspace("acme");
    store.insert_workspace(&ws).await.unwrap();
    assert_eq!(store.workspace(ws.id).await.unwrap(), ws);
    let later = now() + Duration::seconds(5);
    store.set_workspace_status(ws.id, WorkspaceStatus::Paused, later).await.unwrap();
    let got = store.workspace(ws.id).await.unwrap();
    assert_eq!(got.status, WorkspaceStatus::Paused);
    assert_eq!(got.updated_at, later);
    assert!(store.workspace(WorkspaceId::new()).await.unwrap_err().is_not_found());
    let missing = store.set_workspace_status(WorkspaceId::new(), WorkspaceStatus::Active, later).await;
    assert!(missing.unwrap_err().is_not_found());
    assert_eq!(store.workspaces().await.unwrap().len(), 1);
}

async fn users_are_unique_by_email_and_external_id(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let alice = user(Some("alice@example.com"), None);
    store.insert_user(&alice, Some("$argon2id$hash")).await.unwrap();
    assert_eq!(store.user(alice.id).await.unwrap(), alice);
    assert_eq!(store.user_by_email("alice@example.com").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.password_hash(alice.id).await.unwrap().as_deref(), Some("$argon2id$hash"));

    let twin = user(Some("alice@example.com"), None);
    let err = store.insert_user(&twin, None).await.unwrap_err();
    assert_eq!(err.to_string(), "conflict: a user with this email address already exists");

    let host_user = user(None, Some("host-42"));
    store.insert_user(&host_user, None).await.unwrap();
    let nameless = user(None, None);
    store.insert_user(&nameless, None).await.unwrap();
    assert_eq!(store.user_by_external_id("host-42").await.unwrap(), Some(host_user.clone()));
    assert!(store.insert_user(&user(None, Some("host-42")), None).await.unwrap_err().is_conflict());
    assert_eq!(store.password_hash(host_user.id).await.unwrap(), None);

    let mut promoted = host_user.clone();
    promoted.tier = "premium".into();
    promoted.super_admin = true;
    store.update_user(&promoted).await.unwrap();
    assert_eq!(store.user(host_user.id).await.unwrap(), promoted);
    store.set_password_hash(host_user.id, "$new", now()).await.unwrap();
    assert_eq!(store.password_hash(host_user.id).await.unwrap().as_deref(), Some("$new"));
    assert_eq!(store.users().await.unwrap().len(), 3);
}

async fn memberships_upsert_roles(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let (ws, u) = (workspace("w"), user(Some("m@example.com"), None));
    store.insert_workspace(&ws).await.unwrap();
    store.insert_user(&u, None).await.unwrap();
    let mut m = Membership { workspace_id: ws.id, user_id: u.id, role: Role::Member, created_at: now() };
    store.upsert_membership(&m).await.unwrap();
    m.role = Role::Admin;
    store.upsert_membership(&m).await.unwrap();
    assert_eq!(store.membership(ws.id, u.id).await.unwrap(), Some(m.clone()));
    assert_eq!(store.memberships_of_user(u.id).await.unwrap(), vec![m]);
    assert_eq!(store.membership(WorkspaceId::new(), u.id).await.unwrap(), None);
}

async fn provisioning_a_user_is_all_or_nothing(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let (ws, u) = (workspace("personal"), user(Some("p@example.com"), Some("host-1")));
    store.provision_user(&u, None, &ws, Role::Owner).await.unwrap();
    assert_eq!(store.membership(ws.id, u.id).await.unwrap().unwrap().role, Role::Owner);
    // The same host user again: the user insert fails, and the new workspace is rolled back.
    let again = workspace("personal-2");
    let err = store.provision_user(&user(None, Some("host-1")), None, &again, Role::Owner).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(store.workspace(again.id).await.unwrap_err().is_not_found());
    assert_eq!(store.workspaces().await.unwrap().len(), 1);
}

async fn data_keys_are_one_per_owner_and_rewrap_with_compare_and_set(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let ws = workspace("w");
    store.insert_workspace(&ws).await.unwrap();
    let owner = KeyOwner::Workspace(ws.id);
    let dk = data_key(owner, "kek-a");
    store.insert_data_key(&dk).await.unwrap();
    assert!(store.insert_data_key(&data_key(owner, "kek-a")).await.unwrap_err().is_conflict());
    store.insert_data_key(&data_key(KeyOwner::Operator, "kek-b")).await.unwrap();
    assert_eq!(store.data_key(dk.id).await.unwrap(), dk);
    assert_eq!(store.data_key_by_owner(&owner).await.unwrap(), Some(dk.clone()));
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec!["kek-a".to_owned(), "kek-b".to_owned()]);

    assert!(store.rewrap_data_key(dk.id, dk.version, "kek-b", b"rewrapped", now()).await.unwrap());
    assert!(
        !store.rewrap_data_key(dk.id, dk.version, "kek-c", b"stale", now()).await.unwrap(),
        "a stale version must not overwrite"
    );
    let got = store.data_key(dk.id).await.unwrap();
    assert_eq!(
        (got.kek_id.as_str(), got.wrapped.as_deref(), got.version),
        ("kek-b", Some(&b"rewrapped"[..]), dk.version + 1)
    );
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec!["kek-b".to_owned()]);

    store.destroy_data_key(&owner, now()).await.unwrap();
    let gone = store.data_key(dk.id).await.unwrap();
    assert_eq!(gone.wrapped, None);
    assert!(gone.destroyed_at.is_some());
    assert!(!store.rewrap_data_key(dk.id, gone.version, "kek-a", b"revive", now()).await.unwrap());
    assert_eq!(store.data_keys().await.unwrap().len(), 2);
}

async fn credentials_keep_one_active_per_owner_and_provider(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let first = f.user_credential("openai");
    store.insert_credential(&first).await.unwrap();
    let err = store.insert_credential(&f.user_credential("openai")).await.unwrap_err();
    // The message reaches API callers: it names the rule in words, never the engine's text.
    assert!(
        matches!(&err, keygate_store::StoreError::Conflict(what)
            if what == "another active key for this provider exists for this owner"),
        "{err:?}"
    );
    // A disabled one may sit beside the active one; other providers and owners are free.
    let mut disabled = f.user_credential("openai");
    disabled.status = CredentialStatus::Disabled;
    store.insert_credential(&disabled).await.unwrap();
    store.insert_credential(&f.user_credential("anthropic")).await.unwrap();
    store.insert_credential(&f.workspace_credential("openai")).await.unwrap();
    store.insert_credential(&f.operator_credential("openai")).await.unwrap();
    assert!(store.insert_credential(&f.operator_credential("openai")).await.unwrap_err().is_conflict());
    assert_eq!(store.credential(first.id).await.unwrap(), first);
    let same_id = Credential { status: CredentialStatus::Disabled, ..first.clone() };
    let err = store.insert_credential(&same_id).await.unwrap_err();
    assert_eq!(err.to_string(), "conflict: a credential with this id already exists");

    // Any other database failure keeps sqlx's error as its source.
    let orphan = Credential { data_key_id: DataKeyId::new(), ..f.user_credential("mistral") };
    let err = store.insert_credential(&orphan).await.unwrap_err();
    assert!(matches!(err, keygate_store::StoreError::Database(_)), "{err:?}");
    let source = std::error::Error::source(&err).expect("the sqlx error");
    assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
}

async fn credential_queries_stay_scoped_to_their_owner(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let a = Fixture::new(&*store).await;
    let b = Fixture::new(&*store).await;
    let a_key = a.user_credential("openai");
    let b_key = b.user_credential("openai");
    store.insert_credential(&a_key).await.unwrap();
    store.insert_credential(&b_key).await.unwrap();
    store.insert_credential(&a.workspace_credential("openai")).await.unwrap();

    let mine = CredentialFilter {
        scope: Some(CredentialScope::User),
        workspace_id: Some(a.workspace.id),
        owner_user_id: Some(a.user.id),
        ..Default::default()
    };
    assert_eq!(store.credentials(&mine).await.unwrap(), vec![a_key.clone()]);
    let bs = CredentialFilter { owner_user_id: Some(b.user.id), ..Default::default() };
    assert_eq!(store.credentials(&bs).await.unwrap(), vec![b_key.clone()]);
    let a_ws = CredentialFilter { workspace_id: Some(a.workspace.id), ..Default::default() };
    assert_eq!(store.credentials(&a_ws).await.unwrap().len(), 2);
    let by_provider = CredentialFilter { provider: Some("anthropic".into()), ..Default::default() };
    assert!(store.credentials(&by_provider).await.unwrap().is_empty());
    let by_key = CredentialFilter { data_key_id: Some(a.data_key.id), ..Default::default() };
    assert_eq!(store.credentials(&by_key).await.unwrap().len(), 2);

    // A caller's candidates in one query: their own key (even disabled), their
    // workspace's active keys, the operator's active keys; nobody else's, no other provider.
    let mut a_disabled = a.user_credential("anthropic");
    a_disabled.status = CredentialStatus::Disabled;
    store.insert_credential(&a_disabled).await.unwrap();
    let operator = a.operator_credential("openai");
    store.insert_credential(&operator).await.unwrap();
    let mut paused = b.operator_credential("openai");
    paused.status = CredentialStatus::Disabled;
    store.insert_credential(&paused).await.unwrap();
    let mut b_ws_off = b.workspace_credential("openai");
    b_ws_off.status = CredentialStatus::Disabled;
    store.insert_credential(&b_ws_off).await.unwrap();
    let ids = |v: Vec<Credential>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let a_ws_key =
        store.credentials(&CredentialFilter { scope: Some(CredentialScope::Workspace), ..a_ws }).await.unwrap();
    assert_eq!(
        ids(store.credential_candidates(a.workspace.id, a.user.id, "openai").await.unwrap()),
        vec![a_key.id, a_ws_key[0].id, operator.id]
    );
    assert_eq!(
        ids(store.credential_candidates(a.workspace.id, a.user.id, "anthropic").await.unwrap()),
        vec![a_disabled.id]
    );
    assert_eq!(
        ids(store.credential_candidates(b.workspace.id, b.user.id, "openai").await.unwrap()),
        vec![b_key.id, operator.id],
        "b's disabled workspace key and the disabled operator key are not candidates"
    );
    assert_eq!(
        ids(store.credential_candidates(a.workspace.id, b.user.id, "openai").await.unwrap()),
        vec![a_ws_key[0].id, operator.id]
    );
}

async fn credentials_update_replace_and_delete(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let mut c = f.user_credential("openai");
    store.insert_credential(&c).await.unwrap();

    c.name = "renamed".into();
    c.status = CredentialStatus::Disabled;
    c.validity = Validity::Invalid;
    c.validity_detail = Some("the provider rejected the key".into());
    c.validity_checked_at = Some(now());
    c.sealed = b"resealed".to_vec();
    c.hint = "…wxyz".into();
    c.updated_at = now() + Duration::seconds(1);
    let sealed_before = store.credential(c.id).await.unwrap().sealed;
    store.update_credential(&c, &sealed_before, None).await.unwrap();
    assert_eq!(store.credential(c.id).await.unwrap(), c);
    // Compare-and-set on the secret: an update read before the secret was replaced (here:
    // the "resealed" write above) is refused, writes nothing, and says so.
    let mut stale = c.clone();
    stale.sealed = sealed_before.clone();
    stale.name = "stale rename".into();
    let err = store.update_credential(&stale, &sealed_before, None).await.unwrap_err();
    assert!(matches!(err, keygate_store::StoreError::Changed { .. }), "{err:?}");
    assert_eq!(store.credential(c.id).await.unwrap(), c);
    let missing = Credential { id: CredentialId::new(), ..c.clone() };
    assert!(store.update_credential(&missing, &c.sealed, None).await.unwrap_err().is_not_found());

    // A delete and its audit row are written together, or neither is.
    let audit = f.audit_event("credential.delete");
    store.delete_credential(c.id, &audit).await.unwrap();
    assert!(store.credential(c.id).await.unwrap_err().is_not_found());
    let again = store.delete_credential(c.id, &f.audit_event("credential.delete")).await.unwrap_err();
    assert!(again.is_not_found());
    let audited = store.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(audited.iter().map(|e| e.id).collect::<Vec<_>>(), vec![audit.id], "the failed delete wrote no row");

    // An update whose audit row cannot be written (a duplicate id) leaves the credential as it was.
    let mut kept = f.user_credential("anthropic");
    store.insert_credential(&kept).await.unwrap();
    let before = kept.clone();
    kept.name = "renamed with a broken audit".into();
    let err = store.update_credential(&kept, &before.sealed, Some(&audit)).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(store.credential(kept.id).await.unwrap(), before);
}

/// Runs one statement on the test database, behind the store's back: what someone
/// restoring rows from a backup, or writing to the database directly, could do.
async fn behind_the_stores_back(db: &TestDb, sql: &str, sealed: &[u8], id: CredentialId) -> u64 {
    match &db.location {
        keygate_store::DatabaseLocation::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let done = sqlx::query(sql).bind(sealed).bind(id.as_uuid()).execute(&pool).await.unwrap();
            pool.close().await;
            done.rows_affected()
        }
        keygate_store::DatabaseLocation::Postgres(_) => {
            let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
            let done = sqlx::query(sql).bind(sealed).bind(id.as_uuid()).execute(&pool).await.unwrap();
            pool.close().await;
            done.rows_affected()
        }
    }
}

/// A credential's secret version only ever rises: a row written back with its old record
/// and its old version (by the store, by SQL, or deleted and inserted again) still reads at
/// the newest version, so its record fails to open. Deleting a credential forgets it.
async fn a_row_written_back_from_an_older_copy_reads_at_its_newest_secret_version(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let old = f.user_credential("openai");
    assert_eq!(old.secret_version, 1);
    store.insert_credential(&old).await.unwrap();
    assert_eq!(store.credential(old.id).await.unwrap(), old);
    let new = Credential { sealed: b"sealed-at-v2".to_vec(), secret_version: 2, ..old.clone() };
    store.update_credential(&new, &old.sealed, None).await.unwrap();
    assert_eq!(store.credential(old.id).await.unwrap(), new);

    // Through the store: it saves the old version it is given, and reads the newest.
    store.update_credential(&old, &new.sealed, None).await.unwrap();
    let read = store.credential(old.id).await.unwrap();
    assert_eq!((read.sealed.as_slice(), read.secret_version), (old.sealed.as_slice(), 2));
    store.update_credential(&new, &old.sealed, None).await.unwrap();

    // Behind its back, with SQL.
    let rolled = behind_the_stores_back(
        &db,
        "UPDATE credentials SET sealed = $1, secret_version = 1 WHERE id = $2",
        &old.sealed,
        old.id,
    )
    .await;
    assert_eq!(rolled, 1);
    let read = store.credential(old.id).await.unwrap();
    assert_eq!((read.sealed.as_slice(), read.secret_version), (old.sealed.as_slice(), 2));
    for listed in [
        store.credentials(&CredentialFilter::default()).await.unwrap(),
        store.credential_candidates(f.workspace.id, f.user.id, "openai").await.unwrap(),
    ] {
        assert_eq!(listed.iter().map(|c| c.secret_version).collect::<Vec<_>>(), vec![2]);
    }

    // Deleted behind its back and inserted again as it was at version 1.
    behind_the_stores_back(&db, "DELETE FROM credentials WHERE sealed = $1 AND id = $2", &old.sealed, old.id).await;
    store.insert_credential(&old).await.unwrap();
    assert_eq!(store.credential(old.id).await.unwrap().secret_version, 2);

    // Deleting through the store forgets the credential's versions with it.
    store.delete_credential(old.id, &f.audit_event("credential.delete")).await.unwrap();
    let left = behind_the_stores_back(
        &db,
        "DELETE FROM credential_secret_versions WHERE $1 = $1 AND credential_id = $2",
        b"",
        old.id,
    )
    .await;
    assert_eq!(left, 0, "nothing left behind");
}

async fn tokens_are_found_by_public_id_and_revoked_only_by_their_owner(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let a = Fixture::new(&*store).await;
    let b = Fixture::new(&*store).await;
    let t = ApiToken { expires_at: Some(now() + Duration::days(30)), ..token("pub123", &a.user, Some(&a.workspace)) };
    store.insert_token(&t, &a.audit_event("token.create")).await.unwrap();
    let found = |public_id: &'static str| {
        let store = store.clone();
        async move { store.token_principal(public_id).await.unwrap().map(|found| found.token) }
    };
    assert_eq!(found("pub123").await, Some(t.clone()));
    assert_eq!(found("nope").await, None);
    let again = ApiToken { id: TokenId::new(), ..t.clone() };
    assert!(store.insert_token(&again, &a.audit_event("token.create")).await.unwrap_err().is_conflict());
    assert_eq!(store.tokens_of_user(a.user.id).await.unwrap(), vec![t.clone()]);

    let used = now() + Duration::seconds(3);
    store.touch_token(t.id, used).await.unwrap();
    let touched = found("pub123").await.unwrap();
    assert_eq!(touched.last_used_at, Some(used));
    assert!(store
        .revoke_token(t.id, b.user.id, now(), &b.audit_event("token.revoke"))
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(found("pub123").await.unwrap().revoked_at, None);
    store.revoke_token(t.id, a.user.id, now(), &a.audit_event("token.revoke")).await.unwrap();
    assert!(found("pub123").await.unwrap().revoked_at.is_some());
}

async fn sessions_are_tokens_with_rules_listed_while_live_and_revoked_by_their_owner(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let a = Fixture::new(&*store).await;
    let b = Fixture::new(&*store).await;
    let grant =
        SessionGrant { providers: vec!["anthropic".into(), "openai".into()], max_requests: Some(5), max_tokens: None };
    let live = ApiToken {
        scopes: vec![Scope::Proxy],
        expires_at: Some(now() + Duration::hours(1)),
        ..token("sess-live", &a.user, Some(&a.workspace))
    };
    let ended = ApiToken { expires_at: Some(now() - Duration::seconds(1)), ..token("sess-ended", &a.user, None) };
    let plain = token("plain", &a.user, Some(&a.workspace));
    store.insert_session(&live, &grant, &a.audit_event("session.create")).await.unwrap();
    store.insert_session(&ended, &grant, &a.audit_event("session.create")).await.unwrap();
    store.insert_token(&plain, &a.audit_event("token.create")).await.unwrap();

    // The cold lookup brings the session's rules along; a plain token has none.
    let found = store.token_principal("sess-live").await.unwrap().unwrap();
    assert_eq!((found.token, found.session), (live.clone(), Some(grant.clone())));
    assert_eq!(store.token_principal("plain").await.unwrap().unwrap().session, None);
    // Sessions are listed apart from tokens, and only while live.
    assert_eq!(store.tokens_of_user(a.user.id).await.unwrap(), vec![plain.clone()]);
    let sessions = store.live_sessions_of_user(a.user.id, now()).await.unwrap();
    assert_eq!(sessions, vec![Session { token: live.clone(), grant: grant.clone() }]);
    assert!(store.live_sessions_of_user(b.user.id, now()).await.unwrap().is_empty());

    // Revoked only by its owner, and only as a session.
    let revoke = |id, user, by: &Fixture| {
        let (store, audit) = (store.clone(), by.audit_event("session.revoke"));
        async move { store.revoke_session(id, user, now(), &audit).await }
    };
    assert!(revoke(live.id, b.user.id, &b).await.unwrap_err().is_not_found());
    assert!(revoke(plain.id, a.user.id, &a).await.unwrap_err().is_not_found(), "a token that is no session");
    assert_eq!(store.token_principal("plain").await.unwrap().unwrap().token.revoked_at, None);
    revoke(live.id, a.user.id, &a).await.unwrap();
    assert!(store.token_principal("sess-live").await.unwrap().unwrap().token.revoked_at.is_some());
    assert!(store.live_sessions_of_user(a.user.id, now()).await.unwrap().is_empty());
}

async fn a_tokens_principal_comes_with_its_user_and_acting_workspace(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let a = Fixture::new(&*store).await;
    let b = Fixture::new(&*store).await;
    let named = token("named", &a.user, Some(&a.workspace));
    let unnamed = token("unnamed", &a.user, None);
    store.insert_token(&named, &a.audit_event("token.create")).await.unwrap();
    store.insert_token(&unnamed, &a.audit_event("token.create")).await.unwrap();
    let acting = |public_id: &'static str| {
        let store = store.clone();
        async move { store.token_principal(public_id).await.unwrap().unwrap().acting }
    };
    let found = store.token_principal("named").await.unwrap().unwrap();
    assert_eq!((found.token, found.user), (named.clone(), a.user.clone()));
    assert_eq!(found.acting, None, "not a member of any workspace yet");
    assert_eq!(acting("unnamed").await, None);

    let member = |workspace_id, role, created_at| Membership { workspace_id, user_id: a.user.id, role, created_at };
    store.upsert_membership(&member(b.workspace.id, Role::Admin, now() - Duration::days(1))).await.unwrap();
    assert_eq!(acting("named").await, None, "a member elsewhere, but not of the workspace the token names");
    assert_eq!(acting("unnamed").await, Some((b.workspace.clone(), Role::Admin)));

    store.upsert_membership(&member(a.workspace.id, Role::Member, now())).await.unwrap();
    assert_eq!(acting("named").await, Some((a.workspace.clone(), Role::Member)));
    assert_eq!(acting("unnamed").await, Some((b.workspace.clone(), Role::Admin)), "the oldest membership");

    // Two memberships made in the same microsecond: the lower workspace id, on both backends.
    let c = Fixture::new(&*store).await;
    let b_joined = store.membership(b.workspace.id, a.user.id).await.unwrap().unwrap().created_at;
    store.upsert_membership(&member(c.workspace.id, Role::Owner, b_joined)).await.unwrap();
    let first = if b.workspace.id < c.workspace.id { (b.workspace, Role::Admin) } else { (c.workspace, Role::Owner) };
    assert_eq!(acting("unnamed").await, Some(first));
}

async fn audit_events_filter_and_come_newest_first(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let base = now();
    let mut ids = Vec::new();
    for (i, action) in ["credential.create", "credential.test", "credential.create"].iter().enumerate() {
        let e = AuditEvent {
            id: AuditEventId::new(),
            at: base + Duration::seconds(i as i64),
            actor_user_id: None,
            actor: "cli".into(),
            action: action.parse().unwrap(),
            target_type: "credential".into(),
            target_id: Some(format!("c{i}")),
            workspace_id: None,
            source_addr: Some("127.0.0.1".into()),
            result: AuditResult::Ok,
            detail: Some(r#"{"provider":"openai"}"#.into()),
        };
        store.insert_audit_event(&e).await.unwrap();
        ids.push(e.id);
    }
    let all = store.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
    let creates = AuditFilter { action: Some(AuditAction::CredentialCreate), ..Default::default() };
    assert_eq!(store.audit_events(&creates).await.unwrap().len(), 2);
    let window = AuditFilter {
        since: Some(base + Duration::seconds(1)),
        until: Some(base + Duration::seconds(2)),
        ..Default::default()
    };
    let got = store.audit_events(&window).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[1]);
    let one = AuditFilter { limit: Some(1), ..Default::default() };
    assert_eq!(store.audit_events(&one).await.unwrap()[0].id, ids[2]);
}

async fn audit_events_page_by_offset_and_match_their_actor(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let base = now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = AuditEvent {
            id: AuditEventId::new(),
            at: base + Duration::seconds(i),
            actor_user_id: None,
            actor: if i % 2 == 0 { "ada@example.com".into() } else { "cli".into() },
            action: AuditAction::TokenCreate,
            target_type: "token".into(),
            target_id: Some(format!("t{i}")),
            workspace_id: None,
            source_addr: None,
            result: AuditResult::Ok,
            detail: None,
        };
        store.insert_audit_event(&e).await.unwrap();
        ids.push(e.id);
    }
    ids.reverse(); // newest first
    let page = |limit, offset| AuditFilter { limit: Some(limit), offset: Some(offset), ..Default::default() };
    let got = |events: Vec<AuditEvent>| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(got(store.audit_events(&page(2, 0)).await.unwrap()), ids[0..2]);
    assert_eq!(got(store.audit_events(&page(2, 2)).await.unwrap()), ids[2..4]);
    assert_eq!(got(store.audit_events(&page(2, 4)).await.unwrap()), ids[4..5]);
    assert!(store.audit_events(&page(2, 6)).await.unwrap().is_empty(), "past the end: nothing");
    assert_eq!(got(store.audit_events(&page(2, -3)).await.unwrap()), ids[0..2], "a negative offset is 0");

    let ada = AuditFilter { actor: Some("ADA@example.com".into()), ..Default::default() };
    let found = store.audit_events(&ada).await.unwrap();
    assert_eq!(got(found), vec![ids[0], ids[2], ids[4]], "whole actor, any case");
    let part = AuditFilter { actor: Some("ada".into()), ..Default::default() };
    assert!(store.audit_events(&part).await.unwrap().is_empty(), "not a substring match");
    let second_of_ada =
        AuditFilter { actor: Some("ada@example.com".into()), limit: Some(1), offset: Some(1), ..Default::default() };
    assert_eq!(got(store.audit_events(&second_of_ada).await.unwrap()), vec![ids[2]]);
}

async fn usage_events_add_to_credential_totals(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let c = f.user_credential("openai");
    store.insert_credential(&c).await.unwrap();
    let t0 = now();
    let session = TokenId::new();
    let events: Vec<UsageEvent> = (0..3)
        .map(|i| UsageEvent {
            id: UsageEventId::new(),
            at: t0 + Duration::seconds(i),
            user_id: Some(f.user.id),
            workspace_id: Some(f.workspace.id),
            credential_id: Some(c.id),
            key_source: KeySource::User,
            provider: "openai".into(),
            model: Some("gpt-4o".into()),
            input_tokens: 10 + i,
            output_tokens: 5,
            cost_nano_usd: 1_000,
            status: if i == 2 { 502 } else { 200 },
            latency_ms: 42,
            estimated: i == 2,
            session_id: (i >= 1).then_some(session),
        })
        .collect();
    store.insert_usage_events(&events).await.unwrap();
    // A sandbox session's recorded calls and tokens (what seeds its counters): the call
    // the provider failed gave its request back, its tokens count.
    assert_eq!(store.session_usage(session).await.unwrap(), (1, 16 + 17));
    assert_eq!(store.session_usage(TokenId::new()).await.unwrap(), (0, 0));
    let got = store.credential(c.id).await.unwrap();
    assert_eq!(got.usage, UsageTotals { requests: 3, input_tokens: 33, output_tokens: 15, cost_nano_usd: 3_000 });
    assert_eq!(got.last_used_at, Some(t0 + Duration::seconds(2)));
    let mine = UsageFilter { user_id: Some(f.user.id), since: Some(t0 + Duration::seconds(1)), ..Default::default() };
    let listed = store.usage_events(&mine).await.unwrap();
    assert_eq!(listed, vec![events[2].clone(), events[1].clone()]);
    let others = UsageFilter { user_id: Some(UserId::new()), ..Default::default() };
    assert!(store.usage_events(&others).await.unwrap().is_empty());

    // A batch larger than one INSERT statement, over two credentials, out of time order:
    // every event lands and each credential's totals move by exactly its share.
    let other = f.user_credential("anthropic");
    store.insert_credential(&other).await.unwrap();
    let many: Vec<UsageEvent> = (0..301)
        .map(|i| UsageEvent {
            id: UsageEventId::new(),
            at: t0 + Duration::seconds(10 + (i % 7)),
            credential_id: Some(if i % 2 == 0 { c.id } else { other.id }),
            input_tokens: 1,
            output_tokens: 2,
            ..events[0].clone()
        })
        .collect();
    store.insert_usage_events(&many).await.unwrap();
    let got = store.credential(c.id).await.unwrap();
    assert_eq!(
        got.usage,
        UsageTotals { requests: 3 + 151, input_tokens: 33 + 151, output_tokens: 15 + 302, cost_nano_usd: 154_000 }
    );
    assert_eq!(got.last_used_at, Some(t0 + Duration::seconds(16)));
    assert_eq!(store.credential(other.id).await.unwrap().usage.requests, 150);
    let theirs = UsageFilter { credential_id: Some(other.id), ..Default::default() };
    assert_eq!(store.usage_events(&theirs).await.unwrap().len(), 150);
}

async fn meta_compare_and_set(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    assert_eq!(store.meta_get("canary").await.unwrap(), None);
    assert!(store.meta_insert("canary", b"one", now()).await.unwrap());
    assert!(!store.meta_insert("canary", b"two", now()).await.unwrap());
    assert!(!store.meta_replace("canary", b"wrong", b"three", now()).await.unwrap());
    assert!(store.meta_replace("canary", b"one", b"four", now()).await.unwrap());
    assert_eq!(store.meta_get("canary").await.unwrap().as_deref(), Some(&b"four"[..]));
}

async fn settings_and_host_workspaces(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    assert_eq!(store.settings_get("policy").await.unwrap(), None);
    store.settings_put("policy", r#"{"a":1}"#, now()).await.unwrap();
    store.settings_put("policy", r#"{"a":2}"#, now()).await.unwrap();
    assert_eq!(store.settings_get("policy").await.unwrap().as_deref(), Some(r#"{"a":2}"#));

    // The change epoch starts at 0 and every bump is seen by every connection.
    assert_eq!(store.change_epoch().await.unwrap(), 0);
    assert_eq!(store.bump_change_epoch().await.unwrap(), 1);
    let other = connect(&db.location).await.unwrap();
    assert_eq!(other.bump_change_epoch().await.unwrap(), 2);
    assert_eq!(store.change_epoch().await.unwrap(), 2);

    let mut ws = workspace("host");
    ws.external_id = Some("org_42".into());
    store.insert_workspace(&ws).await.unwrap();
    assert_eq!(store.workspace_by_external_id("org_42").await.unwrap(), Some(ws.clone()));
    assert_eq!(store.workspace_by_external_id("org_43").await.unwrap(), None);
    let mut twin = workspace("twin");
    twin.external_id = Some("org_42".into());
    assert!(store.insert_workspace(&twin).await.unwrap_err().is_conflict());
    // Several workspaces without a host id are fine.
    store.insert_workspace(&workspace("a")).await.unwrap();
    store.insert_workspace(&workspace("b")).await.unwrap();
}

async fn demo_first_use_and_usage_sums(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let first = now();
    assert_eq!(store.demo_first_use(f.user.id).await.unwrap(), None);
    assert_eq!(store.record_demo_first_use(f.user.id, first).await.unwrap(), first);
    let later = first + Duration::days(3);
    assert_eq!(store.record_demo_first_use(f.user.id, later).await.unwrap(), first, "the first use is kept");
    assert_eq!(store.usage_since(f.user.id, KeySource::OperatorDemo, first).await.unwrap(), (0, 0));
    let event = |at, source: &str, tokens| UsageEvent {
        id: UsageEventId::new(),
        at,
        user_id: Some(f.user.id),
        workspace_id: Some(f.workspace.id),
        credential_id: None,
        key_source: source.parse().unwrap(),
        provider: "openai".into(),
        model: None,
        input_tokens: tokens,
        output_tokens: 1,
        cost_nano_usd: 0,
        status: 200,
        latency_ms: 1,
        estimated: false,
        session_id: None,
    };
    let events = [event(first, "operator_demo", 10), event(later, "operator_demo", 20), event(later, "platform", 40)];
    store.insert_usage_events(&events).await.unwrap();
    assert_eq!(store.usage_since(f.user.id, KeySource::OperatorDemo, first).await.unwrap(), (2, 32));
    assert_eq!(store.usage_since(f.user.id, KeySource::OperatorDemo, later).await.unwrap(), (1, 21));
    assert_eq!(store.usage_since(f.user.id, KeySource::Platform, first).await.unwrap(), (1, 41));
}

/// Timestamps at microsecond precision, which both backends keep exactly.
pub fn now() -> chrono::DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::microseconds(1)).unwrap()
}

/// SQLite plans without statistics, by how many columns of an index a query pins down; a
/// badly chosen index turned every cold call into a scan of all customers' keys. Each
/// query a caller's first call makes (and key rotation's lookup) must search an index.
#[tokio::test]
async fn sqlite_finds_a_callers_rows_through_indexes() {
    use keygate_store::Store;
    let db = TestDb::sqlite();
    let keygate_store::DatabaseLocation::Sqlite(path) = &db.location else { unreachable!() };
    let store = keygate_store::SqliteStore::open(path).await.unwrap();
    store.migrate().await.unwrap();
    let credentials = "SELECT * FROM credentials WHERE 1 = 1";
    // (query, the index that must serve it: the narrowest one)
    let queries = [
        (
            format!("{credentials} AND scope = $1 AND workspace_id = $2 AND owner_user_id = $3 AND provider = $4"),
            "credentials_owner (owner_user_id=? AND workspace_id=? AND scope=? AND provider=?)",
        ),
        (
            format!("{credentials} AND scope = $1 AND workspace_id = $2 AND provider = $3 AND status = $4"),
            "credentials_workspace_scope (workspace_id=? AND scope=? AND provider=? AND status=?)",
        ),
        (
            format!("{credentials} AND scope = $1 AND provider = $2 AND status = $3"),
            "credentials_scope_provider (scope=? AND provider=? AND status=?)",
        ),
        (format!("{credentials} AND scope = $1 AND owner_user_id = $2"), "credentials_owner (owner_user_id=?)"),
        (format!("{credentials} AND data_key_id = $1"), "credentials_data_key (data_key_id=?)"),
        ("SELECT * FROM api_tokens WHERE public_id = $1".into(), "(public_id=?)"),
        ("SELECT * FROM memberships WHERE workspace_id = $1 AND user_id = $2".into(), "(workspace_id=? AND user_id=?)"),
        ("SELECT * FROM memberships WHERE user_id = $1".into(), "memberships_user (user_id=?)"),
        ("SELECT first_used_at FROM demo_first_use WHERE user_id = $1".into(), "(user_id=?)"),
        (
            "SELECT COUNT(*) FROM usage_events WHERE user_id = $1 AND key_source = $2 AND at >= $3".into(),
            "usage_events_user_source_at (user_id=? AND key_source=? AND at>?)",
        ),
        ("SELECT * FROM data_keys WHERE owner = $1".into(), "(owner=?)"),
        ("SELECT COUNT(*) FROM usage_events WHERE session_id = $1".into(), "usage_events_session (session_id=?)"),
    ];
    for (sql, index) in queries {
        let plan = store.query_plan(&sql).await.unwrap();
        assert!(plan.starts_with("SEARCH") && plan.contains(index), "{sql}\n  is planned as {plan}, not with {index}");
    }
    // A token's cold lookup joins four tables, each through an index, none scanned.
    let plan = store.query_plan(keygate_store::TOKEN_PRINCIPAL_SQL).await.unwrap();
    assert!(
        plan.lines().all(|step| step.starts_with("SEARCH") || step.starts_with("USE TEMP B-TREE"))
            && plan.contains("(public_id=?)")
            && plan.contains("memberships_user (user_id=?)"),
        "the token lookup is planned as\n{plan}"
    );
}
