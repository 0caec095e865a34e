//! The run ledger: every change to a run after its claim goes through here —
//! worker events (`run:start`, `step:start`, `step:complete`, logs,
//! `run:complete`), the API and the janitor — as idempotent, ordered
//! transitions of the run state machine ([`gabbro_model::check_transition`]).
//!
//! * A duplicate (same step id, a finished step completed again, a final
//!   state reported again, or a gabbro `seq` at or below the run's
//!   `last_seq`) changes nothing and is answered like the first time.
//! * A `seq` past `last_seq + 1` is refused with [`StoreError::SeqGap`].
//! * An illegal transition is refused with [`StoreError::Rejected`] in
//!   Lightning's words ("already in completed state", …).
//! * An event from a worker other than the run's holder is refused.
//! * The work order's state is recomputed in the same transaction, and
//!   leaving claimed|started frees the run's concurrency slot.
//! * Every worker event refreshes the run's lease (`last_heard_at`).

use std::sync::Arc;

use gabbro_model::{
    ExitReason, RunOptions, RunState, Transition, WorkOrderState, check_transition,
    work_order_state,
};

use crate::dynamic::{Bind, exec_dynamic};
use crate::queue::release_slot;
use crate::snapshot_jobs::SnapshotJobs;
use crate::{
    Conn, Result, Store, StoreError, db_now_us, exec, fetch_optional, new_id, scalar, scalars,
};

/// `step:start`.
#[derive(Debug, Clone, Default)]
pub struct StepStart {
    /// Chosen by the worker.
    pub step_id: String,
    /// Must be a job of the run's snapshot.
    pub job_id: String,
    /// The step's input dataclip (the run's, or an upstream step's output).
    pub input_dataclip_id: Option<String>,
    /// The credential used.
    pub credential_id: Option<String>,
    /// Worker's timestamp (µs); the database clock if absent.
    pub timestamp: Option<i64>,
    /// gabbro's per-run event sequence number.
    pub seq: Option<u64>,
}

/// `step:complete`.
#[derive(Debug, Clone, Default)]
pub struct StepComplete {
    /// The step (from its `step:start`).
    pub step_id: String,
    /// OpenFn's reason word (`success`/`ok`, `fail`, `crash`, …).
    pub reason: String,
    /// e.g. `TypeError`.
    pub error_type: Option<String>,
    /// The error's message.
    pub error_message: Option<String>,
    /// The output dataclip's id, chosen by the worker.
    pub output_dataclip_id: Option<String>,
    /// The output state as JSON text, stored as given.
    pub output_dataclip: Option<String>,
    /// Set instead of the dataclip when the worker withheld it (e.g.
    /// `DATACLIP_TOO_LARGE`).
    pub output_dataclip_error: Option<String>,
    /// Worker's timestamp (µs).
    pub timestamp: Option<i64>,
    /// gabbro's per-run event sequence number.
    pub seq: Option<u64>,
}

/// One log line of `run:log` / `run:batch_logs`.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    /// Lightning's `message`: an array (joined with spaces, non-strings
    /// JSON-encoded), or a string.
    pub message: serde_json::Value,
    /// `debug`, `info`, `warn`, `error`, `success`, `always`.
    pub level: String,
    /// e.g. `JOB`, `R/T` (cut to 8 characters as Lightning does).
    pub source: String,
    /// µs; the database clock if absent.
    pub timestamp: Option<i64>,
    /// The step it belongs to (must be a step of the run).
    pub step_id: Option<String>,
}

