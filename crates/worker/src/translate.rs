//! Runtime events (from the child process) → run channel events, the way
//! OpenFn's worker reports them: worker-chosen UUIDs for steps and output
//! dataclips, each step's `input_dataclip_id` taken from the upstream
//! step's output, `run:complete` in its two shapes (normal completion with
//! `final_state`, or the bare engine-error shape).

use std::collections::{HashMap, HashSet};

use gabbro_protocol::{
    LightningPlan, Reason, RunComplete, RunEvent, RunLog, StepComplete, StepMem, StepStart,
    Timestamp,
};
use gabbro_runtime::events::{Event, ExitReason, LogLine};
use serde_json::Value;

pub fn reason_of(r: ExitReason) -> Reason {
    match r {
        ExitReason::Success => Reason::Success,
        ExitReason::Fail => Reason::Fail,
        ExitReason::Crash => Reason::Crash,
        ExitReason::Kill => Reason::Kill,
        ExitReason::Exception => Reason::Exception,
        ExitReason::Cancel => Reason::Cancel,
    }
}

struct ActiveStep {
    step_id: String,
    job_id: String,
}

/// Per-run translation state.
pub struct Translator {
    run_id: String,
    jobs: HashSet<String>,
    /// job id → the jobs its edges lead to.
    targets: HashMap<String, Vec<String>>,
    save_outputs: bool,
    /// Input dataclip for the first step (the run's dataclip).
    first_input: Option<String>,
    started_any: bool,
    /// The input dataclip id each job will start with.
    input_for: HashMap<String, String>,
    /// Execution key → step UUID.
    steps: HashMap<String, ActiveStep>,
    /// Execution key → output dataclip id (when the output was recorded).
    outputs: HashMap<String, String>,
    active: Option<String>,
    completed: bool,
    /// `options.job_log_level: "none"`: the job's own console is not sent.
    drop_job_logs: bool,
}

impl Translator {
    pub fn new(plan: &LightningPlan) -> Translator {
        let mut targets: HashMap<String, Vec<String>> = HashMap::new();
        for e in &plan.edges {
            if let Some(src) = &e.source_job_id {
                targets
                    .entry(src.clone())
                    .or_default()
                    .push(e.target_job_id.clone());
            }
        }
        Translator {
            run_id: plan.id.clone(),
            jobs: plan.jobs.iter().map(|j| j.id.clone()).collect(),
            targets,
            save_outputs: plan
                .options
                .as_ref()
                .and_then(|o| o.output_dataclips)
                .unwrap_or(true),
            first_input: plan.dataclip_id.clone(),
            started_any: false,
            input_for: HashMap::new(),
            steps: HashMap::new(),
            outputs: HashMap::new(),
            active: None,
            completed: false,
            drop_job_logs: plan
                .options
                .as_ref()
                .and_then(|o| o.job_log_level.as_deref())
                == Some("none"),
        }
    }

    pub fn is_complete(&self) -> bool {
        self.completed
    }

    /// A log line from the worker itself (not the runtime).
    pub fn worker_log(&self, source: &str, level: &str, message: &str) -> RunEvent {
        RunEvent::RunLog(RunLog {
            run_id: Some(self.run_id.clone()),
            message: vec![Value::String(message.to_string())],
            source: Some(source.to_string()),
            level: level.to_string(),
            timestamp: Timestamp::now(),
            step_id: None,
            seq: None,
        })
    }

    pub fn on_event(&mut self, event: Event) -> Vec<RunEvent> {
        if self.completed {
            return Vec::new();
        }
        match event {
            // `run:start` was sent (and acknowledged) before execution began.
            Event::RunStart { .. } => Vec::new(),
            Event::StepStart {
                step_id,
                key,
                timestamp_us,
            } => self.step_start(step_id, key, timestamp_us),
            Event::Log(line) if self.drop_job_logs && line.source == "JOB" => Vec::new(),
            Event::Log(line) => vec![self.log(line)],
            Event::StepComplete {
                step_id: _,
                key,
                reason,
                error_type,
                error_message,
                output_json,
                redacted,
                duration_ms,
                mem,
                timestamp_us,
            } => self
                .step_complete(
                    &key,
                    reason_of(reason),
                    error_type,
                    error_message,
                    output_json,
                    redacted,
                    Some(duration_ms),
                    mem.map(|m| StepMem {
                        job: m.job,
                        system: m.system,
                    }),
                    Timestamp(timestamp_us),
                )
                .into_iter()
                .collect(),
            Event::RunComplete {
                reason,
                error_type,
                error_message,
                final_state_json,
                leaves,
                timestamp_us,
            } => self.run_complete(
                reason_of(reason),
                error_type,
                error_message,
                final_state_json,
                &leaves,
                Timestamp(timestamp_us),
            ),
        }
    }

