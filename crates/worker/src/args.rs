//! `gabbro worker`'s command line and start-up.
//!
//! Every flag has a `GABBRO_*` environment twin (read by clap) and, where
//! OpenFn's worker has one, its `WORKER_*` variable (read here), so the
//! worker drops into a Lightning deployment unchanged. Precedence: flag,
//! then `GABBRO_*`, then `WORKER_*`, then the default.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::backoff::BackoffRange;
use crate::capacity::Capacity;
use crate::plan::DefaultLimits;
use crate::pool::{ChildCommand, Pool};
use crate::socket::{Socket, SocketConfig};
use crate::worker::{Config, Shared, claim_loop};

/// The hidden `gabbro` subcommand a child process runs (the runtime's
/// child mode: `ChildRequest` lines in, `Event` lines out).
pub const CHILD_SUBCOMMAND: &str = "__child";

/// Connect to an orchestrator and execute its runs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// Orchestrator's worker socket [default: ws://localhost:4000/worker]
    /// (env WORKER_LIGHTNING_SERVICE_URL). `/websocket` is appended.
    #[arg(short = 'l', long = "lightning", env = "GABBRO_LIGHTNING")]
    pub lightning: Option<String>,
    /// Shared secret for the worker token (env WORKER_SECRET).
    #[arg(
        short = 's',
        long,
        env = "GABBRO_WORKER_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// Runs executed at once [default: 5] (env WORKER_CAPACITY).
    #[arg(long, env = "GABBRO_CAPACITY")]
    pub capacity: Option<u32>,
    /// Claim backoff `min/max` in seconds [default: 1/10] (env WORKER_BACKOFF).
    #[arg(long, env = "GABBRO_BACKOFF")]
    pub backoff: Option<String>,
    /// Memory limit per run in MB [default: 500] (env WORKER_MAX_RUN_MEMORY_MB).
    #[arg(long = "run-memory", env = "GABBRO_RUN_MEMORY")]
    pub run_memory: Option<u64>,
    /// Payload limit in MB [default: 10] (env WORKER_MAX_PAYLOAD_MB).
    #[arg(long = "payload-memory", env = "GABBRO_PAYLOAD_MEMORY")]
    pub payload_memory: Option<f64>,
    /// Log payload limit in MB [default: 1] (env WORKER_MAX_LOG_PAYLOAD_MB).
    #[arg(long = "log-payload-memory", env = "GABBRO_LOG_PAYLOAD_MEMORY")]
    pub log_payload_memory: Option<f64>,
    /// Default run timeout in seconds [default: 300] (env WORKER_MAX_RUN_DURATION_SECONDS).
    #[arg(
        short = 't',
        long = "max-run-duration",
        env = "GABBRO_MAX_RUN_DURATION"
    )]
    pub max_run_duration: Option<u64>,
    /// Seconds to wait for a reply to a run event [default: 30] (env WORKER_MESSAGE_TIMEOUT_SECONDS).
    #[arg(long = "message-timeout", env = "GABBRO_MESSAGE_TIMEOUT")]
    pub message_timeout: Option<u64>,
    /// Seconds to wait for a claim reply [default: 3600] (env WORKER_CLAIM_TIMEOUT_SECONDS).
    #[arg(long = "claim-timeout", env = "GABBRO_CLAIM_TIMEOUT")]
    pub claim_timeout: Option<u64>,
    /// Where undelivered run events are kept [default: ./gabbro-worker/journal].
    #[arg(long = "journal-dir", env = "GABBRO_JOURNAL_DIR")]
    pub journal_dir: Option<PathBuf>,
    /// Journal size (MB) past which the worker stops claiming [default: 1024].
    #[arg(long = "journal-max-mb", env = "GABBRO_JOURNAL_MAX_MB")]
    pub journal_max_mb: Option<u64>,
    /// Name sent with claims (env WORKER_NAME, DEPLOYED_POD_NAME).
    #[arg(long = "worker-name", env = "GABBRO_WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Port of the health endpoint (`GET /livez`) [default: 2222] (env WORKER_PORT); 0 disables it.
    #[arg(short = 'p', long, env = "GABBRO_WORKER_PORT")]
    pub port: Option<u16>,
    /// Verify run tokens with this public key (PEM or base64 PEM) (env WORKER_LIGHTNING_PUBLIC_KEY).
    #[arg(long = "lightning-public-key", env = "GABBRO_LIGHTNING_PUBLIC_KEY")]
    pub lightning_public_key: Option<String>,
    /// Program run as the runtime child [default: this executable].
    #[arg(long = "child-exe", env = "GABBRO_CHILD_EXE", hide = true)]
    pub child_exe: Option<PathBuf>,
    /// Arguments of the runtime child [default: __child].
    #[arg(
        long = "child-arg",
        env = "GABBRO_CHILD_ARGS",
        hide = true,
        value_delimiter = ' '
    )]
    pub child_args: Option<Vec<String>>,
    /// Seconds past a run's timeout before its child is killed [default: 10].
    #[arg(long = "kill-grace", env = "GABBRO_KILL_GRACE", hide = true)]
    pub kill_grace: Option<u64>,
    /// Seconds between heartbeats [default: 30].
    #[arg(
        long = "heartbeat-seconds",
        env = "GABBRO_HEARTBEAT_SECONDS",
        hide = true
    )]
    pub heartbeat_seconds: Option<u64>,
    /// Log level (OpenFn's `--log`, env WORKER_LOG_LEVEL); `RUST_LOG` wins.
    #[arg(long = "log", env = "GABBRO_LOG", hide = true)]
    pub log: Option<String>,
    /// OpenFn's worker flags that have no meaning here; accepted (so an
    /// OpenFn deployment's command line works unchanged) and ignored.
    #[arg(short = 'd', long = "repo-dir", hide = true)]
    pub repo_dir: Option<String>,
    #[arg(long = "workloops", hide = true)]
    pub workloops: Option<String>,
    #[arg(long = "state-props-to-remove", hide = true)]
    pub state_props_to_remove: Option<String>,
}

