//! `gabbro run` without the rest of the binary (no server, no worker): handy
//! for benchmarking the runtime alone. `cargo run --release -p gabbro-runtime
//! --example run -- JOB.js [flags]`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "gabbro-run")]
struct Cli {
    #[command(flatten)]
    args: gabbro_runtime::cli::RunArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(gabbro_runtime::cli::run(cli.args)) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("gabbro run: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
