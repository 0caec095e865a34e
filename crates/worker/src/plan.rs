//! Lightning plan → OpenFn execution plan (kit's `convert-lightning-plan`),
//! the input the runtime child executes.

use std::collections::HashMap;

use gabbro_protocol::{LightningPlan, PlanEdge};
use gabbro_runtime::events::Limits;
use serde_json::{Map, Value, json};

/// Worker-wide limits (flags), which a plan's `options` override.
#[derive(Clone, Debug)]
pub struct DefaultLimits {
    pub run_timeout_ms: u64,
    pub run_memory_mb: u64,
    pub payload_mb: f64,
    pub log_payload_mb: f64,
}

/// The run's limits: the plan's options where given, else the worker's.
pub fn limits_for(plan: &LightningPlan, defaults: &DefaultLimits) -> Limits {
    let o = plan.options.clone().unwrap_or_default();
    Limits {
        timeout_ms: o.run_timeout_ms.unwrap_or(defaults.run_timeout_ms),
        memory_limit_mb: o.run_memory_limit_mb.unwrap_or(defaults.run_memory_mb),
        payload_limit_mb: o.payload_limit_mb.unwrap_or(defaults.payload_mb),
        log_payload_limit_mb: o.log_payload_limit_mb.unwrap_or(defaults.log_payload_mb),
    }
}

/// The execution plan for the runtime: triggers become empty steps, jobs
/// become steps with their expression, adaptor, inlined credential and
/// default state, edges become `next`.
pub fn execution_plan(plan: &LightningPlan, credentials: &HashMap<String, Value>) -> Value {
    let mut next: HashMap<&str, Map<String, Value>> = HashMap::new();
    for edge in &plan.edges {
        if let Some(source) = edge.source_trigger_id.as_deref() {
            // Trigger edges: disabled ones are dropped entirely.
            if edge.enabled == Some(false) {
                continue;
            }
            let v = match edge.condition.as_deref() {
                None | Some("always") => Value::Bool(true),
                Some(c) => Value::String(c.to_string()),
            };
            next.entry(source)
                .or_default()
                .insert(edge.target_job_id.clone(), v);
        } else if let Some(source) = edge.source_job_id.as_deref() {
            next.entry(source)
                .or_default()
                .insert(edge.target_job_id.clone(), job_edge(edge));
        }
    }
    let mut steps = Vec::with_capacity(plan.triggers.len() + plan.jobs.len());
    for t in &plan.triggers {
        let mut s = Map::new();
        s.insert("id".into(), json!(t.id));
        if let Some(n) = next.remove(t.id.as_str()) {
            s.insert("next".into(), Value::Object(n));
        }
        steps.push(Value::Object(s));
    }
    for j in &plan.jobs {
        let mut s = Map::new();
        s.insert("id".into(), json!(j.id));
        if let Some(name) = &j.name {
            s.insert("name".into(), json!(name));
        }
        s.insert("expression".into(), json!(j.body));
        if let Some(a) = &j.adaptor {
            s.insert("adaptors".into(), json!([a]));
        }
        let configuration = j.credential.clone().or_else(|| {
            j.credential_id
                .as_ref()
                .and_then(|id| credentials.get(id).cloned())
        });
        if let Some(c) = configuration {
            s.insert("configuration".into(), c);
        }
        if let Some(state) = &j.state {
            s.insert("state".into(), state.clone());
        }
        if let Some(n) = next.remove(j.id.as_str()) {
            s.insert("next".into(), Value::Object(n));
        }
        steps.push(Value::Object(s));
    }
    let mut workflow = Map::new();
    workflow.insert("steps".into(), Value::Array(steps));
    if let Some(name) = &plan.name {
        workflow.insert("name".into(), json!(name));
    }
    if let Some(g) = &plan.globals {
        workflow.insert("globals".into(), json!(g));
    }
    let mut options = Map::new();
    if let Some(start) = &plan.starting_node_id {
        options.insert("start".into(), json!(start));
    }
    json!({ "id": plan.id, "workflow": workflow, "options": options })
}

/// A job edge: enabled without a condition is `true`; otherwise an object
/// `{condition?, disabled?}`.
fn job_edge(edge: &PlanEdge) -> Value {
    let enabled = edge.enabled != Some(false);
    if enabled && edge.condition.is_none() {
        return Value::Bool(true);
    }
    let mut o = Map::new();
    if let Some(c) = &edge.condition {
        o.insert("condition".into(), json!(c));
    }
    if !enabled {
        o.insert("disabled".into(), Value::Bool(true));
    }
    Value::Object(o)
}

/// Ids of the credentials to fetch, in job order, without repeats.
pub fn credential_ids(plan: &LightningPlan) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for j in &plan.jobs {
        if j.credential.is_some() {
            continue;
        }
        if let Some(id) = &j.credential_id
            && !id.is_empty()
            && !ids.contains(id)
        {
            ids.push(id.clone());
        }
    }
    ids
}

