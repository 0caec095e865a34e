//! The worker journal: every run event is appended to the run's journal
//! file before it is sent and forgotten only once the orchestrator has
//! answered it, so a worker restart replays what was not delivered.
//!
//! Layout: `<journal-dir>/runs/<run-id>.jsonl`, one JSON object per line:
//! - `{"run_id", "token"}` — the header, written when the run is claimed;
//! - `{"seq", "event", "payload"}` — an event, written before sending;
//! - `{"ack": seq}` — the orchestrator answered event `seq`.
//!
//! The file is deleted when the run is fully delivered. Writes go to the
//! page cache at once (a kill -9 of the worker loses nothing written); a
//! background task `fdatasync`s dirty files every [`SYNC_PERIOD`] (a power
//! loss loses at most that window). Ack lines are not synced: a lost ack
//! only means a duplicate on replay, which the orchestrator ignores by
//! `seq`. The journal's size is bounded: past `max_bytes` the worker stops
//! claiming (it never drops events).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gabbro_protocol::RunEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SYNC_PERIOD: Duration = Duration::from_millis(20);

#[derive(Serialize, Deserialize)]
struct Header {
    run_id: String,
    token: String,
}

#[derive(Serialize, Deserialize)]
struct EventLine {
    seq: u64,
    event: String,
    payload: Value,
}

#[derive(Deserialize)]
struct AckLine {
    ack: u64,
}

/// The whole journal (one per worker).
pub struct Journal {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    /// Files written since the last sync.
    dirty: std::sync::Mutex<HashMap<PathBuf, Arc<File>>>,
}

/// A run found in the journal at start-up, with what it still owes.
#[derive(Debug)]
pub struct PendingRun {
    pub run_id: String,
    pub token: String,
    /// Unacknowledged events, in `seq` order (each carries its `seq`).
    pub events: Vec<RunEvent>,
    pub path: PathBuf,
}

impl Journal {
    pub fn open(journal_dir: &Path, max_bytes: u64) -> std::io::Result<Arc<Journal>> {
        let dir = journal_dir.join("runs");
        std::fs::create_dir_all(&dir)?;
        let mut used = 0;
        for entry in std::fs::read_dir(&dir)? {
            used += entry?.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(Arc::new(Journal {
            dir,
            max_bytes,
            used: AtomicU64::new(used),
            dirty: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// Start the background `fdatasync` task.
    pub fn start_syncer(self: &Arc<Self>) {
        let j = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_PERIOD);
            loop {
                tick.tick().await;
                let Some(j) = j.upgrade() else { return };
                let files: Vec<Arc<File>> = match j.dirty.lock() {
                    Ok(mut d) => d.drain().map(|(_, f)| f).collect(),
                    Err(_) => continue,
                };
                if files.is_empty() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    for f in files {
                        if let Err(e) = f.sync_data() {
                            tracing::error!(error = %e, "journal fdatasync failed");
                        }
                    }
                })
                .await;
            }
        });
    }

    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Past its bound: claim nothing more until runs are delivered.
    pub fn is_full(&self) -> bool {
        self.used_bytes() >= self.max_bytes
    }

    fn path_of(&self, run_id: &str) -> PathBuf {
        // Run ids are UUIDs in Lightning; anything else is made file-safe.
        let safe: String = run_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.jsonl"))
    }

    /// Open the run's journal, writing its header.
    pub fn begin(self: &Arc<Self>, run_id: &str, token: &str) -> std::io::Result<RunJournal> {
        let path = self.path_of(run_id);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut rj = RunJournal {
            journal: self.clone(),
            file: Arc::new(file),
            path,
            bytes: 0,
        };
        let header = serde_json::to_string(&Header {
            run_id: run_id.to_string(),
            token: token.to_string(),
        })
        .map_err(std::io::Error::other)?;
        rj.append(&header, true)?;
        Ok(rj)
    }

