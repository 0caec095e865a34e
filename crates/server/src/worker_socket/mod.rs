//! `/worker`: the orchestrator's side of Lightning's worker protocol
//! (reference/openfn-lightning.md §4), over Phoenix Channels V2 frames.
//!
//! - [`keys`]: the RSA key that signs run tokens (data dir or env).
//! - [`wake`]: `work-available` pushes (leading edge, then coalesced).
//! - `connection`: one socket — auth, heartbeats, routing frames to topics.
//! - `queue_channel`: `worker:queue` join and `claim`.
//! - `run_channel`: one `run:<id>` channel — join with the run token, then
//!   its events in order.
//! - `plan`, `run_data`, `scrub`: what a run channel reads (plan, input
//!   dataclip, credentials) and how its logs are scrubbed; every write goes
//!   through the store's run ledger (`gabbro_store::ledger`).
//!
//! Mount with [`WorkerSocket::routes`] (answers on `/worker` and
//! `/worker/websocket`); tell it about new runs with
//! [`WorkerSocket::wake_hub`]`.notify()` (SQLite) or let
//! [`WorkerSocket::listen_postgres`] hear the store's `NOTIFY`s.

mod connection;
pub mod embedded;
pub mod keys;
mod plan;
mod queue_channel;
mod replies;
mod run_channel;
mod run_data;
mod scrub;
pub mod wake;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gabbro_protocol::{RunSigner, RunVerifier, WorkerToken};
use gabbro_store::{Store, Vault};

pub use wake::WakeHub;

/// Lightning's websocket frame limit (`max_frame_size: 11_000_000`).
pub const MAX_FRAME_BYTES: usize = 11_000_000;

/// Tunables of the worker socket.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// Shared secret of worker tokens (HS256).
    pub worker_secret: String,
    /// Added to a run's timeout for its token's `exp`
    /// (Lightning's `RUN_GRACE_PERIOD_SECONDS`, default 10).
    pub run_grace: Duration,
    /// After a `work-available` push the worker has not answered with a
    /// claim, the longest the next one waits.
    pub wake_window: Duration,
    /// How often a connection's liveness refreshes `last_heard_at` of the
    /// runs its worker holds (at most; heartbeats drive it).
    pub lease_touch_every: Duration,
}

impl SocketSettings {
    /// Defaults for everything but the secret.
    pub fn new(worker_secret: impl Into<String>) -> SocketSettings {
        SocketSettings {
            worker_secret: worker_secret.into(),
            run_grace: Duration::from_secs(10),
            wake_window: Duration::from_millis(200),
            lease_touch_every: Duration::from_secs(5),
        }
    }
}

/// The worker socket's shared state; cheap to clone.
#[derive(Clone)]
pub struct WorkerSocket {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub vault: Vault,
    pub signer: RunSigner,
    pub verifier: RunVerifier,
    pub wake: WakeHub,
    pub settings: SocketSettings,
    /// Claim latency and finished runs, shown on `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Connected workers, for the queue dashboard.
    pub workers: Arc<crate::workers::ConnectedWorkers>,
    /// Parsed workflow snapshots, by id (they never change).
    pub snapshots: run_data::SnapshotCache,
}

impl WorkerSocket {
    /// A worker socket over `store`, decrypting credentials with `vault` and
    /// signing run tokens with `signer`.
    pub fn new(
        store: Store,
        vault: Vault,
        signer: RunSigner,
        settings: SocketSettings,
    ) -> anyhow::Result<WorkerSocket> {
        Self::with_metrics(store, vault, signer, settings, Arc::default())
    }

    /// [`WorkerSocket::new`] reporting into the server's metrics.
    pub fn with_metrics(
        store: Store,
        vault: Vault,
        signer: RunSigner,
        settings: SocketSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<WorkerSocket> {
        Self::with_parts(store, vault, signer, settings, metrics, Arc::default())
    }

    /// [`WorkerSocket::with_metrics`] recording connected workers in
    /// `workers` (the server's list, shown on the queue dashboard).
    pub fn with_parts(
        store: Store,
        vault: Vault,
        signer: RunSigner,
        settings: SocketSettings,
        metrics: Arc<crate::metrics::Metrics>,
        workers: Arc<crate::workers::ConnectedWorkers>,
    ) -> anyhow::Result<WorkerSocket> {
        let verifier = signer.verifier()?;
        Ok(WorkerSocket {
            inner: Arc::new(Inner {
                store,
                vault,
                signer,
                verifier,
                wake: WakeHub::new(),
                settings,
                metrics,
                workers,
                snapshots: run_data::SnapshotCache::default(),
            }),
        })
    }

    /// The workers connected to this socket (capacity, open run channels).
    pub fn workers(&self) -> &Arc<crate::workers::ConnectedWorkers> {
        &self.inner.workers
    }

    /// The hub to call `notify()` on whenever runs become available.
    pub fn wake_hub(&self) -> &WakeHub {
        &self.inner.wake
    }

    /// The public key workers may verify run tokens with (SPKI PEM; OpenFn's
    /// `WORKER_LIGHTNING_PUBLIC_KEY` takes it base64-encoded).
    pub fn public_key_pem(&self) -> &str {
        self.inner.signer.public_key_pem()
    }

    /// `/worker` and `/worker/websocket`, with their own state: merge into
    /// the server's router.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/worker", get(upgrade))
            .route("/worker/websocket", get(upgrade))
            .with_state(self.clone())
    }

    /// On PostgreSQL, wake this node's workers when any node enqueues
    /// (LISTEN on the store's channel); returns at once on SQLite. Runs until
    /// the store closes; reconnects after errors.
    pub async fn listen_postgres(&self) {
        wake::listen_postgres(&self.inner.store, &self.inner.wake).await
    }
}

/// Builds the worker socket of a server: the run-token key from the data
/// dir (or env, see [`keys`]), credentials decrypted with the server's key;
/// enqueues signalled on `state.work_available` (and, on PostgreSQL, by any
/// node's `NOTIFY`) wake the connected workers.
pub fn attach(state: &crate::AppState) -> anyhow::Result<WorkerSocket> {
    use base64::Engine as _;
    let config = &state.config;
    let key = base64::engine::general_purpose::STANDARD.encode(config.encryption_key);
    let vault = Vault::new(&key)?;
    let signer = keys::load_or_generate(&config.data_dir)?;
    let socket = WorkerSocket::with_parts(
        state.store.clone(),
        vault,
        signer,
        SocketSettings::new(config.worker_secret.clone()),
        state.metrics.clone(),
        state.workers.clone(),
    )?;
    let hub = socket.wake_hub().clone();
    let notify = state.work_available.clone();
    tokio::spawn(async move {
        // Arm the next wait before waking the hub, so no notification
        // falls between two waits.
        let mut next = Box::pin(notify.notified());
        next.as_mut().enable();
        loop {
            next.as_mut().await;
            next = Box::pin(notify.notified());
            next.as_mut().enable();
            hub.notify();
        }
    });
    let listener = socket.clone();
    tokio::spawn(async move { listener.listen_postgres().await });
    Ok(socket)
}

async fn upgrade(
    State(socket): State<WorkerSocket>,
    Query(params): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(token) = params.get("token") else {
        return (StatusCode::UNAUTHORIZED, "missing worker token").into_response();
    };
    let claims = match WorkerToken::verify(token, &socket.inner.settings.worker_secret) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "worker socket refused");
            return (StatusCode::UNAUTHORIZED, "invalid worker token").into_response();
        }
    };
    let inner = socket.inner.clone();
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |ws| connection::serve(inner, claims, ws))
}
