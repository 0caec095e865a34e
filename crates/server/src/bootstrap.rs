//! First start on an empty database: the admin account `admin@localhost`,
//! its password in `<data-dir>/admin.password` and an API token in
//! `<data-dir>/admin.token` (both 0600), written before the server listens.

use anyhow::Context;
use argon2::PasswordHasher as _;
use argon2::password_hash::SaltString;
use rand_core::OsRng;
use std::path::Path;

use gabbro_store::{Store, exec, scalar};

use crate::auth::{hash_token, new_token};
use crate::config::{random_base64, write_private};

pub const ADMIN_EMAIL: &str = "admin@localhost";

/// Create the first admin if the database has no user. Returns true when it
/// did. The secrets are written to files before the row is committed, so a
/// crash between the two leaves files for an account that does not exist
/// yet (recreated on the next start), never an account nobody can use.
pub async fn ensure_admin(store: &Store, data_dir: &Path) -> anyhow::Result<bool> {
    let users: Option<i64> = {
        let mut c = store.read().await?;
        let mut conn = c.reborrow();
        scalar!(conn, i64, "SELECT COUNT(*) FROM users")?
    };
    if users.unwrap_or(0) > 0 {
        return Ok(false);
    }
    let password = random_base64(18)
        .replace(['+', '/'], "x")
        .trim_end_matches('=')
        .to_string();
    let salt = SaltString::generate(&mut OsRng);
    let password_hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?
        .to_string();
    let token = new_token();
    let token_path = data_dir.join("admin.token");
    let password_path = data_dir.join("admin.password");
    write_private(&token_path, &format!("{token}\n"))?;
    write_private(&password_path, &format!("{password}\n"))?;

    let user_id = uuid::Uuid::now_v7().to_string();
    let token_id = uuid::Uuid::now_v7().to_string();
    let token_hash = hash_token(&token);
    let created = store
        .write(move |mut c| {
            Box::pin(async move {
                let now = gabbro_store::now_us();
                // Another node may have won the race on a shared database.
                let users: Option<i64> = scalar!(c, i64, "SELECT COUNT(*) FROM users")?;
                if users.unwrap_or(0) > 0 {
                    return Ok(false);
                }
                exec!(
                    c,
                    "INSERT INTO users (id, email, password_hash, role, must_change_password, inserted_at, updated_at) VALUES ($1, $2, $3, 'superuser', TRUE, $4, $4)",
                    &user_id,
                    ADMIN_EMAIL,
                    &password_hash,
                    now
                )?;
                exec!(
                    c,
                    "INSERT INTO api_tokens (id, user_id, token_hash, inserted_at) VALUES ($1, $2, $3, $4)",
                    &token_id,
                    &user_id,
                    &token_hash,
                    now
                )?;
                Ok(true)
            })
        })
        .await
        .context("cannot create the admin account")?;
    if created {
        tracing::info!(
            email = ADMIN_EMAIL,
            token_file = %token_path.display(),
            password_file = %password_path.display(),
            "created the first admin; its API token and password are in these files"
        );
    } else {
        let _ = std::fs::remove_file(&token_path);
        let _ = std::fs::remove_file(&password_path);
    }
    Ok(created)
}
