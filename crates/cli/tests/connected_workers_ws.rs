//! The worker socket keeps the list of connected workers that the queue
//! dashboard shows: a worker appears when it connects, with the capacity it
//! joins `worker:queue` with, the name it claims under and the run channels
//! it has open; it disappears when its socket closes.

mod protocol_double_support;

use std::time::Duration;

use gabbro_store::Backend;
use protocol_double_support::*;
use serde_json::json;

async fn eventually(o: &Orchestrator, what: &str, check: impl Fn(&Orchestrator) -> bool) {
    for _ in 0..100 {
        if check(o) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn lists_connected_workers(backend: Backend) {
    let o = Orchestrator::start(backend).await;
    assert!(o.socket.workers().list().is_empty());

    let mut worker = o.connect().await;
    let join = frame(
        Some("1"),
        "1",
        "worker:queue",
        "phx_join",
        json!({"capacity": 4, "queues": {"*": 4}}),
    );
    assert_eq!(worker.call(&join).await.0, "ok");
    let (run_id, _) = o.enqueue(json!({"n": 1})).await;
    let claim = frame(
        Some("1"),
        "2",
        "worker:queue",
        "claim",
        json!({"demand": 1, "worker_name": "dashboard-worker", "queues": ["*"]}),
    );
    let (status, reply) = worker.call(&claim).await;
    assert_eq!(status, "ok");
    let token = reply["runs"][0]["token"]
        .as_str()
        .expect("a claimed run")
        .to_string();
    let topic = format!("run:{run_id}");
    let run_join = frame(Some("3"), "3", &topic, "phx_join", json!({"token": token}));
    assert_eq!(worker.call(&run_join).await.0, "ok");

    let listed = o.socket.workers().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "dashboard-worker");
    assert_eq!(listed[0].capacity, 4);
    assert_eq!(listed[0].active_runs, 1);

    let leave = frame(Some("3"), "4", &topic, "phx_leave", json!({}));
    worker.call(&leave).await;
    eventually(&o, "the run channel is no longer counted", |o| {
        o.socket
            .workers()
            .list()
            .first()
            .is_some_and(|w| w.active_runs == 0)
    })
    .await;

    worker.close().await;
    eventually(&o, "the closed socket is gone from the list", |o| {
        o.socket.workers().list().is_empty()
    })
    .await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_connected_workers_on_sqlite() {
    lists_connected_workers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_connected_workers_on_postgres() {
    lists_connected_workers(Backend::Postgres).await;
}
