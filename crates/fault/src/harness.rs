//! One harness run, start to verdict: orchestrator, deployment, proxy,
//! workers, load, faults, settling, checks, clean-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use tokio::sync::Mutex;

use crate::checks::{self, Observed, Verdict, WorkerKill};
use crate::db::Db;
use crate::load::{self, LoadConfig};
use crate::pg;
use crate::process::Managed;
use crate::project;
use crate::proxy::Proxy;

/// Which database the orchestrator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// Everything one run is configured with (the binary's flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub gabbro: PathBuf,
    pub runs: usize,
    pub concurrency: usize,
    pub orchestrator_kills: u32,
    pub worker_kills: u32,
    pub cuts: u32,
    pub cut_seconds: f64,
    pub pg_restarts: u32,
    pub db: DbKind,
    pub pg_admin_url: String,
    pub workers: usize,
    pub worker_capacity: u32,
    pub delay_ms: u64,
    pub down_seconds: f64,
    pub settle_timeout: Duration,
    pub run_lease_seconds: u64,
    pub lost_slack_seconds: u64,
    pub serve_args: Vec<String>,
    pub worker_args: Vec<String>,
    pub work_dir: Option<PathBuf>,
    pub keep: bool,
}

/// What one run measured and judged.
#[derive(Debug, Clone)]
pub struct Summary {
    pub db: DbKind,
    pub requested: usize,
    pub gave_up: usize,
    pub retries: usize,
    pub verdict: Verdict,
    pub orchestrator_kills: u32,
    pub worker_kills: u32,
    pub cuts: u32,
    pub pg_restarts: u32,
    pub load_time: Duration,
    pub total_time: Duration,
    /// Webhook to final state, per run.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub latency_max: Duration,
    pub work_dir: PathBuf,
}

impl Summary {
    /// The one line of counts.
    pub fn line(&self) -> String {
        let v = &self.verdict;
        format!(
            "gabbro-fault: db={} requested={} accepted={} gave_up={} work_orders={} unacknowledged_work_orders={} runs={} final={} success={} lost={} other={} retried_work_orders={} held_by_killed={} held_by_killed_success={} orchestrator_kills={} worker_kills={} cuts={} pg_restarts={} http_retries={} load={:.1}s total={:.1}s latency_p50={:.2}s latency_p99={:.2}s latency_max={:.2}s worst_lost_delay={:.1}s violations={}",
            match self.db {
                DbKind::Sqlite => "sqlite",
                DbKind::Postgres => "postgres",
            },
            self.requested,
            v.accepted,
            self.gave_up,
            v.work_orders,
            v.unacknowledged_work_orders,
            v.runs,
            v.final_runs,
            v.success,
            v.lost,
            v.other,
            v.retried_work_orders,
            v.held_by_killed,
            v.held_by_killed_success,
            self.orchestrator_kills,
            self.worker_kills,
            self.cuts,
            self.pg_restarts,
            self.retries,
            self.load_time.as_secs_f64(),
            self.total_time.as_secs_f64(),
            self.latency_p50.as_secs_f64(),
            self.latency_p99.as_secs_f64(),
            self.latency_max.as_secs_f64(),
            v.worst_lost_delay_us as f64 / 1e6,
            v.violations.len() + self.gave_up,
        )
    }

    pub fn passed(&self) -> bool {
        self.verdict.violations.is_empty() && self.gave_up == 0
    }
}

/// A fault, in the order the schedule runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    KillOrchestrator,
    KillWorker,
    CutConnections,
    RestartPostgres,
}

