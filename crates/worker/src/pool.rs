//! Runs execute in child processes (`gabbro` in its child mode), one run at
//! a time per child, children reused from a pool. The contract is
//! `gabbro_runtime::events`: one [`ChildRequest`] JSON line on stdin, then
//! [`Event`] JSON lines on stdout ending with `run-complete`.
//!
//! The pool is the last line of defence around job code: it kills a child
//! that outlives the run's deadline (timeout + grace) or whose resident
//! memory exceeds the run's limit (+ headroom for the runtime itself), and
//! it reports a child that dies on its own. Children get
//! `PR_SET_PDEATHSIG(SIGKILL)`, so they die with the worker.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gabbro_protocol::Reason;
use gabbro_runtime::events::{ChildRequest, Event};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

/// What to spawn.
#[derive(Clone, Debug)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Memory the child may use beyond the run's JS memory limit (the runtime,
/// its engine and buffers); past limit + headroom the pool kills it.
pub const MEMORY_HEADROOM_MB: u64 = 128;
/// How often the child's memory is sampled.
const MEMORY_POLL: Duration = Duration::from_millis(100);

/// How a run's execution ended, seen from outside the child.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The child reported `run-complete`.
    Completed,
    /// The child died or was killed before completing.
    Died {
        reason: Reason,
        error_type: String,
        message: String,
    },
}

/// Limits the pool enforces on one execution.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The run's own timeout (the runtime enforces it; named in messages).
    pub timeout: Duration,
    /// Extra time before the pool kills the child itself.
    pub grace: Duration,
    pub memory_limit_mb: u64,
}

struct PooledChild {
    process: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

pub struct Pool {
    command: ChildCommand,
    idle: std::sync::Mutex<Vec<PooledChild>>,
    max_idle: usize,
}

impl Pool {
    pub fn new(command: ChildCommand, max_idle: usize) -> Pool {
        Pool {
            command,
            idle: std::sync::Mutex::new(Vec::new()),
            max_idle,
        }
    }

    fn spawn(&self) -> std::io::Result<PooledChild> {
        let mut cmd = tokio::process::Command::new(&self.command.program);
        cmd.args(&self.command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit)
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The worker may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut process = cmd.spawn()?;
        let stdin = process
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("child has no stdin"))?;
        let stdout = process
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("child has no stdout"))?;
        let pid = process.id().unwrap_or(0);
        Ok(PooledChild {
            process,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            pid,
        })
    }

    fn take_idle(&self) -> Option<PooledChild> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, child: PooledChild) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(child);
        }
        // Otherwise dropped: kill_on_drop ends it.
    }

    /// Number of idle children (for health output).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Send `request` to a child and forward its events until
    /// `run-complete`, the child's death, or a kill by the pool.
    pub async fn execute(
        &self,
        request: &ChildRequest,
        budget: Budget,
        events: mpsc::UnboundedSender<Event>,
    ) -> Outcome {
        let mut line = match serde_json::to_string(request) {
            Ok(l) => l,
            Err(e) => return died(Reason::Exception, "PlanError", &e.to_string()),
        };
        line.push('\n');
        // A pooled child may have died while idle: then try a fresh one.
        let mut child = None;
        for _ in 0..2 {
            let mut c = match self.take_idle() {
                Some(c) => c,
                None => match self.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        return died(
                            Reason::Crash,
                            "ExitError",
                            &format!("cannot start the runtime process: {e}"),
                        );
                    }
                },
            };
            let written = async {
                c.stdin.write_all(line.as_bytes()).await?;
                c.stdin.flush().await
            }
            .await;
            match written {
                Ok(()) => {
                    child = Some(c);
                    break;
                }
                Err(e) => {
                    tracing::warn!(pid = c.pid, error = %e, "runtime process is gone; starting another")
                }
            }
        }
        let Some(mut child) = child else {
            return died(
                Reason::Crash,
                "ExitError",
                "the runtime process exited before the run",
            );
        };

        let deadline = tokio::time::Instant::now() + budget.timeout + budget.grace;
        let memory_cap = (budget.memory_limit_mb + MEMORY_HEADROOM_MB) * 1024 * 1024;
        let mut poll = tokio::time::interval(MEMORY_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rss = 0u64;
        loop {
            tokio::select! {
                next = child.stdout.next_line() => match next {
                    Ok(Some(text)) => {
                        let text = text.trim();
                        if text.is_empty() {
                            continue;
                        }
                        match serde_json::from_str::<Event>(text) {
                            Ok(ev) => {
                                let done = matches!(ev, Event::RunComplete { .. });
                                let _ = events.send(ev);
                                if done {
                                    self.give_back(child);
                                    return Outcome::Completed;
                                }
                            }
                            Err(_) => tracing::debug!(pid = child.pid, line = %text, "ignoring a non-event line from the runtime process"),
                        }
                    }
                    // stdout closed or unreadable: the child is dying.
                    Ok(None) | Err(_) => {
                        let status = tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await;
                        return classify_exit(status.ok().and_then(Result::ok), last_rss, budget.memory_limit_mb);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    kill(&mut child).await;
                    return died(
                        Reason::Kill,
                        "TimeoutError",
                        &format!("Workflow failed to return within {}ms", budget.timeout.as_millis()),
                    );
                }
                _ = poll.tick() => {
                    last_rss = run_resident_bytes(child.pid).unwrap_or(last_rss);
                    if last_rss > memory_cap {
                        tracing::warn!(pid = child.pid, rss = last_rss, cap = memory_cap, "runtime process over its memory limit; killing it");
                        kill(&mut child).await;
                        return died(Reason::Kill, "OOMError", "Run exceeded maximum memory usage");
                    }
                }
            }
        }
    }
}

