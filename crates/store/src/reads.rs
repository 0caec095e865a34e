//! Reads for the API and UI: lists with keyset pagination and the detail
//! views of design.md §8. Plain reads on pooled connections (never the
//! SQLite writer); each is a few indexed statements.

use serde::Serialize;

use crate::dynamic::{Bind, fetch_dynamic};
use crate::{Result, Store, StoreError, fetch_all, fetch_optional};

/// A page of rows and the cursor of the next page (`None` on the last).
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// A project.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub concurrency: Option<i32>,
    pub retention_policy: String,
    pub inserted_at: i64,
    pub updated_at: i64,
}

/// A workflow.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkflowRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub concurrency: Option<i32>,
    pub lock_version: i32,
    pub deleted_at: Option<i64>,
    pub inserted_at: i64,
    pub updated_at: i64,
}

/// A work order.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkOrderRow {
    pub id: String,
    pub workflow_id: String,
    pub snapshot_id: String,
    pub trigger_id: Option<String>,
    pub dataclip_id: Option<String>,
    pub state: String,
    pub idempotency_key: Option<String>,
    pub last_activity: i64,
    pub inserted_at: i64,
    pub updated_at: i64,
}

/// A run (without its steps).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub work_order_id: String,
    pub workflow_id: String,
    pub project_id: String,
    pub snapshot_id: String,
    pub starting_job_id: Option<String>,
    pub starting_trigger_id: Option<String>,
    pub dataclip_id: Option<String>,
    pub state: String,
    pub error_type: Option<String>,
    pub queue: String,
    pub priority: i32,
    pub options: String,
    pub worker_name: Option<String>,
    pub created_by: Option<String>,
    pub claimed_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub inserted_at: i64,
}

/// A step of a run.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub id: String,
    pub job_id: String,
    pub snapshot_id: Option<String>,
    pub credential_id: Option<String>,
    pub input_dataclip_id: Option<String>,
    pub output_dataclip_id: Option<String>,
    pub exit_reason: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A work order with its runs, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct WorkOrderDetail {
    #[serde(flatten)]
    pub work_order: WorkOrderRow,
    pub runs: Vec<RunRow>,
}

/// A run with its steps in execution order.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunRow,
    pub steps: Vec<StepRow>,
}

/// A dataclip; `body` and `request` are the stored JSON texts.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DataclipRow {
    pub id: String,
    pub project_id: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    pub body: Option<String>,
    pub request: Option<String>,
    pub wiped_at: Option<i64>,
    pub inserted_at: i64,
}

/// A log line.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogLineRow {
    pub id: String,
    pub run_id: String,
    pub step_id: Option<String>,
    pub level: String,
    pub source: String,
    pub message: String,
    pub timestamp: i64,
}

/// A credential with its encrypted body (decrypt with [`crate::Vault`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub schema: String,
    pub body_encrypted: String,
}

/// Filters for [`Store::list_work_orders`]; all optional.
#[derive(Debug, Clone, Default)]
pub struct WorkOrderFilter {
    pub project_id: Option<String>,
    pub workflow_id: Option<String>,
    /// Any of these states.
    pub states: Vec<String>,
    /// `inserted_at >= since` (µs).
    pub since: Option<i64>,
    /// `inserted_at < until` (µs).
    pub until: Option<i64>,
    /// Page size (1..=1000, default 50).
    pub limit: Option<u32>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

const RUN_COLS: &str = "id, work_order_id, workflow_id, project_id, snapshot_id, starting_job_id, starting_trigger_id, \
     dataclip_id, state, error_type, queue, priority, options, worker_name, created_by, claimed_at, started_at, \
     finished_at, inserted_at";

/// Cursor `<µs>.<id>` of a keyset page.
fn parse_cursor(c: &str) -> Result<(i64, String)> {
    let (ts, id) = c
        .split_once('.')
        .ok_or_else(|| StoreError::rejected("cursor", "is invalid"))?;
    let ts = ts
        .parse()
        .map_err(|_| StoreError::rejected("cursor", "is invalid"))?;
    Ok((ts, id.to_string()))
}

fn page_limit(l: Option<u32>) -> usize {
    l.unwrap_or(50).clamp(1, 1000) as usize
}

impl Store {
    /// Every project, by name.
    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        let mut c = self.read().await?;
        Ok(fetch_all!(
            c,
            ProjectRow,
            "SELECT id, name, description, concurrency, retention_policy, inserted_at, updated_at
             FROM projects ORDER BY name"
        )?)
    }

