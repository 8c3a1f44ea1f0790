//! Running the binary with a clean environment, and seeding a database through the
//! library so the CLI has sealed credentials to work on.

use keygate_core::*;
use keygate_service::{boot, keys::KeyVault, now};
use keygate_store::testdb::TestDb;
use keygate_store::Store;
use keygate_vault::{KeyEncryptionKeys, Keyring, SecretText};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

pub const KEY_A: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafa0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
pub const KEY_B: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
pub const CANARY_SECRET: &str = "sk-proj-CANARY-cli-0123456789abcdef";

/// `keygate <args>` with no inherited KEYGATE_* variables, the test's data directory and
/// database, plus `vars`.
pub fn keygate(db: &TestDb, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("KEYGATE_DATA_DIR", db.dir.path().join("data"));
    if let keygate_store::DatabaseLocation::Postgres(_) = db.location {
        cmd.env("KEYGATE_DATABASE_URL", db.url());
    }
    cmd.envs(vars.iter().copied());
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs to completion; returns (success, stdout, stderr).
pub fn run(mut cmd: Command, args: &[&str]) -> (bool, String, String) {
    let Output { status, stdout, stderr } = cmd.args(args).output().unwrap();
    (status.success(), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

/// Runs with `input` on standard input.
pub fn run_with_stdin(mut cmd: Command, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
    (status.success(), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

/// The store the binary uses for `db` (SQLite files live under the data directory).
pub async fn store(db: &TestDb) -> Arc<dyn Store> {
    std::fs::create_dir_all(db.dir.path().join("data")).unwrap();
    let location = match &db.location {
        keygate_store::DatabaseLocation::Sqlite(_) => {
            keygate_store::DatabaseLocation::in_data_dir(&db.dir.path().join("data"))
        }
        other => other.clone(),
    };
    keygate_store::connect(&location).await.unwrap()
}

/// Stores `n` user credentials (one workspace each) sealed under `keys`.
pub async fn seed(db: &TestDb, keys: &str, n: usize) -> Vec<Credential> {
    let store = store(db).await;
    let keks: Arc<dyn KeyEncryptionKeys> = Arc::new(Keyring::from_list("seed", keys).unwrap());
    boot::check(&*store, &*keks).await.unwrap();
    let vault = KeyVault::new(store.clone(), keks);
    let mut out = Vec::new();
    for i in 0..n {
        let at = now();
        let ws = Workspace {
            id: WorkspaceId::new(),
            name: format!("w{i}"),
            status: WorkspaceStatus::Active,
            personal: true,
            external_id: None,
            created_at: at,
            updated_at: at,
        };
        let user = User {
            id: UserId::new(),
            email: None,
            external_id: Some(format!("host-{}", ws.id)),
            tier: "community".into(),
            super_admin: false,
            created_at: at,
            updated_at: at,
        };
        store.provision_user(&user, None, &ws, Role::Owner).await.unwrap();
        let mut c = Credential::draft(Owner::User { workspace: ws.id, user: user.id }, "openai", "mine", at);
        let (sealed, dek) = vault.seal_credential(&c, &SecretText::new(CANARY_SECRET.into())).await.unwrap();
        c.sealed = sealed;
        c.data_key_id = dek;
        store.insert_credential(&c).await.unwrap();
        out.push(c);
    }
    store.close().await;
    out
}
