//! People: superusers create accounts (`/users`); a project's admins and
//! owners add members and set their roles (`/projects/{p}/members`). Only an
//! owner grants or takes away the owner role, and a project keeps at least
//! one owner.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use sqlx::Row;

use super::Nav;
use crate::UiState;
use crate::access::{ProjectAccess, Role, project_access};
use crate::error::{UiError, UiResult, html};
use crate::forms::FormData;
use crate::password::hash_password;
use crate::session::User;
use crate::time::now_us;

pub struct MemberRow {
    pub email: String,
    pub role: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    can_manage: bool,
    members: Vec<MemberRow>,
    roles: &'static [&'static str],
    error: Option<String>,
    notice: Option<String>,
}

const ROLES: &[&str] = &["viewer", "editor", "admin", "owner"];

async fn members_of(state: &UiState, project_id: &str) -> UiResult<Vec<MemberRow>> {
    let rows = sqlx::query(
        "SELECT u.email, pu.role FROM project_users pu JOIN users u ON u.id = pu.user_id \
         WHERE pu.project_id = $1 ORDER BY u.email",
    )
    .bind(project_id)
    .fetch_all(state.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MemberRow {
                email: r.try_get("email")?,
                role: r.try_get("role")?,
            })
        })
        .collect()
}

async fn page(
    state: &UiState,
    user: &User,
    p: ProjectAccess,
    error: Option<String>,
    notice: Option<String>,
) -> UiResult<Response> {
    let members = members_of(state, &p.id).await?;
    let failed = error.is_some();
    let mut resp = html(MembersPage {
        nav: Nav::of(user),
        csrf: user.csrf.clone(),
        can_manage: p.role >= Role::Admin,
        project_id: p.id,
        project_name: p.name,
        members,
        roles: ROLES,
        error,
        notice,
    })?;
    if failed {
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

pub async fn list(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
    RawQuery(q): RawQuery,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let notice = (FormData::parse(q.unwrap_or_default().as_bytes()).get("done") == Some("1"))
        .then(|| "Members updated.".to_string());
    page(&state, &user, p, None, notice).await
}

/// Adds a member, changes a role or removes a member (`role` = "remove").
pub async fn set_role(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Admin)?;
    let email = form.text("email").to_lowercase();
    let role = form.text("role");
    let new_role = Role::parse(&role);
    if new_role.is_none() && role != "remove" {
        return page(&state, &user, p, Some("Choose a role.".into()), None).await;
    }
    let target: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE LOWER(email) = $1")
        .bind(&email)
        .fetch_optional(state.pool())
        .await?;
    let Some(target) = target else {
        return page(
            &state,
            &user,
            p,
            Some(
                "No account has that email; a superuser creates accounts on the Users page.".into(),
            ),
            None,
        )
        .await;
    };
    let current: Option<String> =
        sqlx::query_scalar("SELECT role FROM project_users WHERE project_id = $1 AND user_id = $2")
            .bind(&p.id)
            .bind(&target)
            .fetch_optional(state.pool())
            .await?;
    let touches_owner = new_role == Some(Role::Owner) || current.as_deref() == Some("owner");
    if touches_owner && p.role < Role::Owner {
        return Err(UiError::Forbidden(
            "Only an owner grants or takes away the owner role.".into(),
        ));
    }
    if current.as_deref() == Some("owner") && new_role != Some(Role::Owner) {
        let owners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM project_users WHERE project_id = $1 AND role = 'owner'",
        )
        .bind(&p.id)
        .fetch_one(state.pool())
        .await?;
        if owners <= 1 {
            return page(
                &state,
                &user,
                p,
                Some("A project keeps at least one owner.".into()),
                None,
            )
            .await;
        }
    }
    match (new_role, current.is_some()) {
        (None, _) => {
            sqlx::query("DELETE FROM project_users WHERE project_id = $1 AND user_id = $2")
                .bind(&p.id)
                .bind(&target)
                .execute(state.pool())
                .await?;
        }
        (Some(r), true) => {
            sqlx::query(
                "UPDATE project_users SET role = $1 WHERE project_id = $2 AND user_id = $3",
            )
            .bind(r.as_str())
            .bind(&p.id)
            .bind(&target)
            .execute(state.pool())
            .await?;
        }
        (Some(r), false) => {
            sqlx::query(
                "INSERT INTO project_users (project_id, user_id, role) VALUES ($1, $2, $3)",
            )
            .bind(&p.id)
            .bind(&target)
            .bind(r.as_str())
            .execute(state.pool())
            .await?;
        }
    }
    Ok(Redirect::to(&format!("/projects/{}/members?done=1", p.id)).into_response())
}

