//! The run queue: claim (one atomic operation per claimer), rollback of
//! claims whose reply never reached the worker, and the concurrency counters
//! both maintain.
//!
//! Claim looks only at the *head* of each (workflow, queue) — one index
//! probe per pair (`runs_available_head`) — filters the heads by the
//! workflow's or project's concurrency limit using `concurrency_counters`,
//! and takes the best by (queue preference, priority, age). Its cost depends
//! on the number of workflows, not on queue depth or on finished runs.
//!
//! On PostgreSQL the chosen head is re-selected `FOR UPDATE SKIP LOCKED`
//! (so racing claimers take the next run instead of waiting) and the counter
//! rows are bumped with a guarded `UPDATE … WHERE active < limit`, which
//! serialises claimers of one limited workflow on its counter row. Locks are
//! always taken in the order run → workflow counter → project counter (the
//! ledger and janitor do the same), so claimers never deadlock. On SQLite
//! the claim runs in the single writer, which is exclusive anyway.

use gabbro_model::{QueuePreference, queues};

use crate::dynamic::{Bind, fetch_dynamic};
use crate::{Backend, Conn, Result, Store, db_now_us, exec, fetch_all, fetch_optional, scalar};

/// PostgreSQL `NOTIFY` channel signalled (payload: workflow id) whenever a
/// run becomes available, so every node can tell its workers.
pub const RUN_AVAILABLE_CHANNEL: &str = "gabbro_run_available";

/// A claim request from one worker.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// How many runs at most.
    pub demand: usize,
    /// The claimer's queue preference (`["manual", "*"]` by default).
    pub queues: QueuePreference,
    /// The worker's self-reported name (Lightning's `worker_name`).
    pub worker_name: Option<String>,
    /// The worker token's `worker_id`: the lease holder.
    pub worker_id: String,
}

/// A run handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedRun {
    /// The run.
    pub id: String,
    /// Bumped on every claim; put it in the run token so a stale claim of a
    /// requeued run can be refused.
    pub claim_epoch: i32,
    /// Its work order.
    pub work_order_id: String,
    /// Its workflow.
    pub workflow_id: String,
    /// Its project.
    pub project_id: String,
    /// The frozen [`gabbro_model::RunOptions`] JSON.
    pub options: String,
    /// When it was claimed (µs).
    pub claimed_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct Head {
    id: String,
    workflow_id: String,
    project_id: String,
    queue: String,
    priority: i32,
    inserted_at: i64,
    wf_limit: Option<i32>,
    proj_limit: Option<i32>,
    wf_active: Option<i32>,
    proj_active: Option<i32>,
}

impl Head {
    fn has_room(&self) -> bool {
        self.wf_limit
            .is_none_or(|l| self.wf_active.unwrap_or(0) < l)
            && self
                .proj_limit
                .is_none_or(|l| self.proj_active.unwrap_or(0) < l)
    }
}

