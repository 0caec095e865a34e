//! The worker process: shared state, the claim loop on `worker:queue`, and
//! orderly shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gabbro_protocol::queue::{CLAIM, QUEUE_TOPIC, WORK_AVAILABLE};
use gabbro_protocol::{Claim, ClaimReply, LightningPlan, QueueJoin, RunTokenAlg, describe_error};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use crate::backoff::{Backoff, BackoffRange};
use crate::capacity::Capacity;
use crate::journal::Journal;
use crate::plan::{DefaultLimits, adaptor_versions};
use crate::pool::Pool;
use crate::socket::{JoinError, RequestError, Socket};

/// Settled configuration (flags and environment resolved).
#[derive(Clone, Debug)]
pub struct Config {
    pub worker_id: String,
    pub worker_name: Option<String>,
    pub capacity: u32,
    pub backoff: BackoffRange,
    pub message_timeout: Duration,
    pub claim_timeout: Duration,
    pub limits: DefaultLimits,
    /// Time past a run's timeout before the pool kills its child.
    pub kill_grace: Duration,
}

/// What every task of the worker shares.
pub struct Shared {
    pub config: Config,
    pub socket: Socket,
    pub pool: Pool,
    pub journal: Arc<Journal>,
    /// Checks run tokens when `--lightning-public-key` is given.
    pub verifier: Option<gabbro_protocol::RunVerifier>,
    active: std::sync::Mutex<BTreeSet<String>>,
}

impl Shared {
    pub fn new(config: Config, socket: Socket, pool: Pool, journal: Arc<Journal>) -> Shared {
        Shared {
            config,
            socket,
            pool,
            journal,
            verifier: None,
            active: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    pub fn run_started(&self, id: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.insert(id.to_string());
        }
    }

    pub fn run_finished(&self, id: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(id);
        }
    }