    /// Reopen a pending run's file to continue it (replay).
    pub fn resume(self: &Arc<Self>, pending: &PendingRun) -> std::io::Result<RunJournal> {
        let file = OpenOptions::new().append(true).open(&pending.path)?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RunJournal {
            journal: self.clone(),
            file: Arc::new(file),
            path: pending.path.clone(),
            bytes,
        })
    }

    /// Runs with undelivered events (read at start-up). Unreadable lines
    /// (a torn last write) are skipped; a file without a header is removed.
    pub fn pending(&self) -> Vec<PendingRun> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            match read_pending(&path) {
                Some(p) if !p.events.is_empty() => out.push(p),
                _ => {
                    let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    if std::fs::remove_file(&path).is_ok() {
                        self.used
                            .fetch_sub(len.min(self.used_bytes()), Ordering::Relaxed);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        out
    }
}

fn read_pending(path: &Path) -> Option<PendingRun> {
    let file = File::open(path).ok()?;
    let mut lines = BufReader::new(file).lines();
    let header: Header = serde_json::from_str(&lines.next()?.ok()?).ok()?;
    let mut events: BTreeMap<u64, RunEvent> = BTreeMap::new();
    let mut acked = Vec::new();
    for line in lines {
        let Ok(line) = line else { break };
        if let Ok(a) = serde_json::from_str::<AckLine>(&line) {
            acked.push(a.ack);
        } else if let Ok(e) = serde_json::from_str::<EventLine>(&line)
            && let Ok(mut ev) = RunEvent::from_parts(&e.event, &e.payload)
        {
            ev.set_seq(Some(e.seq));
            events.insert(e.seq, ev);
        }
    }
    for a in acked {
        events.remove(&a);
    }
    Some(PendingRun {
        run_id: header.run_id,
        token: header.token,
        events: events.into_values().collect(),
        path: path.to_path_buf(),
    })
}

/// One run's journal file.
pub struct RunJournal {
    journal: Arc<Journal>,
    file: Arc<File>,
    path: PathBuf,
    bytes: u64,
}

impl RunJournal {
    fn append(&mut self, line: &str, sync: bool) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        (&*self.file).write_all(&buf)?;
        self.bytes += buf.len() as u64;
        self.journal
            .used
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        if sync && let Ok(mut d) = self.journal.dirty.lock() {
            d.insert(self.path.clone(), self.file.clone());
        }
        Ok(())
    }

    /// Append an event (it carries its `seq`) before it is sent.
    pub fn record(&mut self, event: &RunEvent) -> std::io::Result<()> {
        let Some(seq) = event.seq() else {
            return Ok(());
        };
        let line = serde_json::to_string(&EventLine {
            seq,
            event: event.name().to_string(),
            payload: event.payload(),
        })
        .map_err(std::io::Error::other)?;
        self.append(&line, true)
    }

    /// The orchestrator answered `seq`.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.append(&format!("{{\"ack\":{seq}}}"), false)
    }

    /// The journalled events with `from <= seq < before`, in `seq` order,
    /// acknowledged or not: what to send again when the orchestrator says
    /// it still expects `from` (a `seq` gap reply).
    pub fn events_between(&self, from: u64, before: u64) -> Vec<RunEvent> {
        let Ok(file) = File::open(&self.path) else {
            return Vec::new();
        };
        let mut events: BTreeMap<u64, RunEvent> = BTreeMap::new();
        for line in BufReader::new(file).lines().skip(1) {
            let Ok(line) = line else { break };
            if let Ok(e) = serde_json::from_str::<EventLine>(&line)
                && e.seq >= from
                && e.seq < before
                && let Ok(mut ev) = RunEvent::from_parts(&e.event, &e.payload)
            {
                ev.set_seq(Some(e.seq));
                events.insert(e.seq, ev);
            }
        }
        events.into_values().collect()
    }

    /// Everything is delivered (or the run is not ours): remove the file.
    pub fn finish(self) {
        if let Ok(mut d) = self.journal.dirty.lock() {
            d.remove(&self.path);
        }
        let len = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .unwrap_or(self.bytes);
        if std::fs::remove_file(&self.path).is_ok() {
            let used = self.journal.used_bytes();
            self.journal
                .used
                .store(used.saturating_sub(len), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gabbro_protocol::{Reason, RunComplete, RunLog, Timestamp};
    use serde_json::json;

    fn log(seq: u64) -> RunEvent {
        RunEvent::RunLog(RunLog {
            run_id: Some("r".into()),
            message: vec![json!(format!("line {seq}"))],
            source: Some("JOB".into()),
            level: "info".into(),
            timestamp: Timestamp(1),
            step_id: None,
            seq: Some(seq),
        })
    }

    fn tempdir() -> PathBuf {
        std::env::temp_dir().join(format!("gabbro-journal-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn unacknowledged_events_survive_a_restart_in_order() {
        let dir = tempdir();
        let j = Journal::open(&dir, 1 << 20).unwrap();
        let mut rj = j.begin("run-1", "tok").unwrap();
        for seq in 1..=4 {
            rj.record(&log(seq)).unwrap();
        }
        rj.ack(1).unwrap();
        rj.ack(2).unwrap();
        let done = RunEvent::RunComplete(RunComplete {
            timestamp: None,
            final_state: None,
            reason: Reason::Crash,
            error_type: Some("X".into()),
            error_message: Some("y".into()),
            final_dataclip_id: None,
            seq: Some(5),
        });
        rj.record(&done).unwrap();
        drop(rj); // the worker dies here
        drop(j);

        let j = Journal::open(&dir, 1 << 20).unwrap();
        assert!(j.used_bytes() > 0);
        let pending = j.pending();
        assert_eq!(pending.len(), 1);
        let p = &pending[0];
        assert_eq!((p.run_id.as_str(), p.token.as_str()), ("run-1", "tok"));
        let seqs: Vec<u64> = p.events.iter().filter_map(|e| e.seq()).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(p.events[2], done);
        let rj = j.resume(p).unwrap();
        rj.finish();
        assert!(j.pending().is_empty());
        assert_eq!(j.used_bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fully_acknowledged_or_torn_file_is_not_pending() {
        let dir = tempdir();
        let j = Journal::open(&dir, 1 << 20).unwrap();
        let mut rj = j.begin("run-2", "tok").unwrap();
        rj.record(&log(1)).unwrap();
        rj.ack(1).unwrap();
        drop(rj);
        std::fs::write(dir.join("runs/torn.jsonl"), "{\"run_id\":").unwrap();
        assert!(j.pending().is_empty());
        assert_eq!(std::fs::read_dir(dir.join("runs")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn is_full_past_its_bound() {
        let dir = tempdir();
        let j = Journal::open(&dir, 200).unwrap();
        let mut rj = j.begin("run-3", "tok").unwrap();
        assert!(!j.is_full());
        for seq in 1..=5 {
            rj.record(&log(seq)).unwrap();
        }
        assert!(j.is_full());
        rj.finish();
        assert!(!j.is_full());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
