//! Heartbeats keep a run's lease; PostgreSQL wakes listeners when runs
//! become available.

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
    assert_eq!(s.heartbeat("w").await.unwrap(), 1);
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
