//! The verdict: what the harness observed (accepted webhooks, the database's
//! runs, steps and log lines, what each killed worker held) against the
//! promises of issue 5. Pure functions over plain data, so every rule has a
//! unit test.

use std::collections::{HashMap, HashSet};

/// Run states after which nothing changes (except `lost` taking late truth).
pub const FINAL_STATES: [&str; 7] = [
    "success",
    "failed",
    "crashed",
    "cancelled",
    "killed",
    "exception",
    "lost",
];

/// The marker each job logs; one line of each per successful run.
pub const MARKER_A: &str = "fault-step-a";
pub const MARKER_B: &str = "fault-step-b";

/// One run as the database has it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub work_order_id: String,
    pub state: String,
    pub error_type: Option<String>,
    pub worker_id: Option<String>,
    pub inserted_at: i64,
    pub finished_at: Option<i64>,
}

/// One step of a run, in the run's execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub job_id: String,
    pub exit_reason: Option<String>,
}

/// A worker killed with SIGKILL, and what it held at that moment.
#[derive(Debug, Clone, Default)]
pub struct WorkerKill {
    pub worker_id: String,
    /// When it was killed (µs since the epoch).
    pub at_us: i64,
    /// Runs it held: claimed or started by it in the database, or with a
    /// journal file in its journal directory.
    pub held: HashSet<String>,
    /// Runs whose `run:complete` was in its journal: the worker finished
    /// them, so they must never end `lost` (it is restarted and replays).
    pub completed: HashSet<String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Work order ids from every webhook answered 200.
    pub accepted: Vec<String>,
    /// Work order ids in the database.
    pub work_orders: HashSet<String>,
    pub runs: Vec<RunRow>,
    /// Steps per run id, in execution order.
    pub steps: HashMap<String, Vec<StepRow>>,
    /// Log lines per run id carrying MARKER_A and MARKER_B.
    pub marker_lines: HashMap<String, (u32, u32)>,
    /// The ids of the workflow's two jobs, in order (A, then B).
    pub job_a: String,
    pub job_b: String,
    pub worker_kills: Vec<WorkerKill>,
    /// When the orchestrator (re)started, µs since the epoch, ascending.
    pub orchestrator_starts_us: Vec<i64>,
    /// How long a run may take to become `lost` after its worker died,
    /// counted from the kill or the orchestrator's last start after it.
    pub lost_bound_us: i64,
}

/// Counts for the one summary line, and every broken promise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub accepted: usize,
    pub work_orders: usize,
    /// Work orders that no 200 answered (a request retried after its answer was lost).
    pub unacknowledged_work_orders: usize,
    pub runs: usize,
    pub final_runs: usize,
    pub success: usize,
    pub lost: usize,
    pub other: usize,
    /// Work orders with more than one run.
    pub retried_work_orders: usize,
    /// Runs a killed worker held.
    pub held_by_killed: usize,
    /// Of those, how many ended `success` (journal replay or requeue).
    pub held_by_killed_success: usize,
    /// Longest time from a worker kill (or the orchestrator's restart after it) to a run marked `lost`.
    pub worst_lost_delay_us: i64,
    pub violations: Vec<String>,
}

