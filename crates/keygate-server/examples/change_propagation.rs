//! How long a change made through one replica takes to stop the other serving with it,
//! on PostgreSQL by `LISTEN/NOTIFY` alone (the watcher's poll is set to an hour): the
//! trials of the API test `change_notify`, timed. Run with PostgreSQL at
//! `KEYGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`):
//!
//! ```text
//! cargo run --release -p keygate-server --example change_propagation -- 50
//! ```
//!
//! Each trial's time runs from the change's answer (the write committed) to the first
//! call the replica refuses; the replica is asked every millisecond.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, dead_code)]

#[path = "../tests/api/support.rs"]
mod support;

#[path = "../tests/api/change_notify.rs"]
mod change_notify;

use change_notify::{Change, Pair};
use keygate_store::testdb::TestDb;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::args().nth(1).map_or(50, |n| n.parse().expect("a number of trials"));
    let db = TestDb::postgres().await.expect("PostgreSQL for the benchmark");
    let pair = Pair::new(db).await;
    let mut all = Vec::new();
    for change in Change::ALL {
        let mut took = Vec::with_capacity(trials);
        for _ in 0..trials {
            took.push(pair.trial(change).await.expect("the change reached the replica within the deadline"));
        }
        report(&format!("{change:?}"), &mut took);
        all.extend(took);
    }
    report("all", &mut all);
    pair.h.flush().await;
}

fn report(what: &str, took: &mut [Duration]) {
    took.sort();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
        took[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what:>16}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        took.len(),
        at(0.50),
        at(0.99),
        took.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
}