/// `run:complete`.
#[derive(Debug, Clone, Default)]
pub struct RunComplete {
    /// OpenFn's reason word.
    pub reason: String,
    /// e.g. `TimeoutError`.
    pub error_type: Option<String>,
    /// The error's message (logged, not stored on the run).
    pub error_message: Option<String>,
    /// Worker's timestamp (µs).
    pub timestamp: Option<i64>,
    /// gabbro's per-run event sequence number.
    pub seq: Option<u64>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LockedRun {
    pub state: String,
    pub work_order_id: String,
    pub workflow_id: String,
    pub project_id: String,
    pub snapshot_id: String,
    pub worker_id: Option<String>,
    pub claim_epoch: i32,
    /// Took a concurrency slot when claimed (`release_slot` frees it).
    pub holds_slot: i32,
    pub last_seq: Option<i64>,
    pub options: String,
    /// How many other runs its work order has (retries): with none, the
    /// work order's state follows this run's without reading the others.
    pub siblings: i64,
}

impl LockedRun {
    pub(crate) fn state(&self) -> Result<RunState> {
        self.state.parse().map_err(|_| {
            StoreError::rejected("state", format!("unknown stored state {}", self.state))
        })
    }
}

/// Loads a run and locks it for the rest of the transaction (`FOR UPDATE`
/// on PostgreSQL; SQLite's writer is exclusive).
pub(crate) async fn lock_run(c: &mut Conn<'_>, run_id: &str) -> Result<LockedRun> {
    let sql = c.pick(
        "SELECT state, work_order_id, workflow_id, project_id, snapshot_id, worker_id, claim_epoch, holds_slot, last_seq, options,
                (SELECT COUNT(*) FROM runs o WHERE o.work_order_id = r.work_order_id AND o.id <> r.id) AS siblings
         FROM runs r WHERE r.id = $1",
        "SELECT state, work_order_id, workflow_id, project_id, snapshot_id, worker_id, claim_epoch, holds_slot, last_seq, options,
                (SELECT COUNT(*) FROM runs o WHERE o.work_order_id = r.work_order_id AND o.id <> r.id) AS siblings
         FROM runs r WHERE r.id = $1 FOR UPDATE OF r",
    );
    fetch_optional!(c, LockedRun, sql, run_id)?.ok_or_else(|| StoreError::not_found("run", run_id))
}

/// Is this event a replay (`true`), the next one (`false`), or a gap (error)?
fn check_seq(run: &LockedRun, seq: Option<u64>) -> Result<bool> {
    let Some(seq) = seq else { return Ok(false) };
    let last = run.last_seq.unwrap_or(0).max(0) as u64;
    if seq <= last {
        Ok(true)
    } else if seq == last + 1 {
        Ok(false)
    } else {
        Err(StoreError::SeqGap { expected: last + 1 })
    }
}

/// Refuses events from a worker that does not hold the run.
fn check_holder(run: &LockedRun, worker_id: Option<&str>) -> Result<bool> {
    match (worker_id, run.worker_id.as_deref()) {
        (Some(w), Some(holder)) if w != holder => Err(StoreError::NotHolder),
        (Some(_), Some(_)) => Ok(true),
        (Some(_), None) => Err(StoreError::NotHolder),
        _ => Ok(false),
    }
}

/// Records that the holder was heard from and, for gabbro events, the seq.
async fn touch(c: &mut Conn<'_>, run_id: &str, now: i64, seq: Option<u64>) -> Result<()> {
    exec!(
        c,
        "UPDATE runs SET last_heard_at = $2, last_seq = COALESCE($3, last_seq) WHERE id = $1",
        run_id,
        now,
        seq.map(|s| s as i64)
    )?;
    Ok(())
}

/// Recomputes the work order's state from its runs (Lightning's
/// `state_for`), `current` being the run just changed.
pub(crate) async fn refresh_work_order(
    c: &mut Conn<'_>,
    work_order_id: &str,
    current_run: &str,
    current: RunState,
    now: i64,
) -> Result<()> {
    let others: Vec<String> = scalars!(
        c,
        String,
        "SELECT state FROM runs WHERE work_order_id = $1 AND id <> $2",
        work_order_id,
        current_run
    )?;
    let others = others.iter().filter_map(|s| s.parse::<RunState>().ok());
    set_work_order_state(c, work_order_id, work_order_state(current, others), now).await
}

/// [`refresh_work_order`] for a run locked by [`lock_run`], which knows
/// whether there are other runs to read: a work order's only run decides
/// its state alone (one statement fewer per state change).
pub(crate) async fn run_work_order_follows(
    c: &mut Conn<'_>,
    run: &LockedRun,
    run_id: &str,
    current: RunState,
    now: i64,
) -> Result<()> {
    if run.siblings > 0 {
        return refresh_work_order(c, &run.work_order_id, run_id, current, now).await;
    }
    let state = work_order_state(current, std::iter::empty());
    set_work_order_state(c, &run.work_order_id, state, now).await
}

async fn set_work_order_state(
    c: &mut Conn<'_>,
    work_order_id: &str,
    state: WorkOrderState,
    now: i64,
) -> Result<()> {
    exec!(
        c,
        "UPDATE work_orders SET state = $2, last_activity = $3, updated_at = $3 WHERE id = $1",
        work_order_id,
        state.as_str(),
        now
    )?;
    Ok(())
}

/// Adds a line to the run's log from gabbro itself (state changes worth
/// telling the user about).
pub(crate) async fn system_log(
    c: &mut Conn<'_>,
    run_id: &str,
    level: &str,
    message: &str,
    now: i64,
) -> Result<()> {
    exec!(
        c,
        "INSERT INTO log_lines (id, run_id, level, source, message, timestamp) VALUES ($1, $2, $3, 'gabbro', $4, $5)",
        new_id(),
        run_id,
        level,
        message,
        now
    )?;
    Ok(())
}

/// claimed → started.
async fn mark_started(
    c: &mut Conn<'_>,
    run: &LockedRun,
    run_id: &str,
    timestamp: Option<i64>,
    now: i64,
) -> Result<()> {
    exec!(
        c,
        "UPDATE runs SET state = 'started', started_at = $2 WHERE id = $1",
        run_id,
        timestamp.unwrap_or(now)
    )?;
    run_work_order_follows(c, run, run_id, RunState::Started, now).await
}

/// A new step of the run (its job must be in the run's snapshot), linked
/// after the run's other steps.
async fn insert_step(
    c: &mut Conn<'_>,
    run: &LockedRun,
    run_id: &str,
    ev: &StepStart,
    jobs: &SnapshotJobs,
    now: i64,
) -> Result<()> {
    if !jobs.contains(c, &run.snapshot_id, &ev.job_id).await? {
        return Err(StoreError::rejected("job_id", "does not exist"));
    }
    let inserted = exec!(
        c,
        "INSERT INTO steps (id, job_id, snapshot_id, credential_id, input_dataclip_id, started_at, inserted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        &ev.step_id,
        &ev.job_id,
        &run.snapshot_id,
        &ev.credential_id,
        &ev.input_dataclip_id,
        ev.timestamp.unwrap_or(now),
        now
    )?;
    if inserted == 0 {
        return Err(StoreError::rejected("step_id", "has already been taken"));
    }
    exec!(
        c,
        "INSERT INTO run_steps (run_id, step_id, position)
         VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM run_steps WHERE run_id = $1))",
        run_id,
        &ev.step_id
    )?;
    Ok(())
}

