//! The provider catalog: what keygate knows about each provider, loaded from
//! `providers.toml` (compiled in) and adjusted by configuration (base URLs, prices).
//! Also the rules for what a pasted credential must look like.

use crate::endpoints::{BadEndpoint, Endpoint};
use crate::CredentialScope;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

const BUILTIN: &str = include_str!("../providers.toml");

/// What a provider's credential consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// One secret string.
    ApiKey,
    /// `client_id` + `client_secret`, exchanged for access tokens (OAuth2).
    ClientCredentials,
    /// `access_key_id` + `secret_access_key` + `region`.
    Aws,
}

impl CredentialKind {
    /// The fields a credential of this kind has, in order; the last secret one gives the hint.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            CredentialKind::ApiKey => &["api_key"],
            CredentialKind::ClientCredentials => &["client_id", "client_secret"],
            CredentialKind::Aws => &["access_key_id", "secret_access_key", "region"],
        }
    }

    /// Fields a credential of this kind may also have: an AWS session token (temporary
    /// STS credentials, access key ids starting `ASIA`).
    pub fn optional_fields(self) -> &'static [&'static str] {
        match self {
            CredentialKind::Aws => &["session_token"],
            _ => &[],
        }
    }
}

/// How the credential goes into an outbound call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme")]
pub enum Injection {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A header of its own, e.g. `x-api-key`.
    Header { name: String },
    /// A query parameter, e.g. `access_token` or `key`.
    Query { name: String },
    /// OAuth2 client credentials: exchange at `token_path`, then bearer the access token.
    Oauth2 { token_path: String },
    /// AWS Signature Version 4 for the named service.
    Sigv4 { name: String },
    /// HTTP Basic authentication with the key as the password:
    /// `Authorization: Basic base64(<username>:<key>)` (git hosts: GitHub takes
    /// `x-access-token` and a token over git's smart HTTP).
    Basic { username: String },
}

/// The cheapest authenticated call that tells a good key from a bad one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub method: String,
    /// Path (and query) appended to the base URL.
    pub path: String,
    #[serde(default)]
    pub body: Option<String>,
    /// Statuses that mean the provider rejected the key.
    #[serde(default = "default_invalid_status")]
    pub invalid_status: Vec<u16>,
    /// A 2xx body containing this also means rejected (Google Maps answers 200 REQUEST_DENIED).
    #[serde(default)]
    pub invalid_body: Option<String>,
    /// A JSON pointer (`/message`) to the provider's own short explanation in a refusal's
    /// body, quoted in the key's validity detail (scrubbed of the key; GitHub answers
    /// `{"message": "Bad credentials"}`). Without it, bodies are never quoted.
    #[serde(default)]
    pub invalid_message: Option<String>,
}

fn default_invalid_status() -> Vec<u16> {
    vec![401, 403]
}

/// USD per million tokens, input then output.
pub type Price = [f64; 2];

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub name: String,
    /// `ai`, `maps`, `satellite`, `email`.
    pub kind: String,
    /// Origin without a version path: passthrough appends the caller's path.
    pub base_url: String,
    pub credential: CredentialKind,
    #[serde(default)]
    pub key_prefixes: Vec<String>,
    #[serde(default)]
    pub min_len: usize,
    pub inject: Injection,
    /// Headers every call carries (e.g. `anthropic-version`), unless the caller sets them.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub probe: Option<Probe>,
    #[serde(default)]
    pub default_model: Option<String>,
    /// Where a user creates a key, for messages.
    #[serde(default)]
    pub key_url: Option<String>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// The calls a key the caller does not own may serve (see [`crate::endpoints`]).
    #[serde(default)]
    pub shared_endpoints: Vec<Endpoint>,
    /// Another provider whose keys this one uses: the user stores one key (as that
    /// provider) and both serve calls with it, each injecting it its own way (`github-git`
    /// uses `github`'s token for git over HTTPS). Such a provider holds no keys itself.
    #[serde(default)]
    pub uses_key_of: Option<String>,
    /// The scopes a key for this provider may be stored with (all three unless the
    /// catalog says otherwise: a personal integration, such as a GitHub token that acts
    /// as its owner, is never an operator key).
    #[serde(default = "all_key_scopes")]
    pub key_scopes: Vec<CredentialScope>,
}

