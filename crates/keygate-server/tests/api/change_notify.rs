//! Change propagation between replicas on PostgreSQL by `LISTEN/NOTIFY` alone: the
//! replica's change poll is set to an hour, so only a notification can make it see a key
//! deleted, a token revoked or a workspace paused through the other process. The same
//! trials, timed, are `cargo run -p keygate-server --example change_propagation`
//! (BENCHMARKS.md).

use crate::support::{Caller, Harness};
use keygate_server::AppState;
use keygate_store::testdb::TestDb;
use serde_json::json;
use std::time::{Duration, Instant};

/// How long a trial may wait for the replica to refuse: generous for a loaded test
/// machine, far below the poll (an hour here), so only a notification gets there.
pub const DEADLINE: Duration = Duration::from_secs(1);

/// What one trial changes through the first process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    KeyDeleted,
    TokenRevoked,
    WorkspacePaused,
}

impl Change {
    pub const ALL: [Change; 3] = [Self::KeyDeleted, Self::TokenRevoked, Self::WorkspacePaused];
}

/// Two processes on one PostgreSQL database; the replica watches with an hour's poll.
pub struct Pair {
    pub h: Harness,
    pub replica: AppState,
    pub root: Caller,
    pub user: Caller,
    _watch: tokio::task::JoinHandle<()>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self._watch.abort();
    }
}

impl Pair {
    /// Sets the pair up and waits until the replica's listener hears changes.
    pub async fn new(db: TestDb) -> Self {
        let h = Harness::new(db).await;
        let replica = h.replica().await;
        let watch = replica.services.watch_changes(Duration::from_secs(3600));
        let root = h.super_admin("root@example.com").await;
        let user = h.user("notify@example.com").await;
        // The listener subscribes in the background and then looks once: a policy change
        // made now reaches the replica either way, and once it has, every later change is
        // heard.
        h.policy(|p| p.demo.tokens_per_day = 4321).await;
        let seen = wait_until(|| async { replica.services.policy().demo.tokens_per_day == 4321 }).await;
        assert!(seen.is_some(), "the replica's listener never started");
        Self { h, replica, root, user, _watch: watch }
    }

    /// Makes `change` through the first process once the replica serves the caller from
    /// its cache, and answers how long after the change's answer the replica refused;
    /// `None` if it still served after [`DEADLINE`]. Undoes what it can afterwards.
    pub async fn trial(&self, change: Change) -> Option<Duration> {
        let (h, user) = (&self.h, &self.user);
        match change {
            Change::KeyDeleted => {
                let id = h.add_key(user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
                self.served(&user.token).await;
                assert_eq!(h.delete(&format!("/api/v1/keys/{id}"), &user.token).await.status, 204);
                let at = Instant::now();
                let refused = wait_until(|| async { self.chat(&user.token).await.code() == "no_credential" }).await;
                refused.map(|_| at.elapsed())
            }
            Change::TokenRevoked => {
                let id = h.add_key(user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
                let created = h.post("/api/v1/tokens", &user.token, json!({"name": "revoked soon"})).await;
                assert_eq!(created.status, 201, "{}", created.text);
                let (token_id, token) = (
                    created.json["id"].as_str().unwrap().to_owned(),
                    created.json["token"].as_str().unwrap().to_owned(),
                );
                h.canary(&token);
                self.served(&token).await;
                assert_eq!(h.delete(&format!("/api/v1/tokens/{token_id}"), &user.token).await.status, 204);
                let at = Instant::now();
                let refused = wait_until(|| async { self.chat(&token).await.status == 401 }).await;
                let took = refused.map(|_| at.elapsed());
                assert_eq!(h.delete(&format!("/api/v1/keys/{id}"), &user.token).await.status, 204);
                took
            }
            Change::WorkspacePaused => {
                let id = h.add_key(user, json!({"provider": "openai", "secret": h.valid_key("sk-proj-")})).await;
                self.served(&user.token).await;
                let path = format!("/api/v1/admin/workspaces/{}", user.workspace);
                assert_eq!(h.patch(&path, &self.root.token, json!({"status": "paused"})).await.status, 200);
                let at = Instant::now();
                let refused =
                    wait_until(|| async { self.chat(&user.token).await.code() == "workspace_inactive" }).await;
                let took = refused.map(|_| at.elapsed());
                assert_eq!(h.patch(&path, &self.root.token, json!({"status": "active"})).await.status, 200);
                self.served(&user.token).await;
                assert_eq!(h.delete(&format!("/api/v1/keys/{id}"), &user.token).await.status, 204);
                took
            }
        }
    }

    async fn chat(&self, token: &str) -> crate::support::Reply {
        self.h.chat_via(&self.replica, token).await
    }

    /// Waits until the replica serves `token` (the change before may still be on its way).
    async fn served(&self, token: &str) {
        let served = wait_until(|| async { self.chat(token).await.status == 200 }).await;
        assert!(served.is_some(), "the replica never served the caller");
    }
}

/// Checks `condition` until it holds (answering when) or [`DEADLINE`] passes.
pub async fn wait_until<F: std::future::Future<Output = bool>>(mut condition: impl FnMut() -> F) -> Option<Instant> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A key deleted, a token revoked, a workspace paused through one replica: the other stops
/// serving with it by notification alone (its poll would take an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_other_replica_by_notification_without_a_poll() {
    let Some(db) = TestDb::postgres().await else { return };
    let pair = Pair::new(db).await;
    for round in 0..3 {
        for change in Change::ALL {
            let took = pair.trial(change).await;
            assert!(took.is_some(), "round {round}: {change:?} did not reach the replica within {DEADLINE:?}");
        }
    }
    pair.h.flush().await;
}

/// SQLite has no notifications: the watcher polls, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_store_offers_no_notifications() {
    let db = TestDb::sqlite();
    let store = keygate_store::connect(&db.location).await.unwrap();
    assert!(store.change_notifications().is_none());
}
