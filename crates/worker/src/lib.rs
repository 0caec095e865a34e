//! `gabbro worker`: connects to an orchestrator (gabbro or OpenFn's
//! Lightning) over Lightning's worker protocol, claims runs, executes each
//! in a pooled child process and streams its events back.
//!
//! - [`socket`]: the Phoenix client (reconnects forever, heartbeats).
//! - [`worker`]: shared state and the claim loop; [`capacity`]: execution
//!   slots and delivery places.
//! - [`run`]: one run's conversation; [`channel`] its retrying channel.
//! - [`plan`]: Lightning plan → execution plan; [`translate`]: runtime
//!   events → run events.
//! - [`pool`]: child processes, deadlines and memory limits.
//! - [`health`]: the `/livez` endpoint.

pub mod args;
pub mod backoff;
pub mod capacity;
pub mod channel;
pub mod health;
pub mod journal;
pub mod journal_dir;
pub mod plan;
pub mod pool;
pub mod run;
pub mod socket;
pub mod translate;
pub mod worker;

pub use args::{WorkerArgs, run, run_until};

#[cfg(test)]
mod cli_tests {
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::WorkerArgs,
    }

    #[test]
    fn flags_are_consistent_and_accept_openfns_short_forms() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "gabbro",
            "-l",
            "ws://x/worker",
            "-s",
            "abc",
            "--capacity",
            "3",
            "--backoff",
            "2/20",
            "-t",
            "60",
            "--run-memory",
            "256",
            "--payload-memory",
            "5",
            "-p",
            "0",
            "--log",
            "debug",
            "-d",
            "/tmp/repo",
        ])
        .unwrap();
        let s = cli.args.resolve().unwrap();
        assert_eq!(s.lightning, "ws://x/worker");
        assert_eq!(s.config_without_id.capacity, 3);
        assert_eq!(s.config_without_id.limits.run_timeout_ms, 60_000);
        assert_eq!(s.config_without_id.limits.run_memory_mb, 256);
        assert_eq!(s.port, 0);
    }

    #[test]
    fn socket_url_appends_websocket_and_phoenix_params_once() {
        let u = crate::args::socket_url("ws://h:4000/worker", "T");
        assert!(
            u.starts_with("ws://h:4000/worker/websocket?token=T&api_version=1.2&worker_version=")
        );
        assert!(u.ends_with("&vsn=2.0.0"));
        assert!(
            crate::args::socket_url("ws://h/worker/websocket/", "T")
                .starts_with("ws://h/worker/websocket?")
        );
    }
}
