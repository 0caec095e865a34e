//! New runs on existing work orders: retry from a step, bulk rerun, and
//! manual runs. Each new run uses the workflow's latest snapshot, the
//! `manual` queue and immediate priority, as Lightning's `WorkOrders.retry`.

use std::collections::{HashMap, HashSet, VecDeque};

use gabbro_model::{RunOptions, RunState, queues};

use crate::ledger::refresh_work_order;
use crate::queue::notify_available;
use crate::{
    Conn, Result, Store, StoreError, db_now_us, exec, fetch_all, fetch_optional, new_id, scalar,
};

/// What [`Store::rerun_work_orders`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RerunOutcome {
    /// `(work_order_id, new run id)` for each rerun.
    pub enqueued: Vec<(String, String)>,
    /// Work orders that could not be rerun (unknown, input wiped, workflow
    /// deleted), with the reason.
    pub discarded: Vec<(String, String)>,
}

pub(crate) struct NewRun<'a> {
    pub(crate) work_order_id: &'a str,
    pub(crate) workflow_id: &'a str,
    pub(crate) project_id: &'a str,
    pub(crate) starting_job_id: Option<&'a str>,
    pub(crate) starting_trigger_id: Option<&'a str>,
    pub(crate) dataclip_id: &'a str,
    pub(crate) options: &'a str,
    pub(crate) created_by: Option<&'a str>,
}

async fn latest_snapshot(c: &mut Conn<'_>, workflow_id: &str) -> Result<(String, String)> {
    #[derive(sqlx::FromRow)]
    struct Snap {
        id: String,
        body: String,
    }
    let deleted = scalar!(
        c,
        Option<i64>,
        "SELECT deleted_at FROM workflows WHERE id = $1",
        workflow_id
    )?;
    match deleted {
        None => return Err(StoreError::not_found("workflow", workflow_id)),
        Some(Some(_)) => return Err(StoreError::rejected("workflow", "has been deleted")),
        Some(None) => {}
    }
    let s = fetch_optional!(
        c,
        Snap,
        "SELECT id, body FROM workflow_snapshots WHERE workflow_id = $1 ORDER BY lock_version DESC LIMIT 1",
        workflow_id
    )?
    .ok_or_else(|| StoreError::rejected("workflow", "has no snapshot"))?;
    Ok((s.id, s.body))
}

async fn check_input(c: &mut Conn<'_>, dataclip_id: Option<&str>) -> Result<String> {
    let id = dataclip_id.ok_or_else(|| StoreError::rejected("dataclip", "is missing"))?;
    let wiped = scalar!(
        c,
        Option<i64>,
        "SELECT wiped_at FROM dataclips WHERE id = $1",
        id
    )?;
    match wiped {
        None => Err(StoreError::rejected("dataclip", "does not exist")),
        Some(Some(_)) => Err(StoreError::rejected("dataclip", "has been wiped")),
        Some(None) => Ok(id.to_string()),
    }
}

pub(crate) async fn insert_run(
    c: &mut Conn<'_>,
    r: &NewRun<'_>,
    snapshot_id: &str,
    now: i64,
) -> Result<String> {
    let id = new_id();
    exec!(
        c,
        "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_job_id,
                           starting_trigger_id, dataclip_id, state, queue, priority, options, created_by, inserted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'available', $9, 0, $10, $11, $12)",
        &id,
        r.work_order_id,
        r.workflow_id,
        r.project_id,
        snapshot_id,
        r.starting_job_id,
        r.starting_trigger_id,
        r.dataclip_id,
        queues::MANUAL,
        r.options,
        r.created_by,
        now
    )?;
    refresh_work_order(c, r.work_order_id, &id, RunState::Available, now).await?;
    notify_available(c, r.workflow_id).await?;
    Ok(id)
}

/// Jobs reachable from `job_id` along the snapshot's edges (itself included).
fn downstream(snapshot_body: &str, job_id: &str) -> HashSet<String> {
    let v: serde_json::Value = serde_json::from_str(snapshot_body).unwrap_or_default();
    let mut next: HashMap<String, Vec<String>> = HashMap::new();
    for e in v
        .get("edges")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(s), Some(t)) = (
            e.get("source_job_id").and_then(|x| x.as_str()),
            e.get("target_job_id").and_then(|x| x.as_str()),
        ) {
            next.entry(s.to_string()).or_default().push(t.to_string());
        }
    }
    let mut seen = HashSet::from([job_id.to_string()]);
    let mut todo = VecDeque::from([job_id.to_string()]);
    while let Some(j) = todo.pop_front() {
        for t in next.get(&j).into_iter().flatten() {
            if seen.insert(t.clone()) {
                todo.push_back(t.clone());
            }
        }
    }
    seen
}