/// A step's exit reason, error and output dataclip (stored under the
/// worker's id; a wiped placeholder when the run does not save dataclips).
async fn finish_step(
    c: &mut Conn<'_>,
    run: &LockedRun,
    ev: &StepComplete,
    reason: ExitReason,
    now: i64,
) -> Result<()> {
    let save = RunOptions::from_json(&run.options).save_dataclips;
    let output_id = match (&ev.output_dataclip_id, &ev.output_dataclip) {
        (Some(id), Some(body)) => {
            let (body, wiped_at) = if save {
                (Some(body), None)
            } else {
                (None, Some(now))
            };
            exec!(
                c,
                "INSERT INTO dataclips (id, project_id, type, body, wiped_at, inserted_at)
                 VALUES ($1, $2, 'step_result', $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                id,
                &run.project_id,
                body,
                wiped_at,
                now
            )?;
            Some(id.clone())
        }
        _ => None,
    };
    exec!(
        c,
        "UPDATE steps SET exit_reason = $2, error_type = $3, error_message = $4,
                output_dataclip_id = $5, finished_at = $6
         WHERE id = $1",
        &ev.step_id,
        reason.as_str(),
        &ev.error_type,
        &ev.error_message,
        output_id,
        ev.timestamp.unwrap_or(now)
    )?;
    Ok(())
}

/// Appends log lines under one `seq`; a line's step must be a step of the
/// run (`known_steps`: steps already checked in this transaction). Returns
/// the new lines' ids.
async fn insert_log_lines(
    c: &mut Conn<'_>,
    run_id: &str,
    lines: &[NewLogLine],
    seq: Option<u64>,
    now: i64,
    known_steps: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut rows = Vec::with_capacity(lines.len());
    let ids = check_log_lines(c, run_id, lines, seq, now, known_steps, &mut rows).await?;
    insert_log_rows(c, run_id, rows).await?;
    Ok(ids)
}

/// A log line as stored, checked and waiting for [`insert_log_rows`].
struct LogRow {
    id: String,
    step_id: Option<String>,
    seq: Option<i64>,
    level: String,
    source: String,
    message: String,
    timestamp: i64,
}

/// Checks log lines under one `seq` (each line's step must be a step of
/// the run) and turns them into rows (pushed on `rows`); returns their ids.
async fn check_log_lines(
    c: &mut Conn<'_>,
    run_id: &str,
    lines: &[NewLogLine],
    seq: Option<u64>,
    now: i64,
    known_steps: &mut Vec<String>,
    rows: &mut Vec<LogRow>,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(lines.len());
    for line in lines {
        if let Some(step) = &line.step_id
            && !known_steps.contains(step)
        {
            let n = scalar!(
                c,
                i64,
                "SELECT count(*) FROM run_steps WHERE run_id = $1 AND step_id = $2",
                run_id,
                step
            )?
            .unwrap_or(0);
            if n == 0 {
                return Err(StoreError::rejected(
                    "step_id",
                    "must be associated with the run",
                ));
            }
            known_steps.push(step.clone());
        }
        let id = new_id();
        rows.push(LogRow {
            id: id.clone(),
            step_id: line.step_id.clone(),
            seq: seq.map(|s| s as i64),
            level: line.level.clone(),
            source: line.source.chars().take(8).collect(),
            message: render_message(&line.message),
            timestamp: line.timestamp.unwrap_or(now),
        });
        ids.push(id);
    }
    Ok(ids)
}

/// Log rows per `INSERT` (8 parameters each; far below both databases'
/// limits on parameters per statement).
const LOG_ROWS_PER_INSERT: usize = 64;

/// Inserts checked log rows, many per statement: a one-step run logs about
/// eight lines, and on SQLite every statement is a round trip to the
/// connection's thread.
async fn insert_log_rows(c: &mut Conn<'_>, run_id: &str, rows: Vec<LogRow>) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<LogRow> = rows.by_ref().take(LOG_ROWS_PER_INSERT).collect();
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 8;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO log_lines (id, run_id, step_id, seq, level, source, message, timestamp) VALUES {}",
            placeholders.join(", ")
        );
        let mut binds = Vec::with_capacity(chunk.len() * 8);
        for r in chunk {
            binds.extend([
                Bind::Text(r.id),
                Bind::Text(run_id.to_string()),
                Bind::OptText(r.step_id),
                Bind::OptInt(r.seq),
                Bind::Text(r.level),
                Bind::Text(r.source),
                Bind::Text(r.message),
                Bind::Int(r.timestamp),
            ]);
        }
        exec_dynamic(c, sql, binds).await?;
    }
    Ok(())
}

