//! `keygate-bench`: measures keygate against a direct call to keygate-mock and against
//! LiteLLM's proxy, side by side in one run; and against a fast third-party upstream
//! (nginx) beside nginx itself as a reverse proxy (`upstream.rs`). `bench/run.sh` builds
//! everything, prepares LiteLLM's virtual environment, pins this harness (and the mock it
//! starts) to one core and hands the other core to the proxy under test.
//!
//! The run fails when the benchmark itself is broken (a target does not start, a call
//! through keygate or to the mock errs, an invalid token gets through), never because
//! the machine is slow.

mod limiters;
mod load;
mod procs;
mod report;
mod run;
mod stats;
mod targets;
mod upstream;

use anyhow::Context;
use clap::Parser;
use keygate_store::testdb::TestDb;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use targets::{Mock, Pacing, Target};

#[derive(Debug, Parser)]
#[command(name = "keygate-bench", about = "keygate's benchmark harness (see BENCHMARKS.md)")]
struct Args {
    /// A short run (about a minute) that checks every phase works; its figures mean little.
    #[arg(long)]
    quick: bool,
    /// Where results (JSON, Markdown) and process logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The keygate binary (default: next to this one).
    #[arg(long)]
    keygate: Option<PathBuf>,
    /// The keygate-mock binary (default: next to this one).
    #[arg(long)]
    mock: Option<PathBuf>,
    /// A virtual environment with `litellm[proxy]` installed; without it LiteLLM is skipped.
    #[arg(long)]
    litellm_venv: Option<PathBuf>,
    /// Skip keygate on PostgreSQL.
    #[arg(long)]
    no_postgres: bool,
    /// The CPU the proxy under test is pinned to (the harness and the mock keep theirs);
    /// `none` to pin nothing.
    #[arg(long, default_value = "1")]
    proxy_core: String,
    /// Seconds per fixed-rate point.
    #[arg(long)]
    point_secs: Option<f64>,
    /// Users loaded for the many-users phase.
    #[arg(long)]
    users: Option<usize>,
    /// The Redis server for the Redis limiter lane (skipped when nothing listens there).
    #[arg(long, env = "KEYGATE_TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Run only these phases (comma-separated; the cold and warm calls always run).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Phase>,
    /// The nginx binary for the phase against a fast upstream (default: on PATH or in /usr/sbin).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// The wrk binary for the phase against a fast upstream (default: on PATH).
    #[arg(long)]
    wrk: Option<PathBuf>,
}

/// A phase of the run, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Rates,
    Throughput,
    Streams,
    Flood,
    Users,
    /// The unified endpoint (OpenAI's format to Anthropic) against Anthropic passthrough.
    Unified,
    /// Platform-key calls through each limits backend (in-process, PostgreSQL, Redis).
    Limiters,
    /// Against a fast upstream: nginx direct (the limit), nginx as a reverse proxy and
    /// keygate, driven by wrk.
    Limit,
}

/// What one run measures, and for how long.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub rates: Vec<u32>,
    #[serde(serialize_with = "secs")]
    pub point: Duration,
    #[serde(serialize_with = "secs")]
    pub throughput: Duration,
    pub concurrency: usize,
    pub stream_levels: Vec<usize>,
    #[serde(skip)]
    pub stream_pacing: Pacing,
    /// Each stream level runs at least this long, and longer (up to `stream_duration_max`)
    /// until about `STREAM_SAMPLES` first chunks are in: a p99 of ~100 samples is one hiccup.
    #[serde(serialize_with = "secs")]
    pub stream_duration: Duration,
    #[serde(serialize_with = "secs")]
    pub stream_duration_max: Duration,
    #[serde(serialize_with = "secs")]
    pub flood: Duration,
    pub users: usize,
    pub users_rate: u32,
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
    pub proxy_core: Option<usize>,
    /// Empty: every phase.
    pub only: Vec<Phase>,
    #[serde(skip)]
    pub logs: PathBuf,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Settings {
    fn from(args: &Args, logs: PathBuf) -> anyhow::Result<Self> {
        let proxy_core = match args.proxy_core.as_str() {
            "none" => None,
            n => Some(n.parse().context("--proxy-core is a CPU number or `none`")?),
        };
        let quick = args.quick;
        let s = |full: f64, quick_secs: f64| Duration::from_secs_f64(if quick { quick_secs } else { full });
        Ok(Self {
            quick,
            rates: if quick { vec![100, 500] } else { vec![100, 500, 1000, 2000] },
            point: args.point_secs.map_or(s(10.0, 1.5), Duration::from_secs_f64),
            throughput: s(10.0, 1.5),
            concurrency: 32,
            stream_levels: if quick { vec![10, 100] } else { vec![10, 100, 1000] },
            stream_pacing: if quick {
                Pacing { latency_ms: 50, chunk_interval_ms: 20, chunks: 5 }
            } else {
                Pacing { latency_ms: 50, chunk_interval_ms: 50, chunks: 10 }
            },
            stream_duration: s(10.0, 1.0),
            stream_duration_max: s(40.0, 2.0),
            flood: s(5.0, 1.0),
            users: args.users.unwrap_or(if quick { 200 } else { 10_000 }),
            users_rate: if quick { 400 } else { 1000 },
            timeout: Duration::from_secs(15),
            proxy_core,
            only: args.only.clone(),
            logs,
        })
    }

    /// Whether this run measures `phase`.
    pub fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
}

