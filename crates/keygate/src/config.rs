//! Layered configuration: built-in defaults, then a TOML file (`KEYGATE_CONFIG` or
//! `--config`), then `KEYGATE_*` environment variables, then command-line flags. Every
//! value remembers where it came from, so an error can name the option and its source.
//! Every option is documented in `keygate.example.toml` (`keygate config example`).

use anyhow::{bail, Context};
use keygate_core::catalog::Catalog;
use keygate_vault::SecretText;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const EXAMPLE: &str = include_str!("../keygate.example.toml");

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    EnvOwned(String),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::EnvOwned(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    fn new(value: T, source: Source) -> Self {
        Self { value, source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Some(Self::Development),
            "production" | "prod" => Some(Self::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Development => "development",
            Mode::Production => "production",
        })
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Sourced<SocketAddr>,
    /// A separate address serving `/metrics` alone (then absent from `listen`).
    pub metrics_listen: Option<Sourced<SocketAddr>>,
    pub data_dir: Sourced<PathBuf>,
    pub database_url: Option<Sourced<SecretString>>,
    pub redis_url: Option<Sourced<SecretString>>,
    /// Serve calls that need a limit while the limits backend is down (logged, counted).
    pub limits_fail_open: Sourced<bool>,
    /// How long one limits-backend call may take before the call counts as unavailable.
    pub limits_timeout: Sourced<Duration>,
    pub env: Sourced<Mode>,
    pub master_key: Option<Sourced<SecretString>>,
    pub master_keys: Option<Sourced<SecretString>>,
    pub master_key_file: Option<Sourced<PathBuf>>,
    pub log: Sourced<String>,
    pub jwt_hs256_secret: Option<Sourced<SecretString>>,
    /// A JWKS file path or URL for RS256 host JWTs.
    pub jwt_jwks: Option<Sourced<String>>,
    /// The furthest ahead a host JWT's `exp` may lie.
    pub jwt_max_lifetime: Sourced<Duration>,
    /// When set, host JWTs must carry this `iss`.
    pub jwt_issuer: Option<Sourced<String>>,
    /// When set, host JWTs must carry this `aud`.
    pub jwt_audience: Option<Sourced<String>>,
    /// Provider id → base URL override.
    pub provider_base_urls: BTreeMap<String, Sourced<String>>,
    /// Provider id → shared endpoints added by the configuration file.
    pub shared_endpoints: BTreeMap<String, Sourced<Vec<String>>>,
    /// Provider id → the model a call naming none gets (instead of the catalog's).
    pub default_models: BTreeMap<String, Sourced<String>>,
    pub validation_timeout: Sourced<Duration>,
    /// Request headers must arrive within this (also an idle keep-alive connection's life).
    pub header_timeout: Sourced<Duration>,
    /// A request body must arrive whole within this.
    pub body_timeout: Sourced<Duration>,
    /// Open client connections at most.
    pub max_connections: Sourced<u64>,
    /// Memory all buffered proxied request bodies may hold at once, in MiB.
    pub body_budget_mb: Sourced<u64>,
    /// The deployment is reached over TLS (a proxy terminates it): page cookies get `Secure`.
    pub behind_tls: Sourced<bool>,
    /// The address people reach keygate at (`https://keygate.example.com`), without a
    /// trailing slash: single sign-on's redirect URIs are made from it.
    pub public_url: Option<Sourced<String>>,
    /// Single sign-on: `[[oidc.providers]]`.
    pub oidc: Vec<OidcConfig>,
}

/// One `[[oidc.providers]]` entry, checked.
#[derive(Clone)]
pub struct OidcConfig {
    pub id: String,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Sourced<SecretString>,
    pub allowed_emails: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub super_admin_emails: Vec<String>,
    pub source: Source,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What the TOML file may contain. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    redis_url: Option<String>,
    env: Option<String>,
    master_key_file: Option<PathBuf>,
    log: Option<String>,
    jwt_jwks: Option<String>,
    jwt_max_lifetime_secs: Option<u64>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    validation_timeout_ms: Option<u64>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    body_budget_mb: Option<u64>,
    behind_tls: Option<bool>,
    public_url: Option<String>,
    #[serde(default)]
    oidc: OidcFile,
    #[serde(default)]
    providers: BTreeMap<String, ProviderOverride>,
    #[serde(default)]
    limits: LimitsFile,
}

/// `[limits]`: how keygate behaves towards its limits backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    fail_open: Option<bool>,
    timeout_ms: Option<u64>,
}

/// `[oidc]`: single sign-on issuers, `[[oidc.providers]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcFile {
    #[serde(default)]
    providers: Vec<OidcProviderFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcProviderFile {
    id: String,
    name: Option<String>,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    allowed_emails: Vec<String>,
    #[serde(default)]
    allowed_domains: Vec<String>,
    #[serde(default)]
    super_admin_emails: Vec<String>,
}

