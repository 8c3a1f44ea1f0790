//! Host-application JWTs: HS256 with a shared secret and/or RS256 with keys from a JWKS
//! (a static set or a URL, cached and refetched on an unknown `kid`).
//!
//! Not for: deciding who the caller is in keygate (provisioning is in `auth`).

use crate::{ServiceError, ServiceResult};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keygate_vault::SecretText;
use serde::Deserialize;
use std::fmt;

/// The claims keygate reads from a host JWT.
#[derive(Debug, Clone, Deserialize)]
pub struct HostClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    pub exp: i64,
}

/// Where RS256 keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Static(JwkSet),
    Url(String),
}

/// Verifies host JWTs: HS256 with a shared secret and/or RS256 with a JWKS.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksSource>,
    fetched: tokio::sync::RwLock<Option<(JwkSet, std::time::Instant)>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier").field("hs256", &self.hs256.is_some()).field("jwks", &self.jwks).finish()
    }
}

/// How long fetched JWKS are trusted before a refetch (also the gap between refetches
/// triggered by an unknown `kid`).
const JWKS_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl JwtVerifier {
    pub fn new(hs256_secret: Option<&SecretText>, jwks: Option<JwksSource>) -> Self {
        Self {
            hs256: hs256_secret.map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            jwks,
            fetched: tokio::sync::RwLock::new(None),
        }
    }

    pub async fn verify(&self, token: &str, http: &reqwest::Client) -> ServiceResult<HostClaims> {
        let bad = |why: String| ServiceError::Unauthenticated(format!("the JWT was rejected: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => {
                self.hs256.clone().ok_or_else(|| bad("HS256 is not enabled (KEYGATE_JWT_HS256_SECRET)".into()))?
            }
            Algorithm::RS256 => self.rsa_key(header.kid.as_deref(), http).await?,
            other => return Err(bad(format!("algorithm {other:?} is not accepted (HS256 or RS256)"))),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<HostClaims>(token, &key, &validation).map_err(|e| bad(e.to_string()))?;
        if data.claims.sub.trim().is_empty() {
            return Err(bad("`sub` is empty".into()));
        }
        Ok(data.claims)
    }

    async fn rsa_key(&self, kid: Option<&str>, http: &reqwest::Client) -> ServiceResult<DecodingKey> {
        let bad = |why: String| ServiceError::Unauthenticated(format!("the JWT was rejected: {why}"));
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        match &self.jwks {
            None => Err(bad("RS256 is not enabled (KEYGATE_JWT_JWKS)".into())),
            Some(JwksSource::Static(set)) => {
                find(set).ok_or_else(|| bad("no key in the JWKS matches the token's kid".into()))
            }
            Some(JwksSource::Url(url)) => {
                if let Some((set, at)) = &*self.fetched.read().await {
                    if let Some(key) = find(set) {
                        if at.elapsed() < JWKS_TTL {
                            return Ok(key);
                        }
                    } else if at.elapsed() < std::time::Duration::from_secs(60) {
                        return Err(bad("no key in the JWKS matches the token's kid".into()));
                    }
                }
                let set: JwkSet = http
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| bad(format!("the JWKS could not be fetched: {e}")))?
                    .json()
                    .await
                    .map_err(|e| bad(format!("the JWKS is not a JWK set: {e}")))?;
                let key = find(&set);
                *self.fetched.write().await = Some((set, std::time::Instant::now()));
                key.ok_or_else(|| bad("no key in the JWKS matches the token's kid".into()))
            }
        }
    }
}
