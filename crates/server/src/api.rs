//! The read API under `/api` (bearer token): projects, workflows, work
//! orders (filtered, keyset-paginated), runs with their steps, dataclips and
//! log lines. Shapes are in docs/api.md; timestamps are ISO-8601 UTC with
//! microseconds.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use gabbro_store::{fetch_all, fetch_optional, scalar};

use crate::auth::ApiUser;
use crate::error::ApiError;
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

/// Microseconds since the epoch as ISO-8601 UTC.
pub fn iso(us: Option<i64>) -> Value {
    match us.and_then(chrono::DateTime::from_timestamp_micros) {
        Some(t) => Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()),
        None => Value::Null,
    }
}

/// ISO-8601 (or µs since the epoch) to µs.
fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{field}: expected an ISO-8601 time such as 2026-01-31T12:00:00Z"
            ))
        })
}

/// A user's standing in a project.
enum Membership {
    /// The project does not exist (yet).
    NoProject,
    NotMember,
    /// A member, with this role (`owner`, `admin`, `editor`, `viewer`).
    Role(String),
}

async fn membership(
    state: &AppState,
    user: &ApiUser,
    project_id: &str,
) -> Result<Membership, ApiError> {
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let exists: Option<i64> = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM projects WHERE id = $1",
        project_id
    )?;
    if exists.unwrap_or(0) == 0 {
        return Ok(Membership::NoProject);
    }
    let role: Option<String> = scalar!(
        conn,
        String,
        "SELECT role FROM project_users WHERE project_id = $1 AND user_id = $2",
        project_id,
        &user.id
    )?;
    Ok(role.map_or(Membership::NotMember, Membership::Role))
}

/// May `user` see project `project_id`? Superusers see everything; others
/// the projects they are members of. With `allow_new`, a project that does
/// not exist yet counts as visible (anyone with a token may create one).
pub async fn is_member(
    state: &AppState,
    user: &ApiUser,
    project_id: &str,
    allow_new: bool,
) -> Result<bool, ApiError> {
    if user.role == "superuser" {
        return Ok(true);
    }
    Ok(match membership(state, user, project_id).await? {
        Membership::NoProject => allow_new,
        Membership::NotMember => false,
        Membership::Role(_) => true,
    })
}

/// May `user` change project `project_id` (provisioning)? Superusers, and
/// the project's owners, admins and editors — viewers may read only, as in
/// the web UI. A project that does not exist yet may be created by anyone
/// with a token (they become its owner).
pub async fn may_edit(
    state: &AppState,
    user: &ApiUser,
    project_id: &str,
) -> Result<bool, ApiError> {
    if user.role == "superuser" {
        return Ok(true);
    }
    Ok(match membership(state, user, project_id).await? {
        Membership::NoProject => true,
        Membership::NotMember => false,
        Membership::Role(role) => matches!(role.as_str(), "owner" | "admin" | "editor"),
    })
}

#[derive(sqlx::FromRow)]
struct ProjectRow {
    id: String,
    name: String,
    description: Option<String>,
    inserted_at: i64,
    updated_at: i64,
}

fn project_json(p: &ProjectRow) -> Value {
    json!({"id": p.id, "name": p.name, "description": p.description, "inserted_at": iso(Some(p.inserted_at)), "updated_at": iso(Some(p.updated_at))})
}