    pub fn active_runs(&self) -> Vec<String> {
        self.active
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `run:start`'s `versions`.
    pub fn versions(&self, plan: &LightningPlan) -> Map<String, Value> {
        let v = env!("CARGO_PKG_VERSION");
        let mut m = Map::new();
        m.insert("worker".into(), json!(format!("gabbro {v}")));
        m.insert("engine".into(), json!(format!("gabbro {v}")));
        m.insert("compiler".into(), json!(format!("gabbro {v}")));
        m.insert("runtime".into(), json!(format!("gabbro {v}")));
        m.extend(adaptor_versions(plan));
        m
    }
}

/// Forward `work-available` pushes (and the queue channel's closing) to
/// the claim loop.
pub fn watch_pushes(socket: &Socket, work: Arc<Notify>, queue_lost: Arc<Notify>) {
    let mut pushes = socket.subscribe();
    tokio::spawn(async move {
        loop {
            match pushes.recv().await {
                Ok(f) if f.topic == QUEUE_TOPIC && f.event == WORK_AVAILABLE => work.notify_one(),
                Ok(f)
                    if f.topic == QUEUE_TOPIC
                        && (f.event == gabbro_protocol::frame::PHX_CLOSE
                            || f.event == gabbro_protocol::frame::PHX_ERROR) =>
                {
                    queue_lost.notify_one()
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => work.notify_one(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Join `worker:queue` and claim runs while slots are free, until shutdown.
/// Leaves the queue on the way out.
pub async fn claim_loop(
    shared: Arc<Shared>,
    capacity: Capacity,
    mut shutdown: watch::Receiver<bool>,
) {
    let work = Arc::new(Notify::new());
    let queue_lost = Arc::new(Notify::new());
    watch_pushes(&shared.socket, work.clone(), queue_lost.clone());
    let socket = shared.socket.clone();
    let cfg = &shared.config;
    let mut backoff = Backoff::new(cfg.backoff);
    let mut channel = None;
    'connection: loop {
        if *shutdown.borrow() {
            break;
        }
        let join = QueueJoin {
            capacity: cfg.capacity,
            queues: BTreeMap::from([("manual>*".to_string(), cfg.capacity)]),
            // Always sent, even empty: the orchestrator requeues the claims
            // of this worker id that are not listed (lost claim replies).
            active_runs: Some(shared.active_runs()),
            // A worker that checks run tokens with the public key needs
            // Lightning's RS256; otherwise the cheaper HS256 will do.
            run_token_alg: shared
                .verifier
                .is_none()
                .then(|| RunTokenAlg::Hs256.name().to_string()),
        };
        let joined = tokio::select! {
            r = socket.join(QUEUE_TOPIC, serde_json::to_value(&join).unwrap_or_default(), cfg.message_timeout) => r,
            _ = shutdown.changed() => break 'connection,
        };
        let ch = match joined {
            Ok(c) => c,
            Err(JoinError::Request(RequestError::Shutdown)) => break,
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "cannot join worker:queue");
                if wait(d, &mut shutdown, &work).await {
                    break;
                }
                continue;
            }
        };
        tracing::info!(capacity = cfg.capacity, "joined worker:queue");
        channel = Some(ch.clone());
        backoff.reset();
        let mut state = socket.watch_state();
        loop {
            if *shutdown.borrow() {
                break 'connection;
            }
            // A full journal means deliveries are behind: claim nothing more.
            if shared.journal.is_full() {
                tracing::warn!(
                    used = shared.journal.used_bytes(),
                    "journal full; not claiming"
                );
                if wait(Duration::from_secs(1), &mut shutdown, &Notify::new()).await {
                    break 'connection;
                }
                continue;
            }
            // A free slot first.
            let first = tokio::select! {
                h = capacity.slot() => match h { Ok(h) => h, Err(_) => break 'connection },
                _ = shutdown.changed() => break 'connection,
                _ = queue_lost.notified() => continue 'connection,
                _ = state.changed() => continue 'connection,
            };
            let mut holds = vec![first];
            while let Some(h) = capacity.try_slot() {
                holds.push(h);
            }
            if !socket.is_current(&ch) {
                continue 'connection;
            }
            let claim = Claim {
                demand: holds.len() as u32,
                worker_name: cfg.worker_name.clone(),
                queues: vec!["manual".into(), "*".into()],
            };
            let payload = serde_json::to_value(&claim).unwrap_or_default();
            let request = socket.request(&ch, CLAIM, payload, cfg.claim_timeout);
            tokio::pin!(request);
            let result = tokio::select! {
                r = &mut request => r,
                // A claim already sent may come back with runs that are now
                // ours: wait a little for it rather than strand them.
                _ = shutdown.changed() => match tokio::time::timeout(cfg.message_timeout, &mut request).await {
                    Ok(r) => r,
                    Err(_) => break 'connection,
                },
            };
            let got_runs = match result {
                Ok(reply) if reply.is_ok() => match ClaimReply::deserialize(&reply.response_json())
                {
                    Ok(r) => {
                        let n = r.runs.len();
                        for run in r.runs {
                            if let Some(v) = &shared.verifier
                                && let Err(e) = v.verify(&run.token, Some(&run.id))
                            {
                                tracing::error!(run = %run.id, error = %e, "run token failed verification; not running it");
                                continue;
                            }
                            match holds.pop() {
                                Some(hold) => {
                                    tokio::spawn(crate::run::execute(shared.clone(), run, hold));
                                }
                                None => {
                                    tracing::error!(run = %run.id, "orchestrator returned more runs than asked for; not running this one")
                                }
                            }
                        }
                        n > 0
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable claim reply");
                        false
                    }
                },
                Ok(reply) => {
                    tracing::warn!(error = %describe_error(&reply.response_json()), "claim refused");
                    false
                }
                Err(RequestError::Disconnected) => continue 'connection,
                Err(RequestError::Shutdown) => break 'connection,
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed");
                    false
                }
            };
            drop(holds);
            if got_runs {
                backoff.reset();
                continue;
            }
            let d = backoff.next_delay();
            tokio::select! {
                stop = wait(d, &mut shutdown, &work) => if stop { break 'connection },
                _ = queue_lost.notified() => continue 'connection,
            }
        }
    }
    if let Some(ch) = channel
        && socket.is_current(&ch)
    {
        socket.leave(&ch);
    }
}

/// Sleep `d`, cut short by `work-available`; true when shutdown was asked.
async fn wait(d: Duration, shutdown: &mut watch::Receiver<bool>, work: &Notify) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = work.notified() => false,
        r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
    }
}
