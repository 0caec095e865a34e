//! Page timings with 1,000,000 work orders (and as many runs and input
//! dataclips). Ignored by default (it builds a large database); run with
//! `cargo nextest run -p gabbro-ui --test bench --run-ignored all --no-capture`.
//! Figures go to docs/ui.md.

mod common;

use std::time::{Duration, Instant};

use common::*;

const N: i64 = 1_000_000;

async fn bulk(db: &TestDb, s: &Seed) {
    let snapshot: String =
        sqlx::query_scalar("SELECT id FROM workflow_snapshots WHERE workflow_id = $1")
            .bind(&s.workflow_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let t = Instant::now();
    let base = gabbro_ui::time::now_us() - N * 1_000_000;
    // Ids sort by time like UUIDv7: a zero-padded counter.
    let states =
        "CASE WHEN x % 10 = 0 THEN 'failed' WHEN x % 97 = 0 THEN 'crashed' ELSE 'success' END";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {N}) \
         INSERT INTO dataclips (id, project_id, type, body, inserted_at) \
         SELECT 'dc-' || substr('0000000' || x, -8, 8), $1, 'http_request', '{{\"patient\":{{\"id\":' || x || ',\"name\":\"P' || x || '\"}}}}', $2 + x * 1000000 FROM c"
    )))
    .bind(&s.project_id)
    .bind(base)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {N}) \
         INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, state, last_activity, inserted_at, updated_at) \
         SELECT 'wo-' || substr('0000000' || x, -8, 8), $1, $2, $3, 'dc-' || substr('0000000' || x, -8, 8), {states}, $4 + x * 1000000, $4 + x * 1000000, $4 + x * 1000000 FROM c"
    )))
    .bind(&s.workflow_id)
    .bind(&snapshot)
    .bind(&s.webhook_trigger_id)
    .bind(base)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {N}) \
         INSERT INTO runs (id, work_order_id, workflow_id, project_id, snapshot_id, starting_trigger_id, dataclip_id, state, inserted_at, started_at, finished_at) \
         SELECT 'run-' || substr('0000000' || x, -8, 8), 'wo-' || substr('0000000' || x, -8, 8), $1, $2, $3, $4, 'dc-' || substr('0000000' || x, -8, 8), {states}, $5 + x * 1000000, $5 + x * 1000000, $5 + x * 1000000 + 500000 FROM c"
    )))
    .bind(&s.workflow_id)
    .bind(&s.project_id)
    .bind(&snapshot)
    .bind(&s.webhook_trigger_id)
    .bind(base)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&db.pool).await.ok();
    eprintln!(
        "inserted {N} work orders, runs and dataclips in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

async fn time(c: &mut Client, path: &str) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let p = c.get(path).await;
        samples.push(t.elapsed());
        assert_eq!(p.status, 200, "{path}");
    }
    samples.sort();
    samples[2]
}

#[tokio::test]
#[ignore = "builds a 1,000,000 work order database; run by hand"]
async fn pages_with_a_million_work_orders() {
    let db = if std::env::var("BENCH_PG").is_ok() {
        TestDb::postgres().await
    } else {
        TestDb::sqlite().await
    };
    let s = seed(&db.pool, &KEY).await;
    bulk(&db, &s).await;
    let t = Instant::now();
    let mut indexed = 0;
    loop {
        let n = gabbro_ui::search::index_batch(&db.pool).await.unwrap();
        if n == 0 {
            break;
        }
        indexed += n;
    }
    eprintln!(
        "search indexer: {indexed} work orders in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let addr = serve(db.pool.clone()).await;
    let mut c = Client::new(addr);
    c.sign_in("admin@localhost", ADMIN_PASSWORD).await;
    let f = c.get("/password").await;
    c.post(
        "/password",
        &[
            ("_csrf", &f.csrf()),
            ("current", ADMIN_PASSWORD),
            ("new", "bench-password-1"),
            ("confirm", "bench-password-1"),
        ],
    )
    .await;
    let p = format!("/projects/{}", s.project_id);
    let pages = [
        ("projects", "/projects".to_string()),
        ("project", p.clone()),
        (
            "workflow diagram",
            format!("{p}/workflows/{}", s.workflow_id),
        ),
        ("job editor", format!("{p}/jobs/{}", s.job1_id)),
        ("history, newest", format!("{p}/history")),
        (
            "history, page deep in the past",
            format!(
                "{p}/history?before_ts={}&before_id=wo-00499999",
                gabbro_ui::time::now_us() - 500_000 * 1_000_000
            ),
        ),
        (
            "history, state=crashed",
            format!("{p}/history?state=crashed"),
        ),
        (
            "history, workflow filter",
            format!("{p}/history?workflow={}", s.workflow_id),
        ),
        (
            "history, time range",
            format!("{p}/history?from=2000-01-01T00:00&to=2030-01-01T00:00"),
        ),
        (
            "history, text in input (common)",
            format!("{p}/history?q=patient"),
        ),
        (
            "history, text in input (rare)",
            format!("{p}/history?q=P999999%22"),
        ),
        ("run inspector", format!("{p}/runs/{}", s.failed_run_id)),
        ("credentials", format!("{p}/credentials")),
        ("queue dashboard", "/queue".to_string()),
    ];
    for (name, path) in &pages {
        let d = time(&mut c, path).await;
        eprintln!("| {name} | {:.1} ms |", d.as_secs_f64() * 1000.0);
    }
    db.cleanup().await;
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// Peak RSS growth while the run inspector and the download of a 50 MB
/// output are served (server and client in this process; the download is
/// read as a stream and dropped chunk by chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a 50 MB dataclip; run by hand"]
async fn run_inspector_with_a_50_mb_output() {
    use futures_util::StreamExt;
    let db = if std::env::var("BENCH_PG").is_ok() {
        TestDb::postgres().await
    } else {
        TestDb::sqlite().await
    };
    let s = seed(&db.pool, &KEY).await;
    {
        let mut big = String::with_capacity(50 * 1024 * 1024 + 64);
        big.push_str(r#"{"data":{"rows":["#);
        while big.len() < 50 * 1024 * 1024 {
            big.push_str(r#"{"k":"0123456789abcdefghij0123456789"},"#);
        }
        big.push_str(r#"{"k":"end"}]}}"#);
        sqlx::query("UPDATE dataclips SET body = $1 WHERE id = $2")
            .bind(big)
            .bind(&s.big_dataclip_id)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let addr = serve(db.pool.clone()).await;
    let mut c = Client::new(addr);
    c.sign_in("editor@example.org", EDITOR_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(base));
    let p2 = peak.clone();
    let sampler = std::thread::spawn(move || {
        for _ in 0..4000 {
            p2.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let t = Instant::now();
    let page = c
        .get(&format!(
            "/projects/{}/runs/{}",
            s.project_id, s.failed_run_id
        ))
        .await;
    let page_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(page.body.len() < 300_000 && page.body.contains("Only the beginning is shown"));
    let t = Instant::now();
    let cookie = c
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/projects/{}/dataclips/{}/download",
            c.base, s.project_id, s.big_dataclip_id
        ))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    let dl_ms = t.elapsed().as_secs_f64() * 1000.0;
    let peak_kib = peak.load(std::sync::atomic::Ordering::Relaxed);
    drop(sampler);
    eprintln!(
        "50 MB output: page {} bytes in {page_ms:.0} ms; download {total} bytes in {dl_ms:.0} ms; RSS base {} MiB, peak +{} MiB",
        page.body.len(),
        base / 1024,
        (peak_kib - base) / 1024
    );
    assert!(total > 50 * 1024 * 1024);
    db.cleanup().await;
}
