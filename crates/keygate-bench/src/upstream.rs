//! Against the limit (`--only limit`): keygate next to a fast third-party upstream and a
//! mature proxy, not our own mock. nginx answers every request with a fixed OpenAI-shaped
//! chat completion: called directly it is the limit ("direct"); nginx as a reverse proxy
//! injecting the provider's `Authorization` header is what a mature proxy achieves; keygate
//! (SQLite at its default log level and at `warn`, PostgreSQL at its default) proxies to
//! the same nginx. The upstream nginx and the load generator (`wrk`) share the harness's
//! core; the proxy under test has the other core to itself.
//!
//! Each row is measured in the same run, one after the other: `wrk` with 32 connections
//! (requests/s, and the proxy's CPU time per call), `wrk` with one connection (latency),
//! and 1,000 requests/s from the harness's open loop in lockstep with direct calls (added
//! latency). The figures are compared to the targets (issue 16) and marked met or missed,
//! never failed on; a failed call (a non-2xx answer, a socket error) is a broken benchmark.

use crate::load::{self, Call};
use crate::procs::{free_port, Proc, Spawn};
use crate::run::{per_request, settle_proc};
use crate::stats::Latency;
use crate::targets::{chat_body, Target, ANTHROPIC_KEY, PROVIDER_KEY};
use crate::Settings;
use anyhow::{bail, Context};
use keygate_store::testdb::TestDb;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Connections of the throughput runs.
pub const CONNECTIONS: usize = 32;
/// Requests per second of the fixed-rate point (each lane).
pub const RATE: u32 = 1000;
/// Requests in flight per lane at the fixed rate beyond which the harness gives up on a
/// request instead of sending it: half a second's worth, far past saturation, and far
/// below nginx's and keygate's connection limits (whose refusals would be failed calls).
const RATE_IN_FLIGHT: usize = 500;
/// What a client sends nginx-as-proxy (which replaces it with the provider key): as long
/// as a keygate token, so both proxies read the same request.
const NGINX_CLIENT_BEARER: &str = "kg_nginxproxyclient_0000000000000000000000000000000000000000";
/// The environment variable the wrk script reads the bearer credential from.
const BEARER_VAR: &str = "KEYGATE_BENCH_BEARER";
/// The id in [`COMPLETION`]: an answer that carries it came from the nginx upstream.
const COMPLETION_ID: &str = "chatcmpl-bench-nginx";
/// What nginx answers to every request: a chat completion with usage, as keygate's usage
/// accounting reads it. No `'`, `\` or `$` (it is quoted in nginx's configuration).
const COMPLETION: &str = r#"{"id":"chatcmpl-bench-nginx","object":"chat.completion","created":1764547200,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":9,"total_tokens":23}}"#;

/// The targets keygate's rows are marked against (issue 16).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Goals {
    /// Requests/s at 32 connections, at least this share of direct...
    pub of_direct: f64,
    /// ... and of nginx-as-proxy.
    pub of_nginx_proxy: f64,
    /// Added latency, at one connection and at 1,000 requests/s, at most.
    pub added_p50_ms: f64,
    pub added_p99_ms: f64,
    /// The proxy's CPU time per proxied call, at most.
    pub cpu_us_per_call: f64,
}

pub const GOALS: Goals =
    Goals { of_direct: 0.6, of_nginx_proxy: 0.75, added_p50_ms: 0.2, added_p99_ms: 1.0, cpu_us_per_call: 30.0 };

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// Straight to the upstream nginx: the limit.
    Direct,
    /// nginx as a reverse proxy, injecting the provider key.
    NginxProxy,
    Keygate,
}

/// One `wrk` run, as wrk reported it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Wrk {
    pub connections: usize,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// "Non-2xx or 3xx responses" (wrk counts statuses from 400 up).
    pub non_2xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    /// Requests wrk gave up on (its `--timeout`): the target was too slow, not wrong.
    pub timeouts: u64,
    /// The command line (the bearer credential is in the environment, not shown).
    pub command: String,
}

impl Wrk {
    /// Failed calls: wrong answers and socket errors other than timeouts.
    pub fn errors(&self) -> u64 {
        self.non_2xx + self.connect_errors + self.read_errors + self.write_errors
    }
}

