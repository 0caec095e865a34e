//! Credential secrets out of log lines (Lightning's `Scrubber`): every
//! string (and number) value of a credential the run may use is replaced by
//! `***`, longest first, plus `base64(username:password)` as HTTP basic auth
//! would send it. Values shorter than [`MIN_SECRET_LEN`] are left alone: a
//! one-letter "secret" would shred every log line and protects nothing.

use base64::Engine as _;
use serde_json::Value;

pub(crate) const MIN_SECRET_LEN: usize = 3;
const MASK: &str = "***";

/// The secrets of one run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// Adds the values of a credential body.
    pub fn add_credential(&mut self, body: &Value) {
        collect(body, &mut self.secrets);
        if let (Some(u), Some(p)) = (
            body.get("username").and_then(Value::as_str),
            body.get("password").and_then(Value::as_str),
        ) {
            self.secrets
                .push(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
        }
        self.secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
    }

    pub fn scrub(&self, text: String) -> String {
        let mut out = text;
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect(i, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// A log line's text as Lightning stores it: strings as they are, anything
/// else JSON-encoded, joined with spaces, control characters (but newlines
/// and tabs) dropped.
pub(crate) fn message_text(parts: &[Value]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match p {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    }
    out.retain(|c| !c.is_control() || c == '\n' || c == '\t');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrubs_nested_values_and_basic_auth() {
        let mut s = Scrubber::default();
        s.add_credential(
            &json!({"username": "ann", "password": "hunter22", "x": {"k": "sekret"}, "n": 1}),
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ann:hunter22");
        let out = s.scrub(format!("pw hunter22 and sekret, auth {basic}, n=1"));
        assert_eq!(out, "pw *** and ***, auth ***, n=1");
    }

    #[test]
    fn message_joins_and_encodes() {
        let text = message_text(&[json!("a"), json!({"b": 1}), json!([1]), json!("x\u{0007}y")]);
        assert_eq!(text, "a {\"b\":1} [1] xy");
    }
}
