//! Group ingest (SQLite's writer, PostgreSQL's ingest batcher): turns every webhook ingest queued in one
//! batch into three multi-row INSERTs (dataclips, work orders, runs) instead
//! of several statements per request. Each statement is a round trip to
//! sqlx's SQLite thread, so this is what lets one fsync'd transaction carry
//! thousands of requests per second. Same rows, same rules as
//! [`crate::ingest`]; if a multi-row insert fails, the group is rolled back
//! and each request is applied alone, so one bad request cannot fail others.

use std::collections::HashMap;

use gabbro_model::{RunOptions, queues};

use crate::ingest::{TriggerTarget, find_existing, ingest_in, load_target};
use crate::{Conn, Ingested, Result, StoreError, WebhookIngest, new_id, now_us};

/// Rows per multi-row INSERT (runs have 10 parameters a row; SQLite allows
/// 32,766 parameters a statement).
const CHUNK: usize = 200;

struct Row {
    dataclip_id: String,
    work_order_id: String,
    run_id: String,
    project_id: String,
    workflow_id: String,
    snapshot_id: String,
    trigger_id: String,
    body: String,
    request: String,
    idempotency_key: Option<String>,
    queue: String,
    options: String,
}

/// Applies a group of ingests inside the writer's open transaction;
/// one result per request, in order.
pub(crate) async fn ingest_group(
    conn: &mut Conn<'_>,
    reqs: Vec<WebhookIngest>,
) -> Vec<Result<Ingested>> {
    let now = now_us();
    if let Err(e) = crate::exec!(conn, "SAVEPOINT ingest_group") {
        return reqs
            .iter()
            .map(|_| Err(StoreError::Commit(e.to_string())))
            .collect();
    }
    // Requests that are not new get their answer now; new ones become rows.
    let mut results: Vec<Option<Result<Ingested>>> = Vec::with_capacity(reqs.len());
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let mut targets: HashMap<String, Option<TriggerTarget>> = HashMap::new();
    let mut keys: HashMap<(String, String), usize> = HashMap::new();
    let c = &mut *conn;
    for (i, req) in reqs.iter().enumerate() {
        results.push(None);
        if let Some(key) = &req.idempotency_key {
            if let Some(&first) = keys.get(&(req.trigger_id.clone(), key.clone())) {
                let r = rows
                    .iter()
                    .find(|(j, _)| *j == first)
                    .map(|(_, r)| Ingested {
                        work_order_id: r.work_order_id.clone(),
                        run_id: r.run_id.clone(),
                        dataclip_id: r.dataclip_id.clone(),
                        workflow_id: r.workflow_id.clone(),
                        existing: true,
                    });
                results[i] = r.map(Ok);
                if results[i].is_some() {
                    continue;
                }
            }
            match find_existing(c, &req.trigger_id, key).await {
                Ok(Some(found)) => {
                    results[i] = Some(Ok(found));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            }
        }
        if !targets.contains_key(&req.trigger_id) {
            match load_target(c, &req.trigger_id).await {
                Ok(t) => {
                    targets.insert(req.trigger_id.clone(), t);
                }
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            }
        }
        let Some(t) = targets.get(&req.trigger_id).and_then(Option::as_ref) else {
            results[i] = Some(Err(StoreError::not_found("trigger", &req.trigger_id)));
            continue;
        };
        let Some(snapshot_id) = t.snapshot_id.clone() else {
            results[i] = Some(Err(StoreError::rejected(
                "workflow",
                "has no snapshot; deploy it first",
            )));
            continue;
        };
        let options = req.options.clone().unwrap_or_else(|| RunOptions {
            save_dataclips: t.retention_policy != "erase_all",
            ..RunOptions::default()
        });
        if let Some(key) = &req.idempotency_key {
            keys.insert((req.trigger_id.clone(), key.clone()), i);
        }
        rows.push((
            i,
            Row {
                dataclip_id: new_id(),
                work_order_id: new_id(),
                run_id: new_id(),
                project_id: t.project_id.clone(),
                workflow_id: t.workflow_id.clone(),
                snapshot_id,
                trigger_id: req.trigger_id.clone(),
                body: req.body.clone(),
                request: req.request.clone(),
                idempotency_key: req.idempotency_key.clone(),
                queue: req
                    .queue
                    .clone()
                    .unwrap_or_else(|| queues::DEFAULT.to_string()),
                options: options.to_json(),
            },
        ));
    }
    // Duplicates inside the group were answered from rows not yet written:
    // fill them in now that every row is known.
    for (i, req) in reqs.iter().enumerate() {
        if results[i].is_none()
            && let Some(key) = &req.idempotency_key
            && let Some(&first) = keys.get(&(req.trigger_id.clone(), key.clone()))
            && first != i
            && let Some((_, r)) = rows.iter().find(|(j, _)| *j == first)
        {
            results[i] = Some(Ok(Ingested {
                work_order_id: r.work_order_id.clone(),
                run_id: r.run_id.clone(),
                dataclip_id: r.dataclip_id.clone(),
                workflow_id: r.workflow_id.clone(),
                existing: true,
            }));
        }
    }
    match insert_rows(c, &rows, now).await {
        Ok(()) => {
            for (i, r) in rows {
                results[i] = Some(Ok(Ingested {
                    work_order_id: r.work_order_id,
                    run_id: r.run_id,
                    dataclip_id: r.dataclip_id,
                    workflow_id: r.workflow_id,
                    existing: false,
                }));
            }
            results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| Err(StoreError::Commit("ingest produced no result".into())))
                })
                .collect()
        }
        Err(e) => {
            // Undo the group and apply each request alone, each in its own
            // savepoint, so only the culprit fails.
            tracing::warn!(error = %e, "group ingest failed; applying requests one by one");
            let _ = crate::exec!(conn, "ROLLBACK TO SAVEPOINT ingest_group");
            let mut out = Vec::with_capacity(reqs.len());
            for req in reqs {
                let _ = crate::exec!(conn, "SAVEPOINT ingest_one");
                let r = ingest_in(conn, req).await;
                if r.is_err() {
                    let _ = crate::exec!(conn, "ROLLBACK TO SAVEPOINT ingest_one");
                }
                out.push(r);
            }
            out
        }
    }
}