impl Store {
    /// Claims up to `demand` available runs for one worker, atomically: each
    /// run is claimed by at most one claimer. Sets `claimed_at`,
    /// `worker_name`, `worker_id`, `last_heard_at`, bumps `claim_epoch`.
    pub async fn claim(&self, req: ClaimRequest) -> Result<Vec<ClaimedRun>> {
        if req.demand == 0 {
            return Ok(Vec::new());
        }
        if self.backend() == Backend::Sqlite {
            // The single writer is exclusive: the whole demand in one batch.
            return self
                .write(move |mut c| Box::pin(async move { claim_in(&mut c, &req).await }))
                .await;
        }
        // PostgreSQL: one run per transaction, so a claimer never holds one
        // workflow's counter while waiting for another's (no lock cycles);
        // a rare deadlock with the ledger is retried.
        let mut out = Vec::new();
        let mut attempts = 0;
        while out.len() < req.demand {
            let one = ClaimRequest {
                demand: 1,
                ..req.clone()
            };
            match self
                .write(move |mut c| Box::pin(async move { claim_in(&mut c, &one).await }))
                .await
            {
                Ok(got) if got.is_empty() => break,
                Ok(got) => out.extend(got),
                Err(e) if is_retryable(&e) && attempts < 5 => attempts += 1,
                Err(e) if out.is_empty() => return Err(e),
                // Runs already claimed must reach the worker: stop here.
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Puts claimed runs back to `available` (the claimer's socket died
    /// before the reply, Lightning's `rollback_claimed_runs`). Only runs
    /// still `claimed` with the given epoch move; returns how many did.
    pub async fn release_claims(&self, runs: Vec<(String, i32)>) -> Result<u64> {
        self.write(move |mut c| {
            Box::pin(async move {
                let mut n = 0;
                for (id, epoch) in runs {
                    if requeue_claimed(&mut c, &id, Some(epoch)).await? {
                        n += 1;
                    }
                }
                Ok(n)
            })
        })
        .await
    }

    /// A worker (re)joined `worker:queue` listing the runs it holds: every
    /// run `worker_id` holds in `claimed` that is not in `held` goes back to
    /// `available` at once (its claim reply was lost). The claim epoch is
    /// kept, and the worker id cleared, so the lost reply's token is
    /// refused by [`Store::run_joined`]; the next claim bumps the epoch.
    /// `started` runs are left to the janitor's run lease. Returns the ids
    /// of the runs that moved.
    pub async fn requeue_unheld_claims(
        &self,
        worker_id: &str,
        held: Vec<String>,
    ) -> Result<Vec<String>> {
        let worker_id = worker_id.to_string();
        self.write(move |mut c| {
            Box::pin(async move {
                #[derive(sqlx::FromRow)]
                struct Claimed {
                    id: String,
                    claim_epoch: i32,
                }
                let claimed = fetch_all!(
                    c,
                    Claimed,
                    "SELECT id, claim_epoch FROM runs WHERE worker_id = $1 AND state = 'claimed'",
                    &worker_id
                )?;
                let mut moved = Vec::new();
                for r in claimed {
                    if !held.contains(&r.id)
                        && requeue_claimed(&mut c, &r.id, Some(r.claim_epoch)).await?
                    {
                        moved.push(r.id);
                    }
                }
                Ok(moved)
            })
        })
        .await
    }
}

/// PostgreSQL deadlock or serialization failure: safe to retry.
pub(crate) fn is_retryable(e: &crate::StoreError) -> bool {
    match e {
        crate::StoreError::Db(sqlx::Error::Database(d)) => {
            matches!(d.code().as_deref(), Some("40P01") | Some("40001"))
        }
        _ => false,
    }
}

async fn claim_in(c: &mut Conn<'_>, req: &ClaimRequest) -> Result<Vec<ClaimedRun>> {
    let now = db_now_us(c).await?;
    let mut out = Vec::new();
    while out.len() < req.demand {
        match claim_one(c, req, now).await? {
            Some(run) => out.push(run),
            None => break,
        }
    }
    Ok(out)
}

/// The queues a claimer may take: the named ones, plus every standard queue
/// when it has `*`.
fn eligible_queues(prefs: &QueuePreference) -> Vec<String> {
    let mut qs: Vec<String> = prefs.named().map(str::to_string).collect();
    if prefs.has_wildcard() {
        for q in [queues::MANUAL, queues::FAST_LANE, queues::DEFAULT] {
            if !qs.iter().any(|x| x == q) {
                qs.push(q.to_string());
            }
        }
    }
    qs
}

/// The head of every (workflow, queue) pair for the eligible queues, in one
/// statement (on SQLite each statement is a round trip to the connection's
/// thread, on PostgreSQL one over the network). Each head is one probe of
/// `runs_available_head`: SQLite plans the correlated subquery that way;
/// PostgreSQL is given a `LATERAL` join, because for `r.id = (subquery)` it
/// may hash-join a scan of the whole runs table (a fresh table without
/// statistics, as after a burst of webhooks).
async fn heads(c: &mut Conn<'_>, queues: &[String]) -> Result<Vec<Head>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let head = "SELECT r2.id, r2.workflow_id, r2.project_id, r2.queue, r2.priority, r2.inserted_at
                FROM runs r2
                WHERE r2.workflow_id = w.id AND r2.queue = q.column1 AND r2.state = 'available'
                ORDER BY r2.priority, r2.inserted_at, r2.id LIMIT 1";
    let join = match c.backend() {
        Backend::Sqlite => format!("JOIN runs r ON r.id = (SELECT id FROM ({head}))"),
        Backend::Postgres => format!("CROSS JOIN LATERAL ({head}) r"),
    };
    // `VALUES` names its column `column1` on both databases. The SQL only
    // varies in its number of placeholders; the queue names are bound.
    let values: Vec<String> = (1..=queues.len()).map(|i| format!("(${i})")).collect();
    let sql = format!(
        "SELECT r.id, r.workflow_id, r.project_id, r.queue, r.priority, r.inserted_at,
                w.concurrency AS wf_limit, p.concurrency AS proj_limit,
                cw.active AS wf_active, cp.active AS proj_active
         FROM (VALUES {}) AS q
         CROSS JOIN workflows w
         JOIN projects p ON p.id = w.project_id
         {join}
         LEFT JOIN concurrency_counters cw ON cw.scope = 'w:' || w.id
         LEFT JOIN concurrency_counters cp ON cp.scope = 'p:' || p.id",
        values.join(", ")
    );
    let binds = queues.iter().map(|q| Bind::Text(q.clone())).collect();
    fetch_dynamic(c, sql, binds).await
}

async fn claim_one(c: &mut Conn<'_>, req: &ClaimRequest, now: i64) -> Result<Option<ClaimedRun>> {
    let mut candidates: Vec<Head> = heads(c, &eligible_queues(&req.queues))
        .await?
        .into_iter()
        .filter(Head::has_room)
        .collect();
    candidates.sort_by(|a, b| {
        let ra = req.queues.rank(&a.queue).unwrap_or(usize::MAX);
        let rb = req.queues.rank(&b.queue).unwrap_or(usize::MAX);
        (ra, a.priority, a.inserted_at, &a.id).cmp(&(rb, b.priority, b.inserted_at, &b.id))
    });
    for h in candidates {
        let run_id = match c.backend() {
            Backend::Sqlite => h.id.clone(),
            // Someone may hold the head: take the next unlocked run of the
            // same workflow and queue instead of waiting.
            Backend::Postgres => match scalar!(
                c,
                String,
                "SELECT id FROM runs WHERE workflow_id = $1 AND queue = $2 AND state = 'available'
                 ORDER BY priority, inserted_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &h.workflow_id,
                &h.queue
            )? {
                Some(id) => id,
                None => continue,
            },
        };
        // Only a run with a limit in its scope takes a slot (see
        // `holds_slot`, migration 0007): a limit applies to the runs
        // claimed after it was set.
        let counted = h.wf_limit.is_some() || h.proj_limit.is_some();
        if counted && !take_slot(c, &h).await? {
            continue;
        }
        let claimed = fetch_optional!(
            c,
            ClaimedRun,
            "UPDATE runs SET state = 'claimed', claimed_at = $2, worker_name = $3, worker_id = $4,
                    claim_epoch = claim_epoch + 1, last_heard_at = $2, last_seq = NULL, joined_at = NULL,
                    holds_slot = $5
             WHERE id = $1 AND state = 'available'
             RETURNING id, claim_epoch, work_order_id, workflow_id, project_id, options, claimed_at",
            &run_id,
            now,
            &req.worker_name,
            &req.worker_id,
            i32::from(counted)
        )?;
        match claimed {
            Some(run) => return Ok(Some(run)),
            None => release_slot(c, &h.workflow_id, &h.project_id, counted).await?,
        }
    }
    Ok(None)
}

/// Bumps the workflow's and the project's counters if both limits have
/// room (each limit caps every active run in its scope). False = no room.
async fn take_slot(c: &mut Conn<'_>, h: &Head) -> Result<bool> {
    let (w, p) = (
        format!("w:{}", h.workflow_id),
        format!("p:{}", h.project_id),
    );
    for (scope, missing) in [(&w, h.wf_active.is_none()), (&p, h.proj_active.is_none())] {
        if missing {
            exec!(
                c,
                "INSERT INTO concurrency_counters (scope, active) VALUES ($1, 0) ON CONFLICT (scope) DO NOTHING",
                scope
            )?;
        }
    }
    let wf_ok = bump(c, &w, h.wf_limit).await?;
    if !wf_ok {
        return Ok(false);
    }
    // Both limits apply (docs/queue.md): the project's caps every active run
    // of the project, also in workflows that have a limit of their own.
    if !bump(c, &p, h.proj_limit).await? {
        exec!(
            c,
            "UPDATE concurrency_counters SET active = active - 1 WHERE scope = $1 AND active > 0",
            &w
        )?;
        return Ok(false);
    }
    Ok(true)
}

async fn bump(c: &mut Conn<'_>, scope: &str, limit: Option<i32>) -> Result<bool> {
    let n = match limit {
        Some(l) => exec!(
            c,
            "UPDATE concurrency_counters SET active = active + 1 WHERE scope = $1 AND active < $2",
            scope,
            l
        )?,
        None => exec!(
            c,
            "UPDATE concurrency_counters SET active = active + 1 WHERE scope = $1",
            scope
        )?,
    };
    Ok(n == 1)
}

/// Frees the slot a run held while claimed or started (if it took one,
/// `holds_slot`): call in the same transaction as every move out of
/// claimed|started.
pub(crate) async fn release_slot(
    c: &mut Conn<'_>,
    workflow_id: &str,
    project_id: &str,
    holds_slot: bool,
) -> Result<()> {
    if !holds_slot {
        return Ok(());
    }
    exec!(
        c,
        "UPDATE concurrency_counters SET active = active - 1 WHERE scope = $1 AND active > 0",
        format!("w:{workflow_id}")
    )?;
    exec!(
        c,
        "UPDATE concurrency_counters SET active = active - 1 WHERE scope = $1 AND active > 0",
        format!("p:{project_id}")
    )?;
    Ok(())
}

/// Moves a `claimed` run back to `available` (optionally only for one
/// claim epoch), frees its slot and signals availability. True if it moved.
pub(crate) async fn requeue_claimed(
    c: &mut Conn<'_>,
    run_id: &str,
    epoch: Option<i32>,
) -> Result<bool> {
    #[derive(sqlx::FromRow)]
    struct Moved {
        workflow_id: String,
        project_id: String,
        holds_slot: i32,
    }
    let moved = fetch_optional!(
        c,
        Moved,
        "UPDATE runs SET state = 'available', claimed_at = NULL, worker_name = NULL,
                worker_id = NULL, last_heard_at = NULL, joined_at = NULL
         WHERE id = $1 AND state = 'claimed' AND ($2 = -1 OR claim_epoch = $2)
         RETURNING workflow_id, project_id, holds_slot",
        run_id,
        epoch.unwrap_or(-1)
    )?;
    match moved {
        Some(m) => {
            release_slot(c, &m.workflow_id, &m.project_id, m.holds_slot != 0).await?;
            notify_available(c, &m.workflow_id).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Signals that a run of `workflow_id` became available: `NOTIFY` on
/// PostgreSQL (delivered at commit); nothing on SQLite, where the server
/// wakes its workers in-process after the write returns.
pub(crate) async fn notify_available(c: &mut Conn<'_>, workflow_id: &str) -> Result<()> {
    if c.backend() == Backend::Postgres {
        exec!(
            c,
            "SELECT pg_notify('gabbro_run_available', $1)",
            workflow_id
        )?;
    }
    Ok(())
}
