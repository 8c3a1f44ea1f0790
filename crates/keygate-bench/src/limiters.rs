//! What a limit check costs: keygate with each limits backend (in-process on SQLite,
//! PostgreSQL, Redis), on platform-key calls. Each lane starts its own keygate, adds an
//! operator key that is not shared (so every call of a keyless user goes out on the
//! platform's key and is admitted by the tier limiter), raises every tier's limits so the
//! limiter admits everything (we measure its cost, not refusals), and spreads the calls
//! over a pool of such users. The same process also serves a user's own key (no limit
//! check) in lockstep: platform minus own key is what the check adds, read off the same
//! moments of the same process.

use crate::load::{self, Call, Throughput};
use crate::run::{per_request, settle, INSTANT, PACED};
use crate::stats::Latency;
use crate::targets::{Mock, Target, PROVIDER_KEY};
use crate::Settings;
use anyhow::{bail, Context};
use futures_util::StreamExt;
use keygate_store::testdb::TestDb;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Tier limits high enough that no lane is ever refused.
const UNLIMITED: u32 = 1_000_000_000;
const ADMIN_EMAIL: &str = "bench-root@example.com";
/// A fixture for the benchmark's throwaway database, not a secret.
const ADMIN_PASSWORD: &str = "bench-admin-password-0123456789";

/// One limits backend, measured.
#[derive(Debug, Serialize)]
pub struct LimiterLane {
    /// What `/readyz` names: `memory`, `postgres` or `redis`.
    pub backend: String,
    /// The store keygate ran on (`sqlite` or `postgres`).
    pub store: &'static str,
    /// Keyless users the platform calls are spread over.
    pub users: usize,
    /// Each lane's rate (direct, own key, platform: keygate serves twice this).
    pub rate: u32,
    pub direct: Latency,
    pub own_key: Latency,
    pub platform: Latency,
    /// keygate's CPU per request over the fixed-rate point (both lanes together).
    pub cpu_us_per_request: f64,
    pub own_key_throughput: Throughput,
    pub platform_throughput: Throughput,
    pub own_key_cpu_us: f64,
    pub platform_cpu_us: f64,
    /// What `/api/v1/quota` says one platform user has left today: proof the limiter counted.
    pub platform_remaining_today: u64,
}

/// Which lanes run, given what is reachable; a backend that is not is skipped with a line.
pub async fn run(
    settings: &Settings,
    mock: &Mock,
    keygate: &Path,
    postgres: bool,
    redis_url: &str,
) -> anyhow::Result<(Vec<LimiterLane>, Vec<String>)> {
    let mut lanes = Vec::new();
    let mut skipped = Vec::new();
    lanes.push(lane(settings, mock, keygate, "memory", TestDb::sqlite(), &[]).await?);
    let pg = if postgres { TestDb::postgres().await } else { None };
    match pg {
        Some(db) => lanes.push(lane(settings, mock, keygate, "postgres", db, &[]).await?),
        None => skipped.push(if postgres {
            "PostgreSQL is not reachable: the PostgreSQL limiter lane skipped".into()
        } else {
            "--no-postgres: the PostgreSQL limiter lane skipped".into()
        }),
    }
    if redis_reachable(redis_url).await {
        // Redis beside PostgreSQL, as deployed; on SQLite when PostgreSQL is not there.
        let db = match if postgres { TestDb::postgres().await } else { None } {
            Some(db) => db,
            None => TestDb::sqlite(),
        };
        let env = [("KEYGATE_REDIS_URL".to_owned(), redis_url.to_owned())];
        lanes.push(lane(settings, mock, keygate, "redis", db, &env).await?);
    } else {
        skipped.push(format!("Redis is not reachable at {}: the Redis limiter lane skipped", redact(redis_url)));
    }
    for line in &skipped {
        crate::progress(line);
    }
    Ok((lanes, skipped))
}