/// Spreads each kind evenly over progress 0..1: the i-th of n faults of a
/// kind fires at (i+1)/(n+1); kinds interleave by that fraction.
pub fn schedule(kills: u32, worker_kills: u32, cuts: u32, pg_restarts: u32) -> Vec<(f64, Fault)> {
    let mut out = Vec::new();
    for (n, kind) in [
        (kills, Fault::KillOrchestrator),
        (worker_kills, Fault::KillWorker),
        (cuts, Fault::CutConnections),
        (pg_restarts, Fault::RestartPostgres),
    ] {
        for i in 0..n {
            out.push((f64::from(i + 1) / f64::from(n + 1), kind));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The system under test and what happened to it.
struct Cluster {
    serve: Mutex<Managed>,
    workers: Vec<Mutex<Managed>>,
    journals: Vec<PathBuf>,
    base_url: String,
    probe: Probe,
    db: Db,
    pg_admin_url: String,
    /// µs timestamps of every orchestrator start.
    orchestrator_starts: Mutex<Vec<i64>>,
    worker_kills: Mutex<Vec<WorkerKill>>,
    /// Things that went wrong outside the judged data (a process died on its own).
    incidents: Mutex<Vec<String>>,
    http: reqwest::Client,
}

impl Cluster {
    async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        self.probe.wait_healthy(&self.serve, timeout).await
    }

    async fn start_orchestrator(&self) -> anyhow::Result<()> {
        self.serve.lock().await.start()?;
        self.wait_healthy(Duration::from_secs(90)).await?;
        self.orchestrator_starts.lock().await.push(now_us());
        Ok(())
    }

    /// Restarts any process that died without being told to, and notes it.
    async fn supervise(&self) -> anyhow::Result<()> {
        let died = {
            let mut serve = self.serve.lock().await;
            serve.exited().map(|s| {
                format!(
                    "gabbro serve exited on its own ({s}); log {}:\n{}",
                    serve.log_path().display(),
                    serve.log_tail(20)
                )
            })
        };
        if let Some(msg) = died {
            self.incidents.lock().await.push(msg);
            self.serve.lock().await.kill9().await.ok();
            self.start_orchestrator().await?;
        }
        for w in &self.workers {
            let mut w = w.lock().await;
            if let Some(s) = w.exited() {
                self.incidents.lock().await.push(format!(
                    "{} exited on its own ({s}); log {}:\n{}",
                    w.name(),
                    w.log_path().display(),
                    w.log_tail(20)
                ));
                w.kill9().await.ok();
                w.start()?;
            }
        }
        Ok(())
    }

    async fn kill_orchestrator(&self, down: Duration) -> anyhow::Result<()> {
        self.serve.lock().await.kill9().await?;
        tokio::time::sleep(down).await;
        self.start_orchestrator().await
    }

    /// Kills the last worker, records what it held, restarts it on the same
    /// journal (its promise: what it finished is delivered after restart).
    async fn kill_worker(&self, down: Duration) -> anyhow::Result<()> {
        let i = self.workers.len() - 1;
        let journal_dir = &self.journals[i];
        let worker_id =
            crate::journal::worker_id(journal_dir).context("the worker wrote no worker-id")?;
        let mut w = self.workers[i].lock().await;
        w.kill9().await?;
        let at_us = now_us();
        // Let the orchestrator finish applying what was already in flight.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let journal = crate::journal::read(journal_dir);
        let mut held = journal.runs.clone();
        let mut tries = 0;
        loop {
            match self.db.held_by(&worker_id).await {
                Ok(ids) => {
                    held.extend(ids);
                    break;
                }
                Err(e) if tries > 50 => {
                    return Err(e).context("cannot read what the killed worker held");
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.worker_kills.lock().await.push(WorkerKill {
            worker_id,
            at_us,
            held,
            completed: journal.completed,
        });
        tokio::time::sleep(down).await;
        w.start()
    }

    /// Asks the API for every accepted work order: it must exist with at least one run.
    async fn api_check(&self, token: &str, accepted: &[String], violations: &mut Vec<String>) {
        let sem = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::new();
        for id in accepted {
            let permit = sem.clone().acquire_owned().await;
            let http = self.http.clone();
            let url = format!("{}/api/work_orders/{id}", self.base_url);
            let token = token.to_string();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let r = http.get(&url).bearer_auth(&token).send().await;
                match r {
                    Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                        Ok(v) if v["runs"].as_array().is_some_and(|a| !a.is_empty()) => None,
                        Ok(v) => Some(format!("GET /api/work_orders/{id}: no runs: {v}")),
                        Err(e) => Some(format!("GET /api/work_orders/{id}: bad JSON: {e}")),
                    },
                    Ok(r) => Some(format!("GET /api/work_orders/{id}: {}", r.status())),
                    Err(e) => Some(format!("GET /api/work_orders/{id}: {e}")),
                }
            }));
        }
        for t in tasks {
            if let Ok(Some(v)) = t.await {
                violations.push(v);
            }
        }
    }
}

/// Runs the whole harness once.
pub async fn run(opts: &Options) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work_dir = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("gabbro-fault-{}", uuid::Uuid::new_v4().simple()))
        }
    };
    let data_dir = work_dir.join("data");
    let log_dir = work_dir.join("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let gabbro = std::fs::canonicalize(&opts.gabbro)
        .with_context(|| format!("no gabbro binary at {}", opts.gabbro.display()))?;

    let pg_db = match opts.db {
        DbKind::Postgres => Some(pg::Database::create(&opts.pg_admin_url).await?),
        DbKind::Sqlite => None,
    };
    let result = run_with_database(
        opts,
        &gabbro,
        &work_dir,
        &data_dir,
        &log_dir,
        pg_db.as_ref().map(|d| d.url.clone()),
        started,
    )
    .await;
    if let Some(db) = pg_db {
        // Keep the database with the work dir when asked to, or when it failed.
        let keep = opts.keep || result.as_ref().map(|s| !s.passed()).unwrap_or(true);
        if keep {
            eprintln!("gabbro-fault: kept PostgreSQL database {}", db.name());
        } else if let Err(e) = db.drop_database().await {
            eprintln!("gabbro-fault: could not drop the test database: {e:#}");
        }
    }
    match &result {
        Ok(s) if s.passed() && !opts.keep && opts.work_dir.is_none() => {
            let _ = std::fs::remove_dir_all(&work_dir);
        }
        _ => eprintln!("gabbro-fault: logs and data kept in {}", work_dir.display()),
    }
    result
}