impl fmt::Debug for OidcProviderFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProviderFile").field("id", &self.id).field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderOverride {
    base_url: Option<String>,
    /// Added to the provider's shared endpoints (`METHOD /pattern`).
    #[serde(default)]
    shared_endpoints: Vec<String>,
    /// The model a call naming none gets, instead of the catalog's default.
    default_model: Option<String>,
}

/// Flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

impl Config {
    /// Loads from the process environment.
    pub fn load(flags: &Overrides) -> anyhow::Result<Self> {
        Self::load_from(flags, &|name| std::env::var(name).ok())
    }

    /// Loads with `env` standing in for the process environment (for tests).
    pub fn load_from(flags: &Overrides, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (file, file_source) = match (&flags.config, env("KEYGATE_CONFIG")) {
            (Some(path), _) => (read_file(path, "flag --config")?, Source::File(path.clone())),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                (read_file(&path, "KEYGATE_CONFIG")?, Source::File(path))
            }
            (None, None) => (FileConfig::default(), Source::Default),
        };

        // Each option: flag, else environment, else file, else default.
        let layer = |flag: Option<(String, &'static str)>, var: &'static str, from_file: Option<String>| {
            flag.map(|(v, name)| Sourced::new(v, Source::Flag(name)))
                .or_else(|| env(var).map(|v| Sourced::new(v, Source::Env(var))))
                .or_else(|| from_file.map(|v| Sourced::new(v, file_source.clone())))
        };

        let listen = layer(flags.listen.clone().map(|v| (v, "--listen")), "KEYGATE_LISTEN", file.listen)
            .unwrap_or_else(|| Sourced::new("127.0.0.1:8080".into(), Source::Default));
        let listen = Sourced::new(
            listen.value.trim().parse::<SocketAddr>().with_context(|| {
                format!("listen (from {}): `{}` is not an address like 127.0.0.1:8080", listen.source, listen.value)
            })?,
            listen.source,
        );
        let metrics_listen = layer(None, "KEYGATE_METRICS_LISTEN", file.metrics_listen)
            .map(|s| match s.value.trim().parse::<SocketAddr>() {
                Ok(addr) => Ok(Sourced::new(addr, s.source)),
                Err(_) => Err(anyhow::anyhow!(
                    "metrics_listen (from {}): `{}` is not an address like 127.0.0.1:9090",
                    s.source,
                    s.value
                )),
            })
            .transpose()?;

        let data_dir = layer(
            flags.data_dir.clone().map(|p| (p.display().to_string(), "--data-dir")),
            "KEYGATE_DATA_DIR",
            file.data_dir.map(|p| p.display().to_string()),
        )
        .map(|s| Sourced::new(PathBuf::from(s.value), s.source))
        .unwrap_or_else(|| Sourced::new(PathBuf::from("./keygate-data"), Source::Default));

        let env_mode =
            layer(None, "KEYGATE_ENV", file.env).unwrap_or_else(|| Sourced::new("development".into(), Source::Default));
        let Some(mode) = Mode::parse(&env_mode.value) else {
            bail!("env (from {}): `{}` is not `development` or `production`", env_mode.source, env_mode.value);
        };

        let secret = |s: Sourced<String>| Sourced::new(SecretString::from(s.value), s.source);
        let database_url = layer(None, "KEYGATE_DATABASE_URL", file.database_url).map(secret);
        let redis_url = layer(None, "KEYGATE_REDIS_URL", file.redis_url).map(secret);
        let master_key =
            env("KEYGATE_MASTER_KEY").map(|v| Sourced::new(SecretString::from(v), Source::Env("KEYGATE_MASTER_KEY")));
        let master_keys =
            env("KEYGATE_MASTER_KEYS").map(|v| Sourced::new(SecretString::from(v), Source::Env("KEYGATE_MASTER_KEYS")));
        let master_key_file =
            layer(None, "KEYGATE_MASTER_KEY_FILE", file.master_key_file.map(|p| p.display().to_string()))
                .map(|s| Sourced::new(PathBuf::from(s.value), s.source));
        let log = layer(None, "KEYGATE_LOG", file.log).unwrap_or_else(|| Sourced::new("info".into(), Source::Default));
        let jwt_hs256_secret = env("KEYGATE_JWT_HS256_SECRET")
            .map(|v| Sourced::new(SecretString::from(v), Source::Env("KEYGATE_JWT_HS256_SECRET")));
        let jwt_jwks = layer(None, "KEYGATE_JWT_JWKS", file.jwt_jwks);
        let jwt_issuer = layer(None, "KEYGATE_JWT_ISSUER", file.jwt_issuer)
            .map(|s| Sourced::new(s.value.trim().to_owned(), s.source))
            .filter(|s| !s.value.is_empty());
        let jwt_audience = layer(None, "KEYGATE_JWT_AUDIENCE", file.jwt_audience)
            .map(|s| Sourced::new(s.value.trim().to_owned(), s.source))
            .filter(|s| !s.value.is_empty());
        // A whole number within `range`, named by its file key (and `var`).
        let number =
            |key: &str, var: &'static str, from_file: Option<u64>, default: u64, range: RangeInclusive<u64>| {
                let raw = layer(None, var, from_file.map(|v| v.to_string()))
                    .unwrap_or_else(|| Sourced::new(default.to_string(), Source::Default));
                match raw.value.trim().parse::<u64>() {
                    Ok(n) if range.contains(&n) => Ok(Sourced::new(n, raw.source)),
                    _ => Err(anyhow::anyhow!(
                        "{key} (from {}): `{}` must be a whole number from {} to {}",
                        raw.source,
                        raw.value,
                        range.start(),
                        range.end()
                    )),
                }
            };
        let millis = |n: Sourced<u64>| Sourced::new(Duration::from_millis(n.value), n.source);
        let validation_timeout = millis(number(
            "validation_timeout_ms",
            "KEYGATE_VALIDATION_TIMEOUT_MS",
            file.validation_timeout_ms,
            5_000,
            1..=120_000,
        )?);
        let header_timeout = millis(number(
            "header_timeout_ms",
            "KEYGATE_HEADER_TIMEOUT_MS",
            file.header_timeout_ms,
            20_000,
            100..=600_000,
        )?);
        let body_timeout = millis(number(
            "body_timeout_ms",
            "KEYGATE_BODY_TIMEOUT_MS",
            file.body_timeout_ms,
            60_000,
            100..=3_600_000,
        )?);
        let max_connections =
            number("max_connections", "KEYGATE_MAX_CONNECTIONS", file.max_connections, 4_096, 1..=1_000_000)?;
        let body_budget_mb = number("body_budget_mb", "KEYGATE_BODY_BUDGET_MB", file.body_budget_mb, 256, 1..=65_536)?;
        let jwt_max_lifetime = number(
            "jwt_max_lifetime_secs",
            "KEYGATE_JWT_MAX_LIFETIME_SECS",
            file.jwt_max_lifetime_secs,
            86_400,
            60..=31_536_000,
        )?;
        let jwt_max_lifetime = Sourced::new(Duration::from_secs(jwt_max_lifetime.value), jwt_max_lifetime.source);

