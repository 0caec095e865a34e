//! `gabbro serve` without the rest of the binary (for benchmarks).
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: gabbro_server::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(gabbro_server::serve(cli.args))?;
    Ok(())
}
