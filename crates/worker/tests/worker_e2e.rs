//! `gabbro worker` against a Lightning-style server double over real
//! sockets, executing runs in real child processes (the runtime's child
//! mode): a run reaches `run:complete` with the steps, dataclips and logs
//! its job produced; the worker survives a server that stops answering,
//! answers slowly, replies errors, sends malformed frames or drops the
//! connection, and never exits on its own.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use gabbro_protocol::{Reason, RunEvent};
use gabbro_worker::WorkerArgs;
use serde_json::{Value, json};
use support::{Lightning, Mode, SECRET, one_job_run};
use tokio::sync::watch;

struct RunningWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<i32>>,
    dir: PathBuf,
}

impl RunningWorker {
    fn start(l: &Lightning, tweak: impl FnOnce(&mut WorkerArgs)) -> RunningWorker {
        let dir = std::env::temp_dir().join(format!("gabbro-worker-test-{}", uuid::Uuid::new_v4()));
        let mut args = WorkerArgs {
            lightning: Some(l.url.clone()),
            secret: Some(SECRET.into()),
            capacity: Some(2),
            backoff: Some("0.05/0.3".into()),
            message_timeout: Some(2),
            claim_timeout: Some(2),
            port: Some(0),
            journal_dir: Some(dir.clone()),
            child_exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_gabbro-test-child"))),
            child_args: Some(vec![]),
            kill_grace: Some(2),
            ..Default::default()
        };
        tweak(&mut args);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(gabbro_worker::run_until(args, rx));
        RunningWorker { stop, task, dir }
    }

