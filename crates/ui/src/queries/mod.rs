//! The SQL the pages run, portable between SQLite and PostgreSQL (`$n`
//! placeholders, BIGINT microseconds, booleans read through `CASE` so the Any
//! driver sees integers on both). Kept here, in the UI crate, until the store
//! crate offers the same queries; they follow the schema in
//! `crates/store/migrations`.

use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};

use crate::error::{UiError, UiResult};
use crate::time::now_us;

pub mod runs;

/// Begins a transaction that writes. On SQLite it takes the write lock at
/// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
/// writes fails at once with "database is locked" when the store's writer
/// committed in between (WAL cannot upgrade a stale read snapshot, and the
/// busy timeout does not apply to that), which made the UI's bulk rerun
/// flaky while runs were finishing.
pub async fn write_tx(pool: &AnyPool) -> UiResult<Transaction<'static, Any>> {
    let tx = if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    Ok(tx)
}

/// Characters of a dataclip shown in a page; past this, a download link.
pub const DATACLIP_PREVIEW_CHARS: i64 = 65_536;
/// Work orders per history page.
pub const HISTORY_PAGE: i64 = 50;

fn flag(row: &AnyRow, col: &str) -> UiResult<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub role: String,
}

/// Projects the user may open, by name. Superusers see all, as owners.
pub async fn projects_for(
    pool: &AnyPool,
    user_id: &str,
    superuser: bool,
) -> UiResult<Vec<ProjectRow>> {
    let rows = if superuser {
        sqlx::query("SELECT id, name, COALESCE(description, '') AS description, 'owner' AS role FROM projects ORDER BY name")
            .fetch_all(pool)
            .await?
    } else {
        sqlx::query(
            "SELECT p.id, p.name, COALESCE(p.description, '') AS description, pu.role FROM projects p \
             JOIN project_users pu ON pu.project_id = p.id WHERE pu.user_id = $1 ORDER BY p.name",
        )
        .bind(user_id)
        .fetch_all(pool)
        .await?
    };
    rows.iter()
        .map(|r| {
            Ok(ProjectRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                role: r.try_get("role")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct WorkflowRow {
    pub id: String,
    pub name: String,
    pub lock_version: i64,
}

pub async fn workflows_of(pool: &AnyPool, project_id: &str) -> UiResult<Vec<WorkflowRow>> {
    let rows = sqlx::query(
        "SELECT id, name, CAST(lock_version AS BIGINT) AS lock_version FROM workflows \
         WHERE project_id = $1 AND deleted_at IS NULL ORDER BY name",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(workflow_row).collect()
}

fn workflow_row(r: &AnyRow) -> UiResult<WorkflowRow> {
    Ok(WorkflowRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        lock_version: r.try_get("lock_version")?,
    })
}

pub async fn workflow(
    pool: &AnyPool,
    project_id: &str,
    workflow_id: &str,
) -> UiResult<WorkflowRow> {
    let r = sqlx::query(
        "SELECT id, name, CAST(lock_version AS BIGINT) AS lock_version FROM workflows \
         WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(workflow_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .ok_or(UiError::NotFound)?;
    workflow_row(&r)
}

#[derive(Debug, Clone)]
pub struct TriggerRow {
    pub id: String,
    pub kind: String,
    pub enabled: bool,
    pub custom_path: Option<String>,
    pub cron_expression: Option<String>,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub adaptor: String,
}

#[derive(Debug, Clone)]
pub struct EdgeRow {
    pub source_job_id: Option<String>,
    pub source_trigger_id: Option<String>,
    pub target_job_id: String,
    pub condition_type: String,
    pub condition_label: Option<String>,
    pub enabled: bool,
}

pub async fn triggers_of(pool: &AnyPool, workflow_id: &str) -> UiResult<Vec<TriggerRow>> {
    let rows = sqlx::query(
        "SELECT id, type, CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled, custom_path, cron_expression \
         FROM triggers WHERE workflow_id = $1 ORDER BY inserted_at, id",
    )
    .bind(workflow_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TriggerRow {
                id: r.try_get("id")?,
                kind: r.try_get("type")?,
                enabled: flag(r, "enabled")?,
                custom_path: r.try_get("custom_path")?,
                cron_expression: r.try_get("cron_expression")?,
            })
        })
        .collect()
}

pub async fn jobs_of(pool: &AnyPool, workflow_id: &str) -> UiResult<Vec<JobRow>> {
    let rows = sqlx::query(
        "SELECT id, name, adaptor FROM jobs WHERE workflow_id = $1 ORDER BY inserted_at, name",
    )
    .bind(workflow_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(JobRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                adaptor: r.try_get("adaptor")?,
            })
        })
        .collect()
}

pub async fn edges_of(pool: &AnyPool, workflow_id: &str) -> UiResult<Vec<EdgeRow>> {
    let rows = sqlx::query(
        "SELECT source_job_id, source_trigger_id, target_job_id, condition_type, condition_label, \
         CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled FROM edges WHERE workflow_id = $1 ORDER BY inserted_at, id",
    )
    .bind(workflow_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EdgeRow {
                source_job_id: r.try_get("source_job_id")?,
                source_trigger_id: r.try_get("source_trigger_id")?,
                target_job_id: r.try_get("target_job_id")?,
                condition_type: r.try_get("condition_type")?,
                condition_label: r.try_get("condition_label")?,
                enabled: flag(r, "enabled")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct JobDetail {
    pub id: String,
    pub name: String,
    pub body: String,
    pub adaptor: String,
    pub credential_id: Option<String>,
    pub workflow_id: String,
    pub workflow_name: String,
}

pub async fn job(pool: &AnyPool, project_id: &str, job_id: &str) -> UiResult<JobDetail> {
    let r = sqlx::query(
        "SELECT j.id, j.name, j.body, j.adaptor, j.credential_id, w.id AS workflow_id, w.name AS workflow_name \
         FROM jobs j JOIN workflows w ON w.id = j.workflow_id \
         WHERE j.id = $1 AND w.project_id = $2 AND w.deleted_at IS NULL",
    )
    .bind(job_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .ok_or(UiError::NotFound)?;
    Ok(JobDetail {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        body: r.try_get("body")?,
        adaptor: r.try_get("adaptor")?,
        credential_id: r.try_get("credential_id")?,
        workflow_id: r.try_get("workflow_id")?,
        workflow_name: r.try_get("workflow_name")?,
    })
}

/// Writes the workflow's current jobs, triggers and edges as a new immutable
/// snapshot and bumps its `lock_version`: every edit made in the UI becomes
/// a snapshot, so later runs execute exactly what was saved. The body has
/// the shape provisioning writes (`gabbro_store::provision::snapshot_body`,
/// Lightning's snapshot JSON): `{id, name, lock_version, jobs[{id, name,
/// adaptor, body, project_credential_id}], triggers[{id, type, enabled,
/// cron_expression, custom_path}], edges[{id, source_trigger_id,
/// source_job_id, target_job_id, condition_type, condition_expression,
/// condition_label, enabled}]}`; a test pins it.
pub async fn snapshot_workflow(
    tx: &mut Transaction<'static, Any>,
    workflow_id: &str,
) -> UiResult<String> {
    let now = now_us();
    sqlx::query(
        "UPDATE workflows SET lock_version = lock_version + 1, updated_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(workflow_id)
    .execute(&mut **tx)
    .await?;
    let w = sqlx::query(
        "SELECT id, name, CAST(lock_version AS BIGINT) AS lock_version \
         FROM workflows WHERE id = $1",
    )
    .bind(workflow_id)
    .fetch_one(&mut **tx)
    .await?;
    let lock_version: i64 = w.try_get("lock_version")?;
    let jobs: Vec<Value> = sqlx::query("SELECT id, name, body, adaptor, credential_id FROM jobs WHERE workflow_id = $1 ORDER BY inserted_at, id")
        .bind(workflow_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| -> UiResult<Value> {
            Ok(json!({
                "id": r.try_get::<String, _>("id")?,
                "name": r.try_get::<String, _>("name")?,
                "body": r.try_get::<String, _>("body")?,
                "adaptor": r.try_get::<String, _>("adaptor")?,
                "project_credential_id": r.try_get::<Option<String>, _>("credential_id")?,
            }))
        })
        .collect::<UiResult<_>>()?;
    let triggers: Vec<Value> = sqlx::query(
        "SELECT id, type, CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled, custom_path, cron_expression \
         FROM triggers WHERE workflow_id = $1 ORDER BY inserted_at, id",
    )
    .bind(workflow_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| -> UiResult<Value> {
        Ok(json!({
            "id": r.try_get::<String, _>("id")?,
            "type": r.try_get::<String, _>("type")?,
            "enabled": flag(r, "enabled")?,
            "custom_path": r.try_get::<Option<String>, _>("custom_path")?,
            "cron_expression": r.try_get::<Option<String>, _>("cron_expression")?,
        }))
    })
    .collect::<UiResult<_>>()?;
    let edges: Vec<Value> = sqlx::query(
        "SELECT id, source_job_id, source_trigger_id, target_job_id, condition_type, condition_expression, condition_label, \
         CAST(CASE WHEN enabled THEN 1 ELSE 0 END AS BIGINT) AS enabled FROM edges WHERE workflow_id = $1 ORDER BY inserted_at, id",
    )
    .bind(workflow_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| -> UiResult<Value> {
        Ok(json!({
            "id": r.try_get::<String, _>("id")?,
            "source_job_id": r.try_get::<Option<String>, _>("source_job_id")?,
            "source_trigger_id": r.try_get::<Option<String>, _>("source_trigger_id")?,
            "target_job_id": r.try_get::<String, _>("target_job_id")?,
            "condition_type": r.try_get::<String, _>("condition_type")?,
            "condition_expression": r.try_get::<Option<String>, _>("condition_expression")?,
            "condition_label": r.try_get::<Option<String>, _>("condition_label")?,
            "enabled": flag(r, "enabled")?,
        }))
    })
    .collect::<UiResult<_>>()?;
    let body = json!({
        "id": workflow_id,
        "name": w.try_get::<String, _>("name")?,
        "lock_version": lock_version,
        "jobs": jobs,
        "triggers": triggers,
        "edges": edges,
    });
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO workflow_snapshots (id, workflow_id, lock_version, body, inserted_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(workflow_id)
        .bind(lock_version)
        .bind(body.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Saves a job's body, adaptor and credential and snapshots its workflow.
pub async fn save_job(
    pool: &AnyPool,
    job: &JobDetail,
    body: &str,
    adaptor: &str,
    credential_id: Option<&str>,
) -> UiResult<String> {
    let mut tx = write_tx(pool).await?;
    sqlx::query("UPDATE jobs SET body = $1, adaptor = $2, credential_id = $3, updated_at = $4 WHERE id = $5")
        .bind(body)
        .bind(adaptor)
        .bind(credential_id)
        .bind(now_us())
        .bind(&job.id)
        .execute(&mut *tx)
        .await?;
    let snap = snapshot_workflow(&mut tx, &job.workflow_id).await?;
    tx.commit().await?;
    Ok(snap)
}

/// Turns a trigger on or off (and snapshots its workflow). Returns the
/// workflow's id; not found unless the trigger is in `project_id`.
pub async fn set_trigger_enabled(
    pool: &AnyPool,
    project_id: &str,
    trigger_id: &str,
    enabled: bool,
) -> UiResult<String> {
    let mut tx = write_tx(pool).await?;
    let workflow_id: String = sqlx::query_scalar(
        "SELECT t.workflow_id FROM triggers t JOIN workflows w ON w.id = t.workflow_id WHERE t.id = $1 AND w.project_id = $2",
    )
    .bind(trigger_id)
    .bind(project_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(UiError::NotFound)?;
    sqlx::query("UPDATE triggers SET enabled = $1, updated_at = $2 WHERE id = $3")
        .bind(enabled)
        .bind(now_us())
        .bind(trigger_id)
        .execute(&mut *tx)
        .await?;
    snapshot_workflow(&mut tx, &workflow_id).await?;
    tx.commit().await?;
    Ok(workflow_id)
}

#[derive(Debug, Clone)]
pub struct CredentialRow {
    pub id: String,
    pub name: String,
    pub schema: String,
    pub updated_at: i64,
}

pub async fn credentials_of(pool: &AnyPool, project_id: &str) -> UiResult<Vec<CredentialRow>> {
    let rows = sqlx::query(
        "SELECT id, name, schema, updated_at FROM credentials WHERE project_id = $1 ORDER BY name",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(credential_row).collect()
}

fn credential_row(r: &AnyRow) -> UiResult<CredentialRow> {
    Ok(CredentialRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        schema: r.try_get("schema")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub async fn credential(pool: &AnyPool, project_id: &str, id: &str) -> UiResult<CredentialRow> {
    let r = sqlx::query(
        "SELECT id, name, schema, updated_at FROM credentials WHERE id = $1 AND project_id = $2",
    )
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .ok_or(UiError::NotFound)?;
    credential_row(&r)
}

/// True when `name` is taken by another credential of the project.
pub async fn credential_name_taken(
    pool: &AnyPool,
    project_id: &str,
    name: &str,
    except_id: &str,
) -> UiResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credentials WHERE project_id = $1 AND name = $2 AND id <> $3",
    )
    .bind(project_id)
    .bind(name)
    .bind(except_id)
    .fetch_one(pool)
    .await?;
    Ok(n > 0)
}

pub async fn insert_credential(
    pool: &AnyPool,
    project_id: &str,
    name: &str,
    schema: &str,
    encrypted: &str,
) -> UiResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_us();
    sqlx::query(
        "INSERT INTO credentials (id, project_id, name, schema, body_encrypted, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(name)
    .bind(schema)
    .bind(encrypted)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(id)
}

pub async fn update_credential(
    pool: &AnyPool,
    id: &str,
    name: &str,
    schema: &str,
    encrypted: Option<&str>,
) -> UiResult<()> {
    match encrypted {
        Some(enc) => {
            sqlx::query("UPDATE credentials SET name = $1, schema = $2, body_encrypted = $3, updated_at = $4 WHERE id = $5")
                .bind(name)
                .bind(schema)
                .bind(enc)
                .bind(now_us())
                .bind(id)
                .execute(pool)
                .await?
        }
        None => {
            sqlx::query("UPDATE credentials SET name = $1, schema = $2, updated_at = $3 WHERE id = $4")
                .bind(name)
                .bind(schema)
                .bind(now_us())
                .bind(id)
                .execute(pool)
                .await?
        }
    };
    Ok(())
}

/// Names of the jobs that use a credential (a used credential is not deleted).
pub async fn jobs_using_credential(pool: &AnyPool, id: &str) -> UiResult<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT name FROM jobs WHERE credential_id = $1 ORDER BY name")
            .bind(id)
            .fetch_all(pool)
            .await?,
    )
}

pub async fn delete_credential(pool: &AnyPool, id: &str) -> UiResult<()> {
    sqlx::query("DELETE FROM credentials WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
