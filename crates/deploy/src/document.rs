//! Lightning's provisioning document: the JSON that `POST /api/provision`
//! accepts and `GET /api/provision/<id>` returns (OpenFn/kit
//! `packages/deploy` builds it from project.yaml and a state file; Lightning's
//! `Provisioner` imports it).
//!
//! Every record carries its id (chosen by the client for new records); a
//! record `{"id": …, "delete": true}` removes it. Fields gabbro does not
//! support (sync webhook replies, cron cursors, Kafka, collections, channels)
//! are rejected by name; read-only metadata that Lightning itself returns
//! (timestamps, `lock_version`, ...) is accepted and ignored, so a document
//! fetched from a server can be posted back unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::errors::FieldErrors;

pub const DEFAULT_ADAPTOR: &str = "@openfn/language-common@latest";

/// A whole project, as posted to `/api/provision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectDocument {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub workflows: Vec<WorkflowDocument>,
    #[serde(default)]
    pub project_credentials: Vec<CredentialDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDocument {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    #[serde(default)]
    pub jobs: Vec<JobDocument>,
    #[serde(default)]
    pub triggers: Vec<TriggerDocument>,
    #[serde(default)]
    pub edges: Vec<EdgeDocument>,
    /// Read-only: the workflow's version counter (set by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_version: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDocument {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub adaptor: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub project_credential_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerDocument {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_expression: Option<String>,
    /// gabbro extension: the webhook answers at `/i/<custom_path>` as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeDocument {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_trigger_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_job_id: Option<String>,
    #[serde(default)]
    pub target_job_id: String,
    #[serde(default)]
    pub condition_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_label: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// A credential the project's jobs may use, by name. gabbro keeps
/// credentials per project; `owner` (Lightning's owning user) is accepted and
/// echoed but not used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialDocument {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn yes() -> bool {
    true
}

/// Edge condition types, as Lightning names them.
pub const CONDITION_TYPES: [&str; 4] = [
    "always",
    "on_job_success",
    "on_job_failure",
    "js_expression",
];

/// Words Lightning refuses inside a js_expression condition.
const FORBIDDEN_IN_EXPRESSION: [&str; 5] = ["import", "require", "process", "await", "eval"];

/// One level of a document: which keys it may have, which are read-only
/// metadata (accepted, ignored) and which are OpenFn features gabbro refuses.
struct Shape {
    known: &'static [&'static str],
    ignored: &'static [&'static str],
    /// (field, why) — rejected unless the value is null/empty/the default.
    unsupported: &'static [(&'static str, &'static str)],
}

const PROJECT: Shape = Shape {
    known: &[
        "id",
        "name",
        "description",
        "workflows",
        "project_credentials",
    ],
    ignored: &[
        "inserted_at",
        "updated_at",
        "scheduled_deletion",
        "requires_mfa",
        "retention_policy",
        "history_retention_period",
        "dataclip_retention_period",
        "concurrency",
        "allow_support_access",
        "env",
        "color",
        "parent_id",
    ],
    unsupported: &[
        ("collections", "collections are not supported by gabbro yet"),
        ("channels", "channels are not supported by gabbro yet"),
    ],
};

const WORKFLOW: Shape = Shape {
    known: &[
        "id",
        "name",
        "delete",
        "jobs",
        "triggers",
        "edges",
        "lock_version",
    ],
    ignored: &[
        "inserted_at",
        "updated_at",
        "deleted_at",
        "project_id",
        "version_history",
        "concurrency",
        "enable_job_logs",
        "positions",
    ],
    unsupported: &[],
};

const JOB: Shape = Shape {
    known: &[
        "id",
        "name",
        "adaptor",
        "body",
        "project_credential_id",
        "delete",
    ],
    ignored: &["inserted_at", "updated_at", "workflow_id", "enabled"],
    unsupported: &[(
        "keychain_credential_id",
        "keychain credentials are not supported by gabbro yet",
    )],
};

const TRIGGER: Shape = Shape {
    known: &[
        "id",
        "type",
        "enabled",
        "cron_expression",
        "custom_path",
        "delete",
    ],
    ignored: &[
        "inserted_at",
        "updated_at",
        "workflow_id",
        "has_auth_method",
    ],
    unsupported: &[
        (
            "webhook_reply",
            "only \"before_start\" is supported: gabbro answers a webhook when the work order is stored",
        ),
        (
            "webhook_response_config",
            "custom webhook responses are not supported by gabbro yet",
        ),
        (
            "cron_cursor_job_id",
            "cron cursor jobs are not supported by gabbro yet",
        ),
        (
            "kafka_configuration",
            "Kafka triggers are not supported by gabbro",
        ),
    ],
};

