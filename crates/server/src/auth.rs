//! Bearer API tokens. A token is `gbt_` + 32 random bytes (URL-safe base64);
//! only its SHA-256 (hex) is stored, in `api_tokens.token_hash` (the same
//! scheme as the store's `create_api_token`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!(
        "gbt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user a valid bearer token belongs to. Extracting it from a request
/// without one (or with an unknown one) answers 401.
#[derive(Debug, Clone)]
pub struct ApiUser {
    pub id: String,
    pub email: String,
    pub role: String,
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let user = state
            .store
            .user_for_token(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(ApiUser {
            id: user.id,
            email: user.email,
            role: user.role,
        })
    }
}
