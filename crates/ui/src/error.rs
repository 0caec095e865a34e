//! What a page handler can fail with, and how each failure looks to a browser.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// Not an error to the visitor: send them elsewhere (sign-in, password change).
    #[error("redirect to {0}")]
    Redirect(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            UiError::Redirect(to) => return Redirect::to(to).into_response(),
            UiError::NotFound => (StatusCode::NOT_FOUND, "Not found.".to_string()),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            UiError::Db(e) => {
                tracing::error!(error = %e, "ui: database error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The database could not answer; try again.".to_string(),
                )
            }
            UiError::Internal(m) => {
                tracing::error!(error = %m, "ui: internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server.".to_string(),
                )
            }
        };
        let body = ErrorPage {
            status: status.as_u16(),
            message: &message,
        }
        .render()
        .unwrap_or_else(|_| "error".to_string());
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;

/// Content-Security-Policy of every page: only gabbro's own script and
/// stylesheet run, nothing may frame the UI (defence in depth behind escaping).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Renders a template into an HTML response.
pub fn html<T: Template>(t: T) -> UiResult<Response> {
    let body = t
        .render()
        .map_err(|e| UiError::Internal(format!("template: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        body,
    )
        .into_response())
}
