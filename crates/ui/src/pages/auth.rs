//! Sign-in, sign-out and the password change (forced for the first admin).

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use sqlx::Row;

use super::Nav;
use crate::UiState;
use crate::error::{UiError, UiResult, html};
use crate::forms::FormData;
use crate::password::{hash_password, verify_password};
use crate::session::{self, AnyUser, SESSION_COOKIE, SIGNIN_CSRF_COOKIE, constant_time_eq, cookie};
use crate::time::now_us;

const MIN_PASSWORD_CHARS: usize = 12;

/// `GET /`: the projects for a signed-in visitor, the sign-in form otherwise.
pub async fn root(user: Result<AnyUser, UiError>) -> Response {
    match user {
        Ok(_) => Redirect::to("/projects").into_response(),
        Err(_) => Redirect::to("/sign-in").into_response(),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    csrf: String,
    email: String,
    error: Option<String>,
}

fn sign_in_page(state: &UiState, email: String, error: Option<String>) -> UiResult<Response> {
    // The sign-in form has no session yet: its CSRF token is a double-submit
    // cookie, fresh for every rendering.
    let csrf = session::random_token();
    let mut resp = html(SignInPage {
        nav: None,
        csrf: csrf.clone(),
        email,
        error: error.clone(),
    })?;
    if error.is_some() {
        *resp.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
    }
    let c = session::set_cookie(state, SIGNIN_CSRF_COOKIE, &csrf, 3600);
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.parse().map_err(|_| UiError::Internal("cookie".into()))?,
    );
    Ok(resp)
}

pub async fn sign_in_form(State(state): State<UiState>) -> UiResult<Response> {
    sign_in_page(&state, String::new(), None)
}

pub async fn sign_in(
    State(state): State<UiState>,
    headers: HeaderMap,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    let expected = cookie(&headers, SIGNIN_CSRF_COOKIE).unwrap_or_default();
    let given = form.get("_csrf").unwrap_or("");
    if expected.is_empty() || !constant_time_eq(given, &expected) {
        return Err(UiError::Forbidden(
            "The sign-in form has expired (CSRF check failed). Reload the page and try again."
                .into(),
        ));
    }
    let email = form.text("email").to_lowercase();
    let password = form.get("password").unwrap_or("");
    if let Some(wait) = state.throttle().locked_for(&email) {
        tracing::warn!("ui: sign-in refused, too many failures for one account");
        let mut resp = sign_in_page(
            &state,
            email,
            Some(format!(
                "Too many failed sign-ins for this account. Try again in {} minute(s).",
                wait.div_ceil(60)
            )),
        )?;
        *resp.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
        return Ok(resp);
    }
    let row = sqlx::query("SELECT id, password_hash FROM users WHERE LOWER(email) = $1")
        .bind(&email)
        .fetch_optional(state.pool())
        .await?;
    let user_id = match row {
        Some(row) => {
            let hash: String = row.try_get("password_hash")?;
            let ok = tokio::task::spawn_blocking({
                let password = password.to_string();
                move || verify_password(&password, &hash)
            })
            .await
            .unwrap_or(false);
            ok.then(|| row.try_get::<String, _>("id")).transpose()?
        }
        None => None,
    };
    let Some(user_id) = user_id else {
        state.throttle().record_failure(&email);
        tracing::info!("ui: failed sign-in");
        return sign_in_page(&state, email, Some("Wrong email or password.".into()));
    };
    state.throttle().record_success(&email);
    let token = session::create(&state, &user_id).await?;
    let mut resp = Redirect::to("/projects").into_response();
    let c = session::set_cookie(&state, SESSION_COOKIE, &token, 7 * 24 * 3600);
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.parse().map_err(|_| UiError::Internal("cookie".into()))?,
    );
    Ok(resp)
}

pub async fn sign_out(
    State(state): State<UiState>,
    user: AnyUser,
    body: Bytes,
) -> UiResult<Response> {
    user.check_csrf(&FormData::parse(&body))?;
    session::destroy(&state, &user.token).await?;
    let mut resp = Redirect::to("/sign-in").into_response();
    let c = session::set_cookie(&state, SESSION_COOKIE, "", 0);
    resp.headers_mut().append(
        header::SET_COOKIE,
        c.parse().map_err(|_| UiError::Internal("cookie".into()))?,
    );
    Ok(resp)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    nav: Option<Nav>,
    csrf: String,
    must_change: bool,
    error: Option<String>,
    done: bool,
}

fn password_page(user: &AnyUser, error: Option<String>, done: bool) -> UiResult<Response> {
    let mut resp = html(PasswordPage {
        nav: Nav::of(user),
        csrf: user.csrf.clone(),
        must_change: user.must_change_password,
        error: error.clone(),
        done,
    })?;
    if error.is_some() {
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

pub async fn password_form(user: AnyUser) -> UiResult<Response> {
    password_page(&user, None, false)
}

pub async fn change_password(
    State(state): State<UiState>,
    user: AnyUser,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let current = form.get("current").unwrap_or("").to_string();
    let new = form.get("new").unwrap_or("").to_string();
    if new != form.get("confirm").unwrap_or("") {
        return password_page(&user, Some("The two new passwords differ.".into()), false);
    }
    if new.chars().count() < MIN_PASSWORD_CHARS {
        return password_page(
            &user,
            Some(format!(
                "The new password needs at least {MIN_PASSWORD_CHARS} characters."
            )),
            false,
        );
    }
    if new == current {
        return password_page(
            &user,
            Some("The new password must differ from the current one.".into()),
            false,
        );
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(&user.id)
        .fetch_one(state.pool())
        .await?;
    let new_hash = tokio::task::spawn_blocking(move || {
        if verify_password(&current, &hash) {
            hash_password(&new).map(Some)
        } else {
            Ok(None)
        }
    })
    .await
    .map_err(|e| UiError::Internal(e.to_string()))?
    .map_err(UiError::Internal)?;
    let Some(new_hash) = new_hash else {
        return password_page(&user, Some("The current password is wrong.".into()), false);
    };
    sqlx::query("UPDATE users SET password_hash = $1, must_change_password = $2, updated_at = $3 WHERE id = $4")
        .bind(new_hash)
        .bind(false)
        .bind(now_us())
        .bind(&user.id)
        .execute(state.pool())
        .await?;
    session::destroy_others(&state, &user.id, &user.token).await?;
    if user.must_change_password {
        return Ok(Redirect::to("/projects").into_response());
    }
    password_page(&user, None, true)
}
