//! Provisioning: applying a Lightning provisioning document (validated by
//! `gabbro_deploy::document`) to the database, and reading a project back as
//! one. One write transaction; every check that needs the database runs
//! before the first write, so a refused document changes nothing.
//!
//! Snapshots: after the changes, each workflow's jobs, triggers and edges are
//! rendered as its snapshot body ([`snapshot_body`]); a new snapshot (and
//! `lock_version + 1`) is written only when that body differs from the
//! latest one, so deploying the same document twice creates nothing.

use std::collections::{HashMap, HashSet};

use gabbro_deploy::document::{
    CredentialDocument, EdgeDocument, JobDocument, ProjectDocument, TriggerDocument,
    WorkflowDocument,
};
use gabbro_deploy::errors::FieldErrors;
use serde_json::json;

use crate::time::now_us;
use crate::{Conn, Result, exec, fetch_all, fetch_optional, scalar};

/// What applying a document did.
#[derive(Debug)]
pub enum ProvisionOutcome {
    /// Applied; `created` when the project did not exist before.
    Applied {
        project_id: String,
        created: bool,
        new_snapshots: Vec<String>,
    },
    /// Refused; nothing was written.
    Invalid(FieldErrors),
}

#[derive(sqlx::FromRow)]
struct IdOwner {
    id: String,
    owner: String,
}

#[derive(sqlx::FromRow)]
struct ProjectRow {
    id: String,
    name: String,
    description: Option<String>,
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: String,
    name: String,
    lock_version: i64,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    name: String,
    adaptor: String,
    body: String,
    credential_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    id: String,
    #[sqlx(rename = "type")]
    kind: String,
    enabled: bool,
    cron_expression: Option<String>,
    custom_path: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    id: String,
    source_trigger_id: Option<String>,
    source_job_id: Option<String>,
    target_job_id: String,
    condition_type: String,
    condition_expression: Option<String>,
    condition_label: Option<String>,
    enabled: bool,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    id: String,
    name: String,
}

