//! `worker:queue`: join (capacity and queues), `claim`, `work-available`.

use gabbro_model::QueuePreference;
use gabbro_protocol::queue::{QUEUE_TOPIC, WORK_AVAILABLE};
use gabbro_protocol::{Claim, ClaimReply, ClaimedRun, Frame, QueueJoin, RunClaims, RunTokenAlg};
use gabbro_store::ClaimRequest;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connection::Peer;
use super::replies::{payload_error, store_error};
use super::wake;

/// A `worker:queue` join that was accepted.
pub(crate) struct Joined {
    /// Answers the join, then pushes `work-available` until aborted.
    pub task: JoinHandle<()>,
    /// The join's `active_runs`, when it carried the field (gabbro's
    /// worker; OpenFn's never sends it).
    pub listed: Option<Vec<String>>,
    /// Bumped on every claim the worker sends: it answers the last push.
    pub claims: watch::Sender<u64>,
    /// How this worker's run tokens are signed (`run_token_alg`).
    pub token_alg: RunTokenAlg,
}

/// Accepts the join and starts this connection's `work-available` pushes.
/// `joined` are the runs whose channels this connection has joined. `None`
/// if the join was refused (answered here).
pub(crate) fn join(peer: &Peer, frame: Frame, joined: Vec<String>) -> Option<Joined> {
    let join = match serde_json::from_value::<QueueJoin>(frame.payload.clone()) {
        Ok(j) => j,
        Err(e) => {
            let e = gabbro_protocol::MessageError::Payload {
                event: frame.event.clone(),
                source: e,
            };
            peer.out.error(&frame, payload_error(&e));
            return None;
        }
    };
    let listed = join.active_runs;
    let token_alg = RunTokenAlg::requested(join.run_token_alg.as_deref());
    let (peer, rx) = (peer.clone(), peer.ctx.wake.subscribe());
    let (claims, claims_rx) = watch::channel(0u64);
    let reconcile = listed.clone();
    let task = tokio::spawn(async move {
        if let Some(listed) = reconcile {
            settle_held_runs(&peer, listed, joined).await;
        }
        // Answered only now: a claim the worker sends after the answer
        // cannot be requeued by the reconciliation above.
        peer.out.ok(&frame, json!({}));
        let (out, join_ref) = (peer.out.clone(), frame.join_ref.clone());
        let window = peer.ctx.settings.wake_window;
        wake::coalesce(rx, claims_rx, window, move || {
            out.send(&Frame::push(
                join_ref.clone(),
                QUEUE_TOPIC,
                WORK_AVAILABLE,
                json!({}),
            ))
        })
        .await
    });
    Some(Joined {
        task,
        listed,
        claims,
        token_alg,
    })
}

/// A (re)joining gabbro worker listed the runs it holds: renew their
/// leases at once (before any janitor sweep), and put back to `available`
/// the runs its worker id holds in `claimed` that it neither lists nor has
/// joined here — their claim reply never reached it.
async fn settle_held_runs(peer: &Peer, listed: Vec<String>, joined: Vec<String>) {
    let ctx = &peer.ctx;
    let mut held = listed;
    held.extend(joined);
    held.sort();
    held.dedup();
    match ctx
        .store
        .requeue_unheld_claims(&peer.worker_id, held.clone())
        .await
    {
        Ok(moved) if !moved.is_empty() => {
            tracing::info!(worker_id = %peer.worker_id, runs = ?moved, "claimed runs the rejoining worker does not hold: back to available");
            ctx.wake.notify();
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot requeue claims the rejoining worker does not hold")
        }
    }
    if let Err(e) = ctx.store.heartbeat(&peer.worker_id, held).await {
        tracing::warn!(error = %e, "cannot renew leases on rejoin");
    }
}

/// Claims in its own task (claims may overlap; none waits for another);
/// the runs' tokens are signed as the worker's join asked.
pub(crate) fn claim(peer: Peer, frame: Frame, token_alg: RunTokenAlg) {
    tokio::spawn(async move {
        let claim: Claim = match serde_json::from_value(frame.payload.clone()) {
            Ok(c) => c,
            Err(e) => {
                let e = gabbro_protocol::MessageError::Payload {
                    event: frame.event.clone(),
                    source: e,
                };
                peer.out.error(&frame, payload_error(&e));
                return;
            }
        };
        let queues = if claim.queues.is_empty() {
            QueuePreference::default()
        } else {
            QueuePreference::new(claim.queues.iter().cloned())
        };
        let req = ClaimRequest {
            demand: claim.demand as usize,
            queues,
            worker_name: claim.worker_name.clone(),
            worker_id: peer.worker_id.clone(),
        };
        let ctx = &peer.ctx;
        let started = std::time::Instant::now();
        let claimed = match ctx.store.claim(req).await {
            Ok(c) => c,
            Err(e) => {
                peer.out.error(&frame, store_error(&e));
                return;
            }
        };
        let mut runs = Vec::with_capacity(claimed.len());
        for run in &claimed {
            let options = gabbro_model::RunOptions::from_json(&run.options);
            let timeout_s = options.run_timeout_ms.unwrap_or(300_000).div_ceil(1000);
            let mut claims = RunClaims::new(&run.id, timeout_s + ctx.settings.run_grace.as_secs());
            claims.worker_id = Some(peer.worker_id.clone());
            claims.epoch = u64::try_from(run.claim_epoch).ok();
            match ctx.signer.sign_as(&claims, token_alg) {
                Ok(token) => runs.push(ClaimedRun {
                    id: run.id.clone(),
                    token,
                }),
                Err(e) => tracing::error!(error = %e, "cannot sign a run token"),
            }
        }
        ctx.metrics.claim_latency.observe(started.elapsed());
        // Lightning's rollback_claimed_runs: a reply that cannot reach its
        // worker must not strand the runs in `claimed`.
        let delivered = !peer.out.is_closed()
            && runs.len() == claimed.len()
            && peer.out.ok(&frame, json!(ClaimReply { runs }));
        if !delivered && !claimed.is_empty() {
            let back = claimed
                .iter()
                .map(|r| (r.id.clone(), r.claim_epoch))
                .collect();
            match ctx.store.release_claims(back).await {
                Ok(n) if n > 0 => ctx.wake.notify(),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot release undelivered claims"),
            }
        }
    });
}