/// The run's final state; the work order follows.
async fn mark_finished(
    c: &mut Conn<'_>,
    run: &LockedRun,
    run_id: &str,
    target: RunState,
    error_type: Option<&str>,
    finished_at: i64,
    now: i64,
) -> Result<()> {
    exec!(
        c,
        "UPDATE runs SET state = $2, error_type = $3, finished_at = $4 WHERE id = $1",
        run_id,
        target.as_str(),
        error_type,
        finished_at
    )?;
    run_work_order_follows(c, run, run_id, target, now).await
}

/// Lightning's message rendering: arrays joined with spaces (strings as
/// they are, anything else as JSON), control characters other than
/// newline and tab removed.
fn render_message(v: &serde_json::Value) -> String {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    text.chars()
        .filter(|ch| !ch.is_control() || *ch == '\n' || *ch == '\t')
        .collect()
}

/// Whether a run in `state` takes step and log events from this sender.
fn check_open_for_steps(state: RunState, own: bool) -> Result<()> {
    match state {
        RunState::Available => Err(StoreError::rejected(
            "run",
            "cannot mark run that has not been claimed by a worker",
        )),
        RunState::Claimed | RunState::Started => Ok(()),
        RunState::Lost if own => Ok(()),
        _ => Err(StoreError::rejected("state", "already in completed state")),
    }
}

impl Store {
    /// A refused event still uses up its `seq` (its error reply is the
    /// answer), so the worker's journal can move past it instead of being
    /// told forever that this seq is expected.
    async fn consume_seq_if_rejected<T>(
        &self,
        run_id: &str,
        seq: Option<u64>,
        out: Result<T>,
    ) -> Result<T> {
        if let (Err(StoreError::Rejected { .. }), Some(seq)) = (&out, seq) {
            let run_id = run_id.to_string();
            let seq = seq as i64;
            self.write(move |mut c| {
                Box::pin(async move {
                    exec!(
                        c,
                        "UPDATE runs SET last_seq = $2 WHERE id = $1 AND COALESCE(last_seq, 0) = $2 - 1",
                        run_id,
                        seq
                    )?;
                    Ok(())
                })
            })
            .await?;
        }
        out
    }

    /// `run:start`: claimed → started (started_at from the worker's
    /// timestamp). A repeat, or a late start on a run its own worker still
    /// holds after it was marked lost, is a no-op.
    pub async fn run_start(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        timestamp: Option<i64>,
        seq: Option<u64>,
    ) -> Result<()> {
        let rid = run_id;
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let out = self
            .write(move |mut c| {
                Box::pin(async move {
                    let c = &mut c;
                    let run = lock_run(c, &run_id).await?;
                    let own = check_holder(&run, worker_id.as_deref())?;
                    let now = db_now_us(c).await?;
                    if check_seq(&run, seq)? {
                        return Ok(());
                    }
                    let from = run.state()?;
                    match check_transition(from, RunState::Started, own || worker_id.is_none())
                        .map_err(|e| StoreError::rejected("state", e.message))?
                    {
                        Transition::Apply => mark_started(c, &run, &run_id, timestamp, now).await?,
                        Transition::Noop | Transition::LateTruth => {}
                    }
                    touch(c, &run_id, now, seq).await
                })
            })
            .await;
        self.consume_seq_if_rejected(rid, seq, out).await
    }

