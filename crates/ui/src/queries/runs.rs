//! History, runs, steps, logs, dataclips and the queue: the read side of the
//! run ledger, plus the two writes the UI makes to it (retry and rerun).

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

use super::{DATACLIP_PREVIEW_CHARS, HISTORY_PAGE};
use crate::error::{UiError, UiResult};
use crate::time::now_us;

/// The run states after which nothing changes.
pub const FINAL_RUN_STATES: &[&str] = &[
    "success",
    "failed",
    "crashed",
    "cancelled",
    "killed",
    "exception",
    "lost",
];
pub const RUN_STATES: &[&str] = &[
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
pub const WORK_ORDER_STATES: &[&str] = &[
    "pending",
    "running",
    "rejected",
    "success",
    "failed",
    "crashed",
    "cancelled",
    "killed",
    "exception",
    "lost",
];

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub state: Option<String>,
    pub workflow_id: Option<String>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    /// Text to find in the work order's input dataclip (case-insensitive).
    pub text: Option<String>,
    /// Keyset cursor: show work orders strictly older than this (inserted_at, id).
    pub before: Option<(i64, String)>,
}

#[derive(Debug, Clone)]
pub struct WorkOrderRow {
    pub id: String,
    pub state: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub inserted_at: i64,
    pub last_activity: i64,
    pub dataclip_id: Option<String>,
    pub runs: Vec<RunBrief>,
}

#[derive(Debug, Clone)]
pub struct RunBrief {
    pub id: String,
    pub state: String,
}

/// A value bound to a `$n` placeholder of a query built at run time.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

/// SQL assembled from fixed fragments; every user value is a bound
/// parameter, numbered in the order it is added.
struct SqlBuilder {
    sql: String,
    binds: Vec<Bind>,
}

impl SqlBuilder {
    fn new(sql: &str) -> Self {
        SqlBuilder {
            sql: sql.to_string(),
            binds: Vec::new(),
        }
    }

    /// Appends `frag`, each `$?` in it taking the next value of `values`.
    fn push(&mut self, frag: &str, values: Vec<Bind>) {
        let mut parts = frag.split("$?");
        if let Some(first) = parts.next() {
            self.sql.push_str(first);
        }
        for (part, v) in parts.zip(values) {
            self.binds.push(v);
            self.sql.push_str(&format!("${}", self.binds.len()));
            self.sql.push_str(part);
        }
    }

    async fn fetch_all(self, pool: &AnyPool) -> UiResult<Vec<AnyRow>> {
        let mut q = sqlx::query(AssertSqlSafe(self.sql));
        for b in self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        Ok(q.fetch_all(pool).await?)
    }
}

const HISTORY_COLUMNS: &str = "SELECT wo.id, wo.state, wo.workflow_id, w.name AS workflow_name, wo.inserted_at, wo.last_activity, wo.dataclip_id";

/// The filters every history query shares (project, state, workflow, time
/// range, page cursor). `ts`/`id` name the columns the order and cursor use.
fn push_filters(b: &mut SqlBuilder, project_id: &str, f: &HistoryFilter, ts: &str, id: &str) {
    b.push(
        " WHERE w.project_id = $?",
        vec![Bind::Text(project_id.to_string())],
    );
    if let Some(s) = &f.state {
        b.push(" AND wo.state = $?", vec![Bind::Text(s.clone())]);
    }
    if let Some(w) = &f.workflow_id {
        b.push(" AND wo.workflow_id = $?", vec![Bind::Text(w.clone())]);
    }
    if let Some(t) = f.from_us {
        b.push(&format!(" AND {ts} >= $?"), vec![Bind::Int(t)]);
    }
    if let Some(t) = f.to_us {
        b.push(&format!(" AND {ts} < $?"), vec![Bind::Int(t)]);
    }
    if let Some((t, cid)) = &f.before {
        // The first term lets the index seek to the cursor; the OR alone
        // would make it scan from the newest work order.
        b.push(
            &format!(" AND {ts} <= $? AND ({ts} < $? OR ({ts} = $? AND {id} > $?))"),
            vec![
                Bind::Int(*t),
                Bind::Int(*t),
                Bind::Int(*t),
                Bind::Text(cid.clone()),
            ],
        );
    }
}

