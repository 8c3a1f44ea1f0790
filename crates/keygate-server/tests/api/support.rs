//! The test harness: a keygate app on a fresh database with every provider pointed at
//! one keygate-mock, users and tokens made through the services, and a request helper
//! that checks every response for canary secrets.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use keygate_core::catalog::Catalog;
use keygate_core::*;
use keygate_mock::{MockConfig, MockProvider, OAuthClient};
use keygate_server::AppState;
use keygate_service::audit::Actor;
use keygate_service::auth::TokenRequest;
use keygate_service::jwt::{JwksSource, JwtOptions, JwtVerifier};
use keygate_service::{boot, keys::KeyVault, now, Options, Services};
use keygate_store::testdb::TestDb;
use keygate_vault::{KeyEncryptionKeys, Keyring, SecretText};
use serde_json::Value;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tower::ServiceExt;

pub const MASTER_KEY: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";
pub const JWT_SECRET: &str = "test-hs256-secret-that-is-long-enough-0123456789";
/// Keys the mock accepts. Each test adds its own canary-marked keys too.
pub const OPENAI_KEY: &str = "sk-proj-VALIDopenai0000000000000001";
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-VALIDanthropic000000001";
pub const SH_CLIENT: (&str, &str) = ("sh-client-id", "sh-client-SECRET-000001");
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(2000);

/// Every log line of the test binary, at TRACE, through keygate's redacting writer.
pub fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buffer.clone());
        let subscriber = keygate_server::telemetry::subscriber("trace", move || writer.clone(), false).unwrap();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

#[derive(Clone)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a harness's services are set up, where a test needs other than the defaults.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub jwt: JwtOptions,
    pub login_throttle: keygate_service::throttle::ThrottleOptions,
    /// How long an upstream may keep keygate waiting; `None`: [`UPSTREAM_TIMEOUT`].
    pub upstream_timeout: Option<Duration>,
    /// Single sign-on issuers; `{mock}` in an issuer stands for the mock's URL. Their
    /// clients are registered with the mock's issuer.
    pub oidc: Vec<keygate_service::oidc::OidcProvider>,
}

pub struct Harness {
    pub state: AppState,
    setup: Setup,
    /// The store and vault under the services, for assertions on what was written.
    store: Arc<dyn keygate_store::Store>,
    vault: Arc<KeyVault>,
    pub mock: MockProvider,
    /// Secrets that must never come back in a response or a log line.
    canaries: Mutex<Vec<String>>,
    _db: TestDb,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }
}

/// A user with a token, acting in their personal workspace.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub workspace: WorkspaceId,
    pub token: String,
}

impl Harness {
    pub async fn new(db: TestDb) -> Self {
        Self::with(db, Setup::default()).await
    }

    pub async fn with(db: TestDb, setup: Setup) -> Self {
        logs();
        let mut config = MockConfig::with_keys([OPENAI_KEY, ANTHROPIC_KEY]);
        config.oauth_clients.push(OAuthClient { client_id: SH_CLIENT.0.into(), client_secret: SH_CLIENT.1.into() });
        for p in &setup.oidc {
            let client = OAuthClient { client_id: p.client_id.clone(), client_secret: p.client_secret.expose().into() };
            config.oidc_clients.push(client);
        }
        let mock = MockProvider::start(config).await.unwrap();
        let (services, store, vault) = services_on(&db.location, &mock.url(), &setup).await;
        Self {
            state: AppState::new(Arc::new(services)),
            setup,
            store,
            vault,
            mock,
            canaries: Mutex::new(Vec::new()),
            _db: db,
        }
    }

    /// Another keygate process on the same database: a second replica.
    pub async fn replica(&self) -> AppState {
        AppState::new(Arc::new(services_on(&self._db.location, &self.mock.url(), &self.setup).await.0))
    }

    pub fn services(&self) -> &Services {
        &self.state.services
    }

    pub fn store(&self) -> &Arc<dyn keygate_store::Store> {
        &self.store
    }

    pub fn vault(&self) -> &KeyVault {
        &self.vault
    }

    /// A fresh key the mock accepts, marked so any leak is found.
    pub fn valid_key(&self, prefix: &str) -> String {
        let key = format!("{prefix}CANARY{}", uuid::Uuid::now_v7().simple());
        self.mock.configure(|c| c.valid_keys.push(key.clone()));
        self.canary(&key);
        key
    }

