//! The worker's journal directory: locked so two workers never share one,
//! and home of the worker's stable id (`worker-id`), so that after a
//! restart the worker presents the same id and can deliver what it owes.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct JournalDir {
    path: PathBuf,
    worker_id: String,
    // Holds the flock for the life of the worker.
    _lock: File,
}

impl JournalDir {
    pub fn open(path: &Path) -> anyhow::Result<JournalDir> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create journal directory {}", path.display()))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // SAFETY: flock on a valid, owned descriptor.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        anyhow::ensure!(
            rc == 0,
            "journal directory {} is in use by another worker",
            path.display()
        );
        let id_path = path.join("worker-id");
        let worker_id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let id = format!(
                    "gabbro-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                std::fs::write(&id_path, format!("{id}\n"))
                    .with_context(|| format!("cannot write {}", id_path.display()))?;
                id
            }
        };
        Ok(JournalDir {
            path: path.to_path_buf(),
            worker_id,
            _lock: lock,
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_worker_id_and_refuses_a_second_worker() {
        let dir = std::env::temp_dir().join(format!("gabbro-jd-{}", uuid::Uuid::new_v4()));
        let first = JournalDir::open(&dir).unwrap();
        let id = first.worker_id().to_string();
        assert!(
            JournalDir::open(&dir).is_err(),
            "second worker on the same dir"
        );
        drop(first);
        let again = JournalDir::open(&dir).unwrap();
        assert_eq!(again.worker_id(), id);
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
