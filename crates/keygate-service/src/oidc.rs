//! Single sign-on for the pages: OpenID Connect, authorization code with PKCE (S256),
//! against any number of configured issuers (Google, Microsoft, Okta, a company's
//! Keycloak) side by side.
//!
//! A sign-in is two requests. [`Services::oidc_begin`] answers the issuer's
//! authorization URL and a **flow** value for a short-lived cookie: the provider, a
//! random seed, where to go afterwards, an expiry, and (for the setup wizard) proof that
//! this browser entered the valid setup code, all signed with a key of the deployment.
//! `state`, `nonce` and the PKCE `code_verifier` are derived from the seed with that key,
//! so the verifier never reaches the browser and a flow cannot be forged.
//! [`Services::oidc_finish`] takes the issuer's answer: the `state` must be the flow's,
//! the code is exchanged at the token endpoint (with the client secret and the
//! verifier), and the ID token is verified against the issuer's JWKS (RS256 or ES256;
//! the JWKS cached and fetched again once on an unknown `kid`): `iss` exactly the
//! issuer, `aud` naming the client id (and `azp` it, when there are several audiences),
//! `exp`, `nbf` and `iat` within [`CLOCK_SKEW_SECS`], `nonce` the flow's. Then the email must
//! be verified and allowed, and the person is found or created:
//!
//! 1. an identity (issuer, `sub`) already linked to a user signs in as that user;
//! 2. else a user whose email is the verified email (a password user, or a host
//!    application's user whose JWT carried that email) gets the identity linked;
//! 3. else a new user (with a personal workspace) is made, if the provider's lists allow
//!    the email.
//!
//! Who may sign in: an email in `super_admin_emails`, in `allowed_emails`, or at a domain
//! in `allowed_domains`. With neither `allowed_emails` nor `allowed_domains` set, only
//! people who already have a keygate account (and the super-admin emails) may. Emails in
//! `super_admin_emails` become super-admins as they sign in: only the account whose own
//! stored email is the listed one (ASCII case ignored), not an identity linked earlier to
//! another account whose issuer now vouches for a listed address. Emails are plain ASCII
//! (folded in ASCII only), one `@`, a dotted domain, no spaces or control characters;
//! anything else is refused (403, audited).
//!
//! Refusals ([`OidcRefusal`]) say what happened and what to do, and never carry the
//! code, a token or the client secret.
//!
//! Not for: cookies and pages (keygate-server), the session itself (`sessions`).

use crate::accounts::{parse_email, EmailAddress};
use crate::audit::{self, Actor, Entry};
use crate::auth::IssuedToken;
use crate::services::Services;
use crate::{now, ServiceError, ServiceResult};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keygate_core::*;
use keygate_vault::{constant_time_eq, hmac_sha256, random_alphanumeric, sha256, SecretText};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clock skew tolerated on an ID token's `exp`, `nbf` and `iat`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// How long a started sign-in may take (the flow cookie's life), in seconds.
pub const FLOW_SECS: i64 = 600;
/// How long a discovery document and a JWKS are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The store's meta row holding the key that signs flows (the same on every replica).
const FLOW_KEY_META_KEY: &str = "oidc_flow_key";

/// One configured issuer.
#[derive(Clone)]
pub struct OidcProvider {
    /// In paths (`/login/oidc/<id>`): lower-case letters, digits, `-` and `_`.
    pub id: String,
    /// Shown on buttons: "Sign in with <name>".
    pub name: String,
    /// Exactly the issuer's `iss`; discovery at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretText,
    /// `<public_url>/login/oidc/<id>/callback`, registered at the issuer.
    pub redirect_uri: String,
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub super_admin_emails: Vec<String>,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    fn lists_open(&self) -> bool {
        !self.allowed_emails.is_empty() || !self.allowed_domains.is_empty()
    }

    fn is_super_admin(&self, email: &str) -> bool {
        self.super_admin_emails.iter().any(|e| e.trim().eq_ignore_ascii_case(email))
    }

    /// Whether the lists name this email (explicitly, by domain, or as a super-admin):
    /// the parse the account gets, so the domain checked is the account's domain.
    fn permits(&self, email: &EmailAddress) -> bool {
        self.is_super_admin(&email.address)
            || self.allowed_emails.iter().any(|e| e.trim().eq_ignore_ascii_case(&email.address))
            || self.allowed_domains.iter().any(|d| d.trim().trim_start_matches('@').eq_ignore_ascii_case(&email.domain))
    }
}

