//! The benchmark's phases, in order, for each target; every figure is measured next to
//! a direct-to-mock baseline taken in the same run.

use crate::load::{self, Call, Flood, Streaming, Throughput};
use crate::procs::{sample_rss, Proc};
use crate::stats::Latency;
use crate::targets::Pacing as StreamPacing;
use crate::targets::{Mock, Pacing, Target};
use crate::{Phase, Settings};
use futures_util::StreamExt;
use serde::Serialize;
use std::time::{Duration, Instant};

pub(crate) const PACED: Pacing = Pacing { latency_ms: 50, chunk_interval_ms: 0, chunks: 5 };
pub(crate) const INSTANT: Pacing = Pacing { latency_ms: 0, chunk_interval_ms: 0, chunks: 5 };
/// About how many first chunks each stream level collects (within its time bounds).
const STREAM_SAMPLES: f64 = 1000.0;
/// The most streams (both lanes together) run at once. The harness's one core carries 200
/// without queueing; at 2,000 it queues (measured: direct first-chunk p99 285 ms against
/// 63 ms for 1,000 alone), so the 1,000 level runs its lanes one after the other.
const LOCKSTEP_STREAMS_MAX: usize = 500;

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub keygate: bool,
    pub cold_call_ms: f64,
    pub warm_call_ms: f64,
    pub idle_rss_mib: f64,
    pub rates: Vec<RatePoint>,
    pub throughput: Option<ThroughputPoint>,
    pub db_queries: Option<DbQueries>,
    pub streaming: Vec<StreamPoint>,
    pub flood: Option<FloodPoint>,
    pub users: Option<Users>,
    /// The unified endpoint against passthrough, both to the mock's Anthropic dialect.
    pub unified: Option<UnifiedLane>,
    pub peak_rss_mib: f64,
    /// What went wrong, for a target whose failures are findings rather than a broken
    /// harness (LiteLLM's proxy).
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RatePoint {
    pub rate: u32,
    pub direct: Latency,
    pub target: Latency,
    pub cpu_us_per_request: f64,
    /// The direct baseline's p99 was over twice its unloaded p99: the load generator or
    /// the machine, not the target, was the bottleneck.
    pub discarded: bool,
}

#[derive(Debug, Serialize)]
pub struct ThroughputPoint {
    pub direct: Throughput,
    pub target: Throughput,
    pub cpu_us_per_request: f64,
}

#[derive(Debug, Serialize)]
pub struct DbQueries {
    pub calls: u64,
    pub queries: u64,
}

#[derive(Debug, Serialize)]
pub struct StreamPoint {
    pub direct: Streaming,
    pub target: Streaming,
    /// Whether the two lanes streamed at the same time (else one after the other).
    pub together: bool,
    pub peak_rss_mib: f64,
    pub kib_per_stream: f64,
}

/// `POST /v1/chat/completions` (OpenAI's format, translated to Anthropic Messages and
/// back) next to `/proxy/anthropic/v1/messages` (passed through), in lockstep, the mock
/// answering after 50 ms; then streamed, the first chunk timed.
#[derive(Debug, Serialize)]
pub struct UnifiedLane {
    pub rate: u32,
    pub direct: Latency,
    pub passthrough: Latency,
    pub unified: Latency,
    pub streams: usize,
    pub passthrough_stream: Streaming,
    pub unified_stream: Streaming,
}

#[derive(Debug, Serialize)]
pub struct FloodPoint {
    pub flood: Flood,
    pub reached_mock: u64,
}

#[derive(Debug, Serialize)]
pub struct Users {
    pub users: usize,
    pub provision_seconds: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    pub rate: u32,
    /// One user's calls, then each of the users once (callers keygate has not seen),
    /// then each once more (callers it has).
    pub one_user: Pass,
    pub first_pass: Pass,
    pub second_pass: Pass,
}

#[derive(Debug, Serialize)]
pub struct Pass {
    pub direct: Latency,
    pub through: Latency,
    /// The proxy's CPU time per call: the cost of resolving a caller.
    pub cpu_us_per_call: f64,
}

impl Pass {
    /// What keygate added to the figure `f` picks.
    pub fn added(&self, f: impl Fn(&Latency) -> f64) -> f64 {
        f(&self.through) - f(&self.direct)
    }
}

