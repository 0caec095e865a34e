//! Reading a `gabbro worker` journal directory (docs/worker.md, "The
//! journal"): `worker-id`, and `runs/<run-id>.jsonl` for every run not yet
//! fully delivered — a header `{"run_id","token"}`, then events
//! `{"seq","event","payload"}` and acknowledgements `{"ack"}`.

use std::collections::HashSet;
use std::path::Path;

/// What a worker's journal says it still owed the orchestrator.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JournalView {
    /// Runs with a journal file (held, not fully delivered).
    pub runs: HashSet<String>,
    /// Of those, the runs whose `run:complete` was written: the worker
    /// finished them.
    pub completed: HashSet<String>,
}

/// The worker's stable id, once it has written it.
pub fn worker_id(journal_dir: &Path) -> Option<String> {
    let s = std::fs::read_to_string(journal_dir.join("worker-id")).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Reads every run file. Lines that do not parse (a torn last line after a
/// kill -9) are skipped, as the worker itself does.
pub fn read(journal_dir: &Path) -> JournalView {
    let mut view = JournalView::default();
    let Ok(entries) = std::fs::read_dir(journal_dir.join("runs")) else {
        return view;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut run_id = path.file_stem().and_then(|s| s.to_str()).map(String::from);
        let mut completed = false;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(id) = v.get("run_id").and_then(|x| x.as_str()) {
                run_id = Some(id.to_string());
            }
            if v.get("event").and_then(|x| x.as_str()) == Some("run:complete") {
                completed = true;
            }
        }
        if let Some(id) = run_id {
            if completed {
                view.completed.insert(id.clone());
            }
            view.runs.insert(id);
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_held_and_completed_runs_and_skips_a_torn_line() {
        let dir =
            std::env::temp_dir().join(format!("gabbro-fault-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("runs")).unwrap();
        std::fs::write(dir.join("worker-id"), "w-123\n").unwrap();
        std::fs::write(
            dir.join("runs/r1.jsonl"),
            "{\"run_id\":\"r1\",\"token\":\"t\"}\n{\"seq\":1,\"event\":\"run:start\",\"payload\":{}}\n{\"ack\":1}\n{\"seq\":2,\"event\":\"run:complete\",\"payload\":{}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("runs/r2.jsonl"),
            "{\"run_id\":\"r2\",\"token\":\"t\"}\n{\"seq\":1,\"event\":\"run:start\",\"payload\":{}}\n{\"seq\":2,\"event\":\"run:compl",
        )
        .unwrap();
        assert_eq!(worker_id(&dir).as_deref(), Some("w-123"));
        let v = read(&dir);
        assert_eq!(v.runs, ["r1", "r2"].into_iter().map(String::from).collect());
        assert_eq!(v.completed, ["r1"].into_iter().map(String::from).collect());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let v = read(Path::new("/nonexistent/gabbro-fault"));
        assert_eq!(v, JournalView::default());
    }
}
