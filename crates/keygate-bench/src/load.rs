//! Load shapes: open loop at a fixed rate (latency measured from each request's
//! scheduled start, so a stalled server cannot hide its queue), closed loop for maximum
//! throughput, concurrent streams (time to first chunk, gaps between chunks), and a
//! flood of invalid tokens.

use crate::stats::{Latency, Samples, OVERLOADED};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests in flight beyond which an open-loop generator counts a request as failed
/// instead of sending it (the target is saturated; waiting would only hide it).
const MAX_IN_FLIGHT: usize = 4_000;

/// One kind of request: where it goes, the bearer credential, and the JSON body.
#[derive(Debug, Clone)]
pub struct Call {
    pub url: String,
    pub bearer: String,
    pub body: Arc<Vec<u8>>,
}

impl Call {
    pub fn new(url: String, bearer: String, body: &serde_json::Value) -> Self {
        Self { url, bearer, body: Arc::new(serde_json::to_vec(body).unwrap_or_default()) }
    }

    fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        client
            .post(&self.url)
            .bearer_auth(&self.bearer)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.as_ref().clone())
    }

    /// Sends once and reads the whole answer; `Err` for a transport error or non-2xx.
    pub async fn send(&self, client: &reqwest::Client) -> Result<(), String> {
        let response = self.request(client).send().await.map_err(failure)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failure)?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])))
        }
    }
}

/// A request that timed out was given up on (the target was too slow); any other
/// transport error is a failure.
fn failure(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("{OVERLOADED}no answer in time")
    } else {
        e.to_string()
    }
}

/// An HTTP/1.1 client with a pool deep enough for thousands of concurrent requests.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// `rate` requests per second for `duration`, each timed from when it was due; request
/// `i` is `calls[i % calls.len()]`.
pub async fn open_loop(client: &reqwest::Client, calls: &[Call], rate: u32, duration: Duration) -> Latency {
    open_loop_lanes(client, &[calls], rate, duration).await.pop().unwrap_or_default()
}

/// Several lanes in lockstep: at each tick every lane sends its next request, so the lanes
/// see the same moments of the same machine (a direct baseline and a proxy measured in one
/// window, not one after the other). Answers one distribution per lane.
pub async fn open_loop_lanes(
    client: &reqwest::Client,
    lanes: &[&[Call]],
    rate: u32,
    duration: Duration,
) -> Vec<Latency> {
    open_loop_lanes_capped(client, lanes, rate, duration, MAX_IN_FLIGHT).await
}

/// [`open_loop_lanes`] with its own cap on each lane's requests in flight (beyond it a
/// request is given up on, not sent): a lane whose answers come in a fraction of a
/// millisecond is saturated long before thousands are in flight, and its server's
/// connection limit must not turn that into failed calls.
pub async fn open_loop_lanes_capped(
    client: &reqwest::Client,
    lanes: &[&[Call]],
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> Vec<Latency> {
    if lanes.iter().any(|calls| calls.is_empty()) {
        return vec![Latency::default(); lanes.len()];
    }
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now() + Duration::from_millis(20);
    // Each lane has its own in-flight budget: a saturated proxy must not starve the
    // direct baseline beside it.
    let budgets: Vec<Arc<AtomicUsize>> = lanes.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Result<Duration, String>)>();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        for (lane, calls) in lanes.iter().enumerate() {
            let in_flight = &budgets[lane];
            if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                let _ = tx.send((lane, Err(format!("{OVERLOADED}too many requests in flight"))));
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let call = calls[(i % calls.len() as u64) as usize].clone();
            let (client, tx, in_flight) = (client.clone(), tx.clone(), in_flight.clone());
            tokio::spawn(async move {
                let result = call.send(&client).await.map(|()| due.elapsed());
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send((lane, result));
            });
        }
    }
    drop(tx);
    let mut samples: Vec<Samples> = lanes.iter().map(|_| Samples::default()).collect();
    while let Some((lane, result)) = rx.recv().await {
        samples[lane].record(result);
    }
    samples.into_iter().map(Samples::summary).collect()
}

/// Closed loop: `concurrency` callers, each sending its next request as soon as the
/// last one is answered, for `duration`.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub requests_per_second: f64,
    pub latency: Latency,
}

pub async fn closed_loop(client: &reqwest::Client, call: &Call, concurrency: usize, duration: Duration) -> Throughput {
    closed_loop_over(client, std::slice::from_ref(call), concurrency, duration).await
}

