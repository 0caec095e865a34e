//! Runs every conformance case (`shared/conformance/cases`, or
//! `GABBRO_CONFORMANCE_DIR`) in-process, each in a fresh runtime with its own
//! HTTP fixture server, and checks the full pass criteria (README §4.3).
//! `GABBRO_CASE=<substring>` runs only matching cases.

mod support;

use gabbro_runtime::{Limits, Plan, execute};
use serde_json::{Value, json};
use support::*;

async fn run_case(path: &std::path::Path) -> Result<(), String> {
    let server = match routes_of(path) {
        Some(routes) => Some(FixtureServer::start(routes).await),
        None => None,
    };
    let base = server
        .as_ref()
        .map(|s| s.base_url.clone())
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let case = load_case(path, &base);
    let plan = Plan::from_json(&plan_of(&case)).map_err(|e| format!("plan: {e}"))?;
    let limits = Limits {
        timeout_ms: 60_000,
        ..Limits::default()
    };
    let mut events = Vec::new();
    let report = execute(&plan, case["input"].clone(), &limits, &[], &mut |e| {
        events.push(e)
    })
    .await;
    let actual = json!({
        "state": report.final_state.clone().unwrap_or(Value::Null),
        "steps": report.steps.iter().map(|s| json!({
            "id": s.id, "reason": s.reason, "error_type": s.error_type, "error_message": s.error_message
        })).collect::<Vec<_>>(),
        "run": {"reason": report.reason, "error_type": report.error_type, "error_message": report.error_message},
    });
    compare(&case, &actual).map_err(|why| {
        let logs: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                gabbro_runtime::Event::Log(l) => Some(format!(
                    "    [{} {}] {}",
                    l.source,
                    l.level,
                    Value::Array(l.message.clone())
                )),
                _ => None,
            })
            .collect();
        format!(
            "{why}\n  run: {}\n  logs:\n{}",
            actual["run"],
            logs.join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_pass() {
    let mut failed = Vec::new();
    let files = case_files();
    for path in &files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let started = std::time::Instant::now();
        match run_case(path).await {
            Ok(()) => println!("PASS {name} ({} ms)", started.elapsed().as_millis()),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failed.push(name);
            }
        }
    }
    println!(
        "{} of {} conformance cases pass",
        files.len() - failed.len(),
        files.len()
    );
    assert!(
        failed.is_empty(),
        "failing conformance cases: {}",
        failed.join(", ")
    );
}
