//! The run's verdict (is the benchmark broken?) and its figures as Markdown tables.

use crate::run::TargetReport;
use crate::stats::Latency;
use crate::upstream::{core_name, Limit, RowKind};
use crate::Results;
use std::fmt::Write;

/// Why a target's figures cannot be trusted as a working benchmark. Errors through keygate
/// or to the mock are breakage; LiteLLM's are findings, reported in its tables.
pub fn broken(r: &TargetReport) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |what: &str, l: &Latency, target: bool| {
        if l.errors > 0 && (r.keygate || !target) {
            problems.push(format!("{} {what}: {} failed calls, first: {:?}", r.name, l.errors, l.first_error));
        }
        if l.ok == 0 && l.overloaded == 0 && (r.keygate || !target) {
            problems.push(format!("{} {what}: no successful call", r.name));
        }
    };
    for p in &r.rates {
        check(&format!("direct @ {}/s", p.rate), &p.direct, false);
        check(&format!("@ {}/s", p.rate), &p.target, true);
    }
    if let Some(t) = &r.throughput {
        check("direct throughput", &t.direct.latency, false);
        check("throughput", &t.target.latency, true);
    }
    for s in &r.streaming {
        check(&format!("direct {} streams", s.direct.concurrency), &s.direct.time_to_first_chunk, false);
        check(&format!("{} streams", s.target.concurrency), &s.target.time_to_first_chunk, true);
    }
    if let Some(u) = &r.users {
        for (what, pass) in [("one user", &u.one_user), ("first pass", &u.first_pass), ("second pass", &u.second_pass)]
        {
            check(&format!("many users, {what}, direct"), &pass.direct, false);
            check(&format!("many users, {what}"), &pass.through, true);
        }
    }
    if let Some(u) = &r.unified {
        check("unified lane, direct", &u.direct, false);
        check("unified lane, passthrough", &u.passthrough, true);
        check("unified lane, unified", &u.unified, true);
        check("unified lane, passthrough streams", &u.passthrough_stream.time_to_first_chunk, true);
        check("unified lane, unified streams", &u.unified_stream.time_to_first_chunk, true);
    }
    if let Some(f) = &r.flood {
        if r.keygate && f.reached_mock > 0 {
            problems.push(format!("{}: {} invalid-token calls reached the provider", r.name, f.reached_mock));
        }
        if r.keygate && (f.flood.other > 0 || f.flood.rejected == 0) {
            problems.push(format!(
                "{}: of {} invalid-token calls {} were not answered 401",
                r.name, f.flood.sent, f.flood.other
            ));
        }
    }
    problems
}

/// "failed / given up" for a table cell.
struct Failed<'a>(&'a Latency);

impl std::fmt::Display for Failed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}", self.0.errors, self.0.overloaded)
    }
}

pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let s = &results.settings;
    let _ = writeln!(out, "# keygate benchmark results\n");
    let _ = writeln!(
        out,
        "{} · {} build · {} ({} cores, {:.0} GiB) · Linux {} · {}{}\n",
        m.date,
        m.build,
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        match s.proxy_core {
            Some(c) => format!("proxy pinned to CPU {c}, harness and mock to the other"),
            None => "nothing pinned".into(),
        },
        if s.quick { " · QUICK MODE: figures are a smoke test, not measurements" } else { "" }
    );
    let u = &results.unloaded_direct;
    let _ = writeln!(
        out,
        "Direct to the mock, unloaded (20 requests/s, mock answers after 50 ms): p50 {:.2} ms, p99 {:.2} ms. \
         A point is discarded when the direct p99 exceeds {:.2} ms.\n",
        u.p50_ms,
        u.p99_ms,
        2.0 * u.p99_ms
    );

    limit(&mut out, results);

    let _ = writeln!(
        out,
        "## Added latency at fixed rates (open loop, mock answers after 50 ms; direct and proxied requests sent in lockstep, each lane at the rate shown)\n"
    );
    let _ = writeln!(
        out,
        "| target | rate/s | direct p50 / p99 / p99.9 ms | through target p50 / p99 / p99.9 ms | added p50 / p99 / p99.9 ms | failed / given up | CPU µs/req | |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---|---:|---:|---|");
    for r in &results.targets {
        for p in &r.rates {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.3} / {:.3} / {:.3} | {} | {:.0} | {} |",
                r.name,
                p.rate,
                triple(&p.direct),
                triple(&p.target),
                p.target.p50_ms - p.direct.p50_ms,
                p.target.p99_ms - p.direct.p99_ms,
                p.target.p999_ms - p.direct.p999_ms,
                Failed(&p.target),
                p.cpu_us_per_request,
                if p.discarded { "discarded" } else { "" }
            );
        }
    }

    let _ = writeln!(out, "\n## Maximum throughput (closed loop, {} callers, mock answers at once)\n", s.concurrency);
    let _ = writeln!(
        out,
        "| target | direct req/s | through target req/s | target / direct | target p99 ms | failed / given up | CPU µs/req |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for r in &results.targets {
        if let Some(t) = &r.throughput {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.0} % | {:.2} | {} | {:.0} |",
                r.name,
                t.direct.requests_per_second,
                t.target.requests_per_second,
                100.0 * t.target.requests_per_second / t.direct.requests_per_second.max(1.0),
                t.target.latency.p99_ms,
                Failed(&t.target.latency),
                t.cpu_us_per_request
            );
        }
    }

    let p = s.stream_pacing;
    let _ = writeln!(
        out,
        "\n## Streaming ({} chunks {} ms apart after {} ms)\n",
        p.chunks, p.chunk_interval_ms, p.latency_ms
    );
    let _ = writeln!(
        out,
        "| target | streams | lanes | samples direct / target | first chunk p50 / p99 direct ms | first chunk p50 / p99 target ms | added p99 ms | chunk gap p99 direct / target ms | failed / given up | peak RSS MiB | KiB per open stream |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---|---|---:|---|---:|---:|---:|");
    for r in &results.targets {
        for st in &r.streaming {
            let (d, t) = (&st.direct.time_to_first_chunk, &st.target.time_to_first_chunk);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} | {:.2} / {:.2} | {} | {:.1} | {:.1} |",
                r.name,
                st.target.concurrency,
                if st.together { "together" } else { "in turn" },
                st.direct.streams,
                st.target.streams,
                d.p50_ms,
                d.p99_ms,
                t.p50_ms,
                t.p99_ms,
                t.p99_ms - d.p99_ms,
                st.direct.chunk_gap.p99_ms,
                st.target.chunk_gap.p99_ms,
                Failed(&st.target.time_to_first_chunk),
                st.peak_rss_mib,
                st.kib_per_stream
            );
        }
    }

    let _ = writeln!(out, "\n## Memory, cold and warm calls, database queries\n");
    let _ = writeln!(
        out,
        "| target | idle RSS MiB | peak RSS MiB | first call after start ms | warm call p50 ms | DB queries / proxied calls |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for r in &results.targets {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.2} | {:.3} | {} |",
            r.name,
            r.idle_rss_mib,
            r.peak_rss_mib,
            r.cold_call_ms,
            r.warm_call_ms,
            r.db_queries.as_ref().map_or("n/a".into(), |q| format!("{} / {}", q.queries, q.calls))
        );
    }

    let _ = writeln!(out, "\n## Many users with keys (mock answers at once; direct calls in lockstep)\n");
    let _ = writeln!(
        out,
        "| target | users | provisioned in s | RSS before / after MiB | KiB per user | rate/s | pass | direct p50 / p99 ms | through p50 / p99 ms | added p50 / p99 ms | CPU µs/call | failed / given up |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---:|---|---|---|---|---:|---:|");
    for r in &results.targets {
        let Some(u) = &r.users else { continue };
        for (what, pass) in
            [("one user", &u.one_user), ("first (cold)", &u.first_pass), ("second (warm)", &u.second_pass)]
        {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} / {:.1} | {:.1} | {} | {what} | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} / {:.3} | {:.0} | {} |",
                r.name,
                u.users,
                u.provision_seconds,
                u.rss_before_mib,
                u.rss_after_mib,
                (u.rss_after_mib - u.rss_before_mib) * 1024.0 / u.users.max(1) as f64,
                u.rate,
                pass.direct.p50_ms,
                pass.direct.p99_ms,
                pass.through.p50_ms,
                pass.through.p99_ms,
                pass.added(|l| l.p50_ms),
                pass.added(|l| l.p99_ms),
                pass.cpu_us_per_call,
                Failed(&pass.through)
            );
        }
    }

    let _ = writeln!(
        out,
        "\n## Unified endpoint (OpenAI format, translated to Anthropic Messages) against Anthropic passthrough\n"
    );
    let _ = writeln!(
        out,
        "Not streamed: open loop, mock answers after 50 ms, three lanes in lockstep. Streamed: 5 chunks 20 ms apart \
         after 50 ms, both lanes at once.\n"
    );
    let _ = writeln!(
        out,
        "| target | rate/s | direct p50 / p99 ms | passthrough p50 / p99 ms | unified p50 / p99 ms | unified added over passthrough p50 / p99 ms | streams | first token passthrough p50 / p99 ms | first token unified p50 / p99 ms | failed / given up |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &results.targets {
        let Some(u) = &r.unified else { continue };
        let (pt, ut) = (&u.passthrough_stream.time_to_first_chunk, &u.unified_stream.time_to_first_chunk);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {} |",
            r.name,
            u.rate,
            u.direct.p50_ms,
            u.direct.p99_ms,
            u.passthrough.p50_ms,
            u.passthrough.p99_ms,
            u.unified.p50_ms,
            u.unified.p99_ms,
            u.unified.p50_ms - u.passthrough.p50_ms,
            u.unified.p99_ms - u.passthrough.p99_ms,
            u.streams,
            pt.p50_ms,
            pt.p99_ms,
            ut.p50_ms,
            ut.p99_ms,
            Failed(&u.unified),
        );
    }

    let _ = writeln!(out, "\n## Invalid-token flood ({} callers)\n", s.concurrency);
    let _ = writeln!(
        out,
        "| target | sent | answered 401 | other answers (status: count) | rejections/s | reached the mock |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|---:|---:|");
    for r in &results.targets {
        if let Some(f) = &r.flood {
            let others: Vec<String> = f.flood.other_statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {:.0} | {} |",
                r.name,
                f.flood.sent,
                f.flood.rejected,
                f.flood.other,
                if others.is_empty() { String::new() } else { format!("({})", others.join(", ")) },
                f.flood.rejections_per_second,
                f.reached_mock
            );
        }
    }

    limiters(&mut out, results);
    ratios(&mut out, results);
    out
}