pub async fn list_projects(State(state): State<AppState>, user: ApiUser) -> ApiResult {
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let rows: Vec<ProjectRow> = fetch_all!(
        conn,
        ProjectRow,
        "SELECT p.id, p.name, p.description, p.inserted_at, p.updated_at FROM projects p WHERE ($1 = 'superuser' OR EXISTS (SELECT 1 FROM project_users pu WHERE pu.project_id = p.id AND pu.user_id = $2)) ORDER BY p.name",
        &user.role,
        &user.id
    )?;
    Ok(
        axum::Json(json!({"data": rows.iter().map(project_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

pub async fn show_project(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> ApiResult {
    if !is_member(&state, &user, &id, false).await? {
        return Err(ApiError::NotFound(format!("project {id} not found")));
    }
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let row: Option<ProjectRow> = fetch_optional!(
        conn,
        ProjectRow,
        "SELECT id, name, description, inserted_at, updated_at FROM projects WHERE id = $1",
        &id
    )?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("project {id} not found")))?;
    Ok(axum::Json(json!({"data": project_json(&row)})).into_response())
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: String,
    project_id: String,
    name: String,
    lock_version: i64,
    inserted_at: i64,
    updated_at: i64,
}

fn workflow_json(w: &WorkflowRow) -> Value {
    json!({"id": w.id, "project_id": w.project_id, "name": w.name, "lock_version": w.lock_version,
           "inserted_at": iso(Some(w.inserted_at)), "updated_at": iso(Some(w.updated_at))})
}

pub async fn list_workflows(
    State(state): State<AppState>,
    user: ApiUser,
    Path(project_id): Path<String>,
) -> ApiResult {
    if !is_member(&state, &user, &project_id, false).await? {
        return Err(ApiError::NotFound(format!(
            "project {project_id} not found"
        )));
    }
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let rows: Vec<WorkflowRow> = fetch_all!(
        conn,
        WorkflowRow,
        "SELECT id, project_id, name, CAST(lock_version AS BIGINT) AS lock_version, inserted_at, updated_at FROM workflows WHERE project_id = $1 AND deleted_at IS NULL ORDER BY name",
        &project_id
    )?;
    Ok(
        axum::Json(json!({"data": rows.iter().map(workflow_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// A workflow with its jobs, triggers and edges (its latest state, as the
/// provisioning document shows it).
pub async fn show_workflow(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> ApiResult {
    let row: Option<WorkflowRow> = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        fetch_optional!(
            conn,
            WorkflowRow,
            "SELECT id, project_id, name, CAST(lock_version AS BIGINT) AS lock_version, inserted_at, updated_at FROM workflows WHERE id = $1 AND deleted_at IS NULL",
            &id
        )?
    };
    let row = row.ok_or_else(|| ApiError::NotFound(format!("workflow {id} not found")))?;
    if !is_member(&state, &user, &row.project_id, false).await? {
        return Err(ApiError::NotFound(format!("workflow {id} not found")));
    }
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let body = gabbro_store::provision::snapshot_body(&mut conn, &id, row.lock_version).await?;
    let mut out = workflow_json(&row);
    for key in ["jobs", "triggers", "edges"] {
        out[key] = body[key].clone();
    }
    Ok(axum::Json(json!({"data": out})).into_response())
}

#[derive(Deserialize, Default)]
pub struct WorkOrderFilter {
    state: Option<String>,
    workflow_id: Option<String>,
    project_id: Option<String>,
    /// Only work orders created at or after this time (ISO-8601 or µs).
    inserted_after: Option<String>,
    /// Only work orders created before this time.
    inserted_before: Option<String>,
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct WorkOrderRow {
    id: String,
    workflow_id: String,
    snapshot_id: String,
    trigger_id: Option<String>,
    dataclip_id: Option<String>,
    state: String,
    last_activity: i64,
    inserted_at: i64,
    updated_at: i64,
}

fn work_order_json(w: &WorkOrderRow) -> Value {
    json!({"id": w.id, "workflow_id": w.workflow_id, "snapshot_id": w.snapshot_id, "trigger_id": w.trigger_id,
           "dataclip_id": w.dataclip_id, "state": w.state, "last_activity": iso(Some(w.last_activity)),
           "inserted_at": iso(Some(w.inserted_at)), "updated_at": iso(Some(w.updated_at))})
}

const WORK_ORDER_STATES: [&str; 13] = [
    "pending",
    "running",
    "rejected",
    "available",
    "claimed",
    "started",
    "success",
    "failed",
    "crashed",
    "cancelled",
    "killed",
    "exception",
    "lost",
];

/// Work orders, newest first; keyset pagination on (inserted_at, id) so a
/// page costs the same however deep it is.
pub async fn list_work_orders(
    State(state): State<AppState>,
    user: ApiUser,
    Query(f): Query<WorkOrderFilter>,
) -> ApiResult {
    if let Some(s) = &f.state
        && !WORK_ORDER_STATES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "state: {s:?} is not a work order state"
        )));
    }
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let after = f
        .inserted_after
        .as_deref()
        .map(|s| parse_time("inserted_after", s))
        .transpose()?
        .unwrap_or(i64::MIN);
    let before = f
        .inserted_before
        .as_deref()
        .map(|s| parse_time("inserted_before", s))
        .transpose()?
        .unwrap_or(i64::MAX);
    // The cursor is "<inserted_at µs>_<id>" of the last row of the previous page.
    let (cur_at, cur_id) = match &f.cursor {
        None => (i64::MAX, String::new()),
        Some(c) => {
            let (at, id) = c
                .split_once('_')
                .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor from this API".into()))?;
            (
                at.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest("cursor: not a cursor from this API".into())
                })?,
                id.to_string(),
            )
        }
    };
    let mut c = state.store.read().await?;
    let mut conn = c.reborrow();
    let rows: Vec<WorkOrderRow> = fetch_all!(
        conn,
        WorkOrderRow,
        "SELECT wo.id, wo.workflow_id, wo.snapshot_id, wo.trigger_id, wo.dataclip_id, wo.state, wo.last_activity, wo.inserted_at, wo.updated_at \
         FROM work_orders wo JOIN workflows w ON w.id = wo.workflow_id JOIN projects p ON p.id = w.project_id \
         WHERE ($1 = 'superuser' OR EXISTS (SELECT 1 FROM project_users pu WHERE pu.project_id = p.id AND pu.user_id = $2)) \
           AND ($3 = '' OR wo.state = $3) AND ($4 = '' OR wo.workflow_id = $4) AND ($5 = '' OR p.id = $5) \
           AND wo.inserted_at >= $6 AND wo.inserted_at < $7 \
           AND (wo.inserted_at < $8 OR (wo.inserted_at = $8 AND wo.id < $9) OR $9 = '') \
         ORDER BY wo.inserted_at DESC, wo.id DESC LIMIT $10",
        &user.role,
        &user.id,
        f.state.clone().unwrap_or_default(),
        f.workflow_id.clone().unwrap_or_default(),
        f.project_id.clone().unwrap_or_default(),
        after,
        before,
        cur_at,
        &cur_id,
        limit
    )?;
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| format!("{}_{}", r.inserted_at, r.id))
    } else {
        None
    };
    Ok(axum::Json(
        json!({"data": rows.iter().map(work_order_json).collect::<Vec<_>>(), "next_cursor": next}),
    )
    .into_response())
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    work_order_id: String,
    project_id: String,
    snapshot_id: String,
    state: String,
    error_type: Option<String>,
    dataclip_id: Option<String>,
    starting_job_id: Option<String>,
    starting_trigger_id: Option<String>,
    inserted_at: i64,
    claimed_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

fn run_json(r: &RunRow) -> Value {
    json!({"id": r.id, "work_order_id": r.work_order_id, "snapshot_id": r.snapshot_id, "state": r.state, "error_type": r.error_type,
           "dataclip_id": r.dataclip_id, "starting_job_id": r.starting_job_id, "starting_trigger_id": r.starting_trigger_id,
           "inserted_at": iso(Some(r.inserted_at)), "claimed_at": iso(r.claimed_at), "started_at": iso(r.started_at), "finished_at": iso(r.finished_at)})
}

/// A work order with its runs, oldest first.
pub async fn show_work_order(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> ApiResult {
    let (wo, project_id, runs) = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        let wo: Option<WorkOrderRow> = fetch_optional!(
            conn,
            WorkOrderRow,
            "SELECT id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at FROM work_orders WHERE id = $1",
            &id
        )?;
        let wo = wo.ok_or_else(|| ApiError::NotFound(format!("work order {id} not found")))?;
        let project_id: Option<String> = scalar!(
            conn,
            String,
            "SELECT project_id FROM workflows WHERE id = $1",
            &wo.workflow_id
        )?;
        let runs: Vec<RunRow> = fetch_all!(
            conn,
            RunRow,
            "SELECT id, work_order_id, project_id, snapshot_id, state, error_type, dataclip_id, starting_job_id, starting_trigger_id, inserted_at, claimed_at, started_at, finished_at FROM runs WHERE work_order_id = $1 ORDER BY inserted_at, id",
            &id
        )?;
        (wo, project_id.unwrap_or_default(), runs)
    };
    if !is_member(&state, &user, &project_id, false).await? {
        return Err(ApiError::NotFound(format!("work order {id} not found")));
    }
    let mut out = work_order_json(&wo);
    out["runs"] = Value::Array(runs.iter().map(run_json).collect());
    Ok(axum::Json(out).into_response())
}

#[derive(sqlx::FromRow)]
struct StepRow {
    id: String,
    job_id: String,
    exit_reason: Option<String>,
    error_type: Option<String>,
    error_message: Option<String>,
    input_dataclip_id: Option<String>,
    output_dataclip_id: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

/// A run with its steps in execution order.
pub async fn show_run(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> ApiResult {
    let (run, steps) = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        let run: Option<RunRow> = fetch_optional!(
            conn,
            RunRow,
            "SELECT id, work_order_id, project_id, snapshot_id, state, error_type, dataclip_id, starting_job_id, starting_trigger_id, inserted_at, claimed_at, started_at, finished_at FROM runs WHERE id = $1",
            &id
        )?;
        let run = run.ok_or_else(|| ApiError::NotFound(format!("run {id} not found")))?;
        let steps: Vec<StepRow> = fetch_all!(
            conn,
            StepRow,
            "SELECT s.id, s.job_id, s.exit_reason, s.error_type, s.error_message, s.input_dataclip_id, s.output_dataclip_id, s.started_at, s.finished_at \
             FROM run_steps rs JOIN steps s ON s.id = rs.step_id WHERE rs.run_id = $1 ORDER BY rs.position, s.started_at, s.id",
            &id
        )?;
        (run, steps)
    };
    if !is_member(&state, &user, &run.project_id, false).await? {
        return Err(ApiError::NotFound(format!("run {id} not found")));
    }
    let mut out = run_json(&run);
    out["steps"] = Value::Array(
        steps
            .iter()
            .map(|s| {
                json!({"id": s.id, "job_id": s.job_id, "exit_reason": s.exit_reason, "error_type": s.error_type, "error_message": s.error_message,
                       "input_dataclip_id": s.input_dataclip_id, "output_dataclip_id": s.output_dataclip_id,
                       "started_at": iso(s.started_at), "finished_at": iso(s.finished_at)})
            })
            .collect(),
    );
    Ok(axum::Json(out).into_response())
}

#[derive(sqlx::FromRow)]
struct DataclipRow {
    project_id: String,
    body: Option<String>,
    wiped_at: Option<i64>,
}

/// The dataclip's body, as stored (never re-encoded).
pub async fn show_dataclip(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
) -> ApiResult {
    let row: Option<DataclipRow> = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        fetch_optional!(
            conn,
            DataclipRow,
            "SELECT project_id, body, wiped_at FROM dataclips WHERE id = $1",
            &id
        )?
    };
    let row = row.ok_or_else(|| ApiError::NotFound(format!("dataclip {id} not found")))?;
    if !is_member(&state, &user, &row.project_id, false).await? {
        return Err(ApiError::NotFound(format!("dataclip {id} not found")));
    }
    match (row.body, row.wiped_at) {
        (Some(body), None) => Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response()),
        _ => Ok((
            axum::http::StatusCode::GONE,
            axum::Json(json!({"error": "wiped", "message": format!("dataclip {id} was wiped by the retention policy")})),
        )
            .into_response()),
    }
}

#[derive(Deserialize, Default)]
pub struct LogPage {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: String,
    step_id: Option<String>,
    level: String,
    source: String,
    message: String,
    timestamp: i64,
}

/// A run's log lines in time order, paged by (timestamp, id).
pub async fn run_log_lines(
    State(state): State<AppState>,
    user: ApiUser,
    Path(id): Path<String>,
    Query(page): Query<LogPage>,
) -> ApiResult {
    let limit = page.limit.unwrap_or(500).clamp(1, 5000);
    let (cur_at, cur_id) = match &page.cursor {
        None => (i64::MIN, String::new()),
        Some(c) => {
            let (at, id) = c
                .split_once('_')
                .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor from this API".into()))?;
            (
                at.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest("cursor: not a cursor from this API".into())
                })?,
                id.to_string(),
            )
        }
    };
    let (project_id, rows) = {
        let mut c = state.store.read().await?;
        let mut conn = c.reborrow();
        let project_id: Option<String> = scalar!(
            conn,
            String,
            "SELECT project_id FROM runs WHERE id = $1",
            &id
        )?;
        let project_id =
            project_id.ok_or_else(|| ApiError::NotFound(format!("run {id} not found")))?;
        let rows: Vec<LogRow> = fetch_all!(
            conn,
            LogRow,
            "SELECT id, step_id, level, source, message, timestamp FROM log_lines WHERE run_id = $1 \
             AND (timestamp > $2 OR (timestamp = $2 AND id > $3)) ORDER BY timestamp, id LIMIT $4",
            &id,
            cur_at,
            &cur_id,
            limit
        )?;
        (project_id, rows)
    };
    if !is_member(&state, &user, &project_id, false).await? {
        return Err(ApiError::NotFound(format!("run {id} not found")));
    }
    let next = if rows.len() as i64 == limit {
        rows.last().map(|r| format!("{}_{}", r.timestamp, r.id))
    } else {
        None
    };
    let data: Vec<Value> = rows
        .iter()
        .map(|l| json!({"id": l.id, "run_id": id, "step_id": l.step_id, "level": l.level, "source": l.source, "message": l.message, "timestamp": iso(Some(l.timestamp))}))
        .collect();
    Ok(axum::Json(json!({"data": data, "next_cursor": next})).into_response())
}