/// One path to the upstream, measured.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub label: String,
    pub kind: RowKind,
    /// `KEYGATE_LOG` of a keygate row (`None`: keygate's default level).
    pub log: Option<String>,
    /// wrk, 32 connections.
    pub throughput: Wrk,
    /// The proxy's CPU time (user + system) over the throughput run per request served;
    /// for the direct row, the upstream nginx's own.
    pub cpu_us_per_call: f64,
    /// wrk, one connection.
    pub one_connection: Wrk,
    /// The harness's open loop at `RATE`/s: the direct lane beside this row's (in
    /// lockstep, over the same window); for the direct row both are the direct lane.
    pub fixed_rate_direct: Latency,
    pub fixed_rate: Latency,
}

impl Row {
    /// Added latency at one connection (p50, p99) over the direct row's.
    pub fn one_connection_added(&self, direct: &Row) -> (f64, f64) {
        (
            self.one_connection.p50_ms - direct.one_connection.p50_ms,
            self.one_connection.p99_ms - direct.one_connection.p99_ms,
        )
    }

    /// Added latency at the fixed rate (p50, p99) over the direct lane beside it.
    pub fn fixed_rate_added(&self) -> (f64, f64) {
        (self.fixed_rate.p50_ms - self.fixed_rate_direct.p50_ms, self.fixed_rate.p99_ms - self.fixed_rate_direct.p99_ms)
    }
}

/// The phase's results.
#[derive(Debug, Serialize)]
pub struct Limit {
    /// The harness's command line that produced them.
    pub command: String,
    pub nginx: String,
    pub wrk: String,
    /// The CPU of the upstream nginx and wrk (the harness's); the proxy's is `proxy_core`.
    pub load_core: Option<usize>,
    pub proxy_core: Option<usize>,
    pub connections: usize,
    /// Seconds per wrk run and per fixed-rate point.
    pub seconds: u64,
    pub rate: u32,
    pub goals: Goals,
    pub rows: Vec<Row>,
    /// Rows or the whole phase not run, and why.
    pub skipped: Vec<String>,
    /// Whether a missing tool breaks the run (in CI) rather than skipping the phase.
    pub required: bool,
}

impl Limit {
    pub fn row(&self, kind: RowKind) -> Option<&Row> {
        self.rows.iter().find(|r| r.kind == kind)
    }

    /// `row`'s requests/s over the row of `kind`'s.
    pub fn ratio(&self, row: &Row, kind: RowKind) -> Option<f64> {
        let base = self.row(kind)?.throughput.requests_per_second;
        (base > 0.0).then(|| row.throughput.requests_per_second / base)
    }
}

