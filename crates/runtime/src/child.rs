//! Child mode (`gabbro __child`): the worker's pooled executor process.
//!
//! Protocol: the parent writes one [`ChildRequest`] per line on stdin; the
//! child answers with one [`Event`] per line on stdout, ending with
//! `run-complete`, then waits for the next request. One run at a time. At
//! stdin EOF the child finishes the requests it has read, then exits 0. If its
//! parent dies (the child is re-parented), it exits at once, also in the
//! middle of a run: it checks its parent id every 250 ms, so the worker need
//! not set `PR_SET_PDEATHSIG` (it may, and may `kill_on_drop` too).
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
    // A parent that dies leaves us re-parented: leave at once, even mid-run.
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Stdin is read on its own task; at EOF the channel closes and the loop
    // below ends once the requests already read are served.
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
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