async fn lane(
    settings: &Settings,
    mock: &Mock,
    keygate: &Path,
    backend: &str,
    db: TestDb,
    env: &[(String, String)],
) -> anyhow::Result<LimiterLane> {
    let store = match db.location {
        keygate_store::DatabaseLocation::Postgres(_) => "postgres",
        _ => "sqlite",
    };
    let name = format!("keygate-limiter-{backend}");
    crate::progress(&format!("measuring {name} (store: {store})"));
    let target = Target::keygate_with(&name, keygate, db, mock, settings.proxy_core, &settings.logs, env).await?;
    let result = measure(settings, mock, &target, backend, store).await;
    target.proc.stop().await;
    result.with_context(|| format!("{name} (see {})", settings.logs.display()))
}

async fn measure(
    settings: &Settings,
    mock: &Mock,
    target: &Target,
    backend: &str,
    store: &'static str,
) -> anyhow::Result<LimiterLane> {
    let http = load::client(settings.timeout);
    let readyz: Value = http.get(format!("{}/readyz", target.base)).send().await?.json().await?;
    let named = readyz["limits"].as_str().unwrap_or_default().to_owned();
    if named != backend {
        bail!("/readyz names the limits backend `{named}`, expected `{backend}`: {readyz}");
    }
    let admin = admin_token(target).await?;
    unlimit_tiers(&http, target, &admin).await?;
    let key = http
        .post(format!("{}/api/v1/keys", target.base))
        .bearer_auth(&admin)
        .json(&json!({"provider": "openai", "scope": "operator", "operator_shared": false, "secret": PROVIDER_KEY}))
        .send()
        .await?;
    if !key.status().is_success() {
        bail!("adding the operator key: {} {}", key.status(), key.text().await.unwrap_or_default());
    }

    let users = if settings.quick { 50 } else { 1000 };
    let names: Vec<String> = (0..users).map(|i| format!("bench-platform-{i}")).collect();
    let tokens: Vec<anyhow::Result<String>> = futures_util::stream::iter(names.iter())
        .map(|n| target.provision_keyless_user(&http, n))
        .buffered(8)
        .collect()
        .await;
    let tokens = tokens.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let platform: Vec<Call> = tokens.iter().map(|t| target.call_as(t, false)).collect();
    // Each user's first call of the day seeds its counters (one query): not what is measured.
    mock.pace(INSTANT).await?;
    let warmed: Vec<Result<(), String>> =
        futures_util::stream::iter(platform.iter()).map(|c| c.send(&http)).buffered(8).collect().await;
    if let Some(Err(e)) = warmed.into_iter().find(Result::is_err) {
        bail!("a platform-key call failed: {e}");
    }
    let quota: Value =
        http.get(format!("{}/api/v1/quota", target.base)).bearer_auth(&tokens[0]).send().await?.json().await?;
    let remaining = quota["platform"]["remaining_today"].as_u64().unwrap_or(u64::MAX);
    if remaining >= u64::from(UNLIMITED) {
        bail!("the platform-key call was not counted by the limiter: {quota}");
    }

    // Fixed rate, the mock answering after 50 ms: direct, own key and platform in lockstep.
    let rate = if settings.quick { 100 } else { 500 };
    settle(target).await;
    mock.pace(PACED).await?;
    let (direct, own) = (mock.direct(false), target.call(false));
    let lanes = [std::slice::from_ref(&direct), std::slice::from_ref(&own), platform.as_slice()];
    let cpu = target.proc.cpu();
    let mut measured = load::open_loop_lanes(&http, &lanes, rate, settings.point).await;
    let cpu = target.proc.cpu() - cpu;
    let (p, o, d) =
        (measured.pop().unwrap_or_default(), measured.pop().unwrap_or_default(), measured.pop().unwrap_or_default());
    let cpu_us_per_request = per_request(cpu, o.ok + p.ok);
    crate::progress(&format!(
        "limiter {backend} @ {rate}/s: p50 direct {:.2} own key {:.2} platform {:.2} ms; p99 {:.2} / {:.2} / {:.2} ms",
        d.p50_ms, o.p50_ms, p.p50_ms, d.p99_ms, o.p99_ms, p.p99_ms
    ));

    // Maximum throughput, the mock answering at once: own key, then platform.
    mock.pace(INSTANT).await?;
    settle(target).await;
    let cpu = target.proc.cpu();
    let own_key_throughput = load::closed_loop(&http, &own, settings.concurrency, settings.throughput).await;
    let own_key_cpu_us = per_request(target.proc.cpu() - cpu, own_key_throughput.latency.ok);
    settle(target).await;
    let cpu = target.proc.cpu();
    let platform_throughput = load::closed_loop_over(&http, &platform, settings.concurrency, settings.throughput).await;
    let platform_cpu_us = per_request(target.proc.cpu() - cpu, platform_throughput.latency.ok);
    crate::progress(&format!(
        "limiter {backend} throughput: own key {:.0}/s, platform {:.0}/s",
        own_key_throughput.requests_per_second, platform_throughput.requests_per_second
    ));
    Ok(LimiterLane {
        backend: named,
        store,
        users,
        rate,
        direct: d,
        own_key: o,
        platform: p,
        cpu_us_per_request,
        own_key_throughput,
        platform_throughput,
        own_key_cpu_us,
        platform_cpu_us,
        platform_remaining_today: remaining,
    })
}