/// Applies every rule of issue 5's fault test.
pub fn judge(o: &Observed) -> Verdict {
    let mut v = Verdict {
        accepted: o.accepted.len(),
        work_orders: o.work_orders.len(),
        runs: o.runs.len(),
        ..Verdict::default()
    };
    let accepted: HashSet<&str> = o.accepted.iter().map(String::as_str).collect();
    v.unacknowledged_work_orders = o
        .work_orders
        .iter()
        .filter(|w| !accepted.contains(w.as_str()))
        .count();

    // Every accepted webhook has a work order.
    for id in &o.accepted {
        if !o.work_orders.contains(id) {
            v.violations.push(format!(
                "webhook answered 200 with work order {id}, which is not in the database"
            ));
        }
    }

    let mut runs_per_wo: HashMap<&str, usize> = HashMap::new();
    for r in &o.runs {
        *runs_per_wo.entry(r.work_order_id.as_str()).or_default() += 1;
    }
    v.retried_work_orders = runs_per_wo.values().filter(|n| **n > 1).count();
    // Every work order has a run.
    for wo in &o.work_orders {
        if !runs_per_wo.contains_key(wo.as_str()) {
            v.violations.push(format!("work order {wo} has no run"));
        }
    }

    let held_by = |run: &str| o.worker_kills.iter().find(|k| k.held.contains(run));
    let completed_by_killed = |run: &str| o.worker_kills.iter().any(|k| k.completed.contains(run));

    for r in &o.runs {
        let final_state = FINAL_STATES.contains(&r.state.as_str());
        let killed_holder = held_by(&r.id);
        if final_state {
            v.final_runs += 1;
        } else {
            // Say who holds it: a survivor (its claim reply or events went
            // missing) or a killed worker (its lease never ran out).
            let holder = match (killed_holder, r.worker_id.as_deref()) {
                (Some(k), _) => format!("held by killed worker {} when it died", k.worker_id),
                (None, Some(w)) => {
                    format!("holder {w}, a worker that was not killed while holding it")
                }
                (None, None) => "no holder".to_string(),
            };
            v.violations
                .push(format!("run {} is not final: {} ({holder})", r.id, r.state));
            continue;
        }
        if killed_holder.is_some() {
            v.held_by_killed += 1;
        }
        match r.state.as_str() {
            "success" => {
                v.success += 1;
                if killed_holder.is_some() {
                    v.held_by_killed_success += 1;
                }
                check_success(o, r, &mut v.violations);
            }
            "lost" => {
                v.lost += 1;
                if completed_by_killed(&r.id) {
                    v.violations.push(format!(
                        "run {} is lost although its worker completed it (run:complete was in its journal)",
                        r.id
                    ));
                }
                match killed_holder {
                    None => v.violations.push(format!(
                        "run {} is lost ({}) but no killed worker held it (holder {})",
                        r.id,
                        r.error_type.as_deref().unwrap_or("no error type"),
                        r.worker_id.as_deref().unwrap_or("none")
                    )),
                    Some(k) => {
                        let finished = r.finished_at.unwrap_or(i64::MAX);
                        // The clock restarts when the orchestrator does (it first waits for workers).
                        let since = o
                            .orchestrator_starts_us
                            .iter()
                            .copied()
                            .filter(|s| *s >= k.at_us && *s <= finished)
                            .max()
                            .unwrap_or(k.at_us);
                        let delay = finished.saturating_sub(since);
                        v.worst_lost_delay_us = v.worst_lost_delay_us.max(delay);
                        if delay > o.lost_bound_us {
                            v.violations.push(format!(
                                "run {} became lost {:.1}s after its worker died, past the bound of {:.1}s",
                                r.id,
                                delay as f64 / 1e6,
                                o.lost_bound_us as f64 / 1e6
                            ));
                        }
                    }
                }
            }
            other => {
                v.other += 1;
                v.violations.push(format!(
                    "run {} ended {other} ({})",
                    r.id,
                    r.error_type.as_deref().unwrap_or("no error type")
                ));
            }
        }
    }

    v
}

/// A successful run has exactly the two steps, in order, each `success`, and
/// each job's log line exactly once.
fn check_success(o: &Observed, r: &RunRow, violations: &mut Vec<String>) {
    let steps = o.steps.get(&r.id).map(Vec::as_slice).unwrap_or(&[]);
    let jobs: Vec<&str> = steps.iter().map(|s| s.job_id.as_str()).collect();
    if jobs != [o.job_a.as_str(), o.job_b.as_str()] {
        violations.push(format!(
            "run {} succeeded with steps {:?}, expected exactly [A, B] once each",
            r.id,
            jobs.iter().map(|j| job_name(o, j)).collect::<Vec<_>>()
        ));
    }
    for s in steps {
        if s.exit_reason.as_deref() != Some("success") {
            violations.push(format!(
                "run {} succeeded but its step {} has exit reason {:?}",
                r.id,
                job_name(o, &s.job_id),
                s.exit_reason
            ));
        }
    }
    let (a, b) = o.marker_lines.get(&r.id).copied().unwrap_or((0, 0));
    if a != 1 || b != 1 {
        violations.push(format!(
            "run {} succeeded with {a} '{MARKER_A}' and {b} '{MARKER_B}' log lines, expected 1 of each",
            r.id
        ));
    }
}