fn died(reason: Reason, error_type: &str, message: &str) -> Outcome {
    Outcome::Died {
        reason,
        error_type: error_type.to_string(),
        message: message.to_string(),
    }
}

async fn kill(child: &mut PooledChild) {
    let _ = child.process.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.process.wait()).await;
}

/// A child that died on its own: killed by SIGKILL (the kernel's OOM
/// killer) or close to its memory limit → `kill/OOMError`; any other exit →
/// `crash/ExitError`.
fn classify_exit(
    status: Option<std::process::ExitStatus>,
    last_rss: u64,
    memory_limit_mb: u64,
) -> Outcome {
    let near_limit = last_rss >= memory_limit_mb * 1024 * 1024 * 8 / 10;
    match status {
        Some(s) if s.signal() == Some(libc::SIGKILL) || (near_limit && !s.success()) => died(
            Reason::Kill,
            "OOMError",
            "Run exceeded maximum memory usage",
        ),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => died(
                Reason::Crash,
                "ExitError",
                &format!("Process exited with code: {code}"),
            ),
            (None, Some(sig)) => died(
                Reason::Crash,
                "ExitError",
                &format!("Process killed by signal {sig}"),
            ),
            _ => died(Reason::Crash, "ExitError", "Process exited"),
        },
        None => died(Reason::Crash, "ExitError", "Process stopped answering"),
    }
}

/// Resident set size of the process executing a run on `child`: the child
/// forks a process per run (`gabbro_runtime::child`), so that one when it
/// exists, else the child itself. Killing the child kills the run's process
/// too (it dies with its parent).
fn run_resident_bytes(child: u32) -> Option<u64> {
    let forks = std::fs::read_to_string(format!("/proc/{child}/task/{child}/children")).ok();
    let largest = forks
        .iter()
        .flat_map(|list| list.split_whitespace())
        .filter_map(|pid| pid.parse().ok())
        .filter_map(resident_bytes)
        .max();
    largest.or_else(|| resident_bytes(child))
}

/// Resident set size of `pid`, from `/proc/<pid>/statm`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}
