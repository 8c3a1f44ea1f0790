//! Host-application JWTs: HS256 with a shared secret and/or RS256 with keys from a JWKS
//! (a static set or a URL, cached and refetched on an unknown `kid`). A token must carry
//! `sub` and `exp`; `exp` and `nbf` are checked with [`LEEWAY_SECS`] of clock skew; an
//! `exp` further ahead than [`JwtOptions::max_lifetime`] is refused (a stolen long-lived
//! token would otherwise stay good for years); `iss` and `aud` must match when configured.
//! Refusals say why and never repeat the token.
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

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// What a host JWT must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// The furthest in the future an `exp` may lie (the longest-lived token accepted).
    pub max_lifetime: std::time::Duration,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must name it. Unset, a token naming any audience
    /// is refused (it was meant for someone else).
    pub audience: Option<String>,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self { max_lifetime: std::time::Duration::from_secs(24 * 3600), issuer: None, audience: None }
    }
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
    options: JwtOptions,
    fetched: tokio::sync::RwLock<Option<(JwkSet, std::time::Instant)>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks)
            .field("options", &self.options)
            .finish()
    }
}

/// How long fetched JWKS are trusted before a refetch (also the gap between refetches
/// triggered by an unknown `kid`).
const JWKS_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl JwtVerifier {
    pub fn new(hs256_secret: Option<&SecretText>, jwks: Option<JwksSource>, options: JwtOptions) -> Self {
        Self {
            hs256: hs256_secret.map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            jwks,
            options,
            fetched: tokio::sync::RwLock::new(None),
        }
    }

    pub async fn verify(&self, token: &str, http: &reqwest::Client) -> ServiceResult<HostClaims> {
        let bad = |why: String| ServiceError::Unauthenticated(format!("the JWT was rejected: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(self.reason(&e)))?;
        let key = match header.alg {
            Algorithm::HS256 => {
                self.hs256.clone().ok_or_else(|| bad("HS256 is not enabled (KEYGATE_JWT_HS256_SECRET)".into()))?
            }
            Algorithm::RS256 => self.rsa_key(header.kid.as_deref(), http).await?,
            other => return Err(bad(format!("algorithm {other:?} is not accepted (HS256 or RS256)"))),
        };
        let mut validation = Validation::new(header.alg);
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.options.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &self.options.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<HostClaims>(token, &key, &validation).map_err(|e| bad(self.reason(&e)))?;
        if data.claims.sub.trim().is_empty() {
            return Err(bad("`sub` is empty".into()));
        }
        let horizon = chrono::Utc::now().timestamp()
            + i64::try_from(self.options.max_lifetime.as_secs()).unwrap_or(i64::MAX / 2)
            + i64::try_from(LEEWAY_SECS).unwrap_or(0);
        if data.claims.exp > horizon {
            return Err(bad(format!(
                "`exp` lies further in the future than this keygate accepts ({} s at most, jwt_max_lifetime_secs): \
                 mint shorter-lived tokens",
                self.options.max_lifetime.as_secs()
            )));
        }
        Ok(data.claims)
    }

    /// Why a token was refused, in words (never the token or its claims' values).
    fn reason(&self, error: &jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match error.kind() {
            ErrorKind::ExpiredSignature => "it has expired (`exp` is in the past)".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (`nbf` is in the future)".into(),
            ErrorKind::InvalidSignature => "the signature does not verify".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("the `{claim}` claim is missing"),
            ErrorKind::InvalidIssuer => match &self.options.issuer {
                Some(issuer) => format!("its issuer (`iss`) is not `{issuer}` (jwt_issuer)"),
                None => "its issuer (`iss`) is not accepted".into(),
            },
            ErrorKind::InvalidAudience => match &self.options.audience {
                Some(audience) => format!("its audience (`aud`) does not name `{audience}` (jwt_audience)"),
                None => "it names an audience (`aud`) but this keygate has none configured (jwt_audience)".into(),
            },
            ErrorKind::Json(_) => {
                "its header or claims do not parse (`sub` must be a string, `exp` and `nbf` numbers)".into()
            }
            ErrorKind::Base64(_) | ErrorKind::InvalidToken | ErrorKind::Utf8(_) => "it is not a well-formed JWT".into(),
            _ => error.to_string(),
        }
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
