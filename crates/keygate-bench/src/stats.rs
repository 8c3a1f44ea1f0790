//! Latency samples and their percentiles (exact: every sample is kept and sorted).

use serde::Serialize;
use std::time::Duration;

/// How an error message starts when the target was too slow rather than wrong: the
/// harness gave up on it (its in-flight cap, its timeout). Such requests are counted
/// apart: a finding about the target, never a broken benchmark.
pub const OVERLOADED: &str = "overloaded: ";

#[derive(Debug, Default)]
pub struct Samples {
    micros: Vec<u64>,
    errors: usize,
    overloaded: usize,
    first_error: Option<String>,
}

impl Samples {
    pub fn record(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(d) => self.micros.push(d.as_micros() as u64),
            Err(e) if e.starts_with(OVERLOADED) => self.overloaded += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        self.overloaded += other.overloaded;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn summary(mut self) -> Latency {
        self.micros.sort_unstable();
        let v = &self.micros;
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        let mean = if v.is_empty() { 0.0 } else { v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0 };
        Latency {
            ok: v.len(),
            errors: self.errors,
            overloaded: self.overloaded,
            first_error: self.first_error,
            mean_ms: mean,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: v.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub ok: usize,
    /// Wrong answers and transport failures: the benchmark is broken.
    pub errors: usize,
    /// Requests the harness gave up on because the target was too slow.
    pub overloaded: usize,
    pub first_error: Option<String>,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=1000u64 {
            s.record(Ok(Duration::from_millis(ms)));
        }
        s.record(Err("refused".into()));
        let l = s.summary();
        assert_eq!((l.ok, l.errors), (1000, 1));
        assert_eq!((l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms), (500.0, 990.0, 999.0, 1000.0));
        assert_eq!(l.first_error.as_deref(), Some("refused"));
        assert_eq!(Samples::default().summary().p99_ms, 0.0);
    }
}
