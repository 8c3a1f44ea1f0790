//! Service-level tests against real stores (SQLite and PostgreSQL) and real keyrings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keygate_core::*;
use keygate_service::doctor::{self, Status};
use keygate_service::keys::KeyVault;
use keygate_service::rotation::{self, Observer, Quiet, Step};
use keygate_service::{accounts, audit::Actor, boot, now, ServiceError};
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, connect, Store};
use keygate_vault::{KeyEncryptionKeys, Keyring, SecretText};
use std::sync::Arc;

const KEY_A: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafa0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
const KEY_B: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
mod limits;

const CANARY_SECRET: &str = "sk-ant-api03-CANARY-service-0123456789";

both_backends!(
    credentials_round_trip_and_stay_bound_to_their_row,
    a_deleted_workspaces_credentials_can_never_be_opened,
    boot_seals_a_canary_once_and_refuses_another_master_key,
    rotation_lets_the_old_key_be_dropped,
    an_interrupted_rotation_converges_when_run_again,
    concurrent_rotations_converge,
    doctor_is_green_then_names_an_undecryptable_credential,
    doctor_is_red_with_another_master_key,
    doctor_is_red_whenever_serve_would_refuse,
    admins_are_created_once_with_a_hashed_password,
);

fn keyring(spec: &str) -> Arc<dyn KeyEncryptionKeys> {
    Arc::new(Keyring::from_list("test", spec).unwrap())
}

fn only_a() -> Arc<dyn KeyEncryptionKeys> {
    keyring(&format!("a:{KEY_A}"))
}

struct World {
    store: Arc<dyn Store>,
    workspaces: Vec<Workspace>,
    credentials: Vec<Credential>,
}

/// `n` workspaces, each with one member holding an OpenAI key, plus an operator key.
async fn world(db: &TestDb, keks: Arc<dyn KeyEncryptionKeys>, n: usize) -> World {
    let store = connect(&db.location).await.unwrap();
    boot::check(&*store, &*keks).await.unwrap();
    let vault = KeyVault::new(store.clone(), keks);
    let mut workspaces = Vec::new();
    let mut credentials = Vec::new();
    for i in 0..n {
        let ws = Workspace {
            id: WorkspaceId::new(),
            name: format!("ws{i}"),
            status: WorkspaceStatus::Active,
            personal: false,
            external_id: None,
            created_at: now(),
            updated_at: now(),
        };
        let user = User {
            id: UserId::new(),
            email: Some(format!("u{i}-{}@example.com", ws.id)),
            external_id: None,
            tier: "community".into(),
            super_admin: false,
            created_at: now(),
            updated_at: now(),
        };
        store.provision_user(&user, None, &ws, Role::Member).await.unwrap();
        credentials
            .push(store_credential(&store, &vault, CredentialScope::User, Some(ws.id), Some(user.id), "openai").await);
        workspaces.push(ws);
    }
    credentials.push(store_credential(&store, &vault, CredentialScope::Operator, None, None, "anthropic").await);
    World { store, workspaces, credentials }
}

async fn store_credential(
    store: &Arc<dyn Store>,
    vault: &KeyVault,
    scope: CredentialScope,
    workspace_id: Option<WorkspaceId>,
    owner_user_id: Option<UserId>,
    provider: &str,
) -> Credential {
    let mut c = Credential {
        id: CredentialId::new(),
        scope,
        workspace_id,
        owner_user_id,
        provider: provider.into(),
        name: "key".into(),
        hint: "…6789".into(),
        model: None,
        status: CredentialStatus::Active,
        validity: Validity::Unverified,
        validity_detail: None,
        validity_checked_at: None,
        operator_shared: scope == CredentialScope::Operator,
        sealed: Vec::new(),
        secret_version: 1,
        data_key_id: DataKeyId::new(),
        created_at: now(),
        updated_at: now(),
        last_used_at: None,
        usage: UsageTotals::default(),
    };
    let (sealed, dek) = vault.seal_credential(&c, &SecretText::new(CANARY_SECRET.into())).await.unwrap();
    c.sealed = sealed;
    c.data_key_id = dek;
    store.insert_credential(&c).await.unwrap();
    c
}