/// Runs the phase. `nginx` and `wrk` default to what `PATH` (and the sbin directories)
/// hold; without them the phase is skipped with a line (a broken run in CI).
pub async fn run(
    settings: &Settings,
    out: &Path,
    keygate: &Path,
    tools: (Option<&Path>, Option<&Path>),
    postgres: bool,
) -> anyhow::Result<Limit> {
    let seconds = if settings.quick { 1 } else { 10 };
    let load_core = settings.proxy_core.map(|c| usize::from(c == 0));
    let mut limit = Limit {
        command: command_line(),
        nginx: String::new(),
        wrk: String::new(),
        load_core,
        proxy_core: settings.proxy_core,
        connections: CONNECTIONS,
        seconds,
        rate: RATE,
        goals: GOALS,
        rows: Vec::new(),
        skipped: Vec::new(),
        required: std::env::var("CI").is_ok_and(|v| v == "true"),
    };
    let nginx = tools.0.map(Path::to_path_buf).or_else(|| find("nginx"));
    let wrk = tools.1.map(Path::to_path_buf).or_else(|| find("wrk"));
    let (Some(nginx), Some(wrk)) = (nginx, wrk) else {
        let line = "nginx or wrk is not installed (bench/run.sh installs both from Debian's packages): \
                    the phase against a fast upstream (limit) skipped";
        crate::progress(line);
        limit.skipped.push(line.into());
        return Ok(limit);
    };
    limit.nginx = version(&nginx).await;
    limit.wrk = version(&wrk).await;
    let dir = out.join("limit");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let script = dir.join("chat.lua");
    std::fs::write(&script, lua(&serde_json::to_string(&chat_body(false))?))?;
    let bench = Bench { settings, nginx, wrk, dir, script, load_core, seconds, http: load::client(settings.timeout) };

    crate::progress(&format!("against the limit: {} upstream on CPU {}", limit.nginx, core_name(load_core)));
    let upstream_conf = upstream_conf();
    let (upstream, upstream_url) =
        bench.nginx("nginx-upstream", load_core, &upstream_conf).await.context("starting nginx as the upstream")?;
    let direct = Call::new(format!("{upstream_url}/v1/chat/completions"), PROVIDER_KEY.into(), &chat_body(false));
    let result = rows(&bench, &mut limit, &upstream, &direct, keygate, postgres).await;
    upstream.stop().await;
    result?;
    for line in &limit.skipped {
        crate::progress(line);
    }
    for row in limit.rows.iter().filter(|r| r.kind == RowKind::Keygate) {
        let (d, p) = (limit.ratio(row, RowKind::Direct), limit.ratio(row, RowKind::NginxProxy));
        crate::progress(&format!(
            "limit: {} / nginx-proxy = {} (target ≥ {}: {}), / direct = {} (target ≥ {}: {})",
            row.name,
            p.map_or("n/a".into(), |v| format!("{v:.2}")),
            GOALS.of_nginx_proxy,
            verdict(p.is_some_and(|v| v >= GOALS.of_nginx_proxy)),
            d.map_or("n/a".into(), |v| format!("{v:.2}")),
            GOALS.of_direct,
            verdict(d.is_some_and(|v| v >= GOALS.of_direct)),
        ));
    }
    Ok(limit)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// What every row needs: the load generator and its settings.
struct Bench<'a> {
    settings: &'a Settings,
    nginx: PathBuf,
    wrk: PathBuf,
    /// Where nginx's configurations and the wrk script go.
    dir: PathBuf,
    script: PathBuf,
    load_core: Option<usize>,
    seconds: u64,
    http: reqwest::Client,
}

/// Direct, nginx-as-proxy, then each keygate, one after the other.
async fn rows(
    bench: &Bench<'_>,
    limit: &mut Limit,
    upstream: &Proc,
    direct: &Call,
    keygate: &Path,
    postgres: bool,
) -> anyhow::Result<()> {
    let settings = bench.settings;
    let upstream_url = direct.url.trim_end_matches("/v1/chat/completions").to_owned();
    limit.rows.push(
        bench.row(("direct", "direct to nginx (the limit)", RowKind::Direct, None), upstream, direct, direct).await?,
    );

    let proxy_conf = format!(
        "    upstream provider {{\n        server {};\n        keepalive 64;\n        keepalive_requests 1000000;\n    }}\n    \
         server {{\n        listen 127.0.0.1:{{port}};\n        location / {{\n            proxy_pass http://provider;\n            \
         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            \
         proxy_set_header Authorization \"Bearer {PROVIDER_KEY}\";\n        }}\n    }}\n",
        upstream_url.trim_start_matches("http://")
    );
    let (proxy, proxy_url) = bench
        .nginx("nginx-proxy", settings.proxy_core, &proxy_conf)
        .await
        .context("starting nginx as a reverse proxy")?;
    let through = Call::new(format!("{proxy_url}/v1/chat/completions"), NGINX_CLIENT_BEARER.into(), &chat_body(false));
    let row = bench
        .row(
            ("nginx-proxy", "nginx as a reverse proxy (injects Authorization)", RowKind::NginxProxy, None),
            &proxy,
            direct,
            &through,
        )
        .await;
    proxy.stop().await;
    limit.rows.push(row?);

    let warn = [("KEYGATE_LOG".to_owned(), "warn".to_owned())];
    let default: &[(String, String)] = &[];
    let mut keygates = vec![
        ("keygate-sqlite", "keygate, SQLite (default log level)", TestDb::sqlite(), default),
        ("keygate-sqlite-warn", "keygate, SQLite (KEYGATE_LOG=warn)", TestDb::sqlite(), &warn[..]),
    ];
    if postgres {
        match TestDb::postgres().await {
            Some(db) => keygates.push(("keygate-postgres", "keygate, PostgreSQL (default log level)", db, default)),
            None => {
                limit.skipped.push("PostgreSQL is not reachable: keygate-postgres against the limit skipped".into())
            }
        }
    } else {
        limit.skipped.push("--no-postgres: keygate-postgres against the limit skipped".into());
    }
    for (name, label, db, env) in keygates {
        let target = Target::keygate_upstream(
            &format!("limit-{name}"),
            keygate,
            db,
            &upstream_url,
            settings.proxy_core,
            &settings.logs,
            env,
        )
        .await
        .with_context(|| format!("starting {name} against nginx"))?;
        let through = target.call(false);
        let log = env.iter().find(|(k, _)| k == "KEYGATE_LOG").map(|(_, v)| v.clone());
        let row = bench.row((name, label, RowKind::Keygate, log), &target.proc, direct, &through).await;
        target.proc.stop().await;
        limit.rows.push(row.with_context(|| format!("{name} against the limit (see {})", settings.logs.display()))?);
    }
    Ok(())
}

