//! project.yaml ⇄ provisioning document. Records are matched by name
//! against what the server already has, so ids stay stable across deploys:
//! workflows and jobs by `name`, credentials by `name`, triggers by type (in
//! order, a trigger with the same `custom_path` first), edges by their
//! (source, target) pair.

use std::collections::{HashMap, HashSet};

use crate::document::{
    CredentialDocument, EdgeDocument, JobDocument, ProjectDocument, TriggerDocument,
    WorkflowDocument,
};
use crate::spec::{CredentialSpec, EdgeSpec, JobSpec, ProjectSpec, TriggerSpec, WorkflowSpec};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The document to post so the server ends up holding `spec`. Records the
/// server has but the file no longer lists are sent as `{id, delete: true}`.
pub fn spec_to_document(spec: &ProjectSpec, existing: Option<&ProjectDocument>) -> ProjectDocument {
    let mut project_credentials = Vec::new();
    let mut credential_ids: HashMap<&str, String> = HashMap::new();
    for (key, c) in &spec.credentials {
        let id = existing
            .and_then(|d| d.project_credentials.iter().find(|e| e.name == c.name))
            .map(|e| e.id.clone())
            .unwrap_or_else(new_id);
        credential_ids.insert(key.as_str(), id.clone());
        project_credentials.push(CredentialDocument {
            id,
            name: c.name.clone(),
            owner: c.owner.clone(),
        });
    }

    let mut workflows = Vec::new();
    let mut kept = HashSet::new();
    for (_, wf) in &spec.workflows {
        let old = existing.and_then(|d| d.workflows.iter().find(|w| w.name == wf.name));
        if let Some(o) = old {
            kept.insert(o.id.clone());
        }
        workflows.push(workflow_document(wf, old, &credential_ids));
    }
    if let Some(d) = existing {
        for w in &d.workflows {
            if !kept.contains(&w.id) {
                workflows.push(WorkflowDocument {
                    id: w.id.clone(),
                    name: String::new(),
                    delete: true,
                    jobs: vec![],
                    triggers: vec![],
                    edges: vec![],
                    lock_version: None,
                });
            }
        }
    }
    ProjectDocument {
        id: existing.map(|d| d.id.clone()).unwrap_or_else(new_id),
        name: spec.name.clone(),
        description: spec.description.clone(),
        workflows,
        project_credentials,
    }
}

fn workflow_document(
    wf: &WorkflowSpec,
    old: Option<&WorkflowDocument>,
    credential_ids: &HashMap<&str, String>,
) -> WorkflowDocument {
    let old_jobs: &[JobDocument] = old.map(|o| o.jobs.as_slice()).unwrap_or(&[]);
    let old_triggers: &[TriggerDocument] = old.map(|o| o.triggers.as_slice()).unwrap_or(&[]);
    let old_edges: &[EdgeDocument] = old.map(|o| o.edges.as_slice()).unwrap_or(&[]);

    let mut job_ids: HashMap<&str, String> = HashMap::new();
    let mut jobs = Vec::new();
    for (key, j) in &wf.jobs {
        let id = old_jobs
            .iter()
            .find(|o| o.name == j.name)
            .map(|o| o.id.clone())
            .unwrap_or_else(new_id);
        job_ids.insert(key.as_str(), id.clone());
        jobs.push(JobDocument {
            id,
            name: j.name.clone(),
            adaptor: j.adaptor.clone(),
            body: j.body.clone(),
            project_credential_id: j
                .credential
                .as_deref()
                .and_then(|c| credential_ids.get(c).cloned()),
            delete: false,
        });
    }

    let mut trigger_ids: HashMap<&str, String> = HashMap::new();
    let mut taken: HashSet<&str> = HashSet::new();
    let mut triggers = Vec::new();
    for (key, t) in &wf.triggers {
        let same_path = old_triggers.iter().find(|o| {
            !taken.contains(o.id.as_str())
                && o.kind == t.kind
                && t.custom_path.is_some()
                && o.custom_path == t.custom_path
        });
        let same_kind = || {
            old_triggers
                .iter()
                .find(|o| !taken.contains(o.id.as_str()) && o.kind == t.kind)
        };
        let id = match same_path.or_else(same_kind) {
            Some(o) => {
                taken.insert(o.id.as_str());
                o.id.clone()
            }
            None => new_id(),
        };
        trigger_ids.insert(key.as_str(), id.clone());
        triggers.push(TriggerDocument {
            id,
            kind: t.kind.clone(),
            enabled: t.enabled,
            cron_expression: t.cron_expression.clone(),
            custom_path: t.custom_path.clone(),
            delete: false,
        });
    }

    let mut edges = Vec::new();
    let mut taken_edges: HashSet<&str> = HashSet::new();
    for (_, e) in &wf.edges {
        let source_trigger_id = e
            .source_trigger
            .as_deref()
            .and_then(|k| trigger_ids.get(k).cloned());
        let source_job_id = e
            .source_job
            .as_deref()
            .and_then(|k| job_ids.get(k).cloned());
        let target_job_id = job_ids
            .get(e.target_job.as_str())
            .cloned()
            .unwrap_or_default();
        let id = old_edges
            .iter()
            .find(|o| {
                !taken_edges.contains(o.id.as_str())
                    && o.source_trigger_id == source_trigger_id
                    && o.source_job_id == source_job_id
                    && o.target_job_id == target_job_id
            })
            .map(|o| {
                taken_edges.insert(o.id.as_str());
                o.id.clone()
            })
            .unwrap_or_else(new_id);
        edges.push(EdgeDocument {
            id,
            source_trigger_id,
            source_job_id,
            target_job_id,
            condition_type: e.condition_type.clone(),
            condition_expression: e.condition_expression.clone(),
            condition_label: e.condition_label.clone(),
            enabled: e.enabled,
            delete: false,
        });
    }

    // What the server has and the file no longer lists goes, explicitly.
    let live_jobs: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let deleted_jobs: Vec<JobDocument> = old_jobs
        .iter()
        .filter(|o| !live_jobs.contains(o.id.as_str()))
        .map(|o| JobDocument {
            id: o.id.clone(),
            name: String::new(),
            adaptor: String::new(),
            body: String::new(),
            project_credential_id: None,
            delete: true,
        })
        .collect();
    let deleted_triggers: Vec<TriggerDocument> = old_triggers
        .iter()
        .filter(|o| !taken.contains(o.id.as_str()))
        .map(|o| TriggerDocument {
            id: o.id.clone(),
            kind: String::new(),
            enabled: true,
            cron_expression: None,
            custom_path: None,
            delete: true,
        })
        .collect();
    let deleted_edges: Vec<EdgeDocument> = old_edges
        .iter()
        .filter(|o| !taken_edges.contains(o.id.as_str()))
        .map(|o| EdgeDocument {
            id: o.id.clone(),
            source_trigger_id: None,
            source_job_id: None,
            target_job_id: String::new(),
            condition_type: String::new(),
            condition_expression: None,
            condition_label: None,
            enabled: true,
            delete: true,
        })
        .collect();
    jobs.extend(deleted_jobs);
    triggers.extend(deleted_triggers);
    edges.extend(deleted_edges);

    WorkflowDocument {
        id: old.map(|o| o.id.clone()).unwrap_or_else(new_id),
        name: wf.name.clone(),
        delete: false,
        jobs,
        triggers,
        edges,
        lock_version: None,
    }
}