        // Provider base URLs: the file's [providers.<id>] tables, then KEYGATE_PROVIDER_<ID>_BASE_URL
        // (`-` in an id as `_`).
        let builtin = Catalog::builtin().context("the built-in provider catalog")?;
        let mut provider_base_urls = BTreeMap::new();
        let mut shared_endpoints = BTreeMap::new();
        let mut default_models = BTreeMap::new();
        for (id, over) in file.providers {
            if builtin.get(&id).is_none() {
                bail!("providers.{id} (from {file_source}): `{id}` is not a provider");
            }
            if !over.shared_endpoints.is_empty() {
                shared_endpoints.insert(id.clone(), Sourced::new(over.shared_endpoints, file_source.clone()));
            }
            if let Some(model) = over.default_model.filter(|m| !m.trim().is_empty()) {
                default_models.insert(id.clone(), Sourced::new(model.trim().to_owned(), file_source.clone()));
            }
            if let Some(url) = over.base_url {
                provider_base_urls.insert(id, Sourced::new(url, file_source.clone()));
            }
        }
        for provider in builtin.all() {
            // `github-git` → KEYGATE_PROVIDER_GITHUB_GIT_BASE_URL (shells cannot set `-`).
            let var = format!("KEYGATE_PROVIDER_{}_BASE_URL", provider.id.to_ascii_uppercase().replace('-', "_"));
            if let Some(url) = env(&var) {
                provider_base_urls.insert(provider.id.clone(), Sourced::new(url, Source::EnvOwned(var)));
            }
        }

        let limits_timeout =
            millis(number("limits.timeout_ms", "KEYGATE_LIMITS_TIMEOUT_MS", file.limits.timeout_ms, 250, 10..=10_000)?);
        let limits_fail_open = match env("KEYGATE_LIMITS_FAIL_OPEN") {
            Some(v) => match v.trim() {
                "true" | "1" => Sourced::new(true, Source::Env("KEYGATE_LIMITS_FAIL_OPEN")),
                "false" | "0" => Sourced::new(false, Source::Env("KEYGATE_LIMITS_FAIL_OPEN")),
                other => {
                    anyhow::bail!("limits.fail_open (from KEYGATE_LIMITS_FAIL_OPEN): `{other}` is not true or false")
                }
            },
            None => match file.limits.fail_open {
                Some(v) => Sourced::new(v, file_source.clone()),
                None => Sourced::new(false, Source::Default),
            },
        };

