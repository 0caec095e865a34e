//! The runtime's child mode as a stand-alone program, so the worker's
//! integration tests can execute runs in real child processes without the
//! `gabbro` binary (which lives in another crate). Production workers run
//! `gabbro __child` instead.

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gabbro-test-child: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(gabbro_runtime::child::serve()) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("gabbro-test-child: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
