//! The job ids of workflow snapshots, cached per store: every `step:start`
//! must name a job of its run's snapshot, and a snapshot never changes once
//! written, so each is read and parsed once instead of once per step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::{Conn, Result, scalar};

/// Most snapshots kept; past it the cache starts over (a deployment has
/// one snapshot per workflow version, so this is rarely reached).
const MAX_SNAPSHOTS: usize = 4096;

#[derive(Default)]
pub(crate) struct SnapshotJobs {
    by_snapshot: Mutex<HashMap<String, Arc<[String]>>>,
}

impl SnapshotJobs {
    /// Whether `job_id` is a job of snapshot `snapshot_id` (false if the
    /// snapshot does not exist or cannot be read as one).
    pub(crate) async fn contains(
        &self,
        c: &mut Conn<'_>,
        snapshot_id: &str,
        job_id: &str,
    ) -> Result<bool> {
        if let Some(jobs) = self.cached(snapshot_id) {
            return Ok(jobs.iter().any(|j| j == job_id));
        }
        let body: Option<String> = scalar!(
            c,
            String,
            "SELECT body FROM workflow_snapshots WHERE id = $1",
            snapshot_id
        )?;
        // Only snapshots that exist and parse are cached: a missing one may
        // be written later, and is refused until then.
        let Some(jobs) = body.as_deref().and_then(job_ids) else {
            return Ok(false);
        };
        let found = jobs.iter().any(|j| j == job_id);
        if let Ok(mut map) = self.by_snapshot.lock() {
            if map.len() >= MAX_SNAPSHOTS {
                map.clear();
            }
            map.insert(snapshot_id.to_string(), jobs);
        }
        Ok(found)
    }

    fn cached(&self, snapshot_id: &str) -> Option<Arc<[String]>> {
        self.by_snapshot.lock().ok()?.get(snapshot_id).cloned()
    }
}

/// The ids in a snapshot body's `jobs` (None if it is not a snapshot).
fn job_ids(body: &str) -> Option<Arc<[String]>> {
    #[derive(Deserialize)]
    struct Body {
        jobs: Vec<Job>,
    }
    #[derive(Deserialize)]
    struct Job {
        id: String,
    }
    let body: Body = serde_json::from_str(body).ok()?;
    Some(body.jobs.into_iter().map(|j| j.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_of_a_snapshot_body() {
        let ids = job_ids(r#"{"jobs":[{"id":"j1","body":"x"},{"id":"j2"}],"edges":[]}"#).unwrap();
        assert_eq!(&*ids, ["j1".to_string(), "j2".to_string()]);
        assert!(job_ids("not json").is_none());
        assert!(job_ids(r#"{"triggers":[]}"#).is_none());
    }
}