fn job_name<'a>(o: &Observed, job_id: &'a str) -> &'a str {
    if job_id == o.job_a {
        "A"
    } else if job_id == o.job_b {
        "B"
    } else {
        job_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, wo: &str, state: &str, worker: &str) -> RunRow {
        RunRow {
            id: id.into(),
            work_order_id: wo.into(),
            state: state.into(),
            error_type: None,
            worker_id: Some(worker.into()),
            inserted_at: 0,
            finished_at: Some(10_000_000),
        }
    }

    fn steps_ok() -> Vec<StepRow> {
        vec![
            StepRow {
                job_id: "A".into(),
                exit_reason: Some("success".into()),
            },
            StepRow {
                job_id: "B".into(),
                exit_reason: Some("success".into()),
            },
        ]
    }

    /// Two webhooks, two successful runs on a surviving worker: no violation.
    fn healthy() -> Observed {
        let mut o = Observed {
            accepted: vec!["wo1".into(), "wo2".into()],
            work_orders: ["wo1", "wo2"].into_iter().map(String::from).collect(),
            runs: vec![
                run("r1", "wo1", "success", "w1"),
                run("r2", "wo2", "success", "w1"),
            ],
            job_a: "A".into(),
            job_b: "B".into(),
            lost_bound_us: 120_000_000,
            ..Observed::default()
        };
        for r in ["r1", "r2"] {
            o.steps.insert(r.into(), steps_ok());
            o.marker_lines.insert(r.into(), (1, 1));
        }
        o
    }

    fn kill_holding(run: &str, completed: bool) -> WorkerKill {
        WorkerKill {
            worker_id: "w2".into(),
            at_us: 1_000_000,
            held: [run.to_string()].into_iter().collect(),
            completed: if completed {
                [run.to_string()].into_iter().collect()
            } else {
                HashSet::new()
            },
        }
    }

    #[test]
    fn a_healthy_run_set_has_no_violation_and_counts_right() {
        let v = judge(&healthy());
        assert_eq!(v.violations, Vec::<String>::new());
        assert_eq!(
            (
                v.accepted,
                v.work_orders,
                v.runs,
                v.final_runs,
                v.success,
                v.lost
            ),
            (2, 2, 2, 2, 2, 0)
        );
    }

    #[test]
    fn an_accepted_webhook_without_a_work_order_is_a_violation() {
        let mut o = healthy();
        o.accepted.push("wo3".into());
        let v = judge(&o);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].contains("wo3"));
    }

    #[test]
    fn a_work_order_nobody_acknowledged_is_counted_not_a_violation() {
        let mut o = healthy();
        o.accepted.pop();
        let v = judge(&o);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.unacknowledged_work_orders, 1);
    }

    #[test]
    fn a_run_that_is_not_final_is_a_violation() {
        let mut o = healthy();
        o.runs[1].state = "started".into();
        let v = judge(&o);
        assert_eq!(v.final_runs, 1);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("r2 is not final: started (holder w1")),
            "{:?}",
            v.violations
        );
        o.worker_kills.push(kill_holding("r2", false));
        let v = judge(&o);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("held by killed worker w2")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_step_recorded_twice_is_a_violation() {
        let mut o = healthy();
        o.steps.get_mut("r1").unwrap().push(StepRow {
            job_id: "B".into(),
            exit_reason: Some("success".into()),
        });
        let v = judge(&o);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("r1 succeeded with steps")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_missing_or_duplicated_log_line_is_a_violation() {
        let mut o = healthy();
        o.marker_lines.insert("r1".into(), (1, 0));
        o.marker_lines.insert("r2".into(), (2, 1));
        let v = judge(&o);
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
    }

    #[test]
    fn a_lost_run_whose_worker_survived_is_a_violation() {
        let mut o = healthy();
        o.runs[0].state = "lost".into();
        let v = judge(&o);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("no killed worker held it")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_lost_run_of_a_killed_worker_within_the_bound_is_fine() {
        let mut o = healthy();
        o.runs[0].state = "lost".into();
        o.runs[0].finished_at = Some(90_000_000);
        o.worker_kills.push(kill_holding("r1", false));
        let v = judge(&o);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.lost, v.held_by_killed), (1, 1));
        assert_eq!(v.worst_lost_delay_us, 89_000_000);
    }

    #[test]
    fn a_lost_run_past_the_bound_is_a_violation_unless_the_orchestrator_restarted_since() {
        let mut o = healthy();
        o.runs[0].state = "lost".into();
        o.runs[0].finished_at = Some(200_000_000);
        o.worker_kills.push(kill_holding("r1", false));
        assert!(
            judge(&o)
                .violations
                .iter()
                .any(|m| m.contains("past the bound"))
        );
        o.orchestrator_starts_us = vec![500_000, 100_000_000];
        let v = judge(&o);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.worst_lost_delay_us, 100_000_000);
    }

    #[test]
    fn a_lost_run_its_killed_worker_had_completed_is_a_violation() {
        let mut o = healthy();
        o.runs[0].state = "lost".into();
        o.worker_kills.push(kill_holding("r1", true));
        let v = judge(&o);
        assert!(
            v.violations
                .iter()
                .any(|m| m.contains("its worker completed it")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn a_killed_workers_run_that_was_replayed_or_retried_to_success_counts_as_such() {
        let mut o = healthy();
        o.worker_kills.push(kill_holding("r2", true));
        let v = judge(&o);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.held_by_killed, v.held_by_killed_success), (1, 1));
    }

    #[test]
    fn a_failed_or_exception_run_is_a_violation() {
        let mut o = healthy();
        o.runs[0].state = "exception".into();
        o.runs[0].error_type = Some("DataClipError".into());
        let v = judge(&o);
        assert_eq!(v.other, 1);
        assert!(v.violations[0].contains("ended exception (DataClipError)"));
    }

    #[test]
    fn a_lost_run_retried_on_the_same_work_order_counts_as_retried() {
        let mut o = healthy();
        o.runs[0].state = "lost".into();
        o.worker_kills.push(kill_holding("r1", false));
        o.runs.push(run("r1b", "wo1", "success", "w1"));
        o.steps.insert("r1b".into(), steps_ok());
        o.marker_lines.insert("r1b".into(), (1, 1));
        let v = judge(&o);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(v.retried_work_orders, 1);
    }
}
