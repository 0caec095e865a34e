//! Run states and the legal transitions between them (design.md §3,
//! Lightning's `Run.validate_state_change`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `error_type` of a run the janitor found claimed but never started.
pub const LOST_AFTER_CLAIM: &str = "LostAfterClaim";
/// `error_type` of a started run whose worker went silent or overran.
pub const LOST_AFTER_START: &str = "LostAfterStart";

/// The state of a run: `available → claimed → started → final`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Queued, waiting for a worker.
    Available,
    /// Handed to a worker, which has not sent `run:start` yet.
    Claimed,
    /// Executing.
    Started,
    /// Final: every step succeeded (worker reason `ok`/`success`).
    Success,
    /// Final: a job failed (`fail`).
    Failed,
    /// Final: the runtime crashed (`crash`).
    Crashed,
    /// Final: cancelled (`cancel`).
    Cancelled,
    /// Final: killed for exceeding memory or time (`kill`).
    Killed,
    /// Final: an unexpected error (`exception`).
    Exception,
    /// Final: its worker vanished or overran (janitor). May still take the
    /// true outcome from its own worker later.
    Lost,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 10] = [
        RunState::Available,
        RunState::Claimed,
        RunState::Started,
        RunState::Success,
        RunState::Failed,
        RunState::Crashed,
        RunState::Cancelled,
        RunState::Killed,
        RunState::Exception,
        RunState::Lost,
    ];

    /// The final states (Lightning's `Run.final_states/0`).
    pub const FINAL: [RunState; 7] = [
        RunState::Success,
        RunState::Failed,
        RunState::Crashed,
        RunState::Cancelled,
        RunState::Killed,
        RunState::Exception,
        RunState::Lost,
    ];

    /// The word stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Available => "available",
            RunState::Claimed => "claimed",
            RunState::Started => "started",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Crashed => "crashed",
            RunState::Cancelled => "cancelled",
            RunState::Killed => "killed",
            RunState::Exception => "exception",
            RunState::Lost => "lost",
        }
    }

    /// True for the final states.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunState::Available | RunState::Claimed | RunState::Started
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state or reason word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?}")]
pub struct UnknownWord {
    /// What was being parsed.
    pub what: &'static str,
    /// The word.
    pub word: String,
}

impl FromStr for RunState {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownWord {
                what: "run state",
                word: s.to_string(),
            })
    }
}

/// A step's (and a `run:complete`'s) exit reason, OpenFn's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    /// Succeeded (the worker may say `ok` or `success`).
    Success,
    /// The job threw or failed.
    Fail,
    /// The runtime crashed.
    Crash,
    /// Cancelled.
    Cancel,
    /// Killed (memory or time limit).
    Kill,
    /// An unexpected error.
    Exception,
    /// Lost (set by the janitor on open steps).
    Lost,
}

impl ExitReason {
    /// The stored word (`success` for `ok`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Success => "success",
            ExitReason::Fail => "fail",
            ExitReason::Crash => "crash",
            ExitReason::Cancel => "cancel",
            ExitReason::Kill => "kill",
            ExitReason::Exception => "exception",
            ExitReason::Lost => "lost",
        }
    }

    /// The run state a `run:complete` with this reason leads to
    /// (Lightning's `Handlers.CompleteRun`).
    pub fn run_state(self) -> RunState {
        match self {
            ExitReason::Success => RunState::Success,
            ExitReason::Fail => RunState::Failed,
            ExitReason::Crash => RunState::Crashed,
            ExitReason::Cancel => RunState::Cancelled,
            ExitReason::Kill => RunState::Killed,
            ExitReason::Exception => RunState::Exception,
            ExitReason::Lost => RunState::Lost,
        }
    }
}

impl FromStr for ExitReason {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ok" | "success" => ExitReason::Success,
            "fail" => ExitReason::Fail,
            "crash" => ExitReason::Crash,
            "cancel" => ExitReason::Cancel,
            "kill" => ExitReason::Kill,
            "exception" => ExitReason::Exception,
            "lost" => ExitReason::Lost,
            _ => {
                return Err(UnknownWord {
                    what: "exit reason",
                    word: s.to_string(),
                });
            }
        })
    }
}

/// What applying a transition should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Change the state.
    Apply,
    /// Already there (a duplicate or replayed event): change nothing, answer ok.
    Noop,
    /// A `lost` run takes the true outcome delivered late by its own worker.
    LateTruth,
}

