//! `gabbro serve`'s command line and the secrets it keeps in the data
//! directory.

use anyhow::Context;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Run the orchestrator: API, webhooks, cron, worker socket, UI.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory for the SQLite database, generated secrets and admin.token.
    #[arg(long, env = "GABBRO_DATA_DIR", default_value = "./gabbro-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "GABBRO_LISTEN", default_value = "127.0.0.1:4000")]
    pub listen: SocketAddr,
    /// Database URL: sqlite://PATH or postgres://… (default: SQLite in the data directory).
    #[arg(long, env = "GABBRO_DB")]
    pub db: Option<String>,
    /// Runs the embedded worker executes at once; 0 runs no embedded worker.
    #[arg(long, env = "GABBRO_WORKER_CAPACITY", default_value_t = 10)]
    pub worker_capacity: u32,
    /// Shared secret that signs worker tokens (OpenFn's WORKER_SECRET).
    /// Default: generated into <data-dir>/worker.secret.
    #[arg(long, env = "GABBRO_WORKER_SECRET", hide_env_values = true)]
    pub worker_secret: Option<String>,
    /// Credentials encryption key: 32 bytes, base64 (as Lightning's
    /// PRIMARY_ENCRYPTION_KEY). Generated into <data-dir>/encryption.key for
    /// SQLite; required with PostgreSQL.
    #[arg(long, env = "GABBRO_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Largest webhook body accepted, in MiB (Lightning's MAX_DATACLIP_SIZE_MB).
    #[arg(long, env = "GABBRO_MAX_DATACLIP_SIZE_MB", default_value_t = 10)]
    pub max_dataclip_size_mb: u64,
    /// Memory budget for webhook bodies being received at once, in MiB; past
    /// it new webhooks get 503 with Retry-After instead of queueing in memory.
    #[arg(long, env = "GABBRO_WEBHOOK_MEMORY_MB", default_value_t = 64)]
    pub webhook_memory_mb: u64,
    /// Run the cron scheduler on this node (every node may: fires are unique per time).
    #[arg(long, env = "GABBRO_CRON", default_value_t = true, action = clap::ArgAction::Set)]
    pub cron: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "GABBRO_LOG_JSON")]
    pub log_json: bool,
    /// Lease lengths and the janitor's period.
    #[command(flatten)]
    pub janitor: crate::janitor::JanitorArgs,
}

/// What the server runs with, resolved from [`ServeArgs`].
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub db_url: String,
    pub worker_capacity: u32,
    pub worker_secret: String,
    pub encryption_key: [u8; 32],
    pub max_body_bytes: usize,
    pub webhook_memory_bytes: usize,
    pub cron: bool,
    pub janitor: crate::janitor::JanitorConfig,
}

impl Config {
    /// Resolve the flags: create the data directory, read or generate the
    /// secrets. Refuses PostgreSQL without an explicit encryption key, since
    /// every node must share it.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        std::fs::create_dir_all(&args.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                args.data_dir.display()
            )
        })?;
        let db_url = match &args.db {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", args.data_dir.join("gabbro.db").display()),
        };
        let postgres = db_url.starts_with("postgres:") || db_url.starts_with("postgresql:");
        let key_text = match &args.encryption_key {
            Some(k) => k.clone(),
            None if postgres => anyhow::bail!(
                "--encryption-key (or GABBRO_ENCRYPTION_KEY) is required with PostgreSQL: every gabbro serve \
                 node must use the same key to read credentials. Generate one with `head -c 32 /dev/urandom | base64`."
            ),
            None => secret_file(&args.data_dir.join("encryption.key"), 32)?,
        };
        let encryption_key = decode_key(&key_text)?;
        let worker_secret = match &args.worker_secret {
            Some(s) => s.clone(),
            None => secret_file(&args.data_dir.join("worker.secret"), 32)?,
        };
        Ok(Config {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            db_url,
            worker_capacity: args.worker_capacity,
            worker_secret,
            encryption_key,
            max_body_bytes: usize::try_from(args.max_dataclip_size_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            webhook_memory_bytes: usize::try_from(
                args.webhook_memory_mb.saturating_mul(1024 * 1024),
            )
            .unwrap_or(usize::MAX),
            cron: args.cron,
            janitor: crate::janitor::JanitorConfig::from(&args.janitor),
        })
    }
}

/// A 32-byte key from base64 (standard or URL-safe alphabet).
pub fn decode_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let t = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .context("the encryption key is not base64")?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "the encryption key must be 32 bytes (base64 of 32 random bytes), got {}",
            bytes.len()
        )
    })
}

/// `n` random bytes as base64.
pub fn random_base64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The content of a secret file, generated (n random bytes, base64, mode
/// 0600) if it does not exist yet.
pub fn secret_file(path: &Path, n: usize) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let value = random_base64(n);
    write_private(path, &format!("{value}\n"))?;
    tracing::info!(path = %path.display(), "generated a secret");
    Ok(value)
}

/// Write a file readable by its owner only (0600), atomically.
pub fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
