//! keygate's envelope encryption and secret hygiene.
//!
//! - [`cipher`]: AES-256-GCM, the only primitive (RustCrypto `aes-gcm`).
//! - [`record`]: the sealed-record format (versioned header, nonce, ciphertext, tag).
//! - [`keyring`]: key-encryption keys (KEKs) and the [`KeyEncryptionKeys`] trait that
//!   wraps data keys; the local keyring today, room for a KMS tomorrow.
//! - [`datakey`]: data-encryption keys (DEKs) and the associated-data contexts that bind
//!   every ciphertext to its row.
//! - [`secret`]: secret types whose `Debug` shows at most a hint.
//! - [`redact`]: the last line of defence that scrubs key shapes out of text.
//!
//! Not for: storage or HTTP. This crate never sees a database row or a request; the
//! service layer looks keys up and hands them in.

pub mod cipher;
pub mod datakey;
pub mod echo;
pub mod error;
pub mod keyring;
pub mod record;
pub mod redact;
pub mod secret;
pub mod sigv4;

pub use datakey::{CredentialContext, DataKey, DataKeyContext, CANARY_CONTEXT};
pub use error::VaultError;
pub use keyring::{Kek, KekId, KeyEncryptionKeys, Keyring, KeyringError};
pub use record::{Header, SealedRecord};
pub use secret::{constant_time_eq, hint, hmac_sha256, random_alphanumeric, sha256, SecretText};
