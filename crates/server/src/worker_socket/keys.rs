//! The RSA key that signs run tokens.
//!
//! Taken, in order, from `GABBRO_WORKER_RUNS_PRIVATE_KEY` or Lightning's
//! `WORKER_RUNS_PRIVATE_KEY` (a PEM, or base64 of one, as Lightning takes
//! it), else from `<data-dir>/run_token_key.pem`, generated there (2048
//! bits, mode 0600) on first start. The public half is written beside it as
//! `run_token_key.pub.pem` for workers that verify tokens. Several nodes on
//! one PostgreSQL database must share the key: give it through the
//! environment.

use std::path::Path;

use anyhow::Context;
use gabbro_protocol::RunSigner;

/// Environment variables read for the key, first match wins.
pub const KEY_ENV: [&str; 2] = ["GABBRO_WORKER_RUNS_PRIVATE_KEY", "WORKER_RUNS_PRIVATE_KEY"];
/// File name of the generated private key in the data directory.
pub const KEY_FILE: &str = "run_token_key.pem";
/// File name of its public key.
pub const PUBLIC_KEY_FILE: &str = "run_token_key.pub.pem";

/// The run-token signer for a server whose data directory is `data_dir`.
pub fn load_or_generate(data_dir: &Path) -> anyhow::Result<RunSigner> {
    for name in KEY_ENV {
        if let Ok(v) = std::env::var(name)
            && !v.trim().is_empty()
        {
            return RunSigner::from_env_value(&v)
                .with_context(|| format!("{name} is not an RSA private key (PEM or base64 PEM)"));
        }
    }
    let path = data_dir.join(KEY_FILE);
    let signer = match std::fs::read_to_string(&path) {
        Ok(pem) => RunSigner::from_private_pem(&pem)
            .with_context(|| format!("{} is not an RSA private key", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = RunSigner::generate(2048).context("cannot generate the run-token key")?;
            crate::config::write_private(&path, signer.private_key_pem())?;
            tracing::info!(path = %path.display(), "generated the run-token signing key");
            signer
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let public = data_dir.join(PUBLIC_KEY_FILE);
    if std::fs::read_to_string(&public).ok().as_deref() != Some(signer.public_key_pem()) {
        std::fs::write(&public, signer.public_key_pem())
            .with_context(|| format!("cannot write {}", public.display()))?;
    }
    Ok(signer)
}
