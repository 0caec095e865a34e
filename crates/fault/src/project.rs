//! The workflow under test and its deployment with `gabbro deploy`.
//!
//! webhook → A (logs `fault-step-a <n>`, adds `a`) → on success B (logs
//! `fault-step-b <n>`, adds `b`). Each job waits a little (`setTimeout`) so
//! runs are in flight when the faults strike.

use std::path::Path;

use anyhow::Context;

use crate::checks::{MARKER_A, MARKER_B};

/// The webhook's custom path: `POST /i/gabbro-fault`.
pub const WEBHOOK_PATH: &str = "gabbro-fault";
/// Job names in the project (the harness finds their ids by name).
pub const JOB_A: &str = "fault-a";
pub const JOB_B: &str = "fault-b";

/// project.yaml with each job sleeping `delay_ms`.
pub fn project_yaml(delay_ms: u64) -> String {
    format!(
        r#"name: gabbro-fault
description: Two-step workflow driven by the fault-test harness.
workflows:
  fault:
    name: fault
    jobs:
      {JOB_A}:
        name: {JOB_A}
        adaptor: '@openfn/language-common@latest'
        body: |
          fn(state => new Promise(resolve => {{
            console.log('{MARKER_A} ' + state.data.n);
            setTimeout(() => resolve({{ ...state, data: {{ ...state.data, a: true }} }}), {delay_ms});
          }}));
      {JOB_B}:
        name: {JOB_B}
        adaptor: '@openfn/language-common@latest'
        body: |
          fn(state => new Promise(resolve => {{
            console.log('{MARKER_B} ' + state.data.n);
            setTimeout(() => resolve({{ ...state, data: {{ ...state.data, b: true }} }}), {delay_ms});
          }}));
    triggers:
      webhook:
        type: webhook
        enabled: true
        custom_path: {WEBHOOK_PATH}
    edges:
      webhook->{JOB_A}:
        source_trigger: webhook
        target_job: {JOB_A}
        condition_type: always
        enabled: true
      {JOB_A}->{JOB_B}:
        source_job: {JOB_A}
        target_job: {JOB_B}
        condition_type: on_job_success
        enabled: true
"#
    )
}

/// Writes the project and runs `gabbro deploy FILE --server URL --token T`.
pub async fn deploy(
    gabbro: &Path,
    work_dir: &Path,
    server: &str,
    token: &str,
    delay_ms: u64,
) -> anyhow::Result<()> {
    let file = work_dir.join("project.yaml");
    std::fs::write(&file, project_yaml(delay_ms))
        .with_context(|| format!("cannot write {}", file.display()))?;
    let out = tokio::process::Command::new(gabbro)
        .arg("deploy")
        .arg(&file)
        .args(["--server", server, "--token", token])
        .output()
        .await
        .context("cannot run gabbro deploy")?;
    anyhow::ensure!(
        out.status.success(),
        "gabbro deploy failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_is_valid_yaml_with_two_jobs_chained_on_success() {
        let y = project_yaml(25);
        let v: serde_json::Value = serde_norway::from_str(&y).unwrap();
        let wf = &v["workflows"]["fault"];
        assert_eq!(wf["jobs"][JOB_A]["name"], JOB_A);
        assert!(
            wf["jobs"][JOB_B]["body"]
                .as_str()
                .unwrap()
                .contains("fault-step-b")
        );
        assert!(wf["jobs"][JOB_A]["body"].as_str().unwrap().contains("25"));
        assert_eq!(wf["triggers"]["webhook"]["custom_path"], WEBHOOK_PATH);
        assert_eq!(
            wf["edges"][format!("{JOB_A}->{JOB_B}")]["condition_type"],
            "on_job_success"
        );
    }
}