fn work_order_row(r: &AnyRow) -> UiResult<WorkOrderRow> {
    Ok(WorkOrderRow {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        workflow_id: r.try_get("workflow_id")?,
        workflow_name: r.try_get("workflow_name")?,
        inserted_at: r.try_get("inserted_at")?,
        last_activity: r.try_get("last_activity")?,
        dataclip_id: r.try_get("dataclip_id")?,
        runs: Vec::new(),
    })
}

/// Work orders whose input contains every word of `words`: those already
/// indexed are read from `ui_search_terms` (newest first, one page); those
/// the indexer has not reached yet (the newest few seconds) are checked
/// here, page by page. The second set is entirely newer in history order,
/// so it comes first.
async fn search_history(
    pool: &AnyPool,
    project_id: &str,
    f: &HistoryFilter,
    words: &[String],
) -> UiResult<Vec<WorkOrderRow>> {
    let limit = HISTORY_PAGE + 1;
    let mut out = Vec::new();
    let progress = crate::search::progress(pool).await?;
    // 1. Not yet indexed: after the indexer's position.
    let mut cursor = f.before.clone();
    loop {
        let mut b = SqlBuilder::new(&format!(
            "{HISTORY_COLUMNS}, substr(d.body, 1, 65536) AS prefix FROM work_orders wo JOIN workflows w ON w.id = wo.workflow_id \
             LEFT JOIN dataclips d ON d.id = wo.dataclip_id"
        ));
        let page = HistoryFilter {
            before: cursor.clone(),
            ..f.clone()
        };
        push_filters(&mut b, project_id, &page, "wo.inserted_at", "wo.id");
        if let Some((pts, pid)) = &progress {
            b.push(
                " AND wo.inserted_at >= $? AND (wo.inserted_at > $? OR wo.id < $?)",
                vec![Bind::Int(*pts), Bind::Int(*pts), Bind::Text(pid.clone())],
            );
        }
        b.push(" ORDER BY wo.inserted_at DESC, wo.id LIMIT 200", vec![]);
        let rows = b.fetch_all(pool).await?;
        let n = rows.len();
        for r in &rows {
            let prefix: Option<String> = r.try_get("prefix")?;
            let have = crate::search::words(prefix.as_deref().unwrap_or(""));
            if words.iter().all(|w| have.contains(w)) {
                out.push(work_order_row(r)?);
                if out.len() as i64 >= limit {
                    return Ok(out);
                }
            }
        }
        match rows.last() {
            Some(last) if n == 200 => {
                cursor = Some((last.try_get("inserted_at")?, last.try_get("id")?))
            }
            _ => break,
        }
    }
    if progress.is_none() {
        return Ok(out);
    }
    // 2. Indexed: driven by the first word's index entries, newest first.
    let mut b = SqlBuilder::new(&format!(
        "{HISTORY_COLUMNS} FROM ui_search_terms t JOIN work_orders wo ON wo.id = t.work_order_id JOIN workflows w ON w.id = wo.workflow_id"
    ));
    push_filters(&mut b, project_id, f, "t.inserted_at", "t.work_order_id");
    b.push(" AND t.term = $?", vec![Bind::Text(words[0].clone())]);
    for w in &words[1..] {
        b.push(
            " AND EXISTS (SELECT 1 FROM ui_search_terms t2 WHERE t2.term = $? AND t2.inserted_at = t.inserted_at AND t2.work_order_id = t.work_order_id)",
            vec![Bind::Text(w.clone())],
        );
    }
    b.push(
        &format!(
            " ORDER BY t.inserted_at DESC, t.work_order_id LIMIT {}",
            limit - out.len() as i64
        ),
        vec![],
    );
    for r in b.fetch_all(pool).await? {
        out.push(work_order_row(&r)?);
    }
    Ok(out)
}

