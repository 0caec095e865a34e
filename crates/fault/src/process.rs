//! Child processes the harness starts, kills with SIGKILL and starts again
//! with the same command line. Each life logs to its own file
//! (`<log-dir>/<name>.<life>.log`) so a failure can be traced to the
//! process that was running at the time.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// One supervised program: same program, arguments and environment on every life.
pub struct Managed {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    child: Option<Child>,
    lives: u32,
}

impl Managed {
    pub fn new(name: &str, program: &Path, args: Vec<String>, log_dir: &Path) -> Managed {
        Managed {
            name: name.to_string(),
            program: program.to_path_buf(),
            args,
            env: Vec::new(),
            log_dir: log_dir.to_path_buf(),
            child: None,
            lives: 0,
        }
    }

    /// Adds an environment variable for every life.
    pub fn env(mut self, key: &str, value: &str) -> Managed {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times it was started.
    pub fn lives(&self) -> u32 {
        self.lives
    }

    /// The log file of the current (or last) life.
    pub fn log_path(&self) -> PathBuf {
        self.log_dir
            .join(format!("{}.{}.log", self.name, self.lives.max(1)))
    }

    /// Starts a new life. Killed when the harness drops it, so an aborted
    /// harness leaves nothing running.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        self.lives += 1;
        let log = std::fs::File::create(self.log_path())
            .with_context(|| format!("cannot create {}", self.log_path().display()))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9` and wait until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        // start_kill sends SIGKILL on Unix.
        let _ = child.start_kill();
        Ok(child.wait().await?)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        }
    }

    /// The exit status if the current life has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the current life's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("gabbro-fault-proc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn kill9_ends_the_process_by_sigkill_and_start_begins_a_new_life_with_its_own_log() {
        let dir = temp_dir();
        let mut p = Managed::new(
            "sleeper",
            Path::new("/bin/sh"),
            vec!["-c".into(), "echo up; exec sleep 30".into()],
            &dir,
        );
        p.start().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(p.exited().is_none());
        let status = p.kill9().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(p.log_tail(5).contains("up"));

        p.start().unwrap();
        assert_eq!(p.lives(), 2);
        assert!(p.log_path().ends_with("sleeper.2.log"));
        let status = p.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn exited_reports_a_process_that_died_on_its_own() {
        let dir = temp_dir();
        let mut p = Managed::new(
            "quitter",
            Path::new("/bin/sh"),
            vec!["-c".into(), "exit 3".into()],
            &dir,
        )
        .env("GABBRO_FAULT_TEST", "1");
        p.start().unwrap();
        let mut status = None;
        for _ in 0..50 {
            status = p.exited();
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
