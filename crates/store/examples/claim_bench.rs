//! Claim latency with a deep queue and a long history:
//! `cargo run --release -p gabbro-store --example claim_bench -- [sqlite|postgres] [QUEUED] [FINISHED] [CLAIMS]`
//! (defaults 100,000 queued, 1,000,000 finished, 2,000 claims). Ten
//! workflows with a concurrency limit of 5 in two projects limited to 20;
//! every claimed run is started and completed again so the limits keep
//! biting. Prints claim latency percentiles.

use std::time::{Duration, Instant};

use gabbro_model::QueuePreference;
use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{Backend, ClaimRequest, RunComplete, exec};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.get(1).map(String::as_str) {
        Some("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let queued: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let finished: i64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let claims: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let db = TestDb::new(backend).await.expect("database");
    let s = db.store.clone();
    let mut seeds = Vec::new();
    for p in 0..2 {
        let first = seed_workflow(
            &s,
            SeedOptions {
                project_concurrency: Some(20),
                workflow_concurrency: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        seeds.push(first.clone());
        for _ in 1..5 {
            seeds.push(
                seed_workflow(
                    &s,
                    SeedOptions {
                        project_id: Some(first.project_id.clone()),
                        workflow_concurrency: Some(5),
                        ..Default::default()
                    },
                )
                .await
                .unwrap(),
            );
        }
        let _ = p;
    }
    let t0 = Instant::now();
    // One work order holds all the finished runs (nothing reads it).
    let wf: Vec<(String, String, String)> = seeds
        .iter()
        .map(|x| {
            (
                x.workflow_id.clone(),
                x.project_id.clone(),
                x.snapshot_id.clone(),
            )
        })
        .collect();
    let w0 = wf[0].clone();
    s.write(move |mut c| {
        Box::pin(async move {
            exec!(c, "INSERT INTO work_orders (id, workflow_id, snapshot_id, state, last_activity, inserted_at, updated_at)
                      VALUES ('bench-wo', $1, $2, 'pending', 0, 0, 0)", &w0.0, &w0.2)?;
            Ok(())
        })
    })
    .await
    .unwrap();
    for (i, (w, p, snap)) in wf.into_iter().enumerate() {
        let per_fin = finished / 10;
        let per_q = queued / 10;
        s.write(move |mut c| {
            Box::pin(async move {
                exec!(c, "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $1)
                          INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, state, options, finished_at, inserted_at)
                          SELECT 'f-' || $2 || '-' || n, 'bench-wo', $3, $4, $5, 'success', '{}', n, n FROM seq",
                    per_fin, i as i64, &w, &p, &snap)?;
                // Queued runs get a work order each: completing them
                // recomputes it.
                exec!(c, "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $1)
                          INSERT INTO work_orders (id, workflow_id, snapshot_id, state, last_activity, inserted_at, updated_at)
                          SELECT 'wo-q-' || $2 || '-' || n, $3, $4, 'pending', 0, 0, 0 FROM seq",
                    per_q, i as i64, &w, &snap)?;
                exec!(c, "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $1)
                          INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, state, options, inserted_at)
                          SELECT 'q-' || $2 || '-' || n, 'wo-q-' || $2 || '-' || n, $3, $4, $5, 'available', '{}', 2000000 + n FROM seq",
                    per_q, i as i64, &w, &p, &snap)?;
                Ok(())
            })
        })
        .await
        .unwrap();
    }
    if backend == Backend::Postgres {
        s.write(|mut c| {
            Box::pin(async move {
                exec!(c, "ANALYZE runs")?;
                Ok(())
            })
        })
        .await
        .unwrap();
    }
    eprintln!(
        "seeded {queued} queued + {finished} finished runs in {:?}",
        t0.elapsed()
    );
    let mut lat: Vec<Duration> = Vec::with_capacity(claims);
    let mut active: std::collections::VecDeque<String> = Default::default();
    for _ in 0..claims {
        let t = Instant::now();
        let got = s
            .claim(ClaimRequest {
                demand: 1,
                queues: QueuePreference::default(),
                worker_name: None,
                worker_id: "bench".into(),
            })
            .await
            .unwrap();
        lat.push(t.elapsed());
        active.extend(got.into_iter().map(|r| r.id));
        // Keep ~30 runs active: limits are in force, the queue keeps moving.
        while active.len() > 30 {
            let id = active.pop_front().unwrap();
            s.run_start(&id, Some("bench"), None, None).await.unwrap();
            s.run_complete(
                &id,
                Some("bench"),
                RunComplete {
                    reason: "success".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
    }
    lat.sort();
    let p =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{backend:?} claim with {queued} queued / {finished} finished, limits on: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({claims} claims)",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    db.cleanup().await;
}
