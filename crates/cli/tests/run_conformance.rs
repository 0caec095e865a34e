//! The conformance cases through the built `gabbro` binary, as a black box:
//! each case becomes a plan file and a state file, `gabbro run plan.json -s
//! state.json -o out.json --report report.json`, and the outputs are compared
//! as in `crates/runtime/tests/conformance.rs`. Also checks exit statuses and
//! child mode.

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const GABBRO: &str = env!("CARGO_BIN_EXE_gabbro");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gabbro-run-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

async fn run_case(path: &Path) -> Result<(), String> {
    let server = match routes_of(path) {
        Some(routes) => Some(FixtureServer::start(routes).await),
        None => None,
    };
    let base = server
        .as_ref()
        .map(|s| s.base_url.clone())
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let case = load_case(path, &base);
    let name = case["name"].as_str().unwrap_or("case").to_string();
    let dir = scratch(&name);
    let (plan, state, out, report) = (
        dir.join("plan.json"),
        dir.join("state.json"),
        dir.join("out.json"),
        dir.join("report.json"),
    );
    std::fs::write(&plan, plan_of(&case).to_string()).map_err(|e| e.to_string())?;
    std::fs::write(&state, case["input"].to_string()).map_err(|e| e.to_string())?;
    let status = tokio::process::Command::new(GABBRO)
        .arg("run")
        .arg(&plan)
        .arg("-s")
        .arg(&state)
        .arg("-o")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .arg("--quiet")
        .status()
        .await
        .map_err(|e| format!("cannot start gabbro: {e}"))?;
    let read = |p: &Path| -> Result<Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let report = read(&report)?;
    let actual = json!({"state": read(&out)?, "steps": report["steps"], "run": report["run"]});
    let _ = std::fs::remove_dir_all(&dir);
    let expected_code = if case["expected"]["run"]["reason"] == "success" {
        0
    } else {
        1
    };
    if status.code() != Some(expected_code) {
        return Err(format!("exit status {status}, expected {expected_code}"));
    }
    compare(&case, &actual)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_pass_through_gabbro_run() {
    let mut failed = Vec::new();
    let files = case_files();
    for path in &files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match run_case(path).await {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failed.push(name);
            }
        }
    }
    println!(
        "{} of {} cases pass through gabbro run",
        files.len() - failed.len(),
        files.len()
    );
    assert!(failed.is_empty(), "failing cases: {}", failed.join(", "));
}

#[tokio::test]
async fn a_bare_job_prints_its_final_state_and_logs() {
    let dir = scratch("bare");
    let job = dir.join("job.js");
    std::fs::write(
        &job,
        "fn(state => { console.log('hi from job'); return { ...state, n: 1 }; });",
    )
    .unwrap();
    let out = tokio::process::Command::new(GABBRO)
        .arg("run")
        .arg(&job)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state, json!({"data": {}, "n": 1}));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[JOB] info hi from job"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_usage_exits_2_and_a_failed_run_exits_1_with_its_state_written() {
    let dir = scratch("codes");
    let missing = tokio::process::Command::new(GABBRO)
        .args(["run", "/nonexistent/job.js"])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let bad_flag = tokio::process::Command::new(GABBRO)
        .args(["run", "--no-such-flag"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));

    let job = dir.join("job.js");
    std::fs::write(&job, "fn(state => { throw new Error('nope'); });").unwrap();
    let out = dir.join("out.json");
    let status = tokio::process::Command::new(GABBRO)
        .arg("run")
        .arg(&job)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(state["errors"]["job-1"]["message"], "nope");

    let slow = dir.join("slow.js");
    std::fs::write(&slow, "fn(state => { while (true) {} });").unwrap();
    let report = dir.join("report.json");
    let status = tokio::process::Command::new(GABBRO)
        .arg("run")
        .arg(&slow)
        .args(["--timeout", "0.3", "-q", "--report"])
        .arg(&report)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["run"]["error_type"], "TimeoutError");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn help_documents_every_flag() {
    let out = tokio::process::Command::new(GABBRO)
        .args(["run", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--state",
        "--adaptor",
        "--output",
        "--report",
        "--timeout",
        "--memory-limit",
        "-s",
        "-a",
        "-o",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn child_mode_streams_events_for_consecutive_runs_and_exits_on_eof() {
    let (mut child, mut stdin, mut lines) = spawn_child();
    for n in 1..=2 {
        let job =
            format!("fn(state => {{ console.log('run {n}'); return {{ ...state, n: {n} }}; }});");
        stdin
            .write_all(child_request(&job, 10000).as_bytes())
            .await
            .unwrap();
        let mut kinds = Vec::new();
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("child closed stdout mid-run");
            let event: Value = serde_json::from_str(&line).unwrap();
            let kind = event["event"].as_str().unwrap().to_string();
            kinds.push(kind.clone());
            if kind == "run-complete" {
                assert_eq!(event["reason"], "success", "{event}");
                let state: Value =
                    serde_json::from_str(event["final_state_json"].as_str().unwrap()).unwrap();
                assert_eq!(state["n"], n);
                break;
            }
        }
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("run-start"),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"step-start".to_string())
                && kinds.contains(&"step-complete".to_string())
        );
        assert!(kinds.contains(&"log".to_string()));
    }
    drop(stdin);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn child_mode_serves_a_piped_request_then_exits_at_eof() {
    let mut child = tokio::process::Command::new(GABBRO)
        .arg("__child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let request = json!({
        "plan": {"workflow": {"steps": [{"id": "a", "expression": "fn(state => new Promise(r => setTimeout(() => r({ ok: 1 }), 100)));"}]}},
        "input": {},
        "limits": {"timeout_ms": 10000, "memory_limit_mb": 128, "payload_limit_mb": 10.0, "log_payload_limit_mb": 1.0}
    });
    stdin
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("child did not exit after EOF")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let event: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(event["event"], "run-complete");
    assert_eq!(event["reason"], "success");
}