    /// `step:start`: records the step (id chosen by the worker) and links it
    /// to the run in execution order. The job must be in the run's
    /// snapshot. Returns the step id.
    pub async fn step_start(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        ev: StepStart,
    ) -> Result<String> {
        if ev.step_id.is_empty() {
            return Err(StoreError::rejected("step_id", "can't be blank"));
        }
        if ev.job_id.is_empty() {
            return Err(StoreError::rejected("job_id", "can't be blank"));
        }
        let (rid, seq) = (run_id, ev.seq);
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let jobs = self.snapshot_jobs();
        let out = self
            .write(move |mut c| {
                Box::pin(async move {
                    let c = &mut c;
                    let run = lock_run(c, &run_id).await?;
                    let own = check_holder(&run, worker_id.as_deref())?;
                    let now = db_now_us(c).await?;
                    if check_seq(&run, ev.seq)? {
                        return Ok(ev.step_id);
                    }
                    // Already recorded for this run: a replay.
                    let linked = scalar!(
                        c,
                        i64,
                        "SELECT count(*) FROM run_steps WHERE run_id = $1 AND step_id = $2",
                        &run_id,
                        &ev.step_id
                    )?
                    .unwrap_or(0);
                    if linked > 0 {
                        touch(c, &run_id, now, ev.seq).await?;
                        return Ok(ev.step_id);
                    }
                    check_open_for_steps(run.state()?, own || worker_id.is_none())?;
                    insert_step(c, &run, &run_id, &ev, &jobs, now).await?;
                    touch(c, &run_id, now, ev.seq).await?;
                    Ok(ev.step_id)
                })
            })
            .await;
        self.consume_seq_if_rejected(rid, seq, out).await
    }

    /// `step:complete`: the step's exit reason and error, and its output
    /// dataclip stored under the worker's id with the JSON text as given
    /// (a wiped placeholder when the run does not save dataclips). Returns
    /// the step id. A repeat is a no-op; a step the janitor marked `lost`
    /// takes the true result from the run's own worker.
    pub async fn step_complete(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        ev: StepComplete,
    ) -> Result<String> {
        let reason: ExitReason = ev
            .reason
            .parse()
            .map_err(|_| StoreError::rejected("reason", format!("is invalid: {:?}", ev.reason)))?;
        if ev.output_dataclip_id.is_some() != ev.output_dataclip.is_some()
            && ev.output_dataclip_error.is_none()
        {
            return Err(StoreError::rejected(
                "output_dataclip",
                "output_dataclip and output_dataclip_id must be given together",
            ));
        }
        let (rid, seq) = (run_id, ev.seq);
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let out = self
            .write(move |mut c| {
                Box::pin(async move {
                    let c = &mut c;
                    let run = lock_run(c, &run_id).await?;
                    let own = check_holder(&run, worker_id.as_deref())?;
                    let now = db_now_us(c).await?;
                    if check_seq(&run, ev.seq)? {
                        return Ok(ev.step_id);
                    }
                    #[derive(sqlx::FromRow)]
                    struct StepRow {
                        finished_at: Option<i64>,
                        exit_reason: Option<String>,
                    }
                    let step = fetch_optional!(
                        c,
                        StepRow,
                        "SELECT s.finished_at, s.exit_reason FROM steps s
                     JOIN run_steps rs ON rs.step_id = s.id AND rs.run_id = $1
                     WHERE s.id = $2",
                        &run_id,
                        &ev.step_id
                    )?
                    .ok_or_else(|| StoreError::rejected("step_id", "not found"))?;
                    let late_truth =
                        step.exit_reason.as_deref() == Some("lost") && (own || worker_id.is_none());
                    if step.finished_at.is_some() && !late_truth {
                        touch(c, &run_id, now, ev.seq).await?;
                        return Ok(ev.step_id);
                    }
                    finish_step(c, &run, &ev, reason, now).await?;
                    touch(c, &run_id, now, ev.seq).await?;
                    Ok(ev.step_id)
                })
            })
            .await;
        self.consume_seq_if_rejected(rid, seq, out).await
    }

    /// `run:log` / `run:batch_logs`: appends lines (one `seq` for the whole
    /// event). Returns the new lines' ids (for a replay: the ids stored the
    /// first time).
    pub async fn append_logs(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        lines: Vec<NewLogLine>,
        seq: Option<u64>,
    ) -> Result<Vec<String>> {
        let rid = run_id;
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let out = self.write(move |mut c| {
            Box::pin(async move {
                let c = &mut c;
                let run = lock_run(c, &run_id).await?;
                check_holder(&run, worker_id.as_deref())?;
                let now = db_now_us(c).await?;
                if check_seq(&run, seq)? {
                    let ids: Vec<String> = scalars!(
                        c,
                        String,
                        "SELECT id FROM log_lines WHERE run_id = $1 AND seq = $2 ORDER BY timestamp, id",
                        &run_id,
                        seq.map(|s| s as i64)
                    )?;
                    return Ok(ids);
                }
                let ids = insert_log_lines(c, &run_id, &lines, seq, now, &mut Vec::new()).await?;
                touch(c, &run_id, now, seq).await?;
                Ok(ids)
            })
        })
        .await;
        self.consume_seq_if_rejected(rid, seq, out).await
    }