/// Direct-to-mock p99 with almost no load: the yardstick for discarding points.
pub async fn unloaded(settings: &Settings, mock: &Mock) -> anyhow::Result<Latency> {
    mock.pace(PACED).await?;
    let client = load::client(settings.timeout);
    Ok(load::open_loop(&client, &[mock.direct(false)], 20, settings.point.max(Duration::from_secs(2))).await)
}

pub async fn target(
    settings: &Settings,
    mock: &Mock,
    target: &mut Target,
    unloaded: &Latency,
) -> anyhow::Result<TargetReport> {
    let client = load::client(settings.timeout);
    let direct = mock.direct(false);
    let mut report = TargetReport {
        name: target.name.clone(),
        keygate: target.is_keygate(),
        cold_call_ms: 0.0,
        warm_call_ms: 0.0,
        idle_rss_mib: 0.0,
        rates: Vec::new(),
        throughput: None,
        db_queries: None,
        streaming: Vec::new(),
        flood: None,
        users: None,
        unified: None,
        peak_rss_mib: 0.0,
        problems: Vec::new(),
    };

    // Cold (a fresh process: no connection, no cache) against warm calls.
    mock.pace(INSTANT).await?;
    if target.is_keygate() {
        target.restart(settings.proxy_core, &settings.logs).await?;
    }
    let fresh = load::client(settings.timeout);
    let call = target.call(false);
    let t = Instant::now();
    call.send(&fresh).await.map_err(|e| anyhow::anyhow!("{}: the first call failed: {e}", target.name))?;
    report.cold_call_ms = ms(t.elapsed());
    let mut warm = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        call.send(&fresh).await.map_err(|e| anyhow::anyhow!("{}: a warm call failed: {e}", target.name))?;
        warm.push(ms(t.elapsed()));
    }
    warm.sort_by(f64::total_cmp);
    report.warm_call_ms = warm[warm.len() / 2];
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.idle_rss_mib = target.proc.rss_mib();

    // Added latency at fixed rates, the mock answering after 50 ms.
    settle(target).await;
    let queries_before = if target.is_keygate() { Some(target.proxy_db_queries().await?) } else { None };
    let mut calls = 0u64;
    mock.pace(PACED).await?;
    let rates: &[u32] = if settings.runs(Phase::Rates) { &settings.rates } else { &[] };
    for &rate in rates {
        settle(target).await;
        let cpu = target.proc.cpu();
        let through = [target.call(false)];
        let mut lanes =
            load::open_loop_lanes(&client, &[std::slice::from_ref(&direct), &through], rate, settings.point).await;
        let cpu = target.proc.cpu() - cpu;
        let (t, d) = (lanes.pop().unwrap_or_default(), lanes.pop().unwrap_or_default());
        calls += t.ok as u64;
        let discarded = d.p99_ms > 2.0 * unloaded.p99_ms;
        crate::progress(&format!(
            "{} @ {rate}/s: direct p50 {:.2} p99 {:.2} | target p50 {:.2} p99 {:.2} ms, {} errors{}",
            target.name,
            d.p50_ms,
            d.p99_ms,
            t.p50_ms,
            t.p99_ms,
            t.errors,
            if discarded { " (discarded)" } else { "" }
        ));
        report.rates.push(RatePoint {
            rate,
            cpu_us_per_request: per_request(cpu, t.ok),
            direct: d,
            target: t,
            discarded,
        });
    }

    // Maximum throughput, the mock answering at once.
    if settings.runs(Phase::Throughput) {
        settle(target).await;
        mock.pace(INSTANT).await?;
        let d = load::closed_loop(&client, &direct, settings.concurrency, settings.throughput).await;
        let cpu = target.proc.cpu();
        let t = load::closed_loop(&client, &target.call(false), settings.concurrency, settings.throughput).await;
        let cpu = target.proc.cpu() - cpu;
        calls += t.latency.ok as u64;
        crate::progress(&format!(
            "{} throughput: direct {:.0}/s, target {:.0}/s ({} errors)",
            target.name, d.requests_per_second, t.requests_per_second, t.latency.errors
        ));
        report.throughput =
            Some(ThroughputPoint { cpu_us_per_request: per_request(cpu, t.latency.ok), direct: d, target: t });
    }
    if let Some(before) = queries_before {
        report.db_queries = Some(DbQueries { calls, queries: target.proxy_db_queries().await? - before });
    }

    // Streams: time to first chunk, gaps between chunks, memory per open stream.
    if settings.runs(Phase::Streams) {
        let pacing = settings.stream_pacing;
        mock.pace(pacing).await?;
        let stream_length =
            Duration::from_millis(pacing.latency_ms + pacing.chunk_interval_ms * u64::from(pacing.chunks));
        let idle = target.proc.rss_mib();
        for &n in &settings.stream_levels {
            settle(target).await;
            let wanted = stream_length.mul_f64(STREAM_SAMPLES / n.max(1) as f64);
            let duration =
                wanted.min(settings.stream_duration_max).max(settings.stream_duration.max(stream_length * 2));
            let (stop, peak) = sample_rss(target.proc.pid);
            let (direct_stream, through_stream) = (mock.direct(true), target.call(true));
            let direct_lane = load::streams(&client, &direct_stream, n, duration, stream_length);
            let through_lane = load::streams(&client, &through_stream, n, duration, stream_length);
            // Both lanes at once where the harness's core carries them, so a hiccup of this
            // shared machine lands on both rather than on one; one after the other above that.
            let together = 2 * n <= LOCKSTEP_STREAMS_MAX;
            let (d, t) = if together {
                tokio::join!(direct_lane, through_lane)
            } else {
                (direct_lane.await, through_lane.await)
            };
            let _ = stop.send(());
            let peak = peak.await.unwrap_or(0.0);
            crate::progress(&format!(
                "{} {n} streams: first chunk p99 direct {:.2} target {:.2} ms; gap p99 direct {:.2} target {:.2} ms; {} errors",
                target.name,
                d.time_to_first_chunk.p99_ms,
                t.time_to_first_chunk.p99_ms,
                d.chunk_gap.p99_ms,
                t.chunk_gap.p99_ms,
                t.errors
            ));
            let kib_per_stream = ((peak - idle) * 1024.0 / n as f64).max(0.0);
            report.streaming.push(StreamPoint { direct: d, target: t, together, peak_rss_mib: peak, kib_per_stream });
        }
    }

    if target.is_keygate() && settings.runs(Phase::Unified) {
        report.unified = Some(unified(settings, mock, target).await?);
    }

    // A flood of made-up tokens: all refused, none reaching the provider.
    if settings.runs(Phase::Flood) {
        settle(target).await;
        mock.pace(INSTANT).await?;
        let before = mock.served().await?;
        let flood = load::flood(&client, &target.call(false), settings.concurrency, settings.flood).await;
        let reached_mock = mock.served().await? - before;
        crate::progress(&format!(
            "{} flood: {:.0} rejections/s, {} other answers, {reached_mock} reached the mock",
            target.name, flood.rejections_per_second, flood.other
        ));
        report.flood = Some(FloodPoint { flood, reached_mock });
    }

    if target.is_keygate() && settings.runs(Phase::Users) {
        settle(target).await;
        report.users = Some(users(settings, mock, target).await?);
    }
    report.peak_rss_mib = target.proc.peak_rss_mib();
    Ok(report)
}

