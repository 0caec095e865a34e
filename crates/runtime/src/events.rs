//! What a run reports while it executes. This is the contract between the
//! executor and whoever watches a run: `gabbro run` prints these events, and
//! the worker streams them to the orchestrator (from a child process, as JSON
//! lines; see [`ChildRequest`]).
//!
//! Step keys: the runtime names a step execution by its plan step id; a step
//! reached a second time runs again and is keyed `<id>-1`, then `<id>-2`, …
//! (as OpenFn's runtime keys them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// OpenFn's exit reasons, for a step and for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    Success,
    Fail,
    Crash,
    Kill,
    Exception,
    Cancel,
}

/// One log line, from job code (`JOB`), an adaptor (`ADA`), the runtime
/// (`R/T`) or the engine (`RTE`). Credentials' values are already scrubbed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn`, `error`, `success` or `always`.
    pub level: String,
    pub source: String,
    /// The logged arguments, each as JSON (strings stay strings), as OpenFn's
    /// worker sends them in `run:log`'s `message` array.
    pub message: Vec<Value>,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// The step key when the line was logged inside a step.
    pub step: Option<String>,
}

/// Memory use reported with a completed step, in bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMemory {
    pub job: u64,
    pub system: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run is about to execute its first step (versions of the runtime
    /// and of each adaptor used, as `run:start`'s `versions`).
    RunStart {
        versions: serde_json::Map<String, Value>,
        timestamp_us: i64,
    },
    StepStart {
        /// Plan step id (the job id for Lightning plans).
        step_id: String,
        /// Key of this execution (`step_id`, or `step_id-N` on a repeat visit).
        key: String,
        timestamp_us: i64,
    },
    Log(LogLine),
    StepComplete {
        step_id: String,
        key: String,
        reason: ExitReason,
        error_type: Option<String>,
        error_message: Option<String>,
        /// The step's output state as JSON text (`configuration` and
        /// `response` removed). `None` when the step produced no state or the
        /// output was redacted for size.
        output_json: Option<String>,
        /// Set when the output exceeded the payload limit (the worker then
        /// sends `output_dataclip_error: "DATACLIP_TOO_LARGE"`).
        redacted: bool,
        duration_ms: u64,
        mem: Option<StepMemory>,
        timestamp_us: i64,
    },
    RunComplete {
        reason: ExitReason,
        error_type: Option<String>,
        error_message: Option<String>,
        /// Final state as JSON text (conformance README §3.1); `None` when
        /// there is none (crash, kill, exception, or a leaf without state).
        final_state_json: Option<String>,
        /// Keys of the leaf executions, in plan order.
        leaves: Vec<String>,
        timestamp_us: i64,
    },
}

/// What the worker writes, as one JSON line, to the stdin of a child process
/// (`gabbro` run in its hidden child mode). The child answers with one
/// [`Event`] per line on stdout, ending with `run-complete`, then waits for the
/// next request (children are pooled and reused, one run at a time).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildRequest {
    /// OpenFn's execution plan JSON (`{workflow: {steps, start?}, options}`),
    /// credentials already inlined into each step's `configuration`.
    pub plan: Value,
    /// The input state.
    pub input: Value,
    /// Limits for this run.
    pub limits: Limits,
    /// Secret values to scrub from every log line.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// Per-run limits (OpenFn's defaults: 300 s, 500 MB, 10 MB payload, 1 MB log payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub timeout_ms: u64,
    pub memory_limit_mb: u64,
    pub payload_limit_mb: f64,
    pub log_payload_limit_mb: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 300_000,
            memory_limit_mb: 500,
            payload_limit_mb: 10.0,
            log_payload_limit_mb: 1.0,
        }
    }
}
