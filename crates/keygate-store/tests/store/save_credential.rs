//! `Store::save_credential`: one transaction that takes the owner's lock, so concurrent
//! saves can neither pass the per-user cap together nor both fill one provider's slot,
//! and a failure anywhere leaves nothing behind.

use crate::fixtures::Fixture;
use crate::now;
use keygate_core::*;
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, connect, AuditFilter, CredentialFilter, Store, StoreError};
use std::sync::Arc;

both_backends!(
    concurrent_saves_cannot_pass_the_cap_together,
    concurrent_saves_for_one_provider_fill_its_slot_once,
    a_failed_audit_insert_leaves_nothing_behind,
    a_replacement_deletes_the_old_key_and_writes_the_audit_row,
);

fn audit_for(c: &Credential, action: &str) -> AuditEvent {
    AuditEvent {
        id: AuditEventId::new(),
        at: now(),
        actor_user_id: c.owner_user_id,
        actor: "test".into(),
        action: action.parse().unwrap(),
        target_type: "credential".into(),
        target_id: Some(c.id.to_string()),
        workspace_id: c.workspace_id,
        source_addr: None,
        result: AuditResult::Ok,
        detail: None,
    }
}

/// Runs one `save_credential(c, replaces, max)` per credential, all at once.
async fn save_all(
    store: &Arc<dyn Store>,
    credentials: Vec<Credential>,
    replaces: Option<CredentialId>,
    max: Option<u32>,
) -> Vec<Result<(), StoreError>> {
    let saves: Vec<_> = credentials
        .into_iter()
        .map(|c| {
            let store = store.clone();
            tokio::spawn(
                async move { store.save_credential(&c, replaces, max, &audit_for(&c, "credential.create")).await },
            )
        })
        .collect();
    let mut results = Vec::new();
    for save in saves {
        results.push(save.await.unwrap());
    }
    results
}

async fn active(store: &dyn Store, f: &Fixture, provider: &str) -> Vec<Credential> {
    let filter = CredentialFilter {
        owner_user_id: Some(f.user.id),
        provider: Some(provider.into()),
        status: Some(CredentialStatus::Active),
        ..Default::default()
    };
    store.credentials(&filter).await.unwrap()
}

async fn audit_rows(store: &dyn Store, target: CredentialId) -> usize {
    let filter = AuditFilter { target_id: Some(target.to_string()), ..Default::default() };
    store.audit_events(&filter).await.unwrap().len()
}

async fn concurrent_saves_cannot_pass_the_cap_together(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let keys: Vec<Credential> = (0..9).map(|i| f.user_credential(&format!("provider-{i}"))).collect();
    let results = save_all(&store, keys, None, Some(5)).await;

    let saved = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(saved, 5, "{results:?}");
    assert_eq!(refused.len(), 4);
    for err in refused {
        assert!(matches!(err, StoreError::LimitReached { held: 5, max: 5 }), "{err:?}");
        assert_eq!(err.to_string(), "the user already holds 5 keys, the most allowed (5)");
    }
    let held = store.credentials(&CredentialFilter { owner_user_id: Some(f.user.id), ..Default::default() }).await;
    assert_eq!(held.unwrap().len(), 5);
    let audited = AuditFilter { action: Some(AuditAction::CredentialCreate), ..Default::default() };
    assert_eq!(store.audit_events(&audited).await.unwrap().len(), 5, "an audit row for each saved key, none other");
}

async fn concurrent_saves_for_one_provider_fill_its_slot_once(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let keys: Vec<Credential> = (0..8).map(|_| f.user_credential("openai")).collect();
    let results = save_all(&store, keys, None, Some(5)).await;

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        match err {
            StoreError::Changed { .. } => {}
            StoreError::Conflict(what) => assert!(!what.contains("UNIQUE") && !what.contains("credentials"), "{what}"),
            other => panic!("expected Changed or Conflict, got {other:?}"),
        }
    }
    assert_eq!(active(&*store, &f, "openai").await.len(), 1);
}

async fn a_failed_audit_insert_leaves_nothing_behind(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let old = f.user_credential("openai");
    let old_audit = audit_for(&old, "credential.create");
    store.save_credential(&old, None, Some(5), &old_audit).await.unwrap();

    // The replacement's audit row reuses an existing id: its insert fails last.
    let new = f.user_credential("openai");
    let clash = AuditEvent { id: old_audit.id, ..audit_for(&new, "credential.replace") };
    let err = store.save_credential(&new, Some(old.id), Some(5), &clash).await.unwrap_err();
    assert_eq!(err.to_string(), "conflict: an audit event with this id already exists");
    assert!(store.credential(new.id).await.unwrap_err().is_not_found(), "the new key was not kept");
    assert_eq!(store.credential(old.id).await.unwrap(), old, "the replaced key is still there");
    assert_eq!(audit_rows(&*store, new.id).await, 0);
}

async fn a_replacement_deletes_the_old_key_and_writes_the_audit_row(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let old = f.user_credential("openai");
    store.save_credential(&old, None, Some(1), &audit_for(&old, "credential.create")).await.unwrap();

    // At the cap, a replacement still goes through: the old key is gone first.
    let new = f.user_credential("openai");
    store.save_credential(&new, Some(old.id), Some(1), &audit_for(&new, "credential.replace")).await.unwrap();
    assert!(store.credential(old.id).await.unwrap_err().is_not_found());
    assert_eq!(active(&*store, &f, "openai").await, vec![new.clone()]);
    assert_eq!(audit_rows(&*store, new.id).await, 1);

    // A replacement of a key that is no longer the active one writes nothing, and
    // neither does a new key where one is active.
    let late = f.user_credential("openai");
    for replaces in [Some(old.id), None] {
        let err = store.save_credential(&late, replaces, None, &audit_for(&late, "credential.replace")).await;
        assert!(matches!(err, Err(StoreError::Changed { .. })), "{err:?}");
    }
    assert!(store.credential(late.id).await.unwrap_err().is_not_found());
    assert_eq!(audit_rows(&*store, late.id).await, 0);
    assert_eq!(active(&*store, &f, "openai").await, vec![new.clone()]);

    // Workspace and operator keys lock their own owners; the operator's shared and
    // platform keys are separate slots, and the cap does not apply to them.
    let shared = f.operator_credential("openai");
    let platform = Credential { operator_shared: false, ..f.operator_credential("openai") };
    let team = f.workspace_credential("openai");
    let results = save_all(&store, vec![shared, platform, team], None, Some(0)).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let team_2 = f.workspace_credential("openai");
    let team_key = store
        .credentials(&CredentialFilter { scope: Some(CredentialScope::Workspace), ..Default::default() })
        .await
        .unwrap();
    store
        .save_credential(&team_2, Some(team_key[0].id), None, &audit_for(&team_2, "credential.replace"))
        .await
        .unwrap();
}
