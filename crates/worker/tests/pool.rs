//! The child-process pool against tiny stand-in children (shell scripts),
//! so each failure is exact: a child that crashes, hangs past its deadline,
//! or grows past its memory limit is reported as such, and a healthy child
//! is reused for the next run.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gabbro_protocol::Reason;
use gabbro_runtime::events::{ChildRequest, Event, Limits};
use gabbro_worker::pool::{Budget, ChildCommand, Outcome, Pool};
use serde_json::json;
use tokio::sync::mpsc;

fn script(body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("gabbro-fake-child-{}.sh", uuid::Uuid::new_v4()));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn pool(body: &str) -> Pool {
    Pool::new(
        ChildCommand {
            program: script(body),
            args: vec![],
        },
        2,
    )
}

fn request() -> ChildRequest {
    ChildRequest {
        plan: json!({"workflow": {"steps": [{"id": "a", "expression": "fn(s => s)"}]}}),
        input: json!({}),
        limits: Limits::default(),
        secrets: vec![],
    }
}

fn budget(timeout_ms: u64, memory_limit_mb: u64) -> Budget {
    Budget {
        timeout: Duration::from_millis(timeout_ms),
        grace: Duration::from_millis(200),
        memory_limit_mb,
    }
}

async fn execute(pool: &Pool, b: Budget) -> (Outcome, Vec<Event>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = pool.execute(&request(), b, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (outcome, events)
}

const COMPLETE_WITH_PID: &str = r#"while read line; do
  echo "not an event line"
  echo "{\"event\":\"run-complete\",\"reason\":\"success\",\"error_type\":null,\"error_message\":\"$$\",\"final_state_json\":null,\"leaves\":[],\"timestamp_us\":1}"
done"#;

#[tokio::test]
async fn a_healthy_child_is_reused_for_the_next_run() {
    let p = pool(COMPLETE_WITH_PID);
    let pid_of = |events: &[Event]| match events.last() {
        Some(Event::RunComplete { error_message, .. }) => error_message.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    let (o1, e1) = execute(&p, budget(5000, 100)).await;
    let (o2, e2) = execute(&p, budget(5000, 100)).await;
    assert_eq!(o1, Outcome::Completed);
    assert_eq!(o2, Outcome::Completed);
    assert_eq!(e1.len(), 1, "non-event lines are skipped");
    assert_eq!(pid_of(&e1), pid_of(&e2), "same child process");
    assert_eq!(p.idle_count(), 1);
}

#[tokio::test]
async fn a_child_that_exits_mid_run_is_a_crash() {
    let p = pool("read line\nexit 3");
    let (o, _) = execute(&p, budget(5000, 100)).await;
    let Outcome::Died {
        reason,
        error_type,
        message,
    } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!(reason, Reason::Crash);
    assert_eq!(error_type, "ExitError");
    assert!(message.contains('3'), "{message}");
    assert_eq!(p.idle_count(), 0);
}

#[tokio::test]
async fn a_child_past_its_deadline_is_killed_as_a_timeout() {
    let p = pool("read line\nexec sleep 30");
    let t = Instant::now();
    let (o, _) = execute(&p, budget(300, 100)).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let Outcome::Died {
        reason, error_type, ..
    } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!(
        (reason, error_type.as_str()),
        (Reason::Kill, "TimeoutError")
    );
}

#[tokio::test]
async fn a_child_over_its_memory_limit_is_killed_as_oom() {
    // awk doubles a string in its own process until far past the cap
    // (limit 1 MB + headroom); the pool must kill it first.
    let p = pool(
        "read line\nexec awk 'BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (length(s) < 1073741824) s = s s; print length(s) }'",
    );
    let (o, _) = execute(&p, budget(20_000, 1)).await;
    let Outcome::Died {
        reason, error_type, ..
    } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!((reason, error_type.as_str()), (Reason::Kill, "OOMError"));
}

#[tokio::test]
async fn a_missing_child_program_is_a_crash_not_a_panic() {
    let p = Pool::new(
        ChildCommand {
            program: PathBuf::from("/nonexistent/gabbro"),
            args: vec![],
        },
        1,
    );
    let (o, _) = execute(&p, budget(1000, 100)).await;
    assert!(
        matches!(
            o,
            Outcome::Died {
                reason: Reason::Crash,
                ..
            }
        ),
        "{o:?}"
    );
}