/// Apply `doc` (already validated in itself by
/// `gabbro_deploy::document::parse_document`). `empty_credential_body` is the
/// encrypted form of `{}`, stored for credentials the document names but the
/// project does not have yet (their secrets are set later, in the UI or API).
pub async fn apply(
    conn: &mut Conn<'_>,
    doc: &ProjectDocument,
    empty_credential_body: &str,
) -> Result<ProvisionOutcome> {
    let mut errors = FieldErrors::default();
    let now = now_us();

    // ---- checks against what the database holds (no writes yet) ----
    let existing: Option<ProjectRow> = fetch_optional!(
        conn,
        ProjectRow,
        "SELECT id, name, description FROM projects WHERE id = $1",
        &doc.id
    )?;
    let same_name: Option<String> = scalar!(
        conn,
        String,
        "SELECT id FROM projects WHERE name = $1 AND id <> $2",
        &doc.name,
        &doc.id
    )?;
    if same_name.is_some() {
        errors.add("name", "has already been taken by another project");
    }
    for wf in &doc.workflows {
        let wpath = format!(
            "workflows[{}]",
            if wf.name.is_empty() { &wf.id } else { &wf.name }
        );
        let owner: Option<String> = scalar!(
            conn,
            String,
            "SELECT project_id FROM workflows WHERE id = $1",
            &wf.id
        )?;
        if owner.as_ref().is_some_and(|p| p != &doc.id) {
            errors.add(format!("{wpath}.id"), "belongs to another project");
        }
        if wf.delete {
            continue;
        }
        check_children_owner(
            conn,
            "jobs",
            wf,
            &wf.jobs
                .iter()
                .map(|j| (j.id.as_str(), format!("{wpath}.jobs[{}]", j.name)))
                .collect::<Vec<_>>(),
            &mut errors,
        )
        .await?;
        check_children_owner(
            conn,
            "triggers",
            wf,
            &wf.triggers
                .iter()
                .map(|t| (t.id.as_str(), format!("{wpath}.triggers[{}]", t.kind)))
                .collect::<Vec<_>>(),
            &mut errors,
        )
        .await?;
        check_children_owner(
            conn,
            "edges",
            wf,
            &wf.edges
                .iter()
                .map(|e| (e.id.as_str(), format!("{wpath}.edges[{}]", e.id)))
                .collect::<Vec<_>>(),
            &mut errors,
        )
        .await?;
        for t in wf.triggers.iter().filter(|t| !t.delete) {
            if let Some(p) = &t.custom_path {
                let taken: Option<String> = scalar!(
                    conn,
                    String,
                    "SELECT id FROM triggers WHERE custom_path = $1 AND id <> $2",
                    p,
                    &t.id
                )?;
                if taken.is_some() {
                    errors.add(
                        format!("{wpath}.triggers[{}].custom_path", t.kind),
                        format!("{p:?} is already used by another webhook"),
                    );
                }
                let is_trigger_id: Option<String> = scalar!(
                    conn,
                    String,
                    "SELECT id FROM triggers WHERE id = $1 AND id <> $2",
                    p,
                    &t.id
                )?;
                if is_trigger_id.is_some() {
                    errors.add(
                        format!("{wpath}.triggers[{}].custom_path", t.kind),
                        "is another trigger's id",
                    );
                }
            }
        }
    }
    if !errors.is_empty() {
        return Ok(ProvisionOutcome::Invalid(errors));
    }

    // ---- the project ----
    let created = existing.is_none();
    match &existing {
        None => {
            exec!(
                conn,
                "INSERT INTO projects (id, name, description, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                &doc.id,
                &doc.name,
                &doc.description,
                now
            )?;
        }
        Some(p) if p.name != doc.name || p.description != doc.description => {
            exec!(
                conn,
                "UPDATE projects SET name = $1, description = $2, updated_at = $3 WHERE id = $4",
                &doc.name,
                &doc.description,
                now,
                &doc.id
            )?;
        }
        Some(_) => {}
    }

    // ---- credentials: by name; the document's id maps onto an existing one ----
    let mut credential_map: HashMap<String, String> = HashMap::new();
    for c in &doc.project_credentials {
        let found: Option<String> = scalar!(
            conn,
            String,
            "SELECT id FROM credentials WHERE project_id = $1 AND name = $2",
            &doc.id,
            &c.name
        )?;
        let id = match found {
            Some(id) => id,
            None => {
                exec!(
                    conn,
                    "INSERT INTO credentials (id, project_id, name, schema, body_encrypted, inserted_at, updated_at) VALUES ($1, $2, $3, 'raw', $4, $5, $5)",
                    &c.id,
                    &doc.id,
                    &c.name,
                    empty_credential_body,
                    now
                )?;
                c.id.clone()
            }
        };
        credential_map.insert(c.id.clone(), id);
    }

    // ---- workflows ----
    let mut new_snapshots = Vec::new();
    for wf in &doc.workflows {
        if wf.delete {
            soft_delete_workflow(conn, &wf.id, now).await?;
            continue;
        }
        let row: Option<WorkflowRow> = fetch_optional!(
            conn,
            WorkflowRow,
            "SELECT id, name, CAST(lock_version AS BIGINT) AS lock_version FROM workflows WHERE id = $1",
            &wf.id
        )?;
        let lock_version = match row {
            None => {
                exec!(
                    conn,
                    "INSERT INTO workflows (id, project_id, name, lock_version, inserted_at, updated_at) VALUES ($1, $2, $3, 0, $4, $4)",
                    &wf.id,
                    &doc.id,
                    &wf.name,
                    now
                )?;
                0
            }
            Some(r) => {
                if r.name != wf.name {
                    exec!(
                        conn,
                        "UPDATE workflows SET name = $1, updated_at = $2 WHERE id = $3",
                        &wf.name,
                        now,
                        &wf.id
                    )?;
                }
                r.lock_version
            }
        };
        apply_children(conn, wf, &credential_map, now).await?;
        if let Some(snapshot_id) = snapshot_if_changed(conn, &wf.id, lock_version, now).await? {
            new_snapshots.push(snapshot_id);
        }
    }
    Ok(ProvisionOutcome::Applied {
        project_id: doc.id.clone(),
        created,
        new_snapshots,
    })
}

