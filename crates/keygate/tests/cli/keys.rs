//! `keygate keygen`, `keygate master-key rotate`, and `doctor` naming what it cannot open.

use crate::support::*;
use keygate_core::Credential;
use keygate_service::keys::KeyVault;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use keygate_vault::{KeyEncryptionKeys, Keyring, SecretText};
use std::sync::Arc;

#[test]
fn keygen_prints_a_fresh_key_on_its_last_line() {
    let db = TestDb::sqlite();
    let (ok, first, _) = run(keygate(&db, &[]), &["keygen"]);
    assert!(ok);
    let first = first.lines().last().unwrap().to_owned();
    assert_eq!(first.len(), 64);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, second, _) = run(keygate(&db, &[]), &["keygen", "--label", "k2"]);
    let second = second.lines().last().unwrap();
    assert!(second.starts_with("k2:") && second.len() == 67 && !second.ends_with(&first));
}

both_backends!(
    rotation_lets_the_old_master_key_be_dropped,
    doctor_names_an_undecryptable_credential_by_id,
    doctor_names_a_credential_whose_replaced_secret_was_written_back,
);

async fn rotation_lets_the_old_master_key_be_dropped(db: TestDb) {
    let credentials = seed(&db, &format!("a:{KEY_A}"), 3).await;
    let both = format!("b:{KEY_B},a:{KEY_A}");
    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_MASTER_KEYS", &both)]), &["doctor"]);
    assert!(ok && stdout.contains("master-key rotate"), "doctor suggests rotating:\n{stdout}");
    // Dropping `a` before rotating is refused.
    let (ok, _, stderr) = run(keygate(&db, &[("KEYGATE_MASTER_KEYS", &format!("b:{KEY_B}"))]), &["serve"]);
    assert!(!ok && stderr.contains("master_key_mismatch"), "{stderr}");

    let (ok, stdout, stderr) = run(keygate(&db, &[("KEYGATE_MASTER_KEYS", &both)]), &["master-key", "rotate"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("rotated 3 data key(s)"), "{stdout}");
    assert!(stdout.contains("master key `a`") && stdout.contains("can be removed"), "{stdout}");
    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_MASTER_KEYS", &both)]), &["master-key", "rotate"]);
    assert!(ok && stdout.contains("rotated 0 data key(s)"), "idempotent: {stdout}");

    for vars in [[("KEYGATE_MASTER_KEYS", format!("b:{KEY_B}"))], [("KEYGATE_MASTER_KEY", KEY_B.to_owned())]] {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (ok, stdout, _) = run(keygate(&db, &vars), &["doctor"]);
        assert!(ok, "{stdout}");
        assert!(stdout.contains(&format!("{} credential(s) open", credentials.len())), "{stdout}");
    }
}

async fn doctor_names_an_undecryptable_credential_by_id(db: TestDb) {
    let credentials = seed(&db, &format!("a:{KEY_A}"), 2).await;
    let store = store(&db).await;
    let mut broken = store.credential(credentials[0].id).await.unwrap();
    let sealed = broken.sealed.clone();
    broken.sealed[20] ^= 0xff;
    store.update_credential(&broken, &sealed, None).await.unwrap();
    store.close().await;

    let (ok, stdout, stderr) = run(keygate(&db, &[("KEYGATE_MASTER_KEY", KEY_A)]), &["doctor"]);
    assert!(!ok, "doctor exits non-zero:\n{stdout}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(fail.contains(&credentials[0].id.to_string()), "{fail}");
    assert!(!stdout.contains(&credentials[1].id.to_string()), "only the broken one is named");
    assert!(stdout.contains("1 problem(s) found"));
    assert!(!stdout.contains(CANARY_SECRET) && !stderr.contains(CANARY_SECRET));
}

/// A key's secret is replaced (the next secret version, sealed, compare-and-set, as the
/// keys API does it); then an older copy of the row is written back. Doctor is green
/// before, and names the credential after.
async fn doctor_names_a_credential_whose_replaced_secret_was_written_back(db: TestDb) {
    let credentials = seed(&db, &format!("a:{KEY_A}"), 2).await;
    let replacement = "sk-proj-CANARY-cli-replacement-0123456789";
    let store = store(&db).await;
    let keks: Arc<dyn KeyEncryptionKeys> = Arc::new(Keyring::from_list("seed", &format!("a:{KEY_A}")).unwrap());
    let vault = KeyVault::new(store.clone(), keks);
    let old = store.credential(credentials[0].id).await.unwrap();
    let mut new = Credential { secret_version: old.secret_version + 1, ..old.clone() };
    new.sealed = vault.seal_credential(&new, &SecretText::new(replacement.into())).await.unwrap().0;
    store.update_credential(&new, &old.sealed, None).await.unwrap();
    store.close().await;
    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_MASTER_KEY", KEY_A)]), &["doctor"]);
    assert!(ok && stdout.contains("2 credential(s) open"), "{stdout}");

    let store = self::store(&db).await;
    store.update_credential(&old, &new.sealed, None).await.unwrap();
    store.close().await;
    let (ok, stdout, stderr) = run(keygate(&db, &[("KEYGATE_MASTER_KEY", KEY_A)]), &["doctor"]);
    assert!(!ok, "doctor exits non-zero:\n{stdout}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(fail.contains(&credentials[0].id.to_string()) && fail.contains("secret version 2"), "{fail}");
    assert!(!stdout.contains(&credentials[1].id.to_string()), "only the rolled-back one is named");
    for secret in [CANARY_SECRET, replacement] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}
