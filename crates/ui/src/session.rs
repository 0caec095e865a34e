//! Sign-in sessions: a random token in an HttpOnly, SameSite=Lax cookie,
//! its SHA-256 in `ui_sessions`, and a per-session CSRF token that every
//! form echoes back.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::UiState;
use crate::error::{UiError, UiResult};
use crate::forms::FormData;
use crate::time::now_us;

pub const SESSION_COOKIE: &str = "gabbro_session";
/// Cookie for the sign-in form's CSRF token (there is no session yet).
pub const SIGNIN_CSRF_COOKIE: &str = "gabbro_signin_csrf";
const SESSION_LIFETIME_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// 244 random bits as 64 hex characters.
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, compared in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value with the attributes every gabbro cookie carries.
pub fn set_cookie(state: &UiState, name: &str, value: &str, max_age_s: i64) -> String {
    let secure = if state.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}")
}

/// Creates a session for `user_id`; returns the cookie token.
pub async fn create(state: &UiState, user_id: &str) -> UiResult<String> {
    let token = random_token();
    let now = now_us();
    // Expired sessions go when new ones come: no separate cleaner needed.
    sqlx::query("DELETE FROM ui_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(state.pool())
        .await?;
    sqlx::query(
        "INSERT INTO ui_sessions (id, user_id, csrf_token, inserted_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(sha256_hex(&token))
    .bind(user_id)
    .bind(random_token())
    .bind(now)
    .bind(now + SESSION_LIFETIME_US)
    .execute(state.pool())
    .await?;
    Ok(token)
}

/// Ends the session the cookie token names (sign-out).
pub async fn destroy(state: &UiState, token: &str) -> UiResult<()> {
    sqlx::query("DELETE FROM ui_sessions WHERE id = $1")
        .bind(sha256_hex(token))
        .execute(state.pool())
        .await?;
    Ok(())
}

/// Ends every session of a user but one (after a password change).
pub async fn destroy_others(state: &UiState, user_id: &str, keep_token: &str) -> UiResult<()> {
    sqlx::query("DELETE FROM ui_sessions WHERE user_id = $1 AND id <> $2")
        .bind(user_id)
        .bind(sha256_hex(keep_token))
        .execute(state.pool())
        .await?;
    Ok(())
}

/// The signed-in user, whatever state their account is in. Most pages want
/// [`User`] instead, which also insists the password has been changed.
#[derive(Debug, Clone)]
pub struct AnyUser {
    pub id: String,
    pub email: String,
    pub is_superuser: bool,
    pub must_change_password: bool,
    pub csrf: String,
    pub token: String,
}

impl AnyUser {
    /// Refuses a form whose `_csrf` field is not this session's token.
    pub fn check_csrf(&self, form: &FormData) -> UiResult<()> {
        match form.get("_csrf") {
            Some(t) if constant_time_eq(t, &self.csrf) => Ok(()),
            _ => Err(UiError::Forbidden(
                "This form has expired or did not come from gabbro (CSRF check failed). Reload the page and try again."
                    .into(),
            )),
        }
    }
}

impl FromRequestParts<UiState> for AnyUser {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> UiResult<Self> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(UiError::Redirect("/sign-in".into()));
        };
        let row = sqlx::query(
            "SELECT u.id, u.email, u.role, CAST(CASE WHEN u.must_change_password THEN 1 ELSE 0 END AS BIGINT) AS mcp, s.csrf_token \
             FROM ui_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.expires_at > $2",
        )
        .bind(sha256_hex(&token))
        .bind(now_us())
        .fetch_optional(state.pool())
        .await?;
        let Some(row) = row else {
            return Err(UiError::Redirect("/sign-in".into()));
        };
        Ok(AnyUser {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            is_superuser: row.try_get::<String, _>("role")? == "superuser",
            must_change_password: row.try_get::<i64, _>("mcp")? != 0,
            csrf: row.try_get("csrf_token")?,
            token,
        })
    }
}

/// A signed-in user whose account is ready to use (no password change due).
#[derive(Debug, Clone)]
pub struct User(pub AnyUser);

impl std::ops::Deref for User {
    type Target = AnyUser;
    fn deref(&self) -> &AnyUser {
        &self.0
    }
}

impl FromRequestParts<UiState> for User {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> UiResult<Self> {
        let user = AnyUser::from_request_parts(parts, state).await?;
        if user.must_change_password {
            return Err(UiError::Redirect("/password".into()));
        }
        Ok(User(user))
    }
}