async fn check_children_owner(
    conn: &mut Conn<'_>,
    table: &'static str,
    wf: &WorkflowDocument,
    ids: &[(&str, String)],
    errors: &mut FieldErrors,
) -> Result<()> {
    let sql = match table {
        "jobs" => "SELECT id, workflow_id AS owner FROM jobs WHERE id = $1",
        "triggers" => "SELECT id, workflow_id AS owner FROM triggers WHERE id = $1",
        _ => "SELECT id, workflow_id AS owner FROM edges WHERE id = $1",
    };
    for (id, path) in ids {
        let row: Option<IdOwner> = fetch_optional!(conn, IdOwner, sql, *id)?;
        if let Some(r) = row
            && r.owner != wf.id
        {
            errors.add(
                format!("{path}.id"),
                format!("{} belongs to another workflow", r.id),
            );
        }
    }
    Ok(())
}

async fn soft_delete_workflow(conn: &mut Conn<'_>, id: &str, now: i64) -> Result<()> {
    // The name is freed (UNIQUE per project) and the webhooks stop answering.
    let renamed = format!("~deleted~{id}");
    exec!(
        conn,
        "UPDATE workflows SET deleted_at = $1, updated_at = $1, name = $2 WHERE id = $3 AND deleted_at IS NULL",
        now,
        &renamed,
        id
    )?;
    exec!(
        conn,
        "UPDATE triggers SET enabled = FALSE, custom_path = NULL, updated_at = $1 WHERE workflow_id = $2",
        now,
        id
    )?;
    Ok(())
}

async fn apply_children(
    conn: &mut Conn<'_>,
    wf: &WorkflowDocument,
    credentials: &HashMap<String, String>,
    now: i64,
) -> Result<()> {
    let live_jobs: HashSet<&str> = wf
        .jobs
        .iter()
        .filter(|j| !j.delete)
        .map(|j| j.id.as_str())
        .collect();
    let live_triggers: HashSet<&str> = wf
        .triggers
        .iter()
        .filter(|t| !t.delete)
        .map(|t| t.id.as_str())
        .collect();
    let live_edges: HashSet<&str> = wf
        .edges
        .iter()
        .filter(|e| !e.delete)
        .map(|e| e.id.as_str())
        .collect();

    // Remove first (edges before what they point at). The document is the
    // whole workflow: what it does not list goes, `delete: true` or not.
    let edges: Vec<String> = crate::scalars!(
        conn,
        String,
        "SELECT id FROM edges WHERE workflow_id = $1",
        &wf.id
    )?;
    for id in edges.iter().filter(|id| !live_edges.contains(id.as_str())) {
        exec!(conn, "DELETE FROM edges WHERE id = $1", id)?;
    }
    let triggers: Vec<String> = crate::scalars!(
        conn,
        String,
        "SELECT id FROM triggers WHERE workflow_id = $1",
        &wf.id
    )?;
    for id in triggers
        .iter()
        .filter(|id| !live_triggers.contains(id.as_str()))
    {
        // Past work orders keep their snapshot; only the link goes.
        exec!(
            conn,
            "UPDATE work_orders SET trigger_id = NULL WHERE trigger_id = $1",
            id
        )?;
        exec!(conn, "DELETE FROM cron_fires WHERE trigger_id = $1", id)?;
        exec!(conn, "DELETE FROM triggers WHERE id = $1", id)?;
    }
    let jobs: Vec<String> = crate::scalars!(
        conn,
        String,
        "SELECT id FROM jobs WHERE workflow_id = $1",
        &wf.id
    )?;
    for id in jobs.iter().filter(|id| !live_jobs.contains(id.as_str())) {
        exec!(
            conn,
            "DELETE FROM edges WHERE source_job_id = $1 OR target_job_id = $1",
            id
        )?;
        exec!(conn, "DELETE FROM jobs WHERE id = $1", id)?;
    }

    // Jobs may swap names within one deploy; park the names of changed jobs
    // first so UNIQUE (workflow_id, name) never trips mid-way.
    for j in wf.jobs.iter().filter(|j| !j.delete) {
        exec!(
            conn,
            "UPDATE jobs SET name = $1 WHERE id = $2 AND name <> $3",
            format!("~{}", j.id),
            &j.id,
            &j.name
        )?;
    }
    // `now + i`: new records keep the document's order (reads sort by
    // inserted_at), so a pull writes them back in the order deployed.
    for (i, j) in wf.jobs.iter().filter(|j| !j.delete).enumerate() {
        upsert_job(conn, &wf.id, j, credentials, now + i as i64).await?;
    }
    for (i, t) in wf.triggers.iter().filter(|t| !t.delete).enumerate() {
        upsert_trigger(conn, &wf.id, t, now + i as i64).await?;
    }
    for (i, e) in wf.edges.iter().filter(|e| !e.delete).enumerate() {
        upsert_edge(conn, &wf.id, e, now + i as i64).await?;
    }
    Ok(())
}

