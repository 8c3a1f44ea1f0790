//! One function per command. Each loads what it needs, calls the service layer, and
//! reports; errors carry context saying what was being done.

use crate::cli::{AdminCommand, Cli, Command, ConfigCommand, MasterKeyCommand, TokenCommand};
use crate::config::{self, Config, Mode, Overrides};
use crate::masterkey::{self, IfAbsent, Origin};
use crate::output;
use anyhow::{anyhow, Context};
use keygate_server::{telemetry, AppState};
use keygate_service::auth::TokenRequest;
use keygate_service::doctor::{Check, Status};
use keygate_service::jwt::{JwksSource, JwtOptions, JwtVerifier};
use keygate_service::limits::{InProcessLimiter, Limiter, PostgresLimiter, RedisLimiter};
use keygate_service::rotation::{Observer, Step};
use keygate_service::{
    accounts, audit::Actor, boot, doctor, keys::KeyVault, rotation, Options, ServiceError, Services,
};
use keygate_store::{DatabaseLocation, Store};
use keygate_vault::{Kek, KeyEncryptionKeys, SecretText};
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        listen: match &cli.command {
            Command::Serve { listen } => listen.clone(),
            _ => None,
        },
    };
    match cli.command {
        Command::Keygen { label } => keygen(label),
        Command::Config { command: ConfigCommand::Example } => {
            output::line(config::EXAMPLE.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let config = Config::load(&overrides).context("loading configuration")?;
            telemetry::init(&config.log.value).map_err(|e| anyhow!("log (from {}): {e}", config.log.source))?;
            match command {
                Command::Serve { .. } => serve(&config).await,
                Command::Doctor => doctor(&config).await,
                Command::MasterKey { command: MasterKeyCommand::Rotate } => rotate(&config).await,
                Command::Admin { command: AdminCommand::Create { email } } => admin_create(&config, &email).await,
                Command::Token { command: TokenCommand::Create { user, name, scopes, expires_days } } => {
                    token_create(&config, &user, &name, scopes, expires_days).await
                }
                Command::Config { command: ConfigCommand::Show } => {
                    output::line(&config.describe());
                    Ok(ExitCode::SUCCESS)
                }
                Command::Keygen { .. } | Command::Config { .. } | Command::Openapi => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// Turns a service error into one that leads with its stable code.
fn coded(err: ServiceError) -> anyhow::Error {
    anyhow!("[{}] {err}", err.code())
}

fn keygen(label: Option<String>) -> anyhow::Result<ExitCode> {
    let kek = Kek::generate(label.clone().unwrap_or_else(|| "default".into()));
    output::note("A new master key. Store it in a secret manager, apart from database backups.");
    match label {
        Some(label) => output::secret_line(&format!("{label}:{}", kek.to_hex().as_str())),
        None => output::secret_line(kek.to_hex().as_str()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The keyring, generating the development key if the configuration allows.
fn keyring(config: &Config) -> anyhow::Result<(Arc<dyn KeyEncryptionKeys>, Origin)> {
    match masterkey::load(config, IfAbsent::Generate) {
        Ok(Some((ring, origin))) => Ok((Arc::new(ring), origin)),
        Ok(None) => Err(anyhow!("[master_key_missing] no master key")),
        Err(e) => Err(anyhow!("[{}] {e}", e.code())),
    }
}

async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, DatabaseLocation)> {
    let location = config.database()?;
    if let DatabaseLocation::Sqlite(path) = &location {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            masterkey::ensure_private_dir(dir).with_context(|| {
                format!("creating the data directory {} (data_dir from {})", dir.display(), config.data_dir.source)
            })?;
        }
    }
    let store = keygate_store::connect(&location)
        .await
        .with_context(|| format!("opening the database ({})", location.describe()))?;
    Ok((store, location))
}

/// Everything `serve` and the admin commands need, checked: config, keyring, database,
/// master key matches.
async fn start(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn KeyEncryptionKeys>)> {
    let (keks, origin) = keyring(config)?;
    let (store, location) = open_store(config).await?;
    let report = boot::check(&*store, &*keks).await.map_err(coded)?;
    tracing::info!(database = %location.describe(), master_key = %origin, primary = %keks.primary_id(), "vault ready");
    if report.first_start {
        tracing::info!("first start: sealed the master-key canary");
    }
    if !report.rotation_pending.is_empty() {
        tracing::warn!(
            old_keys = %report.rotation_pending.join(", "),
            "data keys are wrapped by a non-primary master key: run `keygate master-key rotate`"
        );
    }
    Ok((store, keks))
}

/// The services behind the HTTP API, from a checked store and keyring.
async fn services(
    config: &Config,
    store: Arc<dyn Store>,
    keks: Arc<dyn KeyEncryptionKeys>,
) -> anyhow::Result<Services> {
    let catalog = config.catalog()?;
    let jwks = match &config.jwt_jwks {
        None => None,
        Some(source) if source.value.starts_with("https://") || source.value.starts_with("http://") => {
            Some(JwksSource::Url(source.value.clone()))
        }
        Some(source) => {
            let text = std::fs::read_to_string(&source.value)
                .with_context(|| format!("jwt_jwks (from {}): reading {}", source.source, source.value))?;
            let set = serde_json::from_str(&text)
                .with_context(|| format!("jwt_jwks (from {}): {} is not a JWK set", source.source, source.value))?;
            Some(JwksSource::Static(set))
        }
    };
    let hs256 = config
        .jwt_hs256_secret
        .as_ref()
        .map(|s| SecretText::new(secrecy::ExposeSecret::expose_secret(&s.value).to_owned()));
    if hs256.as_ref().is_some_and(|s| s.expose().len() < 32) {
        anyhow::bail!("KEYGATE_JWT_HS256_SECRET (from environment) must be at least 32 characters");
    }
    let jwt_options = JwtOptions {
        max_lifetime: config.jwt_max_lifetime.value,
        issuer: config.jwt_issuer.as_ref().map(|s| s.value.clone()),
        audience: config.jwt_audience.as_ref().map(|s| s.value.clone()),
    };
    let jwt = (hs256.is_some() || jwks.is_some()).then(|| JwtVerifier::new(hs256.as_ref(), jwks, jwt_options));
    let vault = Arc::new(KeyVault::new(store.clone(), keks));
    let limiter = limiter(config)?;
    tracing::info!(
        limits = limiter.backend(),
        fail_open = config.limits_fail_open.value,
        timeout_ms = config.limits_timeout.value.as_millis() as u64,
        "limits backend: {}",
        match limiter.backend() {
            "redis" => "Redis (exact across replicas)",
            "postgres" => "PostgreSQL (exact across replicas)",
            _ => "in this process (one node)",
        }
    );
    let options = Options {
        probe_timeout: config.validation_timeout.value,
        limiter: Some(limiter),
        limits_fail_open: config.limits_fail_open.value,
        oidc: config.oidc_providers(),
        ..Options::default()
    };
    for provider in &options.oidc {
        tracing::info!(
            provider = %provider.id,
            issuer = %provider.issuer,
            redirect_uri = %provider.redirect_uri,
            "single sign-on: register this redirect URI with the issuer"
        );
    }
    Services::new(store, vault, catalog, jwt, options).await.map_err(coded).context("starting the services")
}

/// Where the limit counters live: Redis when `redis_url` is set, else PostgreSQL when the
/// database is PostgreSQL, else this process (SQLite, one node).
fn limiter(config: &Config) -> anyhow::Result<Arc<dyn Limiter>> {
    let timeout = config.limits_timeout.value;
    if let Some(url) = &config.redis_url {
        let limiter = RedisLimiter::new(secrecy::ExposeSecret::expose_secret(&url.value), "keygate:", timeout)
            .map_err(|e| anyhow!("redis_url (from {}): {e}", url.source))?;
        return Ok(Arc::new(limiter));
    }
    Ok(match config.database()? {
        DatabaseLocation::Postgres(url) => {
            Arc::new(PostgresLimiter::new(&url, timeout).map_err(|e| anyhow!("the PostgreSQL limit counters: {e}"))?)
        }
        DatabaseLocation::Sqlite(_) => Arc::new(InProcessLimiter::default()),
    })
}

async fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    if cfg!(feature = "bench-without-echo-scrub") {
        tracing::warn!("BENCHMARK BUILD: relayed answers are not scrubbed of echoed keys; never deploy this build");
    }
    let (store, keks) = start(config).await?;
    let services = Arc::new(services(config, store.clone(), keks).await?);
    let budget = usize::try_from(config.body_budget_mb.value).unwrap_or(usize::MAX).saturating_mul(1 << 20);
    let mut state = AppState::new(services.clone()).with_body_budget(budget).behind_tls(config.behind_tls.value);
    if config.metrics_listen.is_some() {
        state = state.with_metrics_apart();
    }
    let app = keygate_server::App::new(state.clone());
    // Changes made through other replicas reach this one's caches within a poll.
    let watch = services.watch_changes(keygate_service::cache::CHANGE_POLL);
    let addr = config.listen.value;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (listen from {})", config.listen.source))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(
        "async runtime: {workers} worker thread{} (KEYGATE_WORKER_THREADS, else one per CPU keygate may use)",
        if workers == 1 { "" } else { "s" }
    );
    tracing::info!("keygate listening on http://{bound}");
    // A fresh deployment is claimed in the setup wizard with this code, so nobody else on
    // the network can claim it first.
    if let Some(code) = services.issue_setup_code().await.map_err(coded).context("issuing the setup code")? {
        tracing::warn!(
            "no administrator yet: open http://{bound}/setup and enter the setup code: {} (it works once; a restart issues a new one)",
            code.0.expose()
        );
    }
    let fd_limit = keygate_server::raise_fd_limit();
    let limits = keygate_server::ConnectionLimits {
        header_timeout: config.header_timeout.value,
        body_timeout: config.body_timeout.value,
        max_connections: keygate_server::effective_max_connections(
            usize::try_from(config.max_connections.value).unwrap_or(usize::MAX),
            fd_limit,
        ),
    };
    if limits.max_connections < usize::try_from(config.max_connections.value).unwrap_or(usize::MAX) {
        tracing::warn!(
            open_file_limit = fd_limit,
            max_connections = limits.max_connections,
            "the open-file limit allows fewer connections than max_connections; raise `ulimit -n` to serve more"
        );
    }
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = match &config.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, state, limits, stopped).await?),
        None => None,
    };
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    keygate_server::serve(listener, app, limits, shutdown).await.context("serving HTTP")?;
    if let Some(metrics) = metrics {
        metrics.await.context("the metrics listener stopped")?.context("serving /metrics")?;
    }
    watch.abort();
    services.flush_usage().await;
    tracing::info!("shutting down: in-flight requests finished, usage written");
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `/metrics` alone on `metrics_listen`, unauthenticated (the address is the access
/// control), until `stopped` turns true.
async fn serve_metrics(
    addr: &config::Sourced<std::net::SocketAddr>,
    state: AppState,
    limits: keygate_server::ConnectionLimits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr.value)
        .await
        .with_context(|| format!("listening on {} (metrics_listen from {})", addr.value, addr.source))?;
    let bound = listener.local_addr().context("reading the metrics listener's address")?;
    tracing::info!("serving /metrics on http://{bound}/metrics");
    // A scraper or two: a small connection cap is plenty.
    let limits = keygate_server::ConnectionLimits { max_connections: limits.max_connections.min(64), ..limits };
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    Ok(tokio::spawn(keygate_server::serve(listener, keygate_server::metrics_router(state), limits, shutdown)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

async fn doctor(config: &Config) -> anyhow::Result<ExitCode> {
    let mut checks =
        vec![Check::ok("config", format!("loaded (env = {}, from {})", config.env.value, config.env.source))];
    let keks = match masterkey::load(config, IfAbsent::Report) {
        Ok(Some((ring, origin))) => {
            let keks: Arc<dyn KeyEncryptionKeys> = Arc::new(ring);
            checks.push(Check::ok(
                "master key",
                format!("{} key(s) from {origin}; primary {}", keks.available().len(), keks.primary_id()),
            ));
            Some(keks)
        }
        Ok(None) => {
            checks.push(Check::ok(
                "master key",
                format!(
                    "none yet: the first `keygate serve` generates {} (development mode only)",
                    config.data_dir.value.join(masterkey::DEV_KEY_FILE).display()
                ),
            ));
            None
        }
        Err(e) => {
            checks.push(Check::fail("master key", format!("[{}] {e}", e.code())));
            None
        }
    };
    match &config.redis_url {
        Some(url) => match limiter(config) {
            Err(e) => checks.push(Check::fail("redis", format!("{e:#}"))),
            Ok(limiter) => match limiter.ping().await {
                Ok(()) => checks.push(Check::ok(
                    "redis",
                    format!(
                        "{} answers: limits are counted there",
                        keygate_store::redact_url(secrecy::ExposeSecret::expose_secret(&url.value))
                    ),
                )),
                Err(e) => checks.push(Check::fail(
                    "redis",
                    format!("[limits_unavailable] {e}: calls on shared keys would answer 503 (from {})", url.source),
                )),
            },
        },
        None if config.env.value == Mode::Production => checks
            .push(Check::ok("redis", "not configured: limits are counted in PostgreSQL (or in the process on SQLite)")),
        None => {}
    }

    match config.database() {
        Err(e) => checks.push(Check::fail("database", format!("{e:#}"))),
        Ok(DatabaseLocation::Sqlite(path)) if !path.exists() => {
            checks.push(Check::ok(
                "database",
                format!("no database yet at {}: created at the first start", path.display()),
            ));
        }
        Ok(location) => match keygate_store::connect_unmigrated(&location).await {
            Err(e) => checks.push(Check::fail("database", format!("{} : {e}", location.describe()))),
            Ok(store) => {
                let keks = match keks {
                    Some(k) => k,
                    None => {
                        // A database but no key: nothing stored can be opened.
                        let has_canary = store.meta_get(boot::CANARY_META_KEY).await.ok().flatten().is_some();
                        if has_canary {
                            checks.push(Check::fail(
                                "master key",
                                "the database holds sealed data but no master key is available: set KEYGATE_MASTER_KEY",
                            ));
                        }
                        report(&checks);
                        return Ok(exit_for(&checks));
                    }
                };
                checks.extend(doctor::run(store.clone(), keks).await);
                store.close().await;
            }
        },
    }
    report(&checks);
    Ok(exit_for(&checks))
}

fn report(checks: &[Check]) {
    for check in checks {
        let status = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        output::line(&format!("{status}  {:<12} {}", check.name, check.detail));
    }
    let failures = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failures == 0 {
        output::line("keygate doctor: no problems found");
    } else {
        output::line(&format!("keygate doctor: {failures} problem(s) found"));
    }
}

fn exit_for(checks: &[Check]) -> ExitCode {
    if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A progress bar on standard error.
struct Progress(indicatif::ProgressBar);

impl Observer for Progress {
    fn started(&mut self, total: u64) {
        self.0.set_length(total);
    }
    fn step(&mut self, step: Step) -> Result<(), String> {
        if let Step::Committed { index, .. } = step {
            self.0.set_position(index);
        }
        Ok(())
    }
}

async fn rotate(config: &Config) -> anyhow::Result<ExitCode> {
    let (store, keks) = start(config).await?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("rewrapping data keys {bar:40} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = Progress(bar);
    let result = rotation::rotate(&*store, &*keks, &mut progress).await;
    progress.0.finish_and_clear();
    let report = result.map_err(coded).context("rotating the master key (safe to run again)")?;
    output::line(&format!(
        "rotated {} data key(s) to master key {} ({} already done by another run); canary {}",
        report.rewrapped,
        keks.primary_id(),
        report.by_others,
        if report.canary_resealed { "resealed" } else { "already current" }
    ));
    let in_use = store.kek_ids_in_use().await.context("listing master keys in use")?;
    for (id, label) in keks.available() {
        if !in_use.contains(&id.to_string()) && id != keks.primary_id() {
            output::line(&format!("master key `{label}` ({id}) wraps nothing now: it can be removed from the keyring"));
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn token_create(
    config: &Config,
    email: &str,
    name: &str,
    scopes: Option<Vec<String>>,
    expires_days: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let (store, keks) = start(config).await?;
    let services = services(config, store.clone(), keks).await?;
    let email = accounts::normalize_email(email).map_err(coded)?;
    let user =
        store.user_by_email(&email).await.context("looking the user up")?.ok_or_else(|| {
            anyhow!("[not_found] no user has the email {email}: create one with `keygate admin create`")
        })?;
    let scopes = scopes
        .map(|names| {
            names
                .iter()
                .map(|n| n.parse::<keygate_core::Scope>().map_err(|e| anyhow!("[invalid_request] --scopes: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    let request = TokenRequest {
        name: name.to_owned(),
        scopes,
        expires_at: expires_days.map(|d| keygate_service::now() + chrono::Duration::days(i64::from(d))),
        workspace_id: None,
    };
    let issued = services
        .create_token_for_user(&user, request, &Actor::cli())
        .await
        .map_err(coded)
        .context("creating the token")?;
    output::note(&format!(
        "Created token `{}` for {email} (scopes: {}). It is shown this once: store it now.",
        issued.token.name,
        issued.token.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    ));
    output::secret_line(issued.secret.expose());
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn admin_create(config: &Config, email: &str) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password).context("reading the password from standard input")?;
    let password = SecretText::new(password.trim_end_matches(['\r', '\n']).to_owned());
    let (store, _keks) = start(config).await?;
    let user = accounts::create_admin(&*store, email, &password, &Actor::cli())
        .await
        .map_err(coded)
        .context("creating the admin")?;
    output::line(&format!("created super-admin {} ({})", user.email.as_deref().unwrap_or(email), user.id));
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
