//! Child mode (`gabbro __child`): the worker's pooled executor process.
//!
//! Protocol: the parent writes one [`ChildRequest`] per line on stdin; the
//! child answers with one [`Event`] per line on stdout, ending with
//! `run-complete`, then waits for the next request. One run at a time. At
//! stdin EOF the child finishes the requests it has read, then exits 0. If its
//! parent dies, it dies too (`PR_SET_PDEATHSIG`), also in the middle of a run.
//!
//! Each run executes in a process of its own, forked from this one: the
//! child builds a QuickJS engine with every built-in adaptor loaded once, at
//! start, and each request is served by a fork that inherits that engine
//! (copy-on-write), arms it with the run's limits, runs, and `_exit`s without
//! tearing anything down. A run thus starts with no engine to build and ends
//! with nothing to free (building and freeing a runtime was ~60% of a
//! one-step run's CPU), and no run can see another's leftovers: every run
//! gets the engine as it was before any run.
//!
//! A run cannot take the child down silently: a panic inside the runtime is
//! caught and reported as `run-complete` with reason `exception`
//! (`ExecutionError`). If the run's process dies anyway (QuickJS aborts, the
//! kernel's OOM killer), this process dies the same way (the same signal or
//! exit code), so the parent sees what it would have seen had the run
//! executed here: a child gone without a `run-complete`, and why.

use std::io::{BufRead, Write};
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::events::{ChildRequest, Event, ExitReason};
use crate::logs::now_us;
use crate::plan::Plan;
use crate::run::{WarmEngine, execute_in};

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

/// Dies with the parent process (SIGKILL when it goes), and leaves at once if
/// it is already gone (re-parented before the call took effect).
fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl and getppid have no memory-safety preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
}

/// Serves requests from stdin until EOF. Returns the exit status (0).
///
/// Must be called before the process starts any thread (in particular
/// before a multi-threaded async runtime): it forks, and a fork copies only
/// the calling thread.
pub fn serve() -> anyhow::Result<i32> {
    // SAFETY: getppid has no preconditions.
    die_with_parent(unsafe { libc::getppid() });
    // The engine is built on a runtime without I/O or timer drivers, so the
    // forks inherit no descriptors of it; each fork starts its own.
    let setup = tokio::runtime::Builder::new_current_thread().build()?;
    let mut warm = setup
        .block_on(WarmEngine::new())
        .map_err(anyhow::Error::msg)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(0);
        }
        if line.trim().is_empty() {
            continue;
        }
        let _ = std::io::stdout().flush();
        // SAFETY: this process has one thread (see above), so the fork's
        // copy of it holds no lock another thread had taken.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => {
                let e = std::io::Error::last_os_error();
                // No process for this run: the next fork may succeed.
                emit(&run_failed(
                    "ExecutionError",
                    format!("cannot start the run's process: {e}"),
                ));
            }
            0 => run_in_fork(&line, &mut warm),
            pid => follow(pid),
        }
    }
}

/// The fork's work: one run on the inherited engine, then `_exit` (no
/// destructors: the engine dies with the process).
///
/// The run executes on a new thread: glibc gives it a malloc arena of its
/// own, so the run's allocations land on fresh pages instead of writing into
/// the free lists of the heap inherited from the template, where every first
/// write to a page is a copy-on-write fault (~330 faults per one-step run).
fn run_in_fork(line: &str, warm: &mut WarmEngine) -> ! {
    // SAFETY: getppid has no preconditions.
    let server = unsafe { libc::getppid() };
    die_with_parent(server);
    let ran = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(RUN_THREAD_STACK)
            .spawn_scoped(scope, || run_on_this_thread(line, warm))
            .map(|t| t.join().is_ok())
    });
    match ran {
        Ok(true) => {}
        // Panics inside the run are caught and reported by `serve_one`;
        // one outside it still must not leave the worker waiting.
        Ok(false) => emit(&run_failed(
            "ExecutionError",
            "the run's thread panicked".into(),
        )),
        Err(e) => emit(&run_failed(
            "ExecutionError",
            format!("cannot start the run's thread: {e}"),
        )),
    }
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process without running destructors, which is
    // the point (the engine is not worth freeing).
    unsafe { libc::_exit(0) }
}

/// The stack of the thread a run executes on (QuickJS's own limit is 1 MB
/// below it; see `engine::STACK_LIMIT`).
const RUN_THREAD_STACK: usize = 8 * 1024 * 1024;

fn run_on_this_thread(line: &str, warm: &mut WarmEngine) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(serve_one(line, warm)),
        Err(e) => emit(&run_failed(
            "ExecutionError",
            format!("cannot start the run's async runtime: {e}"),
        )),
    }
}

async fn serve_one(line: &str, warm: &mut WarmEngine) {
    let request: ChildRequest = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            emit(&run_failed(
                "ChildRequestError",
                format!("invalid request: {e}"),
            ));
            return;
        }
    };
    let plan = match Plan::from_json(&request.plan) {
        Ok(p) => p,
        Err(e) => {
            emit(&run_failed("ValidationError", e.to_string()));
            return;
        }
    };
    let mut sink = |e: Event| emit(&e);
    let run = execute_in(
        Some(warm),
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

/// Waits for a run's process. A clean exit: ready for the next request. A
/// death: this process dies the same way, for the parent to see.
fn follow(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // Not our child any more (cannot happen): nothing to follow.
            return;
        }
    }
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        if code != 0 {
            std::process::exit(code);
        }
        return;
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and raising the signal the
        // run's process died of; both have no memory-safety preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        // A signal whose default is not to terminate: exit as a shell would.
        std::process::exit(128 + sig);
    }
}
