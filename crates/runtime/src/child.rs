//! Child mode (`gabbro __child`): the worker's pooled executor process.
//!
//! Protocol: the parent writes one [`ChildRequest`] per line on stdin; the
//! child answers with one [`Event`] per line on stdout, ending with
//! `run-complete`, then waits for the next request. One run at a time. The
//! child exits 0 when stdin reaches EOF — also in the middle of a run, so a
//! parent that dies (closing the pipe) takes its child down with it; the
//! worker need not set `PR_SET_PDEATHSIG` (it may still `kill_on_drop`).
//!
//! A run cannot take the child down silently: a panic inside the runtime is
//! caught and reported as `run-complete` with reason `exception`
//! (`ExecutionError`); if QuickJS aborts the process anyway, the parent sees
//! the child exit without a `run-complete`.

use std::io::Write;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::events::{ChildRequest, Event, ExitReason};
use crate::logs::now_us;
use crate::plan::Plan;
use crate::run::execute;

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(event) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn run_failed(error_type: &str, message: String) -> Event {
    Event::RunComplete {
        reason: ExitReason::Exception,
        error_type: Some(error_type.into()),
        error_message: Some(message),
        final_state_json: None,
        leaves: Vec::new(),
        timestamp_us: now_us(),
    }
}

/// Serves requests from stdin until EOF. Returns the exit status (0).
pub async fn serve() -> anyhow::Result<i32> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Read stdin on its own task so EOF is noticed even during a run.
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                // The parent closed our stdin (or died): leave at once.
                Ok(None) | Err(_) => std::process::exit(0),
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let request: ChildRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                emit(&run_failed(
                    "ChildRequestError",
                    format!("invalid request: {e}"),
                ));
                continue;
            }
        };
        let plan = match Plan::from_json(&request.plan) {
            Ok(p) => p,
            Err(e) => {
                emit(&run_failed("ValidationError", e.to_string()));
                continue;
            }
        };
        let mut sink = |e: Event| emit(&e);
        let run = execute(
            &plan,
            request.input,
            &request.limits,
            &request.secrets,
            &mut sink,
        );
        if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the runtime panicked".into());
            emit(&run_failed("ExecutionError", why));
        }
    }
    Ok(0)
}