/// A figure with its target's mark: ✓ met, ✗ missed.
fn marked(text: String, met: bool) -> String {
    format!("{text} {}", if met { "✓" } else { "✗" })
}

/// Against the limit: nginx direct, nginx as a reverse proxy and keygate, one table.
fn limit(out: &mut String, results: &Results) {
    let Some(l) = &results.limit else { return };
    let g = &l.goals;
    let _ = writeln!(out, "## Against the limit: a fast upstream (nginx) and nginx as a reverse proxy\n");
    if let Some(direct) = l.row(RowKind::Direct) {
        limit_table(out, l, direct);
    }
    for line in &l.skipped {
        let _ = writeln!(out, "\nSkipped: {line}.");
    }
    let _ = writeln!(
        out,
        "\nTargets for keygate (issue 16): ≥ {} of direct and ≥ {} of nginx-proxy at {} connections; added p50 ≤ {} ms \
         and p99 ≤ {} ms at one connection and at {} requests/s; CPU ≤ {} µs per proxied call. ✓ met, ✗ missed: \
         reported, never failed on (only a failed call breaks the run).\n",
        g.of_direct,
        g.of_nginx_proxy,
        l.connections,
        g.added_p50_ms,
        g.added_p99_ms,
        thousands(l.rate),
        g.cpu_us_per_call
    );
    let _ = writeln!(
        out,
        "{} answers every request with a fixed chat completion (with usage) on CPU {}, and wrk ({}) runs there too; \
         the path under test has CPU {} to itself. requests/s: wrk, one thread, {} connections, {} s, after a 1 s \
         warm-up. CPU µs/call: the proxy process's user + system time over that run per request (direct: the upstream \
         nginx's own). 1 conn: wrk with one connection, {} s; added over direct's. {}/s: the harness's open loop, each \
         request in lockstep with one straight to nginx, {} s; added over that direct lane (when the direct lane \
         beside it is far slower than the direct row's, the harness's core, not the proxy, was the bottleneck). \
         Failed: non-2xx answers and socket errors / requests given up on (timeouts).\n",
        if l.nginx.is_empty() { "nginx" } else { &l.nginx },
        core_name(l.load_core),
        if l.wrk.is_empty() { "wrk" } else { &l.wrk },
        core_name(l.proxy_core),
        l.connections,
        l.seconds,
        l.seconds,
        thousands(l.rate),
        l.seconds
    );
    let _ = writeln!(out, "Command: `{}`", l.command);
    if let Some(w) = l.rows.first() {
        let _ = writeln!(
            out,
            "\nEach wrk run (this row's URL; the bearer credential in `KEYGATE_BENCH_BEARER`): `{}`",
            w.throughput.command
        );
    }
    let _ = writeln!(out);
}

