//! The run ledger on both databases: the happy path, idempotent replays,
//! gabbro's `seq` ordering, Lightning's refusals, holders, late truth.

use gabbro_model::RunState;
use gabbro_store::testing::{SeedOptions, Seeded, TestDb, claimed_run, seed_workflow};
use gabbro_store::{
    Backend, NewLogLine, RunComplete, StepComplete, StepStart, Store, StoreError, exec, scalar,
};

async fn one_claimed_run(s: &Store, seed: &Seeded, worker: &str) -> String {
    claimed_run(s, seed, worker).await.expect("a claimed run")
}

async fn text(s: &Store, sql: &'static str, id: &str) -> Option<String> {
    let mut c = s.read().await.unwrap();
    scalar!(c, String, sql, id).unwrap()
}

fn log(msg: &str) -> NewLogLine {
    NewLogLine {
        message: serde_json::json!([msg]),
        level: "info".into(),
        source: "JOB".into(),
        timestamp: None,
        step_id: None,
    }
}

fn done(reason: &str) -> RunComplete {
    RunComplete {
        reason: reason.into(),
        ..Default::default()
    }
}

async fn happy_path_and_replays(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(
        s,
        SeedOptions {
            workflow_concurrency: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let run = one_claimed_run(s, &seed, "w1").await;
    let w = Some("w1");
    let wo = text(s, "SELECT work_order_id FROM runs WHERE id = $1", &run)
        .await
        .unwrap();

    s.run_start(&run, w, Some(1_700_000_000_000_000), None)
        .await
        .unwrap();
    s.run_start(&run, w, None, None).await.unwrap(); // replay
    assert_eq!(
        text(s, "SELECT state FROM work_orders WHERE id = $1", &wo)
            .await
            .as_deref(),
        Some("running")
    );

    let a = StepStart {
        step_id: "step-a".into(),
        job_id: seed.job_ids[0].clone(),
        ..Default::default()
    };
    assert_eq!(s.step_start(&run, w, a.clone()).await.unwrap(), "step-a");
    assert_eq!(s.step_start(&run, w, a).await.unwrap(), "step-a"); // replay
    s.append_logs(&run, w, vec![log("hello"), log("world")], None)
        .await
        .unwrap();
    let out = r#"{"data": {"y" : 2}}"#;
    let done_a = StepComplete {
        step_id: "step-a".into(),
        reason: "success".into(),
        output_dataclip_id: Some("clip-a".into()),
        output_dataclip: Some(out.into()),
        ..Default::default()
    };
    s.step_complete(&run, w, done_a.clone()).await.unwrap();
    s.step_complete(&run, w, done_a).await.unwrap(); // replay
    assert_eq!(
        text(s, "SELECT body FROM dataclips WHERE id = $1", "clip-a")
            .await
            .as_deref(),
        Some(out)
    );

    let bad_job = StepStart {
        step_id: "x".into(),
        job_id: "not-in-snapshot".into(),
        ..Default::default()
    };
    match s.step_start(&run, w, bad_job).await.unwrap_err() {
        StoreError::Rejected { field, message } => {
            assert_eq!((field, message.as_str()), ("job_id", "does not exist"))
        }
        e => panic!("{e}"),
    }
    let unknown = StepComplete {
        step_id: "nope".into(),
        reason: "success".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.step_complete(&run, w, unknown).await.unwrap_err(),
        StoreError::Rejected {
            field: "step_id",
            ..
        }
    ));
    // Another worker may not touch the run.
    assert!(matches!(
        s.run_complete(&run, Some("w2"), done("success"))
            .await
            .unwrap_err(),
        StoreError::NotHolder
    ));

    let b = StepStart {
        step_id: "step-b".into(),
        job_id: seed.job_ids[1].clone(),
        input_dataclip_id: Some("clip-a".into()),
        ..Default::default()
    };
    s.step_start(&run, w, b).await.unwrap();
    s.step_complete(
        &run,
        w,
        StepComplete {
            step_id: "step-b".into(),
            reason: "fail".into(),
            error_type: Some("TypeError".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.run_complete(&run, w, done("fail")).await.unwrap(),
        RunState::Failed
    );
    assert_eq!(
        s.run_complete(&run, w, done("fail")).await.unwrap(),
        RunState::Failed
    ); // replay
    match s.run_complete(&run, w, done("success")).await.unwrap_err() {
        StoreError::Rejected { field, message } => {
            assert_eq!(
                (field, message.as_str()),
                ("state", "already in completed state")
            )
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        text(s, "SELECT state FROM runs WHERE id = $1", &run)
            .await
            .as_deref(),
        Some("failed")
    );
    assert_eq!(
        text(s, "SELECT state FROM work_orders WHERE id = $1", &wo)
            .await
            .as_deref(),
        Some("failed")
    );
    let mut c = s.read().await.unwrap();
    let steps = scalar!(
        c,
        i64,
        "SELECT count(*) FROM run_steps WHERE run_id = $1",
        &run
    )
    .unwrap();
    assert_eq!(steps, Some(2));
    let logs = scalar!(
        c,
        i64,
        "SELECT count(*) FROM log_lines WHERE run_id = $1",
        &run
    )
    .unwrap();
    assert_eq!(logs, Some(2));
    drop(c);
    // The slot was freed: the limited workflow hands out its next run.
    let next = one_claimed_run(s, &seed, "w1").await;
    assert_ne!(next, run);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_happy_path_and_replays() {
    happy_path_and_replays(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_happy_path_and_replays() {
    happy_path_and_replays(Backend::Postgres).await;
}

async fn seq_orders_events(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let run = one_claimed_run(s, &seed, "w1").await;
    let w = Some("w1");
    s.run_start(&run, w, None, Some(1)).await.unwrap();
    // A gap names the expected seq.
    let gap = s
        .append_logs(&run, w, vec![log("x")], Some(3))
        .await
        .unwrap_err();
    assert!(matches!(gap, StoreError::SeqGap { expected: 2 }), "{gap}");
    let ids = s
        .append_logs(&run, w, vec![log("a"), log("b")], Some(2))
        .await
        .unwrap();
    // A replay answers with the same ids and adds nothing.
    let again = s
        .append_logs(&run, w, vec![log("a"), log("b")], Some(2))
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    let mut sorted = ids.clone();
    sorted.sort();
    let mut again_sorted = again.clone();
    again_sorted.sort();
    assert_eq!(sorted, again_sorted);
    // A replayed run:start after later events is still fine.
    s.run_start(&run, w, None, Some(1)).await.unwrap();
    // A refused event uses up its seq, so the journal can move on.
    let bad = StepStart {
        step_id: "s".into(),
        job_id: "nope".into(),
        seq: Some(3),
        ..Default::default()
    };
    assert!(s.step_start(&run, w, bad).await.is_err());
    assert_eq!(
        s.run_complete(
            &run,
            w,
            RunComplete {
                reason: "ok".into(),
                seq: Some(4),
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        RunState::Success
    );
    let mut c = s.read().await.unwrap();
    assert_eq!(
        scalar!(
            c,
            i64,
            "SELECT count(*) FROM log_lines WHERE run_id = $1",
            &run
        )
        .unwrap(),
        Some(2)
    );
    drop(c);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_seq_orders_events() {
    seq_orders_events(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_seq_orders_events() {
    seq_orders_events(Backend::Postgres).await;
}

async fn late_truth_overrides_lost(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let run = one_claimed_run(s, &seed, "w1").await;
    s.run_start(&run, Some("w1"), None, None).await.unwrap();
    let r = run.clone();
    s.write(move |mut c| Box::pin(async move {
        exec!(c, "UPDATE runs SET state = 'lost', error_type = 'LostAfterStart', finished_at = 1 WHERE id = $1", r)?;
        Ok(())
    }))
    .await
    .unwrap();
    // Not from another worker, nor from the API.
    assert!(
        s.run_complete(&run, Some("w2"), done("success"))
            .await
            .is_err()
    );
    assert!(s.run_complete(&run, None, done("success")).await.is_err());
    assert_eq!(
        s.run_complete(&run, Some("w1"), done("success"))
            .await
            .unwrap(),
        RunState::Success
    );
    assert_eq!(
        text(s, "SELECT state FROM runs WHERE id = $1", &run)
            .await
            .as_deref(),
        Some("success")
    );
    let mut c = s.read().await.unwrap();
    let noted = scalar!(
        c,
        i64,
        "SELECT count(*) FROM log_lines WHERE run_id = $1 AND source = 'gabbro'",
        &run
    )
    .unwrap();
    assert_eq!(noted, Some(1), "the change is logged");
    drop(c);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_late_truth_overrides_lost() {
    late_truth_overrides_lost(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_late_truth_overrides_lost() {
    late_truth_overrides_lost(Backend::Postgres).await;
}

async fn retry_and_rerun(backend: Backend) {
    let db = TestDb::new(backend).await.expect("test database");
    let s = &db.store;
    let seed = seed_workflow(s, SeedOptions::default()).await.unwrap();
    let run = one_claimed_run(s, &seed, "w1").await;
    let w = Some("w1");
    let input = text(s, "SELECT dataclip_id FROM runs WHERE id = $1", &run)
        .await
        .unwrap();
    let wo = text(s, "SELECT work_order_id FROM runs WHERE id = $1", &run)
        .await
        .unwrap();
    s.run_start(&run, w, None, None).await.unwrap();
    s.step_start(
        &run,
        w,
        StepStart {
            step_id: "sa".into(),
            job_id: seed.job_ids[0].clone(),
            input_dataclip_id: Some(input.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.step_complete(
        &run,
        w,
        StepComplete {
            step_id: "sa".into(),
            reason: "success".into(),
            output_dataclip_id: Some("ca".into()),
            output_dataclip: Some("{}".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.step_start(
        &run,
        w,
        StepStart {
            step_id: "sb".into(),
            job_id: seed.job_ids[1].clone(),
            input_dataclip_id: Some("ca".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.step_complete(
        &run,
        w,
        StepComplete {
            step_id: "sb".into(),
            reason: "fail".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.run_complete(&run, w, done("fail")).await.unwrap();

    // Retry from step b: starts at job b with b's input, reuses step a.
    let retry = s.retry_from_step(&run, "sb", None).await.unwrap();
    assert_eq!(
        text(s, "SELECT starting_job_id FROM runs WHERE id = $1", &retry).await,
        Some(seed.job_ids[1].clone())
    );
    assert_eq!(
        text(s, "SELECT dataclip_id FROM runs WHERE id = $1", &retry)
            .await
            .as_deref(),
        Some("ca")
    );
    assert_eq!(
        text(s, "SELECT queue FROM runs WHERE id = $1", &retry)
            .await
            .as_deref(),
        Some("manual")
    );
    assert_eq!(
        text(s, "SELECT step_id FROM run_steps WHERE run_id = $1", &retry)
            .await
            .as_deref(),
        Some("sa")
    );
    assert_eq!(
        text(s, "SELECT state FROM work_orders WHERE id = $1", &wo)
            .await
            .as_deref(),
        Some("pending")
    );
    assert!(matches!(
        s.retry_from_step(&run, "nope", None).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));

    // Bulk rerun: from the first run's trigger with the original input.
    let out = s
        .rerun_work_orders(vec![wo.clone(), "missing".into()], None)
        .await
        .unwrap();
    assert_eq!(out.enqueued.len(), 1);
    assert_eq!(out.discarded.len(), 1);
    let rerun = &out.enqueued[0].1;
    assert_eq!(
        text(s, "SELECT dataclip_id FROM runs WHERE id = $1", rerun).await,
        Some(input)
    );
    assert_eq!(
        text(
            s,
            "SELECT starting_trigger_id FROM runs WHERE id = $1",
            rerun
        )
        .await,
        Some(seed.trigger_id.clone())
    );

    // A manual run starts at the trigger's first job with a saved input.
    let (mwo, mrun) = s
        .create_manual_run(&seed.workflow_id, None, r#"{"m":1}"#, None)
        .await
        .unwrap();
    assert_eq!(
        text(s, "SELECT starting_job_id FROM runs WHERE id = $1", &mrun).await,
        Some(seed.job_ids[0].clone())
    );
    assert_eq!(
        text(s, "SELECT state FROM work_orders WHERE id = $1", &mwo)
            .await
            .as_deref(),
        Some("pending")
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_retry_and_rerun() {
    retry_and_rerun(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_retry_and_rerun() {
    retry_and_rerun(Backend::Postgres).await;
}