    /// One project.
    pub async fn project(&self, id: &str) -> Result<Option<ProjectRow>> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c,
            ProjectRow,
            "SELECT id, name, description, concurrency, retention_policy, inserted_at, updated_at
             FROM projects WHERE id = $1",
            id
        )?)
    }

    /// Workflows (not deleted), of one project or all, by name.
    pub async fn list_workflows(&self, project_id: Option<&str>) -> Result<Vec<WorkflowRow>> {
        let mut c = self.read().await?;
        Ok(fetch_all!(
            c,
            WorkflowRow,
            "SELECT id, project_id, name, concurrency, lock_version, deleted_at, inserted_at, updated_at
             FROM workflows WHERE deleted_at IS NULL AND ($1 IS NULL OR project_id = $1)
             ORDER BY project_id, name",
            project_id
        )?)
    }

    /// Work orders, newest first, filtered, in keyset pages.
    pub async fn list_work_orders(&self, f: WorkOrderFilter) -> Result<Page<WorkOrderRow>> {
        let limit = page_limit(f.limit);
        let cursor = f.cursor.as_deref().map(parse_cursor).transpose()?;
        let mut sql = String::from(
            "SELECT id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, idempotency_key,
                    last_activity, inserted_at, updated_at FROM work_orders WHERE 1 = 1",
        );
        // Placeholders are numbered as the binds below are pushed.
        let mut binds: Vec<Bind> = Vec::new();
        let next = |v: Bind, binds: &mut Vec<Bind>| {
            binds.push(v);
            format!("${}", binds.len())
        };
        if let Some(p) = &f.project_id {
            let ph = next(Bind::Text(p.clone()), &mut binds);
            sql +=
                &format!(" AND workflow_id IN (SELECT id FROM workflows WHERE project_id = {ph})");
        }
        if let Some(w) = &f.workflow_id {
            let ph = next(Bind::Text(w.clone()), &mut binds);
            sql += &format!(" AND workflow_id = {ph}");
        }
        if !f.states.is_empty() {
            let phs: Vec<String> = f
                .states
                .iter()
                .map(|s| next(Bind::Text(s.clone()), &mut binds))
                .collect();
            sql += &format!(" AND state IN ({})", phs.join(", "));
        }
        if let Some(s) = f.since {
            let ph = next(Bind::Int(s), &mut binds);
            sql += &format!(" AND inserted_at >= {ph}");
        }
        if let Some(u) = f.until {
            let ph = next(Bind::Int(u), &mut binds);
            sql += &format!(" AND inserted_at < {ph}");
        }
        if let Some((ts, id)) = cursor {
            let a = next(Bind::Int(ts), &mut binds);
            let b = next(Bind::Text(id), &mut binds);
            sql += &format!(" AND (inserted_at < {a} OR (inserted_at = {a} AND id < {b}))");
        }
        sql += &format!(" ORDER BY inserted_at DESC, id DESC LIMIT {}", limit + 1);
        let mut c = self.read().await?;
        let mut items: Vec<WorkOrderRow> = fetch_dynamic(&mut c.reborrow(), sql, binds).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|w| format!("{}.{}", w.inserted_at, w.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// A work order and its runs, oldest first.
    pub async fn work_order(&self, id: &str) -> Result<Option<WorkOrderDetail>> {
        let mut c = self.read().await?;
        let Some(work_order) = fetch_optional!(
            c,
            WorkOrderRow,
            "SELECT id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, idempotency_key,
                    last_activity, inserted_at, updated_at FROM work_orders WHERE id = $1",
            id
        )?
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE work_order_id = $1 ORDER BY inserted_at, id"
        );
        let runs = fetch_all!(c, RunRow, sqlx::AssertSqlSafe(sql.clone()), id)?;
        Ok(Some(WorkOrderDetail { work_order, runs }))
    }

    /// A run and its steps in execution order.
    pub async fn run(&self, id: &str) -> Result<Option<RunDetail>> {
        let mut c = self.read().await?;
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE id = $1");
        let Some(run) = fetch_optional!(c, RunRow, sqlx::AssertSqlSafe(sql.clone()), id)? else {
            return Ok(None);
        };
        let steps = fetch_all!(
            c,
            StepRow,
            "SELECT s.id, s.job_id, s.snapshot_id, s.credential_id, s.input_dataclip_id, s.output_dataclip_id,
                    s.exit_reason, s.error_type, s.error_message, s.started_at, s.finished_at
             FROM run_steps rs JOIN steps s ON s.id = rs.step_id
             WHERE rs.run_id = $1 ORDER BY rs.position",
            id
        )?;
        Ok(Some(RunDetail { run, steps }))
    }

    /// A dataclip (body as stored).
    pub async fn dataclip(&self, id: &str) -> Result<Option<DataclipRow>> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c,
            DataclipRow,
            "SELECT id, project_id, type, body, request, wiped_at, inserted_at FROM dataclips WHERE id = $1",
            id
        )?)
    }

    /// A credential (for `fetch:credential`).
    pub async fn credential(&self, id: &str) -> Result<Option<CredentialRow>> {
        let mut c = self.read().await?;
        Ok(fetch_optional!(
            c,
            CredentialRow,
            "SELECT id, project_id, name, schema, body_encrypted FROM credentials WHERE id = $1",
            id
        )?)
    }

    /// Wipes a dataclip's body and request (kept as a placeholder with
    /// `wiped_at`), e.g. a run's input right after `fetch:dataclip` when
    /// the run does not save dataclips. True if it was not wiped before.
    pub async fn wipe_dataclip(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |mut c| {
            Box::pin(async move {
                let now = crate::now_us();
                Ok(crate::exec!(
                    c,
                    "UPDATE dataclips SET body = NULL, request = NULL, wiped_at = $2 WHERE id = $1 AND wiped_at IS NULL",
                    id,
                    now
                )? == 1)
            })
        })
        .await
    }

    /// A run's log lines in order, in keyset pages (`limit` 1..=5000,
    /// default 500).
    pub async fn log_lines(
        &self,
        run_id: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<LogLineRow>> {
        let limit = limit.unwrap_or(500).clamp(1, 5000) as usize;
        let (ts, id) = match cursor {
            Some(c) => parse_cursor(c)?,
            None => (i64::MIN, String::new()),
        };
        let mut c = self.read().await?;
        let mut items = fetch_all!(
            c,
            LogLineRow,
            "SELECT id, run_id, step_id, level, source, message, timestamp FROM log_lines
             WHERE run_id = $1 AND (timestamp > $2 OR (timestamp = $2 AND id > $3))
             ORDER BY timestamp, id LIMIT $4",
            run_id,
            ts,
            id,
            (limit + 1) as i64
        )?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|l| format!("{}.{}", l.timestamp, l.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