        let behind_tls = match env("KEYGATE_BEHIND_TLS") {
            Some(v) => match v.trim() {
                "true" | "1" => Sourced::new(true, Source::Env("KEYGATE_BEHIND_TLS")),
                "false" | "0" => Sourced::new(false, Source::Env("KEYGATE_BEHIND_TLS")),
                other => anyhow::bail!("behind_tls (from KEYGATE_BEHIND_TLS): `{other}` is not true or false"),
            },
            None => match file.behind_tls {
                Some(v) => Sourced::new(v, file_source.clone()),
                None => Sourced::new(false, Source::Default),
            },
        };

        let public_url = layer(None, "KEYGATE_PUBLIC_URL", file.public_url)
            .map(|s| Sourced::new(s.value.trim().trim_end_matches('/').to_owned(), s.source))
            .filter(|s| !s.value.is_empty());
        if let Some(url) = &public_url {
            let scheme_ok = url.value.starts_with("https://") || url.value.starts_with("http://");
            if !scheme_ok || url.value.contains(['?', '#']) || url.value.contains(char::is_whitespace) {
                bail!(
                    "public_url (from {}): `{}` is not an address like https://keygate.example.com",
                    url.source,
                    url.value
                );
            }
        }
        let oidc = oidc_providers(file.oidc.providers, &file_source, &env)?;
        if !oidc.is_empty() && public_url.is_none() {
            bail!(
                "public_url (KEYGATE_PUBLIC_URL) must be set when [[oidc.providers]] are configured (from {file_source}): \
                 each provider's redirect URI is <public_url>/login/oidc/<id>/callback"
            );
        }

