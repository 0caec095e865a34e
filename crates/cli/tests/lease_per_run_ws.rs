//! Leases are renewed per run held, not per worker id, over a real worker
//! socket on SQLite and PostgreSQL. A worker dies holding two started runs
//! and a claim whose reply it never read; its restarted life (same worker
//! id) rejoins `worker:queue` listing only one of the runs: that run's lease
//! is renewed, the other's is not (the janitor marks it lost), and the
//! unlisted claim goes back to `available` at once, its old token refused.
//! A join without `active_runs` (OpenFn's worker) requeues nothing.

mod protocol_double_support;

use gabbro_store::{Backend, ClaimRequest, LeaseConfig, db_now_us, exec};
use protocol_double_support::*;
use serde_json::{Value, json};

const LONG_AGO_US: i64 = 1_000_000_000;

async fn last_heard(o: &Orchestrator, id: &str) -> i64 {
    let mut conn = o.store.read().await.expect("read");
    let mut c = conn.reborrow();
    gabbro_store::scalar!(c, i64, "SELECT last_heard_at FROM runs WHERE id = $1", id)
        .expect("query")
        .expect("run exists")
}

async fn db_now(o: &Orchestrator) -> i64 {
    let mut conn = o.store.read().await.expect("read");
    db_now_us(&mut conn.reborrow()).await.expect("now")
}

/// Every run was last heard of long ago (the worker has been dead a while).
async fn silence_all(o: &Orchestrator) {
    let long_ago = db_now(o).await - LONG_AGO_US;
    o.store
        .write(move |mut c| {
            Box::pin(async move {
                exec!(c, "UPDATE runs SET last_heard_at = $1", long_ago)?;
                Ok(())
            })
        })
        .await
        .expect("silence");
}

fn join_queue(msg_ref: &str, active_runs: Option<Value>) -> gabbro_protocol::Frame {
    let mut payload = json!({"capacity": 3, "queues": {"*": 3}});
    if let Some(a) = active_runs {
        payload["active_runs"] = a;
    }
    frame(Some(msg_ref), msg_ref, "worker:queue", "phx_join", payload)
}

async fn renewal_per_run_held(backend: Backend) {
    let o = Orchestrator::start(backend).await;

    // First life: claims three runs, starts two, never reads the third's
    // reply (it only claimed), then dies.
    let mut life1 = o.connect().await;
    assert_eq!(life1.call(&join_queue("1", Some(json!([])))).await.0, "ok");
    for n in 0..3 {
        o.enqueue(json!({"n": n})).await;
    }
    let (s, r) = life1
        .call(&frame(
            Some("1"),
            "2",
            "worker:queue",
            "claim",
            json!({"demand": 3, "queues": ["*"]}),
        ))
        .await;
    assert_eq!(s, "ok", "{r}");
    let runs: Vec<(String, String)> = r["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["token"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 3, "{r}");
    let ((x, x_token), (y, y_token), (z, z_token)) =
        (runs[0].clone(), runs[1].clone(), runs[2].clone());
    for (i, (id, token)) in [(&x, &x_token), (&y, &y_token)].into_iter().enumerate() {
        let j = format!("{}", 10 + i);
        let topic = format!("run:{id}");
        let (s, r) = life1
            .call(&frame(
                Some(&j),
                &j,
                &topic,
                "phx_join",
                json!({"token": token}),
            ))
            .await;
        assert_eq!(s, "ok", "{r}");
        let start = json!({"timestamp": db_now(&o).await.to_string()});
        let (s, r) = life1
            .call(&frame(
                Some(&j),
                &format!("{j}s"),
                &topic,
                "run:start",
                start,
            ))
            .await;
        assert_eq!(s, "ok", "{r}");
    }
    life1.close().await;
    silence_all(&o).await;

    // Second life, same worker id: it still holds `y` (say, replaying its
    // journal), not `x`; it never saw `z`.
    let mut life2 = o.connect().await;
    let (s, r) = life2.call(&join_queue("1", Some(json!([y])))).await;
    assert_eq!(s, "ok", "{r}");
    assert_eq!(
        o.run_state(&z).await,
        "available",
        "the unlisted claim is requeued by the time the join is answered"
    );
    let (s, _) = life2
        .call(&frame(None, "2", "phoenix", "heartbeat", json!({})))
        .await;
    assert_eq!(s, "ok");
    let now = db_now(&o).await;
    let renewed_by = |t: i64| now - t < LONG_AGO_US / 2;
    let deadline = std::time::Instant::now() + WAIT;
    while !renewed_by(last_heard(&o, &y).await) {
        assert!(
            std::time::Instant::now() < deadline,
            "the listed run is renewed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Give the heartbeat's renewal time to land, then look at `x`.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !renewed_by(last_heard(&o, &x).await),
        "the run the previous life died holding is not renewed"
    );

    // The janitor: `x` is lost after the run lease; `y` is kept.
    let cfg = LeaseConfig {
        run_lease_us: 60_000_000,
        ..LeaseConfig::default()
    };
    let report = o
        .store
        .janitor_sweep(&cfg, now - LONG_AGO_US)
        .await
        .expect("sweep");
    let lost: Vec<&str> = report.lost.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(lost, vec![x.as_str()]);
    assert_eq!(o.run_state(&x).await, "lost");
    assert_eq!(o.run_state(&y).await, "started");

    // The lost reply's token is refused.
    let topic = format!("run:{z}");
    let (s, r) = life2
        .call(&frame(
            Some("20"),
            "20",
            &topic,
            "phx_join",
            json!({"token": z_token}),
        ))
        .await;
    assert_eq!(
        (s.as_str(), r),
        ("error", json!({"reason": "unauthorized"}))
    );
    life2.close().await;

    // An OpenFn worker's join carries no `active_runs`: Lightning semantics,
    // its claims stay.
    let claimed = o
        .store
        .claim(ClaimRequest {
            demand: 1,
            queues: Default::default(),
            worker_name: None,
            worker_id: WORKER_ID.into(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let mut openfn = o.connect().await;
    assert_eq!(openfn.call(&join_queue("1", None)).await.0, "ok");
    assert_eq!(o.run_state(&claimed[0].id).await, "claimed");
    openfn.close().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_worker_renews_only_the_runs_it_holds_on_sqlite() {
    renewal_per_run_held(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_worker_renews_only_the_runs_it_holds_on_postgres() {
    renewal_per_run_held(Backend::Postgres).await;
}
