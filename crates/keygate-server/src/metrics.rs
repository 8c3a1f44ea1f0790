//! `/metrics` in the Prometheus text format: proxied requests by provider, key source and
//! status; upstream latency; keygate's own overhead (from a request's arrival until it
//! leaves for the provider); cache hits and misses; database queries issued from the
//! proxy path. Hand-rolled: a mutex held for nanoseconds per call, no dependency.
//!
//! The figures say who calls which provider, so they are not public: on the main listener
//! `/metrics` needs a super-admin's credential with the `metrics` scope ([`scoped`]); with
//! `metrics_listen` it is served, unauthenticated, only on that listener ([`metrics`]).

use crate::extract::Auth;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// provider → (key source, status) → calls. Keyed so a call allocates nothing once its
    /// provider has been seen.
    requests: BTreeMap<String, BTreeMap<(&'static str, u16), u64>>,
    upstream: BTreeMap<String, Histogram>,
    overhead: Histogram,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// keygate's one lock policy: a poisoned lock is recovered (every update here leaves
    /// the counters consistent), never skipped.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Metrics {
    /// One proxied call: where it went, who paid, how it ended.
    pub fn request(&self, provider: &str, source: &'static str, status: u16) {
        {
            let mut m = self.lock();
            let by_provider = match m.requests.get_mut(provider) {
                Some(p) => p,
                None => m.requests.entry(provider.to_owned()).or_default(),
            };
            *by_provider.entry((source, status)).or_default() += 1;
        }
    }

    pub fn upstream_latency(&self, provider: &str, elapsed: Duration) {
        {
            let mut m = self.lock();
            let histogram = match m.upstream.get_mut(provider) {
                Some(h) => h,
                None => m.upstream.entry(provider.to_owned()).or_default(),
            };
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    pub fn overhead(&self, elapsed: Duration) {
        {
            let mut m = self.lock();
            m.overhead.observe(elapsed.as_secs_f64());
        }
    }

    fn render(&self, state: &AppState) -> String {
        let mut out = String::with_capacity(4096);
        let m = self.lock();
        out.push_str("# HELP keygate_proxy_requests_total Proxied calls by provider, key source and upstream status (0: never reached).\n");
        out.push_str("# TYPE keygate_proxy_requests_total counter\n");
        for (provider, counts) in &m.requests {
            for ((source, status), n) in counts {
                let _ = writeln!(
                    out,
                    "keygate_proxy_requests_total{{provider=\"{provider}\",source=\"{source}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP keygate_upstream_latency_seconds Time from sending a call to the provider until its response headers.\n");
        out.push_str("# TYPE keygate_upstream_latency_seconds histogram\n");
        for (provider, h) in &m.upstream {
            h.render(&mut out, "keygate_upstream_latency_seconds", &format!("provider=\"{provider}\""));
        }
        out.push_str(
            "# HELP keygate_overhead_seconds keygate's own time per call before it leaves for the provider.\n",
        );
        out.push_str("# TYPE keygate_overhead_seconds histogram\n");
        m.overhead.render(&mut out, "keygate_overhead_seconds", "");
        drop(m);
        let services = &state.services;
        out.push_str("# HELP keygate_cache_requests_total Cache lookups on the proxy path, by cache and result.\n");
        out.push_str("# TYPE keygate_cache_requests_total counter\n");
        for (cache, stats) in services.cache_stats() {
            let _ = writeln!(out, "keygate_cache_requests_total{{cache=\"{cache}\",result=\"hit\"}} {}", stats.hits);
            let _ = writeln!(out, "keygate_cache_requests_total{{cache=\"{cache}\",result=\"miss\"}} {}", stats.misses);
        }
        out.push_str("# HELP keygate_proxy_db_queries_total Database queries issued on behalf of proxied calls (cache misses).\n");
        out.push_str("# TYPE keygate_proxy_db_queries_total counter\n");
        let _ = writeln!(out, "keygate_proxy_db_queries_total {}", services.hot_path_queries());
        out.push_str("# HELP keygate_limits_fail_open_total Calls served without a limit check because the limits backend was down (limits.fail_open).\n");
        out.push_str("# TYPE keygate_limits_fail_open_total counter\n");
        let _ = writeln!(out, "keygate_limits_fail_open_total {}", services.fail_open_calls());
        out.push_str("# HELP keygate_limits_backend Where the limit counters live.\n");
        out.push_str("# TYPE keygate_limits_backend gauge\n");
        let _ = writeln!(out, "keygate_limits_backend{{backend=\"{}\"}} 1", services.limits_backend());
        out
    }
}

/// `/metrics` on the main listener: for a super-admin's credential carrying `metrics`.
#[tracing::instrument(skip_all)]
pub(crate) async fn scoped(State(state): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    p.require_super_admin_with(keygate_core::Scope::Metrics)?;
    Ok(metrics(State(state)).await)
}

/// `/metrics` as such, for a listener only the monitoring network reaches.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state);
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