async fn assert_all_open(store: &Arc<dyn Store>, keks: Arc<dyn KeyEncryptionKeys>, credentials: &[Credential]) {
    let vault = KeyVault::new(store.clone(), keks);
    for c in credentials {
        let stored = store.credential(c.id).await.unwrap();
        let secret = vault.open_credential(&stored).await.unwrap_or_else(|e| panic!("{} does not open: {e}", c.id));
        assert_eq!(secret.expose(), CANARY_SECRET);
    }
}

async fn credentials_round_trip_and_stay_bound_to_their_row(db: TestDb) {
    let keks = only_a();
    let w = world(&db, keks.clone(), 2).await;
    assert_all_open(&w.store, keks.clone(), &w.credentials).await;
    let vault = KeyVault::new(w.store.clone(), keks);
    // Copy workspace 0's ciphertext into workspace 1's row: it must not open there.
    let mut stolen = w.credentials[1].clone();
    stolen.sealed = w.credentials[0].sealed.clone();
    let err = vault.open_credential(&stolen).await.unwrap_err();
    assert_eq!(err.code(), "credential_undecryptable");
    // Same workspace data key, another provider: fails too.
    let mut relabelled = w.credentials[0].clone();
    relabelled.provider = "anthropic".into();
    assert!(vault.open_credential(&relabelled).await.is_err());
    // Error messages never carry the secret.
    assert!(!err.to_string().contains(CANARY_SECRET));
}

async fn a_deleted_workspaces_credentials_can_never_be_opened(db: TestDb) {
    let keks = only_a();
    let w = world(&db, keks.clone(), 2).await;
    let vault = KeyVault::new(w.store.clone(), keks.clone());
    let doomed = &w.workspaces[0];
    vault.open_credential(&w.credentials[0]).await.unwrap(); // warm the cache
    w.store.set_workspace_status(doomed.id, WorkspaceStatus::Deleted, now()).await.unwrap();
    vault.destroy_data_key(KeyOwner::Workspace(doomed.id)).await.unwrap();
    let stored = w.store.credential(w.credentials[0].id).await.unwrap();
    assert!(!stored.sealed.is_empty(), "the ciphertext is still there");
    let err = vault.open_credential(&stored).await.unwrap_err();
    assert!(err.to_string().contains("destroyed"), "{err}");
    // A fresh process with the same keyring cannot open it either.
    let fresh = KeyVault::new(w.store.clone(), keks.clone());
    assert!(fresh.open_credential(&stored).await.is_err());
    // No new data key can be made for a deleted owner.
    assert!(fresh.ensure_data_key(KeyOwner::Workspace(doomed.id)).await.is_err());
    // The other workspace is untouched.
    assert_all_open(&w.store, keks, &w.credentials[1..]).await;
}

async fn boot_seals_a_canary_once_and_refuses_another_master_key(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let a = only_a();
    assert!(boot::check(&*store, &*a).await.unwrap().first_start);
    assert!(!boot::check(&*store, &*a).await.unwrap().first_start);
    let b = keyring(&format!("b:{KEY_B}"));
    let err = boot::check(&*store, &*b).await.unwrap_err();
    assert_eq!(err.code(), "master_key_mismatch");
    let message = err.to_string();
    assert!(message.contains("does not match this database"), "{message}");
    assert!(message.contains("KEYGATE_MASTER_KEY"), "{message}");
    assert!(!message.contains(KEY_A) && !message.contains(KEY_B), "no key material in errors");
}

async fn rotation_lets_the_old_key_be_dropped(db: TestDb) {
    let w = world(&db, only_a(), 3).await;
    let both = keyring(&format!("b:{KEY_B},a:{KEY_A}"));
    assert_eq!(boot::check(&*w.store, &*both).await.unwrap().rotation_pending.len(), 1);
    // Dropping `a` before rotating is refused by name.
    let only_b = keyring(&format!("b:{KEY_B}"));
    let early = boot::check(&*w.store, &*only_b).await.unwrap_err();
    assert!(matches!(early.code(), "master_key_mismatch" | "master_key_still_in_use"), "{early}");

    let report = rotation::rotate(&*w.store, &*both, &mut Quiet).await.unwrap();
    assert_eq!((report.total, report.rewrapped), (4, 4)); // 3 workspaces + operator
    assert!(report.canary_resealed);
    let again = rotation::rotate(&*w.store, &*both, &mut Quiet).await.unwrap();
    assert_eq!((again.total, again.rewrapped, again.canary_resealed), (0, 0, false), "idempotent");

    let report = boot::check(&*w.store, &*only_b).await.unwrap();
    assert!(report.rotation_pending.is_empty());
    assert_all_open(&w.store, only_b, &w.credentials).await;
}

