//! OpenFn's `project.yaml` (the file `openfn deploy` reads), read and written
//! with its keys in file order. Unknown keys and OpenFn features gabbro does
//! not support are errors naming the field, never silently dropped.

use serde_norway::{Mapping, Value};
use std::path::Path;

use crate::errors::FieldErrors;

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSpec {
    pub name: String,
    pub description: Option<String>,
    pub credentials: Vec<(String, CredentialSpec)>,
    pub workflows: Vec<(String, WorkflowSpec)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CredentialSpec {
    pub name: String,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSpec {
    pub name: String,
    pub jobs: Vec<(String, JobSpec)>,
    pub triggers: Vec<(String, TriggerSpec)>,
    pub edges: Vec<(String, EdgeSpec)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub adaptor: String,
    pub body: String,
    /// Key of an entry of the project's `credentials`.
    pub credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    pub kind: String,
    pub enabled: bool,
    pub cron_expression: Option<String>,
    pub custom_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSpec {
    pub source_trigger: Option<String>,
    pub source_job: Option<String>,
    pub target_job: String,
    pub condition_type: String,
    pub condition_expression: Option<String>,
    pub condition_label: Option<String>,
    pub enabled: bool,
}

/// Reads one mapping level, remembering which keys were used so the rest can
/// be reported as unknown.
struct Level<'a> {
    map: &'a Mapping,
    path: String,
    used: Vec<&'static str>,
}

impl<'a> Level<'a> {
    fn new(value: &'a Value, path: &str, errors: &mut FieldErrors) -> Option<Self> {
        match value {
            Value::Mapping(map) => Some(Level {
                map,
                path: path.to_string(),
                used: Vec::new(),
            }),
            _ => {
                errors.add(path, "must be a mapping");
                None
            }
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, key: &'static str, errors: &mut FieldErrors) -> Option<String> {
        let path = self.field(key);
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                errors.add(path, "must be a string");
                None
            }
        }
    }

    fn required(&mut self, key: &'static str, errors: &mut FieldErrors) -> String {
        let path = self.field(key);
        match self.string(key, errors) {
            Some(s) if !s.trim().is_empty() => s,
            Some(_) | None => {
                if !errors.has(&path) {
                    errors.add(path, "can't be blank");
                }
                String::new()
            }
        }
    }

    fn boolean(&mut self, key: &'static str, default: bool, errors: &mut FieldErrors) -> bool {
        let path = self.field(key);
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.add(path, "must be true or false");
                default
            }
        }
    }

    /// Report a field gabbro refuses, unless its value means what gabbro does
    /// anyway (`allowed`).
    fn unsupported(
        &mut self,
        key: &'static str,
        why: &str,
        allowed: &[&str],
        errors: &mut FieldErrors,
    ) {
        let path = self.field(key);
        match self.get(key) {
            None => {}
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => {}
            Some(Value::Mapping(m)) if m.is_empty() => {}
            Some(Value::Sequence(s)) if s.is_empty() => {}
            Some(_) => errors.add(path, format!("unsupported: {why}")),
        }
    }

    /// Keys present that no reader asked for.
    fn finish(self, errors: &mut FieldErrors) {
        for key in self.map.keys() {
            let name = match key {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if !self.used.contains(&name.as_str()) {
                let path = self.field(&name);
                errors.add(path, "unknown field");
            }
        }
    }
}

/// Entries of a keyed mapping (`jobs:`, `workflows:`, ...) in file order.
fn entries<'a>(
    value: Option<&'a Value>,
    path: &str,
    errors: &mut FieldErrors,
) -> Vec<(String, &'a Value)> {
    match value {
        None => Vec::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| match k {
                Value::String(s) => Some((s.clone(), v)),
                Value::Number(n) => Some((n.to_string(), v)),
                _ => {
                    errors.add(path, "keys must be strings");
                    None
                }
            })
            .collect(),
        Some(_) => {
            errors.add(path, "must be a mapping of keys to entries");
            Vec::new()
        }
    }
}

