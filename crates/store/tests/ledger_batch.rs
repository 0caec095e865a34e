//! `Store::apply_events`: events a run channel received together give the
//! same outcome as the per-event methods one by one, on both databases —
//! in one transaction when every event is new and legal, one by one when
//! one is a replay or a refusal.

use gabbro_model::RunState;
use gabbro_store::testing::{SeedOptions, TestDb, claimed_run, seed_workflow};
use gabbro_store::{
    Applied, Backend, LedgerEvent, NewLogLine, RunComplete, StepComplete, StepStart, Store,
    StoreError, scalar,
};

fn log(msg: &str, step: Option<&str>, seq: u64) -> LedgerEvent {
    LedgerEvent::Logs {
        lines: vec![NewLogLine {
            message: serde_json::json!([msg]),
            level: "info".into(),
            source: "JOB".into(),
            timestamp: None,
            step_id: step.map(str::to_string),
        }],
        seq: Some(seq),
    }
}

/// A one-step run as gabbro's worker sends it; `step` names the step and
/// its output dataclip; `job` is the step's job.
fn whole_run(step: &str, job: &str) -> Vec<LedgerEvent> {
    vec![
        LedgerEvent::RunStart {
            timestamp: Some(1_700_000_000_000_000),
            seq: Some(1),
        },
        log("Memory limit: 500mb", None, 2),
        LedgerEvent::StepStart(StepStart {
            step_id: step.into(),
            job_id: job.into(),
            seq: Some(3),
            ..Default::default()
        }),
        log("hello", Some(step), 4),
        LedgerEvent::StepComplete(StepComplete {
            step_id: step.into(),
            reason: "success".into(),
            output_dataclip_id: Some(format!("{step}-out")),
            output_dataclip: Some(r#"{"data":{}}"#.into()),
            seq: Some(5),
            ..Default::default()
        }),
        LedgerEvent::RunComplete(RunComplete {
            reason: "success".into(),
            seq: Some(6),
            ..Default::default()
        }),
    ]
}

async fn count(s: &Store, sql: &'static str, id: &str) -> i64 {
    let mut c = s.read().await.unwrap();
    scalar!(c, i64, sql, id).unwrap().unwrap_or(-1)
}

/// What a run's events left behind: (state, last_seq, steps, finished
/// steps, log lines).
async fn footprint(s: &Store, run: &str) -> (String, i64, i64, i64, i64) {
    let mut c = s.read().await.unwrap();
    let state: String = scalar!(c, String, "SELECT state FROM runs WHERE id = $1", run)
        .unwrap()
        .unwrap();
    drop(c);
    (
        state,
        count(
            s,
            "SELECT COALESCE(last_seq, 0) FROM runs WHERE id = $1",
            run,
        )
        .await,
        count(s, "SELECT count(*) FROM run_steps WHERE run_id = $1", run).await,
        count(
            s,
            "SELECT count(*) FROM steps s JOIN run_steps rs ON rs.step_id = s.id
             WHERE rs.run_id = $1 AND s.finished_at IS NOT NULL",
            run,
        )
        .await,
        count(s, "SELECT count(*) FROM log_lines WHERE run_id = $1", run).await,
    )
}

/// Ok/Err pattern of results, with the error's words.
fn outcomes(r: &[Result<Applied, StoreError>]) -> Vec<String> {
    r.iter()
        .map(|r| match r {
            Ok(Applied::Logs(ids)) => format!("logs {}", ids.len()),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

async fn batch_matches_one_by_one(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let job = seed.job_ids[0].clone();
    let w = Some("w1");

    // A whole run in one batch.
    let batched = claimed_run(s, &seed, "w1").await.unwrap();
    let got = s.apply_events(&batched, w, whole_run("b-step", &job)).await;
    assert_eq!(
        outcomes(&got),
        [
            "Started",
            "logs 1",
            "Step(\"b-step\")",
            "logs 1",
            "Step(\"b-step\")",
            "Finished(Success)"
        ]
    );
    assert_eq!(footprint(s, &batched).await, ("success".into(), 6, 1, 1, 2));

    // The same run, event by event: the same answers and the same rows.
    let single = claimed_run(s, &seed, "w1").await.unwrap();
    let mut one_by_one = Vec::new();
    for ev in whole_run("s-step", &job) {
        one_by_one.push(s.apply_event(&single, w, ev).await);
    }
    assert_eq!(
        outcomes(&one_by_one),
        outcomes(&got)
            .iter()
            .map(|o| o.replace("b-step", "s-step"))
            .collect::<Vec<_>>()
    );
    assert_eq!(footprint(s, &single).await, footprint(s, &batched).await);

    // The whole batch again (a journal replay): answered as before, with
    // the same log line ids, and nothing added.
    let again = s.apply_events(&batched, w, whole_run("b-step", &job)).await;
    assert_eq!(outcomes(&again), outcomes(&got));
    for (first, replay) in got.iter().zip(&again) {
        if let (Ok(Applied::Logs(a)), Ok(Applied::Logs(b))) = (first, replay) {
            assert_eq!(a, b, "a replayed log event answers with the stored ids");
        }
    }
    assert_eq!(footprint(s, &batched).await, ("success".into(), 6, 1, 1, 2));
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_batch_matches_one_by_one() {
    batch_matches_one_by_one(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_batch_matches_one_by_one() {
    batch_matches_one_by_one(Backend::Postgres).await;
}

/// A refused event inside a batch: the events before and after it are
/// applied, it alone is refused (and uses up its seq), exactly as one by one.
async fn refusal_inside_a_batch(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let job = seed.job_ids[0].clone();
    let w = Some("w1");
    let mut events = whole_run("r-step", &job);
    events[2] = LedgerEvent::StepStart(StepStart {
        step_id: "r-step".into(),
        job_id: "not-in-snapshot".into(),
        seq: Some(3),
        ..Default::default()
    });
    // Without its step the log line and step:complete are refused too.
    let run = claimed_run(s, &seed, "w1").await.unwrap();
    let got = s.apply_events(&run, w, events.clone()).await;

    let other = claimed_run(s, &seed, "w1").await.unwrap();
    let mut one_by_one = Vec::new();
    for ev in events {
        one_by_one.push(s.apply_event(&other, w, ev).await);
    }
    assert_eq!(outcomes(&got), outcomes(&one_by_one));
    assert_eq!(
        outcomes(&got),
        [
            "Started",
            "logs 1",
            "error job_id: does not exist",
            "error step_id: must be associated with the run",
            "error step_id: not found",
            "Finished(Success)"
        ]
    );
    assert_eq!(footprint(s, &run).await, ("success".into(), 6, 0, 0, 1));
    assert_eq!(footprint(s, &run).await, footprint(s, &other).await);

    // A batch that starts past the run's seq is a gap for every event.
    let third = claimed_run(s, &seed, "w1").await.unwrap();
    let gap = s
        .apply_events(&third, w, whole_run("g-step", &job)[1..].to_vec())
        .await;
    assert!(
        gap.iter()
            .all(|r| matches!(r, Err(StoreError::SeqGap { expected: 1 }))),
        "{:?}",
        outcomes(&gap)
    );
    assert_eq!(
        footprint(s, &third).await,
        (RunState::Claimed.as_str().into(), 0, 0, 0, 0)
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_refusal_inside_a_batch() {
    refusal_inside_a_batch(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_refusal_inside_a_batch() {
    refusal_inside_a_batch(Backend::Postgres).await;
}

async fn epoch_of(s: &Store, run: &str) -> i32 {
    let mut c = s.read().await.unwrap();
    scalar!(c, i32, "SELECT claim_epoch FROM runs WHERE id = $1", run)
        .unwrap()
        .unwrap()
}

async fn joined(s: &Store, run: &str) -> bool {
    count(
        s,
        "SELECT count(*) FROM runs WHERE id = $1 AND joined_at IS NOT NULL",
        run,
    )
    .await
        == 1
}

/// The run channel puts the join's lease record in front of the run's
/// first events: applied in their transaction under the claim epoch the
/// worker joined with; under a stale epoch (the run was requeued and
/// claimed again since) nothing of the batch is applied, in the batch and
/// in the one-by-one fallback alike.
async fn join_recorded_with_first_events(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let job = seed.job_ids[0].clone();
    let w = Some("w1");

    let run = claimed_run(s, &seed, "w1").await.unwrap();
    assert!(!joined(s, &run).await);
    let mut events = vec![LedgerEvent::Joined {
        claim_epoch: epoch_of(s, &run).await,
    }];
    events.extend(whole_run("j-step", &job));
    let got = s.apply_events(&run, w, events).await;
    assert_eq!(outcomes(&got)[..2], ["Joined", "Started"]);
    assert!(joined(s, &run).await, "the join is recorded");
    assert_eq!(footprint(s, &run).await, ("success".into(), 6, 1, 1, 2));

    // A stale claim epoch: refused, and so is everything behind it.
    let stale = claimed_run(s, &seed, "w1").await.unwrap();
    let mut events = vec![LedgerEvent::Joined {
        claim_epoch: epoch_of(s, &stale).await - 1,
    }];
    events.extend(whole_run("s-step", &job));
    let got = s.apply_events(&stale, w, events).await;
    assert_eq!(got.len(), 7);
    assert!(
        got.iter().all(|r| matches!(r, Err(StoreError::NotHolder))),
        "{:?}",
        outcomes(&got)
    );
    assert!(!joined(s, &stale).await);
    assert_eq!(
        footprint(s, &stale).await,
        (RunState::Claimed.as_str().into(), 0, 0, 0, 0)
    );

    // Another worker's join: refused the same way.
    let theirs = claimed_run(s, &seed, "w2").await.unwrap();
    let got = s
        .apply_events(
            &theirs,
            w,
            vec![
                LedgerEvent::Joined {
                    claim_epoch: epoch_of(s, &theirs).await,
                },
                whole_run("t-step", &job).remove(0),
            ],
        )
        .await;
    assert!(
        got.iter().all(|r| matches!(r, Err(StoreError::NotHolder))),
        "{:?}",
        outcomes(&got)
    );
    assert_eq!(
        footprint(s, &theirs).await,
        (RunState::Claimed.as_str().into(), 0, 0, 0, 0)
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_join_recorded_with_first_events() {
    join_recorded_with_first_events(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_join_recorded_with_first_events() {
    join_recorded_with_first_events(Backend::Postgres).await;
}

/// (run state, error_type, started_at, finished_at set, work order state).
async fn run_and_work_order(s: &Store, run: &str) -> (String, Option<String>, i64, bool, String) {
    #[derive(sqlx::FromRow)]
    struct Row {
        state: String,
        error_type: Option<String>,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        wo_state: String,
    }
    let mut c = s.read().await.unwrap();
    let r = gabbro_store::fetch_optional!(
        c,
        Row,
        "SELECT r.state, r.error_type, r.started_at, r.finished_at, wo.state AS wo_state
         FROM runs r JOIN work_orders wo ON wo.id = r.work_order_id WHERE r.id = $1",
        run
    )
    .unwrap()
    .unwrap();
    (
        r.state,
        r.error_type,
        r.started_at.unwrap_or(-1),
        r.finished_at.is_some(),
        r.wo_state,
    )
}

/// A batch records the run's start, finish and error in its one update of
/// the run, and its work order follows: from the run alone when it is the
/// work order's only run, from all of them when a retry added another.
async fn work_order_follows_batched_runs(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let job = seed.job_ids[0].clone();
    let w = Some("w1");
    let started = 1_700_000_000_000_000;

    let first = claimed_run(s, &seed, "w1").await.unwrap();
    let mut events = whole_run("f-step", &job);
    events.truncate(2);
    s.apply_events(&first, w, events).await;
    assert_eq!(
        run_and_work_order(s, &first).await,
        ("started".into(), None, started, false, "running".into())
    );

    // A rerun while it runs: the work order now has a second run, waiting.
    let wo: String = {
        let mut c = s.read().await.unwrap();
        scalar!(
            c,
            String,
            "SELECT work_order_id FROM runs WHERE id = $1",
            &first
        )
        .unwrap()
        .unwrap()
    };
    let retry = s.rerun_work_orders(vec![wo], None).await.unwrap().enqueued[0]
        .1
        .clone();

    // The first run fails: its own row says so, and the work order is
    // pending again (its other run is still to come), not failed.
    let mut rest = whole_run("f-step", &job).split_off(2);
    rest[3] = LedgerEvent::RunComplete(RunComplete {
        reason: "fail".into(),
        error_type: Some("TypeError".into()),
        seq: Some(6),
        ..Default::default()
    });
    let got = s.apply_events(&first, w, rest).await;
    assert_eq!(outcomes(&got)[3], "Finished(Failed)");
    assert_eq!(
        run_and_work_order(s, &first).await,
        (
            "failed".into(),
            Some("TypeError".into()),
            started,
            true,
            "pending".into()
        )
    );

    // The retry runs in one batch: the work order takes its outcome.
    let claimed = s
        .claim(gabbro_store::ClaimRequest {
            demand: 1,
            queues: Default::default(),
            worker_name: None,
            worker_id: "w1".into(),
        })
        .await
        .unwrap();
    assert_eq!(claimed[0].id, retry);
    let got = s.apply_events(&retry, w, whole_run("r-step", &job)).await;
    assert_eq!(outcomes(&got)[5], "Finished(Success)");
    assert_eq!(
        run_and_work_order(s, &retry).await,
        ("success".into(), None, started, true, "success".into())
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_work_order_follows_batched_runs() {
    work_order_follows_batched_runs(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_work_order_follows_batched_runs() {
    work_order_follows_batched_runs(Backend::Postgres).await;
}
