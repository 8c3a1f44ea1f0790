//! [`KeyVault`]: everything that touches data keys. It creates one data key per owner
//! (workspace or operator) on first need, wraps it with the primary master key, unwraps
//! on use (cached for a few minutes, never the credentials themselves), and seals and
//! opens credentials bound to their rows and to their secret version (so a replaced
//! secret's record, written back into the row, fails closed).
//!
//! Plaintext credentials exist only between [`KeyVault::open_credential`] and the end of
//! the caller's use of the returned [`SecretText`].

use crate::{now, ServiceError, ServiceResult};
use keygate_core::fastmap::FastMap;
use keygate_core::*;
use keygate_store::Store;
use keygate_vault::{CredentialContext, DataKey, DataKeyContext, KeyEncryptionKeys, SecretText, VaultError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long an unwrapped data key stays in memory after it was unwrapped.
pub const DATA_KEY_CACHE_TTL: Duration = Duration::from_secs(300);
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct KeyVault {
    store: Arc<dyn Store>,
    keks: Arc<dyn KeyEncryptionKeys>,
    cache: RwLock<FastMap<DataKeyId, (DataKey, KeyOwner, Instant)>>,
    /// When expired entries were last swept out (a sweep walks the whole cache, so it
    /// runs at most once a minute, not on every insert).
    swept: std::sync::Mutex<Instant>,
}

impl KeyVault {
    pub fn new(store: Arc<dyn Store>, keks: Arc<dyn KeyEncryptionKeys>) -> Self {
        Self { store, keks, cache: RwLock::new(FastMap::default()), swept: std::sync::Mutex::new(Instant::now()) }
    }

    pub fn keks(&self) -> &Arc<dyn KeyEncryptionKeys> {
        &self.keks
    }

    /// The owner's data key id, creating and storing a new data key on first need.
    pub async fn ensure_data_key(&self, owner: KeyOwner) -> ServiceResult<DataKeyId> {
        if let Some(existing) = self.store.data_key_by_owner(&owner).await? {
            if existing.wrapped.is_none() {
                return Err(VaultError::Destroyed.into());
            }
            return Ok(existing.id);
        }
        let id = DataKeyId::new();
        let dek = DataKey::generate(id.as_uuid());
        let owner_key = owner.storage_key();
        let context = DataKeyContext { key_owner: &owner_key, data_key_id: id.as_uuid() };
        let wrapped = self.keks.seal(dek.expose_bytes(), &context.to_bytes()).await?;
        let at = now();
        let record = DataKeyRecord {
            id,
            owner,
            kek_id: self.keks.primary_id().to_string(),
            wrapped: Some(wrapped),
            version: 1,
            created_at: at,
            updated_at: at,
            destroyed_at: None,
        };
        match self.store.insert_data_key(&record).await {
            Ok(()) => {
                self.remember(id, dek, owner);
                Ok(id)
            }
            // Another request created the owner's key first: use that one.
            Err(e) if e.is_conflict() => match self.store.data_key_by_owner(&owner).await? {
                Some(existing) => Ok(existing.id),
                None => Err(ServiceError::Conflict(format!("data key for {owner} vanished while being created"))),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Seals `secret` for the credential row `credential` describes (its id, scope,
    /// owner, provider and secret version must already be final). Returns the record and
    /// its data key.
    pub async fn seal_credential(
        &self,
        credential: &Credential,
        secret: &SecretText,
    ) -> ServiceResult<(Vec<u8>, DataKeyId)> {
        let owner = credential.key_owner();
        let dek_id = self.ensure_data_key(owner).await?;
        let dek = self.data_key(dek_id, owner).await?;
        let (key_owner, row_owner) = (owner.storage_key(), credential.owner_key());
        let sealed = dek.seal_secret(secret, &context(&key_owner, &row_owner, credential))?;
        Ok((sealed, dek_id))
    }

    /// Opens a credential's secret. The caller keeps it for one use and drops it.
    pub async fn open_credential(&self, credential: &Credential) -> ServiceResult<SecretText> {
        let owner = credential.key_owner();
        let undecryptable =
            |reason: String| ServiceError::Undecryptable { credential: credential.id.to_string(), reason };
        let dek = self.data_key(credential.data_key_id, owner).await.map_err(|e| undecryptable(e.to_string()))?;
        let (key_owner, row_owner) = (owner.storage_key(), credential.owner_key());
        dek.open_secret(&credential.sealed, &context(&key_owner, &row_owner, credential)).map_err(|e| match e {
            VaultError::Authentication => undecryptable(format!(
                "{e} (its record does not open at secret version {}: a record written back from an older copy, \
                 after the secret was replaced, fails here too)",
                credential.secret_version
            )),
            other => undecryptable(other.to_string()),
        })
    }

    /// Destroys the owner's data key: everything sealed under it is unreadable for good.
    pub async fn destroy_data_key(&self, owner: KeyOwner) -> ServiceResult<()> {
        self.store.destroy_data_key(&owner, now()).await?;
        self.forget_owner(owner);
        Ok(())
    }

    /// Drops every cached unwrapped key (after a rotation, or on demand).
    pub fn clear_cache(&self) {
        crate::cache::write(&self.cache).clear();
    }

    async fn data_key(&self, id: DataKeyId, owner: KeyOwner) -> ServiceResult<DataKey> {
        if let Some(dek) = self.cached(id, owner) {
            return Ok(dek);
        }
        let record = self.store.data_key(id).await?;
        if record.owner != owner {
            // A credential pointing at another owner's key: never use it.
            return Err(VaultError::UnknownKey { id: id.to_string() }.into());
        }
        let wrapped = record.wrapped.as_deref().ok_or(VaultError::Destroyed)?;
        let owner_key = owner.storage_key();
        let context = DataKeyContext { key_owner: &owner_key, data_key_id: id.as_uuid() };
        let bytes = self.keks.open(wrapped, &context.to_bytes()).await?;
        let dek = DataKey::from_unwrapped(id.as_uuid(), &bytes)?;
        self.remember(id, dek.clone(), owner);
        Ok(dek)
    }

    fn cached(&self, id: DataKeyId, owner: KeyOwner) -> Option<DataKey> {
        let cache = crate::cache::read(&self.cache);
        let (dek, cached_owner, at) = cache.get(&id)?;
        (*cached_owner == owner && at.elapsed() < DATA_KEY_CACHE_TTL).then(|| dek.clone())
    }

    fn remember(&self, id: DataKeyId, dek: DataKey, owner: KeyOwner) {
        let sweep = {
            let mut swept = crate::cache::lock(&self.swept);
            let due = swept.elapsed() >= SWEEP_EVERY;
            if due {
                *swept = Instant::now();
            }
            due
        };
        let mut cache = crate::cache::write(&self.cache);
        if sweep {
            cache.retain(|_, (_, _, at)| at.elapsed() < DATA_KEY_CACHE_TTL);
        }
        cache.insert(id, (dek, owner, Instant::now()));
    }

    fn forget_owner(&self, owner: KeyOwner) {
        crate::cache::write(&self.cache).retain(|_, (_, o, _)| *o != owner);
    }
}

fn context<'a>(key_owner: &'a str, row_owner: &'a str, credential: &'a Credential) -> CredentialContext<'a> {
    CredentialContext {
        key_owner,
        owner: row_owner,
        credential_id: credential.id.as_uuid(),
        provider: &credential.provider,
        secret_version: u64::from(credential.secret_version),
    }
}