pub struct UserRow {
    pub email: String,
    pub role: String,
    pub must_change_password: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Option<Nav>,
    csrf: String,
    users: Vec<UserRow>,
    error: Option<String>,
    notice: Option<String>,
}

async fn users_page(
    state: &UiState,
    user: &User,
    error: Option<String>,
    notice: Option<String>,
) -> UiResult<Response> {
    let rows = sqlx::query(
        "SELECT email, role, CAST(CASE WHEN must_change_password THEN 1 ELSE 0 END AS BIGINT) AS mcp FROM users ORDER BY email",
    )
    .fetch_all(state.pool())
    .await?;
    let users = rows
        .iter()
        .map(|r| {
            Ok(UserRow {
                email: r.try_get("email")?,
                role: r.try_get("role")?,
                must_change_password: r.try_get::<i64, _>("mcp")? != 0,
            })
        })
        .collect::<UiResult<_>>()?;
    let failed = error.is_some();
    let mut resp = html(UsersPage {
        nav: Nav::of(user),
        csrf: user.csrf.clone(),
        users,
        error,
        notice,
    })?;
    if failed {
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

fn require_superuser(user: &User) -> UiResult<()> {
    if user.is_superuser {
        Ok(())
    } else {
        Err(UiError::Forbidden(
            "Managing accounts is for administrators.".into(),
        ))
    }
}

pub async fn users(
    State(state): State<UiState>,
    user: User,
    RawQuery(q): RawQuery,
) -> UiResult<Response> {
    require_superuser(&user)?;
    let notice = (FormData::parse(q.unwrap_or_default().as_bytes()).get("done") == Some("1"))
        .then(|| "Account created. Give its owner the temporary password; they choose their own at first sign-in.".to_string());
    users_page(&state, &user, None, notice).await
}

/// Creates an account with a temporary password that must be changed at
/// first sign-in.
pub async fn create_user(
    State(state): State<UiState>,
    user: User,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    require_superuser(&user)?;
    let email = form.text("email").to_lowercase();
    let password = form.get("password").unwrap_or("").to_string();
    let role = if form.get("superuser") == Some("on") {
        "superuser"
    } else {
        "user"
    };
    if email.len() > 254
        || !email.contains('@')
        || email.starts_with('@')
        || email.chars().any(char::is_whitespace)
    {
        return users_page(
            &state,
            &user,
            Some("Give a valid email address.".into()),
            None,
        )
        .await;
    }
    if password.chars().count() < 12 {
        return users_page(
            &state,
            &user,
            Some("The temporary password needs at least 12 characters.".into()),
            None,
        )
        .await;
    }
    let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE LOWER(email) = $1")
        .bind(&email)
        .fetch_one(state.pool())
        .await?;
    if taken > 0 {
        return users_page(
            &state,
            &user,
            Some("An account with that email exists.".into()),
            None,
        )
        .await;
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?
        .map_err(UiError::Internal)?;
    let now = now_us();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, role, must_change_password, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&email)
    .bind(hash)
    .bind(role)
    .bind(true)
    .bind(now)
    .bind(now)
    .execute(state.pool())
    .await?;
    Ok(Redirect::to("/users?done=1").into_response())
}