    /// `run:complete`: the reason's final state, `error_type` and
    /// `finished_at`; frees the run's slot and recomputes the work order.
    /// A repeat is a no-op; a different final state is refused ("already in
    /// completed state") unless the run is `lost` and this is its own
    /// worker, whose true outcome then replaces `lost` (and says so in the
    /// run's log). Returns the run's state afterwards.
    pub async fn run_complete(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        ev: RunComplete,
    ) -> Result<RunState> {
        let target = ev
            .reason
            .parse::<ExitReason>()
            .map_err(|_| StoreError::rejected("reason", format!("is invalid: {:?}", ev.reason)))?
            .run_state();
        let (rid, seq) = (run_id, ev.seq);
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let out = self.write(move |mut c| {
            Box::pin(async move {
                let c = &mut c;
                let run = lock_run(c, &run_id).await?;
                let own = check_holder(&run, worker_id.as_deref())?;
                let now = db_now_us(c).await?;
                let from = run.state()?;
                if check_seq(&run, ev.seq)? {
                    return Ok(from);
                }
                let finished_at = ev.timestamp.unwrap_or(now);
                match check_transition(from, target, own).map_err(|e| StoreError::rejected("state", e.message))? {
                    Transition::Noop => {
                        touch(c, &run_id, now, ev.seq).await?;
                        return Ok(from);
                    }
                    Transition::Apply => {
                        release_slot(c, &run.workflow_id, &run.project_id, run.holds_slot != 0).await?;
                    }
                    Transition::LateTruth => {
                        let msg = format!(
                            "run had been marked lost; its worker delivered the true outcome: {}",
                            target.as_str()
                        );
                        tracing::info!(run_id = %run_id, state = target.as_str(), "lost run takes its worker's late outcome");
                        system_log(c, &run_id, "info", &msg, now).await?;
                    }
                }
                mark_finished(c, &run, &run_id, target, ev.error_type.as_deref(), finished_at, now).await?;
                touch(c, &run_id, now, ev.seq).await?;
                Ok(target)
            })
        })
        .await;
        self.consume_seq_if_rejected(rid, seq, out).await
    }

    /// Renews the lease of the listed runs that `worker_id` still holds
    /// (called on the worker's socket heartbeats with the runs that
    /// connection holds: its joined run channels and the runs it listed in
    /// `active_runs`). Only those: a restarted worker keeps its id, and must
    /// not keep alive a run its previous life died holding. Returns how
    /// many runs it touched.
    pub async fn heartbeat(&self, worker_id: &str, run_ids: Vec<String>) -> Result<u64> {
        if run_ids.is_empty() {
            return Ok(0);
        }
        let worker_id = worker_id.to_string();
        self.write(move |mut c| {
            Box::pin(async move {
                let now = db_now_us(&mut c).await?;
                let mut n = 0;
                for id in &run_ids {
                    n += exec!(
                        c,
                        "UPDATE runs SET last_heard_at = $3
                         WHERE id = $1 AND worker_id = $2 AND state IN ('claimed', 'started')",
                        id,
                        &worker_id,
                        now
                    )?;
                }
                Ok(n)
            })
        })
        .await
    }
}

/// One worker event, for [`Store::apply_events`].
#[derive(Debug, Clone)]
pub enum LedgerEvent {
    /// The holder joined the run's channel under this claim epoch: its
    /// lease record ([`Store::run_joined`]). Not a frame of its own: the
    /// run channel puts it in front of the run's first ledger events, so the
    /// join costs no transaction of its own and `run:start` is applied only
    /// under the claim the worker joined with.
    Joined {
        claim_epoch: i32,
    },
    /// `run:start`.
    RunStart {
        timestamp: Option<i64>,
        seq: Option<u64>,
    },
    StepStart(StepStart),
    StepComplete(StepComplete),
    /// `run:log` (one line) or `run:batch_logs`.
    Logs {
        lines: Vec<NewLogLine>,
        seq: Option<u64>,
    },
    RunComplete(RunComplete),
}

impl LedgerEvent {
    fn seq(&self) -> Option<u64> {
        match self {
            LedgerEvent::Joined { .. } => None,
            LedgerEvent::RunStart { seq, .. } | LedgerEvent::Logs { seq, .. } => *seq,
            LedgerEvent::StepStart(e) => e.seq,
            LedgerEvent::StepComplete(e) => e.seq,
            LedgerEvent::RunComplete(e) => e.seq,
        }
    }
}

/// What an event did: the result of its per-event method.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Joined,
    Started,
    /// The step's id (`step:start`, `step:complete`).
    Step(String),
    /// The new log lines' ids.
    Logs(Vec<String>),
    /// The run's state after `run:complete`.
    Finished(RunState),
}

/// Why a batch was handed to the per-event path (never reaches a caller).
fn unusual(what: &str) -> StoreError {
    StoreError::rejected("batch", what.to_string())
}

