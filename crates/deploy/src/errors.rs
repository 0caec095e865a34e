//! Validation errors that name the field they concern.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Problems found in a project document, keyed by the path of the field
/// (`workflows[register patients].jobs[normalise].adaptor`). Serialises as
/// `{"field path": ["message", ...]}` — the `errors` object of a 422 reply.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let path = if path.is_empty() {
            "document".to_string()
        } else {
            path
        };
        self.0.entry(path).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Does any error concern this exact field path?
    pub fn has(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (path, messages) in &self.0 {
            for m in messages {
                if !first {
                    writeln!(f)?;
                }
                first = false;
                write!(f, "{path}: {m}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}