    /// A key the mock rejects, marked as a canary.
    pub fn invalid_key(&self, prefix: &str) -> String {
        let key = format!("{prefix}CANARYbad{}", uuid::Uuid::now_v7().simple());
        self.canary(&key);
        key
    }

    pub fn canary(&self, secret: &str) {
        self.canaries.lock().unwrap().push(secret.to_owned());
    }

    /// A user with a personal workspace and a token.
    pub async fn user(&self, email: &str) -> Caller {
        self.user_with(email, false).await
    }

    pub async fn super_admin(&self, email: &str) -> Caller {
        self.user_with(email, true).await
    }

    async fn user_with(&self, email: &str, super_admin: bool) -> Caller {
        let store = self.store();
        let at = now();
        let user = User {
            id: UserId::new(),
            email: Some(email.into()),
            external_id: None,
            tier: "community".into(),
            super_admin,
            created_at: at,
            updated_at: at,
        };
        let ws = Workspace {
            id: WorkspaceId::new(),
            name: format!("{email} ws"),
            status: WorkspaceStatus::Active,
            personal: true,
            external_id: None,
            created_at: at,
            updated_at: at,
        };
        store.provision_user(&user, None, &ws, Role::Owner).await.unwrap();
        let token = self.token_for(&user, Some(ws.id)).await;
        Caller { user, workspace: ws.id, token }
    }

    /// Adds `caller` to `workspace` with `role` and returns a token acting there.
    pub async fn join(&self, caller: &Caller, workspace: WorkspaceId, role: Role) -> Caller {
        let m = Membership { workspace_id: workspace, user_id: caller.user.id, role, created_at: now() };
        self.store().upsert_membership(&m).await.unwrap();
        Caller { user: caller.user.clone(), workspace, token: self.token_for(&caller.user, Some(workspace)).await }
    }

    pub async fn token_for(&self, user: &User, workspace: Option<WorkspaceId>) -> String {
        let request = TokenRequest { name: "test".into(), scopes: None, expires_at: None, workspace_id: workspace };
        let issued = self.services().create_token_for_user(user, request, &Actor::cli()).await.unwrap();
        let token = issued.secret.expose().to_owned();
        self.canary(&token);
        token
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        self.send_to(&self.state, request).await
    }

    /// Sends `request` to the app built on `state` (this harness's, or a replica's).
    pub async fn send_to(&self, state: &AppState, request: Request<Body>) -> Reply {
        self.send_via(keygate_server::router(state.clone()), request).await
    }

    /// `GET path` on the router a separate metrics listener serves (`metrics_listen`).
    pub async fn on_metrics_listener(&self, path: &str) -> Reply {
        let request = Request::builder().method(Method::GET).uri(path).body(Body::empty()).unwrap();
        self.send_via(keygate_server::metrics_router(self.state.clone()), request).await
    }

    /// The metrics, as a scraper on the metrics listener sees them.
    pub async fn scrape(&self) -> Reply {
        self.on_metrics_listener("/metrics").await
    }

    async fn send_via(&self, app: axum::Router, request: Request<Body>) -> Reply {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        // Every response, in its body and its headers, in every encoding a provider could
        // echo a key in (raw, percent, hex, base64, JSON escapes, cut short).
        let header_text: Vec<u8> =
            headers.iter().flat_map(|(n, v)| [n.as_str().as_bytes(), b": ", v.as_bytes(), b"\n"].concat()).collect();
        for canary in self.canaries.lock().unwrap().iter() {
            assert!(!text.contains(canary.as_str()), "a response carried a secret ({}…): {text}", &canary[..12]);
            if let Some(forms) = keygate_vault::echo::EchoScrubber::new(&[canary.as_str()]) {
                assert!(!forms.found_in(&bytes), "a response carried an encoded secret ({}…): {text}", &canary[..12]);
                assert!(
                    !forms.found_in(&header_text),
                    "a response header carried a secret ({}…): {headers:?}",
                    &canary[..12]
                );
            }
        }
        Reply { status, headers, json, text }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Stores a key through the API and returns its id; panics unless 201.
    pub async fn add_key(&self, caller: &Caller, body: Value) -> String {
        let reply = self.post("/api/v1/keys", &caller.token, body).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json["id"].as_str().unwrap().to_owned()
    }

    pub async fn audit_count(&self) -> usize {
        self.store().audit_events(&Default::default()).await.unwrap().len()
    }
}

impl Drop for Harness {
    /// No canary may appear in any log line either.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
        for canary in self.canaries.lock().unwrap().iter() {
            assert!(!logs.contains(canary.as_str()), "a log line carried a secret ({}…)", &canary[..12]);
        }
    }
}