impl Store {
    /// Applies events a run's channel received together, in order, with
    /// the same outcome as calling the per-event methods one by one.
    ///
    /// The common case — every event new, in sequence and legal — is one
    /// write: the run is locked once and its lease and `seq` recorded
    /// once, instead of a lock, a lease update and a group-commit round
    /// trip per event (a one-step run sends about ten events). Anything
    /// unusual (a replay, a refusal, a late truth, a step seen before)
    /// rolls the batch back and the events go one by one through the
    /// per-event methods, which answer each as they always do.
    pub async fn apply_events(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        events: Vec<LedgerEvent>,
    ) -> Vec<Result<Applied>> {
        let events = if events.len() > 1 && worker_id.is_some() {
            // Shared with the transaction rather than cloned: output
            // dataclips can be megabytes, and the fallback is rare.
            let shared = Arc::new(events);
            if let Ok(applied) = self
                .apply_fresh_events(run_id, worker_id, shared.clone())
                .await
            {
                return applied.into_iter().map(Ok).collect();
            }
            Arc::try_unwrap(shared).unwrap_or_else(|still_shared| (*still_shared).clone())
        } else {
            events
        };
        let mut out = Vec::with_capacity(events.len());
        let mut events = events.into_iter();
        while let Some(ev) = events.next() {
            let joined = matches!(ev, LedgerEvent::Joined { .. });
            let result = self.apply_event(run_id, worker_id, ev).await;
            // Nothing is applied under a join that was not recorded.
            let refused = match &result {
                Err(e) if joined => Some(e.repeated()),
                _ => None,
            };
            out.push(result);
            if let Some(e) = refused {
                out.extend(events.by_ref().map(|_| Err(e.repeated())));
            }
        }
        out
    }

    /// One event through its per-event method.
    pub async fn apply_event(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        ev: LedgerEvent,
    ) -> Result<Applied> {
        match ev {
            LedgerEvent::Joined { claim_epoch } => {
                let worker_id = worker_id.ok_or(StoreError::NotHolder)?;
                self.run_joined(run_id, worker_id, claim_epoch)
                    .await
                    .map(|()| Applied::Joined)
            }
            LedgerEvent::RunStart { timestamp, seq } => self
                .run_start(run_id, worker_id, timestamp, seq)
                .await
                .map(|()| Applied::Started),
            LedgerEvent::StepStart(e) => self
                .step_start(run_id, worker_id, e)
                .await
                .map(Applied::Step),
            LedgerEvent::StepComplete(e) => self
                .step_complete(run_id, worker_id, e)
                .await
                .map(Applied::Step),
            LedgerEvent::Logs { lines, seq } => self
                .append_logs(run_id, worker_id, lines, seq)
                .await
                .map(Applied::Logs),
            LedgerEvent::RunComplete(e) => self
                .run_complete(run_id, worker_id, e)
                .await
                .map(Applied::Finished),
        }
    }

    /// The one-transaction path of [`apply_events`](Self::apply_events):
    /// fails (and changes nothing) on the first event that is not plainly
    /// new and legal.
    async fn apply_fresh_events(
        &self,
        run_id: &str,
        worker_id: Option<&str>,
        events: Arc<Vec<LedgerEvent>>,
    ) -> Result<Vec<Applied>> {
        let (run_id, worker_id) = (run_id.to_string(), worker_id.map(str::to_string));
        let jobs = self.snapshot_jobs();
        self.write(move |mut c| {
            Box::pin(async move {
                let c = &mut c;
                let run = lock_run(c, &run_id).await?;
                if !check_holder(&run, worker_id.as_deref())? {
                    return Err(unusual("not the holder"));
                }
                let mut batch = FreshBatch {
                    jobs,
                    now: db_now_us(c).await?,
                    state: run.state()?,
                    last_seq: run.last_seq.unwrap_or(0).max(0) as u64,
                    seen_seq: None,
                    joined: false,
                    started_at: None,
                    finished: None,
                    known_steps: Vec::new(),
                    log_rows: Vec::new(),
                    run_id,
                    run,
                };
                let mut out = Vec::with_capacity(events.len());
                for ev in events.iter() {
                    out.push(batch.apply(c, ev).await?);
                }
                insert_log_rows(c, &batch.run_id, std::mem::take(&mut batch.log_rows)).await?;
                batch.write_run(c).await?;
                Ok(out)
            })
        })
        .await
    }
}

/// The run as the one-transaction path sees it while applying a batch.
struct FreshBatch {
    jobs: Arc<SnapshotJobs>,
    run: LockedRun,
    run_id: String,
    now: i64,
    /// The run's state after the events applied so far.
    state: RunState,
    last_seq: u64,
    /// The last `seq` applied, for the lease update at the end.
    seen_seq: Option<u64>,
    /// A `Joined` event was applied: `joined_at` is recorded at the end.
    joined: bool,
    /// `run:start` was applied: its `started_at`, recorded at the end.
    started_at: Option<i64>,
    /// `run:complete` was applied: its `error_type` and `finished_at`,
    /// recorded at the end.
    finished: Option<(Option<String>, i64)>,
    /// Steps of the run checked or created in this transaction.
    known_steps: Vec<String>,
    /// The batch's log lines, checked, inserted together at its end.
    log_rows: Vec<LogRow>,
}