impl WorkerArgs {
    /// OpenFn flags given that gabbro ignores, for a start-up warning.
    fn ignored_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.repo_dir.is_some() {
            v.push("--repo-dir (adaptors are built in)");
        }
        if self.workloops.is_some() {
            v.push("--workloops (one workloop: manual>*)");
        }
        if self.state_props_to_remove.is_some() {
            v.push("--state-props-to-remove (configuration and response are always removed)");
        }
        v
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>> {
    match env(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not valid")),
    }
}

/// Everything `run` needs, resolved.
pub struct Settings {
    pub lightning: String,
    pub secret: String,
    pub port: u16,
    pub journal_dir: PathBuf,
    pub journal_max_bytes: u64,
    pub child: ChildCommand,
    pub public_key: Option<String>,
    pub heartbeat: Duration,
    pub config_without_id: Config,
}

impl WorkerArgs {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let lightning = self
            .lightning
            .or_else(|| env("WORKER_LIGHTNING_SERVICE_URL"))
            .unwrap_or_else(|| "ws://localhost:4000/worker".into());
        let secret = self.secret.or_else(|| env("WORKER_SECRET")).context(
            "no worker secret: pass --secret or set GABBRO_WORKER_SECRET or WORKER_SECRET",
        )?;
        let capacity = match self.capacity {
            Some(c) => c,
            None => env_parse("WORKER_CAPACITY")?.unwrap_or(5),
        };
        anyhow::ensure!(capacity > 0, "--capacity must be at least 1");
        let backoff = self
            .backoff
            .or_else(|| env("WORKER_BACKOFF"))
            .unwrap_or_else(|| "1/10".into());
        let backoff = BackoffRange::parse(&backoff).map_err(anyhow::Error::msg)?;
        let run_memory = opt_or(self.run_memory, "WORKER_MAX_RUN_MEMORY_MB", 500)?;
        let payload = opt_or(self.payload_memory, "WORKER_MAX_PAYLOAD_MB", 10.0)?;
        let log_payload = opt_or(self.log_payload_memory, "WORKER_MAX_LOG_PAYLOAD_MB", 1.0)?;
        let max_run = opt_or(
            self.max_run_duration,
            "WORKER_MAX_RUN_DURATION_SECONDS",
            300,
        )?;
        let message_timeout = match self.message_timeout {
            Some(v) => v,
            None => match env_parse("WORKER_MESSAGE_TIMEOUT_SECONDS")? {
                Some(v) => v,
                None => env_parse("WORKER_SOCKET_TIMEOUT_SECONDS")?.unwrap_or(30),
            },
        };
        let claim_timeout = opt_or(self.claim_timeout, "WORKER_CLAIM_TIMEOUT_SECONDS", 3600)?;
        let port = opt_or(self.port, "WORKER_PORT", 2222)?;
        let worker_name = self
            .worker_name
            .or_else(|| env("WORKER_NAME"))
            .or_else(|| env("DEPLOYED_POD_NAME"));
        let journal_dir = self
            .journal_dir
            .unwrap_or_else(|| PathBuf::from("./gabbro-worker/journal"));
        // The env twins are read here too, for callers that build
        // `WorkerArgs` in code (the embedded worker) rather than via clap.
        let program = match self
            .child_exe
            .or_else(|| env("GABBRO_CHILD_EXE").map(PathBuf::from))
        {
            Some(p) => p,
            None => std::env::current_exe().context("cannot find the gabbro executable")?,
        };
        let args = self
            .child_args
            .or_else(|| {
                env("GABBRO_CHILD_ARGS").map(|v| v.split_whitespace().map(String::from).collect())
            })
            .unwrap_or_else(|| vec![CHILD_SUBCOMMAND.to_string()]);
        let public_key = self
            .lightning_public_key
            .or_else(|| env("WORKER_LIGHTNING_PUBLIC_KEY"));
        Ok(Settings {
            lightning,
            secret,
            port,
            journal_dir,
            journal_max_bytes: self
                .journal_max_mb
                .unwrap_or(1024)
                .saturating_mul(1024 * 1024),
            child: ChildCommand { program, args },
            public_key,
            heartbeat: Duration::from_secs(self.heartbeat_seconds.unwrap_or(30).max(1)),
            config_without_id: Config {
                worker_id: String::new(),
                worker_name,
                capacity,
                backoff,
                message_timeout: Duration::from_secs(message_timeout.max(1)),
                claim_timeout: Duration::from_secs(claim_timeout.max(1)),
                limits: DefaultLimits {
                    run_timeout_ms: max_run * 1000,
                    run_memory_mb: run_memory,
                    payload_mb: payload,
                    log_payload_mb: log_payload,
                },
                kill_grace: Duration::from_secs(self.kill_grace.unwrap_or(10)),
            },
        })
    }
}

