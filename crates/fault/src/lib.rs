//! `gabbro-fault`: the fault-test harness of issue 5 (item 5).
//!
//! It starts `gabbro serve` (no embedded worker) and separate `gabbro
//! worker` processes on loopback, the workers behind a TCP proxy it can cut;
//! posts N webhooks of a two-step workflow; during the load kills and
//! restarts the orchestrator, kills a worker, cuts the workers' connections
//! and restarts PostgreSQL; then waits for every run to be final and checks
//! the promises of design.md §6 against the database, the API and the
//! workers' journals. One line of counts; non-zero exit on any violation.
//!
//! - [`proxy`]: the cuttable TCP proxy;
//! - [`process`]: child processes killed with SIGKILL and restarted;
//! - [`pg`]: a fresh PostgreSQL database, cluster restarts;
//! - [`project`]: the workflow and `gabbro deploy`;
//! - [`load`]: webhooks with retries of unanswered requests;
//! - [`journal`]: reading a worker's journal directory;
//! - [`db`]: reading the orchestrator's database;
//! - [`checks`]: the rules, as pure functions;
//! - [`harness`]: one run, start to verdict.

pub mod checks;
pub mod db;
pub mod harness;
pub mod journal;
pub mod load;
pub mod pg;
pub mod process;
pub mod project;
pub mod proxy;

pub use harness::{DbKind, Options, Summary, run};
