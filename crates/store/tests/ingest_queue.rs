//! Webhook ingest and the queue's claim, on both databases.

use std::collections::HashSet;

use gabbro_model::QueuePreference;
use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{Backend, ClaimRequest, Store, StoreError, WebhookIngest, scalar};

fn hook(trigger_id: &str, body: &str, key: Option<&str>) -> WebhookIngest {
    WebhookIngest {
        trigger_id: trigger_id.to_string(),
        body: body.to_string(),
        request: r#"{"method":"POST","path":"/i/x","query_params":{},"headers":{}}"#.to_string(),
        idempotency_key: key.map(str::to_string),
        options: None,
        queue: None,
    }
}

fn claim_req(worker: &str, demand: usize) -> ClaimRequest {
    ClaimRequest {
        demand,
        queues: QueuePreference::default(),
        worker_name: Some(worker.to_string()),
        worker_id: worker.to_string(),
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    let mut c = store.read().await.unwrap();
    scalar!(c, i64, sql).unwrap().unwrap_or(0)
}

async fn ingest_creates_everything(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    // Body passes through byte for byte (spacing and key order kept).
    let body = r#"{ "b": 1,  "a": [1,2] }"#;
    let got = s
        .ingest_webhook(hook(&seed.trigger_id, body, None))
        .await
        .unwrap();
    assert!(!got.existing);
    let mut c = s.read().await.unwrap();
    let stored: Option<String> = scalar!(
        c,
        String,
        "SELECT body FROM dataclips WHERE id = $1",
        &got.dataclip_id
    )
    .unwrap();
    assert_eq!(stored.as_deref(), Some(body));
    let state: Option<String> = scalar!(
        c,
        String,
        "SELECT state FROM runs WHERE id = $1",
        &got.run_id
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("available"));
    let wo: Option<String> = scalar!(
        c,
        String,
        "SELECT state FROM work_orders WHERE id = $1",
        &got.work_order_id
    )
    .unwrap();
    assert_eq!(wo.as_deref(), Some("pending"));
    let snap: Option<String> = scalar!(
        c,
        String,
        "SELECT snapshot_id FROM runs WHERE id = $1",
        &got.run_id
    )
    .unwrap();
    assert_eq!(snap, Some(seed.snapshot_id.clone()));
    drop(c);

    // Idempotency: the same key returns the same work order, creates nothing.
    let k1 = s
        .ingest_webhook(hook(&seed.trigger_id, "{}", Some("k")))
        .await
        .unwrap();
    let k2 = s
        .ingest_webhook(hook(&seed.trigger_id, "{}", Some("k")))
        .await
        .unwrap();
    assert!(!k1.existing && k2.existing);
    assert_eq!(k1.work_order_id, k2.work_order_id);
    assert_eq!(k1.run_id, k2.run_id);
    assert_eq!(count(s, "SELECT count(*) FROM work_orders").await, 2);

    // Concurrent repeats of one key still make one work order.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (st, t) = (s.clone(), seed.trigger_id.clone());
        tasks.push(tokio::spawn(async move {
            st.ingest_webhook(hook(&t, "{}", Some("race"))).await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().unwrap().work_order_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(count(s, "SELECT count(*) FROM work_orders").await, 3);

    let err = s
        .ingest_webhook(hook("nope", "{}", None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_ingest_creates_everything() {
    ingest_creates_everything(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_ingest_creates_everything() {
    ingest_creates_everything(Backend::Postgres).await;
}

async fn claim_order_and_limits(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let limited = seed_workflow(
        s,
        SeedOptions {
            workflow_concurrency: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let free = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let l1 = s
        .ingest_webhook(hook(&limited.trigger_id, "{}", None))
        .await
        .unwrap();
    let l2 = s
        .ingest_webhook(hook(&limited.trigger_id, "{}", None))
        .await
        .unwrap();
    let f1 = s
        .ingest_webhook(hook(&free.trigger_id, "{}", None))
        .await
        .unwrap();
    let mut manual = hook(&free.trigger_id, "{}", None);
    manual.queue = Some("manual".into());
    let m1 = s.ingest_webhook(manual).await.unwrap();

    // Manual first (queue preference), then by age; the limited workflow
    // gives only one run while it has one active.
    let got = s.claim(claim_req("w1", 10)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [m1.run_id.as_str(), l1.run_id.as_str(), f1.run_id.as_str()]
    );
    assert!(got.iter().all(|r| r.claim_epoch == 1));
    assert!(
        s.claim(claim_req("w1", 10)).await.unwrap().is_empty(),
        "limit holds l2 back"
    );

    // Releasing l1's claim frees the slot; the claim epoch guards the release.
    assert_eq!(
        s.release_claims(vec![(l1.run_id.clone(), 99)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.release_claims(vec![(l1.run_id.clone(), 1)])
            .await
            .unwrap(),
        1
    );
    let again = s.claim(claim_req("w2", 10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, l1.run_id, "oldest first");
    assert_eq!(again[0].claim_epoch, 2);
    let _ = l2;

    // A filtering claimer (no `*`) only takes its queues.
    let fl = s
        .claim(ClaimRequest {
            queues: QueuePreference::new(["fast_lane"]),
            ..claim_req("w3", 5)
        })
        .await
        .unwrap();
    assert!(fl.is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_claim_order_and_limits() {
    claim_order_and_limits(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_claim_order_and_limits() {
    claim_order_and_limits(Backend::Postgres).await;
}

async fn racing_claimers_never_share_a_run(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let project = seed_workflow(
        s,
        SeedOptions {
            project_concurrency: Some(7),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let limited = seed_workflow(
        s,
        SeedOptions {
            project_id: Some(project.project_id.clone()),
            workflow_concurrency: Some(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let free = seed_workflow(s, SeedOptions::default()).await.unwrap();
    const N: usize = 150;
    for i in 0..N {
        let t = [&project.trigger_id, &limited.trigger_id, &free.trigger_id][i % 3];
        s.ingest_webhook(hook(t, "{}", None)).await.unwrap();
    }
    // 16 claimers race, each claiming 1-3 at a time, until nothing is left.
    let mut tasks = Vec::new();
    for w in 0..16 {
        let st = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let got = st
                    .claim(claim_req(&format!("w{w}"), 1 + w % 3))
                    .await
                    .unwrap();
                if got.is_empty() {
                    empty += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                mine.extend(got.into_iter().map(|r| r.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a run was claimed twice");
    // The limits cap what can be active: the project's 7 covers both its
    // workflows, the limited one has 3 of its own; the free workflow is
    // uncapped (50).
    let claimed_project = count(s, "SELECT count(*) FROM runs WHERE state = 'claimed' AND workflow_id IN (SELECT id FROM workflows WHERE concurrency IS NULL) AND project_id IN (SELECT id FROM projects WHERE concurrency IS NOT NULL)").await;
    let claimed_limited = count(s, "SELECT count(*) FROM runs WHERE state = 'claimed' AND workflow_id IN (SELECT id FROM workflows WHERE concurrency = 3)").await;
    assert!(claimed_limited <= 3, "workflow limit: {claimed_limited}");
    assert_eq!(claimed_project + claimed_limited, 7, "project limit");
    assert_eq!(
        count(s, "SELECT count(*) FROM runs WHERE state = 'claimed'").await as usize,
        all.len()
    );
    assert_eq!(all.len(), 7 + N / 3);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_claimers_never_share_a_run() {
    racing_claimers_never_share_a_run(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_claimers_never_share_a_run() {
    racing_claimers_never_share_a_run(Backend::Postgres).await;
}

async fn active_in(store: &Store, scope: String) -> i64 {
    let mut c = store.read().await.unwrap();
    scalar!(
        c,
        i32,
        "SELECT active FROM concurrency_counters WHERE scope = $1",
        &scope
    )
    .unwrap()
    .map_or(-1, i64::from)
}

/// Runs without a limit in their scope take no slot (no counter row is
/// touched, so claims and finishes do not queue on it); a limit applies to
/// the runs claimed after it was set, and the counters stay exact while
/// runs of both kinds finish.
async fn unlimited_runs_take_no_slot(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let w_scope = format!("w:{}", seed.workflow_id);
    let mut runs = Vec::new();
    for _ in 0..4 {
        let got = s
            .ingest_webhook(hook(&seed.trigger_id, "{}", None))
            .await
            .unwrap();
        runs.push(got.run_id);
    }
    let early = s.claim(claim_req("w1", 2)).await.unwrap();
    assert_eq!(early.len(), 2);
    assert_eq!(active_in(s, w_scope.clone()).await, -1, "no counter row");

    // A limit of 1 while two unlimited runs are active: they do not count
    // towards it, the next claim takes the one slot, the last waits.
    let wf = seed.workflow_id.clone();
    s.write(move |mut c| {
        Box::pin(async move {
            gabbro_store::exec!(c, "UPDATE workflows SET concurrency = 1 WHERE id = $1", &wf)?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let third = s.claim(claim_req("w1", 5)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(active_in(s, w_scope.clone()).await, 1);
    assert!(s.claim(claim_req("w1", 5)).await.unwrap().is_empty());

    // The unlimited runs finishing frees nothing (they held nothing).
    for r in &early {
        s.release_claims(vec![(r.id.clone(), r.claim_epoch)])
            .await
            .unwrap();
    }
    assert_eq!(active_in(s, w_scope.clone()).await, 1);
    // The limited one finishing frees its slot, once.
    s.run_start(&third[0].id, None, None, None).await.unwrap();
    let done = s
        .run_complete(
            &third[0].id,
            None,
            gabbro_store::RunComplete {
                reason: "success".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(active_in(s, w_scope.clone()).await, 0);
    assert_eq!(s.claim(claim_req("w1", 5)).await.unwrap().len(), 1);
    assert_eq!(active_in(s, w_scope).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_unlimited_runs_take_no_slot() {
    unlimited_runs_take_no_slot(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_unlimited_runs_take_no_slot() {
    unlimited_runs_take_no_slot(Backend::Postgres).await;
}

/// A claim of many runs takes them in claim order across workflows (by
/// age, manual queue first), however the workflows' runs interleave.
async fn many_runs_claimed_in_order(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let a = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let b = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let mut order = Vec::new();
    for trigger in [&a, &a, &b, &a, &b, &b, &a] {
        let got = s
            .ingest_webhook(hook(&trigger.trigger_id, "{}", None))
            .await
            .unwrap();
        order.push(got.run_id);
    }
    let mut manual = hook(&b.trigger_id, "{}", None);
    manual.queue = Some("manual".into());
    let m = s.ingest_webhook(manual).await.unwrap().run_id;

    let ids =
        |runs: Vec<gabbro_store::ClaimedRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let first = ids(s.claim(claim_req("w1", 4)).await.unwrap());
    assert_eq!(
        first,
        [&m, &order[0], &order[1], &order[2]].map(String::clone)
    );
    let rest = ids(s.claim(claim_req("w1", 10)).await.unwrap());
    assert_eq!(rest, order[3..]);
    assert!(s.claim(claim_req("w1", 10)).await.unwrap().is_empty());
    assert_eq!(
        count(s, "SELECT count(*) FROM runs WHERE state = 'claimed' AND worker_id = 'w1' AND claim_epoch = 1").await,
        8
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_many_runs_claimed_in_order() {
    many_runs_claimed_in_order(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_many_runs_claimed_in_order() {
    many_runs_claimed_in_order(Backend::Postgres).await;
}