impl Bench<'_> {
    /// One row: `through` served by `proc` (the direct row: `direct`, served by the upstream).
    async fn row(
        &self,
        (name, label, kind, log): (&str, &str, RowKind, Option<String>),
        proc: &Proc,
        direct: &Call,
        through: &Call,
    ) -> anyhow::Result<Row> {
        crate::progress(&format!("against the limit: {label}"));
        self.check(name, through).await?;
        // Warm up (connections, pools, caches), then let the process settle.
        self.wrk(&format!("{name}-warmup"), through, CONNECTIONS, 1).await?;
        settle_proc(proc, name).await;
        let cpu = proc.cpu();
        let throughput = self.wrk(name, through, CONNECTIONS, self.seconds).await?;
        let cpu = proc.cpu() - cpu;
        let cpu_us_per_call = per_request(cpu, usize::try_from(throughput.requests).unwrap_or(usize::MAX));
        settle_proc(proc, name).await;
        let one_connection = self.wrk(name, through, 1, self.seconds).await?;
        settle_proc(proc, name).await;
        let point = Duration::from_secs(self.seconds);
        let (fixed_rate_direct, fixed_rate) = if kind == RowKind::Direct {
            let lanes = [std::slice::from_ref(direct)];
            let d = load::open_loop_lanes_capped(&self.http, &lanes, RATE, point, RATE_IN_FLIGHT).await;
            let d = d.into_iter().next().unwrap_or_default();
            (d.clone(), d)
        } else {
            let lanes = [std::slice::from_ref(direct), std::slice::from_ref(through)];
            let mut measured = load::open_loop_lanes_capped(&self.http, &lanes, RATE, point, RATE_IN_FLIGHT).await;
            let t = measured.pop().unwrap_or_default();
            (measured.pop().unwrap_or_default(), t)
        };
        crate::progress(&format!(
            "{name}: {:.0} req/s at {CONNECTIONS} connections, CPU {:.1} µs/call; 1 connection p50 {:.3} p99 {:.3} ms; \
             {RATE}/s p50 {:.3} p99 {:.3} ms (direct beside it {:.3} / {:.3}); {} failed calls",
            throughput.requests_per_second,
            cpu_us_per_call,
            one_connection.p50_ms,
            one_connection.p99_ms,
            fixed_rate.p50_ms,
            fixed_rate.p99_ms,
            fixed_rate_direct.p50_ms,
            fixed_rate_direct.p99_ms,
            throughput.errors() + one_connection.errors() + fixed_rate.errors as u64,
        ));
        Ok(Row {
            name: name.into(),
            label: label.into(),
            kind,
            log,
            throughput,
            cpu_us_per_call,
            one_connection,
            fixed_rate_direct,
            fixed_rate,
        })
    }

    /// One call through `call`, its answer read: nginx's completion, passed through.
    async fn check(&self, name: &str, call: &Call) -> anyhow::Result<()> {
        let response = self
            .http
            .post(&call.url)
            .bearer_auth(&call.bearer)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body.as_ref().clone())
            .send()
            .await
            .with_context(|| format!("{name}: the first call failed"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() || !body.contains(COMPLETION_ID) {
            bail!(
                "{name}: the first call did not answer nginx's completion: {status} {}",
                &body[..body.len().min(300)]
            );
        }
        Ok(())
    }

    /// `wrk` (pinned to the load core) against `call` for `seconds`; its output is kept
    /// in the logs.
    async fn wrk(&self, name: &str, call: &Call, connections: usize, seconds: u64) -> anyhow::Result<Wrk> {
        let mut args: Vec<String> = vec![
            "-t1".into(),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".into(),
            "--timeout".into(),
            "10s".into(),
            "-s".into(),
            self.script.display().to_string(),
            call.url.clone(),
        ];
        let mut cmd = match self.load_core {
            Some(core) => {
                args.splice(0..0, ["-c".to_owned(), core.to_string(), self.wrk.display().to_string()]);
                tokio::process::Command::new("taskset")
            }
            None => tokio::process::Command::new(&self.wrk),
        };
        let command = match self.load_core {
            Some(_) => format!("taskset {}", args.join(" ")),
            None => format!("{} {}", self.wrk.display(), args.join(" ")),
        };
        let out = cmd
            .args(&args)
            .env(BEARER_VAR, &call.bearer)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {command}"))?;
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let log = self.settings.logs.join(format!("limit-wrk-{name}-c{connections}.txt"));
        std::fs::write(&log, format!("$ {command}\n{stdout}{stderr}"))?;
        if !out.status.success() {
            bail!("{command} exited with {}: {}", out.status, stderr.trim());
        }
        let mut wrk = parse_wrk(&stdout).with_context(|| format!("reading wrk's output (see {})", log.display()))?;
        wrk.connections = connections;
        wrk.command = command;
        Ok(wrk)
    }

    /// nginx (one process, in the foreground) with `server` (where `{port}` stands for a
    /// free port) as its `http` block's content, pinned to `core`; answers the process and
    /// its URL.
    async fn nginx(&self, name: &str, core: Option<usize>, server: &str) -> anyhow::Result<(Proc, String)> {
        let port = free_port()?;
        let home = self.dir.join(name);
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        let conf = home.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&home, &server.replace("{port}", &port.to_string())))?;
        let mut proc = Spawn {
            name: &format!("limit-{name}"),
            program: &self.nginx,
            args: vec![
                "-p".into(),
                format!("{}/", home.display()),
                "-c".into(),
                conf.display().to_string(),
                "-e".into(),
                home.join("error.log").display().to_string(),
            ],
            env: Vec::new(),
            core,
            log_dir: &self.settings.logs,
        }
        .start()?;
        let url = format!("http://127.0.0.1:{port}");
        proc.wait_ready(&format!("{url}/healthz"), Duration::from_secs(20)).await?;
        Ok((proc, url))
    }
}

