//! Webhook ingest: the input dataclip, the work order and its first run,
//! committed together before the caller answers 200.

use gabbro_model::{RunOptions, queues};

use crate::{Conn, Result, Store, StoreError, exec, fetch_optional, new_id, now_us};

/// One accepted webhook request.
#[derive(Debug, Clone)]
pub struct WebhookIngest {
    /// The trigger's id (the server resolved custom paths and auth).
    pub trigger_id: String,
    /// The request body as received (JSON text); stored as given.
    pub body: String,
    /// `{method, path, query_params, headers}` as JSON text (without
    /// `authorization`, `x-api-key`, `cookie`).
    pub request: String,
    /// The `Idempotency-Key` header: a repeat for the same trigger returns
    /// the first work order.
    pub idempotency_key: Option<String>,
    /// Frozen onto the run. `None`: [`RunOptions::default`] with
    /// `save_dataclips` off for projects whose retention is `erase_all`.
    pub options: Option<RunOptions>,
    /// The run's queue (`default`, or `fast_lane` for sync webhooks).
    pub queue: Option<String>,
}

/// What ingest created (or found, for a repeated idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The work order.
    pub work_order_id: String,
    /// Its first run.
    pub run_id: String,
    /// The input dataclip.
    pub dataclip_id: String,
    /// The workflow the trigger starts.
    pub workflow_id: String,
    /// True when the idempotency key matched an earlier request and nothing
    /// new was created.
    pub existing: bool,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TriggerTarget {
    pub(crate) workflow_id: String,
    pub(crate) project_id: String,
    pub(crate) retention_policy: String,
    pub(crate) snapshot_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Existing {
    work_order_id: String,
    run_id: Option<String>,
    dataclip_id: Option<String>,
    workflow_id: String,
}

impl Store {
    /// Creates the work order, its http_request dataclip and its first run
    /// (state `available`, options frozen, the workflow's latest snapshot) in
    /// one transaction, and returns once it is durably committed. On SQLite
    /// it rides the group-commit writer.
    ///
    /// Errors: [`StoreError::NotFound`] for an unknown trigger,
    /// [`StoreError::Rejected`] when its workflow has no snapshot.
    pub async fn ingest_webhook(&self, req: WebhookIngest) -> Result<Ingested> {
        if let Some(w) = self.sqlite_writer() {
            return w.ingest(req).await;
        }
        let key = req.idempotency_key.clone();
        let trigger = req.trigger_id.clone();
        let out = match self.pg_batcher() {
            Some(b) => b.ingest(req).await,
            None => {
                self.write(move |mut c| Box::pin(async move { ingest_in(&mut c, req).await }))
                    .await
            }
        };
        match (out, key) {
            // PostgreSQL: a concurrent request with the same key won the race;
            // answer with its work order.
            (Err(e), Some(key)) if e.is_unique_violation() => {
                let mut c = self.read().await?;
                find_existing(&mut c.reborrow(), &trigger, &key)
                    .await?
                    .ok_or(e)
            }
            (out, _) => out,
        }
    }
}

/// The workflow, project and latest snapshot a trigger starts.
pub(crate) async fn load_target(
    c: &mut Conn<'_>,
    trigger_id: &str,
) -> Result<Option<TriggerTarget>> {
    Ok(fetch_optional!(
        c,
        TriggerTarget,
        "SELECT w.id AS workflow_id, w.project_id, p.retention_policy,
                (SELECT s.id FROM workflow_snapshots s WHERE s.workflow_id = w.id
                  ORDER BY s.lock_version DESC LIMIT 1) AS snapshot_id
         FROM triggers t JOIN workflows w ON w.id = t.workflow_id
         JOIN projects p ON p.id = w.project_id
         WHERE t.id = $1",
        trigger_id
    )?)
}

pub(crate) async fn find_existing(
    c: &mut Conn<'_>,
    trigger_id: &str,
    key: &str,
) -> Result<Option<Ingested>> {
    let row = fetch_optional!(
        c,
        Existing,
        "SELECT wo.id AS work_order_id, wo.dataclip_id, wo.workflow_id,
                (SELECT r.id FROM runs r WHERE r.work_order_id = wo.id
                  ORDER BY r.inserted_at, r.id LIMIT 1) AS run_id
         FROM work_orders wo WHERE wo.trigger_id = $1 AND wo.idempotency_key = $2",
        trigger_id,
        key
    )?;
    Ok(row.map(|r| Ingested {
        work_order_id: r.work_order_id,
        run_id: r.run_id.unwrap_or_default(),
        dataclip_id: r.dataclip_id.unwrap_or_default(),
        workflow_id: r.workflow_id,
        existing: true,
    }))
}

pub(crate) async fn ingest_in(c: &mut Conn<'_>, req: WebhookIngest) -> Result<Ingested> {
    if let Some(key) = &req.idempotency_key
        && let Some(found) = find_existing(c, &req.trigger_id, key).await?
    {
        return Ok(found);
    }
    let t = load_target(c, &req.trigger_id)
        .await?
        .ok_or_else(|| StoreError::not_found("trigger", &req.trigger_id))?;
    let snapshot_id = t
        .snapshot_id
        .ok_or_else(|| StoreError::rejected("workflow", "has no snapshot; deploy it first"))?;
    let options = req.options.unwrap_or_else(|| RunOptions {
        save_dataclips: t.retention_policy != "erase_all",
        ..RunOptions::default()
    });
    let queue = req.queue.unwrap_or_else(|| queues::DEFAULT.to_string());
    let (dataclip_id, work_order_id, run_id) = (new_id(), new_id(), new_id());
    let now = now_us();
    let (options, idem) = (options.to_json(), req.idempotency_key);
    match c.backend() {
        // PostgreSQL: the three rows and the wake-up NOTIFY in one
        // statement (one round trip).
        crate::Backend::Postgres => {
            exec!(
                c,
                "WITH d AS (
                     INSERT INTO dataclips (id, project_id, type, body, request, inserted_at)
                     VALUES ($1, $2, 'http_request', $3, $4, $5)),
                 w AS (
                     INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state,
                                              idempotency_key, last_activity, inserted_at, updated_at)
                     VALUES ($6, $7, $8, $9, $1, 'pending', $10, $5, $5, $5)),
                 r AS (
                     INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id,
                                       starting_trigger_id, dataclip_id, state, queue, priority, options, inserted_at)
                     VALUES ($11, $6, $7, $2, $8, $9, $1, 'available', $12, 1, $13, $5)
                     RETURNING workflow_id)
                 SELECT pg_notify('gabbro_run_available', workflow_id) FROM r",
                &dataclip_id,
                &t.project_id,
                req.body,
                req.request,
                now,
                &work_order_id,
                &t.workflow_id,
                &snapshot_id,
                &req.trigger_id,
                idem,
                &run_id,
                queue,
                options
            )?;
        }
        crate::Backend::Sqlite => {
            exec!(
                c,
                "INSERT INTO dataclips (id, project_id, type, body, request, inserted_at)
                 VALUES ($1, $2, 'http_request', $3, $4, $5)",
                &dataclip_id,
                &t.project_id,
                req.body,
                req.request,
                now
            )?;
            exec!(
                c,
                "INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state,
                                          idempotency_key, last_activity, inserted_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7, $7)",
                &work_order_id,
                &t.workflow_id,
                &snapshot_id,
                &req.trigger_id,
                &dataclip_id,
                idem,
                now
            )?;
            exec!(
                c,
                "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id,
                                   starting_trigger_id, dataclip_id, state, queue, priority, options, inserted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'available', $8, 1, $9, $10)",
                &run_id,
                &work_order_id,
                &t.workflow_id,
                &t.project_id,
                &snapshot_id,
                &req.trigger_id,
                &dataclip_id,
                queue,
                options,
                now
            )?;
        }
    }
    Ok(Ingested {
        work_order_id,
        run_id,
        dataclip_id,
        workflow_id: t.workflow_id,
        existing: false,
    })
}