/// OpenFn's key for a named record: its name with spaces as hyphens.
pub fn hyphenate(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join("-")
}

/// A unique key: `base`, else `base-2`, `base-3`, ...
fn unique(base: String, used: &mut HashSet<String>) -> String {
    let mut key = base.clone();
    let mut n = 2;
    while !used.insert(key.clone()) {
        key = format!("{base}-{n}");
        n += 1;
    }
    key
}

/// The project.yaml for a server's project (what `gabbro pull` writes).
pub fn document_to_spec(doc: &ProjectDocument) -> ProjectSpec {
    let mut used = HashSet::new();
    let mut credential_keys: HashMap<&str, String> = HashMap::new();
    let credentials = doc
        .project_credentials
        .iter()
        .map(|c| {
            let key = unique(hyphenate(&c.name), &mut used);
            credential_keys.insert(c.id.as_str(), key.clone());
            (
                key,
                CredentialSpec {
                    name: c.name.clone(),
                    owner: c.owner.clone(),
                },
            )
        })
        .collect();
    let mut wf_keys = HashSet::new();
    let workflows = doc
        .workflows
        .iter()
        .filter(|w| !w.delete)
        .map(|w| {
            let mut keys = HashSet::new();
            let mut job_keys: HashMap<&str, String> = HashMap::new();
            let jobs = w
                .jobs
                .iter()
                .filter(|j| !j.delete)
                .map(|j| {
                    let key = unique(hyphenate(&j.name), &mut keys);
                    job_keys.insert(j.id.as_str(), key.clone());
                    let credential = j
                        .project_credential_id
                        .as_deref()
                        .and_then(|c| credential_keys.get(c).cloned());
                    (
                        key,
                        JobSpec {
                            name: j.name.clone(),
                            adaptor: j.adaptor.clone(),
                            body: j.body.clone(),
                            credential,
                        },
                    )
                })
                .collect();
            let mut trigger_keys: HashMap<&str, String> = HashMap::new();
            let triggers = w
                .triggers
                .iter()
                .filter(|t| !t.delete)
                .map(|t| {
                    let key = unique(t.kind.clone(), &mut keys);
                    trigger_keys.insert(t.id.as_str(), key.clone());
                    (
                        key,
                        TriggerSpec {
                            kind: t.kind.clone(),
                            enabled: t.enabled,
                            cron_expression: t.cron_expression.clone(),
                            custom_path: t.custom_path.clone(),
                        },
                    )
                })
                .collect();
            let mut edge_keys = HashSet::new();
            let edges = w
                .edges
                .iter()
                .filter(|e| !e.delete)
                .map(|e| {
                    let source_trigger = e
                        .source_trigger_id
                        .as_deref()
                        .and_then(|t| trigger_keys.get(t).cloned());
                    let source_job = e
                        .source_job_id
                        .as_deref()
                        .and_then(|j| job_keys.get(j).cloned());
                    let target_job = job_keys
                        .get(e.target_job_id.as_str())
                        .cloned()
                        .unwrap_or_default();
                    let from = source_trigger
                        .clone()
                        .or_else(|| source_job.clone())
                        .unwrap_or_default();
                    let key = unique(format!("{from}->{target_job}"), &mut edge_keys);
                    (
                        key,
                        EdgeSpec {
                            source_trigger,
                            source_job,
                            target_job,
                            condition_type: e.condition_type.clone(),
                            condition_expression: e.condition_expression.clone(),
                            condition_label: e.condition_label.clone(),
                            enabled: e.enabled,
                        },
                    )
                })
                .collect();
            (
                unique(hyphenate(&w.name), &mut wf_keys),
                WorkflowSpec {
                    name: w.name.clone(),
                    jobs,
                    triggers,
                    edges,
                },
            )
        })
        .collect();
    ProjectSpec {
        name: doc.name.clone(),
        description: doc.description.clone(),
        credentials,
        workflows,
    }
}
