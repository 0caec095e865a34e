//! OpenFn's execution plan, as JSON: `{workflow: {steps, start?}, options: {start?}}`.
//!
//! A step names its adaptor with `adaptors: [..]` or the older `adaptor`, may
//! carry `configuration`, and links to other steps with `next`, whose edges are
//! `true`, a condition string (`always`, `on_job_success`, `on_job_failure`, or
//! a JS expression over `state`) or `{condition, disabled}`.

use serde_json::{Map, Value};

/// The adaptor a bare job (no plan) runs against.
pub const DEFAULT_ADAPTOR: &str = "@openfn/language-common";

/// One step of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    /// DSL source; `None` for an empty step (a trigger in Lightning plans).
    pub expression: Option<String>,
    /// Adaptor specs (`@openfn/language-http@7.2.10`); the first one is the
    /// one the expression is compiled against.
    pub adaptors: Vec<String>,
    pub configuration: Option<Value>,
    /// Default state merged under the input (OpenFn's `step.state`).
    pub state: Option<Value>,
    /// Outgoing edges, in the order the plan lists them.
    pub next: Vec<(String, Edge)>,
}

/// An outgoing edge.
#[derive(Clone, Debug, PartialEq)]
pub enum Edge {
    /// Always followed (`true`), even after the upstream step failed.
    Always,
    /// Never followed (`false`, `null`, a disabled edge, or an object edge
    /// without a condition — OpenFn skips those).
    Never,
    OnSuccess,
    OnFailure,
    /// A JS expression body over `state`.
    Expression(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Id of the step to run first.
    pub start: String,
}

/// Why a plan could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

impl Plan {
    /// A single job: one step `job-1`, as OpenFn names it.
    pub fn single_job(expression: &str, adaptor: &str) -> Plan {
        Plan {
            steps: vec![Step {
                id: "job-1".into(),
                name: None,
                expression: Some(expression.into()),
                adaptors: vec![adaptor.into()],
                configuration: None,
                state: None,
                next: Vec::new(),
            }],
            start: "job-1".into(),
        }
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Reads OpenFn's execution plan JSON. Also accepts a bare
    /// `{steps, start?}` workflow object.
    pub fn from_json(value: &Value) -> Result<Plan, PlanError> {
        let obj = value
            .as_object()
            .ok_or_else(|| PlanError("a plan must be a JSON object".into()))?;
        let workflow = match obj.get("workflow") {
            Some(Value::Object(w)) => w,
            Some(_) => return Err(PlanError("plan.workflow must be an object".into())),
            None if obj.contains_key("steps") => obj,
            None => return Err(PlanError("a plan needs workflow.steps".into())),
        };
        let raw_steps = workflow
            .get("steps")
            .and_then(Value::as_array)
            .ok_or_else(|| PlanError("workflow.steps must be an array".into()))?;
        if raw_steps.is_empty() {
            return Err(PlanError("workflow.steps is empty".into()));
        }
        let mut steps = Vec::with_capacity(raw_steps.len());
        for (i, raw) in raw_steps.iter().enumerate() {
            steps.push(parse_step(raw, i)?);
        }
        let mut seen = std::collections::HashSet::new();
        for s in &steps {
            if !seen.insert(s.id.as_str()) {
                return Err(PlanError(format!("duplicate step id {:?}", s.id)));
            }
        }
        for s in &steps {
            for (target, _) in &s.next {
                if !seen.contains(target.as_str()) {
                    return Err(PlanError(format!(
                        "step {:?} has an edge to unknown step {:?}",
                        s.id, target
                    )));
                }
            }
        }
        let options_start = obj
            .get("options")
            .and_then(|o| o.get("start"))
            .and_then(Value::as_str);
        let start = options_start
            .or_else(|| workflow.get("start").and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| steps[0].id.clone());
        if !seen.contains(start.as_str()) {
            return Err(PlanError(format!(
                "start step {start:?} is not in the plan"
            )));
        }
        Ok(Plan { steps, start })
    }
}

fn parse_step(raw: &Value, index: usize) -> Result<Step, PlanError> {
    let obj = raw
        .as_object()
        .ok_or_else(|| PlanError(format!("step {index} must be an object")))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("job-{}", index + 1),
    };
    let expression = match obj.get("expression") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(PlanError(format!("step {id}: expression must be a string"))),
    };
    let mut adaptors = Vec::new();
    match obj.get("adaptors") {
        Some(Value::Array(list)) => {
            for a in list {
                match a.as_str() {
                    Some(s) => adaptors.push(s.to_string()),
                    None => return Err(PlanError(format!("step {id}: adaptors must be strings"))),
                }
            }
        }
        Some(Value::Null) | None => {}
        Some(_) => return Err(PlanError(format!("step {id}: adaptors must be an array"))),
    }
    if let Some(a) = obj.get("adaptor").and_then(Value::as_str) {
        adaptors.insert(0, a.to_string());
    }
    if adaptors.is_empty() && expression.is_some() {
        adaptors.push(DEFAULT_ADAPTOR.to_string());
    }
    let configuration = obj.get("configuration").filter(|v| !v.is_null()).cloned();
    let state = obj.get("state").filter(|v| !v.is_null()).cloned();
    let next = match obj.get("next") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(target)) => vec![(target.clone(), Edge::Always)],
        Some(Value::Object(map)) => parse_edges(map),
        Some(_) => return Err(PlanError(format!("step {id}: next must be an object"))),
    };
    Ok(Step {
        name: obj.get("name").and_then(Value::as_str).map(str::to_string),
        id,
        expression,
        adaptors,
        configuration,
        state,
        next,
    })
}