/// Many users with keys: memory, and the cost of resolving a caller keygate has not seen
/// (first pass) against one it has (second pass).
async fn users(settings: &Settings, mock: &Mock, target: &Target) -> anyhow::Result<Users> {
    mock.pace(INSTANT).await?;
    let http = load::client(settings.timeout);
    let rss_before_mib = target.proc.rss_mib();
    let started = Instant::now();
    let names: Vec<String> = (0..settings.users).map(|i| format!("bench-many-{i}")).collect();
    let tokens: Vec<anyhow::Result<String>> = futures_util::stream::iter(names.iter())
        .map(|name| target.provision_user(&http, name))
        .buffered(8)
        .collect()
        .await;
    let tokens = tokens.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let provision_seconds = started.elapsed().as_secs_f64();
    crate::progress(&format!("{}: {} users provisioned in {provision_seconds:.1} s", target.name, tokens.len()));
    let calls: Vec<Call> = tokens.iter().map(|t| target.call_as(t, false)).collect();
    let rate = settings.users_rate;
    let duration = Duration::from_secs_f64(calls.len() as f64 / f64::from(rate));
    let direct = [mock.direct(false)];
    settle(target).await;
    let one_user = pass(&http, target, &direct, std::slice::from_ref(&target.call(false)), rate, settings.point).await;
    settle(target).await;
    let first_pass = pass(&http, target, &direct, &calls, rate, duration).await;
    settle(target).await;
    let rss_after_mib = target.proc.rss_mib();
    let second_pass = pass(&http, target, &direct, &calls, rate, duration).await;
    crate::progress(&format!(
        "{}: added p50 / p99 ms: one user {:.2} / {:.2}; {} users first pass {:.2} / {:.2}, second pass {:.2} / {:.2}",
        target.name,
        one_user.added(|l| l.p50_ms),
        one_user.added(|l| l.p99_ms),
        calls.len(),
        first_pass.added(|l| l.p50_ms),
        first_pass.added(|l| l.p99_ms),
        second_pass.added(|l| l.p50_ms),
        second_pass.added(|l| l.p99_ms),
    ));
    Ok(Users {
        users: tokens.len(),
        provision_seconds,
        rss_before_mib,
        rss_after_mib,
        rate,
        one_user,
        first_pass,
        second_pass,
    })
}

