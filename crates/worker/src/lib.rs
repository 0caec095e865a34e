//! `gabbro worker`: connects to an orchestrator (gabbro or OpenFn's
//! Lightning) over Lightning's worker protocol, claims runs, executes each
//! in a pooled child process and streams its events back.
//!
//! - [`socket`]: the Phoenix client (reconnects forever, heartbeats).
//! - [`worker`]: shared state and the claim loop.
//! - [`run`]: one run's conversation; [`channel`] its retrying channel.
//! - [`plan`]: Lightning plan → execution plan; [`translate`]: runtime
//!   events → run events.
//! - [`pool`]: child processes, deadlines and memory limits.
//! - [`health`]: the `/livez` endpoint.

pub mod args;
pub mod backoff;
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
