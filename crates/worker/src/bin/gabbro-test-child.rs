//! The runtime's child mode as a stand-alone program, so the worker's
//! integration tests can execute runs in real child processes without the
//! `gabbro` binary (which lives in another crate). Production workers run
//! `gabbro __child` instead.

fn main() -> std::process::ExitCode {
    // No async runtime here: the child mode forks, so it starts its own.
    match gabbro_runtime::child::serve() {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("gabbro-test-child: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
