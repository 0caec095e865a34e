//! Users and API tokens. Password hashing (argon2) belongs to the caller;
//! the store keeps the hash it is given. API tokens are random, shown once,
//! and stored only as their SHA-256 hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::vault::random_bytes_32;
use crate::{Result, Store, exec, fetch_optional, new_id, now_us, scalar};

/// Email of the first admin created on an empty database.
pub const ADMIN_EMAIL: &str = "admin@localhost";

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: String,
    /// Unique email.
    pub email: String,
    /// The argon2 (PHC string) hash the caller stored.
    pub password_hash: String,
    /// `superuser` or `user`.
    pub role: String,
    /// True until the first password change.
    pub must_change_password: bool,
}

/// A new API token: the secret (to show once) and its row id.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Row id in `api_tokens`.
    pub id: String,
    /// The bearer token itself; never stored.
    pub token: String,
}

fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Creates a user with an already-hashed password; returns its id.
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: &str,
        must_change_password: bool,
    ) -> Result<String> {
        let (email, hash, role) = (
            email.to_string(),
            password_hash.to_string(),
            role.to_string(),
        );
        self.write(move |mut c| {
            Box::pin(async move {
                let id = new_id();
                let now = now_us();
                exec!(
                    c,
                    "INSERT INTO users (id, email, password_hash, role, must_change_password, inserted_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    id.clone(), email, hash, role, must_change_password, now
                )?;
                Ok(id)
            })
        })
        .await
    }

    /// The user with this email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c.reborrow(),
            User,
            "SELECT id, email, password_hash, role, must_change_password FROM users WHERE email = $1",
            email
        )?)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c.reborrow(),
            User,
            "SELECT id, email, password_hash, role, must_change_password FROM users WHERE id = $1",
            id
        )?)
    }

    /// Replaces a user's password hash and clears `must_change_password`.
    pub async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<bool> {
        let (id, hash) = (user_id.to_string(), password_hash.to_string());
        self.write(move |mut c| {
            Box::pin(async move {
                let n = exec!(
                    c,
                    "UPDATE users SET password_hash = $1, must_change_password = FALSE, updated_at = $2 WHERE id = $3",
                    hash, now_us(), id
                )?;
                Ok(n == 1)
            })
        })
        .await
    }

    /// Creates an API token for a user; the returned secret is not stored.
    pub async fn create_api_token(&self, user_id: &str) -> Result<NewToken> {
        let user_id = user_id.to_string();
        let token = format!("gab_{}", URL_SAFE_NO_PAD.encode(random_bytes_32()));
        let hash = hash_token(&token);
        let id = self
            .write(move |mut c| {
                Box::pin(async move {
                    let id = new_id();
                    exec!(
                        c,
                        "INSERT INTO api_tokens (id, user_id, token_hash, inserted_at) VALUES ($1, $2, $3, $4)",
                        id.clone(), user_id, hash, now_us()
                    )?;
                    Ok(id)
                })
            })
            .await?;
        Ok(NewToken { id, token })
    }

    /// The user a bearer token belongs to, or `None` for an unknown token.
    /// (A read only: `last_used_at` is not updated per request.)
    pub async fn user_for_token(&self, token: &str) -> Result<Option<User>> {
        let hash = hash_token(token.trim());
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c.reborrow(),
            User,
            "SELECT u.id, u.email, u.password_hash, u.role, u.must_change_password
             FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            hash
        )?)
    }

    /// On a database without users: creates the superuser
    /// [`ADMIN_EMAIL`] with the given password hash (must change it) and an
    /// API token, and returns the token. Returns `None` when users exist.
    /// Writing `admin.token`/`admin.password` is the caller's job.
    pub async fn bootstrap_admin(&self, password_hash: &str) -> Result<Option<NewToken>> {
        let hash = password_hash.to_string();
        let token = format!("gab_{}", URL_SAFE_NO_PAD.encode(random_bytes_32()));
        let token_hash = hash_token(&token);
        // User and token in one transaction: a crash leaves neither.
        let token_id = self
            .write(move |mut c| {
                Box::pin(async move {
                    let n = scalar!(c, i64, "SELECT count(*) FROM users")?.unwrap_or(0);
                    if n > 0 {
                        return Ok(None);
                    }
                    let (user_id, token_id, now) = (new_id(), new_id(), now_us());
                    exec!(
                        c,
                        "INSERT INTO users (id, email, password_hash, role, must_change_password, inserted_at, updated_at)
                         VALUES ($1, $2, $3, 'superuser', TRUE, $4, $4)",
                        user_id.clone(), ADMIN_EMAIL, hash, now
                    )?;
                    exec!(
                        c,
                        "INSERT INTO api_tokens (id, user_id, token_hash, inserted_at) VALUES ($1, $2, $3, $4)",
                        token_id.clone(), user_id, token_hash, now
                    )?;
                    Ok(Some(token_id))
                })
            })
            .await?;
        Ok(token_id.map(|id| NewToken { id, token }))
    }
}
