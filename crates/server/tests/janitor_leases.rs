//! The lease janitor loop as `gabbro serve` runs it ([`janitor::run`]), with
//! short leases, on SQLite and PostgreSQL: an unjoined claim goes back to
//! `available` after the claim lease (and wakes the workers); a silent
//! started run becomes `lost` only after the run lease counted from when the
//! orchestrator came up; the flags and their defaults.

use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use gabbro_model::QueuePreference;
use gabbro_server::janitor::{self, JanitorArgs, JanitorConfig};
use gabbro_server::{AppState, Config, ServeArgs};
use gabbro_store::testing::{SeedOptions, TestDb, seed_workflow};
use gabbro_store::{Backend, ClaimRequest, Store, WebhookIngest, db_now_us, exec, scalar};

fn config(janitor: JanitorConfig) -> Config {
    Config {
        data_dir: std::env::temp_dir(),
        listen: "127.0.0.1:0".parse().unwrap(),
        db_url: String::new(),
        worker_capacity: 0,
        worker_secret: "s".into(),
        encryption_key: [7u8; 32],
        max_body_bytes: 1 << 20,
        webhook_memory_bytes: 1 << 20,
        cron: false,
        janitor,
    }
}

fn short_leases(claim: f64, run: f64) -> JanitorConfig {
    JanitorConfig::from(&JanitorArgs {
        janitor_period: Duration::from_millis(100),
        claim_lease: Duration::from_secs_f64(claim),
        run_lease: Duration::from_secs_f64(run),
        lost_grace: Duration::from_secs(10),
    })
}