/// The upstream's `http` content: like a provider, it refuses a call without the provider
/// key (so a proxy that did not inject it breaks the run), then answers [`COMPLETION`];
/// `/healthz` (for readiness) answers without a key.
/// Anthropic's key (in `x-api-key`) passes too: keygate validates it when it is stored.
fn upstream_conf() -> String {
    format!(
        "    map_hash_bucket_size 128;\n    map $http_authorization $bench_authorized {{\n        default 0;\n        \"Bearer {PROVIDER_KEY}\" 1;\n    }}\n    \
         map $http_x_api_key $bench_key_ok {{\n        default $bench_authorized;\n        \"{ANTHROPIC_KEY}\" 1;\n    }}\n    \
         server {{\n        listen 127.0.0.1:{{port}};\n        default_type application/json;\n        \
         location = /healthz {{\n            return 200 'ok';\n        }}\n        \
         location / {{\n            if ($bench_key_ok = 0) {{\n                \
         return 401 '{{\"error\":{{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}}}';\n            \
         }}\n            return 200 '{COMPLETION}';\n        }}\n    }}\n"
    )
}

/// nginx's configuration: one process in the foreground, every path under `home`, no
/// access log, connections kept for as long as the run lasts.
fn nginx_conf(home: &Path, http: &str) -> String {
    let h = home.display();
    format!(
        "# Written by keygate-bench (crates/keygate-bench/src/upstream.rs).\n\
         master_process off;\n\
         daemon off;\n\
         worker_processes 1;\n\
         pid \"{h}/nginx.pid\";\n\
         error_log \"{h}/error.log\" warn;\n\
         events {{\n    worker_connections 16384;\n}}\n\
         http {{\n    \
             access_log off;\n    \
             keepalive_requests 1000000;\n    \
             keepalive_timeout 300s;\n    \
             client_body_temp_path \"{h}/client_body\";\n    \
             proxy_temp_path \"{h}/proxy\";\n    \
             fastcgi_temp_path \"{h}/fastcgi\";\n    \
             uwsgi_temp_path \"{h}/uwsgi\";\n    \
             scgi_temp_path \"{h}/scgi\";\n\
         {http}}}\n"
    )
}

