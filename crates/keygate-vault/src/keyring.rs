//! Key-encryption keys (KEKs): the master keys that wrap every data key.
//!
//! A KEK's id is derived from the key itself (an HMAC-SHA-256 key check value, 8 bytes,
//! shown as 16 hex characters), so it is the same whichever way the key was configured
//! (`KEYGATE_MASTER_KEY`, `KEYGATE_MASTER_KEYS`, a key file) and two different keys can
//! never share an id. The `id:` given in `KEYGATE_MASTER_KEYS` is a human label.
//!
//! [`KeyEncryptionKeys`] is the seam for other KEK providers (Vault Transit, a cloud
//! KMS): they implement the same seal/open of small secrets under a named key.

use crate::cipher::KEY_LEN;
use crate::record::{self, SealedRecord};
use crate::VaultError;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// How many bytes of the check value make a KEK id.
const KEK_ID_LEN: usize = 8;

/// A KEK's id: its key check value, as 16 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId(String);

impl KekId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn to_bytes(&self) -> Vec<u8> {
        hex::decode(&self.0).unwrap_or_default()
    }

    /// The id a sealed record's header carries, if it is a well-formed KEK id.
    pub fn from_header(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == KEK_ID_LEN).then(|| Self(hex::encode(bytes)))
    }

    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == KEK_ID_LEN * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({})", self.0)
    }
}

/// A master key. Zeroized on drop; `Debug` shows only its label and id.
pub struct Kek {
    label: String,
    id: KekId,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl Kek {
    pub fn new(label: impl Into<String>, key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let id = kek_id(&key);
        Self { label: label.into(), id, key }
    }

    /// Generates a fresh random key.
    pub fn generate(label: impl Into<String>) -> Self {
        Self::new(label, crate::cipher::random_bytes::<KEY_LEN>())
    }

    pub fn id(&self) -> &KekId {
        &self.id
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key as 64 hex characters, for `keygate keygen` and the generated dev key file.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({} = {})", self.label, self.id)
    }
}

fn kek_id(key: &[u8; KEY_LEN]) -> KekId {
    // HMAC over a fixed label: a key check value that reveals nothing usable about the key.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(b"keygate key-encryption-key id v1");
    let digest = mac.finalize().into_bytes();
    KekId(hex::encode(&digest[..KEK_ID_LEN]))
}

#[cold]
fn unreachable_hmac() -> ! {
    panic!("HMAC accepts keys of any length")
}

/// Why master keys could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("{source_name}: a master key must be 64 hex characters (32 bytes); got {len} characters")]
    WrongLength { source_name: String, len: usize },
    #[error("{source_name}: a master key must be hex (0-9, a-f); found other characters")]
    NotHex { source_name: String },
    #[error("{source_name}: entry {index} must be `id:hex`; {problem}")]
    BadEntry { source_name: String, index: usize, problem: String },
    #[error("{source_name}: the key labelled `{label}` appears more than once")]
    DuplicateKey { source_name: String, label: String },
    #[error("{source_name}: no master key found")]
    Empty { source_name: String },
}

/// The local keyring: one or more KEKs, the first of which is primary (new wraps use it).
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Kek>,
}

impl Keyring {
    pub fn new(keys: Vec<Kek>) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty { source_name: "keyring".into() });
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id || o.label == k.label) {
                return Err(KeyringError::DuplicateKey { source_name: "keyring".into(), label: k.label.clone() });
            }
        }
        Ok(Self { keys })
    }

    /// One key as 64 hex characters (`KEYGATE_MASTER_KEY`), labelled `default`.
    pub fn from_hex(source_name: &str, hex_key: &str) -> Result<Self, KeyringError> {
        let key = parse_hex_key(source_name, hex_key)?;
        Self::new(vec![Kek::new("default", key)])
    }

    /// `id:hex,id:hex,...`, the first primary (`KEYGATE_MASTER_KEYS`).
    pub fn from_list(source_name: &str, list: &str) -> Result<Self, KeyringError> {
        let entries: Vec<&str> = list.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        Self::from_entries(source_name, &entries, false)
    }

    /// A key file: one entry per line, `#` comments; each entry `id:hex`, or a bare hex
    /// key (labelled `default`, allowed only when it is the file's one key).
    pub fn from_file_contents(source_name: &str, contents: &str) -> Result<Self, KeyringError> {
        let entries: Vec<&str> =
            contents.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        Self::from_entries(source_name, &entries, entries.len() == 1)
    }

    fn from_entries(source_name: &str, entries: &[&str], allow_bare: bool) -> Result<Self, KeyringError> {
        if entries.is_empty() {
            return Err(KeyringError::Empty { source_name: source_name.into() });
        }
        let mut keys = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let index = i + 1;
            let (label, hex_key) = match entry.split_once(':') {
                Some((label, hex_key)) => (label.trim(), hex_key.trim()),
                None if allow_bare => ("default", *entry),
                None => {
                    return Err(KeyringError::BadEntry {
                        source_name: source_name.into(),
                        index,
                        problem: "the `id:` part is missing".into(),
                    })
                }
            };
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(KeyringError::BadEntry {
                    source_name: source_name.into(),
                    index,
                    problem: "the id must be letters, digits, `-`, `_` or `.`".into(),
                });
            }
            let key = parse_hex_key(&format!("{source_name} (key `{label}`)"), hex_key)?;
            keys.push(Kek::new(label, key));
        }
        Self::new(keys).map_err(|e| match e {
            KeyringError::DuplicateKey { label, .. } => {
                KeyringError::DuplicateKey { source_name: source_name.into(), label }
            }
            other => other,
        })
    }

    pub fn primary(&self) -> &Kek {
        &self.keys[0]
    }

    pub fn keys(&self) -> &[Kek] {
        &self.keys
    }

    pub fn get(&self, id: &KekId) -> Option<&Kek> {
        self.keys.iter().find(|k| &k.id == id)
    }
}