    /// The worker is still running (it never exits on server misbehaviour).
    fn assert_alive(&self) {
        assert!(!self.task.is_finished(), "the worker exited");
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        let code = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
            .expect("worker result");
        assert_eq!(code, 0);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ADD_ONE: &str = "fn(state => { console.log('A sees', state.configuration.user); \
     return { ...state, data: { ...state.data, y: state.data.x + 1 } }; });";

fn step_starts(events: &[RunEvent]) -> Vec<&gabbro_protocol::StepStart> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepStart(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn step_completes(events: &[RunEvent]) -> Vec<&gabbro_protocol::StepComplete> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::StepComplete(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The run's events are complete and right: one step, its dataclips, the
/// job's log line, the final state.
fn assert_add_one_run(l: &Lightning, run_id: &str) {
    let events = l.events(run_id);
    assert!(
        matches!(
            events.iter().find(|e| !matches!(e, RunEvent::RunLog(_))),
            Some(RunEvent::RunStart(_))
        ),
        "run:start comes before any step: {events:#?}"
    );
    let starts = step_starts(&events);
    let completes = step_completes(&events);
    assert_eq!(starts.len(), 1, "{events:#?}");
    assert_eq!(completes.len(), 1, "{events:#?}");
    let (start, complete) = (starts[0], completes[0]);
    assert_eq!(start.job_id, "job-A");
    assert_eq!(start.input_dataclip_id.as_deref(), Some("d"));
    assert_eq!(complete.step_id, start.step_id);
    assert_eq!(complete.reason, Reason::Success);
    let output: Value = serde_json::from_str(complete.output_dataclip.as_deref().unwrap()).unwrap();
    assert_eq!(output["data"], json!({"x": 1, "y": 2}));
    assert!(
        output.get("configuration").is_none(),
        "credentials never leave in outputs"
    );
    let job_log = events.iter().find_map(|e| match e {
        RunEvent::RunLog(l) if l.source.as_deref() == Some("JOB") => Some(l),
        _ => None,
    });
    let job_log = job_log.expect("the job's console.log arrives");
    assert_eq!(job_log.message, vec![json!("A sees"), json!("u")]);
    assert_eq!(job_log.step_id.as_deref(), Some(start.step_id.as_str()));
    let done = l.completed(run_id).unwrap();
    assert_eq!(done.reason, Reason::Success);
    assert_eq!(done.final_dataclip_id, complete.output_dataclip_id);
    assert_eq!(done.final_state.as_ref().unwrap()["data"]["y"], json!(2));
    // seq numbers are 1..n without gaps.
    let seqs: Vec<u64> = events.iter().filter_map(|e| e.seq()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let all =
        serde_json::to_string(&events.iter().map(|e| e.payload()).collect::<Vec<_>>()).unwrap();
    assert!(
        !all.contains("s3cret-pw"),
        "a credential value reached the orchestrator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reaches_run_complete_with_steps_dataclips_and_logs() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.enqueue(one_job_run("run-1", ADD_ONE));
    l.wait_complete("run-1", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-1");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credential_ends_the_run_in_exception_without_starting_it() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    let mut run = one_job_run("run-nocred", ADD_ONE);
    run.credentials.clear();
    l.enqueue(run);
    let done = l.wait_complete("run-nocred", Duration::from_secs(30)).await;
    assert_eq!(done.reason, Reason::Exception);
    assert_eq!(done.error_type.as_deref(), Some("CredentialLoadError"));
    let events = l.events("run-nocred");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RunEvent::RunStart(_) | RunEvent::StepStart(_)))
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_that_stops_answering() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.set_mode(Mode::Silent);
    l.enqueue(one_job_run("run-s", ADD_ONE));
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.assert_alive();
    assert!(l.completed("run-s").is_none());
    l.set_mode(Mode::Normal);
    l.wait_complete("run-s", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-s");
    w.assert_alive();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_slow_server() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.set_mode(Mode::Slow(Duration::from_millis(300)));
    l.enqueue(one_job_run("run-slow", ADD_ONE));
    l.wait_complete("run-slow", Duration::from_secs(60)).await;
    assert_add_one_run(&l, "run-slow");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backs_off_on_error_replies_and_recovers() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.set_mode(Mode::Errors);
    l.enqueue(one_job_run("run-e", ADD_ONE));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let claims_during_errors = l.claims();
    w.assert_alive();
    l.set_mode(Mode::Normal);
    l.wait_complete("run-e", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-e");
    // Error replies are not counted as claims by the double; the worker
    // kept claiming, with backoff, and got the run once errors stopped.
    assert_eq!(claims_during_errors, 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignores_malformed_frames() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.set_mode(Mode::Malformed);
    l.enqueue(one_job_run("run-m", ADD_ONE));
    l.wait_complete("run-m", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-m");
    w.assert_alive();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resends_after_the_connection_drops_mid_run() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    // Cut the connection a few frames into the run.
    l.enqueue(one_job_run("run-d", ADD_ONE));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !l
        .events("run-d")
        .iter()
        .any(|e| matches!(e, RunEvent::RunStart(_)))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    l.drop_after(2);
    l.wait_complete("run-d", Duration::from_secs(30)).await;
    assert!(l.connections() >= 2, "the worker reconnected");
    assert_add_one_run(&l, "run-d");
    w.assert_alive();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_when_heartbeats_go_unanswered_and_keeps_working() {
    let l = Lightning::start().await;
    l.set_mode(Mode::NoHeartbeat);
    let w = RunningWorker::start(&l, |a| a.heartbeat_seconds = Some(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while l.connections() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect after missed heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    l.set_mode(Mode::Normal);
    l.enqueue(one_job_run("run-hb", ADD_ONE));
    l.wait_complete("run-hb", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-hb");
    w.assert_alive();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoins_and_resends_when_the_server_lost_the_run_channel() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.unmatch_next(3);
    l.enqueue(one_job_run("run-u", ADD_ONE));
    l.wait_complete("run-u", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-u");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_a_secret() {
    let args = WorkerArgs {
        lightning: Some("ws://127.0.0.1:9/worker".into()),
        ..Default::default()
    };
    // WORKER_SECRET is not set in the test environment.
    if std::env::var("WORKER_SECRET").is_ok() || std::env::var("GABBRO_WORKER_SECRET").is_ok() {
        return;
    }
    let (_tx, rx) = watch::channel(false);
    let err = gabbro_worker::run_until(args, rx).await.unwrap_err();
    assert!(err.to_string().contains("secret"), "{err}");
}

fn with_options(mut run: support::TestRun, options: Value) -> support::TestRun {
    run.plan["options"] = options;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_timeout_and_oom_runs_end_right_while_other_runs_succeed() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |a| a.capacity = Some(3));
    l.enqueue(one_job_run("ok-1", ADD_ONE));
    l.enqueue(one_job_run(
        "crash",
        "fn(state => { return notDefinedAnywhere.x; });",
    ));
    l.enqueue(with_options(
        one_job_run("timeout", "fn(state => { while (true) {} });"),
        json!({"run_timeout_ms": 1000}),
    ));
    l.enqueue(with_options(
        one_job_run(
            "oom",
            "fn(state => { const a = []; while (true) { a.push(new Array(100000).fill('x')); } });",
        ),
        json!({"run_memory_limit_mb": 64, "run_timeout_ms": 20000}),
    ));
    l.enqueue(one_job_run("ok-2", ADD_ONE));
    let long = Duration::from_secs(60);
    let crash = l.wait_complete("crash", long).await;
    assert_eq!(crash.reason, Reason::Crash, "{crash:?}");
    let timeout = l.wait_complete("timeout", long).await;
    assert_eq!(
        (timeout.reason, timeout.error_type.as_deref()),
        (Reason::Kill, Some("TimeoutError")),
        "{timeout:?}"
    );
    let oom = l.wait_complete("oom", long).await;
    assert_eq!(
        (oom.reason, oom.error_type.as_deref()),
        (Reason::Kill, Some("OOMError")),
        "{oom:?}"
    );
    for ok in ["ok-1", "ok-2"] {
        l.wait_complete(ok, long).await;
        assert_add_one_run(&l, ok);
    }
    // Each failed run closed its step with the same reason.
    for (id, reason) in [
        ("crash", Reason::Crash),
        ("timeout", Reason::Kill),
        ("oom", Reason::Kill),
    ] {
        let events = l.events(id);
        let completes = step_completes(&events);
        assert_eq!(completes.len(), 1, "{id}: {events:#?}");
        assert_eq!(completes[0].reason, reason, "{id}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_routes_along_edges_and_chains_dataclips() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    let mut run = one_job_run("route", "fn(state => { const x = null; return x.y; });");
    run.plan["jobs"].as_array_mut().unwrap().extend([
        json!({"id": "job-H", "name": "H", "adaptor": "@openfn/language-common@3.3.4",
                   "body": "fn(state => ({ ...state, data: { handled: true } }))"}),
        json!({"id": "job-S", "name": "S", "adaptor": "@openfn/language-common@3.3.4",
                   "body": "fn(state => state)"}),
    ]);
    run.plan["edges"].as_array_mut().unwrap().extend([
        json!({"id": "e2", "source_job_id": "job-A", "target_job_id": "job-H", "condition": "on_job_failure", "enabled": true}),
        json!({"id": "e3", "source_job_id": "job-A", "target_job_id": "job-S", "condition": "on_job_success", "enabled": true}),
    ]);
    l.enqueue(run);
    let done = l.wait_complete("route", Duration::from_secs(30)).await;
    let events = l.events("route");
    let starts = step_starts(&events);
    let completes = step_completes(&events);
    let jobs: Vec<&str> = starts.iter().map(|s| s.job_id.as_str()).collect();
    assert_eq!(jobs, ["job-A", "job-H"], "{events:#?}");
    assert_eq!(completes[0].reason, Reason::Fail);
    assert_eq!(completes[0].error_type.as_deref(), Some("RuntimeError"));
    assert_eq!(starts[1].input_dataclip_id, completes[0].output_dataclip_id);
    assert_eq!(
        done.reason,
        Reason::Success,
        "a handled failure ends the run in success"
    );
    assert_eq!(done.final_dataclip_id, completes[1].output_dataclip_id);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_are_replayed_from_the_journal_after_a_restart() {
    let l = Lightning::start().await;
    let dir = std::env::temp_dir().join(format!("gabbro-worker-journal-{}", uuid::Uuid::new_v4()));
    let journal_dir = dir.clone();
    let tweak = move |a: &mut WorkerArgs| {
        a.journal_dir = Some(journal_dir.clone());
        a.max_run_duration = Some(1);
        a.kill_grace = Some(1);
    };
    let first = RunningWorker::start(&l, tweak.clone());
    // A job slow enough that the server can go quiet in the middle of it.
    l.enqueue(with_options(
        one_job_run(
            "run-j",
            "fn(state => new Promise(resolve => setTimeout(() => { console.log('done waiting'); \
             resolve({ ...state, data: { y: 2 } }); }, 300)));",
        ),
        json!({"run_timeout_ms": 10000}),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while step_starts(&l.events("run-j")).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    l.set_mode(Mode::Silent);
    // Stop the worker while the orchestrator is silent: it exits 0 with the
    // rest of the run still owed, kept in its journal.
    first.stop.send(true).unwrap();
    let code = tokio::time::timeout(Duration::from_secs(30), first.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert!(l.completed("run-j").is_none());
    let files: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "the run's journal is kept");

    // A new worker on the same journal delivers the rest.
    l.set_mode(Mode::Normal);
    let second = RunningWorker::start(&l, tweak);
    let done = l.wait_complete("run-j", Duration::from_secs(30)).await;
    assert_eq!(done.reason, Reason::Success);
    let events = l.events("run-j");
    assert_eq!(step_starts(&events).len(), 1, "{events:#?}");
    assert_eq!(step_completes(&events).len(), 1, "{events:#?}");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e.seq()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "nothing missing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(dir.join("runs")).unwrap().count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal was not emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_key_only_runs_with_valid_tokens_execute() {
    use gabbro_protocol::RunSigner;
    let right = RunSigner::from_private_pem(include_str!(
        "../../protocol/tests/fixtures/run-token-test-key.pem"
    ))
    .unwrap()
    .public_key_pem()
    .to_string();
    let wrong = RunSigner::generate(2048)
        .unwrap()
        .public_key_pem()
        .to_string();

    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |a| a.lightning_public_key = Some(wrong));
    l.enqueue(one_job_run("run-bad-token", ADD_ONE));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        l.events("run-bad-token").is_empty(),
        "a run with an unverifiable token ran"
    );
    w.assert_alive();
    w.stop().await;

    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |a| a.lightning_public_key = Some(right));
    l.enqueue(one_job_run("run-good-token", ADD_ONE));
    l.wait_complete("run-good-token", Duration::from_secs(30))
        .await;
    assert_add_one_run(&l, "run-good-token");
    // A worker that verifies run tokens wants Lightning's RS256.
    let joins = l.queue_joins();
    assert!(!joins.is_empty());
    assert!(joins.iter().all(|j| j.run_token_alg.is_none()), "{joins:?}");
    w.stop().await;

    // Without a key it asks for the cheaper HS256 (gabbro's extension).
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |_| {});
    l.enqueue(one_job_run("run-no-key", ADD_ONE));
    l.wait_complete("run-no-key", Duration::from_secs(30)).await;
    let joins = l.queue_joins();
    assert!(!joins.is_empty());
    assert!(
        joins
            .iter()
            .all(|j| j.run_token_alg.as_deref() == Some("HS256")),
        "{joins:?}"
    );
    w.stop().await;
}

const FAST_CHILD: &str = r#"#!/bin/sh
while read line; do
  echo '{"event":"step-start","step_id":"job-A","key":"job-A","timestamp_us":1795844572205836}'
  echo '{"event":"log","level":"info","source":"JOB","message":["A sees","u"],"timestamp_us":1795844572205837,"step":"job-A"}'
  echo '{"event":"step-complete","step_id":"job-A","key":"job-A","reason":"success","error_type":null,"error_message":null,"output_json":"{\"data\":{\"x\":1,\"y\":2}}","redacted":false,"duration_ms":1,"mem":null,"timestamp_us":1795844572205838}'
  echo '{"event":"run-complete","reason":"success","error_type":null,"error_message":null,"final_state_json":"{\"data\":{\"x\":1,\"y\":2}}","leaves":["job-A"],"timestamp_us":1795844572205839}'
done
"#;

/// Not an assertion: how fast one worker drains runs from the double
/// (`cargo test -p gabbro-worker --test worker_e2e -- --ignored --nocapture measure`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_throughput_against_the_double() {
    let n: usize = std::env::var("GABBRO_MEASURE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let capacity: u32 = std::env::var("GABBRO_MEASURE_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // GABBRO_MEASURE_FAKE=1: a stand-in child that answers at once, to
    // see the worker's and protocol's own cost without JavaScript.
    let fake = std::env::var("GABBRO_MEASURE_FAKE").is_ok();
    let script =
        std::env::temp_dir().join(format!("gabbro-fast-child-{}.sh", uuid::Uuid::new_v4()));
    std::fs::write(&script, FAST_CHILD).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let l = Lightning::start().await;
    l.use_fast_tokens();
    let w = RunningWorker::start(&l, |a| {
        a.capacity = Some(capacity);
        if fake {
            a.child_exe = Some(script.clone());
        }
    });
    // Warm the pool.
    l.enqueue(one_job_run("warm", ADD_ONE));
    l.wait_complete("warm", Duration::from_secs(30)).await;
    let t = std::time::Instant::now();
    for i in 0..n {
        l.enqueue(one_job_run(&format!("m-{i}"), "fn(state => state);"));
    }
    for i in 0..n {
        l.wait_complete(&format!("m-{i}"), Duration::from_secs(300))
            .await;
    }
    let secs = t.elapsed().as_secs_f64();
    let events = l.events("m-0").len();
    println!(
        "{n} one-step runs, capacity {capacity}: {secs:.2} s, {:.0} runs/s, {events} events per run",
        n as f64 / secs
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_the_active_run_and_claims_nothing_more() {
    let l = Lightning::start().await;
    let w = RunningWorker::start(&l, |a| a.capacity = Some(1));
    l.enqueue(one_job_run(
        "run-active",
        "fn(state => new Promise(resolve => setTimeout(() => resolve({ ...state, data: { y: 2 } }), 500)));",
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while step_starts(&l.events("run-active")).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.stop.send(true).unwrap();
    l.enqueue(one_job_run("run-after-stop", ADD_ONE));
    let code = tokio::time::timeout(Duration::from_secs(30), w.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    let done = l
        .completed("run-active")
        .expect("the active run was finished before exit");
    assert_eq!(done.reason, Reason::Success);
    assert!(l.events("run-after-stop").is_empty(), "claimed after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_frees_its_slot_while_delivery_waits_but_only_one_run_more_waits() {
    let l = Lightning::start().await;
    // Every run:complete is answered 1 s late (the worker's message timeout
    // is 2 s): the runs stay undelivered that long.
    l.slow_to_answer("run:complete", Duration::from_secs(1));
    let w = RunningWorker::start(&l, |a| a.capacity = Some(1));
    let has = |id: &str, start: bool| {
        l.events(id).iter().any(|e| {
            if start {
                matches!(e, RunEvent::RunStart(_))
            } else {
                matches!(e, RunEvent::RunComplete(_))
            }
        })
    };
    l.enqueue(one_job_run("first", ADD_ONE));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !has("first", false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first never completed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_sent = tokio::time::Instant::now();
    l.enqueue(one_job_run("second", ADD_ONE));
    l.enqueue(one_job_run("third", ADD_ONE));
    // The one slot is free as soon as the first run's child is done.
    while !has("second", true) {
        assert!(
            first_sent.elapsed() < Duration::from_millis(700),
            "the second run waited for the first's delivery"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One delivery place: the second, executed, keeps its slot until the
    // first is delivered, so the third cannot start before that.
    while first_sent.elapsed() < Duration::from_millis(700) {
        assert!(
            !has("third", true),
            "a third run started while two were undelivered at capacity 1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ["first", "second", "third"] {
        l.wait_complete(id, Duration::from_secs(30)).await;
        assert_add_one_run(&l, id);
    }
    w.assert_alive();
    w.stop().await;
}

/// The run's journal files in `dir`.
fn journal_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("runs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn wait_journal_empty(dir: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while journal_files(dir) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal was not emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_later_error_is_not_an_ack_the_event_is_resent_until_applied() {
    let l = Lightning::start().await;
    l.enforce_seq();
    // The orchestrator's database is down for step:complete until released.
    l.fail_transiently("step:complete", u32::MAX);
    let w = RunningWorker::start(&l, |_| {});
    l.enqueue(one_job_run("run-t", ADD_ONE));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while l.transient_sent() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "step:complete was not sent again after a retry-later error"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Two error replies later the run is neither complete nor forgotten.
    assert!(l.completed("run-t").is_none());
    assert_eq!(
        journal_files(&w.dir),
        1,
        "the journal is kept while events are unapplied"
    );
    l.fail_transiently("step:complete", 0);
    l.wait_complete("run-t", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-t");
    wait_journal_empty(&w.dir).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_reply_makes_the_worker_resend_from_the_expected_seq() {
    let l = Lightning::start().await;
    l.enforce_seq();
    // At run:complete (seq s) the orchestrator says it expects s - 3.
    l.rewind_at("run:complete", 3);
    let w = RunningWorker::start(&l, |_| {});
    l.enqueue(one_job_run("run-g", ADD_ONE));
    let done = l.wait_complete("run-g", Duration::from_secs(30)).await;
    assert_add_one_run(&l, "run-g");
    let raw = l.raw_events("run-g");
    let last = done.seq.expect("run:complete carries its seq");
    for seq in last - 3..last {
        let times = raw.iter().filter(|e| e.seq() == Some(seq)).count();
        assert_eq!(times, 2, "seq {seq} sent again from the journal: {raw:#?}");
    }
    wait_journal_empty(&w.dir).await;
    w.stop().await;
}