/// wrk's script: every request a chat completion, the bearer from the environment.
fn lua(body: &str) -> String {
    format!(
        "-- Written by keygate-bench (crates/keygate-bench/src/upstream.rs).\n\
         wrk.method = \"POST\"\n\
         wrk.body = [==[{body}]==]\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.headers[\"Authorization\"] = \"Bearer \" .. (os.getenv(\"{BEARER_VAR}\") or \"\")\n"
    )
}

/// Reads wrk's report (with `--latency`).
fn parse_wrk(text: &str) -> anyhow::Result<Wrk> {
    let mut wrk = Wrk::default();
    let (mut rps, mut total, mut p50) = (false, false, false);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            wrk.requests_per_second = v.trim().parse().with_context(|| format!("`{line}`"))?;
            rps = true;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            wrk.non_2xx = v.trim().parse().with_context(|| format!("`{line}`"))?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                let (Some(what), Some(n)) = (words.next(), words.next()) else { bail!("`{line}`") };
                let n: u64 = n.parse().with_context(|| format!("`{line}`"))?;
                match what {
                    "connect" => wrk.connect_errors = n,
                    "read" => wrk.read_errors = n,
                    "write" => wrk.write_errors = n,
                    "timeout" => wrk.timeouts = n,
                    _ => bail!("`{line}`: unknown socket error `{what}`"),
                }
            }
        } else if let Some((n, rest)) = line.split_once(" requests in ") {
            wrk.requests = n.trim().parse().with_context(|| format!("`{line}`"))?;
            let time = rest.split(',').next().unwrap_or_default().trim();
            wrk.seconds = duration_ms(time).with_context(|| format!("`{line}`"))? / 1000.0;
            total = true;
        } else if let Some((pct, value)) = line.split_once('%') {
            let slot = match pct {
                "50" => &mut wrk.p50_ms,
                "75" => &mut wrk.p75_ms,
                "90" => &mut wrk.p90_ms,
                "99" => &mut wrk.p99_ms,
                _ => continue,
            };
            *slot = duration_ms(value.trim()).with_context(|| format!("`{line}`"))?;
            p50 |= pct == "50";
        }
    }
    if !(rps && total && p50) {
        bail!("no Requests/sec, request count or latency distribution in wrk's output");
    }
    Ok(wrk)
}

/// A wrk duration (`512.00us`, `1.20ms`, `2.00s`, `1.00m`, `1.00h`) in milliseconds.
fn duration_ms(text: &str) -> anyhow::Result<f64> {
    let units = [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0), ("h", 3_600_000.0)];
    for (unit, factor) in units {
        if let Some(n) = text.strip_suffix(unit) {
            return Ok(n.trim().parse::<f64>().with_context(|| format!("`{text}` is not a duration"))? * factor);
        }
    }
    bail!("`{text}` is not a duration")
}

/// `program` on `PATH` or in the sbin directories (nginx lives in /usr/sbin).
fn find(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The first line `program -v` prints (nginx and wrk both print their version so).
async fn version(program: &Path) -> String {
    let out = tokio::process::Command::new(program).arg("-v").stdin(Stdio::null()).output().await;
    let Ok(out) = out else { return program.display().to_string() };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    line.strip_prefix("nginx version: ").unwrap_or(line).split(" Copyright").next().unwrap_or(line).trim().to_owned()
}

/// This process's command line, quoted for a shell where needed.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn core_name(core: Option<usize>) -> String {
    core.map_or("(not pinned)".into(), |c| c.to_string())
}