    /// The child died or was killed before `run-complete`: close the active
    /// step with the error, then complete the run in the engine-error shape.
    pub fn on_child_death(
        &mut self,
        reason: Reason,
        error_type: &str,
        message: &str,
    ) -> Vec<RunEvent> {
        if self.completed {
            return Vec::new();
        }
        self.run_complete_error(reason, error_type, message)
    }

    fn step_start(&mut self, step_id: String, key: String, ts: i64) -> Vec<RunEvent> {
        if !self.jobs.contains(&step_id) {
            return Vec::new(); // triggers never become steps
        }
        let input = if self.started_any {
            self.input_for.get(&step_id).cloned()
        } else {
            self.first_input.clone()
        };
        self.started_any = true;
        let uuid = uuid::Uuid::new_v4().to_string();
        self.steps.insert(
            key.clone(),
            ActiveStep {
                step_id: uuid.clone(),
                job_id: step_id.clone(),
            },
        );
        self.active = Some(key);
        vec![RunEvent::StepStart(StepStart {
            step_id: uuid,
            job_id: step_id,
            timestamp: Timestamp(ts),
            input_dataclip_id: input,
            credential_id: None,
            seq: None,
        })]
    }

    fn log(&self, line: LogLine) -> RunEvent {
        let step_id = line
            .step
            .as_ref()
            .and_then(|k| self.steps.get(k))
            .map(|s| s.step_id.clone());
        RunEvent::RunLog(RunLog {
            run_id: Some(self.run_id.clone()),
            message: line.message,
            source: Some(line.source),
            level: line.level,
            timestamp: Timestamp(line.timestamp_us),
            step_id,
            seq: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn step_complete(
        &mut self,
        key: &str,
        reason: Reason,
        error_type: Option<String>,
        error_message: Option<String>,
        output_json: Option<String>,
        redacted: bool,
        duration_ms: Option<u64>,
        mem: Option<StepMem>,
        timestamp: Timestamp,
    ) -> Option<RunEvent> {
        let step = self.steps.get(key)?;
        if self.active.as_deref() == Some(key) {
            self.active = None;
        }
        let (output_id, output_body, output_error) = match (output_json, redacted) {
            (_, true) => (
                Some(uuid::Uuid::new_v4().to_string()),
                None,
                Some("DATACLIP_TOO_LARGE".to_string()),
            ),
            (Some(body), false) => (
                Some(uuid::Uuid::new_v4().to_string()),
                self.save_outputs.then_some(body),
                None,
            ),
            (None, false) => (None, None, None),
        };
        if let Some(id) = &output_id
            && !redacted
        {
            self.outputs.insert(key.to_string(), id.clone());
            for t in self.targets.get(&step.job_id).into_iter().flatten() {
                self.input_for.insert(t.clone(), id.clone());
            }
        }
        Some(RunEvent::StepComplete(StepComplete {
            step_id: step.step_id.clone(),
            job_id: Some(step.job_id.clone()),
            mem,
            duration: duration_ms,
            thread_id: None,
            timestamp,
            output_dataclip_id: output_id,
            output_dataclip: output_body,
            output_dataclip_error: output_error,
            reason,
            error_type,
            error_message,
            webhook_response: None,
            seq: None,
        }))
    }

    fn run_complete(
        &mut self,
        reason: Reason,
        error_type: Option<String>,
        error_message: Option<String>,
        final_state_json: Option<String>,
        leaves: &[String],
        timestamp: Timestamp,
    ) -> Vec<RunEvent> {
        if matches!(reason, Reason::Crash | Reason::Kill | Reason::Exception) {
            return self.run_complete_error(
                reason,
                error_type.as_deref().unwrap_or("Error"),
                error_message.as_deref().unwrap_or(""),
            );
        }
        let mut out = Vec::new();
        // A step the runtime left open gets closed with the run's outcome.
        if let Some(key) = self.active.clone() {
            out.extend(self.step_complete(
                &key,
                reason,
                error_type.clone(),
                error_message.clone(),
                None,
                false,
                None,
                None,
                timestamp,
            ));
        }
        out.push(self.worker_log(
            "R/T",
            "info",
            &format!("Run complete with status: {}", reason.as_str()),
        ));
        let final_state = final_state_json
            .as_deref()
            .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.to_string())))
            .unwrap_or(Value::Null);
        let final_dataclip_id = match leaves {
            [one] => self.outputs.get(one).cloned(),
            _ => None,
        };
        out.push(RunEvent::RunComplete(RunComplete {
            timestamp: Some(timestamp),
            final_state: Some(final_state),
            reason,
            error_type,
            error_message,
            final_dataclip_id,
            seq: None,
        }));
        self.completed = true;
        out
    }