/// Stops the rotation at one step, as a crash there would.
struct CrashAt(Step);
impl Observer for CrashAt {
    fn step(&mut self, step: Step) -> Result<(), String> {
        if step == self.0 {
            Err(format!("simulated crash at {step:?}"))
        } else {
            Ok(())
        }
    }
}

async fn an_interrupted_rotation_converges_when_run_again(db: TestDb) {
    let w = world(&db, only_a(), 3).await;
    let both = keyring(&format!("b:{KEY_B},a:{KEY_A}"));
    let primary = both.primary_id().to_string();
    let stale = |store: Arc<dyn Store>, primary: String| async move {
        store.data_keys().await.unwrap().into_iter().filter(|k| k.kek_id != primary).count() as u64
    };
    // Crash alternately just before and just after a row's commit, each run starting
    // from what the previous crash left, until every row has been through both.
    let mut runs = 0;
    loop {
        let remaining = stale(w.store.clone(), primary.clone()).await;
        if remaining == 0 {
            break;
        }
        let point = if runs % 2 == 0 {
            Step::BeforeCommit { index: 1, total: remaining }
        } else {
            Step::Committed { index: 1, total: remaining }
        };
        let err = rotation::rotate(&*w.store, &*both, &mut CrashAt(point)).await.unwrap_err();
        assert!(matches!(err, ServiceError::Interrupted(_)), "{err}");
        let after = stale(w.store.clone(), primary.clone()).await;
        let expected = if matches!(point, Step::BeforeCommit { .. }) { remaining } else { remaining - 1 };
        assert_eq!(after, expected, "a crash at {point:?} left the wrong number of rows");
        // Whatever a crash leaves, everything still opens while both keys are present.
        assert_all_open(&w.store, both.clone(), &w.credentials).await;
        runs += 1;
    }
    assert_eq!(runs, 8, "4 rows, each crashed before and after its commit");
    // The rows are done but the canary is still under `a`: the final run moves it.
    let report = rotation::rotate(&*w.store, &*both, &mut Quiet).await.unwrap();
    assert_eq!((report.total, report.canary_resealed), (0, true));
    let only_b = keyring(&format!("b:{KEY_B}"));
    boot::check(&*w.store, &*only_b).await.unwrap();
    assert_all_open(&w.store, only_b, &w.credentials).await;
}

async fn concurrent_rotations_converge(db: TestDb) {
    let w = world(&db, only_a(), 6).await;
    let both = keyring(&format!("b:{KEY_B},a:{KEY_A}"));
    let (s1, s2, k1, k2) = (w.store.clone(), w.store.clone(), both.clone(), both.clone());
    let one = tokio::spawn(async move { rotation::rotate(&*s1, &*k1, &mut Quiet).await });
    let two = tokio::spawn(async move { rotation::rotate(&*s2, &*k2, &mut Quiet).await });
    let (r1, r2) = (one.await.unwrap().unwrap(), two.await.unwrap().unwrap());
    // Every stale key was rewrapped exactly once, by one run or the other.
    assert_eq!(r1.rewrapped + r2.rewrapped, 7, "{r1:?} {r2:?}");
    let only_b = keyring(&format!("b:{KEY_B}"));
    boot::check(&*w.store, &*only_b).await.unwrap();
    assert_all_open(&w.store, only_b, &w.credentials).await;
}