async fn upsert_job(
    conn: &mut Conn<'_>,
    workflow_id: &str,
    j: &JobDocument,
    credentials: &HashMap<String, String>,
    now: i64,
) -> Result<()> {
    let adaptor = if j.adaptor.is_empty() {
        gabbro_deploy::document::DEFAULT_ADAPTOR
    } else {
        j.adaptor.as_str()
    };
    let credential_id = j
        .project_credential_id
        .as_ref()
        .and_then(|c| credentials.get(c).cloned());
    let old: Option<JobRow> = fetch_optional!(
        conn,
        JobRow,
        "SELECT id, name, adaptor, body, credential_id FROM jobs WHERE id = $1",
        &j.id
    )?;
    match old {
        None => {
            exec!(
                conn,
                "INSERT INTO jobs (id, workflow_id, name, body, adaptor, credential_id, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                &j.id,
                workflow_id,
                &j.name,
                &j.body,
                adaptor,
                &credential_id,
                now
            )?;
        }
        Some(o) => {
            if o.name != j.name
                || o.adaptor != adaptor
                || o.body != j.body
                || o.credential_id != credential_id
            {
                exec!(
                    conn,
                    "UPDATE jobs SET name = $1, body = $2, adaptor = $3, credential_id = $4, updated_at = $5 WHERE id = $6",
                    &j.name,
                    &j.body,
                    adaptor,
                    &credential_id,
                    now,
                    &j.id
                )?;
            }
        }
    }
    Ok(())
}

async fn upsert_trigger(
    conn: &mut Conn<'_>,
    workflow_id: &str,
    t: &TriggerDocument,
    now: i64,
) -> Result<()> {
    let old: Option<TriggerRow> = fetch_optional!(
        conn,
        TriggerRow,
        "SELECT id, type, enabled, cron_expression, custom_path FROM triggers WHERE id = $1",
        &t.id
    )?;
    match old {
        None => {
            exec!(
                conn,
                "INSERT INTO triggers (id, workflow_id, type, enabled, custom_path, cron_expression, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                &t.id,
                workflow_id,
                &t.kind,
                t.enabled,
                &t.custom_path,
                &t.cron_expression,
                now
            )?;
        }
        Some(o) => {
            if o.kind != t.kind
                || o.enabled != t.enabled
                || o.cron_expression != t.cron_expression
                || o.custom_path != t.custom_path
            {
                exec!(
                    conn,
                    "UPDATE triggers SET type = $1, enabled = $2, custom_path = $3, cron_expression = $4, updated_at = $5 WHERE id = $6",
                    &t.kind,
                    t.enabled,
                    &t.custom_path,
                    &t.cron_expression,
                    now,
                    &t.id
                )?;
            }
        }
    }
    Ok(())
}

