//! The embedded worker: `gabbro serve` runs `gabbro worker` in-process
//! (`--worker-capacity N`, default 10; 0 runs none), talking to its own
//! `/worker` endpoint over loopback exactly like any other worker, with its
//! journal in `<data-dir>/worker-journal`. Its runs execute in child
//! processes of the `gabbro` executable, as a standalone worker's do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::task::JoinHandle;

use crate::config::Config;

/// Starts the embedded worker against the server listening on `addr`;
/// `None` when the capacity is 0.
pub fn start(config: &Config, addr: SocketAddr) -> Option<JoinHandle<()>> {
    if config.worker_capacity == 0 {
        return None;
    }
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("ws://{}/worker", SocketAddr::new(ip, addr.port()));
    let args = gabbro_worker::WorkerArgs {
        lightning: Some(url),
        secret: Some(config.worker_secret.clone()),
        capacity: Some(config.worker_capacity),
        journal_dir: Some(config.data_dir.join("worker-journal")),
        worker_name: Some("embedded".to_string()),
        // No health port of its own: `gabbro serve` has /health.
        port: Some(0),
        ..Default::default()
    };
    Some(tokio::spawn(async move {
        match gabbro_worker::run(args).await {
            Ok(code) => tracing::info!(code, "embedded worker stopped"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "embedded worker failed"),
        }
    }))
}
