//! Usage events are written off the hot path: calls hand them to [`UsageRecorder`],
//! a background task writes them in batches (every 200 ms or 1,024 events), together with
//! each used token's last use, and
//! [`UsageRecorder::flush`] waits until everything handed over is stored (graceful
//! shutdown, tests).

use chrono::{DateTime, NaiveDate, Utc};
use keygate_core::{TokenId, UsageEvent};
use keygate_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Events a batch holds at most before it is written, under load. Each batch is one
/// transaction, a dozen commands to SQLite's worker thread (each a wake-up of that
/// thread and of the runtime) and one commit, whose pages the WAL takes again: at 256
/// the writer's thread spent ~4.3 µs a proxied call, at 1,024 ~3.8 (BENCHMARKS.md,
/// round seven). How long an event may wait is [`INTERVAL`], whatever the load.
const BATCH: usize = 1024;
const INTERVAL: Duration = Duration::from_millis(200);

enum Message {
    Event(Box<UsageEvent>),
    /// A token was used (its `last_used_at` is written with the next batch).
    TokenUsed(TokenId, DateTime<Utc>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub struct UsageRecorder {
    tx: mpsc::UnboundedSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("usage message")
    }
}

impl UsageRecorder {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            let mut batch = Batch::default();
            // When the oldest waiting item must be written, however busy the channel is.
            let mut due = tokio::time::Instant::now();
            loop {
                let message = if batch.is_empty() {
                    let message = rx.recv().await;
                    due = tokio::time::Instant::now() + INTERVAL;
                    message
                } else {
                    match tokio::time::timeout_at(due, rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            write(&*store, &mut batch).await;
                            continue;
                        }
                    }
                };
                match message {
                    Some(Message::Event(event)) => {
                        batch.events.push(*event);
                        if batch.events.len() >= BATCH {
                            write(&*store, &mut batch).await;
                        }
                    }
                    Some(Message::TokenUsed(token, at)) => {
                        let last = batch.tokens.entry(token).or_insert(at);
                        *last = (*last).max(at);
                    }
                    Some(Message::Flush(done)) => {
                        write(&*store, &mut batch).await;
                        let _ = done.send(());
                    }
                    None => {
                        write(&*store, &mut batch).await;
                        return;
                    }
                }
            }
        });
        Self { tx }
    }

    /// Hands an event over; never waits.
    pub fn record(&self, event: UsageEvent) {
        if self.tx.send(Message::Event(Box::new(event))).is_err() {
            tracing::error!("the usage writer has stopped: a usage event was lost");
        }
    }

    /// Notes that `token` authenticated a request at `at`, without a write on the
    /// request's path.
    pub fn token_used(&self, token: TokenId, at: DateTime<Utc>) {
        let _ = self.tx.send(Message::TokenUsed(token, at));
    }

    /// Waits until every event (and token use) handed over so far is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// What waits to be written: usage events, and each used token's latest use.
#[derive(Default)]
struct Batch {
    events: Vec<UsageEvent>,
    tokens: HashMap<TokenId, DateTime<Utc>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.tokens.is_empty()
    }
}

async fn write(store: &dyn Store, batch: &mut Batch) {
    for (token, at) in batch.tokens.drain() {
        if let Err(e) = store.touch_token(token, at).await {
            tracing::warn!(error = %e, "recording a token's last use failed");
        }
    }
    let batch = &mut batch.events;
    if batch.is_empty() {
        return;
    }
    // One retry: a busy SQLite or a PostgreSQL failover should not lose usage.
    for attempt in 0..2 {
        match store.insert_usage_events(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) if attempt == 0 => {
                tracing::warn!(error = %e, events = batch.len(), "writing usage failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::error!(error = %e, events = batch.len(), "writing usage failed; these events are lost"),
        }
    }
    batch.clear();
}

/// How a usage report groups calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// UTC day, `YYYY-MM-DD`.
    Day,
    Provider,
    Model,
    Credential,
    /// The key source (`user`, `workspace`, `operator_demo`, `platform`).
    Source,
}

impl GroupBy {
    pub const ALL: [GroupBy; 5] = [Self::Day, Self::Provider, Self::Model, Self::Credential, Self::Source];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Credential => "credential",
            Self::Source => "source",
        }
    }

    /// The store's grouping for this one.
    pub(crate) const fn grouping(self) -> keygate_store::UsageGrouping {
        use keygate_store::UsageGrouping;
        match self {
            Self::Day => UsageGrouping::Day,
            Self::Provider => UsageGrouping::Provider,
            Self::Model => UsageGrouping::Model,
            Self::Credential => UsageGrouping::Credential,
            Self::Source => UsageGrouping::Source,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = crate::ServiceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|g| g.as_str() == s).ok_or(crate::ServiceError::Invalid {
            field: "group_by",
            problem: "must be day, provider, model, credential or source".into(),
        })
    }
}

/// Which of the caller's calls a usage report covers.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub provider: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl UsageQuery {
    /// The store's filter: this query, narrowed to `user`'s own calls.
    pub(crate) fn of_user(self, user: keygate_core::UserId) -> keygate_store::UsageFilter {
        keygate_store::UsageFilter {
            user_id: Some(user),
            provider: self.provider,
            since: self.since,
            until: self.until,
            ..Default::default()
        }
    }
}

/// Totals of one group (or of everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub key: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nano_usd: i64,
}

/// A caller's usage, grouped, with the grand total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub group_by: GroupBy,
    pub rows: Vec<UsageTotals>,
    pub total: UsageTotals,
}

/// One group's totals on one UTC calendar day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub totals: UsageTotals,
}

impl From<keygate_store::UsageTotals> for UsageTotals {
    fn from(t: keygate_store::UsageTotals) -> Self {
        Self {
            key: t.key,
            requests: t.requests,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            cost_nano_usd: t.cost_nano_usd,
        }
    }
}
