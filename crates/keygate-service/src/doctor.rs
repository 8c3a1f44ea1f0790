//! The deep health check behind `keygate doctor`: the database answers and its schema is
//! current, the master key matches (canary), every master key in use is present, every
//! data key unwraps and every credential opens. It names each problem and, for
//! credentials, the credential's id. It changes nothing.

use crate::{boot, keys::KeyVault};
use keygate_core::WorkspaceStatus;
use keygate_store::{CredentialFilter, Store};
use keygate_vault::{DataKeyContext, KeyEncryptionKeys};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Ok, detail: detail.into() }
    }
    pub fn warn(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Warn, detail: detail.into() }
    }
    pub fn fail(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Fail, detail: detail.into() }
    }
}

/// Runs every check that needs the database and the keyring.
pub async fn run(store: Arc<dyn Store>, keks: Arc<dyn KeyEncryptionKeys>) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Err(e) = store.ping().await {
        checks.push(Check::fail("database", e.to_string()));
        return checks;
    }
    checks.push(Check::ok("database", format!("{} answers", store.backend())));

    match store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => checks.push(Check::ok("migrations", "schema is current")),
        Ok(pending) if pending.len() == store.migration_count() => {
            checks.push(Check::ok("migrations", "empty database: the schema is created at the first start"));
            return checks;
        }
        Ok(pending) => {
            checks.push(Check::fail(
                "migrations",
                format!(
                    "{} migration(s) not applied ({}); `keygate serve` applies them at start-up",
                    pending.len(),
                    pending.join(", ")
                ),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail("migrations", e.to_string()));
            return checks;
        }
    }

    match store.meta_get(boot::CANARY_META_KEY).await {
        Ok(Some(sealed)) => match boot::verify_canary(&*keks, &sealed).await {
            Ok(()) => checks
                .push(Check::ok("master key", format!("canary opens with the keyring ({})", boot::describe(&*keks)))),
            Err(e) => {
                checks.push(Check::fail("master key", format!("[{}] {e}", e.code())));
                return checks;
            }
        },
        Ok(None) => checks.push(Check::ok("master key", "no canary yet: it is sealed at the first `keygate serve`")),
        Err(e) => checks.push(Check::fail("master key", e.to_string())),
    }

    // Exactly what `keygate serve` checks before it starts: doctor is never green while
    // serve would refuse.
    if let Err(e) = boot::master_keys_in_use(&*store, &*keks).await {
        checks.push(Check::fail("master keys in use", format!("[{}] {e}", e.code())));
    }
    match crate::services::load_policy(&*store).await {
        Ok(_) => checks.push(Check::ok("settings", "the stored policy parses")),
        Err(e) => checks.push(Check::fail("settings", format!("[{}] {e}", e.code()))),
    }
    check_data_keys(&*store, &*keks, &mut checks).await;
    check_credentials(store, keks, &mut checks).await;
    checks
}

async fn check_data_keys(store: &dyn Store, keks: &dyn KeyEncryptionKeys, checks: &mut Vec<Check>) {
    let records = match store.data_keys().await {
        Ok(r) => r,
        Err(e) => return checks.push(Check::fail("data keys", e.to_string())),
    };
    let primary = keks.primary_id().to_string();
    let mut live = 0usize;
    let mut failures = 0usize;
    for record in &records {
        let Some(wrapped) = record.wrapped.as_deref() else {
            continue;
        };
        live += 1;
        let owner = record.owner.storage_key();
        let context = DataKeyContext { key_owner: &owner, data_key_id: record.id.as_uuid() }.to_bytes();
        if let Err(e) = keks.open(wrapped, &context).await {
            failures += 1;
            checks.push(Check::fail(
                "data key",
                format!("data key {} of {} does not unwrap: {e}", record.id, record.owner),
            ));
        }
    }
    if failures == 0 {
        checks.push(Check::ok("data keys", format!("{live} data key(s) unwrap")));
    }
    let stale = records.iter().filter(|r| r.wrapped.is_some() && r.kek_id != primary).count();
    if stale > 0 {
        checks.push(Check::warn(
            "rotation",
            format!("{stale} data key(s) are wrapped by an older master key: run `keygate master-key rotate`"),
        ));
    }
    let in_use: Vec<String> = records.iter().filter(|r| r.wrapped.is_some()).map(|r| r.kek_id.clone()).collect();
    for (id, label) in keks.available() {
        if id.to_string() != primary && !in_use.contains(&id.to_string()) {
            checks.push(Check::ok(
                "keyring",
                format!("master key {id} (`{label}`) wraps nothing any more and can be removed"),
            ));
        }
    }
}

async fn check_credentials(store: Arc<dyn Store>, keks: Arc<dyn KeyEncryptionKeys>, checks: &mut Vec<Check>) {
    let credentials = match store.credentials(&CredentialFilter::default()).await {
        Ok(c) => c,
        Err(e) => return checks.push(Check::fail("credentials", e.to_string())),
    };
    let vault = KeyVault::new(store.clone(), keks);
    let (mut opened, mut shredded, mut failed) = (0usize, 0usize, 0usize);
    for credential in &credentials {
        if let Some(ws) = credential.workspace_id {
            if matches!(store.workspace(ws).await.map(|w| w.status), Ok(WorkspaceStatus::Deleted)) {
                shredded += 1;
                continue;
            }
        }
        match vault.open_credential(credential).await {
            Ok(_secret) => opened += 1,
            Err(e) => {
                failed += 1;
                checks.push(Check::fail(
                    "credential",
                    format!(
                        "credential {} ({}, {}) does not open: {e}",
                        credential.id, credential.provider, credential.scope
                    ),
                ));
            }
        }
    }
    if failed == 0 {
        let shredded =
            if shredded > 0 { format!("; {shredded} of deleted workspaces are shredded") } else { String::new() };
        checks.push(Check::ok("credentials", format!("{opened} credential(s) open{shredded}")));
    }
}