        Ok(Self {
            listen,
            metrics_listen,
            data_dir,
            database_url,
            redis_url,
            limits_fail_open,
            limits_timeout,
            env: Sourced::new(mode, env_mode.source),
            master_key,
            master_keys,
            master_key_file,
            log,
            jwt_hs256_secret,
            jwt_jwks,
            jwt_max_lifetime,
            jwt_issuer,
            jwt_audience,
            provider_base_urls,
            shared_endpoints,
            default_models,
            validation_timeout,
            header_timeout,
            body_timeout,
            max_connections,
            body_budget_mb,
            behind_tls,
            public_url,
            oidc,
        })
    }

    /// The single sign-on issuers for the services, with their redirect URIs.
    pub fn oidc_providers(&self) -> Vec<keygate_service::oidc::OidcProvider> {
        let base = self.public_url.as_ref().map(|u| u.value.as_str()).unwrap_or_default();
        self.oidc
            .iter()
            .map(|p| keygate_service::oidc::OidcProvider {
                id: p.id.clone(),
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                client_secret: SecretText::new(p.client_secret.value.expose_secret().to_owned()),
                redirect_uri: redirect_uri(base, &p.id),
                allowed_emails: p.allowed_emails.clone(),
                allowed_domains: p.allowed_domains.clone(),
                super_admin_emails: p.super_admin_emails.clone(),
            })
            .collect()
    }

    /// The provider catalog with this configuration's base-URL overrides applied.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut catalog = Catalog::builtin().context("the built-in provider catalog")?;
        for (id, url) in &self.provider_base_urls {
            catalog
                .set_base_url(id, url.value.trim())
                .with_context(|| format!("providers.{id}.base_url (from {})", url.source))?;
        }
        for (id, endpoints) in &self.shared_endpoints {
            catalog
                .add_shared_endpoints(id, &endpoints.value)
                .with_context(|| format!("providers.{id}.shared_endpoints (from {})", endpoints.source))?;
        }
        for (id, model) in &self.default_models {
            catalog
                .set_default_model(id, &model.value)
                .with_context(|| format!("providers.{id}.default_model (from {})", model.source))?;
        }
        Ok(catalog)
    }

    /// Where the database is: `database_url`, or SQLite in the data directory.
    pub fn database(&self) -> anyhow::Result<keygate_store::DatabaseLocation> {
        match &self.database_url {
            Some(url) => keygate_store::DatabaseLocation::parse(url.value.expose_secret())
                .with_context(|| format!("database_url (from {})", url.source)),
            None => Ok(keygate_store::DatabaseLocation::in_data_dir(&self.data_dir.value)),
        }
    }

    /// The effective configuration as `option = value  # source` lines, secrets hidden.
    pub fn describe(&self) -> String {
        let mut lines = vec![
            line("listen", &self.listen.value.to_string(), &self.listen.source),
            match &self.metrics_listen {
                Some(m) => line("metrics_listen", &m.value.to_string(), &m.source),
                None => line("metrics_listen", "(unset: /metrics on listen, for the metrics scope)", &Source::Default),
            },
            line("data_dir", &self.data_dir.value.display().to_string(), &self.data_dir.source),
        ];
        match (&self.database_url, self.database()) {
            (Some(url), Ok(location)) => lines.push(line("database_url", &location.describe(), &url.source)),
            _ => lines.push(line("database_url", "(unset: SQLite in data_dir)", &Source::Default)),
        }
        match &self.redis_url {
            Some(url) => {
                lines.push(line("redis_url", &keygate_store::redact_url(url.value.expose_secret()), &url.source))
            }
            None => lines.push(line("redis_url", "(unset)", &Source::Default)),
        }
        lines.push(line("limits.fail_open", &self.limits_fail_open.value.to_string(), &self.limits_fail_open.source));
        lines.push(line(
            "limits.timeout_ms",
            &self.limits_timeout.value.as_millis().to_string(),
            &self.limits_timeout.source,
        ));
        lines.push(line("env", &self.env.value.to_string(), &self.env.source));
        for (name, value) in [("master_key", &self.master_key), ("master_keys", &self.master_keys)] {
            match value {
                Some(v) => lines.push(line(name, "(set; hidden)", &v.source)),
                None => lines.push(line(name, "(unset)", &Source::Default)),
            }
        }
        match &self.master_key_file {
            Some(f) => lines.push(line("master_key_file", &f.value.display().to_string(), &f.source)),
            None => lines.push(line("master_key_file", "(unset)", &Source::Default)),
        }
        lines.push(line("log", &self.log.value, &self.log.source));
        match &self.jwt_hs256_secret {
            Some(v) => lines.push(line("jwt_hs256_secret", "(set; hidden)", &v.source)),
            None => lines.push(line("jwt_hs256_secret", "(unset)", &Source::Default)),
        }
        match &self.jwt_jwks {
            Some(v) => lines.push(line("jwt_jwks", &v.value, &v.source)),
            None => lines.push(line("jwt_jwks", "(unset)", &Source::Default)),
        }
        let lifetime = self.jwt_max_lifetime.value.as_secs().to_string();
        lines.push(line("jwt_max_lifetime_secs", &lifetime, &self.jwt_max_lifetime.source));
        for (name, value, unset) in [
            ("jwt_issuer", &self.jwt_issuer, "(unset: any issuer)"),
            ("jwt_audience", &self.jwt_audience, "(unset: a token naming an audience is refused)"),
        ] {
            match value {
                Some(v) => lines.push(line(name, &v.value, &v.source)),
                None => lines.push(line(name, unset, &Source::Default)),
            }
        }
        let timeout = format!("{}", self.validation_timeout.value.as_millis());
        lines.push(line("validation_timeout_ms", &timeout, &self.validation_timeout.source));
        let ms = |d: &Sourced<Duration>| d.value.as_millis().to_string();
        lines.push(line("header_timeout_ms", &ms(&self.header_timeout), &self.header_timeout.source));
        lines.push(line("body_timeout_ms", &ms(&self.body_timeout), &self.body_timeout.source));
        lines.push(line("max_connections", &self.max_connections.value.to_string(), &self.max_connections.source));
        lines.push(line("body_budget_mb", &self.body_budget_mb.value.to_string(), &self.body_budget_mb.source));
        lines.push(line("behind_tls", &self.behind_tls.value.to_string(), &self.behind_tls.source));
        match &self.public_url {
            Some(u) => lines.push(line("public_url", &u.value, &u.source)),
            None => lines.push(line("public_url", "(unset)", &Source::Default)),
        }
        let base = self.public_url.as_ref().map(|u| u.value.as_str()).unwrap_or_default();
        for p in &self.oidc {
            let key = |k: &str| format!("oidc.{}.{k}", p.id);
            lines.push(line(&key("issuer"), &p.issuer, &p.source));
            lines.push(line(&key("client_id"), &p.client_id, &p.source));
            lines.push(line(&key("client_secret"), "(set; hidden)", &p.client_secret.source));
            lines.push(line(&key("redirect_uri"), &redirect_uri(base, &p.id), &p.source));
        }
        for (id, url) in &self.provider_base_urls {
            lines.push(line(&format!("providers.{id}.base_url"), &url.value, &url.source));
        }
        for (id, model) in &self.default_models {
            lines.push(line(&format!("providers.{id}.default_model"), &model.value, &model.source));
        }
        lines.join("\n")
    }
}

/// Where issuer `id` sends people back to: `<public_url>/login/oidc/<id>/callback`.
pub fn redirect_uri(public_url: &str, id: &str) -> String {
    format!("{}/login/oidc/{id}/callback", public_url.trim_end_matches('/'))
}

