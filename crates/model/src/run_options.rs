//! Options frozen onto a run when it is created (Lightning's `RunOptions`).

use serde::{Deserialize, Serialize};

/// Run options; stored as JSON in `runs.options` and sent in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Deadline for the whole run, enforced by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_ms: Option<u64>,
    /// Memory limit for the run, enforced by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_memory_limit_mb: Option<u64>,
    /// Whether step inputs and outputs are kept (false for `erase_all`).
    #[serde(default = "yes")]
    pub save_dataclips: bool,
    /// Whether job `console` logs are kept.
    #[serde(default = "yes")]
    pub enable_job_logs: bool,
}

fn yes() -> bool {
    true
}

impl Default for RunOptions {
    /// 300 s timeout (Lightning's `WORKER_MAX_RUN_DURATION_SECONDS`), no
    /// memory limit, dataclips and job logs kept.
    fn default() -> Self {
        RunOptions {
            run_timeout_ms: Some(300_000),
            run_memory_limit_mb: None,
            save_dataclips: true,
            enable_job_logs: true,
        }
    }
}

impl RunOptions {
    /// The JSON stored on the run.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Reads stored options; missing fields take their defaults, bad JSON
    /// gives the defaults.
    pub fn from_json(s: &str) -> RunOptions {
        serde_json::from_str(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let o = RunOptions::default();
        assert_eq!(RunOptions::from_json(&o.to_json()), o);
        let partial = RunOptions::from_json(r#"{"run_timeout_ms": 5}"#);
        assert_eq!(partial.run_timeout_ms, Some(5));
        assert!(partial.save_dataclips);
        assert_eq!(RunOptions::from_json("not json"), RunOptions::default());
    }
}