/// A refused transition, in Lightning's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransitionError {
    /// The message, e.g. "already in completed state".
    pub message: String,
}

/// Checks `from → to`. `own_worker` is true when the event comes from the
/// worker that holds the run (same `worker_id`), which alone may overrule
/// `lost` with the true outcome.
///
/// Rules (design.md §3, Lightning §2):
/// - `available → claimed` and `claimed → available` (claim, rollback,
///   requeue) are the queue's own moves.
/// - `available →` anything else: "cannot mark run that has not been claimed
///   by a worker".
/// - `claimed → started`; `claimed | started → final`.
/// - a transition to the state the run is already in is a no-op (replays),
///   and so is a late `started` on a final run from its own worker.
/// - final → another final: "already in completed state", except `lost →`
///   a true outcome from the run's own worker.
pub fn check_transition(
    from: RunState,
    to: RunState,
    own_worker: bool,
) -> Result<Transition, TransitionError> {
    use RunState::*;
    let refuse = |m: &str| {
        Err(TransitionError {
            message: m.to_string(),
        })
    };
    if from == to {
        return Ok(Transition::Noop);
    }
    match (from, to) {
        (Available, Claimed) | (Claimed, Available) | (Claimed, Started) => Ok(Transition::Apply),
        (Available, _) => refuse("cannot mark run that has not been claimed by a worker"),
        (Claimed | Started, t) if t.is_final() => Ok(Transition::Apply),
        (Started, Claimed | Available) => refuse("cannot move a started run back"),
        (f, Started) if f.is_final() && own_worker => Ok(Transition::Noop),
        (Lost, t) if t.is_final() && own_worker => Ok(Transition::LateTruth),
        _ => refuse("already in completed state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
        assert!("nope".parse::<RunState>().is_err());
        assert_eq!(RunState::FINAL.len(), 7);
        assert!(RunState::FINAL.iter().all(|s| s.is_final()));
        assert!(!RunState::Started.is_final());
    }

    #[test]
    fn exit_reasons_map_to_run_states_as_lightning() {
        let cases = [
            ("ok", RunState::Success),
            ("success", RunState::Success),
            ("fail", RunState::Failed),
            ("crash", RunState::Crashed),
            ("cancel", RunState::Cancelled),
            ("kill", RunState::Killed),
            ("exception", RunState::Exception),
        ];
        for (word, state) in cases {
            assert_eq!(word.parse::<ExitReason>().unwrap().run_state(), state);
        }
        assert!("bogus".parse::<ExitReason>().is_err());
    }

    #[test]
    fn lifecycle_moves_are_allowed() {
        use RunState::*;
        assert_eq!(
            check_transition(Available, Claimed, false),
            Ok(Transition::Apply)
        );
        assert_eq!(
            check_transition(Claimed, Started, true),
            Ok(Transition::Apply)
        );
        assert_eq!(
            check_transition(Claimed, Available, false),
            Ok(Transition::Apply)
        );
        for f in RunState::FINAL {
            assert_eq!(check_transition(Started, f, true), Ok(Transition::Apply));
            assert_eq!(check_transition(Claimed, f, true), Ok(Transition::Apply));
        }
    }

    #[test]
    fn unclaimed_runs_cannot_start_or_finish() {
        let e = check_transition(RunState::Available, RunState::Started, true).unwrap_err();
        assert!(e.message.contains("has not been claimed"));
        assert!(check_transition(RunState::Available, RunState::Success, true).is_err());
    }

    #[test]
    fn duplicates_are_noops() {
        for s in RunState::ALL {
            assert_eq!(check_transition(s, s, false), Ok(Transition::Noop));
        }
    }

    #[test]
    fn final_to_final_is_refused_in_lightnings_words() {
        let e = check_transition(RunState::Failed, RunState::Success, true).unwrap_err();
        assert_eq!(e.message, "already in completed state");
        // lost → success from another worker (a ghost) is refused too.
        let e = check_transition(RunState::Lost, RunState::Success, false).unwrap_err();
        assert_eq!(e.message, "already in completed state");
    }

    #[test]
    fn late_truth_from_own_worker_overrides_lost() {
        assert_eq!(
            check_transition(RunState::Lost, RunState::Success, true),
            Ok(Transition::LateTruth)
        );
        assert_eq!(
            check_transition(RunState::Lost, RunState::Started, true),
            Ok(Transition::Noop)
        );
        assert!(check_transition(RunState::Lost, RunState::Started, false).is_err());
    }
}