/// Values to scrub from logs: every string in a credential (of 2+ chars, so
/// that a one-letter value does not blank out text), plus the base64 of
/// `username:password` as HTTP basic auth would send it.
pub fn secrets_of(credentials: &HashMap<String, Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.chars().count() >= 2 => out.push(s.clone()),
            Value::Number(n) if n.to_string().len() >= 4 => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for c in credentials.values() {
        walk(c, &mut out);
        let user = c.get("username").or_else(|| c.get("user"));
        if let (Some(Value::String(u)), Some(Value::String(p))) = (user, c.get("password")) {
            use base64::Engine;
            out.push(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Adaptor versions for `run:start`'s `versions`: `{"@openfn/language-common": ["3.3.4"]}`.
pub fn adaptor_versions(plan: &LightningPlan) -> Map<String, Value> {
    let mut m: Map<String, Value> = Map::new();
    for j in &plan.jobs {
        let Some(spec) = &j.adaptor else { continue };
        let (name, version) = split_adaptor(spec);
        let entry = m.entry(name.to_string()).or_insert_with(|| json!([]));
        if let Value::Array(a) = entry {
            let v = json!(version.unwrap_or("latest"));
            if !a.contains(&v) {
                a.push(v);
            }
        }
    }
    m
}

/// `@openfn/language-common@3.3.4` → (`@openfn/language-common`, `3.3.4`).
fn split_adaptor(spec: &str) -> (&str, Option<&str>) {
    match spec.rfind('@') {
        Some(i) if i > 0 => (&spec[..i], Some(&spec[i + 1..])),
        _ => (spec, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_a() -> LightningPlan {
        serde_json::from_value(json!({
            "id": "run-a",
            "name": "a",
            "starting_node_id": "trigger-1",
            "triggers": [{"id": "trigger-1", "type": "webhook"}],
            "edges": [
                {"id": "e1", "source_trigger_id": "trigger-1", "target_job_id": "job-A", "condition": "always", "enabled": true},
                {"id": "e2", "source_job_id": "job-A", "target_job_id": "job-B", "condition": "on_job_success", "enabled": true},
                {"id": "e3", "source_job_id": "job-A", "target_job_id": "job-C", "enabled": true},
                {"id": "e4", "source_job_id": "job-B", "target_job_id": "job-C", "condition": "always", "enabled": false}
            ],
            "jobs": [
                {"id": "job-A", "name": "A", "adaptor": "@openfn/language-common@3.3.4", "credential_id": "c", "body": "fn(s => s)"},
                {"id": "job-B", "name": "B", "adaptor": "@openfn/language-common@3.3.4", "body": "fn(s => s)"},
                {"id": "job-C", "adaptor": "@openfn/language-http@7.2.10", "body": "fn(s => s)"}
            ],
            "options": {"run_timeout_ms": 5000}
        }))
        .unwrap()
    }

    #[test]
    fn converts_triggers_jobs_edges_and_inlines_credentials() {
        let creds = HashMap::from([("c".to_string(), json!({"user": "u", "password": "pw"}))]);
        let p = execution_plan(&plan_a(), &creds);
        assert_eq!(p["options"]["start"], "trigger-1");
        let steps = p["workflow"]["steps"].as_array().unwrap();
        assert_eq!(
            steps[0],
            json!({"id": "trigger-1", "next": {"job-A": true}})
        );
        assert_eq!(
            steps[1]["configuration"],
            json!({"user": "u", "password": "pw"})
        );
        assert_eq!(
            steps[1]["adaptors"],
            json!(["@openfn/language-common@3.3.4"])
        );
        assert_eq!(steps[1]["expression"], "fn(s => s)");
        assert_eq!(
            steps[1]["next"],
            json!({"job-B": {"condition": "on_job_success"}, "job-C": true})
        );
        assert_eq!(
            steps[2]["next"],
            json!({"job-C": {"condition": "always", "disabled": true}})
        );
        assert!(steps[3].get("next").is_none());
        // The runtime reads it.
        let rp = gabbro_runtime::plan::Plan::from_json(&p).unwrap();
        assert_eq!(rp.start, "trigger-1");
    }

    #[test]
    fn plan_options_override_worker_limits() {
        let d = DefaultLimits {
            run_timeout_ms: 300_000,
            run_memory_mb: 500,
            payload_mb: 10.0,
            log_payload_mb: 1.0,
        };
        let l = limits_for(&plan_a(), &d);
        assert_eq!(l.timeout_ms, 5000);
        assert_eq!(l.memory_limit_mb, 500);
    }

    #[test]
    fn lists_credentials_secrets_and_adaptor_versions() {
        assert_eq!(credential_ids(&plan_a()), ["c"]);
        let creds = HashMap::from([("c".to_string(), json!({"user": "u", "password": "pw"}))]);
        let s = secrets_of(&creds);
        assert!(s.contains(&"pw".to_string()));
        assert!(!s.contains(&"u".to_string()));
        assert!(s.contains(&"dTpwdw==".to_string())); // base64("u:pw")
        let v = adaptor_versions(&plan_a());
        assert_eq!(v["@openfn/language-common"], json!(["3.3.4"]));
        assert_eq!(v["@openfn/language-http"], json!(["7.2.10"]));
    }
}
