//! The run's plan for `fetch:plan`, rendered from its workflow snapshot as
//! Lightning's `run_with_options.ex` does (reference §4.5).

use gabbro_model::RunOptions;
use gabbro_protocol::{LightningPlan, PlanEdge, PlanJob, PlanOptions, PlanTrigger};
use serde::Deserialize;

use super::run_data::RunRow;

/// The parts of a snapshot body (`store::provision::snapshot_body`) a run
/// needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Snapshot {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub jobs: Vec<SnapshotJob>,
    #[serde(default)]
    pub triggers: Vec<SnapshotTrigger>,
    #[serde(default)]
    pub edges: Vec<SnapshotEdge>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SnapshotJob {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub adaptor: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub project_credential_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SnapshotTrigger {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SnapshotEdge {
    pub id: String,
    #[serde(default)]
    pub source_trigger_id: Option<String>,
    #[serde(default)]
    pub source_job_id: Option<String>,
    pub target_job_id: String,
    #[serde(default)]
    pub condition_type: Option<String>,
    #[serde(default)]
    pub condition_expression: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl Snapshot {
    pub fn credential_of(&self, job_id: &str) -> Option<&str> {
        self.jobs
            .iter()
            .find(|j| j.id == job_id)
            .and_then(|j| j.project_credential_id.as_deref())
    }

    /// Credential ids used by any job.
    pub fn credential_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|j| j.project_credential_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `{id, project_id, triggers, jobs, edges, starting_node_id, dataclip_id,
/// options}`; `condition` is the condition type, or the JS text for
/// `js_expression`.
pub(crate) fn render(run: &RunRow, snapshot: &Snapshot) -> LightningPlan {
    let options = RunOptions::from_json(&run.options);
    LightningPlan {
        id: run.id.clone(),
        name: snapshot.name.clone(),
        project_id: Some(run.project_id.clone()),
        dataclip_id: run.dataclip_id.clone(),
        starting_node_id: run
            .starting_trigger_id
            .clone()
            .or_else(|| run.starting_job_id.clone()),
        globals: None,
        triggers: snapshot
            .triggers
            .iter()
            .map(|t| PlanTrigger {
                id: t.id.clone(),
                kind: None,
            })
            .collect(),
        jobs: snapshot
            .jobs
            .iter()
            .map(|j| PlanJob {
                id: j.id.clone(),
                name: j.name.clone(),
                body: j.body.clone(),
                adaptor: j.adaptor.clone(),
                credential_id: j.project_credential_id.clone(),
                credential: None,
                state: None,
            })
            .collect(),
        edges: snapshot
            .edges
            .iter()
            .map(|e| PlanEdge {
                id: e.id.clone(),
                source_trigger_id: e.source_trigger_id.clone(),
                source_job_id: e.source_job_id.clone(),
                target_job_id: e.target_job_id.clone(),
                condition: match e.condition_type.as_deref() {
                    Some("js_expression") => e.condition_expression.clone(),
                    other => other.map(str::to_string),
                },
                enabled: e.enabled,
            })
            .collect(),
        options: Some(PlanOptions {
            run_timeout_ms: options.run_timeout_ms,
            run_memory_limit_mb: options.run_memory_limit_mb,
            output_dataclips: Some(options.save_dataclips),
            job_log_level: (!options.enable_job_logs).then(|| "none".to_string()),
            ..PlanOptions::default()
        }),
    }
}