/// The machine the figures come from.
#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    build: &'static str,
    date: String,
}

impl Machine {
    fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split(':').nth(1)))
                .unwrap_or("unknown")
                .trim()
                .to_owned(),
            cores: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            memory_gib: meminfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("MemTotal:").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                })
                .unwrap_or(0.0)
                / 1024.0
                / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Results {
    machine: Machine,
    settings: Settings,
    unloaded_direct: stats::Latency,
    targets: Vec<run::TargetReport>,
    limiters: Vec<limiters::LimiterLane>,
    /// Limiter lanes not run, and why.
    limiters_skipped: Vec<String>,
    /// Against a fast upstream (nginx), with nginx as a reverse proxy beside keygate.
    limit: Option<upstream::Limit>,
}

pub fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "[bench] {line}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match bench(Args::parse()).await {
        Ok(problems) if problems.is_empty() => std::process::ExitCode::SUCCESS,
        Ok(problems) => {
            for p in problems {
                progress(&format!("BROKEN: {p}"));
            }
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            progress(&format!("BROKEN: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs everything; answers what makes this run a broken benchmark.
async fn bench(args: Args) -> anyhow::Result<Vec<String>> {
    let here = std::env::current_exe()?;
    let keygate = args.keygate.clone().unwrap_or_else(|| here.with_file_name("keygate"));
    let mock_bin = args.mock.clone().unwrap_or_else(|| here.with_file_name("keygate-mock"));
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let settings = Settings::from(&args, logs.clone())?;
    let machine = Machine::read();
    progress(&format!(
        "{} build on {} ({} cores); results in {}",
        machine.build,
        machine.cpu,
        machine.cores,
        args.out.display()
    ));

    let mock = Mock::start(&mock_bin, &logs).await?;
    let unloaded = run::unloaded(&settings, &mock).await?;
    progress(&format!("direct, unloaded: p50 {:.2} ms, p99 {:.2} ms", unloaded.p50_ms, unloaded.p99_ms));

    let mut reports = Vec::new();
    let sqlite =
        Target::keygate("keygate-sqlite", &keygate, TestDb::sqlite(), &mock, settings.proxy_core, &logs).await?;
    reports.push(measure(&settings, &mock, sqlite, &unloaded).await?);
    if !args.no_postgres {
        match TestDb::postgres().await {
            Some(db) => {
                let pg = Target::keygate("keygate-postgres", &keygate, db, &mock, settings.proxy_core, &logs).await?;
                reports.push(measure(&settings, &mock, pg, &unloaded).await?);
            }
            None => progress("PostgreSQL is not reachable: keygate-postgres skipped"),
        }
    }
    if let Some(venv) = &args.litellm_venv {
        progress("starting LiteLLM's proxy (it takes a while to import)");
        let litellm = Target::litellm(venv, &mock, settings.proxy_core, &logs).await?;
        reports.push(measure(&settings, &mock, litellm, &unloaded).await?);
    }
    let (limiter_lanes, limiters_skipped) = if settings.runs(Phase::Limiters) {
        limiters::run(&settings, &mock, &keygate, !args.no_postgres, &args.redis_url).await?
    } else {
        (Vec::new(), Vec::new())
    };
    mock.proc.stop().await;
    let limit = if settings.runs(Phase::Limit) {
        let tools = (args.nginx.as_deref(), args.wrk.as_deref());
        Some(upstream::run(&settings, &args.out, &keygate, tools, !args.no_postgres).await?)
    } else {
        None
    };

    let mut problems = Vec::new();
    if unloaded.errors > 0 {
        problems.push(format!("direct calls to the mock failed: {:?}", unloaded.first_error));
    }
    for r in &reports {
        problems.extend(report::broken(r));
    }
    for lane in &limiter_lanes {
        problems.extend(limiters::broken(lane));
    }
    if let Some(limit) = &limit {
        problems.extend(upstream::broken(limit));
    }
    let results = Results {
        machine,
        settings,
        unloaded_direct: unloaded,
        targets: reports,
        limiters: limiter_lanes,
        limiters_skipped,
        limit,
    };
    std::fs::write(args.out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    let markdown = report::markdown(&results);
    std::fs::write(args.out.join("results.md"), &markdown)?;
    let _ = std::io::stdout().write_all(markdown.as_bytes());
    Ok(problems)
}

async fn measure(
    settings: &Settings,
    mock: &Mock,
    mut target: Target,
    unloaded: &stats::Latency,
) -> anyhow::Result<run::TargetReport> {
    progress(&format!("measuring {}", target.name));
    let result = run::target(settings, mock, &mut target, unloaded).await;
    target.proc.stop().await;
    result
}
