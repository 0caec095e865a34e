//! API errors and the JSON they are answered with: `{"error": code,
//! "message": text}` and, for invalid documents, `{"errors": {field:
//! [messages]}}` (422, as Lightning's provisioning API).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use gabbro_deploy::FieldErrors;
use gabbro_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Invalid(FieldErrors),
    /// The database is unreachable or overloaded: 503 with Retry-After.
    Unavailable(String),
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, id } => {
                ApiError::NotFound(format!("{what} {id} not found"))
            }
            StoreError::Rejected { field, message } => {
                let mut errors = FieldErrors::default();
                errors.add(field, message);
                ApiError::Invalid(errors)
            }
            StoreError::WriterGone => ApiError::Unavailable("the server is shutting down".into()),
            StoreError::Db(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ApiError::Unavailable(format!("the database is unavailable: {e}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(StoreError::Db(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "message": "a valid API token is required: Authorization: Bearer <token>"}),
            ),
            ApiError::Forbidden(m) => (
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "message": m}),
            ),
            ApiError::NotFound(m) => (
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": m}),
            ),
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "message": m}),
            ),
            ApiError::Invalid(errors) => {
                (StatusCode::UNPROCESSABLE_ENTITY, json!({"errors": errors}))
            }
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "answering 503");
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "unavailable", "message": m, "retry_after": 1})),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal", "message": "internal error; see the server log"}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}
