//! `gabbro worker`: connects to an orchestrator, claims runs, executes them in
//! child processes and streams events back.

/// Connect to an orchestrator and execute its runs.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {}

pub async fn run(_args: WorkerArgs) -> anyhow::Result<i32> {
    anyhow::bail!("gabbro worker is not built yet")
}
