//! The sealed-record format. Every ciphertext keygate stores is one of these:
//!
//! ```text
//! magic "KG" (2) | format version (1) | algorithm (1) | key id length (1) | key id (n)
//! | nonce (12) | ciphertext (m) | tag (16)
//! ```
//!
//! The header (everything before the nonce) is part of the associated data, together with
//! a caller-given context that names the row the record belongs to, so neither the header
//! nor the row binding can be altered without the record failing to open. The key id lets
//! a reader look the key up directly: keygate never trial-decrypts.

use crate::cipher::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::VaultError;
use zeroize::Zeroizing;

pub const MAGIC: [u8; 2] = *b"KG";
pub const FORMAT_V1: u8 = 1;
pub const ALG_AES_256_GCM: u8 = 1;
/// Key ids are short: a 16-byte data-key UUID or an 8-byte key-encryption-key id.
pub const MAX_KEY_ID_LEN: usize = 64;
const FIXED_HEADER_LEN: usize = 5;

/// The parsed header of a sealed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub algorithm: u8,
    pub key_id: Vec<u8>,
}

/// A sealed record, parsed but not opened. Borrowed from the stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct SealedRecord<'a> {
    header_bytes: &'a [u8],
    key_id: &'a [u8],
    nonce: &'a [u8; NONCE_LEN],
    ciphertext_and_tag: &'a [u8],
}

impl<'a> SealedRecord<'a> {
    /// Checks the framing and the header. Never panics, whatever the input.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, VaultError> {
        let truncated = || VaultError::Truncated { len: bytes.len() };
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(truncated());
        }
        if bytes[..2] != MAGIC {
            return Err(VaultError::BadMagic);
        }
        if bytes[2] != FORMAT_V1 {
            return Err(VaultError::UnsupportedVersion(bytes[2]));
        }
        if bytes[3] != ALG_AES_256_GCM {
            return Err(VaultError::UnsupportedAlgorithm(bytes[3]));
        }
        let key_id_len = usize::from(bytes[4]);
        if key_id_len == 0 || key_id_len > MAX_KEY_ID_LEN {
            return Err(VaultError::MalformedKeyId);
        }
        let header_len = FIXED_HEADER_LEN + key_id_len;
        if bytes.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(truncated());
        }
        let (header_bytes, rest) = bytes.split_at(header_len);
        let (nonce, ciphertext_and_tag) = rest.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| truncated())?;
        Ok(Self { header_bytes, key_id: &header_bytes[FIXED_HEADER_LEN..], nonce, ciphertext_and_tag })
    }

    /// The id of the key that sealed this record, to look it up by.
    pub fn key_id(&self) -> &'a [u8] {
        self.key_id
    }

    pub fn header(&self) -> Header {
        Header { version: self.header_bytes[2], algorithm: self.header_bytes[3], key_id: self.key_id.to_vec() }
    }

    /// Opens the record with the key its header names, bound to `context`.
    pub fn open(&self, key: &[u8; KEY_LEN], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let aad = associated_data(self.header_bytes, context);
        cipher::open(key, self.nonce, &aad, self.ciphertext_and_tag)
    }
}

/// Seals `plaintext` under `key` (known as `key_id`), bound to `context`, with a fresh
/// random nonce.
pub fn seal(key: &[u8; KEY_LEN], key_id: &[u8], context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    seal_with_nonce(key, key_id, context, plaintext, &cipher::random_nonce())
}

pub(crate) fn seal_with_nonce(
    key: &[u8; KEY_LEN],
    key_id: &[u8],
    context: &[u8],
    plaintext: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, VaultError> {
    let key_id_len = u8::try_from(key_id.len()).map_err(|_| VaultError::MalformedKeyId)?;
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err(VaultError::MalformedKeyId);
    }
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + key_id.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[FORMAT_V1, ALG_AES_256_GCM, key_id_len]);
    out.extend_from_slice(key_id);
    let aad = associated_data(&out, context);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&cipher::seal(key, nonce, &aad, plaintext));
    Ok(out)
}

fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [0x42; 32];
    const KEY_ID: &[u8] = b"0123456789abcdef";

    fn sealed() -> Vec<u8> {
        seal(&KEY, KEY_ID, b"ctx", b"sk-ant-plaintext").unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sealed();
        let rec = SealedRecord::parse(&bytes).unwrap();
        assert_eq!(rec.key_id(), KEY_ID);
        assert_eq!(rec.header(), Header { version: 1, algorithm: 1, key_id: KEY_ID.to_vec() });
        assert_eq!(rec.open(&KEY, b"ctx").unwrap().as_slice(), b"sk-ant-plaintext");
    }

    #[test]
    fn two_seals_of_the_same_plaintext_differ() {
        assert_ne!(sealed(), sealed(), "a fresh nonce per seal");
    }

    #[test]
    fn flipping_any_single_bit_fails_to_open() {
        let bytes = sealed();
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[byte] ^= 1 << bit;
                let opened = SealedRecord::parse(&tampered).and_then(|r| {
                    // A flipped key id names another key; a reader looks keys up by id
                    // and would find none (or the wrong one).
                    if r.key_id() != KEY_ID {
                        return Err(VaultError::UnknownKey { id: hex::encode(r.key_id()) });
                    }
                    r.open(&KEY, b"ctx")
                });
                assert!(opened.is_err(), "bit {bit} of byte {byte} flipped still opened");
            }
        }
    }

    #[test]
    fn another_context_fails_to_open() {
        let bytes = sealed();
        let rec = SealedRecord::parse(&bytes).unwrap();
        assert_eq!(rec.open(&KEY, b"ctx2").unwrap_err(), VaultError::Authentication);
        assert_eq!(rec.open(&KEY, b"").unwrap_err(), VaultError::Authentication);
    }

    #[test]
    fn unknown_version_and_algorithm_are_named() {
        let mut bytes = sealed();
        bytes[2] = 9;
        assert_eq!(SealedRecord::parse(&bytes).unwrap_err(), VaultError::UnsupportedVersion(9));
        let mut bytes = sealed();
        bytes[3] = 7;
        let err = SealedRecord::parse(&bytes).unwrap_err();
        assert_eq!(err, VaultError::UnsupportedAlgorithm(7));
        assert!(err.to_string().contains("algorithm 7 is not supported"));
        let mut bytes = sealed();
        bytes[0] = b'X';
        assert_eq!(SealedRecord::parse(&bytes).unwrap_err(), VaultError::BadMagic);
    }

    #[test]
    fn key_ids_must_be_short_and_present() {
        assert_eq!(seal(&KEY, b"", b"", b"x").unwrap_err(), VaultError::MalformedKeyId);
        assert_eq!(seal(&KEY, &[1u8; 65], b"", b"x").unwrap_err(), VaultError::MalformedKeyId);
        let mut bytes = sealed();
        bytes[4] = 0;
        assert_eq!(SealedRecord::parse(&bytes).unwrap_err(), VaultError::MalformedKeyId);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(rec) = SealedRecord::parse(&bytes) {
                prop_assert!(rec.open(&KEY, b"ctx").is_err());
            }
        }

        #[test]
        fn every_truncation_is_an_error(cut in 0usize..60) {
            let bytes = sealed();
            let cut = cut.min(bytes.len() - 1);
            let truncated = &bytes[..cut];
            let result = SealedRecord::parse(truncated).and_then(|r| r.open(&KEY, b"ctx"));
            prop_assert!(result.is_err());
        }

        #[test]
        fn framed_garbage_after_a_valid_header_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..100)
        ) {
            let mut bytes = sealed()[..5 + KEY_ID.len()].to_vec();
            bytes.extend_from_slice(&tail);
            if let Ok(rec) = SealedRecord::parse(&bytes) {
                prop_assert!(rec.open(&KEY, b"ctx").is_err());
            }
        }
    }
}
