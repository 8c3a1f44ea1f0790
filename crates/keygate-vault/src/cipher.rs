//! AES-256-GCM, wrapped so the rest of keygate never touches the primitive directly.
//! Plaintext buffers are zeroized on drop; decryption happens in place.

use crate::VaultError;
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// A fresh random 96-bit nonce from the operating system's generator.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Fills a buffer with random bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    OsRng.fill_bytes(out.as_mut());
    out
}

/// Encrypts `plaintext` and returns `ciphertext || tag`.
pub fn seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    // Encryption with a valid key and a buffer under 64 GiB cannot fail.
    match cipher.encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf) {
        Ok(tag) => buf.extend_from_slice(&tag),
        Err(_) => unreachable_encrypt(),
    }
    buf
}

#[cold]
fn unreachable_encrypt() -> ! {
    // aes-gcm only fails encryption for messages longer than 2^36 bytes.
    panic!("AES-256-GCM encryption failed: message too long")
}

/// Decrypts `ciphertext || tag` into a zeroizing buffer.
pub fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let Some(split) = ciphertext_and_tag.len().checked_sub(TAG_LEN) else {
        return Err(VaultError::Truncated { len: ciphertext_and_tag.len() });
    };
    let (ciphertext, tag) = ciphertext_and_tag.split_at(split);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf, Tag::from_slice(tag))
        .map_err(|_| VaultError::Authentication)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    /// Test cases 13, 14 and 16 of McGrew & Viega, "The Galois/Counter Mode of Operation
    /// (GCM)" (the vectors NIST's GCM validation suite includes), for 256-bit keys.
    #[test]
    fn published_aes_256_gcm_vectors_pass_through_the_wrapper() {
        struct Vector {
            key: &'static str,
            iv: &'static str,
            pt: &'static str,
            aad: &'static str,
            ct: &'static str,
            tag: &'static str,
        }
        let vectors = [
            Vector {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                pt: "",
                aad: "",
                ct: "",
                tag: "530f8afbc74536b9a963b4f1c4cb738b",
            },
            Vector {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                pt: "00000000000000000000000000000000",
                aad: "",
                ct: "cea7403d4d606b6e074ec5d3baf39d18",
                tag: "d0d1c8a799996bf0265b98b5d48ab919",
            },
            Vector {
                key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                iv: "cafebabefacedbaddecaf888",
                pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                     1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                     8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                tag: "76fc6ece0f4e1768cddf8853bb2d551b",
            },
        ];
        for v in vectors {
            let key: [u8; 32] = unhex(v.key);
            let iv: [u8; 12] = unhex(v.iv);
            let pt = hex::decode(v.pt.replace(' ', "")).unwrap();
            let aad = hex::decode(v.aad).unwrap();
            let expected = format!("{}{}", v.ct.replace(' ', ""), v.tag);
            let sealed = seal(&key, &iv, &aad, &pt);
            assert_eq!(hex::encode(&sealed), expected);
            let opened = open(&key, &iv, &aad, &sealed).unwrap();
            assert_eq!(opened.as_slice(), pt.as_slice());
        }
    }

    #[test]
    fn wrong_aad_or_key_fails_authentication() {
        let key = [7u8; 32];
        let nonce = random_nonce();
        let sealed = seal(&key, &nonce, b"row-1", b"secret");
        assert_eq!(open(&key, &nonce, b"row-2", &sealed).unwrap_err(), VaultError::Authentication);
        assert_eq!(open(&[8u8; 32], &nonce, b"row-1", &sealed).unwrap_err(), VaultError::Authentication);
        assert!(matches!(open(&key, &nonce, b"row-1", &sealed[..10]), Err(VaultError::Truncated { .. })));
    }
}
