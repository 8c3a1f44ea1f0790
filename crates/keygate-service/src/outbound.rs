//! Every outbound call to a provider — validation probes, OAuth2 token exchanges and
//! proxied calls — goes through a client built by [`client`]: it never follows a
//! redirect (reqwest strips only `Authorization` and `Cookie` on a cross-host redirect,
//! so `x-api-key` or `x-goog-api-key` would follow it to whatever host it names), and a
//! client that cannot be built is an error at start-up, never a silently swapped default.
//!
//! [`Upstreams`] holds one pooled client per provider with its base URL parsed once, and
//! the OAuth2 access tokens obtained with client-credentials keys.
//!
//! Not for: building the proxied request (headers, injection: the server's proxy does
//! that) or deciding who pays (the gateway).

use crate::cache::lock;
use crate::gateway::Admitted;
use crate::services::Services;
use crate::{ServiceError, ServiceResult};
use keygate_core::catalog::{Catalog, Provider};
use keygate_core::CredentialId;
use keygate_vault::SecretText;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How an outbound client waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    /// Between two reads of the answer (a stream may run for minutes as long as it moves).
    pub read: Option<Duration>,
    /// For the whole exchange (probes, token endpoints).
    pub total: Option<Duration>,
}

/// The one way keygate builds an outbound HTTP client.
pub(crate) fn client(timeouts: Timeouts) -> ServiceResult<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        // Redirects are relayed to the caller (or refused), never followed with a key.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")));
    if let Some(read) = timeouts.read {
        builder = builder.read_timeout(read);
    }
    if let Some(total) = timeouts.total {
        builder = builder.timeout(total);
    }
    builder.build().map_err(|e| ServiceError::Invalid { field: "outbound HTTP client", problem: e.to_string() })
}

type OauthKey = (CredentialId, chrono::DateTime<chrono::Utc>);

/// One pooled HTTP client per provider, and OAuth2 access tokens cached until expiry.
#[derive(Debug)]
pub struct Upstreams {
    /// Per provider: its client, and its base URL parsed once (not on every call).
    clients: HashMap<String, (reqwest::Client, reqwest::Url)>,
    /// Keyed by the credential and its last change: a replaced secret never reuses the
    /// token its predecessor obtained. The only plaintext-derived value keygate caches.
    oauth: Mutex<HashMap<OauthKey, (SecretText, Instant)>>,
    timeouts: Timeouts,
}

impl Upstreams {
    pub(crate) fn new(catalog: &Catalog, timeouts: Timeouts) -> ServiceResult<Self> {
        let mut clients = HashMap::new();
        for p in catalog.all() {
            let base = reqwest::Url::parse(&p.base_url).map_err(|e| ServiceError::Invalid {
                field: "provider base URL",
                problem: format!("{}'s base URL `{}` is not a URL: {e}", p.id, p.base_url),
            })?;
            clients.insert(p.id.clone(), (client(timeouts)?, base));
        }
        Ok(Self { clients, oauth: Mutex::new(HashMap::new()), timeouts })
    }

    fn entry(&self, provider: &Provider) -> ServiceResult<&(reqwest::Client, reqwest::Url)> {
        self.clients.get(&provider.id).ok_or_else(|| ServiceError::UnknownProvider(provider.id.clone()))
    }

    /// How long a proxied call waits for a connection, and between two reads of the
    /// answer (for a proxy that builds its own client).
    pub fn proxy_timeouts(&self) -> (Duration, Option<Duration>) {
        (self.timeouts.connect, self.timeouts.read)
    }

    /// The pooled client for `provider`.
    pub fn client(&self, provider: &Provider) -> ServiceResult<&reqwest::Client> {
        Ok(&self.entry(provider)?.0)
    }

    /// The provider's URL for `path` and `query` (already encoded): the base URL parsed
    /// at start (the catalog never changes while keygate runs) with the path appended and
    /// the query set.
    pub fn url(&self, provider: &Provider, path: &str, query: &str) -> ServiceResult<reqwest::Url> {
        let mut url = self.entry(provider)?.1.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path.trim_start_matches('/'));
        url.set_path(&joined);
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        Ok(url)
    }
}

impl Services {
    /// The outbound clients, for the proxy.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The plaintext credential of an admitted call, for its one outbound request.
    pub async fn open_for_call(&self, call: &Admitted) -> ServiceResult<SecretText> {
        self.vault.open_credential(&call.credential).await.map_err(|e| {
            tracing::warn!(credential = %call.credential.id, error = %e, "a credential could not be opened for a call");
            ServiceError::Undecryptable { credential: call.credential.id.to_string(), reason: e.to_string() }
        })
    }

    /// An OAuth2 client-credentials access token for the call's credential (`secret` is
    /// its plaintext), from the cache or a fresh exchange at `token_path`.
    pub async fn oauth_token(
        &self,
        call: &Admitted,
        token_path: &str,
        secret: &SecretText,
    ) -> ServiceResult<SecretText> {
        let key = (call.credential.id, call.credential.updated_at);
        if let Some((token, until)) = lock(&self.upstreams.oauth).get(&key) {
            if *until > Instant::now() {
                return Ok(token.clone());
            }
        }
        let provider = &call.provider;
        let fields = crate::validation::fields(provider, secret).unwrap_or_default();
        let field = |n: &str| fields.get(n).map(|s| s.expose().to_owned()).unwrap_or_default();
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", field("client_id")),
            ("client_secret", field("client_secret")),
        ];
        let failed = |detail: String| ServiceError::UpstreamAuthFailed(detail);
        let url = self.upstreams.url(provider, token_path, "")?;
        let response = self
            .upstreams
            .client(provider)?
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|_| failed(format!("{}'s token endpoint could not be reached", provider.name)))?;
        if !response.status().is_success() {
            return Err(failed(format!(
                "{} refused the client credentials (HTTP {})",
                provider.name,
                response.status().as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Grant {
            access_token: String,
            expires_in: Option<u64>,
        }
        let grant: Grant =
            response.json().await.map_err(|_| failed("the token endpoint's answer has no access_token".into()))?;
        let token = SecretText::new(grant.access_token);
        let ttl = grant.expires_in.unwrap_or(300);
        let mut cache = lock(&self.upstreams.oauth);
        // Tokens of superseded versions of this credential are of no use any more.
        cache.retain(|(id, _), _| *id != call.credential.id);
        cache.insert(key, (token.clone(), Instant::now() + Duration::from_secs(ttl.saturating_sub(30).max(1))));
        Ok(token)
    }

    /// The provider refused the call's access token: the next call exchanges afresh.
    pub fn forget_oauth_token(&self, call: &Admitted) {
        lock(&self.upstreams.oauth).remove(&(call.credential.id, call.credential.updated_at));
    }
}
