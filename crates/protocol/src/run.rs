//! Messages of a `run:<id>` topic, sent by the worker in this order:
//! join, `fetch:plan`, `fetch:dataclip`, `fetch:credential`…, `run:start`,
//! then per step `step:start`, `run:log`…, `step:complete`, and finally
//! `run:complete`.
//!
//! Every event may carry gabbro's optional `seq` extension: a per-run
//! sequence number (1, 2, …) over the events that change the run
//! (`run:start`, `step:*`, `run:log`, `run:batch_logs`, `run:complete`),
//! so the orchestrator can apply them idempotently and in order. Lightning
//! ignores unknown fields.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::timestamp::Timestamp;

pub const RUN_TOPIC_PREFIX: &str = "run:";
pub const FETCH_PLAN: &str = "fetch:plan";
pub const FETCH_DATACLIP: &str = "fetch:dataclip";
pub const FETCH_CREDENTIAL: &str = "fetch:credential";
pub const RUN_START: &str = "run:start";
pub const STEP_START: &str = "step:start";
pub const STEP_COMPLETE: &str = "step:complete";
pub const RUN_LOG: &str = "run:log";
pub const BATCH_LOGS: &str = "run:batch_logs";
pub const RUN_COMPLETE: &str = "run:complete";

/// `run:<id>`.
pub fn run_topic(run_id: &str) -> String {
    format!("{RUN_TOPIC_PREFIX}{run_id}")
}

/// The run id of a `run:<id>` topic.
pub fn run_id_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(RUN_TOPIC_PREFIX)
        .filter(|id| !id.is_empty())
}

/// `phx_join` payload on `run:<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunJoin {
    pub token: String,
}

/// `fetch:dataclip` / `fetch:credential` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchId {
    pub id: String,
}

/// OpenFn's exit reasons as sent in `step:complete` and `run:complete`
/// (`ok` is an old spelling of success that Lightning still accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Success,
    Ok,
    Fail,
    Crash,
    Kill,
    Cancel,
    Exception,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Success => "success",
            Reason::Ok => "ok",
            Reason::Fail => "fail",
            Reason::Crash => "crash",
            Reason::Kill => "kill",
            Reason::Cancel => "cancel",
            Reason::Exception => "exception",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// `{worker, node, engine, compiler, runtime, "<adaptor>": ["x.y.z"]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Map<String, Value>>,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStart {
    /// Chosen by the worker (a UUID).
    pub step_id: String,
    pub job_id: String,
    pub timestamp: Timestamp,
    /// The run's dataclip for the first step, the upstream step's output
    /// afterwards; absent when unknown or withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_dataclip_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Memory used by a step, in bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMem {
    pub job: u64,
    pub system: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepComplete {
    pub step_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Sent by OpenFn's worker only when the step succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<StepMem>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<u64>,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dataclip_id: Option<String>,
    /// The output state as JSON *text*.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dataclip: Option<String>,
    /// `DATACLIP_TOO_LARGE` when the output was withheld for size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dataclip_error: Option<String>,
    pub reason: Reason,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook_response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// One log line (`run:log` payload, or an item of `run:batch_logs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The logged arguments; strings stay strings, objects stay objects.
    pub message: Vec<Value>,
    /// `JOB`, `ADA`, `R/T`, `RTE`, `VER`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `debug`, `info`, `warn`, `error`, `success`, `always`.
    pub level: String,
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchLogs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub logs: Vec<RunLog>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `run:complete`. On OpenFn's engine-error path (crash, kill, exception
/// before completion) only `reason`, `error_type` and `error_message` are
/// sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunComplete {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// Present (possibly `null`) or absent; the two are kept apart.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub final_state: Option<Value>,
    pub reason: Reason,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_dataclip_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `step:start` / `step:complete` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReply {
    pub step_id: String,
}

/// `run:log` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogReply {
    pub log_line_id: String,
}

/// A present field is `Some`, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}
