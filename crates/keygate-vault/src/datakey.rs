//! Data-encryption keys (DEKs) and the associated-data contexts that bind ciphertexts to
//! their rows. Each workspace, and the operator scope, has one DEK; every credential is
//! sealed under its owner's DEK and can be opened only in the row it was sealed for, at
//! the secret version it was sealed for: a replaced secret's old record, written back
//! into its row, does not open at the row's newer version.

use crate::cipher::{self, KEY_LEN};
use crate::record::{self, SealedRecord};
use crate::secret::SecretText;
use crate::VaultError;
use std::fmt;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The context the boot canary is sealed under.
pub const CANARY_CONTEXT: &[u8] = b"keygate/canary/v1";

/// A 256-bit data key, in the clear. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct DataKey {
    id: Uuid,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl DataKey {
    pub fn generate(id: Uuid) -> Self {
        Self { id, key: cipher::random_bytes::<KEY_LEN>() }
    }

    /// Rebuilds a key unwrapped from storage; `bytes` must be 32 bytes.
    pub fn from_unwrapped(id: Uuid, bytes: &[u8]) -> Result<Self, VaultError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(VaultError::Authentication);
        }
        key.copy_from_slice(bytes);
        Ok(Self { id, key })
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The key bytes, to be wrapped by a KEK. Never log or store these in the clear.
    pub fn expose_bytes(&self) -> &[u8] {
        self.key.as_ref()
    }

    /// Seals a credential's secret for the row `context` describes, at its secret version
    /// (1 or more).
    pub fn seal_secret(&self, secret: &SecretText, context: &CredentialContext<'_>) -> Result<Vec<u8>, VaultError> {
        if context.secret_version == 0 {
            return Err(VaultError::UnversionedSeal);
        }
        record::seal(&self.key, self.id.as_bytes(), &context.to_bytes(), secret.expose().as_bytes())
    }

    /// Opens a credential's sealed record for the row `context` describes.
    pub fn open_secret(&self, sealed: &[u8], context: &CredentialContext<'_>) -> Result<SecretText, VaultError> {
        let rec = SealedRecord::parse(sealed)?;
        if rec.key_id() != self.id.as_bytes() {
            return Err(VaultError::UnknownKey { id: describe_key_id(rec.key_id()) });
        }
        let plain = rec.open(&self.key, &context.to_bytes())?;
        SecretText::from_utf8(plain).ok_or(VaultError::Authentication)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

/// The data key id a credential's sealed record names, without opening it.
pub fn sealed_with(sealed: &[u8]) -> Result<Uuid, VaultError> {
    let rec = SealedRecord::parse(sealed)?;
    Uuid::from_slice(rec.key_id()).map_err(|_| VaultError::MalformedKeyId)
}

fn describe_key_id(bytes: &[u8]) -> String {
    Uuid::from_slice(bytes).map(|u| u.to_string()).unwrap_or_else(|_| hex::encode(bytes))
}

/// The row a credential's ciphertext belongs to. Every field goes into the associated
/// data, so a record copied to another credential, provider, owner or workspace, or
/// written back after its secret was replaced, fails to open.
#[derive(Debug, Clone, Copy)]
pub struct CredentialContext<'a> {
    /// The data key's owner: `workspace:<uuid>` or `operator`.
    pub key_owner: &'a str,
    /// Who within it owns the credential: `user:<ws>:<user>`, `workspace:<ws>`, `operator`.
    pub owner: &'a str,
    pub credential_id: Uuid,
    pub provider: &'a str,
    /// Which of the credential's secrets this is: 1 when created, one more at each
    /// replacement (`keygate/credential/v2`). 0 names a record sealed before versions
    /// existed (`keygate/credential/v1`, no version field): such records are opened,
    /// never sealed.
    pub secret_version: u64,
}

impl CredentialContext<'_> {
    fn to_bytes(self) -> Vec<u8> {
        let row: [&[u8]; 4] =
            [self.key_owner.as_bytes(), self.owner.as_bytes(), self.credential_id.as_bytes(), self.provider.as_bytes()];
        match self.secret_version {
            0 => encode_context(b"keygate/credential/v1", &row),
            version => {
                let version = version.to_be_bytes();
                let [a, b, c, d] = row;
                encode_context(b"keygate/credential/v2", &[a, b, c, d, &version])
            }
        }
    }
}

/// The row a wrapped data key belongs to.
#[derive(Debug, Clone, Copy)]
pub struct DataKeyContext<'a> {
    pub key_owner: &'a str,
    pub data_key_id: Uuid,
}

impl DataKeyContext<'_> {
    pub fn to_bytes(self) -> Vec<u8> {
        encode_context(b"keygate/data-key/v1", &[self.key_owner.as_bytes(), self.data_key_id.as_bytes()])
    }
}

