//! Workers connected to this node, as the web UI's queue dashboard shows
//! them: name, the capacity they announced when joining `worker:queue`, and
//! the run channels they have open. Kept in memory by the worker socket; each
//! node knows its own connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// One connection's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedWorker {
    /// `worker_name` from its claims, else its token's `worker_id`.
    pub name: String,
    pub capacity: u32,
    pub active_runs: u32,
}

#[derive(Debug, Default)]
pub struct ConnectedWorkers {
    next: AtomicU64,
    map: Mutex<HashMap<u64, ConnectedWorker>>,
}

impl ConnectedWorkers {
    /// A socket opened; returns its key for later updates.
    pub fn connect(&self, worker_id: &str) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = ConnectedWorker {
            name: worker_id.to_string(),
            capacity: 0,
            active_runs: 0,
        };
        self.lock().insert(key, entry);
        key
    }

    pub fn update(&self, key: u64, change: impl FnOnce(&mut ConnectedWorker)) {
        if let Some(entry) = self.lock().get_mut(&key) {
            change(entry);
        }
    }

    pub fn disconnect(&self, key: u64) {
        self.lock().remove(&key);
    }

    /// Every connection, by name.
    pub fn list(&self) -> Vec<ConnectedWorker> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, ConnectedWorker>> {
        // A panic while holding the lock leaves a consistent map (every
        // change is one insert/remove/field write): keep using it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_connections_until_they_close() {
        let w = ConnectedWorkers::default();
        let a = w.connect("id-a");
        let b = w.connect("id-b");
        w.update(a, |e| {
            e.name = "worker-a".into();
            e.capacity = 5;
            e.active_runs = 2;
        });
        let list = w.list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0],
            ConnectedWorker {
                name: "id-b".into(),
                capacity: 0,
                active_runs: 0
            }
        );
        assert_eq!(
            list[1],
            ConnectedWorker {
                name: "worker-a".into(),
                capacity: 5,
                active_runs: 2
            }
        );
        w.disconnect(b);
        w.update(b, |e| e.capacity = 9); // a closed connection is not revived
        assert_eq!(w.list().len(), 1);
    }
}
