//! Credentials per project. Bodies are encrypted before they are stored and
//! are never sent back to the browser: the edit form starts empty, and an
//! empty body keeps the stored secret.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::Nav;
use crate::UiState;
use crate::access::{ProjectAccess, Role, project_access};
use crate::error::{UiError, UiResult, html};
use crate::forms::FormData;
use crate::queries::{self, CredentialRow};
use crate::session::User;
use crate::time::format_us;
use crate::vault;

const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    can_edit: bool,
    credentials: Vec<CredentialRow>,
    error: Option<String>,
    notice: Option<String>,
    name: String,
    schema: String,
}

impl CredentialsPage {
    fn when(&self, us: &i64) -> String {
        format_us(*us)
    }
}

async fn list_page(
    state: &UiState,
    user: &User,
    p: ProjectAccess,
    error: Option<String>,
    notice: Option<String>,
    name: String,
    schema: String,
) -> UiResult<Response> {
    let credentials = queries::credentials_of(state.pool(), &p.id).await?;
    let failed = error.is_some();
    let mut resp = html(CredentialsPage {
        nav: Nav::of(user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        project_id: p.id,
        project_name: p.name,
        credentials,
        error,
        notice,
        name,
        schema,
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
    let notice = match FormData::parse(q.unwrap_or_default().as_bytes()).get("done") {
        Some("created") => Some("Credential saved.".to_string()),
        Some("updated") => Some("Credential updated.".to_string()),
        Some("deleted") => Some("Credential deleted.".to_string()),
        _ => None,
    };
    list_page(&state, &user, p, None, notice, String::new(), "raw".into()).await
}

/// Checks a credential form; returns (name, schema, encrypted body or None
/// when the body was left empty).
fn read_form(
    state: &UiState,
    form: &FormData,
    body_required: bool,
) -> Result<(String, String, Option<String>), String> {
    let name = form.text("name");
    let schema = form.text("schema");
    let schema = if schema.is_empty() {
        "raw".to_string()
    } else {
        schema
    };
    let body = form.get("body").unwrap_or("").trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err("Give the credential a name (up to 200 characters).".into());
    }
    if schema.len() > 100
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("The schema is a short name such as raw, http or postgresql.".into());
    }
    if body.is_empty() {
        return if body_required {
            Err("The body is required: a JSON object.".into())
        } else {
            Ok((name, schema, None))
        };
    }
    if body.len() > MAX_BODY_BYTES {
        return Err("The body is too large (256 KiB at most).".into());
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => {}
        _ => return Err("The body must be a JSON object, for example {\"username\": \"…\", \"password\": \"…\"}.".into()),
    }
    let key = state
        .encryption_key()
        .ok_or("This server has no encryption key configured, so credentials cannot be saved.")?;
    let enc = vault::encrypt(key, body.as_bytes())?;
    Ok((name, schema, Some(enc)))
}

pub async fn create(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let (name, schema, enc) = match read_form(&state, &form, true) {
        Ok(v) => v,
        Err(e) => {
            return list_page(
                &state,
                &user,
                p,
                Some(e),
                None,
                form.text("name"),
                form.text("schema"),
            )
            .await;
        }
    };
    if queries::credential_name_taken(state.pool(), &p.id, &name, "").await? {
        return list_page(
            &state,
            &user,
            p,
            Some("A credential with that name exists.".into()),
            None,
            name,
            schema,
        )
        .await;
    }
    let enc = enc.ok_or_else(|| UiError::Internal("missing body".into()))?;
    queries::insert_credential(state.pool(), &p.id, &name, &schema, &enc).await?;
    Ok(Redirect::to(&format!("/projects/{}/credentials?done=created", p.id)).into_response())
}

#[derive(Template)]
#[template(path = "credential.html")]
struct CredentialPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    can_edit: bool,
    can_delete: bool,
    credential: CredentialRow,
    used_by: Vec<String>,
    error: Option<String>,
}

async fn edit_page(
    state: &UiState,
    user: &User,
    p: ProjectAccess,
    credential: CredentialRow,
    error: Option<String>,
) -> UiResult<Response> {
    let used_by = queries::jobs_using_credential(state.pool(), &credential.id).await?;
    let failed = error.is_some();
    let mut resp = html(CredentialPage {
        nav: Nav::of(user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        can_delete: p.role >= Role::Admin,
        project_id: p.id,
        project_name: p.name,
        credential,
        used_by,
        error,
    })?;
    if failed {
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

pub async fn edit_form(
    State(state): State<UiState>,
    user: User,
    Path((pid, cid)): Path<(String, String)>,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let c = queries::credential(state.pool(), &p.id, &cid).await?;
    edit_page(&state, &user, p, c, None).await
}

pub async fn update(
    State(state): State<UiState>,
    user: User,
    Path((pid, cid)): Path<(String, String)>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let c = queries::credential(state.pool(), &p.id, &cid).await?;
    let (name, schema, enc) = match read_form(&state, &form, false) {
        Ok(v) => v,
        Err(e) => return edit_page(&state, &user, p, c, Some(e)).await,
    };
    if queries::credential_name_taken(state.pool(), &p.id, &name, &c.id).await? {
        return edit_page(
            &state,
            &user,
            p,
            c,
            Some("A credential with that name exists.".into()),
        )
        .await;
    }
    queries::update_credential(state.pool(), &c.id, &name, &schema, enc.as_deref()).await?;
    Ok(Redirect::to(&format!("/projects/{}/credentials?done=updated", p.id)).into_response())
}

pub async fn delete(
    State(state): State<UiState>,
    user: User,
    Path((pid, cid)): Path<(String, String)>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Admin)?;
    let c = queries::credential(state.pool(), &p.id, &cid).await?;
    let used_by = queries::jobs_using_credential(state.pool(), &c.id).await?;
    if !used_by.is_empty() {
        let msg = format!(
            "Jobs still use this credential: {}. Change them first.",
            used_by.join(", ")
        );
        return edit_page(&state, &user, p, c, Some(msg)).await;
    }
    queries::delete_credential(state.pool(), &c.id).await?;
    Ok(Redirect::to(&format!("/projects/{}/credentials?done=deleted", p.id)).into_response())
}