impl FreshBatch {
    /// Records what the batch did to the run — state, start, finish, join,
    /// lease and `seq` — in one `UPDATE` (a batch used to update the run
    /// once per change and once more for its lease), and the work order
    /// follows a new state.
    async fn write_run(&self, c: &mut Conn<'_>) -> Result<()> {
        let (error_type, finished_at) = match &self.finished {
            Some((error_type, at)) => (error_type.clone(), Some(*at)),
            None => (None, None),
        };
        exec!(
            c,
            "UPDATE runs SET state = $2, started_at = COALESCE($3, started_at),
                    error_type = CASE WHEN $4 THEN $5 ELSE error_type END,
                    finished_at = COALESCE($6, finished_at),
                    joined_at = CASE WHEN $7 THEN COALESCE(joined_at, $8) ELSE joined_at END,
                    last_heard_at = $8, last_seq = COALESCE($9, last_seq)
             WHERE id = $1",
            &self.run_id,
            self.state.as_str(),
            self.started_at,
            self.finished.is_some(),
            error_type,
            finished_at,
            self.joined,
            self.now,
            self.seen_seq.map(|s| s as i64)
        )?;
        if self.state != self.run.state()? {
            run_work_order_follows(c, &self.run, &self.run_id, self.state, self.now).await?;
        }
        Ok(())
    }

    /// Applies `ev` if it is plainly new and legal; fails otherwise.
    async fn apply(&mut self, c: &mut Conn<'_>, ev: &LedgerEvent) -> Result<Applied> {
        if let Some(s) = ev.seq() {
            if s != self.last_seq + 1 {
                return Err(unusual("not the next seq"));
            }
            self.last_seq = s;
            self.seen_seq = Some(s);
        }
        let (run, run_id, now) = (&self.run, self.run_id.as_str(), self.now);
        Ok(match ev {
            LedgerEvent::Joined { claim_epoch } => {
                // The holder was checked when the batch locked the run.
                if run.claim_epoch != *claim_epoch {
                    return Err(unusual("claim epoch"));
                }
                self.joined = true;
                Applied::Joined
            }
            LedgerEvent::RunStart { timestamp, .. } => {
                if check_transition(self.state, RunState::Started, true) != Ok(Transition::Apply) {
                    return Err(unusual("run:start"));
                }
                self.started_at = Some(timestamp.unwrap_or(now));
                self.state = RunState::Started;
                Applied::Started
            }
            LedgerEvent::StepStart(e) => {
                if e.step_id.is_empty() || e.job_id.is_empty() {
                    return Err(unusual("blank step"));
                }
                check_open_for_steps(self.state, true)?;
                insert_step(c, run, run_id, e, &self.jobs, now).await?;
                self.known_steps.push(e.step_id.clone());
                Applied::Step(e.step_id.clone())
            }
            LedgerEvent::StepComplete(e) => {
                let reason: ExitReason = e.reason.parse().map_err(|_| unusual("reason"))?;
                if e.output_dataclip_id.is_some() != e.output_dataclip.is_some() {
                    return Err(unusual("step:complete"));
                }
                if !self.known_steps.contains(&e.step_id) {
                    let open = scalar!(
                        c,
                        i64,
                        "SELECT count(*) FROM steps s
                         JOIN run_steps rs ON rs.step_id = s.id AND rs.run_id = $1
                         WHERE s.id = $2 AND s.finished_at IS NULL",
                        run_id,
                        &e.step_id
                    )?
                    .unwrap_or(0);
                    if open == 0 {
                        return Err(unusual("step:complete of no open step"));
                    }
                    self.known_steps.push(e.step_id.clone());
                }
                finish_step(c, run, e, reason, now).await?;
                Applied::Step(e.step_id.clone())
            }
            LedgerEvent::Logs { lines, seq } => Applied::Logs(
                check_log_lines(
                    c,
                    run_id,
                    lines,
                    *seq,
                    now,
                    &mut self.known_steps,
                    &mut self.log_rows,
                )
                .await?,
            ),
            LedgerEvent::RunComplete(e) => {
                let target = e
                    .reason
                    .parse::<ExitReason>()
                    .map_err(|_| unusual("reason"))?
                    .run_state();
                if check_transition(self.state, target, true) != Ok(Transition::Apply) {
                    return Err(unusual("run:complete"));
                }
                release_slot(c, &run.workflow_id, &run.project_id, run.holds_slot != 0).await?;
                self.finished = Some((e.error_type.clone(), e.timestamp.unwrap_or(now)));
                self.state = target;
                Applied::Finished(target)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_render_as_lightning() {
        let v = serde_json::json!(["a", 1, {"k": "v"}, "b\u{7}c\nd"]);
        assert_eq!(render_message(&v), "a 1 {\"k\":\"v\"} bc\nd");
        assert_eq!(render_message(&serde_json::json!("x")), "x");
    }
}
