//! `gabbro run`.

/// Run an OpenFn job or workflow plan locally.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A job (.js) or an execution plan (.json)
    pub path: std::path::PathBuf,
}

pub async fn run(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("gabbro run is not built yet")
}