async fn doctor_is_green_then_names_an_undecryptable_credential(db: TestDb) {
    let keks = only_a();
    let w = world(&db, keks.clone(), 2).await;
    let checks = doctor::run(w.store.clone(), keks.clone()).await;
    assert!(checks.iter().all(|c| c.status != Status::Fail), "{checks:#?}");

    let mut broken = w.store.credential(w.credentials[1].id).await.unwrap();
    let sealed = broken.sealed.clone();
    let last = broken.sealed.len() - 1;
    broken.sealed[last] ^= 0x01;
    w.store.update_credential(&broken, &sealed, None).await.unwrap();
    let checks = doctor::run(w.store.clone(), keks).await;
    let failures: Vec<_> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    assert_eq!(failures.len(), 1, "{checks:#?}");
    assert!(failures[0].detail.contains(&broken.id.to_string()), "{:?}", failures[0]);
    assert!(!format!("{checks:?}").contains(CANARY_SECRET));
}

/// A data key whose row names a master key the keyring lacks makes `serve` refuse to
/// start; doctor must say so too, not stay green because the wrapped bytes still open.
async fn doctor_is_red_whenever_serve_would_refuse(db: TestDb) {
    let keks = only_a();
    let w = world(&db, keks.clone(), 1).await;
    let record = w.store.data_keys().await.unwrap().into_iter().find(|r| r.wrapped.is_some()).unwrap();
    let missing = "00112233445566ff";
    let moved = w
        .store
        .rewrap_data_key(record.id, record.version, missing, record.wrapped.as_deref().unwrap(), now())
        .await
        .unwrap();
    assert!(moved);
    let refused = boot::check(&*w.store, &*keks).await.unwrap_err();
    assert_eq!(refused.code(), "master_key_still_in_use");
    let checks = doctor::run(w.store.clone(), keks).await;
    let failure = checks.iter().find(|c| c.status == Status::Fail).unwrap_or_else(|| panic!("{checks:#?}"));
    assert!(failure.detail.contains("master_key_still_in_use") && failure.detail.contains(missing), "{failure:?}");

    // A stored policy that does not parse stops `serve` (Services::new) too.
    w.store.settings_put("policy", "{not json", now()).await.unwrap();
    let checks = doctor::run(w.store.clone(), only_a()).await;
    assert!(checks.iter().any(|c| c.name == "settings" && c.status == Status::Fail), "{checks:#?}");
}

async fn doctor_is_red_with_another_master_key(db: TestDb) {
    let w = world(&db, only_a(), 1).await;
    let checks = doctor::run(w.store.clone(), keyring(&format!("b:{KEY_B}"))).await;
    let failure = checks.iter().find(|c| c.status == Status::Fail).expect("a failure");
    assert_eq!(failure.name, "master key");
    assert!(failure.detail.contains("master_key_mismatch"), "{failure:?}");
}

async fn admins_are_created_once_with_a_hashed_password(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let password = SecretText::new("correct horse battery staple".into());
    let admin = accounts::create_admin(&*store, "  Admin@Example.com ", &password, &Actor::cli()).await.unwrap();
    assert!(admin.super_admin);
    assert_eq!(admin.email.as_deref(), Some("admin@example.com"));
    let hash = store.password_hash(admin.id).await.unwrap().unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("horse"));
    assert!(accounts::verify_password(&*store, Some(admin.id), &password).await.unwrap());
    assert!(!accounts::verify_password(&*store, Some(admin.id), &SecretText::new("wrong password!".into()))
        .await
        .unwrap());
    assert_eq!(store.memberships_of_user(admin.id).await.unwrap()[0].role, Role::Owner);

    let again = accounts::create_admin(&*store, "admin@example.com", &password, &Actor::cli()).await.unwrap_err();
    assert_eq!(again.code(), "conflict");
    let short = accounts::create_admin(&*store, "b@example.com", &SecretText::new("short".into()), &Actor::cli())
        .await
        .unwrap_err();
    assert_eq!(short.code(), "invalid_request");
    assert!(store.user_by_email("b@example.com").await.unwrap().is_none(), "nothing half-written");
    let bad = accounts::create_admin(&*store, "not-an-email", &password, &Actor::cli()).await.unwrap_err();
    assert!(bad.to_string().contains("not an email address"));
    let events = store.audit_events(&Default::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, keygate_core::AuditAction::UserCreate);
    assert!(!format!("{events:?}").contains("horse"));
}