fn parse_edges(map: &Map<String, Value>) -> Vec<(String, Edge)> {
    map.iter()
        .map(|(target, edge)| (target.clone(), parse_edge(edge)))
        .collect()
}

fn parse_edge(edge: &Value) -> Edge {
    match edge {
        Value::Bool(true) => Edge::Always,
        Value::String(c) => condition(c),
        Value::Object(o) => {
            if o.get("disabled").and_then(Value::as_bool) == Some(true) {
                return Edge::Never;
            }
            match o.get("condition") {
                Some(Value::String(c)) => condition(c),
                Some(Value::Bool(true)) => Edge::Always,
                // OpenFn skips an object edge without a condition.
                _ => Edge::Never,
            }
        }
        _ => Edge::Never,
    }
}

fn condition(c: &str) -> Edge {
    match c.trim() {
        "always" | "on_upstream_always" => Edge::Always,
        "on_job_success" | "on_upstream_success" => Edge::OnSuccess,
        "on_job_failure" | "on_upstream_failure" => Edge::OnFailure,
        "never" => Edge::Never,
        expr => Edge::Expression(expr.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_edges_start_and_adaptors() {
        let plan = Plan::from_json(&json!({
            "workflow": {"start": "a", "steps": [
                {"id": "a", "adaptor": "@openfn/language-common@3", "expression": "fn(s => s)",
                 "next": {"b": true, "c": "on_job_failure", "d": "state.x > 1",
                          "e": {"condition": "always", "disabled": true}, "f": {}}},
                {"id": "b", "adaptors": ["@openfn/language-http"], "expression": "x"},
                {"id": "c", "expression": "x"}, {"id": "d"}, {"id": "e"}, {"id": "f"}
            ]},
            "options": {"start": "b"}
        }))
        .unwrap();
        assert_eq!(plan.start, "b");
        let a = plan.step("a").unwrap();
        assert_eq!(a.adaptors, vec!["@openfn/language-common@3"]);
        assert_eq!(
            a.next,
            vec![
                ("b".into(), Edge::Always),
                ("c".into(), Edge::OnFailure),
                ("d".into(), Edge::Expression("state.x > 1".into())),
                ("e".into(), Edge::Never),
                ("f".into(), Edge::Never),
            ]
        );
        assert_eq!(plan.step("c").unwrap().adaptors, vec![DEFAULT_ADAPTOR]);
    }

    #[test]
    fn rejects_unknown_targets() {
        let err =
            Plan::from_json(&json!({"workflow": {"steps": [{"id": "a", "next": {"zz": true}}]}}))
                .unwrap_err();
        assert!(err.0.contains("zz"), "{err}");
    }
}
