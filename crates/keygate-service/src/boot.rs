//! The start-up check. At first start a canary is sealed under the primary master key;
//! at every later start it must open, so a wrong master key fails at once with a message
//! that says so, instead of later on every credential. Every master key that still wraps
//! a data key must be in the keyring.

use crate::{now, ServiceError, ServiceResult};
use keygate_store::Store;
use keygate_vault::keyring::sealed_by;
use keygate_vault::{KeyEncryptionKeys, VaultError, CANARY_CONTEXT};

/// The meta key the canary is stored under.
pub const CANARY_META_KEY: &str = "kek_canary";
const CANARY_PLAINTEXT: &[u8] = b"keygate master key canary v1";

/// What the start-up check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReport {
    /// The canary was sealed just now: this is the database's first start.
    pub first_start: bool,
    /// Master keys other than the primary still wrap data keys: `keygate master-key
    /// rotate` would move them to the primary.
    pub rotation_pending: Vec<String>,
}

/// Seals the canary at first start, or checks it; then checks that every master key in
/// use is available.
pub async fn check(store: &dyn Store, keks: &dyn KeyEncryptionKeys) -> ServiceResult<BootReport> {
    let first_start = match store.meta_get(CANARY_META_KEY).await? {
        Some(sealed) => {
            verify_canary(keks, &sealed).await?;
            false
        }
        None => {
            let sealed = keks.seal(CANARY_PLAINTEXT, CANARY_CONTEXT).await?;
            if store.meta_insert(CANARY_META_KEY, &sealed, now()).await? {
                true
            } else {
                // Another replica sealed it first: check theirs.
                let theirs = store.meta_get(CANARY_META_KEY).await?.unwrap_or_default();
                verify_canary(keks, &theirs).await?;
                false
            }
        }
    };
    let rotation_pending = master_keys_in_use(store, keks).await?;
    Ok(BootReport { first_start, rotation_pending })
}

/// Checks that every master key still wrapping a data key is in the keyring; answers the
/// ones other than the primary (a rotation would move them). `keygate serve` refuses to
/// start, and `keygate doctor` is red, on the same failure.
pub async fn master_keys_in_use(store: &dyn Store, keks: &dyn KeyEncryptionKeys) -> ServiceResult<Vec<String>> {
    let in_use = store.kek_ids_in_use().await?;
    let available: Vec<String> = keks.available().into_iter().map(|(id, _)| id.to_string()).collect();
    let missing: Vec<&String> = in_use.iter().filter(|id| !available.contains(id)).collect();
    if !missing.is_empty() {
        return Err(ServiceError::MasterKeyStillInUse(format!(
            "data keys are still wrapped by master key(s) {} which are not in the keyring (it has {}); \
             put them back in KEYGATE_MASTER_KEYS after the new primary and run `keygate master-key rotate` \
             before removing them",
            join(&missing),
            describe(keks)
        )));
    }
    let primary = keks.primary_id().to_string();
    Ok(in_use.into_iter().filter(|id| *id != primary).collect())
}

/// Opens the canary; a failure becomes `master_key_mismatch` with what to do.
pub async fn verify_canary(keks: &dyn KeyEncryptionKeys, sealed: &[u8]) -> ServiceResult<()> {
    match keks.open(sealed, CANARY_CONTEXT).await {
        Ok(plain) if plain.as_slice() == CANARY_PLAINTEXT => Ok(()),
        Ok(_) => Err(ServiceError::MasterKeyMismatch("the master-key canary holds unexpected content".into())),
        Err(VaultError::UnknownKey { id }) => Err(ServiceError::MasterKeyMismatch(format!(
            "the master key does not match this database: it was sealed with master key {id}, \
             but the keyring has {}; set KEYGATE_MASTER_KEY (or KEYGATE_MASTER_KEYS / KEYGATE_MASTER_KEY_FILE) \
             to the key this database was created with",
            describe(keks)
        ))),
        Err(other) => Err(ServiceError::MasterKeyMismatch(format!(
            "the master key does not match this database: the canary sealed with master key {} does not open ({other})",
            sealed_by(sealed).map(|id| id.to_string()).unwrap_or_else(|_| "?".into())
        ))),
    }
}

/// Reseals the canary under the primary key if another key sealed it; returns whether it did.
pub async fn reseal_canary(store: &dyn Store, keks: &dyn KeyEncryptionKeys) -> ServiceResult<bool> {
    let Some(sealed) = store.meta_get(CANARY_META_KEY).await? else {
        return Ok(false);
    };
    if sealed_by(&sealed)? == keks.primary_id() {
        return Ok(false);
    }
    verify_canary(keks, &sealed).await?;
    let fresh = keks.seal(CANARY_PLAINTEXT, CANARY_CONTEXT).await?;
    Ok(store.meta_replace(CANARY_META_KEY, &sealed, &fresh, now()).await?)
}

/// `a1b2… (label primary), c3d4… (label old)`.
pub fn describe(keks: &dyn KeyEncryptionKeys) -> String {
    let keys: Vec<String> = keks.available().into_iter().map(|(id, label)| format!("{id} (`{label}`)")).collect();
    keys.join(", ")
}

fn join(ids: &[&String]) -> String {
    ids.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}