/// One page of a project's work orders, newest first, and whether more
/// follow. Keyset pagination on (inserted_at DESC, id ASC), the order the
/// indexes are built in (work_orders_inserted, _workflow_inserted,
/// _state_inserted), so every filter reads its index forward and stops
/// after one page. Text matches whole words of the input dataclip
/// (case-insensitive), as Lightning's search vector does.
pub async fn history(
    pool: &AnyPool,
    project_id: &str,
    f: &HistoryFilter,
) -> UiResult<(Vec<WorkOrderRow>, bool)> {
    let rows: Vec<WorkOrderRow> = match &f.text {
        Some(text) => {
            let words = crate::search::words(text);
            if words.is_empty() {
                Vec::new()
            } else {
                search_history(pool, project_id, f, &words).await?
            }
        }
        None => {
            let mut b = SqlBuilder::new(&format!(
                "{HISTORY_COLUMNS} FROM work_orders wo JOIN workflows w ON w.id = wo.workflow_id"
            ));
            push_filters(&mut b, project_id, f, "wo.inserted_at", "wo.id");
            b.push(
                &format!(
                    " ORDER BY wo.inserted_at DESC, wo.id LIMIT {}",
                    HISTORY_PAGE + 1
                ),
                vec![],
            );
            b.fetch_all(pool)
                .await?
                .iter()
                .map(work_order_row)
                .collect::<UiResult<_>>()?
        }
    };
    let more = rows.len() as i64 > HISTORY_PAGE;
    let mut out: Vec<WorkOrderRow> = rows.into_iter().take(HISTORY_PAGE as usize).collect();
    // Runs of the shown work orders, one query.
    if !out.is_empty() {
        let placeholders: Vec<String> = (1..=out.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, state, work_order_id FROM runs WHERE work_order_id IN ({}) ORDER BY inserted_at, id",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for wo in &out {
            q = q.bind(wo.id.clone());
        }
        for r in q.fetch_all(pool).await? {
            let wo_id: String = r.try_get("work_order_id")?;
            if let Some(wo) = out.iter_mut().find(|w| w.id == wo_id) {
                wo.runs.push(RunBrief {
                    id: r.try_get("id")?,
                    state: r.try_get("state")?,
                });
            }
        }
    }
    Ok((out, more))
}

#[derive(Debug, Clone)]
pub struct RunDetail {
    pub id: String,
    pub state: String,
    pub error_type: Option<String>,
    pub work_order_id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub dataclip_id: Option<String>,
    pub inserted_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker_name: Option<String>,
}

impl RunDetail {
    pub fn is_final(&self) -> bool {
        FINAL_RUN_STATES.contains(&self.state.as_str())
    }
}