/// `calls` at `rate` in lockstep with direct calls, so what keygate adds is read off the
/// same moments of the machine.
/// The unified lane: added latency and time to first token of the translating endpoint
/// against passthrough to the same (mock) Anthropic.
async fn unified(settings: &Settings, mock: &Mock, target: &Target) -> anyhow::Result<UnifiedLane> {
    let client = load::client(settings.timeout);
    let rate = if settings.quick { 20 } else { 100 };
    settle(target).await;
    mock.pace(PACED).await?;
    let (direct, passthrough, unified) =
        (mock.direct(false), target.anthropic_passthrough(false), target.unified(false));
    let lanes = [std::slice::from_ref(&direct), std::slice::from_ref(&passthrough), std::slice::from_ref(&unified)];
    let mut measured = load::open_loop_lanes(&client, &lanes, rate, settings.point).await;
    let u = measured.pop().unwrap_or_default();
    let p = measured.pop().unwrap_or_default();
    let d = measured.pop().unwrap_or_default();
    crate::progress(&format!(
        "{} unified @ {rate}/s: p50 direct {:.2} passthrough {:.2} unified {:.2} ms; p99 {:.2} / {:.2} / {:.2} ms",
        target.name, d.p50_ms, p.p50_ms, u.p50_ms, d.p99_ms, p.p99_ms, u.p99_ms
    ));

    let pacing = StreamPacing { latency_ms: 50, chunk_interval_ms: 20, chunks: 5 };
    mock.pace(pacing).await?;
    let stream_length = Duration::from_millis(pacing.latency_ms + pacing.chunk_interval_ms * u64::from(pacing.chunks));
    let streams = 10;
    let duration = settings.stream_duration.max(stream_length * 2);
    settle(target).await;
    let (through, translated) = (target.anthropic_passthrough(true), target.unified(true));
    let (ps, us) = tokio::join!(
        load::streams(&client, &through, streams, duration, stream_length),
        load::streams(&client, &translated, streams, duration, stream_length)
    );
    crate::progress(&format!(
        "{} unified {streams} streams: first chunk p50 passthrough {:.2} unified {:.2} ms, p99 {:.2} / {:.2} ms",
        target.name,
        ps.time_to_first_chunk.p50_ms,
        us.time_to_first_chunk.p50_ms,
        ps.time_to_first_chunk.p99_ms,
        us.time_to_first_chunk.p99_ms
    ));
    Ok(UnifiedLane { rate, direct: d, passthrough: p, unified: u, streams, passthrough_stream: ps, unified_stream: us })
}

async fn pass(
    http: &reqwest::Client,
    target: &Target,
    direct: &[Call],
    calls: &[Call],
    rate: u32,
    duration: Duration,
) -> Pass {
    let cpu = target.proc.cpu();
    let mut lanes = load::open_loop_lanes(http, &[direct, calls], rate, duration).await;
    let cpu = target.proc.cpu() - cpu;
    let (through, direct) = (lanes.pop().unwrap_or_default(), lanes.pop().unwrap_or_default());
    Pass { cpu_us_per_call: per_request(cpu, through.ok), direct, through }
}

/// Waits (up to three minutes) until the target has worked off any backlog an earlier
/// phase left it: under 5 % of a core busy over half a second. A saturated proxy keeps
/// answering requests its callers gave up on long after they left.
pub(crate) async fn settle(target: &Target) {
    settle_proc(&target.proc, &target.name).await;
}

/// [`settle`] for any process (nginx too).
pub(crate) async fn settle_proc(proc: &Proc, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let before = proc.cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = proc.cpu() - before;
        if busy < Duration::from_millis(25) {
            return;
        }
        if Instant::now() > deadline {
            crate::progress(&format!("{name} is still busy after three minutes; going on"));
            return;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn per_request(cpu: Duration, requests: usize) -> f64 {
    if requests == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / requests as f64
    }
}
