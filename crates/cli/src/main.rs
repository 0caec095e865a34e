//! The `gabbro` binary: it only parses the command line and hands over to the
//! crate that does the work.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gabbro",
    version,
    about = "An OpenFn v2 compatible orchestrator, worker and job runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the orchestrator (API, webhooks, cron, worker socket, UI) with an embedded worker.
    Serve(gabbro_server::ServeArgs),
    /// Connect to an orchestrator (gabbro or Lightning) and execute its runs.
    Worker(gabbro_worker::WorkerArgs),
    /// Run a job or a workflow plan locally, without a server.
    Run(gabbro_runtime::cli::RunArgs),
    /// Internal: the worker's pooled executor (JSON lines on stdin/stdout).
    #[command(name = "__child", hide = true)]
    Child,
    /// Deploy a project.yaml to a server.
    Deploy(gabbro_deploy::DeployArgs),
    /// Write a server's project as project.yaml.
    Pull(gabbro_deploy::PullArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The child forks a process per run, so it must start no thread first:
    // it runs before (and instead of) the multi-threaded runtime.
    let result = match cli.command {
        Command::Child => gabbro_runtime::child::serve(),
        command => run_async(command),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("gabbro: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run_async(command: Command) -> anyhow::Result<i32> {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => anyhow::bail!("cannot start the async runtime: {e}"),
    };
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => gabbro_server::serve(args).await,
            Command::Worker(args) => gabbro_worker::run(args).await,
            Command::Run(args) => gabbro_runtime::cli::run(args).await,
            Command::Child => anyhow::bail!("child mode runs before the async runtime"),
            Command::Deploy(args) => gabbro_deploy::deploy(args).await,
            Command::Pull(args) => gabbro_deploy::pull(args).await,
        }
    })
}