fn all_key_scopes() -> Vec<CredentialScope> {
    vec![CredentialScope::User, CredentialScope::Workspace, CredentialScope::Operator]
}

/// Why a pasted credential was refused before anything was sent anywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    pub message: String,
}

impl FormatError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Trims surrounding whitespace and line breaks (a common copy-paste artifact) and
/// refuses inner whitespace. Borrows: the secret is never copied here.
pub fn trim_secret<'a>(field: &str, value: &'a str) -> Result<&'a str, FormatError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FormatError::new(format!("`{field}` is empty: paste the whole key")));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(FormatError::new(format!(
            "`{field}` contains spaces or line breaks inside it: copy the key again in one piece"
        )));
    }
    Ok(trimmed)
}

impl Provider {
    /// The provider whose keys serve this one's calls: its own id, or the one it
    /// [uses the key of](Provider::uses_key_of).
    pub fn key_provider(&self) -> &str {
        self.uses_key_of.as_deref().unwrap_or(&self.id)
    }

    /// Whether callers speak git's smart HTTP to it (`kind = "git"`): they may send their
    /// keygate token as the password of HTTP Basic authentication (git sends nothing
    /// else), request bodies stream through unbuffered and answers are relayed as they
    /// come.
    pub fn speaks_git(&self) -> bool {
        self.kind == "git"
    }

    /// Checks already-trimmed credential fields against this provider's format.
    /// `fields` are (name, value) in any order; missing or unexpected fields are errors.
    pub fn check_format(&self, fields: &[(&str, &str)]) -> Result<(), FormatError> {
        let expected = self.credential.fields();
        for (name, _) in fields {
            if !expected.contains(name) && !self.credential.optional_fields().contains(name) {
                return Err(FormatError::new(format!(
                    "{} credentials have the fields {}; `{name}` is not one of them",
                    self.name,
                    expected.join(", ")
                )));
            }
        }
        let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        for name in expected {
            if get(name).is_none() {
                return Err(FormatError::new(format!("{} credentials need `{name}`", self.name)));
            }
        }
        match self.credential {
            CredentialKind::ApiKey => {
                let key = get("api_key").unwrap_or_default();
                if !self.key_prefixes.is_empty() && !self.key_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                    let wanted: Vec<String> = self.key_prefixes.iter().map(|p| format!("`{p}`")).collect();
                    return Err(FormatError::new(format!(
                        "this does not look like a {} key: {} keys start with {}",
                        self.name,
                        self.name,
                        wanted.join(" or ")
                    )));
                }
                if key.chars().count() < self.min_len {
                    return Err(FormatError::new(format!(
                        "this {} key is too short ({} characters; at least {}): it may have been copied incompletely",
                        self.name,
                        key.chars().count(),
                        self.min_len
                    )));
                }
            }
            CredentialKind::ClientCredentials => {}
            CredentialKind::Aws => {
                let id = get("access_key_id").unwrap_or_default();
                let id_ok = id.len() == 20
                    && (id.starts_with("AKIA") || id.starts_with("ASIA"))
                    && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !id_ok {
                    return Err(FormatError::new("`access_key_id` must be 20 characters starting with AKIA or ASIA"));
                }
                if get("secret_access_key").unwrap_or_default().len() != 40 {
                    return Err(FormatError::new("`secret_access_key` must be 40 characters"));
                }
                let region = get("region").unwrap_or_default();
                let region_ok = region.split('-').count() >= 3
                    && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !region_ok {
                    return Err(FormatError::new("`region` must look like us-east-1"));
                }
            }
        }
        Ok(())
    }

    /// Whether a key the caller does not own may serve `method` on `path` (decoded).
    pub fn shares(&self, method: &str, path: &str) -> bool {
        self.shared_endpoints.iter().any(|e| e.matches(method, path))
    }

    /// Estimated cost of a call in billionths of a dollar; 0 for unpriced models.
    pub fn cost_nano_usd(&self, model: &str, input_tokens: i64, output_tokens: i64) -> i64 {
        let Some([input, output]) = self.prices.get(model) else {
            return 0;
        };
        // 1 USD per million tokens is 1,000 nano-USD per token.
        let nano = (input_tokens as f64) * input * 1000.0 + (output_tokens as f64) * output * 1000.0;
        nano.round() as i64
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    provider: Vec<Provider>,
}

