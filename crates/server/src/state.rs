//! What every handler shares.

use std::sync::Arc;

use gabbro_store::Store;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::metrics::Metrics;

/// The server's shared state; cheap to clone. Other parts of the server (the
/// worker socket, the UI) take what they need from it.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Bytes of webhook bodies that may be held in memory at once (one
    /// permit per KiB). A request that cannot get its share at once is
    /// answered 503 + Retry-After rather than queued: memory stays bounded.
    pub webhook_memory: Arc<Semaphore>,
    /// Notified whenever runs are enqueued on this node (webhooks, cron), so
    /// the worker socket can push `work-available` at once.
    pub work_available: Arc<Notify>,
    /// Workers connected to this node (the queue dashboard lists them).
    pub workers: Arc<crate::workers::ConnectedWorkers>,
}

impl AppState {
    pub fn new(store: Store, config: Config) -> Self {
        let kib = (config.webhook_memory_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            webhook_memory: Arc::new(Semaphore::new(kib)),
            work_available: Arc::new(Notify::new()),
            workers: Arc::default(),
        }
    }
}