/// `[[oidc.providers]]`, checked: ids, issuers, client ids, and each client secret from
/// `KEYGATE_OIDC_<ID>_CLIENT_SECRET`, else `client_secret_file`, else `client_secret`.
fn oidc_providers(
    entries: Vec<OidcProviderFile>,
    file_source: &Source,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<OidcConfig>> {
    let mut out: Vec<OidcConfig> = Vec::new();
    for entry in entries {
        let id = entry.id.trim().to_owned();
        let at = format!("oidc.providers[{id}] (from {file_source})");
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            bail!("{at}: id `{id}` must be lower-case letters, digits, `-` or `_` (it is part of the redirect URI)");
        }
        if out.iter().any(|p| p.id == id) {
            bail!("{at}: id `{id}` is configured twice");
        }
        let issuer = entry.issuer.trim().to_owned();
        let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| issuer.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/'])));
        if !(issuer.starts_with("https://") || local) || issuer.contains(['?', '#']) {
            bail!("{at}: issuer `{issuer}` must be an https URL, exactly the issuer's `iss` (http only on loopback)");
        }
        let client_id = entry.client_id.trim().to_owned();
        if client_id.is_empty() {
            bail!("{at}: client_id is empty");
        }
        let var = format!("KEYGATE_OIDC_{}_CLIENT_SECRET", id.to_ascii_uppercase().replace('-', "_"));
        let client_secret = match (env(&var), &entry.client_secret_file, entry.client_secret) {
            (Some(v), _, _) => Sourced::new(SecretString::from(v.trim().to_owned()), Source::EnvOwned(var)),
            (None, Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{at}: reading client_secret_file {}", path.display()))?;
                Sourced::new(SecretString::from(text.trim().to_owned()), file_source.clone())
            }
            (None, None, Some(v)) => Sourced::new(SecretString::from(v.trim().to_owned()), file_source.clone()),
            (None, None, None) => bail!("{at}: no client secret: set {var}, client_secret_file or client_secret"),
        };
        if client_secret.value.expose_secret().is_empty() {
            bail!("{at}: the client secret (from {}) is empty", client_secret.source);
        }
        let name = entry.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| id.clone());
        out.push(OidcConfig {
            id,
            name,
            issuer,
            client_id,
            client_secret,
            allowed_emails: entry.allowed_emails,
            allowed_domains: entry.allowed_domains,
            super_admin_emails: entry.super_admin_emails,
            source: file_source.clone(),
        });
    }
    Ok(out)
}

fn line(name: &str, value: &str, source: &Source) -> String {
    format!("{name:<16} = {value:<48} # {source}")
}