fn parse_hex_key(source_name: &str, hex_key: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyringError> {
    let hex_key = hex_key.trim();
    if hex_key.len() != KEY_LEN * 2 {
        return Err(KeyringError::WrongLength { source_name: source_name.into(), len: hex_key.chars().count() });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(hex_key, key.as_mut())
        .map_err(|_| KeyringError::NotHex { source_name: source_name.into() })?;
    Ok(key)
}

/// Seals and opens small secrets (data keys, the boot canary) under named master keys.
/// The local [`Keyring`] implements it; a KMS-backed provider would too.
#[async_trait]
pub trait KeyEncryptionKeys: Send + Sync + fmt::Debug {
    /// The id new seals use.
    fn primary_id(&self) -> KekId;
    /// Every id this provider can open, with its label, primary first.
    fn available(&self) -> Vec<(KekId, String)>;
    /// Seals under the primary key. The record's header names that key.
    async fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError>;
    /// Opens with the key the record's header names.
    async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError>;
}

#[async_trait]
impl KeyEncryptionKeys for Keyring {
    fn primary_id(&self) -> KekId {
        self.primary().id.clone()
    }

    fn available(&self) -> Vec<(KekId, String)> {
        self.keys.iter().map(|k| (k.id.clone(), k.label.clone())).collect()
    }

    async fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError> {
        let kek = self.primary();
        record::seal(&kek.key, &kek.id.to_bytes(), context, plaintext)
    }

    async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let rec = SealedRecord::parse(sealed)?;
        let id = KekId::from_header(rec.key_id()).ok_or(VaultError::MalformedKeyId)?;
        let kek = self.get(&id).ok_or_else(|| VaultError::UnknownKey { id: id.to_string() })?;
        rec.open(&kek.key, context)
    }
}

/// The KEK id a sealed record's header names, without opening it.
pub fn sealed_by(sealed: &[u8]) -> Result<KekId, VaultError> {
    let rec = SealedRecord::parse(sealed)?;
    KekId::from_header(rec.key_id()).ok_or(VaultError::MalformedKeyId)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn ids_come_from_the_key_not_the_label() {
        let one = Keyring::from_hex("KEYGATE_MASTER_KEY", A).unwrap();
        let two = Keyring::from_list("KEYGATE_MASTER_KEYS", &format!("new:{B}, old:{A}")).unwrap();
        assert_eq!(two.keys()[1].id(), one.primary().id());
        assert_ne!(two.primary().id(), one.primary().id());
        assert_eq!(two.primary().label(), "new");
        assert_eq!(one.primary().id().as_str().len(), 16);
    }

    #[test]
    fn malformed_keys_get_their_own_clear_errors() {
        let err = Keyring::from_hex("KEYGATE_MASTER_KEY", "abcd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "KEYGATE_MASTER_KEY: a master key must be 64 hex characters (32 bytes); got 4 characters"
        );
        let not_hex = "z".repeat(64);
        let err = Keyring::from_hex("KEYGATE_MASTER_KEY", &not_hex).unwrap_err();
        assert!(matches!(err, KeyringError::NotHex { .. }));
        assert!(!err.to_string().contains(&not_hex), "errors never echo key material");
        let err = Keyring::from_list("KEYGATE_MASTER_KEYS", A).unwrap_err();
        assert!(err.to_string().contains("entry 1 must be `id:hex`"));
        let err = Keyring::from_list("KEYGATE_MASTER_KEYS", &format!("a:{A},b:{A}")).unwrap_err();
        assert!(matches!(err, KeyringError::DuplicateKey { .. }));
        assert!(matches!(Keyring::from_list("X", " , "), Err(KeyringError::Empty { .. })));
    }

    #[test]
    fn key_files_accept_comments_and_a_bare_key() {
        let ring = Keyring::from_file_contents("f", &format!("# dev key\n{A}\n")).unwrap();
        assert_eq!(ring.primary().label(), "default");
        let ring = Keyring::from_file_contents("f", &format!("b:{B}\na:{A}\n")).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert!(Keyring::from_file_contents("f", &format!("{B}\n{A}\n")).is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let ring = Keyring::from_hex("K", A).unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains(A) && !shown.contains("0001020304"), "{shown}");
    }

    #[tokio::test]
    async fn seal_uses_the_primary_and_open_looks_the_key_up_by_id() {
        let old = Keyring::from_hex("K", A).unwrap();
        let sealed = old.seal(b"dek", b"ctx").await.unwrap();
        assert_eq!(sealed_by(&sealed).unwrap(), old.primary_id());
        let both = Keyring::from_list("K", &format!("b:{B},a:{A}")).unwrap();
        assert_eq!(both.open(&sealed, b"ctx").await.unwrap().as_slice(), b"dek");
        let only_b = Keyring::from_hex("K", B).unwrap();
        let err = only_b.open(&sealed, b"ctx").await.unwrap_err();
        assert_eq!(err, VaultError::UnknownKey { id: old.primary_id().to_string() });
    }
}
