//! The harness end to end at a tiny scale against the real `gabbro` binary,
//! 40 webhooks on SQLite and on PostgreSQL: without faults (always run), and
//! through connection cuts, an orchestrator kill -9 and a database restart
//! (ignored until the findings of docs/reliability.md are fixed). Each passes only if
//! every run survives.
//!
//! The `gabbro` binary is found beside this test's target directory
//! (`target/<profile>/gabbro`, built by `cargo nextest run --workspace`) or
//! at `GABBRO_BIN`; if it is missing it is built with `cargo build -p gabbro`.

use std::path::PathBuf;
use std::process::Command;

fn gabbro_binary() -> PathBuf {
    if let Ok(p) = std::env::var("GABBRO_BIN") {
        return PathBuf::from(p);
    }
    // …/target/<profile>/deps/harness_small-<hash> → …/target/<profile>/gabbro
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("gabbro");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "gabbro", "--bin", "gabbro"])
            .status()
            .expect("cannot run cargo to build the gabbro binary");
        assert!(status.success(), "cargo build -p gabbro failed");
    }
    assert!(bin.exists(), "no gabbro binary at {}", bin.display());
    bin
}

fn run_harness(db: &str, orchestrator_kills: u32, cuts: u32, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gabbro-fault"))
        .arg("--gabbro")
        .arg(gabbro_binary())
        .args([
            "--db",
            db,
            "--runs",
            "40",
            "--worker-kills",
            "0",
            "--cut-seconds",
            "2",
        ])
        .args(["--delay-ms", "20", "--settle-seconds", "240"])
        .args(["--orchestrator-kills", &orchestrator_kills.to_string()])
        .args(["--cuts", &cuts.to_string()])
        .args(extra)
        .output()
        .expect("cannot run gabbro-fault");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gabbro-fault failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    assert!(line.starts_with("gabbro-fault: "), "{stdout}");
    assert!(line.contains("accepted=40 "), "{line}");
    assert!(
        line.contains(&format!("orchestrator_kills={orchestrator_kills} ")),
        "{line}"
    );
    assert!(line.contains(&format!("cuts={cuts} ")), "{line}");
    assert!(line.contains("success=40 "), "{line}");
    assert!(line.ends_with("violations=0"), "{line}");
}

// The harness machinery end to end (serve, deploy, workers behind the
// proxy, load, settle, every check) with no fault: this must always pass.
#[test]
fn forty_runs_without_faults_pass_every_check_on_sqlite() {
    run_harness("sqlite", 0, 0, &[]);
}

#[test]
fn forty_runs_without_faults_pass_every_check_on_postgres() {
    run_harness("postgres", 0, 0, &[]);
}

// With faults. A claim committed just before the orchestrator is killed, or
// just before the connection is cut, never reaches its worker; only the
// janitor's claim lease (30 s, now in `gabbro serve`) or reconciling the
// `active_runs` a worker lists when it rejoins puts it back; and a database
// restart can make the worker drop events (docs/reliability.md, Findings).
// Until those are fixed these fail now and then (the PostgreSQL cut test
// failed 2 runs of 2 on 28 Nov, before the janitor); run them with
// `cargo nextest run -p gabbro-fault --run-ignored all`.
#[test]
#[ignore = "fails now and then until the findings of docs/reliability.md are fixed"]
fn forty_runs_survive_two_connection_cuts_on_sqlite() {
    run_harness("sqlite", 0, 2, &[]);
}

#[test]
#[ignore = "fails now and then until the findings of docs/reliability.md are fixed"]
fn forty_runs_survive_two_connection_cuts_on_postgres() {
    run_harness("postgres", 0, 2, &[]);
}

#[test]
#[ignore = "fails now and then until the findings of docs/reliability.md are fixed"]
fn forty_runs_survive_an_orchestrator_kill_and_a_cut_on_sqlite() {
    run_harness("sqlite", 1, 1, &[]);
}

#[test]
#[ignore = "fails now and then until the findings of docs/reliability.md are fixed"]
fn forty_runs_survive_an_orchestrator_kill_a_cut_and_a_database_restart_on_postgres() {
    run_harness("postgres", 1, 1, &["--pg-restarts", "1"]);
}
