//! Cron persistence: which cron triggers exist, when each last fired, and
//! firing one scheduled time exactly once. The `cron_fires` primary key
//! (trigger, scheduled time) is the lock: whichever node inserts the row
//! creates the work order, in the same transaction; every other node's
//! insert does nothing. No leader, safe across restarts.

use crate::{Conn, Result, exec, fetch_all, scalar};

/// An enabled cron trigger of a live workflow.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CronTrigger {
    pub id: String,
    pub workflow_id: String,
    pub project_id: String,
    pub cron_expression: String,
    /// When the trigger was last changed (enabled, edited), µs: times
    /// before it are never fired or reported.
    pub updated_at: i64,
}

pub async fn list_triggers(conn: &mut Conn<'_>) -> Result<Vec<CronTrigger>> {
    Ok(fetch_all!(
        conn,
        CronTrigger,
        "SELECT t.id, t.workflow_id, w.project_id, t.cron_expression, t.updated_at FROM triggers t JOIN workflows w ON w.id = t.workflow_id \
         WHERE t.type = 'cron' AND t.enabled = TRUE AND t.cron_expression IS NOT NULL AND w.deleted_at IS NULL ORDER BY t.id"
    )?)
}

/// The latest scheduled time handled (fired or missed) for a trigger, µs.
pub async fn last_scheduled(conn: &mut Conn<'_>, trigger_id: &str) -> Result<Option<i64>> {
    Ok(scalar!(
        conn,
        Option<i64>,
        "SELECT MAX(scheduled_at) FROM cron_fires WHERE trigger_id = $1",
        trigger_id
    )?
    .flatten())
}

/// A fire that this node won.
#[derive(Debug, Clone)]
pub struct Fired {
    pub work_order_id: String,
    pub run_id: String,
    /// The input dataclip: the first job's last successful output, or a new `{}`.
    pub dataclip_id: String,
    pub reused_output: bool,
}

/// Record `missed` times as missed, then fire `scheduled_at`: one
/// transaction. Returns None when another node (or an earlier attempt)
/// already handled `scheduled_at`.
pub async fn fire(
    conn: &mut Conn<'_>,
    trigger: &CronTrigger,
    scheduled_at: i64,
    missed: &[i64],
    now: i64,
) -> Result<Option<Fired>> {
    for t in missed {
        exec!(
            conn,
            "INSERT INTO cron_fires (trigger_id, scheduled_at, work_order_id, outcome, inserted_at) VALUES ($1, $2, NULL, 'missed', $3) ON CONFLICT DO NOTHING",
            &trigger.id,
            *t,
            now
        )?;
    }
    let won = exec!(
        conn,
        "INSERT INTO cron_fires (trigger_id, scheduled_at, work_order_id, outcome, inserted_at) VALUES ($1, $2, NULL, 'fired', $3) ON CONFLICT DO NOTHING",
        &trigger.id,
        scheduled_at,
        now
    )?;
    if won == 0 {
        return Ok(None);
    }
    let snapshot_id: Option<String> = scalar!(
        conn,
        String,
        "SELECT id FROM workflow_snapshots WHERE workflow_id = $1 ORDER BY lock_version DESC LIMIT 1",
        &trigger.workflow_id
    )?;
    let Some(snapshot_id) = snapshot_id else {
        return Err(crate::StoreError::not_found(
            "snapshot of workflow",
            trigger.workflow_id.clone(),
        ));
    };
    // Lightning's input for a cron run: the output of the last successful
    // step of the first job (the target of the trigger's edge).
    let first_job: Option<String> = scalar!(
        conn,
        String,
        "SELECT target_job_id FROM edges WHERE source_trigger_id = $1 AND enabled = TRUE ORDER BY inserted_at, id LIMIT 1",
        &trigger.id
    )?;
    let previous: Option<String> = match &first_job {
        Some(job_id) => scalar!(
            conn,
            String,
            "SELECT s.output_dataclip_id FROM steps s JOIN dataclips d ON d.id = s.output_dataclip_id \
             WHERE s.job_id = $1 AND s.exit_reason = 'success' AND d.body IS NOT NULL AND d.wiped_at IS NULL \
             ORDER BY s.finished_at DESC, s.id DESC LIMIT 1",
            job_id
        )?,
        None => None,
    };
    let reused_output = previous.is_some();
    let dataclip_id = match previous {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            exec!(
                conn,
                "INSERT INTO dataclips (id, project_id, type, body, inserted_at) VALUES ($1, $2, 'global', '{}', $3)",
                &id,
                &trigger.project_id,
                now
            )?;
            id
        }
    };
    let work_order_id = uuid::Uuid::now_v7().to_string();
    let run_id = uuid::Uuid::now_v7().to_string();
    exec!(
        conn,
        "INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6)",
        &work_order_id,
        &trigger.workflow_id,
        &snapshot_id,
        &trigger.id,
        &dataclip_id,
        now
    )?;
    let retention: Option<String> = scalar!(
        conn,
        String,
        "SELECT retention_policy FROM projects WHERE id = $1",
        &trigger.project_id
    )?;
    let options = gabbro_model::RunOptions {
        save_dataclips: retention.as_deref() != Some("erase_all"),
        ..gabbro_model::RunOptions::default()
    };
    exec!(
        conn,
        "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_trigger_id, dataclip_id, state, queue, priority, options, inserted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'available', 'default', 1, $9, $8)",
        &run_id,
        &work_order_id,
        &trigger.workflow_id,
        &trigger.project_id,
        &snapshot_id,
        &trigger.id,
        &dataclip_id,
        now,
        options.to_json()
    )?;
    crate::queue::notify_available(conn, &trigger.workflow_id).await?;
    exec!(
        conn,
        "UPDATE cron_fires SET work_order_id = $1 WHERE trigger_id = $2 AND scheduled_at = $3",
        &work_order_id,
        &trigger.id,
        scheduled_at
    )?;
    Ok(Some(Fired {
        work_order_id,
        run_id,
        dataclip_id,
        reused_output,
    }))
}
