//! End-to-end in a real browser: serves a seeded UI on a real socket, plays
//! the worker for one active run (writing log lines), and runs
//! `tests/browser/ui.mjs` (playwright-core driving Debian's Chromium).
//! Screenshots land in `docs/ui/`. Needs `/usr/bin/chromium` and
//! `npm ci` in `tests/browser` (both done by `.ci/run`); fails otherwise.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_diagram_edit_inspect_retry_rerun_and_viewer_refused_in_chromium() {
    let root = repo_root();
    let script_dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (apt-get install chromium), as .ci/run does"
    );
    assert!(
        script_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in tests/browser, as .ci/run does"
    );

    let db = TestDb::sqlite().await;
    let s = seed(&db.pool, &KEY).await;
    let addr = serve(db.pool.clone()).await;

    // The "worker": a log line every 400 ms on the active run while the browser works.
    let pool = db.pool.clone();
    let run = s.active_run_id.clone();
    let worker = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(400)).await;
            add_log(
                &pool,
                &run,
                None,
                if i % 5 == 4 { "warn" } else { "info" },
                &format!("live line {i}: processed patient batch {i}"),
                gabbro_ui::time::now_us(),
            )
            .await;
        }
    });

    let seed_json = serde_json::json!({
        "project_id": s.project_id,
        "workflow_id": s.workflow_id,
        "job1_id": s.job1_id,
        "job2_id": s.job2_id,
        "failed_run_id": s.failed_run_id,
        "step2_id": s.step2_id,
        "active_run_id": s.active_run_id,
        "admin_password": ADMIN_PASSWORD,
        "viewer_password": VIEWER_PASSWORD,
    });
    let shots = root.join("docs/ui");
    let out = tokio::time::timeout(
        Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(script_dir.join("ui.mjs"))
            .current_dir(&script_dir)
            .env("BASE_URL", format!("http://{addr}"))
            .env("SHOTS_DIR", &shots)
            .env("SEED", seed_json.to_string())
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser tests finished within 240 s")
    .expect("node runs");
    worker.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser tests failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(stdout.contains("all browser checks passed"));
    for name in [
        "01-sign-in",
        "04-workflow-diagram",
        "06-run-inspector",
        "07-history",
        "09-live-logs",
        "11-queue",
        "12-members",
        "13-viewer-refused",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png was written"
        );
    }
    // What the browser did, as the database saw it.
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job2_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(body.contains("fixed = true"));
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE state = 'available'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 2, "one retry and one rerun queued");
    let job1: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = $1")
        .bind(&s.job1_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(job1, "fn(state => state);", "the viewer's edit was refused");
    db.cleanup().await;
}