fn read_file(path: &Path, named_by: &str) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {} (named by {named_by})", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], flags: Overrides) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::load_from(&flags, &|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_with_nothing_set() {
        let c = load(&[], Overrides::default()).unwrap();
        assert_eq!(c.listen.value.to_string(), "127.0.0.1:8080");
        assert_eq!(c.listen.source, Source::Default);
        assert_eq!(c.data_dir.value, PathBuf::from("./keygate-data"));
        assert_eq!(c.env.value, Mode::Development);
        assert!(c.database_url.is_none() && c.master_key.is_none());
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1000\"\nlog = \"debug\"\nenv = \"production\"\n").unwrap();
        let file = path.display().to_string();
        let c = load(&[("KEYGATE_CONFIG", &file)], Overrides::default()).unwrap();
        assert_eq!(c.listen.value.port(), 1000);
        assert_eq!(c.listen.source, Source::File(path.clone()));
        assert_eq!(c.env.value, Mode::Production);
        let c = load(&[("KEYGATE_CONFIG", &file), ("KEYGATE_LISTEN", "127.0.0.1:2000")], Overrides::default()).unwrap();
        assert_eq!((c.listen.value.port(), c.listen.source.clone()), (2000, Source::Env("KEYGATE_LISTEN")));
        assert_eq!(c.log.value, "debug");
        let flags = Overrides { listen: Some("127.0.0.1:3000".into()), ..Default::default() };
        let c = load(&[("KEYGATE_CONFIG", &file), ("KEYGATE_LISTEN", "127.0.0.1:2000")], flags).unwrap();
        assert_eq!((c.listen.value.port(), c.listen.source), (3000, Source::Flag("--listen")));
    }

    #[test]
    fn errors_name_the_option_and_its_source() {
        let err = load(&[("KEYGATE_LISTEN", "nowhere")], Overrides::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("listen (from environment variable KEYGATE_LISTEN)"), "{msg}");
        let err = load(&[("KEYGATE_ENV", "staging")], Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("env (from environment variable KEYGATE_ENV)"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let err = load(&[("KEYGATE_CONFIG", &path.display().to_string())], Overrides::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.toml") && msg.contains("listn"), "{msg}");
        let err = load(&[("KEYGATE_CONFIG", "/does/not/exist.toml")], Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("named by KEYGATE_CONFIG"));
    }

    #[test]
    fn a_hyphenated_providers_base_url_is_set_with_underscores() {
        let c =
            load(&[("KEYGATE_PROVIDER_GITHUB_GIT_BASE_URL", "http://127.0.0.1:9418")], Overrides::default()).unwrap();
        let catalog = c.catalog().unwrap();
        assert_eq!(catalog.get("github-git").unwrap().base_url, "http://127.0.0.1:9418");
        assert_eq!(catalog.get("github").unwrap().base_url, "https://api.github.com", "its own base URL stays");
    }

    #[test]
    fn a_deployment_chooses_a_providers_default_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "[providers.openai]\ndefault_model = \"gpt-5-mini\"\n").unwrap();
        let c = load(&[("KEYGATE_CONFIG", &path.display().to_string())], Overrides::default()).unwrap();
        let catalog = c.catalog().unwrap();
        assert_eq!(catalog.get("openai").unwrap().default_model.as_deref(), Some("gpt-5-mini"));
        assert_eq!(catalog.get("anthropic").unwrap().default_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert!(c.describe().contains("providers.openai.default_model"), "{}", c.describe());
    }

    #[test]
    fn the_example_config_is_valid_and_documents_every_option() {
        let parsed: FileConfig = toml::from_str(EXAMPLE).unwrap();
        assert!(parsed.listen.is_some() && parsed.data_dir.is_some() && parsed.log.is_some());
        for option in [
            "listen",
            "metrics_listen",
            "data_dir",
            "database_url",
            "redis_url",
            "env",
            "master_key_file",
            "log",
            "jwt_max_lifetime_secs",
            "jwt_issuer",
            "jwt_audience",
            "behind_tls",
            "public_url",
            "id",
            "issuer",
            "client_id",
            "client_secret_file",
            "allowed_emails",
            "allowed_domains",
            "super_admin_emails",
        ] {
            assert!(EXAMPLE.contains(&format!("{option} =")), "{option} is not documented");
        }
        for var in [
            "KEYGATE_MASTER_KEY",
            "KEYGATE_MASTER_KEYS",
            "KEYGATE_DATABASE_URL",
            "KEYGATE_ENV",
            "KEYGATE_LOG",
            "KEYGATE_METRICS_LISTEN",
            "KEYGATE_JWT_MAX_LIFETIME_SECS",
            "KEYGATE_JWT_ISSUER",
            "KEYGATE_JWT_AUDIENCE",
            "KEYGATE_BEHIND_TLS",
            "KEYGATE_PUBLIC_URL",
            "KEYGATE_OIDC_<ID>_CLIENT_SECRET",
        ] {
            assert!(EXAMPLE.contains(var), "{var} is not documented");
        }
    }

    #[test]
    fn jwt_checks_are_configurable() {
        let c = load(&[], Overrides::default()).unwrap();
        assert_eq!(c.jwt_max_lifetime.value, Duration::from_secs(86_400), "24 hours by default");
        assert!(c.jwt_issuer.is_none() && c.jwt_audience.is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            "jwt_max_lifetime_secs = 3600\njwt_issuer = \"https://auth.example.com\"\n\
             jwt_audience = \"keygate\"\n",
        )
        .unwrap();
        let file = path.display().to_string();
        let c = load(&[("KEYGATE_CONFIG", &file)], Overrides::default()).unwrap();
        assert_eq!(c.jwt_max_lifetime.value, Duration::from_secs(3600));
        assert_eq!(c.jwt_issuer.as_ref().map(|s| s.value.as_str()), Some("https://auth.example.com"));
        assert_eq!(c.jwt_audience.as_ref().map(|s| s.value.as_str()), Some("keygate"));
        let c = load(
            &[("KEYGATE_CONFIG", &file), ("KEYGATE_JWT_MAX_LIFETIME_SECS", "600"), ("KEYGATE_JWT_AUDIENCE", "other")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            (c.jwt_max_lifetime.value, c.jwt_max_lifetime.source),
            (Duration::from_secs(600), Source::Env("KEYGATE_JWT_MAX_LIFETIME_SECS"))
        );
        assert_eq!(c.jwt_audience.map(|s| s.value), Some("other".to_owned()));

        let err = load(&[("KEYGATE_JWT_MAX_LIFETIME_SECS", "forever")], Overrides::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("jwt_max_lifetime_secs (from environment variable KEYGATE_JWT_MAX_LIFETIME_SECS)"),
            "{msg}"
        );
    }

    #[test]
    fn metrics_can_have_a_listener_of_their_own() {
        assert!(load(&[], Overrides::default()).unwrap().metrics_listen.is_none(), "unset by default");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "metrics_listen = \"127.0.0.1:9090\"\n").unwrap();
        let file = path.display().to_string();
        let c = load(&[("KEYGATE_CONFIG", &file)], Overrides::default()).unwrap();
        assert_eq!(c.metrics_listen.map(|s| s.value.port()), Some(9090));
        let c = load(&[("KEYGATE_CONFIG", &file), ("KEYGATE_METRICS_LISTEN", "127.0.0.1:9191")], Overrides::default())
            .unwrap();
        let m = c.metrics_listen.unwrap();
        assert_eq!((m.value.port(), m.source), (9191, Source::Env("KEYGATE_METRICS_LISTEN")));
        let err = load(&[("KEYGATE_METRICS_LISTEN", "nowhere")], Overrides::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("metrics_listen (from environment variable KEYGATE_METRICS_LISTEN)"), "{msg}");
    }

    #[test]
    fn single_sign_on_issuers_side_by_side_with_their_secrets_from_env_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("kc.secret");
        std::fs::write(&secret_file, "CANARY-keycloak-secret\n").unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            format!(
                "public_url = \"https://kg.example.com/\"\n\
                 [[oidc.providers]]\nid = \"google\"\nname = \"Google\"\nissuer = \"https://accounts.google.com\"\n\
                 client_id = \"g-client\"\nclient_secret = \"CANARY-in-file\"\nallowed_domains = [\"example.com\"]\n\
                 super_admin_emails = [\"boss@example.com\"]\n\
                 [[oidc.providers]]\nid = \"corp-kc\"\nissuer = \"https://sso.example.com/realms/corp\"\n\
                 client_id = \"kg\"\nclient_secret_file = \"{}\"\n",
                secret_file.display()
            ),
        )
        .unwrap();
        let file = path.display().to_string();
        let c = load(
            &[("KEYGATE_CONFIG", &file), ("KEYGATE_OIDC_GOOGLE_CLIENT_SECRET", "CANARY-from-env")],
            Overrides::default(),
        )
        .unwrap();
        let providers = c.oidc_providers();
        assert_eq!(providers.len(), 2);
        assert_eq!(providers[0].redirect_uri, "https://kg.example.com/login/oidc/google/callback");
        assert_eq!(providers[0].client_secret.expose(), "CANARY-from-env", "the environment wins");
        assert_eq!(providers[0].allowed_domains, ["example.com"]);
        assert_eq!(
            (providers[1].name.as_str(), providers[1].client_secret.expose()),
            ("corp-kc", "CANARY-keycloak-secret")
        );
        let shown = c.describe();
        assert!(shown.contains("oidc.corp-kc.redirect_uri") && !shown.contains("CANARY"), "{shown}");
        assert!(!format!("{c:?}").contains("CANARY"));

        // Without the environment, the file's secret; without public_url, an error.
        let c = load(&[("KEYGATE_CONFIG", &file)], Overrides::default()).unwrap();
        assert_eq!(c.oidc_providers()[0].client_secret.expose(), "CANARY-in-file");
        let bad = |toml: &str| {
            std::fs::write(&path, toml).unwrap();
            format!("{:#}", load(&[("KEYGATE_CONFIG", &file)], Overrides::default()).unwrap_err())
        };
        let entry =
            "[[oidc.providers]]\nid = \"google\"\nissuer = \"https://accounts.google.com\"\nclient_id = \"x\"\n";
        assert!(bad(&format!("{entry}client_secret = \"s\"\n")).contains("public_url (KEYGATE_PUBLIC_URL) must be set"));
        let msg = bad(&format!("public_url = \"https://kg.example.com\"\n{entry}"));
        assert!(msg.contains("oidc.providers[google]") && msg.contains("KEYGATE_OIDC_GOOGLE_CLIENT_SECRET"), "{msg}");
        let msg = bad("public_url = \"https://kg.example.com\"\n[[oidc.providers]]\nid = \"g\"\nissuer = \"http://accounts.example.com\"\nclient_id = \"x\"\nclient_secret = \"s\"\n");
        assert!(msg.contains("must be an https URL"), "{msg}");
        let msg = bad("public_url = \"kg.example.com\"\n");
        assert!(msg.contains("public_url (from config file"), "{msg}");
        let msg = bad(&format!(
            "public_url = \"https://kg.example.com\"\n{entry}client_secret = \"s\"\n{entry}client_secret = \"s\"\n"
        ));
        assert!(msg.contains("configured twice"), "{msg}");
    }

    #[test]
    fn describe_hides_secrets() {
        let c = load(
            &[
                ("KEYGATE_DATABASE_URL", "postgres://kg:hunter2-CANARY@db:5432/keygate"),
                ("KEYGATE_MASTER_KEY", "CANARYCANARY"),
            ],
            Overrides::default(),
        )
        .unwrap();
        let shown = c.describe();
        assert!(!shown.contains("CANARY") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://kg@db:5432/keygate"), "{shown}");
    }
}