impl Store {
    /// Retries `run_id` from `step_id`: a new run on the same work order
    /// starting at the step's job with the step's input dataclip; the old
    /// run's steps that are not downstream of that job are linked to the new
    /// run (not re-run). Returns the new run's id.
    pub async fn retry_from_step(
        &self,
        run_id: &str,
        step_id: &str,
        created_by: Option<&str>,
    ) -> Result<String> {
        let (run_id, step_id, created_by) = (
            run_id.to_string(),
            step_id.to_string(),
            created_by.map(str::to_string),
        );
        self.write(move |mut c| {
            Box::pin(async move {
                let c = &mut c;
                #[derive(sqlx::FromRow)]
                struct Old {
                    work_order_id: String,
                    workflow_id: String,
                    project_id: String,
                    options: String,
                }
                let old = fetch_optional!(
                    c,
                    Old,
                    "SELECT work_order_id, workflow_id, project_id, options FROM runs WHERE id = $1",
                    &run_id
                )?
                .ok_or_else(|| StoreError::not_found("run", &run_id))?;
                #[derive(sqlx::FromRow)]
                struct Step {
                    job_id: String,
                    input_dataclip_id: Option<String>,
                }
                let step = fetch_optional!(
                    c,
                    Step,
                    "SELECT s.job_id, s.input_dataclip_id FROM steps s
                     JOIN run_steps rs ON rs.step_id = s.id AND rs.run_id = $1 WHERE s.id = $2",
                    &run_id,
                    &step_id
                )?
                .ok_or_else(|| StoreError::not_found("step", &step_id))?;
                let input = check_input(c, step.input_dataclip_id.as_deref()).await?;
                let (snapshot_id, body) = latest_snapshot(c, &old.workflow_id).await?;
                let now = db_now_us(c).await?;
                let new_run = insert_run(
                    c,
                    &NewRun {
                        work_order_id: &old.work_order_id,
                        workflow_id: &old.workflow_id,
                        project_id: &old.project_id,
                        starting_job_id: Some(&step.job_id),
                        starting_trigger_id: None,
                        dataclip_id: &input,
                        options: &old.options,
                        created_by: created_by.as_deref(),
                    },
                    &snapshot_id,
                    now,
                )
                .await?;
                // Upstream steps are reused, in their original order.
                #[derive(sqlx::FromRow)]
                struct Linked {
                    step_id: String,
                    job_id: String,
                }
                let linked = fetch_all!(
                    c,
                    Linked,
                    "SELECT rs.step_id, s.job_id FROM run_steps rs JOIN steps s ON s.id = rs.step_id
                     WHERE rs.run_id = $1 ORDER BY rs.position",
                    &run_id
                )?;
                let skip = downstream(&body, &step.job_id);
                let mut position = 0;
                for l in linked.into_iter().filter(|l| !skip.contains(&l.job_id)) {
                    position += 1;
                    exec!(
                        c,
                        "INSERT INTO run_steps (run_id, step_id, position) VALUES ($1, $2, $3)",
                        &new_run,
                        l.step_id,
                        position
                    )?;
                }
                Ok(new_run)
            })
        })
        .await
    }

