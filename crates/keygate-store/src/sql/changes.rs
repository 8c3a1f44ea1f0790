//! Change notifications on PostgreSQL: every change-epoch bump also runs `NOTIFY
//! keygate_changes, '<epoch>'` (in the bump's own statement, so it is heard exactly when
//! the bump commits), and each process listens on one dedicated connection. A lost
//! connection is reopened with a growing pause (100 ms to 5 s) and announced as
//! [`ChangeNotice::Resync`], because notices sent while it was down are gone; the
//! service's change poll stays the safety net either way.
//!
//! SQLite has no such thing (one process; the poll suffices): no feed.

use super::{PerBackend, Pool};
use crate::{ChangeFeed, ChangeNotice};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;

/// The PostgreSQL notification channel.
pub(crate) const CHANNEL: &str = "keygate_changes";

/// Moves the epoch on and announces the new value on [`CHANNEL`], in one statement.
pub(super) const BUMP_AND_NOTIFY: &str = "WITH bumped AS \
     (UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch) \
     SELECT bumped.epoch FROM bumped, LATERAL (SELECT pg_notify('keygate_changes', bumped.epoch::text)) AS notified";

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// Notices waiting to be read; when full, a notice is dropped (one still waiting means a
/// poll will run anyway).
const BACKLOG: usize = 64;

impl Pool<'_> {
    pub(super) fn change_notifications(self) -> Option<ChangeFeed> {
        let PerBackend::Postgres(pool) = self else { return None };
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(listen(pool.clone(), tx));
        Some(rx)
    }
}

/// Hands each notice to `tx` until its receiver is dropped or the pool closes.
async fn listen(pool: PgPool, tx: mpsc::Sender<ChangeNotice>) {
    let mut pause = FIRST_PAUSE;
    let mut lost = false;
    loop {
        let subscribed = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            subscribed = subscribed => match subscribed {
                Ok(listener) => listener,
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "could not listen for changes; the change poll covers the gap");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = tx.closed() => return,
                    }
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        if lost {
            tracing::info!("listening for changes again");
        }
        pause = FIRST_PAUSE;
        // From here on every change is heard: look once for what came before.
        if !hand_over(&tx, ChangeNotice::Resync) {
            return;
        }
        loop {
            let next = tokio::select! {
                next = listener.try_recv() => next,
                () = tx.closed() => return,
            };
            let notice = match next {
                Ok(Some(n)) => n.payload().parse().map_or(ChangeNotice::Resync, ChangeNotice::Epoch),
                // sqlx has already reconnected and listens again.
                Ok(None) => {
                    tracing::warn!(
                        "the change listener's connection dropped and was reopened; notices meanwhile are looked up"
                    );
                    ChangeNotice::Resync
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the change listener's connection failed; reconnecting");
                    lost = true;
                    break;
                }
            };
            if !hand_over(&tx, notice) {
                return;
            }
        }
    }
}

/// Passes a notice on without waiting; false once nobody listens any more.
fn hand_over(tx: &mpsc::Sender<ChangeNotice>, notice: ChangeNotice) -> bool {
    !matches!(tx.try_send(notice), Err(mpsc::error::TrySendError::Closed(_)))
}
