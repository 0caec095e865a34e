//! The workflow page (diagram, webhook URLs, cron in words, triggers on and
//! off) and the job editor. Every save writes a new snapshot.

use std::str::FromStr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use super::Nav;
use crate::UiState;
use crate::access::{Role, project_access};
use crate::error::{UiResult, html};
use crate::forms::FormData;
use crate::queries::{self, CredentialRow, JobRow};
use crate::session::User;

pub struct TriggerView {
    pub id: String,
    pub kind: String,
    pub enabled: bool,
    pub webhook_url: Option<String>,
    pub cron_expression: Option<String>,
    pub cron_words: Option<String>,
}

/// "At 09:00, on Monday…" for a cron expression, or why it cannot be read.
pub fn describe_cron(expr: &str) -> String {
    match croner::Cron::from_str(expr) {
        Ok(c) => c.describe(),
        Err(e) => format!("not a valid cron expression ({e})"),
    }
}

/// The server's own base URL as the browser sees it.
fn base_url(state: &UiState, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:4000");
    let https = state.secure_cookies()
        || headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    workflow_name: String,
    lock_version: i64,
    can_edit: bool,
    diagram: String,
    triggers: Vec<TriggerView>,
    jobs: Vec<JobRow>,
}

pub async fn show(
    State(state): State<UiState>,
    user: User,
    headers: HeaderMap,
    Path((pid, wid)): Path<(String, String)>,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let w = queries::workflow(state.pool(), &p.id, &wid).await?;
    let triggers = queries::triggers_of(state.pool(), &w.id).await?;
    let jobs = queries::jobs_of(state.pool(), &w.id).await?;
    let edges = queries::edges_of(state.pool(), &w.id).await?;
    let diagram = crate::diagram::render(&triggers, &jobs, &edges, |jid| {
        format!("/projects/{}/jobs/{jid}", p.id)
    });
    let base = base_url(&state, &headers);
    let triggers = triggers
        .into_iter()
        .map(|t| TriggerView {
            webhook_url: (t.kind == "webhook")
                .then(|| format!("{base}/i/{}", t.custom_path.as_deref().unwrap_or(&t.id))),
            cron_words: t.cron_expression.as_deref().map(describe_cron),
            cron_expression: t.cron_expression,
            id: t.id,
            kind: t.kind,
            enabled: t.enabled,
        })
        .collect();
    html(WorkflowPage {
        nav: Nav::of(&user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        project_id: p.id,
        project_name: p.name,
        workflow_name: w.name,
        lock_version: w.lock_version,
        diagram,
        triggers,
        jobs,
    })
}

pub async fn set_trigger_enabled(
    State(state): State<UiState>,
    user: User,
    Path((pid, tid)): Path<(String, String)>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let enabled = form.get("enabled") == Some("true");
    let wid = queries::set_trigger_enabled(state.pool(), &p.id, &tid, enabled).await?;
    Ok(Redirect::to(&format!("/projects/{}/workflows/{wid}", p.id)).into_response())
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    workflow_id: String,
    workflow_name: String,
    job_id: String,
    job_name: String,
    body: String,
    adaptor: String,
    credential_id: String,
    credentials: Vec<CredentialRow>,
    can_edit: bool,
    saved: bool,
    error: Option<String>,
}

pub async fn job_form(
    State(state): State<UiState>,
    user: User,
    Path((pid, jid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let job = queries::job(state.pool(), &p.id, &jid).await?;
    let credentials = queries::credentials_of(state.pool(), &p.id).await?;
    let saved = FormData::parse(query.unwrap_or_default().as_bytes()).get("saved") == Some("1");
    html(JobPage {
        nav: Nav::of(&user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        project_id: p.id,
        project_name: p.name,
        workflow_id: job.workflow_id,
        workflow_name: job.workflow_name,
        job_id: job.id,
        job_name: job.name,
        body: job.body,
        adaptor: job.adaptor,
        credential_id: job.credential_id.unwrap_or_default(),
        credentials,
        saved,
        error: None,
    })
}

/// Adaptor specs look like `@scope/name@version` or `name@version`.
fn valid_adaptor(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@/.-_^~*".contains(c))
}

pub async fn save_job(
    State(state): State<UiState>,
    user: User,
    Path((pid, jid)): Path<(String, String)>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let job = queries::job(state.pool(), &p.id, &jid).await?;
    let credentials = queries::credentials_of(state.pool(), &p.id).await?;
    let new_body = form.get("body").unwrap_or("").replace("\r\n", "\n");
    let adaptor = form.text("adaptor");
    let credential = form.text("credential_id");
    let error = if !valid_adaptor(&adaptor) {
        Some("The adaptor must look like @openfn/language-http@7.".to_string())
    } else if !credential.is_empty() && !credentials.iter().any(|c| c.id == credential) {
        Some("That credential is not in this project.".to_string())
    } else {
        None
    };
    if let Some(error) = error {
        let mut resp = html(JobPage {
            nav: Nav::of(&user),
            csrf: user.csrf.clone(),
            can_edit: true,
            project_id: p.id,
            project_name: p.name,
            workflow_id: job.workflow_id,
            workflow_name: job.workflow_name,
            job_id: job.id,
            job_name: job.name,
            body: new_body,
            adaptor,
            credential_id: credential,
            credentials,
            saved: false,
            error: Some(error),
        })?;
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        return Ok(resp);
    }
    let credential_id = (!credential.is_empty()).then_some(credential.as_str());
    queries::save_job(state.pool(), &job, &new_body, &adaptor, credential_id).await?;
    // Post/redirect/get: a reload does not save twice.
    Ok(Redirect::to(&format!("/projects/{}/jobs/{}?saved=1", p.id, job.id)).into_response())
}
