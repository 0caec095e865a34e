//! Log lines: credential scrubbing, the log payload limit, timestamps.

use std::sync::Arc;

use serde_json::Value;

use crate::events::LogLine;

/// What replaces a secret's value in logs.
pub const SCRUBBED: &str = "[REDACTED]";

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// How log messages are cleaned before they leave the runtime.
#[derive(Clone, Debug, Default)]
pub struct LogPolicy {
    secrets: Arc<Vec<String>>,
    limit_bytes: usize,
    limit_mb: f64,
}

impl LogPolicy {
    /// `secrets`: values to scrub (short or empty values are ignored: they
    /// would scrub ordinary words). `limit_mb`: the log payload limit.
    pub fn new(secrets: &[String], limit_mb: f64) -> LogPolicy {
        let mut secrets: Vec<String> = secrets
            .iter()
            .filter(|s| s.chars().count() >= 3)
            .cloned()
            .collect();
        // Longest first, so a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        LogPolicy {
            secrets: Arc::new(secrets),
            limit_bytes: (limit_mb * 1024.0 * 1024.0) as usize,
            limit_mb,
        }
    }

    /// The message of a log line from its arguments as a JSON array.
    pub fn message_from_json(&self, json: &str) -> Vec<Value> {
        if self.limit_bytes > 0 && json.len() > self.limit_bytes {
            return vec![Value::String(format!(
                "(Log message redacted: exceeds {}mb memory limit)",
                self.limit_mb
            ))];
        }
        let mut message = match serde_json::from_str::<Value>(json) {
            Ok(Value::Array(items)) => items,
            Ok(other) => vec![other],
            Err(_) => vec![Value::String(json.to_string())],
        };
        for v in &mut message {
            self.scrub(v);
        }
        message
    }

    /// Replaces secret values inside every string of `v`.
    pub fn scrub(&self, v: &mut Value) {
        if self.secrets.is_empty() {
            return;
        }
        match v {
            Value::String(s) if self.secrets.iter().any(|sec| s.contains(sec.as_str())) => {
                let mut out = s.clone();
                for sec in self.secrets.iter() {
                    out = out.replace(sec.as_str(), SCRUBBED);
                }
                *s = out;
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.scrub(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.scrub(i)),
            _ => {}
        }
    }

    /// A runtime (`R/T`) log line.
    pub fn runtime_line(&self, level: &str, text: String, step: Option<String>) -> LogLine {
        let mut message = vec![Value::String(text)];
        message.iter_mut().for_each(|m| self.scrub(m));
        LogLine {
            level: level.into(),
            source: "R/T".into(),
            message,
            timestamp_us: now_us(),
            step,
        }
    }
}

/// Every string value found in `configuration` objects: what to scrub from
/// logs when the caller gave no explicit list.
pub fn secrets_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| secrets_of(i, out)),
        Value::Object(map) => map.values().for_each(|i| secrets_of(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrubs_secrets_in_nested_strings() {
        let p = LogPolicy::new(&["s3cret-token".into(), "ab".into()], 1.0);
        let m = p.message_from_json(
            r#"["token=s3cret-token", {"auth": "Bearer s3cret-token", "ab": "ab"}]"#,
        );
        assert_eq!(
            m,
            vec![
                json!("token=[REDACTED]"),
                json!({"auth": "Bearer [REDACTED]", "ab": "ab"})
            ]
        );
    }

    #[test]
    fn redacts_oversized_lines() {
        let p = LogPolicy::new(&[], 0.000_01);
        let m = p.message_from_json(&format!("[\"{}\"]", "x".repeat(100)));
        assert_eq!(m.len(), 1);
        assert!(m[0].as_str().unwrap().starts_with("(Log message redacted"));
    }
}