async fn run_with_database(
    opts: &Options,
    gabbro: &Path,
    work_dir: &Path,
    data_dir: &Path,
    log_dir: &Path,
    pg_url: Option<String>,
    started: Instant,
) -> anyhow::Result<Summary> {
    let port = free_port()?;
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let key = {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let mut serve_args: Vec<String> = vec![
        "serve".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--worker-capacity".into(),
        "0".into(),
        "--worker-secret".into(),
        secret.clone(),
        "--encryption-key".into(),
        key,
    ];
    let db_url = match &pg_url {
        Some(u) => {
            serve_args.extend(["--db".into(), u.clone()]);
            u.clone()
        }
        None => format!("sqlite://{}", data_dir.join("gabbro.db").display()),
    };
    serve_args.extend(opts.serve_args.iter().cloned());
    let serve = Managed::new("serve", gabbro, serve_args, log_dir).env("NO_COLOR", "1");
    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // The orchestrator first: it creates the database, then the harness reads it.
    let serve = Mutex::new(serve);
    serve.lock().await.start()?;
    let probe = Probe {
        http: http.clone(),
        base_url: base_url.clone(),
    };
    if let Err(e) = probe.wait_healthy(&serve, Duration::from_secs(90)).await {
        serve.lock().await.kill9().await.ok();
        return Err(e);
    }
    let first_start = now_us();
    let token = std::fs::read_to_string(data_dir.join("admin.token"))
        .context("gabbro serve wrote no admin.token")?
        .trim()
        .to_string();
    project::deploy(gabbro, work_dir, &base_url, &token, opts.delay_ms).await?;
    let db = Db::open(&db_url).await?;

    let proxy = Proxy::start(([127, 0, 0, 1], port).into()).await?;
    let mut workers = Vec::new();
    let mut journals = Vec::new();
    for i in 0..opts.workers.max(1) {
        let journal = work_dir.join(format!("journal-{}", i + 1));
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--lightning".into(),
            format!("ws://{}/worker", proxy.addr()),
            "--secret".into(),
            secret.clone(),
            "--capacity".into(),
            opts.worker_capacity.to_string(),
            "--journal-dir".into(),
            journal.display().to_string(),
            "--port".into(),
            "0".into(),
        ];
        args.extend(opts.worker_args.iter().cloned());
        let mut w =
            Managed::new(&format!("worker-{}", i + 1), gabbro, args, log_dir).env("NO_COLOR", "1");
        w.start()?;
        workers.push(Mutex::new(w));
        journals.push(journal);
    }
    let cluster = Arc::new(Cluster {
        serve,
        workers,
        journals,
        base_url: base_url.clone(),
        probe,
        db,
        pg_admin_url: opts.pg_admin_url.clone(),
        orchestrator_starts: Mutex::new(vec![first_start]),
        worker_kills: Mutex::new(Vec::new()),
        incidents: Mutex::new(Vec::new()),
        http,
    });
    // Worker ids are needed to know what a killed worker held.
    for j in &cluster.journals {
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::journal::worker_id(j).is_none() {
            cluster.supervise().await?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "a worker wrote no {}/worker-id within 30 s",
                j.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Load and faults side by side.
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let load_done = Arc::new(AtomicBool::new(false));
    let load_cfg = LoadConfig {
        url: format!("{base_url}/i/{}", project::WEBHOOK_PATH),
        requests: opts.runs,
        concurrency: opts.concurrency,
        request_deadline: Duration::from_secs(180),
        attempt_timeout: Duration::from_secs(15),
    };
    let load_started = Instant::now();
    let load_task = {
        let accepted_count = accepted_count.clone();
        let load_done = load_done.clone();
        tokio::spawn(async move {
            let r = load::post_all(&load_cfg, accepted_count).await;
            load_done.store(true, Ordering::SeqCst);
            r
        })
    };
    let faults = schedule(
        opts.orchestrator_kills,
        opts.worker_kills,
        opts.cuts,
        if opts.db == DbKind::Postgres {
            opts.pg_restarts
        } else {
            0
        },
    );
    let down = Duration::from_secs_f64(opts.down_seconds);
    let mut done = (0u32, 0u32, 0u32, 0u32);
    let fault_result: anyhow::Result<()> = async {
        for (fraction, fault) in &faults {
            // Progress = (accepted + finished runs) / 2N: early faults hit
            // the webhooks, later ones the execution.
            loop {
                cluster.supervise().await?;
                let finished = match cluster.db.progress().await {
                    Ok((open, wos)) => (wos - open).max(0) as f64,
                    Err(_) => 0.0,
                };
                let progress = (accepted_count.load(Ordering::Relaxed) as f64 + finished)
                    / (2.0 * opts.runs.max(1) as f64);
                if progress >= *fraction {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match fault {
                Fault::KillOrchestrator => {
                    cluster.kill_orchestrator(down).await?;
                    done.0 += 1;
                }
                Fault::KillWorker => {
                    cluster.kill_worker(down).await?;
                    done.1 += 1;
                }
                Fault::CutConnections => {
                    let outage = Duration::from_secs_f64(opts.cut_seconds);
                    proxy.cut(outage).await;
                    tokio::time::sleep(outage).await;
                    done.2 += 1;
                }
                Fault::RestartPostgres => {
                    pg::restart_cluster(&cluster.pg_admin_url).await?;
                    done.3 += 1;
                }
            }
        }
        Ok(())
    }
    .await;
    let load = load_task.await.context("the load task panicked")?;
    let load_time = load_started.elapsed();
    let outcome = async {
        fault_result?;
        let load = load?;
        // Settle: every run final, bounded.
        let deadline = Instant::now() + opts.settle_timeout;
        let mut quiet = 0;
        while Instant::now() < deadline {
            cluster.supervise().await?;
            match cluster.db.progress().await {
                Ok((0, wos)) if wos as usize >= load.accepted.len() => {
                    quiet += 1;
                    if quiet >= 3 {
                        break;
                    }
                }
                _ => quiet = 0,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(load)
    }
    .await;

    // Judge whatever the outcome, then stop everything.
    let judged = match outcome {
        Ok(load) => judge(&cluster, opts, &token, &load)
            .await
            .map(|(v, lat)| (v, lat, load)),
        Err(e) => Err(e),
    };
    for w in &cluster.workers {
        w.lock().await.stop(Duration::from_secs(10)).await;
    }
    cluster
        .serve
        .lock()
        .await
        .stop(Duration::from_secs(10))
        .await;
    drop(proxy);
    let (mut verdict, latencies, load) = judged?;
    for incident in cluster.incidents.lock().await.iter() {
        verdict.violations.push(incident.clone());
    }
    let pick = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        Duration::from_micros(latencies[i.min(latencies.len() - 1)].max(0) as u64)
    };
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.db.close().await;
    }
    Ok(Summary {
        db: opts.db,
        requested: opts.runs,
        gave_up: load.gave_up.len(),
        retries: load.retries,
        latency_p50: pick(0.5),
        latency_p99: pick(0.99),
        latency_max: pick(1.0),
        verdict,
        orchestrator_kills: done.0,
        worker_kills: done.1,
        cuts: done.2,
        pg_restarts: done.3,
        load_time,
        total_time: started.elapsed(),
        work_dir: work_dir.to_path_buf(),
    })
}

/// Reads the database and the API, applies the checks; returns the verdict
/// and every final run's webhook-to-final latency (µs, sorted).
async fn judge(
    cluster: &Cluster,
    opts: &Options,
    token: &str,
    load: &load::LoadResult,
) -> anyhow::Result<(Verdict, Vec<i64>)> {
    let db = &cluster.db;
    let (job_a, job_b) = db.job_ids().await?;
    let runs = db.runs().await?;
    let mut latencies: Vec<i64> = runs
        .iter()
        .filter_map(|r| r.finished_at.map(|f| f - r.inserted_at))
        .collect();
    latencies.sort_unstable();
    let observed = Observed {
        accepted: load.accepted.iter().map(|(_, id)| id.clone()).collect(),
        work_orders: db.work_orders().await?,
        steps: db.steps().await?,
        marker_lines: db.marker_lines().await?,
        runs,
        job_a,
        job_b,
        worker_kills: cluster.worker_kills.lock().await.clone(),
        orchestrator_starts_us: cluster.orchestrator_starts.lock().await.clone(),
        lost_bound_us: i64::try_from(
            (opts.run_lease_seconds + opts.lost_slack_seconds) * 1_000_000,
        )
        .unwrap_or(i64::MAX),
    };
    let mut verdict = checks::judge(&observed);
    for (n, e) in &load.gave_up {
        verdict
            .violations
            .push(format!("webhook {n} was never answered 200: {e}"));
    }
    cluster
        .api_check(token, &observed.accepted, &mut verdict.violations)
        .await;
    Ok((verdict, latencies))
}

/// Health probing before the cluster exists.
struct Probe {
    http: reqwest::Client,
    base_url: String,
}

impl Probe {
    async fn wait_healthy(&self, serve: &Mutex<Managed>, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health", self.base_url))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            let mut s = serve.lock().await;
            if let Some(status) = s.exited() {
                anyhow::bail!(
                    "gabbro serve exited ({status}) before answering /health:\n{}",
                    s.log_tail(30)
                );
            }
            drop(s);
            anyhow::ensure!(
                Instant::now() < deadline,
                "gabbro serve did not answer /health within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_each_kind_evenly_and_interleaves_them() {
        let s = schedule(3, 1, 1, 0);
        let kinds: Vec<Fault> = s.iter().map(|f| f.1).collect();
        assert_eq!(
            kinds,
            [
                Fault::KillOrchestrator,
                Fault::KillOrchestrator,
                Fault::KillWorker,
                Fault::CutConnections,
                Fault::KillOrchestrator
            ]
        );
        assert_eq!(s[0].0, 0.25);
        assert_eq!(s[4].0, 0.75);
        assert!(schedule(0, 0, 0, 0).is_empty());
    }
}