/// A closed loop whose callers take turns over `calls` (caller `w`'s `k`-th request is
/// `calls[(w + k * concurrency) % calls.len()]`): the same load spread over many callers'
/// credentials.
pub async fn closed_loop_over(
    client: &reqwest::Client,
    calls: &[Call],
    concurrency: usize,
    duration: Duration,
) -> Throughput {
    let started = Instant::now();
    let deadline = started + duration;
    let calls: Arc<Vec<Call>> = Arc::new(calls.to_vec());
    let per_worker = workers(concurrency, |w| {
        let (client, calls) = (client.clone(), calls.clone());
        async move {
            let mut samples = Samples::default();
            let mut next = w;
            while Instant::now() < deadline && !calls.is_empty() {
                let call = &calls[next % calls.len()];
                next += concurrency;
                let t = Instant::now();
                samples.record(call.send(&client).await.map(|()| t.elapsed()));
            }
            samples
        }
    })
    .await;
    let mut samples = Samples::default();
    for s in per_worker {
        samples.merge(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let latency = samples.summary();
    Throughput { concurrency, requests_per_second: latency.ok as f64 / elapsed, latency }
}

/// Streams held open concurrently: time to first chunk and the gaps between chunks.
#[derive(Debug, Clone, Serialize)]
pub struct Streaming {
    pub concurrency: usize,
    pub streams: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub time_to_first_chunk: Latency,
    pub chunk_gap: Latency,
}

/// `concurrency` callers each opening streams back to back for `duration`; their starts
/// are spread over `spread` so the streams overlap evenly.
pub async fn streams(
    client: &reqwest::Client,
    call: &Call,
    concurrency: usize,
    duration: Duration,
    spread: Duration,
) -> Streaming {
    let deadline = Instant::now() + duration;
    let per_worker = workers(concurrency, |i| {
        let (client, call) = (client.clone(), call.clone());
        let offset = spread.mul_f64(i as f64 / concurrency.max(1) as f64);
        async move {
            tokio::time::sleep(offset).await;
            let (mut first, mut gaps) = (Samples::default(), Samples::default());
            while Instant::now() < deadline {
                match one_stream(&client, &call).await {
                    Ok((ttfc, g)) => {
                        first.record(Ok(ttfc));
                        for gap in g {
                            gaps.record(Ok(gap));
                        }
                    }
                    Err(e) => first.record(Err(e)),
                }
            }
            (first, gaps)
        }
    })
    .await;
    let (mut first, mut gaps) = (Samples::default(), Samples::default());
    for (f, g) in per_worker {
        first.merge(f);
        gaps.merge(g);
    }
    let time_to_first_chunk = first.summary();
    Streaming {
        concurrency,
        streams: time_to_first_chunk.ok,
        errors: time_to_first_chunk.errors,
        first_error: time_to_first_chunk.first_error.clone(),
        time_to_first_chunk,
        chunk_gap: gaps.summary(),
    }
}

async fn one_stream(client: &reqwest::Client, call: &Call) -> Result<(Duration, Vec<Duration>), String> {
    let started = Instant::now();
    let response = call.request(client).send().await.map_err(failure)?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut last = started;
    let mut gaps = Vec::new();
    while let Some(chunk) = body.next().await {
        chunk.map_err(failure)?;
        let now = Instant::now();
        match first {
            None => first = Some(now - started),
            Some(_) => gaps.push(now - last),
        }
        last = now;
    }
    first.map(|f| (f, gaps)).ok_or_else(|| "the stream ended without a chunk".to_owned())
}

/// Requests with made-up tokens, as fast as they are answered.
#[derive(Debug, Clone, Serialize)]
pub struct Flood {
    pub sent: u64,
    pub rejected: u64,
    /// Answers other than 401, by status (0: no answer at all).
    pub other: u64,
    pub other_statuses: BTreeMap<u16, u64>,
    pub rejections_per_second: f64,
}

pub async fn flood(client: &reqwest::Client, call: &Call, concurrency: usize, duration: Duration) -> Flood {
    let started = Instant::now();
    let deadline = started + duration;
    // Answers by status (0: none at all), per worker.
    let per_worker = workers(concurrency, |_| {
        let (client, call) = (client.clone(), call.clone());
        async move {
            let mut statuses = BTreeMap::<u16, u64>::new();
            while Instant::now() < deadline {
                let forged = Call {
                    bearer: format!(
                        "kg_{}_{}",
                        keygate_vault::random_alphanumeric(16),
                        keygate_vault::random_alphanumeric(40)
                    ),
                    ..call.clone()
                };
                let status = match forged.request(&client).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        }
    })
    .await;
    let mut other_statuses = BTreeMap::<u16, u64>::new();
    for (status, n) in per_worker.into_iter().flatten() {
        *other_statuses.entry(status).or_default() += n;
    }
    let rejected = other_statuses.remove(&401).unwrap_or(0);
    let other = other_statuses.values().sum::<u64>();
    Flood {
        sent: rejected + other,
        rejected,
        other,
        other_statuses,
        rejections_per_second: rejected as f64 / started.elapsed().as_secs_f64(),
    }
}

/// Runs `concurrency` workers side by side until all are done; answers what each returned.
async fn workers<T, Fut>(concurrency: usize, worker: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..concurrency).map(|i| tokio::spawn(worker(i))).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(value) = handle.await {
            out.push(value);
        }
    }
    out
}