pub async fn run(pool: &AnyPool, project_id: &str, run_id: &str) -> UiResult<RunDetail> {
    let r = sqlx::query(
        "SELECT r.id, r.state, r.error_type, r.work_order_id, r.workflow_id, w.name AS workflow_name, r.dataclip_id, \
         r.inserted_at, r.started_at, r.finished_at, r.worker_name \
         FROM runs r JOIN workflows w ON w.id = r.workflow_id WHERE r.id = $1 AND r.project_id = $2",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?
    .ok_or(UiError::NotFound)?;
    Ok(RunDetail {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        error_type: r.try_get("error_type")?,
        work_order_id: r.try_get("work_order_id")?,
        workflow_id: r.try_get("workflow_id")?,
        workflow_name: r.try_get("workflow_name")?,
        dataclip_id: r.try_get("dataclip_id")?,
        inserted_at: r.try_get("inserted_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        worker_name: r.try_get("worker_name")?,
    })
}

pub async fn run_state(pool: &AnyPool, run_id: &str) -> UiResult<String> {
    Ok(sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await?)
}

#[derive(Debug, Clone)]
pub struct StepRow {
    pub id: String,
    pub job_id: String,
    pub job_name: String,
    pub position: i64,
    pub exit_reason: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub input_dataclip_id: Option<String>,
    pub output_dataclip_id: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The run's steps in execution order (including steps reused from the run it retried).
pub async fn steps(pool: &AnyPool, run_id: &str) -> UiResult<Vec<StepRow>> {
    let rows = sqlx::query(
        "SELECT s.id, s.job_id, COALESCE(j.name, s.job_id) AS job_name, CAST(rs.position AS BIGINT) AS position, \
         s.exit_reason, s.error_type, s.error_message, s.input_dataclip_id, s.output_dataclip_id, s.started_at, s.finished_at \
         FROM run_steps rs JOIN steps s ON s.id = rs.step_id LEFT JOIN jobs j ON j.id = s.job_id \
         WHERE rs.run_id = $1 ORDER BY rs.position, s.started_at",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(step_row).collect()
}

fn step_row(r: &AnyRow) -> UiResult<StepRow> {
    Ok(StepRow {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        job_name: r.try_get("job_name")?,
        position: r.try_get("position")?,
        exit_reason: r.try_get("exit_reason")?,
        error_type: r.try_get("error_type")?,
        error_message: r.try_get("error_message")?,
        input_dataclip_id: r.try_get("input_dataclip_id")?,
        output_dataclip_id: r.try_get("output_dataclip_id")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub id: String,
    pub step_id: Option<String>,
    pub level: String,
    pub source: String,
    pub message: String,
    pub timestamp: i64,
}

/// Log lines of a run after the cursor (timestamp, id), oldest first, at most `limit`.
pub async fn log_lines_after(
    pool: &AnyPool,
    run_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> UiResult<Vec<LogLine>> {
    let (ts, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(
        "SELECT id, step_id, level, source, message, timestamp FROM log_lines \
         WHERE run_id = $1 AND (timestamp > $2 OR (timestamp = $3 AND id > $4)) ORDER BY timestamp, id LIMIT $5",
    )
    .bind(run_id)
    .bind(ts)
    .bind(ts)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LogLine {
                id: r.try_get("id")?,
                step_id: r.try_get("step_id")?,
                level: r.try_get("level")?,
                source: r.try_get("source")?,
                message: r.try_get("message")?,
                timestamp: r.try_get("timestamp")?,
            })
        })
        .collect()
}

/// The first [`DATACLIP_PREVIEW_CHARS`] characters of a dataclip and its
/// full size in bytes: the database cuts the prefix, so a large body never
/// travels whole into the server.
#[derive(Debug, Clone)]
pub struct DataclipPreview {
    pub id: String,
    pub kind: String,
    pub prefix: Option<String>,
    pub bytes: i64,
    pub wiped: bool,
}

impl DataclipPreview {
    pub fn truncated(&self) -> bool {
        self.prefix
            .as_ref()
            .is_some_and(|p| (p.len() as i64) < self.bytes)
    }
}

pub async fn dataclip_preview(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> UiResult<Option<DataclipPreview>> {
    let r = sqlx::query(
        "SELECT id, type, substr(body, 1, 65536) AS prefix, CAST(COALESCE(octet_length(body), 0) AS BIGINT) AS bytes, \
         CAST(CASE WHEN wiped_at IS NULL THEN 0 ELSE 1 END AS BIGINT) AS wiped \
         FROM dataclips WHERE id = $1 AND project_id = $2",
    )
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    debug_assert_eq!(DATACLIP_PREVIEW_CHARS, 65_536);
    r.map(|r| {
        Ok(DataclipPreview {
            id: r.try_get("id")?,
            kind: r.try_get("type")?,
            prefix: r.try_get("prefix")?,
            bytes: r.try_get("bytes")?,
            wiped: r.try_get::<i64, _>("wiped")? != 0,
        })
    })
    .transpose()
}

/// Characters `[start, start+len)` (1-based, as SQL's substr) of a dataclip
/// body, for streaming a download chunk by chunk. None past the end.
/// 1 MiB chunks: measured with a 50 MB body, 4 MiB chunks made downloads
/// 3x faster but raised peak memory by 27-50 MiB (docs/ui.md).
pub async fn dataclip_chunk(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    start: i64,
) -> UiResult<Option<String>> {
    let chunk: Option<Option<String>> = sqlx::query_scalar(
        "SELECT substr(body, CAST($1 AS INTEGER), 1048576) FROM dataclips WHERE id = $2 AND project_id = $3",
    )
    .bind(start)
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(chunk.flatten().filter(|c| !c.is_empty()))
}

pub const DATACLIP_CHUNK_CHARS: i64 = 1_048_576;

pub async fn dataclip_exists(pool: &AnyPool, project_id: &str, id: &str) -> UiResult<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM dataclips WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}

async fn latest_snapshot(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    workflow_id: &str,
) -> UiResult<String> {
    sqlx::query_scalar("SELECT id FROM workflow_snapshots WHERE workflow_id = $1 ORDER BY lock_version DESC LIMIT 1")
        .bind(workflow_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| UiError::BadRequest("This workflow has no saved version to run.".into()))
}

struct NewRun<'a> {
    work_order_id: &'a str,
    workflow_id: &'a str,
    project_id: &'a str,
    snapshot_id: &'a str,
    starting_job_id: Option<&'a str>,
    starting_trigger_id: Option<&'a str>,
    dataclip_id: Option<&'a str>,
    options: &'a str,
    created_by: &'a str,
}

/// Inserts an `available` run on the manual queue (as Lightning's manual
/// retries: queue `manual`, priority 0) and sets its work order pending.
async fn enqueue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    r: NewRun<'_>,
) -> UiResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_us();
    sqlx::query(
        "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_job_id, starting_trigger_id, \
         dataclip_id, state, queue, priority, options, created_by, inserted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'available', 'manual', 0, $9, $10, $11)",
    )
    .bind(&id)
    .bind(r.work_order_id)
    .bind(r.workflow_id)
    .bind(r.project_id)
    .bind(r.snapshot_id)
    .bind(r.starting_job_id)
    .bind(r.starting_trigger_id)
    .bind(r.dataclip_id)
    .bind(r.options)
    .bind(r.created_by)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE work_orders SET state = 'pending', last_activity = $1, updated_at = $2 WHERE id = $3")
        .bind(now)
        .bind(now)
        .bind(r.work_order_id)
        .execute(&mut **tx)
        .await?;
    // As the store's ingest: on PostgreSQL, wake every node's claimers
    // (delivered at commit); on SQLite the server's on_run_enqueued hook
    // wakes its in-process workers.
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify('gabbro_run_available', $1)")
            .bind(r.workflow_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(id)
}

/// Retries `run_id` from `step_id`: a new run of the same work order on the
/// workflow's latest snapshot (so a fixed job runs), starting at the step's
/// job with the step's input, reusing the steps before it.
pub async fn retry_from_step(
    pool: &AnyPool,
    project_id: &str,
    run_id: &str,
    step_id: &str,
    user_id: &str,
) -> UiResult<String> {
    let mut tx = crate::queries::write_tx(pool).await?;
    let run = sqlx::query(
        "SELECT work_order_id, workflow_id, options FROM runs WHERE id = $1 AND project_id = $2",
    )
    .bind(run_id)
    .bind(project_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(UiError::NotFound)?;
    let step = sqlx::query(
        "SELECT s.job_id, s.input_dataclip_id, CAST(rs.position AS BIGINT) AS position FROM run_steps rs JOIN steps s ON s.id = rs.step_id \
         WHERE rs.run_id = $1 AND rs.step_id = $2",
    )
    .bind(run_id)
    .bind(step_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(UiError::NotFound)?;
    let work_order_id: String = run.try_get("work_order_id")?;
    let workflow_id: String = run.try_get("workflow_id")?;
    let options: String = run.try_get("options")?;
    let job_id: String = step.try_get("job_id")?;
    let position: i64 = step.try_get("position")?;
    let input: Option<String> = step.try_get("input_dataclip_id")?;
    let Some(input) = input else {
        return Err(UiError::BadRequest(
            "This step has no input to retry with.".into(),
        ));
    };
    let wiped: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(CASE WHEN body IS NULL OR wiped_at IS NOT NULL THEN 1 ELSE 0 END AS BIGINT) FROM dataclips WHERE id = $1",
    )
    .bind(&input)
    .fetch_optional(&mut *tx)
    .await?;
    if wiped != Some(0) {
        return Err(UiError::BadRequest(
            "This step's input has been wiped (data retention), so it cannot be retried.".into(),
        ));
    }
    let job_exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1 AND workflow_id = $2")
            .bind(&job_id)
            .bind(&workflow_id)
            .fetch_one(&mut *tx)
            .await?;
    if job_exists == 0 {
        return Err(UiError::BadRequest(
            "This step's job no longer exists in the workflow.".into(),
        ));
    }
    let snapshot_id = latest_snapshot(&mut tx, &workflow_id).await?;
    let new_id = enqueue(
        &mut tx,
        NewRun {
            work_order_id: &work_order_id,
            workflow_id: &workflow_id,
            project_id,
            snapshot_id: &snapshot_id,
            starting_job_id: Some(&job_id),
            starting_trigger_id: None,
            dataclip_id: Some(&input),
            options: &options,
            created_by: user_id,
        },
    )
    .await?;
    // Steps upstream of the retried one belong to the new run too.
    sqlx::query(
        "INSERT INTO run_steps (run_id, step_id, position) SELECT $1, step_id, position FROM run_steps WHERE run_id = $2 AND position < $3",
    )
    .bind(&new_id)
    .bind(run_id)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(new_id)
}

/// Reruns work orders from their start (their first run's trigger or job,
/// with the work order's input) on the latest snapshot. Work orders not in
/// the project, or whose input is gone, are skipped. Returns the new run ids.
pub async fn rerun_work_orders(
    pool: &AnyPool,
    project_id: &str,
    ids: &[String],
    user_id: &str,
) -> UiResult<Vec<String>> {
    let mut created = Vec::new();
    let mut tx = crate::queries::write_tx(pool).await?;
    for wo_id in ids {
        let first = sqlx::query(
            "SELECT r.workflow_id, r.starting_job_id, r.starting_trigger_id, r.dataclip_id, r.options FROM runs r \
             JOIN work_orders wo ON wo.id = r.work_order_id \
             WHERE r.work_order_id = $1 AND r.project_id = $2 ORDER BY r.inserted_at, r.id LIMIT 1",
        )
        .bind(wo_id)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(first) = first else { continue };
        let workflow_id: String = first.try_get("workflow_id")?;
        let dataclip_id: Option<String> = first.try_get("dataclip_id")?;
        let starting_job_id: Option<String> = first.try_get("starting_job_id")?;
        let starting_trigger_id: Option<String> = first.try_get("starting_trigger_id")?;
        let options: String = first.try_get("options")?;
        let snapshot_id = latest_snapshot(&mut tx, &workflow_id).await?;
        created.push(
            enqueue(
                &mut tx,
                NewRun {
                    work_order_id: wo_id,
                    workflow_id: &workflow_id,
                    project_id,
                    snapshot_id: &snapshot_id,
                    starting_job_id: starting_job_id.as_deref(),
                    starting_trigger_id: starting_trigger_id.as_deref(),
                    dataclip_id: dataclip_id.as_deref(),
                    options: &options,
                    created_by: user_id,
                },
            )
            .await?,
        );
    }
    tx.commit().await?;
    Ok(created)
}

#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// (worker name, runs it holds, when it was last heard from) for every
    /// worker holding claimed or started runs, as the database sees it.
    pub holders: Vec<(String, i64, Option<i64>)>,
    pub by_state: Vec<(String, i64)>,
    pub finished_last_hour: Vec<(String, i64)>,
    pub oldest_available: Option<(String, String, i64)>,
}

/// The queue dashboard's figures. Every count is served by a partial or
/// time index, so it stays fast with millions of finished runs.
pub async fn queue_stats(pool: &AnyPool) -> UiResult<QueueStats> {
    let mut s = QueueStats::default();
    // Literal states, so both databases use the partial indexes
    // (runs_available_age, runs_active) instead of scanning every run.
    let available: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'available'")
        .fetch_one(pool)
        .await?;
    s.by_state.push(("available".to_string(), available));
    let active = sqlx::query(
        "SELECT state, COUNT(*) AS n FROM runs WHERE state IN ('claimed', 'started') GROUP BY state",
    )
    .fetch_all(pool)
    .await?;
    for st in ["claimed", "started"] {
        let mut n = 0;
        for r in &active {
            if r.try_get::<String, _>("state")? == st {
                n = r.try_get("n")?;
            }
        }
        s.by_state.push((st.to_string(), n));
    }
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM runs WHERE finished_at >= $1 GROUP BY state ORDER BY state")
        .bind(now_us() - 3_600_000_000)
        .fetch_all(pool)
        .await?;
    for r in rows {
        s.finished_last_hour
            .push((r.try_get("state")?, r.try_get("n")?));
    }
    let holders = sqlx::query(
        "SELECT COALESCE(worker_name, '(unnamed)') AS worker, COUNT(*) AS n, MAX(last_heard_at) AS heard \
         FROM runs WHERE state IN ('claimed', 'started') GROUP BY COALESCE(worker_name, '(unnamed)') ORDER BY worker",
    )
    .fetch_all(pool)
    .await?;
    for r in holders {
        s.holders
            .push((r.try_get("worker")?, r.try_get("n")?, r.try_get("heard")?));
    }
    let oldest = sqlx::query(
        "SELECT id, project_id, inserted_at FROM runs WHERE state = 'available' ORDER BY inserted_at, id LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some(r) = oldest {
        s.oldest_available = Some((
            r.try_get("id")?,
            r.try_get("project_id")?,
            r.try_get("inserted_at")?,
        ));
    }
    Ok(s)
}