/// Parse a project.yaml. `base_dir` resolves job bodies given as
/// `body: {path: file.js}`.
pub fn parse_project_yaml(text: &str, base_dir: Option<&Path>) -> Result<ProjectSpec, FieldErrors> {
    let mut errors = FieldErrors::default();
    let root: Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errors.add("", format!("not valid YAML: {e}"));
            return Err(errors);
        }
    };
    let Some(mut top) = Level::new(&root, "", &mut errors) else {
        return Err(errors);
    };
    let name = top.required("name", &mut errors);
    let description = top.string("description", &mut errors);
    top.unsupported(
        "collections",
        "collections are not supported by gabbro yet",
        &[],
        &mut errors,
    );
    top.unsupported(
        "channels",
        "channels are not supported by gabbro yet",
        &[],
        &mut errors,
    );

    let mut credentials = Vec::new();
    for (key, value) in entries(top.get("credentials"), "credentials", &mut errors) {
        let path = format!("credentials.{key}");
        let Some(mut c) = Level::new(value, &path, &mut errors) else {
            continue;
        };
        let name = c.required("name", &mut errors);
        let owner = c.string("owner", &mut errors);
        c.finish(&mut errors);
        credentials.push((key, CredentialSpec { name, owner }));
    }

    let mut workflows = Vec::new();
    let workflow_entries = entries(top.get("workflows"), "workflows", &mut errors);
    for (wkey, wvalue) in workflow_entries {
        let wpath = format!("workflows.{wkey}");
        let Some(mut w) = Level::new(wvalue, &wpath, &mut errors) else {
            continue;
        };
        let wname = w
            .string("name", &mut errors)
            .unwrap_or_else(|| wkey.clone());
        // `id` appears in files written by some OpenFn tools; ids are
        // resolved by name against the server, so it is not needed.
        let _ = w.get("id");
        let mut jobs = Vec::new();
        for (jkey, jvalue) in entries(w.get("jobs"), &format!("{wpath}.jobs"), &mut errors) {
            let jpath = format!("{wpath}.jobs.{jkey}");
            let Some(mut j) = Level::new(jvalue, &jpath, &mut errors) else {
                continue;
            };
            let name = j
                .string("name", &mut errors)
                .unwrap_or_else(|| jkey.clone());
            let adaptor = j
                .string("adaptor", &mut errors)
                .unwrap_or_else(|| crate::document::DEFAULT_ADAPTOR.to_string());
            let body = read_body(&mut j, &jpath, base_dir, &mut errors);
            let credential = j.string("credential", &mut errors);
            if let Some(c) = &credential
                && !credentials.iter().any(|(k, _)| k == c)
            {
                errors.add(
                    format!("{jpath}.credential"),
                    format!("{c:?} is not a key of the project's credentials"),
                );
            }
            let _ = j.get("id");
            j.unsupported(
                "keychain_credential",
                "keychain credentials are not supported by gabbro yet",
                &[],
                &mut errors,
            );
            // OpenFn's spec lists `enabled` on jobs; Lightning has no such
            // field any more. Only `true` means what gabbro does.
            if !j.boolean("enabled", true, &mut errors) {
                errors.add(
                    format!("{jpath}.enabled"),
                    "unsupported: jobs cannot be disabled; disable the edge into the job instead",
                );
            }
            j.finish(&mut errors);
            jobs.push((
                jkey,
                JobSpec {
                    name,
                    adaptor,
                    body,
                    credential,
                },
            ));
        }
        let mut triggers = Vec::new();
        for (tkey, tvalue) in entries(w.get("triggers"), &format!("{wpath}.triggers"), &mut errors)
        {
            let tpath = format!("{wpath}.triggers.{tkey}");
            let Some(mut t) = Level::new(tvalue, &tpath, &mut errors) else {
                continue;
            };
            let kind = t
                .string("type", &mut errors)
                .unwrap_or_else(|| "webhook".into());
            let enabled = t.boolean("enabled", true, &mut errors);
            let cron_expression = t.string("cron_expression", &mut errors);
            let custom_path = t.string("custom_path", &mut errors);
            let _ = t.get("id");
            t.unsupported(
                "webhook_reply",
                "only before_start is supported: gabbro answers a webhook once its work order is stored",
                &["before_start"],
                &mut errors,
            );
            t.unsupported(
                "webhook_response_config",
                "custom webhook responses are not supported by gabbro yet",
                &[],
                &mut errors,
            );
            t.unsupported(
                "cron_cursor_job",
                "cron cursor jobs are not supported by gabbro yet",
                &[],
                &mut errors,
            );
            t.unsupported(
                "kafka_configuration",
                "Kafka triggers are not supported by gabbro",
                &[],
                &mut errors,
            );
            t.finish(&mut errors);
            match kind.as_str() {
                "webhook" | "cron" => {}
                "kafka" => errors.add(
                    format!("{tpath}.type"),
                    "unsupported: Kafka triggers are not supported by gabbro",
                ),
                other => errors.add(
                    format!("{tpath}.type"),
                    format!("{other:?} is not one of webhook, cron"),
                ),
            }
            triggers.push((
                tkey,
                TriggerSpec {
                    kind,
                    enabled,
                    cron_expression,
                    custom_path,
                },
            ));
        }
        let mut edges = Vec::new();
        for (ekey, evalue) in entries(w.get("edges"), &format!("{wpath}.edges"), &mut errors) {
            let epath = format!("{wpath}.edges.{ekey}");
            let Some(mut e) = Level::new(evalue, &epath, &mut errors) else {
                continue;
            };
            let source_trigger = e.string("source_trigger", &mut errors);
            let source_job = e.string("source_job", &mut errors);
            let target_job = e.required("target_job", &mut errors);
            let condition_type = e
                .string("condition_type", &mut errors)
                .unwrap_or_else(|| "always".into());
            let condition_expression = e.string("condition_expression", &mut errors);
            let condition_label = e.string("condition_label", &mut errors);
            let enabled = e.boolean("enabled", true, &mut errors);
            let _ = e.get("id");
            e.finish(&mut errors);
            if let Some(s) = &source_trigger
                && !triggers.iter().any(|(k, _)| k == s)
            {
                errors.add(
                    format!("{epath}.source_trigger"),
                    format!("{s:?} is not a trigger of this workflow"),
                );
            }
            if let Some(s) = &source_job
                && !jobs.iter().any(|(k, _)| k == s)
            {
                errors.add(
                    format!("{epath}.source_job"),
                    format!("{s:?} is not a job of this workflow"),
                );
            }
            if source_job.is_none() && source_trigger.is_none() {
                errors.add(
                    format!("{epath}.source_job"),
                    "an edge needs a source_trigger or a source_job",
                );
            }
            if !target_job.is_empty() && !jobs.iter().any(|(k, _)| *k == target_job) {
                errors.add(
                    format!("{epath}.target_job"),
                    format!("{target_job:?} is not a job of this workflow"),
                );
            }
            edges.push((
                ekey,
                EdgeSpec {
                    source_trigger,
                    source_job,
                    target_job,
                    condition_type,
                    condition_expression,
                    condition_label,
                    enabled,
                },
            ));
        }
        w.finish(&mut errors);
        workflows.push((
            wkey,
            WorkflowSpec {
                name: wname,
                jobs,
                triggers,
                edges,
            },
        ));
    }
    top.finish(&mut errors);
    if errors.is_empty() {
        Ok(ProjectSpec {
            name,
            description,
            credentials,
            workflows,
        })
    } else {
        Err(errors)
    }
}

