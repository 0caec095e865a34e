//! The harness end to end at a tiny scale against the real `gabbro` binary:
//! 40 webhooks, one orchestrator kill -9, one connection cut, on SQLite and
//! on PostgreSQL. It passes only if every run survives.
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

fn run_harness(db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_gabbro-fault"))
        .arg("--gabbro")
        .arg(gabbro_binary())
        .args([
            "--db",
            db,
            "--runs",
            "40",
            "--orchestrator-kills",
            "1",
            "--worker-kills",
            "0",
            "--cuts",
            "1",
            "--cut-seconds",
            "2",
            "--delay-ms",
            "20",
            "--settle-seconds",
            "240",
        ])
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
    assert!(line.contains("orchestrator_kills=1 "), "{line}");
    assert!(line.contains("success=40 "), "{line}");
    assert!(line.ends_with("violations=0"), "{line}");
}

#[test]
#[ignore = "needs the whole system (serve + worker socket + janitor); run with --ignored"]
fn forty_runs_survive_an_orchestrator_kill_and_a_cut_on_sqlite() {
    run_harness("sqlite");
}

#[test]
#[ignore = "needs the whole system (serve + worker socket + janitor); run with --ignored"]
fn forty_runs_survive_an_orchestrator_kill_and_a_cut_on_postgres() {
    run_harness("postgres");
}