/// Services over the database at `location`, every provider pointed at the mock.
async fn services_on(
    location: &keygate_store::DatabaseLocation,
    mock_url: &str,
    setup: &Setup,
) -> (Services, Arc<dyn keygate_store::Store>, Arc<KeyVault>) {
    let store = keygate_store::connect(location).await.unwrap();
    let keks: Arc<dyn KeyEncryptionKeys> = Arc::new(Keyring::from_hex("test", MASTER_KEY).unwrap());
    boot::check(&*store, &*keks).await.unwrap();
    let mut catalog = Catalog::builtin().unwrap();
    let ids: Vec<String> = catalog.all().iter().map(|p| p.id.clone()).collect();
    for id in ids {
        catalog.set_base_url(&id, mock_url).unwrap();
    }
    let jwks = serde_json::from_str(include_str!("fixtures/test-jwks.json")).unwrap();
    let jwt =
        JwtVerifier::new(Some(&SecretText::new(JWT_SECRET.into())), Some(JwksSource::Static(jwks)), setup.jwt.clone());
    let vault = Arc::new(KeyVault::new(store.clone(), keks));
    let services = Services::new(
        store.clone(),
        vault.clone(),
        catalog,
        Some(jwt),
        Options {
            probe_timeout: PROBE_TIMEOUT,
            upstream_timeout: setup.upstream_timeout.unwrap_or(UPSTREAM_TIMEOUT),
            login_throttle: setup.login_throttle.clone(),
            oidc: setup
                .oidc
                .iter()
                .map(|p| keygate_service::oidc::OidcProvider {
                    issuer: p.issuer.replace("{mock}", mock_url),
                    ..p.clone()
                })
                .collect(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    (services, store, vault)
}

impl Harness {
    /// A call through `/proxy/{provider}/{path}` with the caller's token as the SDKs send it.
    pub async fn proxy(&self, token: &str, provider: &str, path: &str, body: Value, extra: &[(&str, &str)]) -> Reply {
        self.proxy_via(&self.state, token, provider, path, body, extra).await
    }

    pub async fn proxy_via(
        &self,
        state: &AppState,
        token: &str,
        provider: &str,
        path: &str,
        body: Value,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("/proxy/{provider}/{path}"))
            .header("content-type", "application/json");
        request = if provider == "anthropic" {
            request.header("x-api-key", token)
        } else {
            request.header("authorization", format!("Bearer {token}"))
        };
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        self.send_to(state, request.body(Body::from(body.to_string())).unwrap()).await
    }

    pub async fn chat(&self, token: &str) -> Reply {
        self.chat_via(&self.state, token).await
    }

    pub async fn chat_via(&self, state: &AppState, token: &str) -> Reply {
        self.proxy_via(
            state,
            token,
            "openai",
            "v1/chat/completions",
            serde_json::json!({"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await
    }

    /// Changes the policy through the service.
    pub async fn policy(&self, change: impl FnOnce(&mut keygate_core::policy::Policy)) {
        let mut policy = self.services().policy().as_ref().clone();
        change(&mut policy);
        self.services().set_policy(policy).await.unwrap();
    }

    /// Waits until every usage event is written.
    pub async fn flush(&self) {
        self.services().flush_usage().await;
    }

    /// An operator key, shared (the demo allowance) or not (a platform key).
    pub async fn operator_key(&self, root: &Caller, provider: &str, prefix: &str, shared: bool) -> String {
        self.add_key(root, serde_json::json!({"provider": provider, "scope": "operator", "operator_shared": shared, "secret": self.valid_key(prefix)})).await
    }
}

/// keygate's own application on a real listener, as `keygate serve` runs it: hyper takes
/// proxied calls (and git's streams) straight from the connection, past the router the
/// other tests call.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(h: &Harness) -> Self {
        Self::start_with(h, keygate_server::ConnectionLimits::default()).await
    }

    pub async fn start_with(h: &Harness, limits: keygate_server::ConnectionLimits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = keygate_server::App::new(h.state.clone());
        let task = tokio::spawn(keygate_server::serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Stops accepting, lets open calls finish, and waits until the server has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