/// One webhook run of a fresh workflow, claimed by `worker`.
async fn claimed_run(store: &Store, worker: &str) -> gabbro_store::ClaimedRun {
    let seed = seed_workflow(store, SeedOptions::default()).await.unwrap();
    store
        .ingest_webhook(WebhookIngest {
            trigger_id: seed.trigger_id.clone(),
            body: r#"{"n":1}"#.into(),
            request: "{}".into(),
            idempotency_key: None,
            options: None,
            queue: None,
        })
        .await
        .unwrap();
    let mut claimed = store
        .claim(ClaimRequest {
            demand: 1,
            queues: QueuePreference::default(),
            worker_name: None,
            worker_id: worker.into(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the run is claimed");
    claimed.remove(0)
}

async fn run_state(store: &Store, id: &str) -> (String, Option<String>) {
    let mut c = store.read().await.unwrap();
    let mut conn = c.reborrow();
    let state: Option<String> =
        scalar!(conn, String, "SELECT state FROM runs WHERE id = $1", id).unwrap();
    let error_type: Option<Option<String>> = scalar!(
        conn,
        Option<String>,
        "SELECT error_type FROM runs WHERE id = $1",
        id
    )
    .unwrap();
    (state.expect("run exists"), error_type.flatten())
}

/// Polls until the run leaves `from`; its new state and when.
async fn wait_leaves(
    store: &Store,
    id: &str,
    from: &str,
    limit: Duration,
) -> (String, Option<String>) {
    let t0 = Instant::now();
    loop {
        let s = run_state(store, id).await;
        if s.0 != from {
            return s;
        }
        assert!(
            t0.elapsed() < limit,
            "run {id} still {from} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn unjoined_claim_goes_back_after_the_claim_lease(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .expect("test database (PostgreSQL must be reachable)");
    let run = claimed_run(&db.store, "w1").await;
    let state = AppState::new(db.store.clone(), config(short_leases(1.0, 60.0)));
    let woken = state.work_available.clone();
    let notified = woken.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(janitor::run(state.clone(), state.config.janitor, stop_rx));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        run_state(&db.store, &run.id).await.0,
        "claimed",
        "inside the claim lease"
    );
    let (now, _) = wait_leaves(&db.store, &run.id, "claimed", Duration::from_secs(10)).await;
    assert_eq!(now, "available");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "requeued after {:?}, before the 1 s claim lease",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(2), notified)
        .await
        .expect("requeueing wakes the workers (work_available)");
    // The old claim is dead: its worker cannot join any more.
    assert!(
        db.store
            .run_joined(&run.id, "w1", run.claim_epoch)
            .await
            .is_err(),
        "a requeued run's old claim is refused"
    );
    let metrics = state.metrics.render(&[]);
    assert!(
        metrics.contains("gabbro_janitor_runs_total{action=\"requeued\"} 1"),
        "{metrics}"
    );

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the janitor stops when told")
        .unwrap();
    db.cleanup().await;
}

async fn silent_run_is_lost_only_a_run_lease_after_the_orchestrator_came_up(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .expect("test database (PostgreSQL must be reachable)");
    let run = claimed_run(&db.store, "w1").await;
    db.store
        .run_joined(&run.id, "w1", run.claim_epoch)
        .await
        .unwrap();
    db.store
        .run_start(&run.id, Some("w1"), None, None)
        .await
        .unwrap();
    // Its worker was last heard 1000 s ago — while this orchestrator was down.
    let mut c = db.store.read().await.unwrap();
    let long_ago = db_now_us(&mut c.reborrow()).await.unwrap() - 1_000_000_000;
    drop(c);
    let id = run.id.clone();
    db.store
        .write(move |mut c| {
            Box::pin(async move {
                exec!(
                    c,
                    "UPDATE runs SET last_heard_at = $2 WHERE id = $1",
                    &id,
                    long_ago
                )?;
                Ok(())
            })
        })
        .await
        .unwrap();

    let state = AppState::new(db.store.clone(), config(short_leases(1.0, 2.0)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(janitor::run(state.clone(), state.config.janitor, stop_rx));

    // Silent for 1000 s, but the orchestrator has been up only ~1 s.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        run_state(&db.store, &run.id).await.0,
        "started",
        "silence before the orchestrator came up does not count"
    );
    let (now, error_type) =
        wait_leaves(&db.store, &run.id, "started", Duration::from_secs(10)).await;
    assert_eq!(now, "lost");
    assert_eq!(error_type.as_deref(), Some("LostAfterStart"));
    assert!(
        started.elapsed() >= Duration::from_millis(1950),
        "lost after {:?}, before the 2 s run lease since start-up",
        started.elapsed()
    );
    let metrics = state.metrics.render(&[]);
    assert!(
        metrics.contains("gabbro_janitor_runs_total{action=\"lost\"} 1"),
        "{metrics}"
    );

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the janitor stops when told")
        .unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_unjoined_claim_goes_back_after_the_claim_lease() {
    unjoined_claim_goes_back_after_the_claim_lease(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_unjoined_claim_goes_back_after_the_claim_lease() {
    unjoined_claim_goes_back_after_the_claim_lease(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_silent_run_is_lost_only_a_run_lease_after_start_up() {
    silent_run_is_lost_only_a_run_lease_after_the_orchestrator_came_up(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_silent_run_is_lost_only_a_run_lease_after_start_up() {
    silent_run_is_lost_only_a_run_lease_after_the_orchestrator_came_up(Backend::Postgres).await;
}

/// Only one node sweeps at a time on PostgreSQL: while another session
/// holds the advisory lock, a sweep is skipped.
#[tokio::test]
async fn postgres_sweep_is_skipped_while_another_node_holds_the_lock() {
    let db = TestDb::new(Backend::Postgres)
        .await
        .expect("test database (PostgreSQL must be reachable)");
    let state = AppState::new(db.store.clone(), config(short_leases(1.0, 2.0)));
    let gabbro_store::Db::Postgres(pool) = db.store.db() else {
        panic!("a PostgreSQL store");
    };
    let mut other = pool.begin().await.unwrap();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(janitor::SWEEP_LOCK_KEY)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(got);
    let cfg = state.config.janitor;
    assert!(janitor::sweep(&state, &cfg, 0).await.unwrap().is_none());
    other.rollback().await.unwrap();
    assert!(janitor::sweep(&state, &cfg, 0).await.unwrap().is_some());
    db.cleanup().await;
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn janitor_flags_default_to_the_documented_values() {
    let cli = Cli::try_parse_from(["gabbro-serve"]).unwrap();
    assert_eq!(cli.serve.janitor, JanitorArgs::default());
    assert_eq!(cli.serve.janitor.janitor_period, Duration::from_secs(15));
    assert_eq!(cli.serve.janitor.claim_lease, Duration::from_secs(30));
    assert_eq!(cli.serve.janitor.run_lease, Duration::from_secs(90));
    assert_eq!(cli.serve.janitor.lost_grace, Duration::from_secs(10));

    let cli = Cli::try_parse_from([
        "gabbro-serve",
        "--janitor-period",
        "0.5",
        "--claim-lease",
        "5",
        "--run-lease",
        "120",
        "--lost-grace",
        "2.5",
    ])
    .unwrap();
    let cfg = JanitorConfig::from(&cli.serve.janitor);
    assert_eq!(cfg.period, Duration::from_millis(500));
    assert_eq!(cfg.leases.claim_lease_us, 5_000_000);
    assert_eq!(cfg.leases.run_lease_us, 120_000_000);
    assert_eq!(cfg.leases.grace_us, 2_500_000);

    assert!(Cli::try_parse_from(["gabbro-serve", "--run-lease", "0"]).is_err());
    assert!(Cli::try_parse_from(["gabbro-serve", "--claim-lease", "soon"]).is_err());
}

#[test]
fn each_janitor_flag_has_a_gabbro_env_twin() {
    let cmd = Cli::command();
    for (flag, env) in [
        ("janitor_period", "GABBRO_JANITOR_PERIOD"),
        ("claim_lease", "GABBRO_CLAIM_LEASE"),
        ("run_lease", "GABBRO_RUN_LEASE"),
        ("lost_grace", "GABBRO_LOST_GRACE"),
    ] {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == flag)
            .unwrap_or_else(|| panic!("--{flag} exists"));
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env));
    }
}
