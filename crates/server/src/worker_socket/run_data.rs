//! What a run channel reads: the run, its snapshot, its input dataclip and
//! its credentials. (Writes go through the store's ledger.)

use std::sync::Arc;

use gabbro_store::{Result, Store, StoreError, Vault, fetch_optional, scalar};
use serde_json::Value;

use super::plan::Snapshot;

/// The run as a channel needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub id: String,
    pub project_id: String,
    pub snapshot_id: String,
    pub starting_job_id: Option<String>,
    pub starting_trigger_id: Option<String>,
    pub dataclip_id: Option<String>,
    pub state: String,
    pub options: String,
    pub worker_id: Option<String>,
    pub claim_epoch: i32,
}

pub(crate) async fn load_run(store: &Store, run_id: &str) -> Result<Option<RunRow>> {
    let mut conn = store.read().await?;
    let mut c = conn.reborrow();
    Ok(fetch_optional!(
        c,
        RunRow,
        "SELECT id, project_id, snapshot_id, starting_job_id, starting_trigger_id, dataclip_id,
                state, options, worker_id, claim_epoch
         FROM runs WHERE id = $1",
        run_id
    )?)
}

/// Workflow snapshots already read and parsed. A snapshot is immutable (a
/// changed workflow gets a new one), so an entry is never stale; every run
/// of a workflow version shares one, instead of a read and a parse per run
/// channel.
#[derive(Default)]
pub(crate) struct SnapshotCache {
    parsed: std::sync::Mutex<std::collections::HashMap<String, Arc<Snapshot>>>,
}

/// Snapshots kept at most; past it the cache starts again empty (the
/// snapshots in use come back at their next run).
const SNAPSHOTS_KEPT: usize = 1024;

impl SnapshotCache {
    /// The snapshot `snapshot_id`, from the cache or the store.
    pub(crate) async fn get(&self, store: &Store, snapshot_id: &str) -> Result<Arc<Snapshot>> {
        if let Some(s) = self
            .parsed
            .lock()
            .ok()
            .and_then(|m| m.get(snapshot_id).cloned())
        {
            return Ok(s);
        }
        let snapshot = Arc::new(load_snapshot(store, snapshot_id).await?);
        if let Ok(mut m) = self.parsed.lock() {
            if m.len() >= SNAPSHOTS_KEPT {
                m.clear();
            }
            m.insert(snapshot_id.to_string(), snapshot.clone());
        }
        Ok(snapshot)
    }
}

async fn load_snapshot(store: &Store, snapshot_id: &str) -> Result<Snapshot> {
    let mut conn = store.read().await?;
    let mut c = conn.reborrow();
    let body: Option<String> = scalar!(
        c,
        String,
        "SELECT body FROM workflow_snapshots WHERE id = $1",
        snapshot_id
    )?;
    let body = body.ok_or_else(|| StoreError::not_found("snapshot", snapshot_id))?;
    Ok(serde_json::from_str(&body)?)
}

#[derive(sqlx::FromRow)]
struct DataclipRow {
    #[sqlx(rename = "type")]
    kind: String,
    body: Option<String>,
    request: Option<String>,
}

/// The run's input as `fetch:dataclip` answers it: `{"data":…,"request":…}`
/// for an http_request dataclip (as Lightning), the body otherwise, `null`
/// when there is none or it was wiped. Built as text: bodies are never
/// re-encoded.
pub(crate) async fn input_dataclip(store: &Store, run: &RunRow) -> Result<String> {
    let Some(id) = &run.dataclip_id else {
        return Ok("null".to_string());
    };
    let mut conn = store.read().await?;
    let mut c = conn.reborrow();
    let row = fetch_optional!(
        c,
        DataclipRow,
        "SELECT type, body, request FROM dataclips WHERE id = $1",
        id
    )?;
    Ok(match row {
        Some(DataclipRow {
            body: Some(body),
            kind,
            request,
        }) if kind == "http_request" => format!(
            "{{\"data\":{body},\"request\":{}}}",
            request.as_deref().unwrap_or("null")
        ),
        Some(DataclipRow { body: Some(b), .. }) => b,
        _ => "null".to_string(),
    })
}

/// A credential of the run's project, decrypted, with empty strings dropped
/// (as Lightning). `None` if there is no such credential.
pub(crate) async fn credential(
    store: &Store,
    vault: &Vault,
    project_id: &str,
    id: &str,
) -> Result<Option<Value>> {
    let mut conn = store.read().await?;
    let mut c = conn.reborrow();
    let stored: Option<String> = scalar!(
        c,
        String,
        "SELECT body_encrypted FROM credentials WHERE id = $1 AND project_id = $2",
        id,
        project_id
    )?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let mut body = vault.decrypt_json(&stored)?;
    if let Value::Object(map) = &mut body {
        map.retain(|_, v| v.as_str() != Some(""));
    }
    Ok(Some(body))
}
