//! What the harness measures: the mock provider (the "direct" baseline and everyone's
//! upstream), keygate on SQLite or PostgreSQL, and LiteLLM's proxy.

use crate::load::Call;
use crate::procs::{free_port, Proc, Spawn};
use anyhow::{bail, Context};
use keygate_store::testdb::TestDb;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The provider key the mock accepts and every proxy injects (a fixture, not a secret).
pub const PROVIDER_KEY: &str = "sk-bench-0000000000000000000000000000000000000000";
/// The Anthropic key the mock accepts, for the unified-endpoint lane (a fixture too).
pub const ANTHROPIC_KEY: &str = "sk-ant-bench-000000000000000000000000000000000000";
/// The model of the unified lane: OpenAI's format in, Anthropic Messages out.
const UNIFIED_MODEL: &str = "anthropic/claude-sonnet-4-5-20250929";
const JWT_SECRET: &str = "bench-host-app-shared-secret-0123456789";
const LITELLM_MASTER_KEY: &str = "sk-litellm-bench-master";

/// The same question in Anthropic's own format, for the passthrough side of the unified lane.
fn messages_body(stream: bool) -> Value {
    let mut body = json!({
        "model": "claude-sonnet-4-5-20250929",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 64,
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

pub fn chat_body(stream: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 64,
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// keygate-mock, run as its own process on the harness's core.
#[derive(Debug)]
pub struct Mock {
    pub proc: Proc,
    pub url: String,
    http: reqwest::Client,
}

/// The mock's pacing for one phase.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub latency_ms: u64,
    pub chunk_interval_ms: u64,
    pub chunks: u32,
}

impl Mock {
    pub async fn start(binary: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut proc = Spawn {
            name: "keygate-mock",
            program: binary,
            args: vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--valid-key".into(),
                PROVIDER_KEY.into(),
                "--valid-key".into(),
                ANTHROPIC_KEY.into(),
                "--no-record".into(),
            ],
            env: Vec::new(),
            core: None,
            log_dir,
        }
        .start()?;
        proc.wait_ready(&format!("{url}/__mock/stats"), Duration::from_secs(20)).await?;
        Ok(Self { proc, url, http: reqwest::Client::new() })
    }

    pub fn direct(&self, stream: bool) -> Call {
        Call::new(format!("{}/v1/chat/completions", self.url), PROVIDER_KEY.into(), &chat_body(stream))
    }

    pub async fn pace(&self, pacing: Pacing) -> anyhow::Result<()> {
        let config = json!({
            "valid_keys": [PROVIDER_KEY, ANTHROPIC_KEY],
            "latency_ms": pacing.latency_ms,
            "chunk_interval_ms": pacing.chunk_interval_ms,
            "chunks": pacing.chunks,
            "record": false,
        });
        let r = self.http.put(format!("{}/__mock/config", self.url)).json(&config).send().await?;
        if !r.status().is_success() {
            bail!("the mock refused its configuration: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Provider requests the mock has served.
    pub async fn served(&self) -> anyhow::Result<u64> {
        let stats: Value = self.http.get(format!("{}/__mock/stats", self.url)).send().await?.json().await?;
        stats["served"].as_u64().context("the mock's stats have no `served`")
    }
}

/// Which proxy a target is.
#[derive(Debug)]
pub enum Kind {
    /// `_db` is held so its database outlives the process (dropping it deletes it).
    Keygate {
        _db: TestDb,
        binary: PathBuf,
        env: Vec<(String, String)>,
    },
    LiteLlm,
}

/// A proxy under test, running on its own core.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    pub proc: Proc,
    pub base: String,
    /// keygate's metrics listener (`KEYGATE_METRICS_LISTEN`), where `/metrics` needs no
    /// credential.
    pub metrics: Option<String>,
    /// The credential callers present (a keygate token, or LiteLLM's master key).
    pub bearer: String,
}

impl Target {
    pub fn call(&self, stream: bool) -> Call {
        self.call_as(&self.bearer, stream)
    }

    pub fn call_as(&self, bearer: &str, stream: bool) -> Call {
        let path = match self.kind {
            Kind::Keygate { .. } => "/proxy/openai/v1/chat/completions",
            Kind::LiteLlm => "/v1/chat/completions",
        };
        Call::new(format!("{}{path}", self.base), bearer.into(), &chat_body(stream))
    }

    /// The unified lane's calls (keygate only): `POST /v1/chat/completions` in OpenAI's
    /// format to Anthropic, translated both ways, and the same question passed through
    /// `/proxy/anthropic/v1/messages`.
    pub fn unified(&self, stream: bool) -> Call {
        let mut body = chat_body(stream);
        body["model"] = json!(UNIFIED_MODEL);
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        Call::new(format!("{}/v1/chat/completions", self.base), self.bearer.clone(), &body)
    }

    pub fn anthropic_passthrough(&self, stream: bool) -> Call {
        Call::new(format!("{}/proxy/anthropic/v1/messages", self.base), self.bearer.clone(), &messages_body(stream))
    }

    pub fn is_keygate(&self) -> bool {
        matches!(self.kind, Kind::Keygate { .. })
    }

    /// keygate on `db`, pinned to `core`, with one user whose OpenAI key is stored and a
    /// proxy-scoped token for it.
    pub async fn keygate(
        name: &str,
        binary: &Path,
        db: TestDb,
        mock: &Mock,
        core: Option<usize>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::keygate_with(name, binary, db, mock, core, log_dir, &[]).await
    }

    /// [`Target::keygate`] with more environment (e.g. `KEYGATE_REDIS_URL`).
    pub async fn keygate_with(
        name: &str,
        binary: &Path,
        db: TestDb,
        mock: &Mock,
        core: Option<usize>,
        log_dir: &Path,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut env = vec![("KEYGATE_LOG".to_owned(), "warn".to_owned())];
        env.extend(extra_env.iter().cloned());
        Self::keygate_upstream(name, binary, db, &mock.url, core, log_dir, &env).await
    }

    /// keygate whose OpenAI and Anthropic base URL is `upstream`, with `extra_env` added
    /// (a variable named twice: the later value wins). `KEYGATE_LOG` is left to `extra_env`:
    /// without it keygate runs at its default log level.
    pub async fn keygate_upstream(
        name: &str,
        binary: &Path,
        db: TestDb,
        upstream: &str,
        core: Option<usize>,
        log_dir: &Path,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let data_dir = db.data_dir().join("data");
        let mut env = vec![
            ("KEYGATE_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ("KEYGATE_JWT_HS256_SECRET".into(), JWT_SECRET.into()),
            ("KEYGATE_PROVIDER_OPENAI_BASE_URL".into(), upstream.to_owned()),
            ("KEYGATE_PROVIDER_ANTHROPIC_BASE_URL".into(), upstream.to_owned()),
        ];
        if let keygate_store::DatabaseLocation::Postgres(_) = db.location {
            env.push(("KEYGATE_DATABASE_URL".into(), db.url()));
        }
        for (key, value) in extra_env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        let (proc, base, metrics) = start_keygate(name, binary, &env, core, log_dir).await?;
        let mut target = Self {
            name: name.into(),
            kind: Kind::Keygate { _db: db, binary: binary.to_path_buf(), env },
            proc,
            base,
            metrics: Some(metrics),
            bearer: String::new(),
        };
        let http = crate::load::client(Duration::from_secs(30));
        target.bearer = target.provision_user(&http, "bench-user").await?;
        Ok(target)
    }

    /// Restarts the process on the same database (for a cold first call).
    pub async fn restart(&mut self, core: Option<usize>, log_dir: &Path) -> anyhow::Result<()> {
        let Kind::Keygate { binary, env, .. } = &self.kind else { bail!("only keygate targets restart") };
        let (proc, base, metrics) =
            start_keygate(&format!("{}-restarted", self.name), binary, env, core, log_dir).await?;
        let old = std::mem::replace(&mut self.proc, proc);
        old.stop().await;
        self.base = base;
        self.metrics = Some(metrics);
        Ok(())
    }

    /// Provisions `user` through a host JWT, stores the mock's key for them, and answers
    /// a proxy-scoped keygate token.
    pub async fn provision_user(&self, http: &reqwest::Client, user: &str) -> anyhow::Result<String> {
        let jwt = host_jwt(user)?;
        for (provider, secret) in [("openai", PROVIDER_KEY), ("anthropic", ANTHROPIC_KEY)] {
            let key = http
                .post(format!("{}/api/v1/keys", self.base))
                .bearer_auth(&jwt)
                .json(&json!({"provider": provider, "secret": secret}))
                .send()
                .await?;
            if !key.status().is_success() {
                bail!("storing a key for {user}: {} {}", key.status(), key.text().await.unwrap_or_default());
            }
        }
        self.proxy_token(http, &jwt, user).await
    }

    /// Provisions `user` through a host JWT without any key of their own (their calls go
    /// to the operator's keys) and answers a proxy-scoped keygate token.
    pub async fn provision_keyless_user(&self, http: &reqwest::Client, user: &str) -> anyhow::Result<String> {
        self.proxy_token(http, &host_jwt(user)?, user).await
    }

    /// The environment the keygate process runs with (for its CLI on the same database).
    pub fn keygate_env(&self) -> Option<(&Path, &[(String, String)])> {
        match &self.kind {
            Kind::Keygate { binary, env, .. } => Some((binary, env)),
            Kind::LiteLlm => None,
        }
    }

    async fn proxy_token(&self, http: &reqwest::Client, jwt: &str, user: &str) -> anyhow::Result<String> {
        let token = http
            .post(format!("{}/api/v1/tokens", self.base))
            .bearer_auth(jwt)
            .json(&json!({"name": "bench", "scopes": ["proxy"]}))
            .send()
            .await?;
        if !token.status().is_success() {
            bail!("creating a token for {user}: {} {}", token.status(), token.text().await.unwrap_or_default());
        }
        let created: Value = token.json().await?;
        created["token"].as_str().map(str::to_owned).context("the token answer has no `token`")
    }

    /// `keygate_proxy_db_queries_total` from `/metrics`, on keygate's metrics listener.
    pub async fn proxy_db_queries(&self) -> anyhow::Result<u64> {
        let metrics = self.metrics.as_deref().context("only keygate targets have /metrics")?;
        let text = reqwest::get(format!("{metrics}/metrics")).await?.error_for_status()?.text().await?;
        text.lines()
            .find_map(|l| l.strip_prefix("keygate_proxy_db_queries_total ").and_then(|v| v.trim().parse::<f64>().ok()))
            .map(|v| v as u64)
            .context("/metrics has no keygate_proxy_db_queries_total")
    }

    /// LiteLLM's proxy (from the virtual environment at `venv`), one worker, callbacks
    /// off, the mock as its OpenAI upstream, a master key as the only credential.
    pub async fn litellm(venv: &Path, mock: &Mock, core: Option<usize>, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = log_dir.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      \
                 api_base: {}/v1\n      api_key: {PROVIDER_KEY}\n\
                 litellm_settings:\n  callbacks: []\n  success_callback: []\n  failure_callback: []\n  \
                 telemetry: false\n  set_verbose: false\n  json_logs: false\n\
                 general_settings:\n  master_key: {LITELLM_MASTER_KEY}\n  disable_spend_logs: true\n  \
                 disable_reset_budget: true\n",
                mock.url
            ),
        )?;
        let program = venv.join("bin/litellm");
        let env = [
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            ("LITELLM_TELEMETRY", "False"),
            ("LITELLM_LOG", "ERROR"),
            ("DISABLE_ADMIN_UI", "True"),
            ("NO_DOCS", "True"),
            ("PYTHONUNBUFFERED", "1"),
        ];
        let mut proc = Spawn {
            name: "litellm",
            program: &program,
            args: vec![
                "--config".into(),
                config.display().to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--num_workers".into(),
                "1".into(),
            ],
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            core,
            log_dir,
        }
        .start()?;
        let base = format!("http://127.0.0.1:{port}");
        proc.wait_ready(&format!("{base}/health/liveliness"), Duration::from_secs(180)).await?;
        Ok(Self {
            name: "litellm".into(),
            kind: Kind::LiteLlm,
            proc,
            base,
            metrics: None,
            bearer: LITELLM_MASTER_KEY.into(),
        })
    }
}

/// A host application's JWT for `user`.
fn host_jwt(user: &str) -> anyhow::Result<String> {
    let claims = json!({"sub": user, "exp": chrono::Utc::now().timestamp() + 3 * 3600});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?)
}

async fn start_keygate(
    name: &str,
    binary: &Path,
    env: &[(String, String)],
    core: Option<usize>,
    log_dir: &Path,
) -> anyhow::Result<(Proc, String, String)> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let mut env = env.to_vec();
    env.push(("KEYGATE_LISTEN".into(), format!("127.0.0.1:{port}")));
    // /metrics on a listener of its own, so the harness scrapes it without a credential.
    env.push(("KEYGATE_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}")));
    let mut proc = Spawn { name, program: binary, args: vec!["serve".into()], env, core, log_dir }.start()?;
    let base = format!("http://127.0.0.1:{port}");
    proc.wait_ready(&format!("{base}/readyz"), Duration::from_secs(60)).await?;
    Ok((proc, base, format!("http://127.0.0.1:{metrics_port}")))
}
