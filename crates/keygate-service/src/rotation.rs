//! Online master-key rotation: every data key not wrapped by the primary master key is
//! unwrapped with its old key and rewrapped with the primary, one row at a time with a
//! compare-and-set on the row's version. A crash at any point leaves every row either
//! old or new, both readable while the old key is in the keyring, so running the
//! rotation again finishes the job; running it when nothing is left does nothing.
//! Credentials are untouched: they are sealed under data keys, which do not change.

use crate::{boot, now, ServiceError, ServiceResult};
use keygate_core::{DataKeyRecord, KeyOwner};
use keygate_store::Store;
use keygate_vault::{DataKeyContext, KeyEncryptionKeys};

/// Where a rotation is, for progress bars and for tests that interrupt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// About to write the rewrapped key of row `index` (of `total`).
    BeforeCommit { index: u64, total: u64 },
    /// Row `index` is committed (or was already rewrapped by someone else).
    Committed { index: u64, total: u64 },
}

/// Follows a rotation. Returning an error stops it there, as a crash would.
pub trait Observer: Send {
    fn started(&mut self, _total: u64) {}
    fn step(&mut self, _step: Step) -> Result<(), String> {
        Ok(())
    }
}

/// An observer that watches nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Data keys found wrapped by another key.
    pub total: u64,
    /// Rewrapped by this run.
    pub rewrapped: u64,
    /// Rewrapped concurrently by another run.
    pub by_others: u64,
    /// The boot canary was moved to the primary key.
    pub canary_resealed: bool,
}

/// How often one row is retried when another writer keeps changing it.
const MAX_ATTEMPTS: usize = 5;

pub async fn rotate(
    store: &dyn Store,
    keks: &dyn KeyEncryptionKeys,
    observer: &mut dyn Observer,
) -> ServiceResult<RotationReport> {
    // Refuse to start with a keyring that cannot open what is stored.
    boot::check(store, keks).await?;
    let primary = keks.primary_id().to_string();
    let stale: Vec<DataKeyRecord> =
        store.data_keys().await?.into_iter().filter(|k| k.wrapped.is_some() && k.kek_id != primary).collect();
    let total = stale.len() as u64;
    observer.started(total);
    let mut report = RotationReport { total, ..Default::default() };
    for (i, record) in stale.into_iter().enumerate() {
        let index = i as u64 + 1;
        if rewrap_one(store, keks, &primary, record, index, total, observer).await? {
            report.rewrapped += 1;
        } else {
            report.by_others += 1;
        }
        observer.step(Step::Committed { index, total }).map_err(ServiceError::Interrupted)?;
    }
    report.canary_resealed = boot::reseal_canary(store, keks).await?;
    Ok(report)
}

/// Rewraps one row; returns `false` if another writer already moved it to the primary.
async fn rewrap_one(
    store: &dyn Store,
    keks: &dyn KeyEncryptionKeys,
    primary: &str,
    mut record: DataKeyRecord,
    index: u64,
    total: u64,
    observer: &mut dyn Observer,
) -> ServiceResult<bool> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(wrapped) = record.wrapped.as_deref() else {
            return Ok(false);
        };
        if record.kek_id == primary {
            return Ok(false);
        }
        let context = context_bytes(record.owner, &record);
        let dek = keks.open(wrapped, &context).await?;
        let rewrapped = keks.seal(&dek, &context).await?;
        observer.step(Step::BeforeCommit { index, total }).map_err(ServiceError::Interrupted)?;
        if store.rewrap_data_key(record.id, record.version, primary, &rewrapped, now()).await? {
            return Ok(true);
        }
        record = store.data_key(record.id).await?;
    }
    Err(ServiceError::Conflict(format!("data key {} kept changing during rotation; run it again", record.id)))
}

fn context_bytes(owner: KeyOwner, record: &DataKeyRecord) -> Vec<u8> {
    let owner_key = owner.storage_key();
    DataKeyContext { key_owner: &owner_key, data_key_id: record.id.as_uuid() }.to_bytes()
}
