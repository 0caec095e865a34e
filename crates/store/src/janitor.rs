//! Leases and the janitor (issue 5 item 3, design.md §6): the rules that
//! requeue or lose runs whose worker went away, judged by durable leases
//! and by how long this orchestrator has itself been up — never by time
//! alone.
//!
//! Rules, applied by [`Store::janitor_sweep`]:
//! 1. `claimed`, never joined, claimed longer ago than the claim lease (and
//!    the orchestrator up that long) → back to `available`; the old claim is
//!    refused afterwards (claim epoch).
//! 2. `claimed` and joined, or `started`, and silent past the run lease,
//!    silence counted only from when the orchestrator came up → `lost`
//!    (`LostAfterClaim` / `LostAfterStart`).
//! 3. `claimed` or `started` past its `run_timeout_ms` plus grace (from
//!    `started_at`, else `claimed_at`) → `lost`, whatever the uptime.
//!
//! A lost run's open steps get exit reason `lost`; its slot is freed; the
//! work order is recomputed; a project with `retry_lost_runs` gets a new
//! run on the same work order. Late truth from the run's own worker still
//! overrides `lost` (see the ledger). Every rule re-checks the run under its
//! row lock, so a sweep never overwrites a racing event, and concurrent
//! sweeps on several nodes are harmless.

use gabbro_model::{LOST_AFTER_CLAIM, LOST_AFTER_START, RunOptions, RunState};

use crate::ledger::{lock_run, run_work_order_follows, system_log};
use crate::queue::{release_slot, requeue_claimed};
use crate::retry::{NewRun, insert_run};
use crate::{Conn, Result, Store, StoreError, db_now_us, exec, fetch_all, fetch_optional, scalar};