    fn run_complete_error(
        &mut self,
        reason: Reason,
        error_type: &str,
        message: &str,
    ) -> Vec<RunEvent> {
        let mut out = Vec::new();
        if let Some(key) = self.active.clone() {
            out.extend(self.step_complete(
                &key,
                reason,
                Some(error_type.to_string()),
                Some(message.to_string()),
                None,
                false,
                None,
                None,
                Timestamp::now(),
            ));
        }
        out.push(self.worker_log(
            "R/T",
            "info",
            &format!("Run complete with status: {}", reason.as_str()),
        ));
        out.push(self.worker_log("R/T", "info", &format!("{error_type}: {message}")));
        out.push(RunEvent::RunComplete(RunComplete {
            timestamp: None,
            final_state: None,
            reason,
            error_type: Some(error_type.to_string()),
            error_message: Some(message.to_string()),
            final_dataclip_id: None,
            seq: None,
        }));
        self.completed = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> LightningPlan {
        serde_json::from_value(json!({
            "id": "r1", "dataclip_id": "d0", "starting_node_id": "t",
            "triggers": [{"id": "t"}],
            "jobs": [{"id": "A", "body": ""}, {"id": "B", "body": ""}],
            "edges": [
                {"id": "e0", "source_trigger_id": "t", "target_job_id": "A"},
                {"id": "e1", "source_job_id": "A", "target_job_id": "B"}
            ]
        }))
        .unwrap()
    }

    fn complete(key: &str, out: Option<&str>) -> Event {
        Event::StepComplete {
            step_id: key.into(),
            key: key.into(),
            reason: ExitReason::Success,
            error_type: None,
            error_message: None,
            output_json: out.map(str::to_string),
            redacted: false,
            duration_ms: 3,
            mem: None,
            timestamp_us: 1,
        }
    }

    fn start(key: &str) -> Event {
        Event::StepStart {
            step_id: key.into(),
            key: key.into(),
            timestamp_us: 1,
        }
    }

    #[test]
    fn chains_dataclips_from_step_to_step_and_names_the_final_one() {
        let mut t = Translator::new(&plan());
        assert!(t.on_event(start("t")).is_empty(), "triggers are not steps");
        let [RunEvent::StepStart(a)] = &t.on_event(start("A"))[..] else {
            panic!()
        };
        assert_eq!(a.input_dataclip_id.as_deref(), Some("d0"));
        let [RunEvent::StepComplete(ac)] = &t.on_event(complete("A", Some(r#"{"data":1}"#)))[..]
        else {
            panic!()
        };
        assert_eq!(ac.step_id, a.step_id);
        assert_eq!(ac.output_dataclip.as_deref(), Some(r#"{"data":1}"#));
        let [RunEvent::StepStart(b)] = &t.on_event(start("B"))[..] else {
            panic!()
        };
        assert_eq!(b.input_dataclip_id, ac.output_dataclip_id);
        let [RunEvent::StepComplete(bc)] = &t.on_event(complete("B", Some(r#"{"data":2}"#)))[..]
        else {
            panic!()
        };
        let out = t.on_event(Event::RunComplete {
            reason: ExitReason::Success,
            error_type: None,
            error_message: None,
            final_state_json: Some(r#"{"data":2}"#.into()),
            leaves: vec!["B".into()],
            timestamp_us: 9,
        });
        let Some(RunEvent::RunComplete(rc)) = out.last() else {
            panic!()
        };
        assert_eq!(rc.final_dataclip_id, bc.output_dataclip_id);
        assert_eq!(rc.final_state, Some(json!({"data": 2})));
        assert!(t.is_complete());
    }

    #[test]
    fn a_dead_child_closes_the_active_step_and_the_run_in_the_error_shape() {
        let mut t = Translator::new(&plan());
        t.on_event(start("A"));
        let out = t.on_child_death(
            Reason::Kill,
            "OOMError",
            "Run exceeded maximum memory usage",
        );
        let RunEvent::StepComplete(sc) = &out[0] else {
            panic!()
        };
        assert_eq!(sc.reason, Reason::Kill);
        assert_eq!(sc.error_type.as_deref(), Some("OOMError"));
        let Some(RunEvent::RunComplete(rc)) = out.last() else {
            panic!()
        };
        assert_eq!(rc.reason, Reason::Kill);
        assert!(rc.final_state.is_none() && rc.timestamp.is_none());
        assert!(t.on_child_death(Reason::Crash, "x", "y").is_empty());
    }
}
