//! The orchestrator (`gabbro serve`): HTTP API, webhooks, provisioning, cron.
//!
//! - [`config`] — flags, data directory, generated secrets;
//! - [`bootstrap`] — the first admin and its token;
//! - [`routes`] — the router ([`router`]) and its one list of routes;
//! - [`webhook`] and [`ingest`] — `POST /i/<id>`;
//! - [`provision`] — `/api/provision`;
//! - [`api`] — the read API, described by [`openapi`];
//! - [`cron`] — the scheduler loop; [`janitor`] — the lease janitor loop;
//!   [`metrics`] — `/metrics`.
//!
//! Other parts (worker socket, embedded worker, UI) add their routes with
//! [`routes::api_router`]`().merge(theirs).with_state(state)` and start
//! their tasks from [`serve`].

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod cron;
pub mod error;
pub mod ingest;
pub mod janitor;
pub mod metrics;
pub mod openapi;
pub mod provision;
pub mod routes;
pub mod state;
pub mod vault;
pub mod webhook;
pub mod worker_socket;
pub mod workers;

pub use config::{Config, ServeArgs};
pub use routes::router;
pub use state::AppState;

use anyhow::Context;
use axum::serve::ListenerExt as _;
use gabbro_store::Store;

/// Everything started and ready to accept connections.
pub struct Server {
    pub state: AppState,
    pub listener: tokio::net::TcpListener,
}

/// Open the database (migrations), create the first admin, bind the socket.
/// When this returns, `admin.token` and `admin.password` exist.
pub async fn prepare(args: &ServeArgs) -> anyhow::Result<Server> {
    let config = Config::resolve(args)?;
    let store = Store::connect(&config.db_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&config.db_url)))?;
    tracing::info!(db = %redact(&config.db_url), backend = ?store.backend(), "database ready (migrations applied)");
    bootstrap::ensure_admin(&store, &config.data_dir).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    Ok(Server {
        state: AppState::new(store, config),
        listener,
    })
}

/// Serve until `shutdown` resolves; then stop accepting, finish the
/// requests in flight and close the database.
pub async fn run(
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Server { state, listener } = server;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cron_task = if state.config.cron {
        Some(tokio::spawn(cron::run(state.clone(), stop_rx.clone())))
    } else {
        None
    };
    let worker_socket = worker_socket::attach(&state)?;
    let janitor_task = tokio::spawn(janitor::run(
        state.clone(),
        state.config.janitor,
        stop_rx.clone(),
    ));
    let app = router(state.clone()).merge(worker_socket.routes());
    let addr = listener.local_addr()?;
    let _embedded_worker = worker_socket::embedded::start(&state.config, addr);
    tracing::info!(%addr, worker_capacity = state.config.worker_capacity, "gabbro serve listening");
    // Nagle off: worker frames and API replies are small; with Nagle a
    // pipelined frame waits for the peer's delayed ACK (~40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
    let _ = stop_tx.send(true);
    if let Some(t) = cron_task {
        let _ = t.await;
    }
    let _ = janitor_task.await;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `gabbro serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    init_logging(args.log_json);
    let server = prepare(&args).await?;
    run(server, shutdown_signal()).await?;
    Ok(0)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