/// Lease lengths (µs). Defaults: claim lease 30 s, run lease 90 s, grace
/// 10 s, timeout 300 s for runs without one.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// A claimed run must be joined within this.
    pub claim_lease_us: i64,
    /// A joined/started run's worker must be heard from within this.
    pub run_lease_us: i64,
    /// Added to a run's timeout before it is lost regardless.
    pub grace_us: i64,
    /// Timeout for runs whose options carry none.
    pub default_timeout_us: i64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            claim_lease_us: 30_000_000,
            run_lease_us: 90_000_000,
            grace_us: 10_000_000,
            default_timeout_us: 300_000_000,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JanitorReport {
    /// Claimed runs put back to `available`.
    pub requeued: Vec<String>,
    /// Runs marked `lost`, with their error type.
    pub lost: Vec<(String, String)>,
    /// New runs created for projects that retry lost runs.
    pub retried: Vec<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct Active {
    id: String,
    state: String,
    options: String,
    claimed_at: Option<i64>,
    started_at: Option<i64>,
    joined_at: Option<i64>,
    last_heard_at: Option<i64>,
}

enum Verdict {
    Keep,
    Requeue,
    Lost(&'static str),
}

fn judge(r: &Active, cfg: &LeaseConfig, now: i64, up_since: i64) -> Verdict {
    let state: RunState = match r.state.parse() {
        Ok(s) => s,
        Err(_) => return Verdict::Keep,
    };
    let lost_type = if state == RunState::Started {
        LOST_AFTER_START
    } else {
        LOST_AFTER_CLAIM
    };
    let timeout_us = RunOptions::from_json(&r.options)
        .run_timeout_ms
        .map(|ms| (ms as i64).saturating_mul(1000))
        .unwrap_or(cfg.default_timeout_us);
    if let Some(t0) = r.started_at.or(r.claimed_at)
        && now > t0.saturating_add(timeout_us).saturating_add(cfg.grace_us)
    {
        return Verdict::Lost(lost_type);
    }
    // Silence is only counted while this orchestrator has been up.
    let heard = r
        .last_heard_at
        .or(r.claimed_at)
        .unwrap_or(now)
        .max(up_since);
    match state {
        RunState::Claimed if r.joined_at.is_none() => {
            if now - r.claimed_at.unwrap_or(now).max(up_since) > cfg.claim_lease_us {
                Verdict::Requeue
            } else {
                Verdict::Keep
            }
        }
        RunState::Claimed | RunState::Started if now - heard > cfg.run_lease_us => {
            Verdict::Lost(lost_type)
        }
        _ => Verdict::Keep,
    }
}

impl Store {
    /// One pass of the janitor's rules over the active runs (claimed or
    /// started: the `runs_active` index, never the finished ones).
    /// `up_since_us` is when this orchestrator (and its database
    /// connection) came up, on the database clock ([`crate::db_now_us`]).
    pub async fn janitor_sweep(
        &self,
        cfg: &LeaseConfig,
        up_since_us: i64,
    ) -> Result<JanitorReport> {
        let mut c = self.read().await?;
        let now = db_now_us(&mut c.reborrow()).await?;
        let active = fetch_all!(
            c,
            Active,
            "SELECT id, state, options, claimed_at, started_at, joined_at, last_heard_at
             FROM runs WHERE state IN ('claimed', 'started')"
        )?;
        drop(c);
        let mut report = JanitorReport::default();
        for r in active {
            match judge(&r, cfg, now, up_since_us) {
                Verdict::Keep => {}
                Verdict::Requeue => {
                    let (id, cfg2) = (r.id.clone(), *cfg);
                    let moved = self
                        .write(move |mut c| {
                            Box::pin(async move {
                                // Re-judge under the lock: it may have been joined since.
                                let now = db_now_us(&mut c).await?;
                                match recheck(&mut c, &id, &cfg2, now, up_since_us).await? {
                                    Some(Verdict::Requeue) => {
                                        requeue_claimed(&mut c, &id, None).await
                                    }
                                    _ => Ok(false),
                                }
                            })
                        })
                        .await?;
                    if moved {
                        tracing::info!(run_id = %r.id, "claimed run never joined: back to available");
                        report.requeued.push(r.id);
                    }
                }
                Verdict::Lost(_) => {
                    let (id, cfg2) = (r.id.clone(), *cfg);
                    let out = self
                        .write(move |mut c| {
                            Box::pin(async move {
                                let now = db_now_us(&mut c).await?;
                                match recheck(&mut c, &id, &cfg2, now, up_since_us).await? {
                                    Some(Verdict::Lost(t)) => mark_lost_in(&mut c, &id, t, now)
                                        .await
                                        .map(|r| r.map(|n| (t, n))),
                                    _ => Ok(None),
                                }
                            })
                        })
                        .await?;
                    if let Some((t, retry)) = out {
                        tracing::warn!(run_id = %r.id, error_type = t, "run lost");
                        report.lost.push((r.id, t.to_string()));
                        report.retried.extend(retry);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Marks one claimed or started run `lost` now (API/operator use; the
    /// janitor uses the same path). False if it was not active.
    pub async fn mark_run_lost(&self, run_id: &str, error_type: &str) -> Result<bool> {
        let (id, t) = (run_id.to_string(), error_type.to_string());
        self.write(move |mut c| {
            Box::pin(async move {
                let now = db_now_us(&mut c).await?;
                Ok(mark_lost_in(&mut c, &id, &t, now).await?.is_some())
            })
        })
        .await
    }

    /// The run's worker joined its channel: records it and renews the
    /// lease. Refused ([`StoreError::NotHolder`]) unless `worker_id` holds
    /// the run under `claim_epoch` — a requeued run's old claim is dead.
    /// Allowed on a `lost` run for its own worker (to deliver late truth).
    pub async fn run_joined(&self, run_id: &str, worker_id: &str, claim_epoch: i32) -> Result<()> {
        let (id, w) = (run_id.to_string(), worker_id.to_string());
        self.write(move |mut c| {
            Box::pin(async move {
                #[derive(sqlx::FromRow)]
                struct Holder {
                    worker_id: Option<String>,
                    claim_epoch: i32,
                }
                let sql = c.pick(
                    "SELECT worker_id, claim_epoch FROM runs WHERE id = $1",
                    "SELECT worker_id, claim_epoch FROM runs WHERE id = $1 FOR UPDATE",
                );
                let h = fetch_optional!(c, Holder, sql, &id)?.ok_or_else(|| StoreError::not_found("run", &id))?;
                if h.worker_id.as_deref() != Some(w.as_str()) || h.claim_epoch != claim_epoch {
                    return Err(StoreError::NotHolder);
                }
                let now = db_now_us(&mut c).await?;
                exec!(
                    c,
                    "UPDATE runs SET joined_at = COALESCE(joined_at, $2), last_heard_at = $2 WHERE id = $1",
                    &id,
                    now
                )?;
                Ok(())
            })
        })
        .await
    }
}

async fn recheck(
    c: &mut Conn<'_>,
    id: &str,
    cfg: &LeaseConfig,
    now: i64,
    up_since: i64,
) -> Result<Option<Verdict>> {
    let sql = c.pick(
        "SELECT id, state, options, claimed_at, started_at, joined_at, last_heard_at FROM runs WHERE id = $1",
        "SELECT id, state, options, claimed_at, started_at, joined_at, last_heard_at FROM runs WHERE id = $1 FOR UPDATE",
    );
    Ok(fetch_optional!(c, Active, sql, id)?.map(|r| judge(&r, cfg, now, up_since)))
}

/// Marks the run lost if it is still claimed or started. Returns `None` if
/// it was not, else the retry run created for it (if its project retries
/// lost runs).
async fn mark_lost_in(
    c: &mut Conn<'_>,
    run_id: &str,
    error_type: &str,
    now: i64,
) -> Result<Option<Option<String>>> {
    let run = lock_run(c, run_id).await?;
    if !matches!(run.state()?, RunState::Claimed | RunState::Started) {
        return Ok(None);
    }
    exec!(
        c,
        "UPDATE runs SET state = 'lost', error_type = $2, finished_at = $3 WHERE id = $1",
        run_id,
        error_type,
        now
    )?;
    exec!(
        c,
        "UPDATE steps SET exit_reason = 'lost', finished_at = $2
         WHERE finished_at IS NULL AND id IN (SELECT step_id FROM run_steps WHERE run_id = $1)",
        run_id,
        now
    )?;
    release_slot(c, &run.workflow_id, &run.project_id, run.holds_slot != 0).await?;
    run_work_order_follows(c, &run, run_id, RunState::Lost, now).await?;
    system_log(
        c,
        run_id,
        "error",
        &format!("run lost ({error_type}): its worker went silent or overran"),
        now,
    )
    .await?;
    let retry = scalar!(
        c,
        bool,
        "SELECT retry_lost_runs FROM projects WHERE id = $1",
        &run.project_id
    )?
    .unwrap_or(false);
    if !retry {
        return Ok(Some(None));
    }
    #[derive(sqlx::FromRow)]
    struct Start {
        starting_job_id: Option<String>,
        starting_trigger_id: Option<String>,
        dataclip_id: Option<String>,
    }
    let Some(st) = fetch_optional!(
        c,
        Start,
        "SELECT starting_job_id, starting_trigger_id, dataclip_id FROM runs WHERE id = $1",
        run_id
    )?
    else {
        return Ok(Some(None));
    };
    let Some(clip) = st.dataclip_id else {
        return Ok(Some(None));
    };
    let new_run = insert_run(
        c,
        &NewRun {
            work_order_id: &run.work_order_id,
            workflow_id: &run.workflow_id,
            project_id: &run.project_id,
            starting_job_id: st.starting_job_id.as_deref(),
            starting_trigger_id: st.starting_trigger_id.as_deref(),
            dataclip_id: &clip,
            options: &run.options,
            created_by: None,
        },
        &run.snapshot_id,
        now,
    )
    .await?;
    Ok(Some(Some(new_run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(
        state: &str,
        claimed: i64,
        started: Option<i64>,
        joined: Option<i64>,
        heard: i64,
    ) -> Active {
        Active {
            id: "r".into(),
            state: state.into(),
            options: r#"{"run_timeout_ms": 600000}"#.into(),
            claimed_at: Some(claimed),
            started_at: started,
            joined_at: joined,
            last_heard_at: Some(heard),
        }
    }

    const S: i64 = 1_000_000;

    #[test]
    fn unjoined_claims_are_requeued_after_the_claim_lease() {
        let cfg = LeaseConfig::default();
        let r = active("claimed", 0, None, None, 0);
        assert!(matches!(judge(&r, &cfg, 20 * S, 0), Verdict::Keep));
        assert!(matches!(judge(&r, &cfg, 31 * S, 0), Verdict::Requeue));
    }

    #[test]
    fn silence_counts_only_while_the_orchestrator_is_up() {
        let cfg = LeaseConfig::default();
        let r = active("started", 0, Some(S), Some(S), S);
        // Silent 100 s, but the orchestrator only came up 10 s ago.
        assert!(matches!(judge(&r, &cfg, 100 * S, 90 * S), Verdict::Keep));
        // Up long enough: lost after start.
        assert!(matches!(
            judge(&r, &cfg, 100 * S, 0),
            Verdict::Lost(LOST_AFTER_START)
        ));
        // Joined but never started, silent: lost after claim.
        let j = active("claimed", 0, None, Some(S), S);
        assert!(matches!(
            judge(&j, &cfg, 100 * S, 0),
            Verdict::Lost(LOST_AFTER_CLAIM)
        ));
    }

    #[test]
    fn past_timeout_plus_grace_is_lost_regardless_of_uptime() {
        let cfg = LeaseConfig::default();
        let r = active("started", 0, Some(0), Some(0), 700 * S);
        assert!(matches!(judge(&r, &cfg, 605 * S, 700 * S), Verdict::Keep));
        assert!(matches!(
            judge(&r, &cfg, 611 * S, 700 * S),
            Verdict::Lost(LOST_AFTER_START)
        ));
    }
}