#[tokio::test]
async fn child_mode_exits_mid_run_when_its_parent_dies() {
    // `sh` starts the child busy in a run (its stdin an open pipe) and exits
    // a second later: the child is re-parented and must leave by itself.
    let dir = scratch("orphan");
    let request = dir.join("request.json");
    let body = json!({
        "plan": {"workflow": {"steps": [{"id": "a", "expression": "fn(state => { while (true) {} });"}]}},
        "input": {},
        "limits": {"timeout_ms": 60000, "memory_limit_mb": 128, "payload_limit_mb": 10.0, "log_payload_limit_mb": 1.0}
    });
    std::fs::write(&request, format!("{body}\n")).unwrap();
    let script = format!(
        "(cat {}; sleep 30) 2>/dev/null | {GABBRO} __child >/dev/null 2>&1 & echo $!; sleep 1",
        request.display()
    );
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("child pid");
    let proc_dir = format!("/proc/{pid}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&proc_dir).exists()
        && !std::fs::read_to_string(format!("{proc_dir}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "child {pid} still running after its parent died"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gabbro __child` with piped stdin and stdout (as lines).
fn spawn_child() -> (
    tokio::process::Child,
    tokio::process::ChildStdin,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = tokio::process::Command::new(GABBRO)
        .arg("__child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, stdin, lines)
}

/// A child-mode request for `expression`, as one JSON line.
fn child_request(expression: &str, timeout_ms: u64) -> String {
    let request = json!({
        "plan": {"workflow": {"steps": [{"id": "a", "adaptors": ["@openfn/language-common@latest"],
            "expression": expression}]}},
        "input": {"data": {}},
        "limits": {"timeout_ms": timeout_ms, "memory_limit_mb": 128, "payload_limit_mb": 10.0, "log_payload_limit_mb": 1.0},
        "secrets": []
    });
    format!("{request}\n")
}

/// Reads events until `run-complete`; returns it.
async fn run_complete(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Value {
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("child closed stdout mid-run");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "run-complete" {
            return event;
        }
    }
}

#[tokio::test]
async fn child_mode_runs_do_not_see_each_others_globals_or_adaptor_state() {
    // Each run executes in a fork of the child's prepared engine: what one
    // run leaves in the global object or in an adaptor's module is gone for
    // the next.
    let (mut child, mut stdin, mut lines) = spawn_child();
    let leave = "fn(state => { globalThis.left = 42; Object.prototype.polluted = 1; \
                 Array.prototype.push = null; return state; });";
    stdin
        .write_all(child_request(leave, 10000).as_bytes())
        .await
        .unwrap();
    let first = run_complete(&mut lines).await;
    assert_eq!(first["reason"], "success", "{first}");
    let look = "fn(state => { const seen = []; seen.push(typeof globalThis.left, typeof ({}).polluted); \
                return { ...state, seen }; });";
    stdin
        .write_all(child_request(look, 10000).as_bytes())
        .await
        .unwrap();
    let second = run_complete(&mut lines).await;
    assert_eq!(second["reason"], "success", "{second}");
    let state: Value = serde_json::from_str(second["final_state_json"].as_str().unwrap()).unwrap();
    assert_eq!(state["seen"], json!(["undefined", "undefined"]), "{state}");
    drop(stdin);
    let _ = child.wait().await;
}

#[tokio::test]
async fn child_mode_dies_as_its_run_process_died() {
    // The run's process (a fork of the child) is killed mid-run: the child
    // dies of the same signal without a `run-complete`, which is what the
    // worker's pool reports (here SIGKILL, as the kernel's OOM killer sends).
    let (mut child, mut stdin, mut lines) = spawn_child();
    let pid = child.id().unwrap();
    stdin
        .write_all(child_request("fn(state => { while (true) {} });", 60000).as_bytes())
        .await
        .unwrap();
    // The run has started once its first event is out.
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["event"], "run-start", "{first}");
    let forks = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let run_pid: i32 = forks
        .split_whitespace()
        .next()
        .expect("the run executes in a child process of its own")
        .parse()
        .unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(run_pid, libc::SIGKILL) }, 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("the child outlived its run's process")
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    while let Ok(Some(line)) = lines.next_line().await {
        assert!(!line.contains("run-complete"), "{line}");
    }
}
