//! API reads (keyset pages, details) and the janitor's rules, on both
//! databases.

use gabbro_model::QueuePreference;
use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{
    Backend, ClaimRequest, LeaseConfig, NewLogLine, RunComplete, StepStart, StoreError,
    WebhookIngest, WorkOrderFilter, db_now_us, exec, now_us,
};

fn hook(trigger_id: &str) -> WebhookIngest {
    WebhookIngest {
        trigger_id: trigger_id.into(),
        body: r#"{"n":1}"#.into(),
        request: "{}".into(),
        idempotency_key: None,
        options: None,
        queue: None,
    }
}

fn claim(worker: &str) -> ClaimRequest {
    ClaimRequest {
        demand: 1,
        queues: QueuePreference::default(),
        worker_name: None,
        worker_id: worker.into(),
    }
}

async fn reads(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let a = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let b = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let mut wo_a = Vec::new();
    for _ in 0..7 {
        wo_a.push(
            s.ingest_webhook(hook(&a.trigger_id))
                .await
                .unwrap()
                .work_order_id,
        );
    }
    s.ingest_webhook(hook(&b.trigger_id)).await.unwrap();
    assert_eq!(s.list_projects().await.unwrap().len(), 2);
    assert_eq!(
        s.list_workflows(Some(&a.project_id)).await.unwrap().len(),
        1
    );
    assert_eq!(s.list_workflows(None).await.unwrap().len(), 2);

    // Keyset pages of 3 over workflow a's 7 work orders, newest first.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list_work_orders(WorkOrderFilter {
                workflow_id: Some(a.workflow_id.clone()),
                limit: Some(3),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|w| w.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected = wo_a.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    let by_state = s
        .list_work_orders(WorkOrderFilter {
            states: vec!["pending".into()],
            project_id: Some(b.project_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_state.items.len(), 1);
    let none = s
        .list_work_orders(WorkOrderFilter {
            states: vec!["success".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert!(matches!(
        s.list_work_orders(WorkOrderFilter {
            cursor: Some("junk".into()),
            ..Default::default()
        })
        .await
        .unwrap_err(),
        StoreError::Rejected {
            field: "cursor",
            ..
        }
    ));

    // Details: work order with runs, run with steps in order, dataclip, logs.
    let first = s.claim(claim("w")).await.unwrap().remove(0);
    s.run_start(&first.id, Some("w"), None, None).await.unwrap();
    for (i, step) in ["s1", "s2"].iter().enumerate() {
        let job = if first.workflow_id == a.workflow_id {
            &a.job_ids[i]
        } else {
            &b.job_ids[i]
        };
        s.step_start(
            &first.id,
            Some("w"),
            StepStart {
                step_id: step.to_string(),
                job_id: job.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let lines: Vec<NewLogLine> = (0..5)
        .map(|i| NewLogLine {
            message: serde_json::json!([format!("line {i}")]),
            level: "info".into(),
            source: "JOB".into(),
            timestamp: Some(1000 + i),
            step_id: None,
        })
        .collect();
    s.append_logs(&first.id, Some("w"), lines, None)
        .await
        .unwrap();
    let wo = s.work_order(&first.work_order_id).await.unwrap().unwrap();
    assert_eq!(wo.runs.len(), 1);
    assert_eq!(wo.work_order.state, "running");
    let run = s.run(&first.id).await.unwrap().unwrap();
    assert_eq!(
        run.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s1", "s2"]
    );
    assert_eq!(run.run.state, "started");
    let clip = s
        .dataclip(run.run.dataclip_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(clip.body.as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(clip.kind, "http_request");
    assert!(s.wipe_dataclip(&clip.id).await.unwrap());
    assert!(!s.wipe_dataclip(&clip.id).await.unwrap(), "already wiped");
    let wiped = s.dataclip(&clip.id).await.unwrap().unwrap();
    assert!(wiped.body.is_none() && wiped.wiped_at.is_some());
    assert!(s.credential("missing").await.unwrap().is_none());
    let p1 = s.log_lines(&first.id, None, Some(3)).await.unwrap();
    assert_eq!(
        p1.items
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>(),
        ["line 0", "line 1", "line 2"]
    );
    let p2 = s
        .log_lines(&first.id, p1.next_cursor.as_deref(), Some(3))
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 2);
    assert!(p2.next_cursor.is_none());
    assert!(s.run("missing").await.unwrap().is_none());
    assert!(s.work_order("missing").await.unwrap().is_none());
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_reads() {
    reads(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_reads() {
    reads(Backend::Postgres).await;
}

async fn janitor_rules(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(
        s,
        SeedOptions {
            workflow_concurrency: Some(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..4 {
        s.ingest_webhook(hook(&seed.trigger_id)).await.unwrap();
    }
    let never_joined = s.claim(claim("w1")).await.unwrap().remove(0);
    let silent = s.claim(claim("w1")).await.unwrap().remove(0);
    let alive = s.claim(claim("w2")).await.unwrap().remove(0);
    let overran = s.claim(claim("w2")).await.unwrap().remove(0);
    for r in [&silent, &alive, &overran] {
        let w = if r.id == silent.id { "w1" } else { "w2" };
        s.run_joined(&r.id, w, r.claim_epoch).await.unwrap();
        s.run_start(&r.id, Some(w), None, None).await.unwrap();
    }
    // A stale claim (wrong epoch or worker) cannot join.
    assert!(matches!(
        s.run_joined(&alive.id, "w1", alive.claim_epoch)
            .await
            .unwrap_err(),
        StoreError::NotHolder
    ));
    assert!(matches!(
        s.run_joined(&alive.id, "w2", alive.claim_epoch + 1)
            .await
            .unwrap_err(),
        StoreError::NotHolder
    ));

    // Age the runs: everything claimed and last heard 200 s ago, except
    // `alive` (heard now) and `overran`, started 400 s ago with a 60 s timeout.
    let mut c = s.read().await.unwrap();
    let now = db_now_us(&mut c.reborrow()).await.unwrap();
    drop(c);
    let ago = now - 200_000_000;
    let (ids, alive_id, over_id) = (
        vec![
            never_joined.id.clone(),
            silent.id.clone(),
            overran.id.clone(),
        ],
        alive.id.clone(),
        overran.id.clone(),
    );
    s.write(move |mut c| Box::pin(async move {
        for id in ids {
            exec!(c, "UPDATE runs SET claimed_at = $2, last_heard_at = $2 WHERE id = $1", id, ago)?;
        }
        exec!(c, "UPDATE runs SET claimed_at = $2, started_at = $2 WHERE id = $1", alive_id, ago)?;
        exec!(c, "UPDATE runs SET started_at = $2, last_heard_at = $3, options = '{\"run_timeout_ms\":60000}' WHERE id = $1", over_id, now - 400_000_000, now)?;
        Ok(())
    }))
    .await
    .unwrap();

    // The orchestrator just restarted: only the timeout rule may fire.
    let cfg = LeaseConfig::default();
    let fresh = s.janitor_sweep(&cfg, now).await.unwrap();
    assert!(fresh.requeued.is_empty());
    assert_eq!(
        fresh.lost,
        vec![(overran.id.clone(), "LostAfterStart".to_string())]
    );

    // Up for long: the unjoined claim is requeued, the silent run lost.
    let up = s.janitor_sweep(&cfg, now - 1_000_000_000).await.unwrap();
    assert_eq!(up.requeued, vec![never_joined.id.clone()]);
    assert_eq!(
        up.lost,
        vec![(silent.id.clone(), "LostAfterStart".to_string())]
    );
    // The requeued run's old claim is dead; it can be claimed again.
    assert!(matches!(
        s.run_joined(&never_joined.id, "w1", never_joined.claim_epoch)
            .await
            .unwrap_err(),
        StoreError::NotHolder
    ));
    let again = s.claim(claim("w3")).await.unwrap();
    assert_eq!(again[0].id, never_joined.id);
    assert_eq!(again[0].claim_epoch, never_joined.claim_epoch + 1);
    // The silent worker comes back with the truth.
    let st = s
        .run_complete(
            &silent.id,
            Some("w1"),
            RunComplete {
                reason: "success".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(st.as_str(), "success");
    // A second sweep changes nothing.
    let third = s.janitor_sweep(&cfg, now - 1_000_000_000).await.unwrap();
    assert!(third.lost.is_empty() && third.requeued.is_empty());
    let _ = now_us();
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_janitor_rules() {
    janitor_rules(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_janitor_rules() {
    janitor_rules(Backend::Postgres).await;
}
