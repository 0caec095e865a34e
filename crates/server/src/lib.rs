//! The orchestrator: HTTP API, webhooks, worker socket, scheduler, janitor.

/// Run the orchestrator.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

pub async fn serve(_args: ServeArgs) -> anyhow::Result<i32> {
    anyhow::bail!("gabbro serve is not built yet")
}
