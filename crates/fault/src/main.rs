//! `gabbro-fault`: see the crate documentation and docs/reliability.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gabbro_fault::{DbKind, Options};

/// Fault-test harness: runs gabbro serve and workers under kills, connection
/// cuts and database restarts, then checks that no run was lost.
#[derive(Parser, Debug)]
#[command(name = "gabbro-fault", version)]
struct Args {
    /// The gabbro binary under test.
    #[arg(long, default_value = "target/debug/gabbro")]
    gabbro: PathBuf,
    /// Webhooks to post (one run each).
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Webhook requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// kill -9 and restart the orchestrator this many times.
    #[arg(long, default_value_t = 3)]
    orchestrator_kills: u32,
    /// kill -9 a worker this many times (restarted on the same journal).
    #[arg(long, default_value_t = 1)]
    worker_kills: u32,
    /// Cut every worker connection this many times.
    #[arg(long, default_value_t = 1)]
    cuts: u32,
    /// How long each cut refuses connections.
    #[arg(long, default_value_t = 5.0)]
    cut_seconds: f64,
    /// Database of the orchestrator.
    #[arg(long, value_enum, default_value = "sqlite")]
    db: DbKind,
    /// Restart PostgreSQL this many times (with --db postgres).
    #[arg(long, default_value_t = 0)]
    pg_restarts: u32,
    /// Admin URL of PostgreSQL; the harness creates and drops its own database there.
    #[arg(long, env = "GABBRO_TEST_PG", default_value = gabbro_fault::pg::DEFAULT_ADMIN_URL)]
    pg: String,
    /// Separate worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Capacity of each worker.
    #[arg(long, default_value_t = 5)]
    worker_capacity: u32,
    /// Each job waits this long (setTimeout), so runs are in flight when faults strike.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// How long a killed process stays down before its restart.
    #[arg(long, default_value_t = 1.0)]
    down_seconds: f64,
    /// Longest wait, after the load, for every run to be final.
    #[arg(long, default_value_t = 600)]
    settle_seconds: u64,
    /// The orchestrator's run lease (a killed worker's runs become lost after it).
    #[arg(long, default_value_t = 90)]
    run_lease_seconds: u64,
    /// Allowed on top of the lease for the janitor's period and the restarts.
    #[arg(long, default_value_t = 60)]
    lost_slack_seconds: u64,
    /// Extra argument for `gabbro serve` (repeat), e.g. lease flags.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Extra argument for `gabbro worker` (repeat).
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    worker_args: Vec<String>,
    /// Work directory (data dir, journals, logs); default a new temporary one.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory and database even when everything passed.
    #[arg(long)]
    keep: bool,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let opts = Options {
        gabbro: a.gabbro,
        runs: a.runs,
        concurrency: a.concurrency,
        orchestrator_kills: a.orchestrator_kills,
        worker_kills: a.worker_kills,
        cuts: a.cuts,
        cut_seconds: a.cut_seconds,
        pg_restarts: a.pg_restarts,
        db: a.db,
        pg_admin_url: a.pg,
        workers: a.workers,
        worker_capacity: a.worker_capacity,
        delay_ms: a.delay_ms,
        down_seconds: a.down_seconds,
        settle_timeout: Duration::from_secs(a.settle_seconds),
        run_lease_seconds: a.run_lease_seconds,
        lost_slack_seconds: a.lost_slack_seconds,
        serve_args: a.serve_args,
        worker_args: a.worker_args,
        work_dir: a.work_dir,
        keep: a.keep,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gabbro-fault: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(gabbro_fault::run(&opts)) {
        Ok(summary) => {
            const SHOWN: usize = 30;
            for v in summary.verdict.violations.iter().take(SHOWN) {
                eprintln!("violation: {v}");
            }
            if summary.verdict.violations.len() > SHOWN {
                eprintln!(
                    "… and {} more violations",
                    summary.verdict.violations.len() - SHOWN
                );
            }
            println!("{}", summary.line());
            if summary.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("gabbro-fault: the harness could not complete: {e:#}");
            println!(
                "gabbro-fault: db={:?} requested={} harness_error=1 violations=1",
                opts.db, opts.runs
            );
            std::process::ExitCode::from(2)
        }
    }
}
