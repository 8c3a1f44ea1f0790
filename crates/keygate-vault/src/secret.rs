//! Secret types. A [`SecretText`] is a provider key, token or password in the clear: it
//! lives in a zeroizing buffer, its `Debug` shows at most `…abcd`, and it implements
//! neither `Display` nor `Serialize`, so it cannot reach a log line or a response by
//! accident.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use zeroize::Zeroizing;

/// Below this length a secret's hint shows nothing of it.
const MIN_LEN_FOR_HINT: usize = 12;

/// A secret string, zeroized on drop.
#[derive(Clone)]
pub struct SecretText(SecretString);

impl SecretText {
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// Takes over a decrypted buffer; `None` if it is not UTF-8.
    pub fn from_utf8(bytes: Zeroizing<Vec<u8>>) -> Option<Self> {
        std::str::from_utf8(&bytes).ok().map(|s| Self::new(s.to_owned()))
    }

    /// The secret itself: only for the outbound call, sealing or hashing.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// `…abcd`: the last four characters, or `…` alone for short secrets.
    pub fn hint(&self) -> String {
        hint(self.expose())
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl From<String> for SecretText {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText({})", self.hint())
    }
}

/// `…abcd` for a secret: its last four characters when it is long enough that they say
/// nothing useful about the rest.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < MIN_LEN_FOR_HINT {
        return "…".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_only_the_hint() {
        let s = SecretText::new("sk-ant-api03-verysecretvalue-wxyz".into());
        assert_eq!(format!("{s:?}"), "SecretText(…wxyz)");
        assert_eq!(SecretText::new("short".into()).hint(), "…");
    }
}

/// `len` random characters from `[A-Za-z0-9]`, uniformly (rejection sampling over the
/// operating system's generator): token ids and secrets.
/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in crate::cipher::random_bytes::<64>().iter() {
            // 248 = 4 * 62: accepting only bytes below it keeps every character equally likely.
            if *byte < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(*byte % 62)]));
            }
        }
    }
    out
}

/// SHA-256 of `data`: how tokens are stored.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(data).into()
}

/// Constant-time equality, for comparing token hashes.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn random_alphanumeric_has_the_length_and_alphabet_asked_for() {
        let a = random_alphanumeric(40);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_alphanumeric(40));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