/// A super-admin created with keygate's CLI on the target's database, and a token for it.
async fn admin_token(target: &Target) -> anyhow::Result<String> {
    let (binary, env) = target.keygate_env().context("not a keygate target")?;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(binary);
        for (name, _) in std::env::vars() {
            if name.starts_with("KEYGATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let mut create = cli(&["admin", "create", "--email", ADMIN_EMAIL]).spawn()?;
    if let Some(mut stdin) = create.stdin.take() {
        stdin.write_all(format!("{ADMIN_PASSWORD}\n").as_bytes()).await?;
    }
    let out = create.wait_with_output().await?;
    if !out.status.success() {
        bail!("keygate admin create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = cli(&["token", "create", "--user", ADMIN_EMAIL, "--name", "bench-admin"]).output().await?;
    if !out.status.success() {
        bail!("keygate token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()).context("no token printed")
}

/// Every tier's requests per minute and per day raised out of reach.
async fn unlimit_tiers(http: &reqwest::Client, target: &Target, admin: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/admin/settings", target.base);
    let mut policy: Value = http.get(&url).bearer_auth(admin).send().await?.error_for_status()?.json().await?;
    let tiers = policy["tiers"].as_object_mut().context("the policy has no tiers")?;
    for limits in tiers.values_mut() {
        limits["requests_per_minute"] = json!(UNLIMITED);
        limits["requests_per_day"] = json!(UNLIMITED);
    }
    let put = http.put(&url).bearer_auth(admin).json(&policy).send().await?;
    if !put.status().is_success() {
        bail!("raising the tier limits: {} {}", put.status(), put.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Whether something listens at the Redis URL's host and port (keygate's `/readyz` then
/// proves it is a Redis that answers).
async fn redis_reachable(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("redis://") else { return false };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:6379") };
    matches!(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host_port)).await, Ok(Ok(_)))
}

/// The URL without a password, for a log line.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Why a lane's figures cannot be trusted: any failed call through keygate or to the mock.
pub fn broken(lane: &LimiterLane) -> Vec<String> {
    let mut problems = Vec::new();
    let checks = [
        ("direct", &lane.direct),
        ("own key", &lane.own_key),
        ("platform key", &lane.platform),
        ("own-key throughput", &lane.own_key_throughput.latency),
        ("platform-key throughput", &lane.platform_throughput.latency),
    ];
    for (what, l) in checks {
        if l.errors > 0 {
            problems.push(format!(
                "limiter {} {what}: {} failed calls, first: {:?}",
                lane.backend, l.errors, l.first_error
            ));
        }
        if l.ok == 0 && l.overloaded == 0 {
            problems.push(format!("limiter {} {what}: no successful call", lane.backend));
        }
    }
    problems
}
