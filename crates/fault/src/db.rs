//! What the harness reads from the orchestrator's database once every run
//! is final: work orders, runs (with their lease holder), steps in order,
//! and the jobs' marker log lines. A handful of whole-table queries, so
//! 10,000 runs cost seconds.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use gabbro_store::{Store, fetch_all, scalar};

use crate::checks::{MARKER_A, MARKER_B, RunRow, StepRow};
use crate::project::{JOB_A, JOB_B};

/// An open connection to the orchestrator's database (read only in use).
pub struct Db {
    store: Store,
}

#[derive(sqlx::FromRow)]
struct Run {
    id: String,
    work_order_id: String,
    state: String,
    error_type: Option<String>,
    worker_id: Option<String>,
    inserted_at: i64,
    finished_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Step {
    run_id: String,
    job_id: String,
    exit_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Line {
    run_id: String,
    message: String,
}

#[derive(sqlx::FromRow)]
struct Job {
    id: String,
    name: String,
}

impl Db {
    /// Opens `url` (`sqlite://…` or `postgres://…`).
    pub async fn open(url: &str) -> anyhow::Result<Db> {
        let store = Store::connect(url)
            .await
            .with_context(|| format!("cannot open the database {url}"))?;
        Ok(Db { store })
    }

    pub async fn close(self) {
        self.store.close().await;
    }

    /// (runs not final, work orders) — what the settle loop watches. Not
    /// final = available, claimed or started.
    pub async fn progress(&self) -> anyhow::Result<(i64, i64)> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let open: Option<i64> = scalar!(
            conn,
            i64,
            "SELECT count(*) FROM runs WHERE state IN ('available', 'claimed', 'started')"
        )?;
        let wos: Option<i64> = scalar!(conn, i64, "SELECT count(*) FROM work_orders")?;
        Ok((open.unwrap_or(0), wos.unwrap_or(0)))
    }

    /// Runs held by `worker_id` and not final (what a killed worker held).
    pub async fn held_by(&self, worker_id: &str) -> anyhow::Result<HashSet<String>> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let ids: Vec<(String,)> = fetch_all!(
            conn,
            (String,),
            "SELECT id FROM runs WHERE worker_id = $1 AND state IN ('claimed', 'started')",
            worker_id
        )?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    pub async fn work_orders(&self) -> anyhow::Result<HashSet<String>> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let ids: Vec<(String,)> = fetch_all!(conn, (String,), "SELECT id FROM work_orders")?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    pub async fn runs(&self) -> anyhow::Result<Vec<RunRow>> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let rows: Vec<Run> = fetch_all!(
            conn,
            Run,
            "SELECT id, work_order_id, state, error_type, worker_id, inserted_at, finished_at FROM runs ORDER BY inserted_at, id"
        )?;
        Ok(rows
            .into_iter()
            .map(|r| RunRow {
                id: r.id,
                work_order_id: r.work_order_id,
                state: r.state,
                error_type: r.error_type,
                worker_id: r.worker_id,
                inserted_at: r.inserted_at,
                finished_at: r.finished_at,
            })
            .collect())
    }

    /// Steps per run, in execution order.
    pub async fn steps(&self) -> anyhow::Result<HashMap<String, Vec<StepRow>>> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let rows: Vec<Step> = fetch_all!(
            conn,
            Step,
            "SELECT rs.run_id, s.job_id, s.exit_reason FROM run_steps rs JOIN steps s ON s.id = rs.step_id \
             ORDER BY rs.run_id, rs.position, s.started_at, s.id"
        )?;
        let mut out: HashMap<String, Vec<StepRow>> = HashMap::new();
        for r in rows {
            out.entry(r.run_id).or_default().push(StepRow {
                job_id: r.job_id,
                exit_reason: r.exit_reason,
            });
        }
        Ok(out)
    }

    /// Per run: how many log lines carry MARKER_A and MARKER_B.
    pub async fn marker_lines(&self) -> anyhow::Result<HashMap<String, (u32, u32)>> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let rows: Vec<Line> = fetch_all!(
            conn,
            Line,
            "SELECT run_id, message FROM log_lines WHERE message LIKE '%fault-step-%'"
        )?;
        let mut out: HashMap<String, (u32, u32)> = HashMap::new();
        for r in rows {
            let e = out.entry(r.run_id).or_default();
            if r.message.contains(MARKER_A) {
                e.0 += 1;
            }
            if r.message.contains(MARKER_B) {
                e.1 += 1;
            }
        }
        Ok(out)
    }

    /// The ids of jobs A and B.
    pub async fn job_ids(&self) -> anyhow::Result<(String, String)> {
        let mut c = self.store.read().await?;
        let mut conn = c.reborrow();
        let jobs: Vec<Job> = fetch_all!(conn, Job, "SELECT id, name FROM jobs")?;
        let find = |name: &str| {
            jobs.iter()
                .find(|j| j.name == name)
                .map(|j| j.id.clone())
                .with_context(|| format!("job {name} is not in the database"))
        };
        Ok((find(JOB_A)?, find(JOB_B)?))
    }
}