    /// Reruns work orders from their first run's start (trigger or job) with
    /// its input, as Lightning's bulk rerun. Each work order is its own
    /// transaction; those that cannot be rerun are reported, not fatal.
    pub async fn rerun_work_orders(
        &self,
        ids: Vec<String>,
        created_by: Option<&str>,
    ) -> Result<RerunOutcome> {
        let mut out = RerunOutcome::default();
        for wo in ids {
            let (w, by) = (wo.clone(), created_by.map(str::to_string));
            let res = self
                .write(move |mut c| {
                    Box::pin(async move {
                        let c = &mut c;
                        #[derive(sqlx::FromRow)]
                        struct First {
                            workflow_id: String,
                            project_id: String,
                            starting_job_id: Option<String>,
                            starting_trigger_id: Option<String>,
                            dataclip_id: Option<String>,
                            options: String,
                        }
                        let first = fetch_optional!(
                            c,
                            First,
                            "SELECT workflow_id, project_id, starting_job_id, starting_trigger_id, dataclip_id, options
                             FROM runs WHERE work_order_id = $1 ORDER BY inserted_at, id LIMIT 1",
                            &w
                        )?
                        .ok_or_else(|| StoreError::not_found("work order", &w))?;
                        let input = check_input(c, first.dataclip_id.as_deref()).await?;
                        let (snapshot_id, _) = latest_snapshot(c, &first.workflow_id).await?;
                        let now = db_now_us(c).await?;
                        insert_run(
                            c,
                            &NewRun {
                                work_order_id: &w,
                                workflow_id: &first.workflow_id,
                                project_id: &first.project_id,
                                starting_job_id: first.starting_job_id.as_deref(),
                                starting_trigger_id: first.starting_trigger_id.as_deref(),
                                dataclip_id: &input,
                                options: &first.options,
                                created_by: by.as_deref(),
                            },
                            &snapshot_id,
                            now,
                        )
                        .await
                    })
                })
                .await;
            match res {
                Ok(run) => out.enqueued.push((wo, run)),
                Err(e @ (StoreError::Rejected { .. } | StoreError::NotFound { .. })) => {
                    out.discarded.push((wo, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A manual run of a workflow (UI/API "run"): a `saved_input` dataclip
    /// with `body` (JSON text, stored as given), a work order without a
    /// trigger, and a run starting at `job_id` (default: the job the
    /// workflow's first trigger points at) in the `manual` queue. Returns
    /// `(work_order_id, run_id)`.
    pub async fn create_manual_run(
        &self,
        workflow_id: &str,
        job_id: Option<&str>,
        body: &str,
        created_by: Option<&str>,
    ) -> Result<(String, String)> {
        let (wf, job, body, by) = (
            workflow_id.to_string(),
            job_id.map(str::to_string),
            body.to_string(),
            created_by.map(str::to_string),
        );
        self.write(move |mut c| {
            Box::pin(async move {
                let c = &mut c;
                let (snapshot_id, snap_body) = latest_snapshot(c, &wf).await?;
                #[derive(sqlx::FromRow)]
                struct Proj {
                    project_id: String,
                    retention_policy: String,
                }
                let p = fetch_optional!(
                    c,
                    Proj,
                    "SELECT w.project_id, p.retention_policy FROM workflows w JOIN projects p ON p.id = w.project_id WHERE w.id = $1",
                    &wf
                )?
                .ok_or_else(|| StoreError::not_found("workflow", &wf))?;
                let start_job = match job {
                    Some(j) => j,
                    None => first_job(&snap_body).ok_or_else(|| StoreError::rejected("job_id", "can't be blank"))?,
                };
                if !snapshot_lists_job(&snap_body, &start_job) {
                    return Err(StoreError::rejected("job_id", "does not exist"));
                }
                let now = db_now_us(c).await?;
                let (clip, wo) = (new_id(), new_id());
                exec!(
                    c,
                    "INSERT INTO dataclips (id, project_id, type, body, inserted_at) VALUES ($1, $2, 'saved_input', $3, $4)",
                    &clip,
                    &p.project_id,
                    body,
                    now
                )?;
                exec!(
                    c,
                    "INSERT INTO work_orders (id, workflow_id, snapshot_id, dataclip_id, state, last_activity, inserted_at, updated_at)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5)",
                    &wo,
                    &wf,
                    &snapshot_id,
                    &clip,
                    now
                )?;
                let options = RunOptions {
                    save_dataclips: p.retention_policy != "erase_all",
                    ..RunOptions::default()
                }
                .to_json();
                let run = insert_run(
                    c,
                    &NewRun {
                        work_order_id: &wo,
                        workflow_id: &wf,
                        project_id: &p.project_id,
                        starting_job_id: Some(&start_job),
                        starting_trigger_id: None,
                        dataclip_id: &clip,
                        options: &options,
                        created_by: by.as_deref(),
                    },
                    &snapshot_id,
                    now,
                )
                .await?;
                Ok((wo, run))
            })
        })
        .await
    }
}

fn snapshot_lists_job(body: &str, job_id: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v.get("jobs")
        .and_then(|j| j.as_array())
        .is_some_and(|jobs| {
            jobs.iter()
                .any(|j| j.get("id").and_then(|i| i.as_str()) == Some(job_id))
        })
}

/// The job the first trigger edge points at, else the first job.
fn first_job(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let from_trigger = v.get("edges").and_then(|e| e.as_array()).and_then(|edges| {
        edges
            .iter()
            .find(|e| e.get("source_trigger_id").is_some_and(|s| !s.is_null()))
            .and_then(|e| e.get("target_job_id")?.as_str().map(str::to_string))
    });
    from_trigger.or_else(|| {
        v.get("jobs")?
            .as_array()?
            .first()?
            .get("id")?
            .as_str()
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_follows_edges() {
        let b = r#"{"jobs":[{"id":"a"},{"id":"b"},{"id":"c"},{"id":"d"}],
                   "edges":[{"source_trigger_id":"t","target_job_id":"a"},
                            {"source_job_id":"a","target_job_id":"b"},
                            {"source_job_id":"b","target_job_id":"c"},
                            {"source_job_id":"a","target_job_id":"d"}]}"#;
        let d = downstream(b, "b");
        assert!(d.contains("b") && d.contains("c"));
        assert!(!d.contains("a") && !d.contains("d"));
        assert_eq!(first_job(b).as_deref(), Some("a"));
    }
}