/// Why a sign-in was refused, and what status a page shows it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The answer does not fit the sign-in this browser started, or the ID token does not
    /// verify (400).
    Invalid,
    /// The person may not sign in here (403).
    Denied,
    /// The issuer could not be reached or refused keygate itself (502).
    Unreachable,
    /// The deployment was claimed meanwhile (409).
    Conflict,
    /// keygate's own trouble (the database) (500).
    Internal,
}

/// A refused sign-in: a title and a sentence saying what happened and what to do.
#[derive(Debug, Clone)]
pub struct OidcRefusal {
    pub kind: RefusalKind,
    pub title: &'static str,
    pub detail: String,
}

impl OidcRefusal {
    fn invalid(title: &'static str, detail: impl Into<String>) -> Self {
        Self { kind: RefusalKind::Invalid, title, detail: detail.into() }
    }

    fn denied(title: &'static str, detail: impl Into<String>) -> Self {
        Self { kind: RefusalKind::Denied, title, detail: detail.into() }
    }

    fn unreachable(detail: impl Into<String>) -> Self {
        Self { kind: RefusalKind::Unreachable, title: "The sign-in service did not answer", detail: detail.into() }
    }

    fn restart() -> Self {
        Self::invalid(
            "This sign-in cannot be finished",
            "This sign-in was not started in this browser, or took longer than 10 minutes. Start again from the sign-in page.",
        )
    }
}

impl From<ServiceError> for OidcRefusal {
    fn from(e: ServiceError) -> Self {
        let (kind, title) = match &e {
            ServiceError::Conflict(_) => (RefusalKind::Conflict, "Already set up"),
            ServiceError::Forbidden(_) => (RefusalKind::Denied, "Not allowed"),
            ServiceError::Unauthenticated(_) | ServiceError::Invalid { .. } => {
                (RefusalKind::Invalid, "That did not work")
            }
            _ => (RefusalKind::Internal, "Something went wrong"),
        };
        Self { kind, title, detail: e.to_string() }
    }
}

/// A sign-in started: send the browser to `authorize_url`, with `flow` in a cookie.
#[derive(Debug)]
pub struct OidcStart {
    pub authorize_url: String,
    pub flow: String,
}

/// What the issuer sent back to the callback.
#[derive(Default, Deserialize)]
pub struct OidcCallback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl fmt::Debug for OidcCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcCallback").field("error", &self.error).finish_non_exhaustive()
    }
}

/// A finished sign-in.
#[derive(Debug)]
pub struct OidcSignedIn {
    pub user: User,
    pub session: IssuedToken,
    /// Where to go: the page asked for, or the wizard's next step after a claim.
    pub next: String,
    /// The setup wizard was claimed by this sign-in.
    pub claimed_setup: bool,
}

/// The signed content of a flow cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    /// Provider id.
    p: String,
    /// Seed of `state`, `nonce` and the code verifier.
    s: String,
    /// Where to go afterwards (already checked by the caller).
    n: String,
    /// Expiry, Unix seconds.
    x: i64,
    /// Setup wizard: proof the setup code was checked, bound to the outstanding code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
}

/// The claims keygate reads from an ID token.
#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    iat: i64,
    #[serde(default)]
    azp: Option<String>,
    /// Checked by jsonwebtoken; read here only to count the audiences.
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

/// The configured issuers, the key signing flows, and the issuers' cached metadata.
pub(crate) struct Oidc {
    providers: Vec<OidcProvider>,
    key: [u8; 32],
    discovery: Mutex<HashMap<String, (Arc<Discovery>, Instant)>>,
    jwks: Mutex<HashMap<String, (Arc<JwkSet>, Instant)>>,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc").field("providers", &self.providers).finish_non_exhaustive()
    }
}

impl Oidc {
    pub(crate) async fn load(store: &dyn keygate_store::Store, providers: Vec<OidcProvider>) -> ServiceResult<Self> {
        let fresh = keygate_vault::cipher::random_bytes::<32>();
        store.meta_insert(FLOW_KEY_META_KEY, fresh.as_ref(), now()).await?;
        let stored = store.meta_get(FLOW_KEY_META_KEY).await?.unwrap_or_default();
        let key: [u8; 32] = stored.as_slice().try_into().map_err(|_| ServiceError::Invalid {
            field: FLOW_KEY_META_KEY,
            problem: "the stored key is not 32 bytes".into(),
        })?;
        Ok(Self { providers, key, discovery: Mutex::default(), jwks: Mutex::default() })
    }

    fn derive(&self, label: &str, seed: &str) -> String {
        hex(&hmac_sha256(&self.key, format!("keygate/oidc/{label}/v1:{seed}").as_bytes()))
    }

