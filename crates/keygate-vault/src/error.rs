//! The vault's one error type. Messages never contain key material or plaintext.

/// Why a record could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("sealed record is truncated ({len} bytes): it is not a keygate record")]
    Truncated { len: usize },
    #[error("sealed record has the wrong magic bytes: it is not a keygate record")]
    BadMagic,
    #[error("sealed record format version {0} is not supported by this keygate (supports 1)")]
    UnsupportedVersion(u8),
    #[error("sealed record algorithm {0} is not supported by this keygate (supports 1 = AES-256-GCM)")]
    UnsupportedAlgorithm(u8),
    #[error("sealed record names key `{id}`, which is not available")]
    UnknownKey { id: String },
    #[error("sealed record's key id is malformed")]
    MalformedKeyId,
    #[error("sealed record failed authentication: wrong key, or the record was altered or moved to another row")]
    Authentication,
    #[error("data key has been destroyed; its records can never be opened again")]
    Destroyed,
    #[error("key-encryption key service failed: {0}")]
    KeyService(String),
    #[error("a credential is sealed only under a secret version (1 or more); version 0 names records sealed before versions existed, which are opened, never made")]
    UnversionedSeal,
}
