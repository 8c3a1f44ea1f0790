//! Usage events are written off the hot path: calls hand them to [`UsageRecorder`],
//! a background task writes them in batches (every 200 ms or 256 events), and
//! [`UsageRecorder::flush`] waits until everything handed over is stored (graceful
//! shutdown, tests).

use keygate_core::UsageEvent;
use keygate_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const BATCH: usize = 256;
const INTERVAL: Duration = Duration::from_millis(200);

enum Message {
    Event(Box<UsageEvent>),
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
            let mut batch: Vec<UsageEvent> = Vec::with_capacity(BATCH);
            loop {
                let message = if batch.is_empty() {
                    rx.recv().await
                } else {
                    match tokio::time::timeout(INTERVAL, rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            write(&*store, &mut batch).await;
                            continue;
                        }
                    }
                };
                match message {
                    Some(Message::Event(event)) => {
                        batch.push(*event);
                        if batch.len() >= BATCH {
                            write(&*store, &mut batch).await;
                        }
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

    /// Waits until every event handed over so far is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write(store: &dyn Store, batch: &mut Vec<UsageEvent>) {
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
