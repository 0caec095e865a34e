//! Cron fires each (trigger, scheduled time) exactly once, even with two
//! orchestrator nodes ticking at the same moment on one database; missed
//! times are recorded as `missed`, and the latest one fires.

use gabbro_server::{AppState, Config};
use gabbro_store::testing::TestDb;
use gabbro_store::{Backend, Store, exec, scalar};
use serde_json::json;

const MINUTE: i64 = 60_000_000;

fn config() -> Config {
    Config {
        data_dir: std::env::temp_dir(),
        listen: "127.0.0.1:0".parse().unwrap(),
        db_url: String::new(),
        worker_capacity: 0,
        worker_secret: "s".into(),
        encryption_key: [7u8; 32],
        max_body_bytes: 1 << 20,
        webhook_memory_bytes: 1 << 20,
        cron: true,
        janitor: Default::default(),
    }
}

async fn provision_cron(store: &Store) -> String {
    let trigger_id = uuid::Uuid::new_v4().to_string();
    let job_id = uuid::Uuid::new_v4().to_string();
    let doc = json!({
        "id": uuid::Uuid::new_v4().to_string(), "name": "cron-project",
        "workflows": [{"id": uuid::Uuid::new_v4().to_string(), "name": "tick",
            "jobs": [{"id": job_id, "name": "a", "adaptor": "@openfn/language-common@latest", "body": "fn(s => s)"}],
            "triggers": [{"id": trigger_id, "type": "cron", "cron_expression": "* * * * *", "enabled": true}],
            "edges": [{"id": uuid::Uuid::new_v4().to_string(), "source_trigger_id": trigger_id, "target_job_id": job_id, "condition_type": "always"}]}]
    });
    let doc = gabbro_deploy::parse_document(&doc).expect("valid document");
    let outcome = store
        .write(move |mut c| {
            Box::pin(async move { gabbro_store::provision::apply(&mut c, &doc, "x").await })
        })
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        gabbro_store::provision::ProvisionOutcome::Applied { .. }
    ));
    // Pretend the trigger was enabled 5 minutes ago (and the server was down since).
    let id = trigger_id.clone();
    store
        .write(move |mut c| {
            Box::pin(async move {
                let past = gabbro_store::now_us() - 5 * MINUTE - 1;
                exec!(
                    c,
                    "UPDATE triggers SET updated_at = $1 WHERE id = $2",
                    past,
                    &id
                )?;
                Ok(())
            })
        })
        .await
        .unwrap();
    trigger_id
}

async fn two_nodes_fire_once(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .expect("test database (PostgreSQL must be reachable)");
    let trigger_id = provision_cron(&db.store).await;
    // A second node: its own connection pool on the same database.
    let other = Store::connect(&db.url).await.unwrap();
    let a = AppState::new(db.store.clone(), config());
    let b = AppState::new(other.clone(), config());
    let (ra, rb) = tokio::join!(gabbro_server::cron::tick(&a), gabbro_server::cron::tick(&b));
    let fired = ra.unwrap() + rb.unwrap();
    assert_eq!(fired, 1, "exactly one node fires the latest time");
    // Ticking again at once fires nothing new.
    assert_eq!(
        gabbro_server::cron::tick(&a).await.unwrap() + gabbro_server::cron::tick(&b).await.unwrap(),
        0
    );

    let mut c = db.store.read().await.unwrap();
    let mut conn = c.reborrow();
    let fires: Option<i64> = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM cron_fires WHERE trigger_id = $1 AND outcome = 'fired'",
        &trigger_id
    )
    .unwrap();
    let missed: Option<i64> = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM cron_fires WHERE trigger_id = $1 AND outcome = 'missed'",
        &trigger_id
    )
    .unwrap();
    let work_orders: Option<i64> = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM work_orders WHERE trigger_id = $1",
        &trigger_id
    )
    .unwrap();
    let runs: Option<i64> = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM runs WHERE starting_trigger_id = $1 AND state = 'available'",
        &trigger_id
    )
    .unwrap();
    let input: Option<String> = scalar!(
        conn,
        String,
        "SELECT d.body FROM work_orders w JOIN dataclips d ON d.id = w.dataclip_id WHERE w.trigger_id = $1",
        &trigger_id
    )
    .unwrap();
    assert_eq!(fires, Some(1));
    assert_eq!(
        missed,
        Some(4),
        "the 4 earlier minutes are recorded as missed"
    );
    assert_eq!(work_orders, Some(1));
    assert_eq!(runs, Some(1));
    assert_eq!(
        input.as_deref(),
        Some("{}"),
        "no earlier success: the input is {{}}"
    );
    drop(c);
    other.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_two_nodes_fire_each_time_once() {
    two_nodes_fire_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_two_nodes_fire_each_time_once() {
    two_nodes_fire_once(Backend::Postgres).await;
}