async fn upsert_edge(
    conn: &mut Conn<'_>,
    workflow_id: &str,
    e: &EdgeDocument,
    now: i64,
) -> Result<()> {
    let condition_type = if e.condition_type.is_empty() {
        "always"
    } else {
        e.condition_type.as_str()
    };
    let old: Option<EdgeRow> = fetch_optional!(
        conn,
        EdgeRow,
        "SELECT id, source_trigger_id, source_job_id, target_job_id, condition_type, condition_expression, condition_label, enabled FROM edges WHERE id = $1",
        &e.id
    )?;
    match old {
        None => {
            exec!(
                conn,
                "INSERT INTO edges (id, workflow_id, source_job_id, source_trigger_id, target_job_id, condition_type, condition_expression, condition_label, enabled, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                &e.id,
                workflow_id,
                &e.source_job_id,
                &e.source_trigger_id,
                &e.target_job_id,
                condition_type,
                &e.condition_expression,
                &e.condition_label,
                e.enabled,
                now
            )?;
        }
        Some(o) => {
            let same = o.source_trigger_id == e.source_trigger_id
                && o.source_job_id == e.source_job_id
                && o.target_job_id == e.target_job_id
                && o.condition_type == condition_type
                && o.condition_expression == e.condition_expression
                && o.condition_label == e.condition_label
                && o.enabled == e.enabled;
            if !same {
                exec!(
                    conn,
                    "UPDATE edges SET source_job_id = $1, source_trigger_id = $2, target_job_id = $3, condition_type = $4, condition_expression = $5, condition_label = $6, enabled = $7, updated_at = $8 WHERE id = $9",
                    &e.source_job_id,
                    &e.source_trigger_id,
                    &e.target_job_id,
                    condition_type,
                    &e.condition_expression,
                    &e.condition_label,
                    e.enabled,
                    now,
                    &e.id
                )?;
            }
        }
    }
    Ok(())
}

/// A workflow's jobs, triggers and edges as stored now, in insertion order.
async fn load_children(
    conn: &mut Conn<'_>,
    workflow_id: &str,
) -> Result<(Vec<JobRow>, Vec<TriggerRow>, Vec<EdgeRow>)> {
    let jobs = fetch_all!(
        conn,
        JobRow,
        "SELECT id, name, adaptor, body, credential_id FROM jobs WHERE workflow_id = $1 ORDER BY inserted_at, id",
        workflow_id
    )?;
    let triggers = fetch_all!(
        conn,
        TriggerRow,
        "SELECT id, type, enabled, cron_expression, custom_path FROM triggers WHERE workflow_id = $1 ORDER BY inserted_at, id",
        workflow_id
    )?;
    let edges = fetch_all!(
        conn,
        EdgeRow,
        "SELECT id, source_trigger_id, source_job_id, target_job_id, condition_type, condition_expression, condition_label, enabled FROM edges WHERE workflow_id = $1 ORDER BY inserted_at, id",
        workflow_id
    )?;
    Ok((jobs, triggers, edges))
}

/// The snapshot body of a workflow: Lightning's snapshot JSON
/// (`{id, name, lock_version, jobs[], triggers[], edges[]}`), jobs with
/// `{id, name, adaptor, body, project_credential_id}`, triggers with
/// `{id, type, enabled, cron_expression, custom_path}`, edges with
/// `{id, source_trigger_id, source_job_id, target_job_id, condition_type,
/// condition_expression, condition_label, enabled}`.
pub async fn snapshot_body(
    conn: &mut Conn<'_>,
    workflow_id: &str,
    lock_version: i64,
) -> Result<serde_json::Value> {
    let name: Option<String> = scalar!(
        conn,
        String,
        "SELECT name FROM workflows WHERE id = $1",
        workflow_id
    )?;
    let (jobs, triggers, edges) = load_children(conn, workflow_id).await?;
    Ok(json!({
        "id": workflow_id,
        "name": name,
        "lock_version": lock_version,
        "jobs": jobs.iter().map(|j| json!({
            "id": j.id, "name": j.name, "adaptor": j.adaptor, "body": j.body,
            "project_credential_id": j.credential_id,
        })).collect::<Vec<_>>(),
        "triggers": triggers.iter().map(|t| json!({
            "id": t.id, "type": t.kind, "enabled": t.enabled,
            "cron_expression": t.cron_expression, "custom_path": t.custom_path,
        })).collect::<Vec<_>>(),
        "edges": edges.iter().map(|e| json!({
            "id": e.id, "source_trigger_id": e.source_trigger_id, "source_job_id": e.source_job_id,
            "target_job_id": e.target_job_id, "condition_type": e.condition_type,
            "condition_expression": e.condition_expression, "condition_label": e.condition_label,
            "enabled": e.enabled,
        })).collect::<Vec<_>>(),
    }))
}