const EDGE: Shape = Shape {
    known: &[
        "id",
        "source_trigger_id",
        "source_job_id",
        "target_job_id",
        "condition_type",
        "condition_expression",
        "condition_label",
        "enabled",
        "delete",
    ],
    ignored: &["inserted_at", "updated_at", "workflow_id"],
    unsupported: &[],
};

const CREDENTIAL: Shape = Shape {
    known: &["id", "name", "owner"],
    ignored: &[],
    unsupported: &[],
};

/// Whether an unsupported field's value is harmless: absent-equivalent, or
/// the one value that means what gabbro does anyway.
fn unsupported_value_is_default(field: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => field == "webhook_reply" && s == "before_start",
        _ => false,
    }
}

fn check_keys(obj: &Map<String, Value>, shape: &Shape, path: &str, errors: &mut FieldErrors) {
    for (key, value) in obj {
        if shape.known.contains(&key.as_str()) || shape.ignored.contains(&key.as_str()) {
            continue;
        }
        if let Some((_, why)) = shape.unsupported.iter().find(|(f, _)| f == key) {
            if !unsupported_value_is_default(key, value) {
                errors.add(join(path, key), format!("unsupported: {why}"));
            }
            continue;
        }
        errors.add(join(path, key), "unknown field".to_string());
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Parse and validate a provisioning document. On error, every problem is
/// reported with the path of the field it concerns, e.g.
/// `workflows[register patients].jobs[normalise].adaptor`.
pub fn parse_document(value: &Value) -> Result<ProjectDocument, FieldErrors> {
    let mut errors = FieldErrors::default();
    let Some(obj) = value.as_object() else {
        errors.add("", "the document must be a JSON object");
        return Err(errors);
    };
    check_keys(obj, &PROJECT, "", &mut errors);
    let check_list = |key: &str,
                      shape: &Shape,
                      label: &dyn Fn(&Map<String, Value>, usize) -> String,
                      prefix: &str,
                      errors: &mut FieldErrors| {
        if let Some(items) = obj.get(key) {
            check_children(items, shape, label, &join(prefix, key), errors);
        }
    };
    check_list(
        "project_credentials",
        &CREDENTIAL,
        &label_by("name"),
        "",
        &mut errors,
    );
    if let Some(Value::Array(workflows)) = obj.get("workflows") {
        for (i, wf) in workflows.iter().enumerate() {
            let Some(wobj) = wf.as_object() else { continue };
            let wpath = format!("workflows[{}]", label_by("name")(wobj, i));
            check_keys(wobj, &WORKFLOW, &wpath, &mut errors);
            if let Some(items) = wobj.get("jobs") {
                check_children(
                    items,
                    &JOB,
                    &label_by("name"),
                    &join(&wpath, "jobs"),
                    &mut errors,
                );
            }
            if let Some(items) = wobj.get("triggers") {
                check_children(
                    items,
                    &TRIGGER,
                    &label_by("type"),
                    &join(&wpath, "triggers"),
                    &mut errors,
                );
            }
            if let Some(items) = wobj.get("edges") {
                check_children(
                    items,
                    &EDGE,
                    &label_by("id"),
                    &join(&wpath, "edges"),
                    &mut errors,
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let doc: ProjectDocument = match serde_json::from_value(value.clone()) {
        Ok(d) => d,
        Err(e) => {
            errors.add("", format!("malformed document: {e}"));
            return Err(errors);
        }
    };
    validate(&doc, &mut errors);
    if errors.is_empty() {
        Ok(doc)
    } else {
        Err(errors)
    }
}

fn label_by(key: &'static str) -> impl Fn(&Map<String, Value>, usize) -> String {
    move |obj, i| match obj.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => match obj.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => i.to_string(),
        },
    }
}

fn check_children(
    items: &Value,
    shape: &Shape,
    label: &dyn Fn(&Map<String, Value>, usize) -> String,
    path: &str,
    errors: &mut FieldErrors,
) {
    match items {
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                match item.as_object() {
                    Some(o) => check_keys(o, shape, &format!("{path}[{}]", label(o, i)), errors),
                    None => errors.add(format!("{path}[{i}]"), "must be an object"),
                }
            }
        }
        Value::Null => {}
        _ => errors.add(path, "must be a list"),
    }
}

/// Is `s` a UUID in its canonical hyphenated form?
pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

/// Characters allowed in a webhook's custom path: one URL path segment of
/// unreserved characters, so it never needs escaping.
pub fn valid_custom_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 200
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        && p != "."
        && p != ".."
}

/// Is `expr` a standard 5-field cron expression gabbro can schedule?
pub fn valid_cron(expr: &str) -> Result<(), String> {
    if expr.split_whitespace().count() != 5 {
        return Err("must have 5 fields (minute hour day-of-month month day-of-week)".into());
    }
    expr.parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn validate<'a>(doc: &'a ProjectDocument, errors: &mut FieldErrors) {
    if !is_uuid(&doc.id) {
        errors.add("id", "must be a UUID");
    }
    if doc.name.trim().is_empty() {
        errors.add("name", "can't be blank");
    }
    let mut credential_ids = HashSet::new();
    let mut credential_names = HashSet::new();
    for c in &doc.project_credentials {
        let path = format!("project_credentials[{}]", c.name);
        if !is_uuid(&c.id) {
            errors.add(join(&path, "id"), "must be a UUID");
        }
        if c.name.trim().is_empty() {
            errors.add(join(&path, "name"), "can't be blank");
        }
        if !credential_names.insert(c.name.as_str()) {
            errors.add(join(&path, "name"), "is listed twice");
        }
        credential_ids.insert(c.id.as_str());
    }
    let mut all_ids: HashMap<&str, String> = HashMap::new();
    let mut seen_id = |id: &'a str, path: &str, errors: &mut FieldErrors| {
        if !is_uuid(id) {
            errors.add(join(path, "id"), "must be a UUID");
        } else if let Some(other) = all_ids.insert(id, path.to_string()) {
            errors.add(join(path, "id"), format!("is also the id of {other}"));
        }
    };
    let mut workflow_names = HashSet::new();
    let mut custom_paths: BTreeMap<&str, String> = BTreeMap::new();
    for wf in &doc.workflows {
        let wlabel = if wf.name.is_empty() {
            wf.id.clone()
        } else {
            wf.name.clone()
        };
        let wpath = format!("workflows[{wlabel}]");
        seen_id(&wf.id, &wpath, errors);
        if wf.delete {
            if !wf.jobs.is_empty() || !wf.triggers.is_empty() || !wf.edges.is_empty() {
                errors.add(
                    join(&wpath, "delete"),
                    "cannot change or add a record while deleting",
                );
            }
            continue;
        }
        if wf.name.trim().is_empty() {
            errors.add(join(&wpath, "name"), "can't be blank");
        } else if !workflow_names.insert(wf.name.as_str()) {
            errors.add(join(&wpath, "name"), "has already been taken");
        }
        let mut job_names = HashSet::new();
        let mut live_jobs = HashSet::new();
        for job in &wf.jobs {
            let jlabel = if job.name.is_empty() {
                job.id.clone()
            } else {
                job.name.clone()
            };
            let jpath = format!("{wpath}.jobs[{jlabel}]");
            seen_id(&job.id, &jpath, errors);
            if job.delete {
                continue;
            }
            live_jobs.insert(job.id.as_str());
            if job.name.trim().is_empty() {
                errors.add(join(&jpath, "name"), "can't be blank");
            } else if job.name.chars().count() > 100 {
                errors.add(join(&jpath, "name"), "should be at most 100 character(s)");
            } else if !job_names.insert(job.name.as_str()) {
                errors.add(join(&jpath, "name"), "has already been taken");
            }
            if let Some(cid) = &job.project_credential_id
                && !credential_ids.contains(cid.as_str())
            {
                errors.add(
                    join(&jpath, "project_credential_id"),
                    format!("{cid} is not one of the document's project_credentials"),
                );
            }
            if !job.adaptor.is_empty() && !valid_adaptor(&job.adaptor) {
                errors.add(
                    join(&jpath, "adaptor"),
                    "must be an npm package spec such as @openfn/language-http@7",
                );
            }
        }
        let mut live_triggers: HashMap<&str, &str> = HashMap::new();
        for t in &wf.triggers {
            let tpath = format!(
                "{wpath}.triggers[{}]",
                if t.kind.is_empty() { &t.id } else { &t.kind }
            );
            seen_id(&t.id, &tpath, errors);
            if t.delete {
                continue;
            }
            live_triggers.insert(t.id.as_str(), t.kind.as_str());
            match t.kind.as_str() {
                "webhook" => {
                    if t.cron_expression.is_some() {
                        errors.add(
                            join(&tpath, "cron_expression"),
                            "only cron triggers have a cron_expression",
                        );
                    }
                    if let Some(p) = &t.custom_path {
                        if !valid_custom_path(p) {
                            errors.add(
                                join(&tpath, "custom_path"),
                                "must be one URL path segment of letters, digits, '-', '_', '.' or '~'",
                            );
                        } else if let Some(other) = custom_paths.insert(p.as_str(), tpath.clone()) {
                            errors.add(
                                join(&tpath, "custom_path"),
                                format!("is also the custom_path of {other}"),
                            );
                        }
                    }
                }
                "cron" => {
                    match &t.cron_expression {
                        None => errors.add(
                            join(&tpath, "cron_expression"),
                            "can't be blank for a cron trigger",
                        ),
                        Some(e) => {
                            if let Err(why) = valid_cron(e) {
                                errors.add(
                                    join(&tpath, "cron_expression"),
                                    format!("is invalid: {why}"),
                                );
                            }
                        }
                    }
                    if t.custom_path.is_some() {
                        errors.add(
                            join(&tpath, "custom_path"),
                            "only webhook triggers have a custom_path",
                        );
                    }
                }
                "kafka" => errors.add(
                    join(&tpath, "type"),
                    "unsupported: Kafka triggers are not supported by gabbro",
                ),
                "" => errors.add(join(&tpath, "type"), "can't be blank"),
                other => errors.add(
                    join(&tpath, "type"),
                    format!("{other:?} is not one of webhook, cron"),
                ),
            }
        }
        for e in &wf.edges {
            let epath = format!("{wpath}.edges[{}]", e.id);
            seen_id(&e.id, &epath, errors);
            if e.delete {
                continue;
            }
            match (&e.source_trigger_id, &e.source_job_id) {
                (Some(_), Some(_)) => errors.add(
                    join(&epath, "source_job_id"),
                    "an edge has either a source_trigger_id or a source_job_id, not both",
                ),
                (None, None) => errors.add(
                    join(&epath, "source_job_id"),
                    "an edge needs a source_trigger_id or a source_job_id",
                ),
                (Some(t), None) => {
                    if !live_triggers.contains_key(t.as_str()) {
                        errors.add(
                            join(&epath, "source_trigger_id"),
                            format!("{t} is not a trigger of this workflow"),
                        );
                    }
                    if !matches!(e.condition_type.as_str(), "always" | "js_expression" | "") {
                        errors.add(
                            join(&epath, "condition_type"),
                            "an edge from a trigger can only be always or js_expression",
                        );
                    }
                }
                (None, Some(j)) => {
                    if !live_jobs.contains(j.as_str()) {
                        errors.add(
                            join(&epath, "source_job_id"),
                            format!("{j} is not a job of this workflow"),
                        );
                    }
                }
            }
            if e.target_job_id.is_empty() {
                errors.add(join(&epath, "target_job_id"), "can't be blank");
            } else if !live_jobs.contains(e.target_job_id.as_str()) {
                errors.add(
                    join(&epath, "target_job_id"),
                    format!("{} is not a job of this workflow", e.target_job_id),
                );
            } else if e.source_job_id.as_deref() == Some(e.target_job_id.as_str()) {
                errors.add(
                    join(&epath, "target_job_id"),
                    "an edge cannot point a job at itself",
                );
            }
            if !e.condition_type.is_empty() && !CONDITION_TYPES.contains(&e.condition_type.as_str())
            {
                errors.add(
                    join(&epath, "condition_type"),
                    format!(
                        "{:?} is not one of {}",
                        e.condition_type,
                        CONDITION_TYPES.join(", ")
                    ),
                );
            }
            if e.condition_type == "js_expression" {
                match e.condition_expression.as_deref().map(str::trim) {
                    None | Some("") => errors.add(
                        join(&epath, "condition_expression"),
                        "can't be blank when condition_type is js_expression",
                    ),
                    Some(x) => {
                        if x.chars().count() > 255 {
                            errors.add(
                                join(&epath, "condition_expression"),
                                "should be at most 255 character(s)",
                            );
                        }
                        if let Some(w) =
                            FORBIDDEN_IN_EXPRESSION.iter().find(|w| contains_word(x, w))
                        {
                            errors.add(
                                join(&epath, "condition_expression"),
                                format!("must not contain {w}"),
                            );
                        }
                    }
                }
            }
            if e.condition_label
                .as_ref()
                .is_some_and(|l| l.chars().count() > 255)
            {
                errors.add(
                    join(&epath, "condition_label"),
                    "should be at most 255 character(s)",
                );
            }
        }
    }
}

fn contains_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .any(|w| w == word)
}

/// `name@version` or `@scope/name@version` (version optional).
pub fn valid_adaptor(spec: &str) -> bool {
    let rest = spec.strip_prefix('@').unwrap_or(spec);
    let name = match rest.split_once('@') {
        Some((n, v)) => {
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return false;
            }
            n
        }
        None => rest,
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl ProjectDocument {
    /// The document with `delete` markers dropped and defaults filled in:
    /// what the server stores.
    pub fn normalised(mut self) -> Self {
        self.workflows.retain(|w| !w.delete);
        for wf in &mut self.workflows {
            wf.jobs.retain(|j| !j.delete);
            wf.triggers.retain(|t| !t.delete);
            wf.edges.retain(|e| !e.delete);
            for j in &mut wf.jobs {
                if j.adaptor.is_empty() {
                    j.adaptor = DEFAULT_ADAPTOR.to_string();
                }
            }
            for e in &mut wf.edges {
                if e.condition_type.is_empty() {
                    e.condition_type = "always".into();
                }
            }
        }
        self
    }
}