    fn seal(&self, flow: &Flow) -> String {
        let body = hex(serde_json::to_string(flow).unwrap_or_default().as_bytes());
        format!("{body}.{}", self.derive("flow", &body))
    }

    fn open(&self, value: &str) -> Option<Flow> {
        let (body, mac) = value.split_once('.')?;
        if !constant_time_eq(self.derive("flow", body).as_bytes(), mac.as_bytes()) {
            return None;
        }
        let bytes = unhex(body)?;
        let flow: Flow = serde_json::from_slice(&bytes).ok()?;
        (flow.x > now().timestamp()).then_some(flow)
    }

    fn setup_proof(&self, seed: &str, stored_code_hash: &[u8]) -> String {
        self.derive("setup", &format!("{seed}:{}", hex(stored_code_hash)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Unpadded base64url (the PKCE code challenge).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The query string of `pairs`, percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

impl Services {
    /// The configured issuers, as (id, name), for sign-in buttons.
    pub fn oidc_providers(&self) -> Vec<(String, String)> {
        self.oidc.providers.iter().map(|p| (p.id.clone(), p.name.clone())).collect()
    }

    fn oidc_provider(&self, id: &str) -> Result<&OidcProvider, OidcRefusal> {
        self.oidc.providers.iter().find(|p| p.id == id).ok_or_else(|| {
            OidcRefusal::invalid(
                "No such sign-in",
                format!("No sign-in provider `{id}` is configured here: use a button on the sign-in page."),
            )
        })
    }

    /// Starts a sign-in with provider `id`: where to send the browser, and the flow value
    /// to keep in a cookie until the issuer sends the browser back. `next` must already
    /// be a safe place (a page of this site). With `setup_code`, the sign-in claims a fresh
    /// deployment: the code is checked now (not spent) and the proof travels in the flow.
    pub async fn oidc_begin(
        &self,
        id: &str,
        next: &str,
        setup_code: Option<&SecretText>,
    ) -> Result<OidcStart, OidcRefusal> {
        let provider = self.oidc_provider(id)?;
        let seed = random_alphanumeric(32);
        let proof = match setup_code {
            Some(code) => Some(self.oidc.setup_proof(&seed, &self.check_setup_code(code).await?)),
            None => None,
        };
        let discovery = self.discovery(provider).await?;
        let flow = Flow {
            p: provider.id.clone(),
            s: seed.clone(),
            n: next.to_owned(),
            x: now().timestamp() + FLOW_SECS,
            c: proof,
        };
        let state = self.oidc.derive("state", &seed);
        let nonce = self.oidc.derive("nonce", &seed);
        let challenge = base64url(&sha256(self.oidc.derive("pkce", &seed).as_bytes()));
        let params = query(&[
            ("response_type", "code"),
            ("client_id", &provider.client_id),
            ("redirect_uri", &provider.redirect_uri),
            ("scope", "openid email profile"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let separator = if discovery.authorization_endpoint.contains('?') { '&' } else { '?' };
        Ok(OidcStart {
            authorize_url: format!("{}{separator}{params}", discovery.authorization_endpoint),
            flow: self.oidc.seal(&flow),
        })
    }

    /// Finishes a sign-in with provider `id`: `flow` is the cookie [`Services::oidc_begin`]
    /// made (absent if the browser lost it), `callback` what the issuer sent back.
    pub async fn oidc_finish(
        &self,
        id: &str,
        flow: Option<&str>,
        callback: &OidcCallback,
        source_addr: Option<String>,
    ) -> Result<OidcSignedIn, OidcRefusal> {
        let provider = self.oidc_provider(id)?;
        let flow =
            flow.and_then(|f| self.oidc.open(f)).filter(|f| f.p == provider.id).ok_or_else(OidcRefusal::restart)?;
        let state = self.oidc.derive("state", &flow.s);
        let presented = callback.state.as_deref().unwrap_or_default();
        if !constant_time_eq(state.as_bytes(), presented.as_bytes()) {
            return Err(OidcRefusal::invalid(
                "This sign-in cannot be finished",
                "The answer from the sign-in service does not belong to the sign-in this browser started (its `state` \
                 does not match). Nothing was signed in. Start again from the sign-in page.",
            ));
        }
        if let Some(error) = &callback.error {
            let said = callback
                .error_description
                .as_deref()
                .map(|d| format!(" ({})", keygate_vault::redact::scrub(&d.chars().take(200).collect::<String>())))
                .unwrap_or_default();
            let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(60).collect();
            return Err(if error == "access_denied" {
                OidcRefusal::denied(
                    "Sign-in cancelled",
                    format!("{} did not sign you in{said}. Start again if you meant to.", provider.name),
                )
            } else {
                OidcRefusal::invalid(
                    "The sign-in service refused",
                    format!("{} answered `{error}`{said}. Start again; if it keeps failing, ask an administrator to check the provider's configuration.", provider.name),
                )
            });
        }
        let code = callback.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
            OidcRefusal::invalid(
                "This sign-in cannot be finished",
                "The sign-in service sent no authorization code. Start again from the sign-in page.",
            )
        })?;
        let discovery = self.discovery(provider).await?;
        let id_token = self.exchange(provider, &discovery, code, &flow.s).await?;
        let claims = self.verify_id_token(provider, &discovery, &id_token, &flow.s).await?;
        self.admit_identity(provider, &flow, claims, source_addr).await
    }

    /// The issuer's discovery document, cached.
    async fn discovery(&self, provider: &OidcProvider) -> Result<Arc<Discovery>, OidcRefusal> {
        if let Some((doc, at)) = lock(&self.oidc.discovery).get(&provider.id) {
            if at.elapsed() < METADATA_TTL {
                return Ok(doc.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", provider.issuer.trim_end_matches('/'));
        let unreachable = |why: String| {
            OidcRefusal::unreachable(format!(
                "keygate could not read {}'s OpenID configuration ({why}). Try again in a minute; if it keeps \
                 failing, an administrator should check the issuer URL `{}`.",
                provider.name, provider.issuer
            ))
        };
        let doc: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| unreachable(describe_http(&e)))?
            .json()
            .await
            .map_err(|_| unreachable("the answer is not a discovery document".into()))?;
        if doc.issuer != provider.issuer {
            return Err(unreachable(format!("it names its issuer `{}`, not the configured one", doc.issuer)));
        }
        let doc = Arc::new(doc);
        lock(&self.oidc.discovery).insert(provider.id.clone(), (doc.clone(), Instant::now()));
        Ok(doc)
    }

    /// The code for an ID token at the token endpoint. The client secret goes in the form
    /// (`client_secret_post`) unless the issuer supports only `client_secret_basic`.
    async fn exchange(
        &self,
        provider: &OidcProvider,
        discovery: &Discovery,
        code: &str,
        seed: &str,
    ) -> Result<SecretText, OidcRefusal> {
        let verifier = self.oidc.derive("pkce", seed);
        let methods = discovery.token_endpoint_auth_methods_supported.as_deref().unwrap_or_default();
        let basic = !methods.is_empty()
            && !methods.iter().any(|m| m == "client_secret_post")
            && methods.iter().any(|m| m == "client_secret_basic");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", provider.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
            ("client_id", provider.client_id.as_str()),
        ];
        let mut request = self.http.post(&discovery.token_endpoint).header("accept", "application/json");
        if basic {
            request = request.basic_auth(&provider.client_id, Some(provider.client_secret.expose()));
        } else {
            form.push(("client_secret", provider.client_secret.expose()));
        }
        let unreachable = |why: String| {
            OidcRefusal::unreachable(format!(
                "keygate could not finish the sign-in with {} ({why}). Start again in a minute.",
                provider.name
            ))
        };
        let response = request.form(&form).send().await.map_err(|e| unreachable(describe_http(&e)))?;
        let status = response.status();
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|_| unreachable(format!("its token endpoint answered HTTP {} without JSON", status.as_u16())))?;
        match (status.is_success(), answer.error.as_deref(), answer.id_token) {
            (true, _, Some(token)) => Ok(SecretText::new(token)),
            (true, _, None) => Err(unreachable("its token endpoint sent no ID token".into())),
            (false, Some("invalid_grant"), _) => Err(OidcRefusal::invalid(
                "This sign-in link was already used",
                format!(
                    "{} says the sign-in code was already used or has expired (invalid_grant): a sign-in answer works \
                     once. Start again from the sign-in page.",
                    provider.name
                ),
            )),
            (false, Some("invalid_client"), _) => Err(unreachable(
                "it refused keygate's client id or secret (invalid_client): an administrator should check this \
                 provider's client_id and client_secret"
                    .into(),
            )),
            (false, error, _) => Err(unreachable(format!(
                "its token endpoint answered HTTP {}{}",
                status.as_u16(),
                error
                    .map(|e| format!(" `{}`", e.chars().filter(char::is_ascii_graphic).take(60).collect::<String>()))
                    .unwrap_or_default()
            ))),
        }
    }

    /// The ID token's claims, once its signature, issuer, audience, times and nonce check.
    async fn verify_id_token(
        &self,
        provider: &OidcProvider,
        discovery: &Discovery,
        token: &SecretText,
        seed: &str,
    ) -> Result<IdClaims, OidcRefusal> {
        let bad = |why: &str| {
            OidcRefusal::invalid(
                "The sign-in could not be verified",
                format!("The ID token from {} was refused: {why}. Nothing was signed in; start again.", provider.name),
            )
        };
        let header = jsonwebtoken::decode_header(token.expose()).map_err(|_| bad("it is not a well-formed JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(bad(&format!("it is signed with {:?}; keygate accepts RS256 and ES256", header.alg)));
        }
        let key = self.signing_key(provider, discovery, header.kid.as_deref()).await?;
        let key = key.ok_or_else(|| bad("it is signed with a key the issuer does not publish (unknown `kid`)"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&provider.issuer]);
        validation.set_audience(&[&provider.client_id]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<IdClaims>(token.expose(), &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                bad(match e.kind() {
                    ErrorKind::ExpiredSignature => "it has expired (its `exp` is more than a minute in the past); check the server's clock if this keeps happening",
                    ErrorKind::InvalidAudience => "it was issued for another application (its `aud` does not name this client id)",
                    ErrorKind::InvalidIssuer => "it names another issuer (`iss`)",
                    ErrorKind::InvalidSignature => "its signature does not verify",
                    ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iat, iss, aud, sub) is missing",
                    ErrorKind::ImmatureSignature => "it is not valid yet (its `nbf` is more than a minute in the future); check the server's clock if this keeps happening",
                    _ => "it does not parse",
                })
            })?
            .claims;
        if claims.iat > now().timestamp() + i64::try_from(CLOCK_SKEW_SECS).unwrap_or(60) {
            return Err(bad("it was issued in the future (`iat`); check the server's clock"));
        }
        if claims.aud.as_array().is_some_and(|a| a.len() > 1) && claims.azp.is_none() {
            return Err(bad("it names several audiences but no authorized party (`azp`)"));
        }
        if claims.azp.as_deref().is_some_and(|azp| azp != provider.client_id) {
            return Err(bad("it was issued to another application (`azp`)"));
        }
        let nonce = self.oidc.derive("nonce", seed);
        if !claims.nonce.as_deref().is_some_and(|n| constant_time_eq(n.as_bytes(), nonce.as_bytes())) {
            return Err(bad("its `nonce` is not the one this sign-in sent (a replayed answer)"));
        }
        if claims.sub.trim().is_empty() {
            return Err(bad("its `sub` is empty"));
        }
        Ok(claims)
    }

    /// The issuer's key named `kid`, from the cached JWKS, fetched again once if the key
    /// is not in it (the issuer rotated its keys). `None`: not published.
    async fn signing_key(
        &self,
        provider: &OidcProvider,
        discovery: &Discovery,
        kid: Option<&str>,
    ) -> Result<Option<DecodingKey>, OidcRefusal> {
        let find = |set: &JwkSet| {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            }?;
            DecodingKey::from_jwk(jwk).ok()
        };
        let cached = lock(&self.oidc.jwks).get(&provider.id).filter(|(_, at)| at.elapsed() < METADATA_TTL).cloned();
        if let Some((set, _)) = cached {
            if let Some(key) = find(&set) {
                return Ok(Some(key));
            }
        }
        let set: JwkSet = self
            .http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| {
                OidcRefusal::unreachable(format!(
                    "keygate could not fetch {}'s signing keys ({}). Start again in a minute.",
                    provider.name,
                    describe_http(&e)
                ))
            })?
            .json()
            .await
            .map_err(|_| {
                OidcRefusal::unreachable(format!(
                    "{}'s signing keys (JWKS) do not parse. Start again later.",
                    provider.name
                ))
            })?;
        let key = find(&set);
        lock(&self.oidc.jwks).insert(provider.id.clone(), (Arc::new(set), Instant::now()));
        Ok(key)
    }

    /// After the ID token verified: the email rules, the user, the session.
    async fn admit_identity(
        &self,
        provider: &OidcProvider,
        flow: &Flow,
        claims: IdClaims,
        source_addr: Option<String>,
    ) -> Result<OidcSignedIn, OidcRefusal> {
        let issuer = provider.issuer.as_str();
        let raw_email = claims.email.as_deref().unwrap_or_default();
        if raw_email.trim().is_empty() {
            return Err(OidcRefusal::denied(
                "No email address",
                format!("{} did not share an email address, which keygate needs: allow the `email` scope, then sign in again.", provider.name),
            ));
        }
        let linked = self.store.user_by_identity(issuer, &claims.sub).await.map_err(ServiceError::from)?;
        // Plain ASCII, one `@`, no control characters: the allow-lists and the account
        // read this one parse, and no Unicode case folding can make it another's address.
        let parsed = if raw_email.is_ascii() { parse_email(raw_email).ok() } else { None };
        let Some(parsed) = parsed else {
            let shown: String = raw_email.trim().chars().take(100).flat_map(char::escape_debug).collect();
            let actor = Actor {
                user_id: linked.as_ref().map(|u| u.id),
                label: format!("oidc:{}:{shown}", provider.id),
                source_addr: source_addr.clone(),
            };
            let refusal = OidcRefusal::denied(
                "Email address not accepted",
                format!(
                    "{} vouches for the email address `{shown}`, which keygate does not accept: it takes plain ASCII \
                     addresses with exactly one `@`, a domain with a dot, and no spaces or control characters. Use \
                     an account with such an address, or ask an administrator.",
                    provider.name
                ),
            );
            let user = linked.as_ref().map(|u| u.id);
            return self.refused(provider, &actor, user, &shown, "email not accepted", refusal).await;
        };
        let email = parsed.address.clone();
        let by_email = match &linked {
            Some(_) => None,
            None => self.store.user_by_email(&email).await.map_err(ServiceError::from)?,
        };
        let known = linked.as_ref().or(by_email.as_ref());
        let actor = Actor {
            user_id: known.map(|u| u.id),
            label: format!("oidc:{}:{email}", provider.id),
            source_addr: source_addr.clone(),
        };
        let known_id = known.map(|u| u.id);
        let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
            || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
        if !verified {
            let refusal = OidcRefusal::denied(
                "Email address not verified",
                format!(
                    "{} says your email address {email} is not verified. Verify it with {} first, then sign in again.",
                    provider.name, provider.name
                ),
            );
            return self.refused(provider, &actor, known_id, &email, "email not verified", refusal).await;
        }
        let claiming = flow.c.is_some();
        let allowed = provider.permits(&parsed) || (!provider.lists_open() && (known.is_some() || claiming));
        if !allowed {
            let detail = if known.is_none() && !provider.lists_open() {
                format!("No keygate account uses {email}, and signing in with {} does not create accounts here. Ask an administrator to add you.", provider.name)
            } else {
                format!(
                    "{email} may not sign in here with {}. Use an allowed address, or ask an administrator.",
                    provider.name
                )
            };
            let refusal = OidcRefusal::denied("Not allowed to sign in", detail);
            return self.refused(provider, &actor, known_id, &email, "email not allowed", refusal).await;
        }
        if claiming {
            return self.claim_setup_with_identity(provider, flow, &claims.sub, &email, known.cloned(), actor).await;
        }
        let mut user = match (linked, by_email) {
            (Some(user), _) => user,
            (None, Some(user)) => {
                self.link(issuer, &claims.sub, &user, &actor, provider).await?;
                user
            }
            (None, None) => self.create_identity_user(issuer, &claims.sub, &email, &actor, provider).await?,
        };
        // Only the account whose own email is the listed one: an identity linked earlier
        // whose issuer now vouches for a listed address signs in, unpromoted.
        let own_email = user.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(&email));
        if provider.is_super_admin(&email) && own_email && !user.super_admin {
            user = self.promote(user, &actor, provider).await?;
        }
        let session = self.signed_in(&user, &actor, provider).await?;
        Ok(OidcSignedIn { user, session, next: flow.n.clone(), claimed_setup: false })
    }

    /// Records a refused sign-in (by a person keygate can name) and answers the refusal.
    async fn refused(
        &self,
        provider: &OidcProvider,
        actor: &Actor,
        user: Option<UserId>,
        email: &str,
        reason: &str,
        refusal: OidcRefusal,
    ) -> Result<OidcSignedIn, OidcRefusal> {
        let detail = serde_json::json!({"via": "oidc", "provider": provider.id, "email": email, "reason": reason});
        audit::record(
            &*self.store,
            actor,
            Entry {
                action: AuditAction::AuthLogin,
                target_type: "user",
                target_id: user.map(|u| u.to_string()),
                workspace_id: None,
                result: AuditResult::Denied,
                detail: Some(detail.to_string()),
            },
        )
        .await?;
        Err(refusal)
    }

    async fn claim_setup_with_identity(
        &self,
        provider: &OidcProvider,
        flow: &Flow,
        subject: &str,
        email: &str,
        known: Option<User>,
        actor: Actor,
    ) -> Result<OidcSignedIn, OidcRefusal> {
        if self.has_super_admin().await? {
            return Err(ServiceError::Conflict("this keygate has already been claimed: sign in instead".into()).into());
        }
        let stored = self.outstanding_setup_code().await?;
        let proof = flow.c.as_deref().unwrap_or_default();
        if !constant_time_eq(self.oidc.setup_proof(&flow.s, &stored).as_bytes(), proof.as_bytes()) {
            return Err(OidcRefusal::invalid(
                "The setup code changed",
                "The setup code you entered is no longer the one in force (keygate restarted, or it was used). Enter \
                 the code from the latest `setup code:` line in keygate's log and start again.",
            ));
        }
        self.spend_setup_code(&stored).await?;
        let result = async {
            let user = match known {
                Some(user) => {
                    if self.store.user_by_identity(&provider.issuer, subject).await?.is_none() {
                        self.link(&provider.issuer, subject, &user, &actor, provider).await?;
                    }
                    user
                }
                None => self.create_identity_user(&provider.issuer, subject, email, &actor, provider).await?,
            };
            self.promote(user, &actor, provider).await
        }
        .await;
        let user = match result {
            Ok(user) => user,
            Err(e) => {
                // Give the code back, so a failure here does not lock the owner out.
                self.return_setup_code(&stored).await?;
                return Err(e.into());
            }
        };
        self.mark_setup_claimed().await?;
        let session = self.signed_in(&user, &actor, provider).await?;
        self.changed().await;
        Ok(OidcSignedIn { user, session, next: "/setup?step=2&done=claimed".into(), claimed_setup: true })
    }

    async fn link(
        &self,
        issuer: &str,
        subject: &str,
        user: &User,
        actor: &Actor,
        provider: &OidcProvider,
    ) -> ServiceResult<()> {
        self.store.link_identity(issuer, subject, user.id, now()).await?;
        audit::record(
            &*self.store,
            actor,
            Entry {
                action: AuditAction::UserUpdate,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: Some(serde_json::json!({"linked_identity": provider.id, "issuer": issuer}).to_string()),
            },
        )
        .await
    }

    async fn create_identity_user(
        &self,
        issuer: &str,
        subject: &str,
        email: &str,
        actor: &Actor,
        provider: &OidcProvider,
    ) -> ServiceResult<User> {
        let at = now();
        let user = User {
            id: UserId::new(),
            email: Some(email.to_owned()),
            external_id: None,
            tier: self.policy().default_tier.clone(),
            super_admin: false,
            created_at: at,
            updated_at: at,
        };
        let workspace = Workspace {
            id: WorkspaceId::new(),
            name: format!("{email}'s workspace"),
            status: WorkspaceStatus::Active,
            personal: true,
            external_id: None,
            created_at: at,
            updated_at: at,
        };
        match self.store.provision_identity_user(&user, &workspace, issuer, subject).await {
            Ok(()) => {}
            // The same person's sign-in in another tab got there first.
            Err(e) if e.is_conflict() => {
                return self
                    .store
                    .user_by_identity(issuer, subject)
                    .await?
                    .ok_or_else(|| ServiceError::Conflict(format!("a user with email {email} already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        audit::record(
            &*self.store,
            &Actor { user_id: Some(user.id), ..actor.clone() },
            Entry {
                action: AuditAction::UserCreate,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                workspace_id: Some(workspace.id),
                result: AuditResult::Ok,
                detail: Some(serde_json::json!({"via": "oidc", "provider": provider.id, "email": email}).to_string()),
            },
        )
        .await?;
        Ok(user)
    }

    async fn promote(&self, mut user: User, actor: &Actor, provider: &OidcProvider) -> ServiceResult<User> {
        if user.super_admin {
            return Ok(user);
        }
        user.super_admin = true;
        user.updated_at = now();
        self.store.update_user(&user).await?;
        audit::record(
            &*self.store,
            actor,
            Entry {
                action: AuditAction::UserUpdate,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: Some(
                    serde_json::json!({"super_admin": true, "via": "oidc", "provider": provider.id}).to_string(),
                ),
            },
        )
        .await?;
        self.changed().await;
        Ok(user)
    }

    async fn signed_in(&self, user: &User, actor: &Actor, provider: &OidcProvider) -> ServiceResult<IssuedToken> {
        let actor = Actor { user_id: Some(user.id), ..actor.clone() };
        audit::record(
            &*self.store,
            &actor,
            Entry {
                action: AuditAction::AuthLogin,
                target_type: "user",
                target_id: Some(user.id.to_string()),
                workspace_id: None,
                result: AuditResult::Ok,
                detail: Some(serde_json::json!({"via": "oidc", "provider": provider.id}).to_string()),
            },
        )
        .await?;
        self.start_session(user, None, &actor).await
    }
}

/// An HTTP failure in words, without the URL's query (reqwest's Display names the URL).
fn describe_http(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "the connection failed".into()
    } else if let Some(status) = e.status() {
        format!("HTTP {}", status.as_u16())
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(emails: &[&str], domains: &[&str], admins: &[&str]) -> OidcProvider {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        OidcProvider {
            id: "google".into(),
            name: "Google".into(),
            issuer: "https://accounts.google.com".into(),
            client_id: "id".into(),
            client_secret: SecretText::new("secret".into()),
            redirect_uri: "https://kg.example/login/oidc/google/callback".into(),
            allowed_emails: list(emails),
            allowed_domains: list(domains),
            super_admin_emails: list(admins),
        }
    }

    #[test]
    fn lists_name_emails_domains_and_super_admins() {
        let p = provider(&["Ann@Example.org"], &["corp.example", "@other.example"], &["boss@elsewhere.example"]);
        let email = |e: &str| parse_email(e).unwrap();
        assert!(p.lists_open());
        for yes in ["ann@example.org", "x@corp.example", "y@other.example", "boss@elsewhere.example"] {
            assert!(p.permits(&email(yes)), "{yes}");
        }
        for no in ["bob@example.org", "x@sub.corp.example", "x@corp.example.evil", "x@notcorp.example"] {
            assert!(!p.permits(&email(no)), "{no}");
        }
        let closed = provider(&[], &[], &["boss@example.org"]);
        assert!(
            !closed.lists_open()
                && closed.permits(&email("boss@example.org"))
                && !closed.permits(&email("x@example.org"))
        );
    }

    #[test]
    fn emails_are_folded_in_ascii_only_and_parsed_once_for_lists_and_account() {
        // The Kelvin sign folds to `k` under Unicode lower-casing; never here.
        let kelvin = parse_email("\u{212A}ate@Example.COM").unwrap();
        assert_eq!(kelvin.address, "\u{212A}ate@example.com");
        assert_ne!(kelvin.address, "kate@example.com");
        let admins = provider(&["kate@example.com"], &[], &["kate@example.com"]);
        assert!(!admins.permits(&kelvin) && !admins.is_super_admin(&kelvin.address));
        assert_eq!(parse_email(" Kate@Example.COM ").unwrap().address, "kate@example.com");
        // One `@`, no control characters or spaces, a local part, a dotted domain.
        for bad in [
            "x@evil.test@example.com",
            "x@evil.test\u{0}@example.com",
            "x\u{7f}@example.com",
            "x y@example.com",
            "x@exa\tmple.com",
            "x\u{2028}@example.com",
            "@example.com",
            "x@",
            "x@localhost",
            "x@.example.com",
            "x@example.com.",
            "example.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?}");
        }
        let parsed = parse_email("x@example.com").unwrap();
        assert_eq!(parsed.domain, "example.com");
        assert!(provider(&[], &["example.com"], &[]).permits(&parsed));
    }

    #[test]
    fn pkce_challenges_are_rfc_7636s() {
        let challenge = base64url(&sha256(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn flows_open_only_as_sealed_and_unexpired() {
        let oidc = Oidc { providers: vec![], key: [7; 32], discovery: Mutex::default(), jwks: Mutex::default() };
        let flow = Flow {
            p: "google".into(),
            s: "seed".into(),
            n: "/settings/usage".into(),
            x: now().timestamp() + 60,
            c: None,
        };
        let sealed = oidc.seal(&flow);
        assert_eq!(oidc.open(&sealed).unwrap().n, "/settings/usage");
        let (body, mac) = sealed.split_once('.').unwrap();
        let forged = hex(br#"{"p":"google","s":"seed","n":"//evil.example","x":99999999999}"#);
        assert!(oidc.open(&format!("{forged}.{mac}")).is_none());
        assert!(oidc.open(&format!("{body}.{}", "0".repeat(mac.len()))).is_none());
        let other = Oidc { key: [8; 32], ..oidc };
        assert!(other.open(&sealed).is_none(), "another deployment's key");
        let stale = Flow { x: now().timestamp() - 1, ..flow };
        assert!(other.open(&other.seal(&stale)).is_none());
        assert!(query(&[("a b", "c&d=é")]) == "a%20b=c%26d%3D%C3%A9");
    }
}
