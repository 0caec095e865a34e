//! Messages of the `worker:queue` topic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const QUEUE_TOPIC: &str = "worker:queue";
pub const CLAIM: &str = "claim";
pub const WORK_AVAILABLE: &str = "work-available";

/// `phx_join` payload on `worker:queue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueJoin {
    /// Total slots of the worker.
    #[serde(default)]
    pub capacity: u32,
    /// Workloops and their slots, e.g. `{"manual>*": 5}`.
    #[serde(default)]
    pub queues: BTreeMap<String, u32>,
    /// gabbro extension: ids of the runs this worker still holds (executing
    /// or not yet fully delivered) when it (re)joins, so the orchestrator
    /// can renew their leases. Lightning ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_runs: Option<Vec<String>>,
    /// gabbro extension: `"HS256"` asks for run tokens signed with the
    /// orchestrator's HMAC key instead of RSA (cheaper to mint; only the
    /// orchestrator can check them, so a worker that verifies run tokens
    /// with the public key does not ask). Lightning ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_token_alg: Option<String>,
}

/// `claim` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// How many runs the worker wants at most.
    pub demand: u32,
    /// `WORKER_NAME`, or null.
    #[serde(default)]
    pub worker_name: Option<String>,
    /// Queue names in preference order, `*` meaning any (e.g. `["manual","*"]`).
    #[serde(default)]
    pub queues: Vec<String>,
}

/// `claim` reply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimReply {
    pub runs: Vec<ClaimedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub id: String,
    /// The run token (RS256 JWT, or HS256 if the worker asked) to join
    /// `run:<id>` with.
    pub token: String,
}

/// `work-available` push: an empty object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkAvailable {}