/// A label followed by length-prefixed fields, so no two field lists encode alike.
fn encode_context(label: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(label.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(label);
    for field in fields {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(ws: &'a str, owner: &'a str, id: Uuid, provider: &'a str) -> CredentialContext<'a> {
        CredentialContext { key_owner: ws, owner, credential_id: id, provider, secret_version: 1 }
    }

    #[test]
    fn a_record_opens_only_at_the_secret_version_it_was_sealed_for() {
        let dek = DataKey::generate(Uuid::now_v7());
        let id = Uuid::now_v7();
        let at = |secret_version| CredentialContext { secret_version, ..ctx("operator", "operator", id, "openai") };
        let first = dek.seal_secret(&SecretText::new("sk-first".into()), &at(1)).unwrap();
        let second = dek.seal_secret(&SecretText::new("sk-second".into()), &at(2)).unwrap();
        assert_eq!(dek.open_secret(&second, &at(2)).unwrap().expose(), "sk-second");
        assert_eq!(dek.open_secret(&first, &at(1)).unwrap().expose(), "sk-first");
        // The replaced secret's record, back in the row at its newer version: closed.
        assert_eq!(dek.open_secret(&first, &at(2)).unwrap_err(), VaultError::Authentication);
        assert_eq!(dek.open_secret(&first, &at(0)).unwrap_err(), VaultError::Authentication);
        assert_eq!(dek.open_secret(&second, &at(3)).unwrap_err(), VaultError::Authentication);
    }

    #[test]
    fn records_sealed_before_versions_existed_open_at_version_zero_only() {
        let dek = DataKey::generate(Uuid::now_v7());
        let id = Uuid::now_v7();
        let row = ctx("workspace:w1", "workspace:w1", id, "openai");
        // What keygate sealed before secret versions existed: the v1 label, four fields.
        let v1 =
            encode_context(b"keygate/credential/v1", &[b"workspace:w1", b"workspace:w1", id.as_bytes(), b"openai"]);
        let legacy = record::seal(&dek.key, dek.id.as_bytes(), &v1, b"sk-legacy").unwrap();
        let zero = CredentialContext { secret_version: 0, ..row };
        assert_eq!(dek.open_secret(&legacy, &zero).unwrap().expose(), "sk-legacy");
        assert_eq!(dek.open_secret(&legacy, &row).unwrap_err(), VaultError::Authentication, "not at version 1");
        // Nothing new is ever sealed that way.
        let refused = dek.seal_secret(&SecretText::new("sk-x".into()), &zero).unwrap_err();
        assert_eq!(refused, VaultError::UnversionedSeal);
    }

    #[test]
    fn a_record_moved_to_another_row_fails_to_open() {
        let dek = DataKey::generate(Uuid::now_v7());
        let id = Uuid::now_v7();
        let secret = SecretText::new("sk-ant-api03-canary".into());
        let sealed = dek.seal_secret(&secret, &ctx("workspace:w1", "user:w1:u1", id, "anthropic")).unwrap();
        let opened = dek.open_secret(&sealed, &ctx("workspace:w1", "user:w1:u1", id, "anthropic")).unwrap();
        assert_eq!(opened.expose(), "sk-ant-api03-canary");

        for (what, other) in [
            ("another credential", ctx("workspace:w1", "user:w1:u1", Uuid::now_v7(), "anthropic")),
            ("another provider", ctx("workspace:w1", "user:w1:u1", id, "openai")),
            ("another workspace", ctx("workspace:w2", "user:w1:u1", id, "anthropic")),
            ("another owner", ctx("workspace:w1", "user:w1:u2", id, "anthropic")),
            ("the operator scope", ctx("operator", "operator", id, "anthropic")),
        ] {
            let err = dek.open_secret(&sealed, &other).unwrap_err();
            assert_eq!(err, VaultError::Authentication, "{what} opened the record");
        }
    }

    #[test]
    fn another_data_key_is_named_not_tried() {
        let dek = DataKey::generate(Uuid::now_v7());
        let other = DataKey::generate(Uuid::now_v7());
        let c = ctx("operator", "operator", Uuid::now_v7(), "openai");
        let sealed = dek.seal_secret(&SecretText::new("sk-x".into()), &c).unwrap();
        assert_eq!(sealed_with(&sealed).unwrap(), dek.id());
        let err = other.open_secret(&sealed, &c).unwrap_err();
        assert_eq!(err, VaultError::UnknownKey { id: dek.id().to_string() });
    }

    #[test]
    fn contexts_with_shifted_field_boundaries_differ() {
        let a = encode_context(b"l", &[b"ab", b"c"]);
        let b = encode_context(b"l", &[b"a", b"bc"]);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_shows_the_id_only() {
        let dek = DataKey::generate(Uuid::nil());
        assert_eq!(format!("{dek:?}"), "DataKey(00000000-0000-0000-0000-000000000000)");
    }
}