/// 1000 as "1,000".
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn limit_table(out: &mut String, l: &Limit, direct: &crate::upstream::Row) {
    let g = &l.goals;
    let _ = writeln!(
        out,
        "| path | requests/s | of direct | of nginx-proxy | CPU µs/call | 1 conn p50 / p99 ms | 1 conn added p50 / p99 ms | {0}/s p50 / p99 ms (direct beside it) | {0}/s added p50 / p99 ms | failed / given up |",
        thousands(l.rate)
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---|---|---|---:|");
    for row in &l.rows {
        let goal = row.kind == RowKind::Keygate;
        let mark = |text: String, met: bool| if goal { marked(text, met) } else { text };
        let ratio = |kind: RowKind, min: f64| match l.ratio(row, kind) {
            Some(v) => mark(format!("{v:.2}"), v >= min),
            None => "n/a".into(),
        };
        let added = |(p50, p99): (f64, f64)| {
            if row.kind == RowKind::Direct {
                "—".to_owned()
            } else {
                format!(
                    "{} / {}",
                    mark(format!("{p50:.3}"), p50 <= g.added_p50_ms),
                    mark(format!("{p99:.3}"), p99 <= g.added_p99_ms)
                )
            }
        };
        let errors = row.throughput.errors() + row.one_connection.errors() + row.fixed_rate.errors as u64;
        let given_up = row.throughput.timeouts + row.one_connection.timeouts + row.fixed_rate.overloaded as u64;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {:.3} / {:.3} | {} | {:.3} / {:.3}{} | {} | {errors} / {given_up} |",
            row.label,
            row.throughput.requests_per_second,
            ratio(RowKind::Direct, g.of_direct),
            ratio(RowKind::NginxProxy, g.of_nginx_proxy),
            mark(format!("{:.1}", row.cpu_us_per_call), row.cpu_us_per_call <= g.cpu_us_per_call),
            row.one_connection.p50_ms,
            row.one_connection.p99_ms,
            added(row.one_connection_added(direct)),
            row.fixed_rate.p50_ms,
            row.fixed_rate.p99_ms,
            if row.kind == RowKind::Direct {
                String::new()
            } else {
                format!(" ({:.3} / {:.3})", row.fixed_rate_direct.p50_ms, row.fixed_rate_direct.p99_ms)
            },
            added(row.fixed_rate_added()),
        );
    }
}