fn placeholders(rows: usize, per_row: usize) -> String {
    let mut s = String::with_capacity(rows * per_row * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for k in 0..per_row {
            if k > 0 {
                s.push(',');
            }
            s.push_str(&format!("${}", r * per_row + k + 1));
        }
        s.push(')');
    }
    s
}

/// Binds one chunk's rows onto a multi-row INSERT and runs it, on either
/// database (same SQL, `$N` placeholders).
macro_rules! insert_chunk {
    ($conn:expr, $sql:expr, $chunk:expr, |$q:ident, $r:ident| $bind:expr) => {
        match $conn.reborrow() {
            Conn::Sqlite(c) => {
                let mut $q = sqlx::query::<sqlx::Sqlite>(sqlx::AssertSqlSafe($sql.clone()));
                for (_, $r) in $chunk {
                    $q = $bind;
                }
                $q.execute(c).await.map(|_| ())
            }
            Conn::Postgres(c) => {
                let mut $q = sqlx::query::<sqlx::Postgres>(sqlx::AssertSqlSafe($sql.clone()));
                for (_, $r) in $chunk {
                    $q = $bind;
                }
                $q.execute(c).await.map(|_| ())
            }
        }
    };
}

async fn insert_rows(conn: &mut Conn<'_>, rows: &[(usize, Row)], now: i64) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO dataclips (id, project_id, type, body, request, inserted_at) VALUES {}",
            placeholders(chunk.len(), 6)
        );
        insert_chunk!(conn, sql, chunk, |q, r| q
            .bind(&r.dataclip_id)
            .bind(&r.project_id)
            .bind("http_request")
            .bind(&r.body)
            .bind(&r.request)
            .bind(now))?;
        let sql = format!(
            "INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state,
                                      idempotency_key, last_activity, inserted_at, updated_at) VALUES {}",
            placeholders(chunk.len(), 10)
        );
        insert_chunk!(conn, sql, chunk, |q, r| q
            .bind(&r.work_order_id)
            .bind(&r.workflow_id)
            .bind(&r.snapshot_id)
            .bind(&r.trigger_id)
            .bind(&r.dataclip_id)
            .bind("pending")
            .bind(&r.idempotency_key)
            .bind(now)
            .bind(now)
            .bind(now))?;
        let sql = format!(
            "INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_trigger_id,
                               dataclip_id, state, queue, priority, options, inserted_at) VALUES {}",
            placeholders(chunk.len(), 12)
        );
        insert_chunk!(conn, sql, chunk, |q, r| q
            .bind(&r.run_id)
            .bind(&r.work_order_id)
            .bind(&r.workflow_id)
            .bind(&r.project_id)
            .bind(&r.snapshot_id)
            .bind(&r.trigger_id)
            .bind(&r.dataclip_id)
            .bind("available")
            .bind(&r.queue)
            .bind(1_i32)
            .bind(&r.options)
            .bind(now))?;
    }
    // PostgreSQL: wake every node's workers once per workflow, at commit.
    if conn.backend() == crate::Backend::Postgres {
        let mut seen = std::collections::HashSet::new();
        for (_, r) in rows {
            if seen.insert(r.workflow_id.as_str()) {
                crate::queue::notify_available(conn, &r.workflow_id).await?;
            }
        }
    }
    Ok(())
}