/// Write a new snapshot of the workflow if its content differs from the
/// latest one (the `lock_version` inside the body is left out of the
/// comparison). Returns the new snapshot's id.
pub async fn snapshot_if_changed(
    conn: &mut Conn<'_>,
    workflow_id: &str,
    lock_version: i64,
    now: i64,
) -> Result<Option<String>> {
    let latest: Option<String> = scalar!(
        conn,
        String,
        "SELECT body FROM workflow_snapshots WHERE workflow_id = $1 ORDER BY lock_version DESC LIMIT 1",
        workflow_id
    )?;
    let mut current = snapshot_body(conn, workflow_id, lock_version).await?;
    if let Some(latest) = latest {
        let mut old: serde_json::Value = serde_json::from_str(&latest)?;
        old["lock_version"] = json!(null);
        current["lock_version"] = json!(null);
        if old == current {
            return Ok(None);
        }
    }
    let next = lock_version + 1;
    current["lock_version"] = json!(next);
    let id = uuid::Uuid::now_v7().to_string();
    exec!(
        conn,
        "INSERT INTO workflow_snapshots (id, workflow_id, lock_version, body, inserted_at) VALUES ($1, $2, $3, $4, $5)",
        &id,
        workflow_id,
        next,
        current.to_string(),
        now
    )?;
    exec!(
        conn,
        "UPDATE workflows SET lock_version = $1, updated_at = $2 WHERE id = $3",
        next,
        now,
        workflow_id
    )?;
    Ok(Some(id))
}

/// A project as a provisioning document (what `GET /api/provision/<id>`
/// answers); None if there is no such project.
pub async fn load(conn: &mut Conn<'_>, project_id: &str) -> Result<Option<ProjectDocument>> {
    let Some(p) = fetch_optional!(
        conn,
        ProjectRow,
        "SELECT id, name, description FROM projects WHERE id = $1",
        project_id
    )?
    else {
        return Ok(None);
    };
    let credentials = fetch_all!(
        conn,
        CredentialRow,
        "SELECT id, name FROM credentials WHERE project_id = $1 ORDER BY inserted_at, id",
        project_id
    )?;
    let workflows = fetch_all!(
        conn,
        WorkflowRow,
        "SELECT id, name, CAST(lock_version AS BIGINT) AS lock_version FROM workflows WHERE project_id = $1 AND deleted_at IS NULL ORDER BY inserted_at, id",
        project_id
    )?;
    let mut docs = Vec::new();
    for w in workflows {
        let (jobs, triggers, edges) = load_children(conn, &w.id).await?;
        docs.push(WorkflowDocument {
            id: w.id,
            name: w.name,
            delete: false,
            lock_version: Some(w.lock_version),
            jobs: jobs
                .into_iter()
                .map(|j| JobDocument {
                    id: j.id,
                    name: j.name,
                    adaptor: j.adaptor,
                    body: j.body,
                    project_credential_id: j.credential_id,
                    delete: false,
                })
                .collect(),
            triggers: triggers
                .into_iter()
                .map(|t| TriggerDocument {
                    id: t.id,
                    kind: t.kind,
                    enabled: t.enabled,
                    cron_expression: t.cron_expression,
                    custom_path: t.custom_path,
                    delete: false,
                })
                .collect(),
            edges: edges
                .into_iter()
                .map(|e| EdgeDocument {
                    id: e.id,
                    source_trigger_id: e.source_trigger_id,
                    source_job_id: e.source_job_id,
                    target_job_id: e.target_job_id,
                    condition_type: e.condition_type,
                    condition_expression: e.condition_expression,
                    condition_label: e.condition_label,
                    enabled: e.enabled,
                    delete: false,
                })
                .collect(),
        });
    }
    Ok(Some(ProjectDocument {
        id: p.id,
        name: p.name,
        description: p.description,
        workflows: docs,
        project_credentials: credentials
            .into_iter()
            .map(|c| CredentialDocument {
                id: c.id,
                name: c.name,
                owner: None,
            })
            .collect(),
    }))
}