/// Platform-key calls through each limits backend against the same process's own-key calls.
fn limiters(out: &mut String, results: &Results) {
    if results.limiters.is_empty() && results.limiters_skipped.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## What a limit check costs (platform-key calls, tier limits out of reach)\n");
    let _ = writeln!(
        out,
        "Fixed rate: mock answers after 50 ms; direct, own key (no limit check) and platform key (admitted by the \
         limiter, spread over the keyless users) in lockstep, each lane at the rate shown. Throughput: {} callers, \
         mock answering at once, own key then platform key.\n",
        results.settings.concurrency
    );
    let _ = writeln!(
        out,
        "| limiter | store | users | rate/s | direct p50 / p99 ms | own key p50 / p99 ms | platform p50 / p99 ms | check adds p50 / p99 ms | own key / platform req/s | platform p99 ms | CPU µs/req own key / platform | failed / given up |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---|---|---|---|---|---:|---|---:|");
    for l in &results.limiters {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.3} / {:.3} | {:.0} / {:.0} | {:.2} | {:.0} / {:.0} | {} |",
            l.backend,
            l.store,
            l.users,
            l.rate,
            l.direct.p50_ms,
            l.direct.p99_ms,
            l.own_key.p50_ms,
            l.own_key.p99_ms,
            l.platform.p50_ms,
            l.platform.p99_ms,
            l.platform.p50_ms - l.own_key.p50_ms,
            l.platform.p99_ms - l.own_key.p99_ms,
            l.own_key_throughput.requests_per_second,
            l.platform_throughput.requests_per_second,
            l.platform_throughput.latency.p99_ms,
            l.own_key_cpu_us,
            l.platform_cpu_us,
            Failed(&l.platform),
        );
    }
    for line in &results.limiters_skipped {
        let _ = writeln!(out, "\nSkipped: {line}.");
    }
}

/// LiteLLM against keygate (SQLite), where both were measured.
fn ratios(out: &mut String, results: &Results) {
    let keygate = results.targets.iter().find(|t| t.name == "keygate-sqlite");
    let litellm = results.targets.iter().find(|t| t.name == "litellm");
    let (Some(k), Some(l)) = (keygate, litellm) else { return };
    let _ = writeln!(out, "\n## LiteLLM / keygate\n");
    let _ = writeln!(out, "| measure | keygate | LiteLLM | LiteLLM / keygate |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let mut row = |what: String, kv: f64, lv: f64| {
        let _ = writeln!(out, "| {what} | {kv:.3} | {lv:.3} | {:.1}× |", lv / kv.max(1e-3));
    };
    for (kp, lp) in k.rates.iter().zip(&l.rates) {
        row(
            format!("added p50 ms @ {}/s", kp.rate),
            kp.target.p50_ms - kp.direct.p50_ms,
            lp.target.p50_ms - lp.direct.p50_ms,
        );
        row(
            format!("added p99 ms @ {}/s", kp.rate),
            kp.target.p99_ms - kp.direct.p99_ms,
            lp.target.p99_ms - lp.direct.p99_ms,
        );
    }
    if let (Some(kt), Some(lt)) = (&k.throughput, &l.throughput) {
        row("max req/s".into(), kt.target.requests_per_second, lt.target.requests_per_second);
        row("CPU µs/req".into(), kt.cpu_us_per_request, lt.cpu_us_per_request);
    }
    row("idle RSS MiB".into(), k.idle_rss_mib, l.idle_rss_mib);
    row("peak RSS MiB".into(), k.peak_rss_mib, l.peak_rss_mib);
}

fn triple(l: &Latency) -> String {
    format!("{:.2} / {:.2} / {:.2}", l.p50_ms, l.p99_ms, l.p999_ms)
}
