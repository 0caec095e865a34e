//! The work order's state, derived from its runs as Lightning does
//! (`WorkOrders.Query.state_for/1`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RunState;

/// A work order's state: `pending`, `running`, `rejected` or the final
/// state of its deciding run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkOrderState {
    /// Its unfinished runs are waiting (available or claimed).
    Pending,
    /// One of its runs is executing.
    Running,
    /// No run was created (limits).
    Rejected,
    /// Finished: the state of its last finished run.
    Final(RunState),
}

impl WorkOrderState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkOrderState::Pending => "pending",
            WorkOrderState::Running => "running",
            WorkOrderState::Rejected => "rejected",
            WorkOrderState::Final(s) => s.as_str(),
        }
    }

    /// Parses a stored word.
    pub fn parse(s: &str) -> Option<WorkOrderState> {
        match s {
            "pending" => Some(WorkOrderState::Pending),
            "running" => Some(WorkOrderState::Running),
            "rejected" => Some(WorkOrderState::Rejected),
            other => other
                .parse::<RunState>()
                .ok()
                .filter(|s| s.is_final())
                .map(WorkOrderState::Final),
        }
    }
}

impl fmt::Display for WorkOrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The work order's state after `current` (the run just updated, in its new
/// state) changed, given the states of the work order's *other* runs.
///
/// As Lightning: the first unfinished other run by precedence started >
/// available > claimed decides, else `current` itself; available and claimed
/// map to `pending`, started to `running`, a final state to itself.
pub fn work_order_state(
    current: RunState,
    others: impl IntoIterator<Item = RunState>,
) -> WorkOrderState {
    let rank = |s: RunState| match s {
        RunState::Started => Some(0),
        RunState::Available => Some(1),
        RunState::Claimed => Some(2),
        _ => None,
    };
    let deciding = others
        .into_iter()
        .filter_map(|s| rank(s).map(|r| (r, s)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, s)| s)
        .unwrap_or(current);
    match deciding {
        RunState::Available | RunState::Claimed => WorkOrderState::Pending,
        RunState::Started => WorkOrderState::Running,
        f => WorkOrderState::Final(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunState::*;

    #[test]
    fn single_run_maps_directly() {
        assert_eq!(work_order_state(Available, []), WorkOrderState::Pending);
        assert_eq!(work_order_state(Claimed, []), WorkOrderState::Pending);
        assert_eq!(work_order_state(Started, []), WorkOrderState::Running);
        assert_eq!(work_order_state(Failed, []), WorkOrderState::Final(Failed));
    }

    #[test]
    fn unfinished_other_runs_take_precedence() {
        // A retry finished, but another run is still executing.
        assert_eq!(
            work_order_state(Success, [Failed, Started]),
            WorkOrderState::Running
        );
        // Started beats available beats claimed.
        assert_eq!(
            work_order_state(Success, [Claimed, Available]),
            WorkOrderState::Pending
        );
        assert_eq!(
            work_order_state(Failed, [Claimed, Started]),
            WorkOrderState::Running
        );
        // Other runs all final: the current run decides.
        assert_eq!(
            work_order_state(Success, [Failed, Crashed]),
            WorkOrderState::Final(Success)
        );
    }

    #[test]
    fn words_round_trip() {
        for s in [
            WorkOrderState::Pending,
            WorkOrderState::Running,
            WorkOrderState::Rejected,
            WorkOrderState::Final(Lost),
        ] {
            assert_eq!(WorkOrderState::parse(s.as_str()), Some(s));
        }
        assert_eq!(WorkOrderState::parse("started"), None);
    }
}
