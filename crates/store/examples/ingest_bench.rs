//! Store-level webhook ingest throughput: `cargo run --release -p
//! gabbro-store --example ingest_bench -- [sqlite|postgres] [N] [CONCURRENCY] [BODY_BYTES]`.
//! Durable commits (SQLite `synchronous=FULL` with group commit;
//! PostgreSQL with its default `synchronous_commit=on`). Prints req/s and
//! latency percentiles.

use std::time::{Duration, Instant};

use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{Backend, WebhookIngest};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.get(1).map(String::as_str) {
        Some("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let conc: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(128);
    let size: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let db = TestDb::new(backend).await.expect("database");
    let seed = seed_workflow(&db.store, SeedOptions::default())
        .await
        .unwrap();
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(size.saturating_sub(10)));
    let request = r#"{"method":"POST","path":"/i/x","query_params":{},"headers":{"content-type":"application/json"}}"#;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (store, trigger, body) = (db.store.clone(), seed.trigger_id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = t;
            while i < n {
                let t0 = Instant::now();
                store
                    .ingest_webhook(WebhookIngest {
                        trigger_id: trigger.clone(),
                        body: body.clone(),
                        request: request.to_string(),
                        idempotency_key: None,
                        options: None,
                        queue: None,
                    })
                    .await
                    .unwrap();
                lat.push(t0.elapsed());
                i += conc;
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let p =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "{backend:?} n={n} conc={conc} body={size}B: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        n as f64 / secs,
        p(0.5),
        p(0.99),
        p(1.0)
    );
    db.cleanup().await;
}
