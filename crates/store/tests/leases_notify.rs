//! Heartbeats keep the lease of the runs they name (only those: a restarted
//! worker keeps its id); a rejoining worker's unlisted claims go back to
//! `available`; PostgreSQL wakes listeners when runs become available.

use gabbro_model::QueuePreference;
use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{
    Backend, ClaimRequest, Db, LeaseConfig, RUN_AVAILABLE_CHANNEL, WebhookIngest, db_now_us,
};

fn hook(trigger_id: &str) -> WebhookIngest {
    WebhookIngest {
        trigger_id: trigger_id.into(),
        body: "{}".into(),
        request: "{}".into(),
        idempotency_key: None,
        options: None,
        queue: None,
    }
}

async fn heartbeat_keeps_the_lease(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    s.ingest_webhook(hook(&seed.trigger_id)).await.unwrap();
    let run = s
        .claim(ClaimRequest {
            demand: 1,
            queues: QueuePreference::default(),
            worker_name: None,
            worker_id: "w".into(),
        })
        .await
        .unwrap()
        .remove(0);
    s.run_joined(&run.id, "w", run.claim_epoch).await.unwrap();
    s.run_start(&run.id, Some("w"), None, None).await.unwrap();
    // A lease of 50 ms: silent for 120 ms the run would be lost, but the
    // worker's heartbeat renews it.
    let cfg = LeaseConfig {
        run_lease_us: 50_000,
        ..LeaseConfig::default()
    };
    let mut c = s.read().await.unwrap();
    let up_since = db_now_us(&mut c.reborrow()).await.unwrap() - 10_000_000;
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert_eq!(s.heartbeat("w", vec![run.id.clone()]).await.unwrap(), 1);
    assert!(
        s.janitor_sweep(&cfg, up_since)
            .await
            .unwrap()
            .lost
            .is_empty()
    );
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    let report = s.janitor_sweep(&cfg, up_since).await.unwrap();
    assert_eq!(
        report.lost.len(),
        1,
        "silent past the lease after the heartbeats stopped"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_heartbeat_keeps_the_lease() {
    heartbeat_keeps_the_lease(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_heartbeat_keeps_the_lease() {
    heartbeat_keeps_the_lease(Backend::Postgres).await;
}

/// One run of a fresh workflow, claimed by `worker`.
async fn claimed_by(s: &gabbro_store::Store, worker: &str) -> gabbro_store::ClaimedRun {
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    s.ingest_webhook(hook(&seed.trigger_id)).await.unwrap();
    s.claim(ClaimRequest {
        demand: 1,
        queues: QueuePreference::default(),
        worker_name: None,
        worker_id: worker.into(),
    })
    .await
    .unwrap()
    .remove(0)
}

async fn started_by(s: &gabbro_store::Store, worker: &str) -> gabbro_store::ClaimedRun {
    let run = claimed_by(s, worker).await;
    s.run_joined(&run.id, worker, run.claim_epoch)
        .await
        .unwrap();
    s.run_start(&run.id, Some(worker), None, None)
        .await
        .unwrap();
    run
}

async fn state_of(s: &gabbro_store::Store, id: &str) -> String {
    let mut c = s.read().await.unwrap();
    let mut c = c.reborrow();
    gabbro_store::scalar!(c, String, "SELECT state FROM runs WHERE id = $1", id)
        .unwrap()
        .unwrap()
}

async fn heartbeat_renews_only_the_named_runs(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    // `w` died holding `x`; its restarted life (same id) holds only `y`.
    let x = started_by(s, "w").await;
    let y = started_by(s, "w").await;
    let cfg = LeaseConfig {
        run_lease_us: 300_000,
        ..LeaseConfig::default()
    };
    let mut c = s.read().await.unwrap();
    let up_since = db_now_us(&mut c.reborrow()).await.unwrap() - 10_000_000;
    drop(c);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        s.heartbeat("w", vec![y.id.clone()]).await.unwrap(),
        1,
        "only the run the connection holds"
    );
    assert_eq!(
        s.heartbeat("other", vec![x.id.clone()]).await.unwrap(),
        0,
        "a worker that does not hold a run cannot renew it"
    );
    assert_eq!(s.heartbeat("w", vec![]).await.unwrap(), 0);
    let report = s.janitor_sweep(&cfg, up_since).await.unwrap();
    let lost: Vec<&str> = report.lost.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        lost,
        vec![x.id.as_str()],
        "the unrenewed run is lost, the renewed one kept"
    );
    assert_eq!(state_of(s, &y.id).await, "started");
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_heartbeat_renews_only_the_named_runs() {
    heartbeat_renews_only_the_named_runs(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_heartbeat_renews_only_the_named_runs() {
    heartbeat_renews_only_the_named_runs(Backend::Postgres).await;
}

async fn rejoin_requeues_unheld_claims(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let listed = claimed_by(s, "w").await;
    let lost_reply = claimed_by(s, "w").await;
    let started = started_by(s, "w").await;
    let others = claimed_by(s, "w2").await;
    let moved = s
        .requeue_unheld_claims("w", vec![listed.id.clone()])
        .await
        .unwrap();
    assert_eq!(
        moved,
        vec![lost_reply.id.clone()],
        "only the unlisted claim moves"
    );
    assert_eq!(state_of(s, &lost_reply.id).await, "available");
    assert_eq!(state_of(s, &listed.id).await, "claimed");
    assert_eq!(
        state_of(s, &started.id).await,
        "started",
        "started runs are the janitor's"
    );
    assert_eq!(
        state_of(s, &others.id).await,
        "claimed",
        "another worker's claim stays"
    );
    assert!(
        s.run_joined(&lost_reply.id, "w", lost_reply.claim_epoch)
            .await
            .is_err(),
        "the lost reply's token is refused"
    );
    // Claimed again by the same worker: a new epoch, the old token still refused.
    let again = s
        .claim(ClaimRequest {
            demand: 1,
            queues: QueuePreference::default(),
            worker_name: None,
            worker_id: "w".into(),
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.id, lost_reply.id);
    assert!(again.claim_epoch > lost_reply.claim_epoch);
    assert!(
        s.run_joined(&lost_reply.id, "w", lost_reply.claim_epoch)
            .await
            .is_err()
    );
    s.run_joined(&again.id, "w", again.claim_epoch)
        .await
        .unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_rejoin_requeues_unheld_claims() {
    rejoin_requeues_unheld_claims(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_rejoin_requeues_unheld_claims() {
    rejoin_requeues_unheld_claims(Backend::Postgres).await;
}

#[tokio::test]
async fn postgres_notifies_when_runs_become_available() {
    let db = TestDb::postgres().await.expect("test database");
    let Db::Postgres(pool) = db.store.db().clone() else {
        unreachable!("postgres store")
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(RUN_AVAILABLE_CHANNEL).await.unwrap();
    let seed = seed_workflow(&db.store, SeedOptions::default())
        .await
        .unwrap();
    db.store
        .ingest_webhook(hook(&seed.trigger_id))
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(n.payload(), seed.workflow_id);
    drop(listener);
    db.cleanup().await;
}