fn opt_or<T: std::str::FromStr>(flag: Option<T>, var: &str, default: T) -> anyhow::Result<T> {
    Ok(match flag {
        Some(v) => v,
        None => env_parse(var)?.unwrap_or(default),
    })
}

/// `<lightning>/websocket?token=…&api_version=1.2&worker_version=…&vsn=2.0.0`.
pub fn socket_url(lightning: &str, token: &str) -> String {
    let base = lightning.trim_end_matches('/');
    let base = if base.ends_with("/websocket") {
        base.to_string()
    } else {
        format!("{base}/websocket")
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{sep}token={token}&api_version={}&worker_version={}&vsn={}",
        gabbro_protocol::API_VERSION,
        env!("CARGO_PKG_VERSION"),
        gabbro_protocol::VSN
    )
}

/// `gabbro worker`: run until SIGTERM or SIGINT, then stop claiming, finish
/// the active runs (bounded by their deadlines), leave and exit 0.
pub async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new claims; finishing active runs");
        let _ = stop_tx.send(true);
    });
    let level = args
        .log
        .clone()
        .or_else(|| env("WORKER_LOG_LEVEL"))
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_new(&level))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    run_until(args, stop_rx).await
}

/// The worker, stopping when `stop` turns true (tests drive this directly;
/// it installs no log subscriber).
pub async fn run_until(args: WorkerArgs, stop_rx: watch::Receiver<bool>) -> anyhow::Result<i32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    for flag in args.ignored_flags() {
        tracing::warn!("ignoring OpenFn worker flag {flag}");
    }
    let settings = args.resolve()?;
    let journal = crate::journal_dir::JournalDir::open(&settings.journal_dir)?;
    let mut config = settings.config_without_id.clone();
    config.worker_id = journal.worker_id().to_string();
    let verifier = match &settings.public_key {
        // Checked here so a bad key is a start-up error, not a surprise later.
        Some(key) => Some(
            gabbro_protocol::RunVerifier::from_env_value(key)
                .context("--lightning-public-key is not a usable RSA public key")?,
        ),
        None => None,
    };
    let token = gabbro_protocol::WorkerToken::sign(&settings.secret, &config.worker_id)?;
    let socket = Socket::start(SocketConfig {
        url: socket_url(&settings.lightning, &token),
        heartbeat: settings.heartbeat,
        backoff: config.backoff,
        connect_timeout: Duration::from_secs(10),
    });
    let pool = Pool::new(settings.child.clone(), config.capacity as usize);
    let capacity = config.capacity;
    let drain_bound = Duration::from_millis(config.limits.run_timeout_ms)
        + config.kill_grace
        + config.message_timeout * 2;
    let journal = crate::journal::Journal::open(&settings.journal_dir, settings.journal_max_bytes)
        .with_context(|| {
            format!(
                "cannot open the journal in {}",
                settings.journal_dir.display()
            )
        })?;
    journal.start_syncer();
    let mut shared = Shared::new(config, socket.clone(), pool, journal.clone());
    shared.verifier = verifier;
    let shared = Arc::new(shared);
    tracing::info!(
        worker_id = %shared.config.worker_id,
        lightning = %settings.lightning,
        capacity,
        "gabbro worker starting"
    );

    if settings.port != 0 {
        match tokio::net::TcpListener::bind(("0.0.0.0", settings.port)).await {
            Ok(l) => {
                tokio::spawn(crate::health::serve(l, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(port = settings.port, error = %e, "health endpoint not started")
            }
        }
    }

    // What a previous life of this worker did not deliver goes first.
    let replays: Vec<_> = journal
        .pending()
        .into_iter()
        .map(|p| tokio::spawn(crate::run::replay(shared.clone(), p)))
        .collect();
    let capacity = Capacity::new(capacity);
    claim_loop(shared.clone(), capacity.clone(), stop_rx).await;
    // Active runs finish (bounded by their deadlines and delivery).
    let drained = tokio::time::timeout(drain_bound, async {
        capacity.idle().await;
        for r in replays {
            let _ = r.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(active = ?shared.active_runs(), "runs still undelivered at shutdown");
    }
    socket.close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(journal);
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
