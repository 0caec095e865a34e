//! The plan Lightning returns for `fetch:plan` (its `run_with_options.ex`;
//! kit's `LightningPlan`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LightningPlan {
    /// The run id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The run's input dataclip, fetched with `fetch:dataclip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataclip_id: Option<String>,
    /// A trigger id or a job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals: Option<String>,
    #[serde(default)]
    pub triggers: Vec<PlanTrigger>,
    #[serde(default)]
    pub jobs: Vec<PlanJob>,
    #[serde(default)]
    pub edges: Vec<PlanEdge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<PlanOptions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanTrigger {
    pub id: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanJob {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub body: String,
    /// e.g. `@openfn/language-common@3.3.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptor: Option<String>,
    /// Fetched with `fetch:credential` before the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// An inline credential (kit's lexicon allows it; Lightning sends ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Value>,
    /// Default state for the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanEdge {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_trigger_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_job_id: Option<String>,
    pub target_job_id: String,
    /// `always`, `on_job_success`, `on_job_failure`, or a JS expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Run options; every field is optional (Lightning drops nils).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_memory_limit_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_limit_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_payload_limit_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dataclips: Option<bool>,
    /// `none` when job logs are switched off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_log_level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanitize: Option<String>,
}
