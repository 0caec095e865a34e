//! Lightning's error replies (`{status:"error", response: …}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A changeset-style error: `{errors: {field: [message, …]}}`.
///
/// gabbro extension: when an event's `seq` is not the next one expected, the
/// reply is `{errors: {seq: ["expected N"]}, expected_seq: N}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorsReply {
    pub errors: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

impl ErrorsReply {
    /// One message on one field, e.g. `("id", "Credential not found!")`.
    pub fn field(field: &str, message: impl Into<String>) -> ErrorsReply {
        ErrorsReply {
            errors: BTreeMap::from([(field.to_string(), vec![message.into()])]),
            expected_seq: None,
        }
    }

    /// The gabbro `seq` gap error.
    pub fn expected_seq(expected: u64) -> ErrorsReply {
        ErrorsReply {
            expected_seq: Some(expected),
            ..ErrorsReply::field("seq", format!("expected {expected}"))
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The field of the transient error (`{errors: {server: ["internal
    /// error, retry later"]}}`): the orchestrator could not apply the event
    /// (e.g. its database is restarting); the event must be sent again.
    pub const RETRY_FIELD: &str = "server";

    /// Is this the transient "retry later" error (not a refusal)?
    pub fn is_retryable(&self) -> bool {
        self.errors.contains_key(Self::RETRY_FIELD)
    }
}

/// A join refusal: `{reason: "unauthorized" | "not_found" | "unmatched topic"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonReply {
    pub reason: String,
}

impl ReasonReply {
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const NOT_FOUND: &str = "not_found";
    pub const UNMATCHED_TOPIC: &str = "unmatched topic";

    pub fn new(reason: &str) -> ReasonReply {
        ReasonReply {
            reason: reason.to_string(),
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::json!({ "reason": self.reason })
    }
}

/// Describe any error response for a log line: the known shapes first, the
/// raw JSON otherwise (the mock sends bare strings).
pub fn describe_error(response: &Value) -> String {
    if let Ok(e) = ErrorsReply::deserialize(response) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.join(", ")))
            .collect();
        return parts.join("; ");
    }
    if let Ok(r) = ReasonReply::deserialize(response) {
        return r.reason;
    }
    match response {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
