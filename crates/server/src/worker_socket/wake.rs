//! `work-available`: tell idle workers at once that runs are waiting.
//!
//! Every enqueue bumps a counter in the [`WakeHub`]; each connection that
//! joined `worker:queue` watches it and pushes at once, unless its last
//! push is still unanswered by a claim (see [`coalesce`]).

use std::time::Duration;

use gabbro_store::{Db, RUN_AVAILABLE_CHANNEL, Store};
use tokio::sync::watch;

/// Fan-out of "runs became available" to every connected worker.
#[derive(Clone)]
pub struct WakeHub {
    tx: watch::Sender<u64>,
}

impl Default for WakeHub {
    fn default() -> Self {
        WakeHub::new()
    }
}

impl WakeHub {
    pub fn new() -> WakeHub {
        WakeHub {
            tx: watch::channel(0).0,
        }
    }

    /// Runs became available: wake the workers.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.tx.subscribe();
        // Only enqueues after the join count; the worker claims on join anyway.
        rx.mark_unchanged();
        rx
    }
}

/// Calls `push` when runs become available, at once unless a push is still
/// unanswered: after a push, later notifications wait until the worker
/// sends a claim (a claim that arrives after the push sees every run
/// enqueued before it, so the next enqueue deserves a new push at once) or
/// until `window` passes (a worker with no free slot does not claim). So an
/// idle worker hears of every run at once, and a burst of webhooks costs
/// one push per claim the worker makes. Returns when the hub is gone or
/// `push` says stop.
pub(crate) async fn coalesce(
    mut rx: watch::Receiver<u64>,
    mut claims: watch::Receiver<u64>,
    window: Duration,
    mut push: impl FnMut() -> bool,
) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        rx.mark_unchanged();
        claims.mark_unchanged();
        if !push() {
            return;
        }
        tokio::select! {
            r = claims.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(window) => {},
        }
    }
}

/// LISTEN on the store's channel and notify the hub (PostgreSQL only).
pub(crate) async fn listen_postgres(store: &Store, hub: &WakeHub) {
    let Db::Postgres(pool) = store.db() else {
        return;
    };
    loop {
        match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(RUN_AVAILABLE_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                } else {
                    // Anything enqueued while we were not listening.
                    hub.notify();
                    loop {
                        match listener.recv().await {
                            Ok(_) => hub.notify(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "cannot LISTEN for new runs; retrying");
            }
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