fn read_body(
    level: &mut Level<'_>,
    jpath: &str,
    base_dir: Option<&Path>,
    errors: &mut FieldErrors,
) -> String {
    let bpath = format!("{jpath}.body");
    match level.get("body") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Mapping(_)) => {
            let Some(mut b) = Level::new(v, &bpath, errors) else {
                return String::new();
            };
            let content = b.string("content", errors);
            let path = b.string("path", errors);
            b.finish(errors);
            match (content, path) {
                (Some(c), _) => c,
                (None, Some(p)) => {
                    let file = base_dir
                        .map(|d| d.join(&p))
                        .unwrap_or_else(|| p.clone().into());
                    match std::fs::read_to_string(&file) {
                        Ok(text) => text,
                        Err(e) => {
                            errors.add(
                                format!("{bpath}.path"),
                                format!("cannot read {}: {e}", file.display()),
                            );
                            String::new()
                        }
                    }
                }
                (None, None) => {
                    errors.add(bpath, "needs content or path");
                    String::new()
                }
            }
        }
        Some(_) => {
            errors.add(bpath, "must be a string or {path: FILE}");
            String::new()
        }
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Write a project as project.yaml, in OpenFn's layout (plus `custom_path`).
pub fn to_project_yaml(spec: &ProjectSpec) -> String {
    let mut top = Mapping::new();
    top.insert(s("name"), s(&spec.name));
    if let Some(d) = &spec.description {
        top.insert(s("description"), s(d));
    }
    if !spec.credentials.is_empty() {
        let mut creds = Mapping::new();
        for (key, c) in &spec.credentials {
            let mut m = Mapping::new();
            m.insert(s("name"), s(&c.name));
            if let Some(o) = &c.owner {
                m.insert(s("owner"), s(o));
            }
            creds.insert(s(key), Value::Mapping(m));
        }
        top.insert(s("credentials"), Value::Mapping(creds));
    }
    let mut workflows = Mapping::new();
    for (wkey, wf) in &spec.workflows {
        let mut w = Mapping::new();
        w.insert(s("name"), s(&wf.name));
        let mut jobs = Mapping::new();
        for (jkey, j) in &wf.jobs {
            let mut m = Mapping::new();
            m.insert(s("name"), s(&j.name));
            m.insert(s("adaptor"), s(&j.adaptor));
            if let Some(c) = &j.credential {
                m.insert(s("credential"), s(c));
            }
            m.insert(s("body"), s(&j.body));
            jobs.insert(s(jkey), Value::Mapping(m));
        }
        w.insert(s("jobs"), Value::Mapping(jobs));
        let mut triggers = Mapping::new();
        for (tkey, t) in &wf.triggers {
            let mut m = Mapping::new();
            m.insert(s("type"), s(&t.kind));
            m.insert(s("enabled"), Value::Bool(t.enabled));
            if let Some(c) = &t.cron_expression {
                m.insert(s("cron_expression"), s(c));
            }
            if let Some(p) = &t.custom_path {
                m.insert(s("custom_path"), s(p));
            }
            triggers.insert(s(tkey), Value::Mapping(m));
        }
        w.insert(s("triggers"), Value::Mapping(triggers));
        let mut edges = Mapping::new();
        for (ekey, e) in &wf.edges {
            let mut m = Mapping::new();
            if let Some(t) = &e.source_trigger {
                m.insert(s("source_trigger"), s(t));
            }
            if let Some(j) = &e.source_job {
                m.insert(s("source_job"), s(j));
            }
            m.insert(s("target_job"), s(&e.target_job));
            m.insert(s("condition_type"), s(&e.condition_type));
            if let Some(x) = &e.condition_expression {
                m.insert(s("condition_expression"), s(x));
            }
            if let Some(l) = &e.condition_label {
                m.insert(s("condition_label"), s(l));
            }
            m.insert(s("enabled"), Value::Bool(e.enabled));
            edges.insert(s(ekey), Value::Mapping(m));
        }
        w.insert(s("edges"), Value::Mapping(edges));
        workflows.insert(s(wkey), Value::Mapping(w));
    }
    top.insert(s("workflows"), Value::Mapping(workflows));
    serde_norway::to_string(&Value::Mapping(top)).unwrap_or_default()
}