/// Why the catalog could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("provider catalog: {0}")]
    Parse(String),
    #[error("provider catalog: provider `{0}` appears twice")]
    Duplicate(String),
    #[error("unknown provider `{0}`")]
    Unknown(String),
    #[error("provider `{id}`: base URL `{url}` must be an http(s) origin like https://api.example.com")]
    BadBaseUrl { id: String, url: String },
    #[error("provider `{id}`: {problem}")]
    BadEndpoint { id: String, problem: String },
    #[error("provider `{id}`: {problem}")]
    BadKeySharing { id: String, problem: String },
}

/// Every provider keygate knows, in catalog order. Providers are shared (`Arc`), so a
/// call can hold its provider without copying it.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    providers: Vec<Arc<Provider>>,
}

impl Catalog {
    /// The catalog compiled into keygate.
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN)
    }

    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut catalog = Catalog { providers: Vec::new() };
        for provider in file.provider {
            catalog.add(provider)?;
        }
        catalog.check_key_sharing()?;
        Ok(catalog)
    }

    /// A provider that uses another's keys names one that exists, holds its own keys and
    /// has the same kind of credential.
    fn check_key_sharing(&self) -> Result<(), CatalogError> {
        for provider in &self.providers {
            let Some(of) = &provider.uses_key_of else { continue };
            let bad = |problem: String| CatalogError::BadKeySharing { id: provider.id.clone(), problem };
            let other =
                self.get(of).ok_or_else(|| bad(format!("uses_key_of names `{of}`, which is not a provider")))?;
            if other.uses_key_of.is_some() {
                return Err(bad(format!("uses_key_of names `{of}`, which uses another provider's keys itself")));
            }
            if other.credential != provider.credential {
                return Err(bad(format!("uses_key_of names `{of}`, whose credentials have other fields")));
            }
        }
        Ok(())
    }

    fn add(&mut self, provider: Provider) -> Result<(), CatalogError> {
        if self.get(&provider.id).is_some() {
            return Err(CatalogError::Duplicate(provider.id));
        }
        check_base_url(&provider.id, &provider.base_url)?;
        self.providers.push(Arc::new(provider));
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.id == id)
    }

    pub fn all(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The other providers whose key shape `key` has more specifically than `provider`'s
    /// (an `sk-ant-` key pasted as an OpenAI `sk-` key): the user picked the wrong
    /// provider, and nothing should be sent anywhere. Several when they share a shape
    /// (Gemini and Google Maps keys both start `AIza`); empty when `key` fits.
    pub fn owners_of_other_shape(&self, provider: &Provider, key: &str) -> Vec<&Arc<Provider>> {
        let longest = |p: &Provider| {
            p.key_prefixes.iter().filter(|prefix| key.starts_with(prefix.as_str())).map(String::len).max()
        };
        let own = longest(provider).unwrap_or(0);
        let others: Vec<(usize, &Arc<Provider>)> = self
            .providers
            .iter()
            .filter(|other| other.id != provider.id)
            .filter_map(|other| longest(other).filter(|len| *len > own).map(|len| (len, other)))
            .collect();
        let best = others.iter().map(|(len, _)| *len).max().unwrap_or(0);
        others.into_iter().filter(|(len, _)| *len == best).map(|(_, p)| p).collect()
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Provider, CatalogError> {
        let provider =
            self.providers.iter_mut().find(|p| p.id == id).ok_or_else(|| CatalogError::Unknown(id.into()))?;
        Ok(Arc::make_mut(provider))
    }

    /// Points a provider at another origin (a proxy, a regional endpoint, the mock).
    pub fn set_base_url(&mut self, id: &str, url: &str) -> Result<(), CatalogError> {
        check_base_url(id, url)?;
        let provider = self.get_mut(id)?;
        provider.base_url = url.trim_end_matches('/').to_owned();
        Ok(())
    }

    /// Adds shared endpoints (`METHOD /pattern`) to a provider's list: a deployment may
    /// widen what keys the caller does not own may serve.
    pub fn add_shared_endpoints(&mut self, id: &str, endpoints: &[String]) -> Result<(), CatalogError> {
        let parsed = endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, BadEndpoint>>()
            .map_err(|e| CatalogError::BadEndpoint { id: id.into(), problem: e.to_string() })?;
        let provider = self.get_mut(id)?;
        provider.shared_endpoints.extend(parsed);
        Ok(())
    }

    /// Sets the model a call naming none gets (a credential's own model still comes first).
    pub fn set_default_model(&mut self, id: &str, model: &str) -> Result<(), CatalogError> {
        let provider = self.get_mut(id)?;
        provider.default_model = Some(model.to_owned());
        Ok(())
    }

    /// Sets a model's price (USD per million input / output tokens).
    pub fn set_price(&mut self, id: &str, model: &str, price: Price) -> Result<(), CatalogError> {
        let provider = self.get_mut(id)?;
        provider.prices.insert(model.to_owned(), price);
        Ok(())
    }
}

fn check_base_url(id: &str, url: &str) -> Result<(), CatalogError> {
    let bad = || CatalogError::BadBaseUrl { id: id.into(), url: url.into() };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(bad)?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['?', '#', ' ']) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    #[test]
    fn the_builtin_catalog_has_every_provider_the_design_names() {
        let c = catalog();
        for id in [
            "openai",
            "anthropic",
            "openrouter",
            "gemini",
            "bedrock",
            "voyage",
            "mapbox",
            "maptiler",
            "google_maps",
            "sentinel_hub",
            "resend",
            "github",
            "github-git",
        ] {
            let p = c.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(!p.base_url.ends_with('/') && !p.base_url.contains("/v1"), "{id}: origin only");
        }
        assert_eq!(c.get("anthropic").unwrap().default_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        for p in c.all() {
            if let Some(model) = &p.default_model {
                assert!(p.prices.contains_key(model), "{}: the default model {model} has a price", p.id);
            }
        }
        assert_eq!(c.get("sentinel_hub").unwrap().credential, CredentialKind::ClientCredentials);
    }

    #[test]
    fn github_git_uses_githubs_token_and_neither_takes_operator_keys() {
        let c = catalog();
        let github = c.get("github").unwrap();
        let git = c.get("github-git").unwrap();
        assert_eq!((github.key_provider(), git.key_provider()), ("github", "github"));
        assert!(git.speaks_git() && !github.speaks_git());
        assert_eq!(git.inject, Injection::Basic { username: "x-access-token".into() });
        assert!(github.shared_endpoints.is_empty() && git.shared_endpoints.is_empty());
        for p in [github, git] {
            assert_eq!(p.key_scopes, [CredentialScope::User, CredentialScope::Workspace], "{}", p.id);
        }
        assert_eq!(c.get("openai").unwrap().key_scopes.len(), 3, "others take every scope");
        let fine_grained = format!("github_pat_{}", "A1b2".repeat(20));
        assert!(github.check_format(&[("api_key", &fine_grained)]).is_ok());
        assert!(github.check_format(&[("api_key", "ghp_0123456789abcdefghijABCDEFGHIJ012345")]).is_ok());
        let err = github.check_format(&[("api_key", "gho_0123456789abcdefghijABCDEFGHIJ012345")]).unwrap_err();
        assert!(err.message.contains("`github_pat_` or `ghp_`"), "{err}");
        assert_eq!(github.probe.as_ref().unwrap().invalid_status, [401]);
    }

    #[test]
    fn a_provider_can_only_use_the_keys_of_one_that_holds_its_own() {
        let entry = |id: &str, uses: &str| {
            format!(
                "[[provider]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"git\"\nbase_url = \"https://x.example\"\n\
                 credential = \"api_key\"\ninject = {{ scheme = \"bearer\" }}\n{uses}\n"
            )
        };
        let base = entry("a", "");
        assert!(Catalog::parse(&format!("{base}{}", entry("b", "uses_key_of = \"a\""))).is_ok());
        for (text, problem) in [
            (entry("b", "uses_key_of = \"nope\""), "not a provider"),
            (format!("{}{}", entry("b", "uses_key_of = \"a\""), entry("c", "uses_key_of = \"b\"")), "itself"),
            (entry("b", "uses_key_of = \"a\"\n").replace("api_key", "aws"), "other fields"),
        ] {
            let err = Catalog::parse(&format!("{base}{text}")).unwrap_err();
            assert!(matches!(&err, CatalogError::BadKeySharing { .. }) && err.to_string().contains(problem), "{err}");
        }
    }

    #[test]
    fn pasted_keys_are_trimmed_and_inner_whitespace_refused() {
        assert_eq!(trim_secret("api_key", "  sk-abc\r\n").unwrap(), "sk-abc");
        assert!(trim_secret("api_key", "sk-ab c").unwrap_err().message.contains("inside it"));
        assert!(trim_secret("api_key", " \n ").unwrap_err().message.contains("empty"));
    }

    #[test]
    fn a_key_of_another_providers_shape_is_recognised() {
        let catalog = Catalog::builtin().unwrap();
        let openai = catalog.get("openai").unwrap();
        let anthropic = catalog.get("anthropic").unwrap();
        let ids = |found: Vec<&Arc<Provider>>| found.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(catalog.owners_of_other_shape(openai, "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")),
            ["anthropic"]
        );
        assert!(catalog.owners_of_other_shape(openai, "sk-proj-abcdefghijklmnopqrstuvwxyz").is_empty());
        assert!(catalog.owners_of_other_shape(anthropic, "sk-ant-api03-abcdefghijklmnopqrstuvwxyz").is_empty());
        assert_eq!(
            ids(catalog.owners_of_other_shape(anthropic, "AIzaSyabcdefghijklmnopqrstuvwxyz")),
            ["gemini", "google_maps"]
        );
        assert!(catalog.owners_of_other_shape(anthropic, "nothing-like-any-key").is_empty());
    }

    #[test]
    fn formats_are_checked_per_provider() {
        let c = catalog();
        let anthropic = c.get("anthropic").unwrap();
        assert!(anthropic.check_format(&[("api_key", "sk-ant-api03-abcdefghijklmnop")]).is_ok());
        let err = anthropic.check_format(&[("api_key", "sk-proj-abcdefghijklmnopqrst")]).unwrap_err();
        assert!(err.message.contains("start with `sk-ant-`"), "{err}");
        let err = c.get("openai").unwrap().check_format(&[("api_key", "sk-short")]).unwrap_err();
        assert!(err.message.contains("too short"));
        let sh = c.get("sentinel_hub").unwrap();
        assert!(sh.check_format(&[("client_id", "id"), ("client_secret", "s")]).is_ok());
        assert!(sh.check_format(&[("api_key", "x")]).unwrap_err().message.contains("client_id, client_secret"));
        let aws = c.get("bedrock").unwrap();
        let good = [
            ("access_key_id", "AKIAIOSFODNN7EXAMPLE"),
            ("secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ("region", "us-east-1"),
        ];
        assert!(aws.check_format(&good).is_ok());
        assert!(aws.check_format(&[good[0], good[1], ("region", "mars")]).is_err());
        assert!(aws.check_format(&[good[0], good[1], good[2], ("session_token", "IQoJb3JpZ2luX2VjEXAMPLE")]).is_ok());
    }

    #[test]
    fn costs_are_exact_in_nano_dollars() {
        let c = catalog();
        let openai = c.get("openai").unwrap();
        // gpt-4o: $2.50 / $10 per million tokens.
        assert_eq!(openai.cost_nano_usd("gpt-4o", 1_000_000, 0), 2_500_000_000);
        assert_eq!(openai.cost_nano_usd("gpt-4o", 11, 7), 11 * 2_500 + 7 * 10_000);
        assert_eq!(openai.cost_nano_usd("unknown-model", 10, 10), 0);
    }

    #[test]
    fn base_urls_can_be_overridden_but_must_be_origins() {
        let mut c = catalog();
        c.set_base_url("openai", "http://127.0.0.1:9999/").unwrap();
        assert_eq!(c.get("openai").unwrap().base_url, "http://127.0.0.1:9999");
        assert!(c.set_base_url("openai", "ftp://x").is_err());
        assert!(matches!(c.set_base_url("nope", "http://x"), Err(CatalogError::Unknown(_))));
        assert!(matches!(Catalog::parse("[[provider]]\nid = 1"), Err(CatalogError::Parse(_))));
    }
}
