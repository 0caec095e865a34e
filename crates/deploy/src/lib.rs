//! `gabbro deploy` / `gabbro pull`: OpenFn's project.yaml ⇄ a gabbro server.

/// Deploy a project.yaml to a server.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    pub file: std::path::PathBuf,
}

/// Write a server's project back as project.yaml.
#[derive(clap::Args, Debug)]
pub struct PullArgs {}

pub async fn deploy(_args: DeployArgs) -> anyhow::Result<i32> {
    anyhow::bail!("gabbro deploy is not built yet")
}

pub async fn pull(_args: PullArgs) -> anyhow::Result<i32> {
    anyhow::bail!("gabbro pull is not built yet")
}
