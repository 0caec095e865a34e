//! History: a project's work orders, newest first, with filters, keyset
//! pagination and "rerun selected".

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::Nav;
use crate::UiState;
use crate::access::{Role, project_access};
use crate::error::{UiError, UiResult, html};
use crate::forms::FormData;
use crate::queries::runs::{HistoryFilter, WORK_ORDER_STATES, WorkOrderRow, history};
use crate::queries::{self, WorkflowRow};
use crate::session::User;
use crate::time::{format_us, parse_datetime_local};

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    nav: Option<Nav>,
    csrf: String,
    project_id: String,
    project_name: String,
    can_edit: bool,
    states: &'static [&'static str],
    workflows: Vec<WorkflowRow>,
    f_state: String,
    f_workflow: String,
    f_from: String,
    f_to: String,
    f_text: String,
    rows: Vec<WorkOrderRow>,
    /// Query string of the next (older) page, when there is one.
    next_page: Option<String>,
    rerun_count: Option<usize>,
}

impl HistoryPage {
    fn when(&self, us: &i64) -> String {
        format_us(*us)
    }

    fn short(&self, id: &str) -> String {
        id.chars().take(8).collect()
    }
}

pub async fn list(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
    RawQuery(query): RawQuery,
) -> UiResult<Response> {
    let p = project_access(&state, &user, &pid).await?;
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let f_state = q.text("state");
    let f_workflow = q.text("workflow");
    let f_from = q.text("from");
    let f_to = q.text("to");
    let f_text = q.text("q");
    if !f_state.is_empty() && !WORK_ORDER_STATES.contains(&f_state.as_str()) {
        return Err(UiError::BadRequest("Unknown state.".into()));
    }
    let before = match (q.get("before_ts"), q.get("before_id")) {
        (Some(ts), Some(id)) => Some((
            ts.parse::<i64>()
                .map_err(|_| UiError::BadRequest("Bad page cursor.".into()))?,
            id.to_string(),
        )),
        _ => None,
    };
    let filter = HistoryFilter {
        state: (!f_state.is_empty()).then(|| f_state.clone()),
        workflow_id: (!f_workflow.is_empty()).then(|| f_workflow.clone()),
        from_us: parse_datetime_local(&f_from),
        to_us: parse_datetime_local(&f_to),
        text: (!f_text.is_empty()).then(|| f_text.clone()),
        before,
    };
    let (rows, more) = history(state.pool(), &p.id, &filter).await?;
    let next_page = match rows.last() {
        Some(last) if more => {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair("state", &f_state)
                .append_pair("workflow", &f_workflow)
                .append_pair("from", &f_from)
                .append_pair("to", &f_to)
                .append_pair("q", &f_text)
                .append_pair("before_ts", &last.inserted_at.to_string())
                .append_pair("before_id", &last.id);
            Some(s.finish())
        }
        _ => None,
    };
    let workflows = queries::workflows_of(state.pool(), &p.id).await?;
    let rerun_count = q.get("rerun").and_then(|n| n.parse().ok());
    html(HistoryPage {
        nav: Nav::of(&user),
        csrf: user.csrf.clone(),
        can_edit: p.can_edit(),
        project_id: p.id,
        project_name: p.name,
        states: WORK_ORDER_STATES,
        workflows,
        f_state,
        f_workflow,
        f_from,
        f_to,
        f_text,
        rows,
        next_page,
        rerun_count,
    })
}

/// Reruns the selected work orders (`ids`, many) from their start.
pub async fn rerun(
    State(state): State<UiState>,
    user: User,
    Path(pid): Path<String>,
    body: Bytes,
) -> UiResult<Response> {
    let form = FormData::parse(&body);
    user.check_csrf(&form)?;
    let p = project_access(&state, &user, &pid).await?;
    p.require(Role::Editor)?;
    let ids = form.all("ids");
    if ids.is_empty() {
        return Err(UiError::BadRequest(
            "Select at least one work order to rerun.".into(),
        ));
    }
    if ids.len() > 500 {
        return Err(UiError::BadRequest(
            "Rerun at most 500 work orders at once.".into(),
        ));
    }
    let created = queries::runs::rerun_work_orders(state.pool(), &p.id, &ids, &user.id).await?;
    if !created.is_empty() {
        state.notify_run_enqueued();
    }
    Ok(Redirect::to(&format!(
        "/projects/{}/history?rerun={}",
        p.id,
        created.len()
    ))
    .into_response())
}