/// Why the phase's figures cannot be trusted: a failed call on any row, a row without a
/// single answer, or (in CI) the phase not run for want of its tools.
pub fn broken(limit: &Limit) -> Vec<String> {
    let mut problems = Vec::new();
    if limit.required && limit.rows.is_empty() {
        problems.extend(limit.skipped.iter().map(|s| format!("against the limit (CI): {s}")));
    }
    for row in &limit.rows {
        for w in [&row.throughput, &row.one_connection] {
            if w.errors() > 0 {
                problems.push(format!(
                    "against the limit, {} at {} connection(s): {} non-2xx answers, socket errors: connect {}, read {}, write {}",
                    row.name, w.connections, w.non_2xx, w.connect_errors, w.read_errors, w.write_errors
                ));
            }
            if w.requests == 0 {
                problems
                    .push(format!("against the limit, {} at {} connection(s): no request", row.name, w.connections));
            }
        }
        for (lane, l) in [("direct lane", &row.fixed_rate_direct), ("", &row.fixed_rate)] {
            if l.errors > 0 {
                problems.push(format!(
                    "against the limit, {} {lane} @ {}/s: {} failed calls, first: {:?}",
                    row.name, limit.rate, l.errors, l.first_error
                ));
            }
            if l.ok == 0 && l.overloaded == 0 {
                problems.push(format!("against the limit, {} {lane} @ {}/s: no successful call", row.name, limit.rate));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:40123/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   520.31us  101.20us   7.12ms   91.02%
    Req/Sec    61.50k     1.93k   64.41k    79.00%
  Latency Distribution
     50%  502.00us
     75%  551.00us
     90%  610.00us
     99%    1.02ms
  612034 requests in 10.00s, 255.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  61198.52
Transfer/sec:     25.51MB
";

    #[test]
    fn reads_wrk() {
        let w = parse_wrk(WRK).unwrap();
        assert_eq!((w.requests, w.non_2xx, w.read_errors, w.timeouts, w.connect_errors), (612_034, 7, 2, 3, 0));
        assert!((w.requests_per_second - 61_198.52).abs() < 1e-6);
        assert!((w.seconds - 10.0).abs() < 1e-9);
        assert!((w.p50_ms - 0.502).abs() < 1e-9 && (w.p99_ms - 1.02).abs() < 1e-9 && (w.p90_ms - 0.61).abs() < 1e-9);
        assert_eq!(w.errors(), 9);
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn broken_only_on_failed_calls() {
        let answered = Latency { ok: 10, ..Latency::default() };
        let row = |throughput: Wrk| Row {
            name: "keygate-sqlite".into(),
            label: String::new(),
            kind: RowKind::Keygate,
            log: None,
            throughput,
            cpu_us_per_call: 0.0,
            one_connection: Wrk { requests: 5, ..Wrk::default() },
            fixed_rate_direct: answered.clone(),
            fixed_rate: answered.clone(),
        };
        let mut limit = Limit {
            command: String::new(),
            nginx: String::new(),
            wrk: String::new(),
            load_core: Some(0),
            proxy_core: Some(1),
            connections: CONNECTIONS,
            seconds: 1,
            rate: RATE,
            goals: GOALS,
            rows: vec![row(Wrk { requests: 100, timeouts: 4, ..Wrk::default() })],
            skipped: vec!["nginx or wrk is not installed".into()],
            required: false,
        };
        assert!(broken(&limit).is_empty(), "timeouts and a missed target are findings: {:?}", broken(&limit));
        limit.rows.push(row(Wrk { requests: 100, non_2xx: 3, ..Wrk::default() }));
        limit.rows.push(row(Wrk { requests: 0, ..Wrk::default() }));
        assert_eq!(broken(&limit).len(), 2);
        limit.rows.clear();
        assert!(broken(&limit).is_empty());
        limit.required = true;
        assert_eq!(broken(&limit).len(), 1);
    }

    #[test]
    fn reads_durations() {
        assert_eq!(duration_ms("1.50s").unwrap(), 1500.0);
        assert_eq!(duration_ms("1.00m").unwrap(), 60_000.0);
        assert!((duration_ms("250.00us").unwrap() - 0.25).abs() < 1e-12);
        assert!(duration_ms("12").is_err());
    }

    #[test]
    fn configures_nginx() {
        let conf = nginx_conf(Path::new("/tmp/x"), "    server {}\n");
        assert!(conf.contains("master_process off;") && conf.contains("pid \"/tmp/x/nginx.pid\";"));
        assert!(conf.ends_with("    server {}\n}\n"));
        assert!(!COMPLETION.contains(['\'', '\\', '$']));
        let upstream = upstream_conf();
        assert!(
            upstream.contains(&format!("\"Bearer {PROVIDER_KEY}\" 1;")) && upstream.contains("return 401 '{\"error\"")
        );
        let completion: serde_json::Value = serde_json::from_str(COMPLETION).unwrap();
        assert!(completion["usage"]["total_tokens"].is_u64() && completion["id"] == COMPLETION_ID);
    }
}
