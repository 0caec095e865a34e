//! Executes a plan: compile every step, then run breadth-first from the start
//! step, following edges, and derive each step's and the run's exit reason as
//! OpenFn does (conformance README §3).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::adaptors;
use crate::compiler::{self, AdaptorExports};
use crate::engine::{Engine, EngineFailure, StepOutcome};
use crate::events::{Event, ExitReason, Limits, LogLine, StepMemory};
use crate::logs::{LogPolicy, now_us, secrets_of};
use crate::plan::{Edge, Plan, Step};

/// One step execution, in the order executions started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub id: String,
    /// `id`, or `id-N` for the N+1th visit.
    #[serde(skip)]
    pub key: String,
    pub reason: ExitReason,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub reason: ExitReason,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// Final state (conformance README §3.1); `None` when there is none.
    pub final_state: Option<Value>,
    pub steps: Vec<StepReport>,
    /// Keys of the leaf executions, in plan order (empty when the run aborted).
    #[serde(default)]
    pub leaves: Vec<String>,
}

impl RunReport {
    fn aborted(
        reason: ExitReason,
        error_type: &str,
        message: String,
        steps: Vec<StepReport>,
    ) -> RunReport {
        RunReport {
            reason,
            error_type: Some(error_type.into()),
            error_message: Some(message),
            final_state: None,
            steps,
            leaves: Vec::new(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.reason == ExitReason::Success
    }
}

/// A compiled step, ready to run.
struct Prepared<'p> {
    step: &'p Step,
    module: String,
    operations_json: String,
}

/// Runs `plan` on `input`. Every event (logs as they are written, step and
/// run boundaries) goes to `on_event`, ending with `RunComplete`.
/// `secrets` are scrubbed from logs; when empty, the string values of every
/// step's `configuration` and of the input's `configuration` are used.
pub async fn execute(
    plan: &Plan,
    input: Value,
    limits: &Limits,
    secrets: &[String],
    on_event: &mut dyn FnMut(Event),
) -> RunReport {
    execute_in(None, plan, input, limits, secrets, on_event).await
}

/// An engine built ahead of its run, with every built-in adaptor loaded:
/// what the worker's run processes are forked from (`child::serve`), so a
/// run skips building a QuickJS runtime and loading its modules.
pub struct WarmEngine {
    engine: Engine,
    logs: UnboundedReceiver<LogLine>,
}

impl WarmEngine {
    pub async fn new() -> Result<WarmEngine, String> {
        let (engine, logs) = Engine::unarmed().await.map_err(|f| format!("{f:?}"))?;
        let names: Vec<&str> = adaptors::available().iter().map(|a| a.name).collect();
        engine.warm(&names).await.map_err(|f| format!("{f:?}"))?;
        Ok(WarmEngine { engine, logs })
    }
}

/// [`execute`] on `warm` if given, else on a fresh engine. A warm engine
/// serves one run: the caller forks before each run and gives the fork its
/// copy (`child::serve`), so no run sees another's. It is not dropped here
/// (a fresh engine is): a fork exits without freeing it, which is the point.
pub async fn execute_in(
    warm: Option<&mut WarmEngine>,
    plan: &Plan,
    input: Value,
    limits: &Limits,
    secrets: &[String],
    on_event: &mut dyn FnMut(Event),
) -> RunReport {
    let report = execute_inner(warm, plan, input, limits, secrets, on_event).await;
    let final_state_json = report.final_state.as_ref().map(|v| v.to_string());
    let leaves = report.leaves.clone();
    on_event(Event::RunComplete {
        reason: report.reason,
        error_type: report.error_type.clone(),
        error_message: report.error_message.clone(),
        final_state_json,
        leaves,
        timestamp_us: now_us(),
    });
    report
}

fn secrets_for(plan: &Plan, input: &Value, secrets: &[String]) -> Vec<String> {
    if !secrets.is_empty() {
        return secrets.to_vec();
    }
    let mut out = Vec::new();
    for s in &plan.steps {
        if let Some(c) = &s.configuration {
            secrets_of(c, &mut out);
        }
    }
    if let Some(c) = input.get("configuration") {
        secrets_of(c, &mut out);
    }
    out
}

async fn execute_inner(
    warm: Option<&mut WarmEngine>,
    plan: &Plan,
    input: Value,
    limits: &Limits,
    secrets: &[String],
    on_event: &mut dyn FnMut(Event),
) -> RunReport {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(limits.timeout_ms.max(1));
    let policy = LogPolicy::new(
        &secrets_for(plan, &input, secrets),
        limits.log_payload_limit_mb,
    );

    // 1. Adaptors (an unknown one fails the run before it starts), then
    // `run-start`, then every step compiled before anything runs.
    let mut used_adaptors: Vec<&'static adaptors::Adaptor> = Vec::new();
    let mut step_adaptors: HashMap<&str, Vec<&'static adaptors::Adaptor>> = HashMap::new();
    for step in plan.steps.iter().filter(|s| s.expression.is_some()) {
        let mut resolved = Vec::new();
        for spec in &step.adaptors {
            match adaptors::resolve(spec) {
                Ok(a) => resolved.push(a),
                Err(e) => {
                    return RunReport::aborted(
                        ExitReason::Exception,
                        "AutoinstallError",
                        format!("{}: {e}", step.id),
                        Vec::new(),
                    );
                }
            }
        }
        for a in &resolved {
            if !used_adaptors.iter().any(|u| u.name == a.name) {
                used_adaptors.push(a);
            }
        }
        step_adaptors.insert(step.id.as_str(), resolved);
    }
    let mut versions = Map::new();
    versions.insert(
        "runtime".into(),
        Value::String(format!("gabbro {}", env!("CARGO_PKG_VERSION"))),
    );
    versions.insert(
        "compiler".into(),
        Value::String(format!("gabbro {}", env!("CARGO_PKG_VERSION"))),
    );
    for a in &used_adaptors {
        versions.insert(
            a.name.into(),
            Value::Array(vec![Value::String(a.version.into())]),
        );
    }
    on_event(Event::RunStart {
        versions,
        timestamp_us: now_us(),
    });

    let mut prepared: HashMap<&str, Prepared<'_>> = HashMap::new();
    let mut compiled: Vec<(String, String)> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let Some(expression) = &step.expression else {
            continue;
        };
        let resolved = step_adaptors.remove(step.id.as_str()).unwrap_or_default();
        let exports: Vec<AdaptorExports<'_>> = resolved
            .iter()
            .map(|a| AdaptorExports {
                module: a.name,
                exports: a.exports,
            })
            .collect();
        match compiler::compile(expression, &exports) {
            Ok(job) => {
                let ops: Vec<Value> = job
                    .operations
                    .iter()
                    .map(|o| {
                        let mut m = Map::new();
                        if let Some(n) = &o.name {
                            m.insert("name".into(), Value::String(n.clone()));
                        }
                        m.insert("line".into(), Value::from(o.line));
                        Value::Object(m)
                    })
                    .collect();
                prepared.insert(
                    step.id.as_str(),
                    Prepared {
                        step,
                        module: format!("job:{i}"),
                        operations_json: serde_json::json!({"ops": ops, "shifts": job.column_shifts}).to_string(),
                    },
                );
                compiled.push((format!("job:{i}"), job.code));
            }
            Err(e) => {
                return RunReport::aborted(
                    ExitReason::Crash,
                    "CompileError",
                    format!("{}: {e}", step.id),
                    Vec::new(),
                );
            }
        }
    }

    // 2. The engine, with the adaptors loaded and the edges compiled.
    let mut fresh = None;
    let (engine, logs) = match warm {
        Some(WarmEngine { engine, logs }) => {
            engine.arm(limits, deadline, policy.clone());
            (&*engine, logs)
        }
        None => match Engine::new(limits, deadline, policy.clone()).await {
            Ok(x) => {
                let (engine, logs) = fresh.insert(x);
                (&*engine, logs)
            }
            Err(f) => return failure_report(f, limits, Vec::new()),
        },
    };
    for (name, code) in compiled {
        engine.add_job(&name, code);
    }
    let adaptor_names: Vec<&str> = used_adaptors.iter().map(|a| a.name).collect();
    if let Err(f) = engine.preload(&adaptor_names).await {
        drain(logs, on_event);
        return failure_report(f, limits, Vec::new());
    }
    for step in &plan.steps {
        for (target, edge) in &step.next {
            if let Edge::Expression(expr) = edge {
                match engine.compile_edge(&edge_key(&step.id, target), expr).await {
                    Ok(Ok(())) => {}
                    Ok(Err(msg)) => {
                        return RunReport::aborted(
                            ExitReason::Crash,
                            "Error",
                            format!(
                                "Failed to compile edge condition {}->{} ({msg})",
                                step.id, target
                            ),
                            Vec::new(),
                        );
                    }
                    Err(f) => return failure_report(f, limits, Vec::new()),
                }
            }
        }
    }

    // 3. Breadth-first execution.
    let mut queue: std::collections::VecDeque<(&str, Option<Value>)> =
        std::collections::VecDeque::new();
    queue.push_back((plan.start.as_str(), Some(input)));
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut steps: Vec<StepReport> = Vec::new();
    // Executions after which no edge was followed: (plan index, key, state, reason index).
    let mut leaves: Vec<(usize, String, Option<Value>, usize)> = Vec::new();
    let payload_limit = (limits.payload_limit_mb * 1024.0 * 1024.0) as usize;

    while let Some((id, step_input)) = queue.pop_front() {
        let Some(step) = plan.step(id) else { continue };
        let plan_index = plan
            .steps
            .iter()
            .position(|s| s.id == id)
            .unwrap_or(usize::MAX);
        let count = counts.entry(id).and_modify(|c| *c += 1).or_insert(0);
        let key = if *count == 0 {
            id.to_string()
        } else {
            format!("{id}-{count}")
        };

        let Some(prep) = prepared.get(id) else {
            // An empty step (a trigger): its input passes through.
            let next = match follow_edges(
                engine,
                step,
                step_input.as_ref().map(|v| v.to_string()).as_deref(),
                &step_input,
            )
            .await
            {
                Ok(n) => n,
                Err(Abort::Edge(msg)) => {
                    return RunReport::aborted(ExitReason::Crash, "EdgeConditionError", msg, steps);
                }
                Err(Abort::Engine(f)) => return failure_report(f, limits, steps),
            };
            if next.is_empty() {
                leaves.push((plan_index, key, step_input.clone(), usize::MAX));
            }
            for t in next {
                queue.push_back((t, step_input.clone()));
            }
            continue;
        };

        on_event(Event::StepStart {
            step_id: id.to_string(),
            key: key.clone(),
            timestamp_us: now_us(),
        });
        on_event(Event::Log(policy.runtime_line(
            "info",
            format!("Starting step {}", step_name(step)),
            Some(key.clone()),
        )));
        engine.set_current_step(Some(key.clone()));
        let step_started = Instant::now();
        let state = assemble_state(step_input.unwrap_or(Value::Object(Map::new())), step);
        let state_json = state.to_string();
        let outcome = {
            let fut = engine.run_step(
                &prep.module,
                id,
                step_name(prep.step),
                &state_json,
                &prep.operations_json,
            );
            tokio::pin!(fut);
            let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    biased;
                    r = &mut fut => break r,
                    Some(line) = logs.recv() => on_event(Event::Log(line)),
                    _ = &mut timer => break Err(EngineFailure::Timeout),
                }
            }
        };
        drain(logs, on_event);
        engine.set_current_step(None);
        let duration_ms = step_started.elapsed().as_millis() as u64;
        let mem = Some(StepMemory {
            job: engine.heap_used(),
            system: engine.gauge().peak() as u64,
        });

        let StepOutcome { json, error } = match outcome {
            Ok(o) => o,
            Err(f) => {
                let (reason, kind, message) = failure_parts(&f, limits);
                steps.push(StepReport {
                    id: id.into(),
                    key: key.clone(),
                    reason,
                    error_type: Some(kind.clone()),
                    error_message: Some(message.clone()),
                });
                on_event(Event::StepComplete {
                    step_id: id.into(),
                    key,
                    reason,
                    error_type: Some(kind.clone()),
                    error_message: Some(message.clone()),
                    output_json: None,
                    redacted: false,
                    duration_ms,
                    mem,
                    timestamp_us: now_us(),
                });
                return RunReport::aborted(reason, &kind, message, steps);
            }
        };

        let (mut reason, mut error_type, mut error_message) = match &error {
            None => (ExitReason::Success, None, None),
            // A fail reports the error's name (RuntimeError), a crash or kill
            // its subtype (ReferenceError) — README §3.2.
            Some(e) if e.severity == "fail" => (
                ExitReason::Fail,
                Some(e.name.clone()),
                Some(e.message.clone()),
            ),
            Some(e) => (
                severity(&e.severity),
                Some(e.kind.clone()),
                Some(e.message.clone()),
            ),
        };
        let aborts = matches!(
            reason,
            ExitReason::Crash | ExitReason::Kill | ExitReason::Exception
        );
        let mut output: Option<Value> = json.as_deref().and_then(|j| serde_json::from_str(j).ok());
        let mut output_json = json;
        let mut redacted = false;
        if let Some(text) = &output_json
            && payload_limit > 0
            && text.len() > payload_limit
        {
            // OpenFn's engine: the payload is withheld, and `data` of the
            // state passed on (and of a final state) becomes "[REDACTED]".
            redacted = true;
            output_json = None;
            let mut m = match output.take() {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            m.insert("data".into(), Value::String("[REDACTED]".into()));
            output = Some(Value::Object(m));
            on_event(Event::Log(policy.runtime_line(
                "warn",
                format!(
                    "State for step {} exceeds the payload limit of {}mb: redacted",
                    id, limits.payload_limit_mb
                ),
                Some(key.clone()),
            )));
        }

        let mut next = Vec::new();
        let mut run_abort: Option<(ExitReason, String, String)> = None;
        if aborts {
            if let Some(e) = &error {
                run_abort = Some((reason, e.name.clone(), e.message.clone()));
            }
        } else {
            match follow_edges(engine, step, output_json.as_deref(), &output).await {
                Ok(n) => next = n,
                Err(Abort::Edge(msg)) => {
                    reason = ExitReason::Crash;
                    error_type = Some("EdgeConditionError".into());
                    error_message = Some(msg.clone());
                    run_abort = Some((ExitReason::Crash, "EdgeConditionError".into(), msg));
                }
                Err(Abort::Engine(f)) => {
                    let (r, k, m) = failure_parts(&f, limits);
                    reason = r;
                    error_type = Some(k.clone());
                    error_message = Some(m.clone());
                    run_abort = Some((r, k, m));
                }
            }
        }

        steps.push(StepReport {
            id: id.into(),
            key: key.clone(),
            reason,
            error_type: error_type.clone(),
            error_message: error_message.clone(),
        });
        let level = if reason == ExitReason::Success {
            "success"
        } else {
            "error"
        };
        let summary = match (&error_type, &error_message) {
            (Some(t), Some(m)) => format!(
                "{} completed with {}: {t}: {m}",
                step_name(step),
                reason_word(reason)
            ),
            _ => format!("{} completed in {}ms", step_name(step), duration_ms),
        };
        on_event(Event::Log(policy.runtime_line(
            level,
            summary,
            Some(key.clone()),
        )));
        on_event(Event::StepComplete {
            step_id: id.into(),
            key: key.clone(),
            reason,
            error_type,
            error_message,
            output_json: if run_abort.is_some() {
                None
            } else {
                output_json
            },
            redacted,
            duration_ms,
            mem,
            timestamp_us: now_us(),
        });
        if let Some((r, t, m)) = run_abort {
            return RunReport::aborted(r, &t, m, steps);
        }
        if next.is_empty() {
            leaves.push((plan_index, key, output.clone(), steps.len() - 1));
        }
        for t in next {
            queue.push_back((t, output.clone()));
        }
    }

    // 4. The run's result, from its leaves.
    let several = leaves.len() > 1;
    let final_state = if several {
        let mut m = Map::new();
        for (_, key, state, _) in &leaves {
            if let Some(s) = state
                && !is_empty_state(s)
            {
                m.insert(key.clone(), s.clone());
            }
        }
        Some(Value::Object(m))
    } else {
        leaves.first().and_then(|(_, _, s, _)| s.clone())
    };
    let mut ordered: Vec<&(usize, String, Option<Value>, usize)> = leaves.iter().collect();
    ordered.sort_by_key(|(plan_index, _, _, exec)| (*plan_index, *exec));
    let failed_leaf = ordered
        .iter()
        .filter_map(|(_, _, _, exec)| steps.get(*exec))
        .find(|s| s.reason == ExitReason::Fail);
    let leaf_keys: Vec<String> = ordered.iter().map(|(_, key, _, _)| key.clone()).collect();
    match failed_leaf {
        Some(s) => RunReport {
            reason: ExitReason::Fail,
            error_type: s.error_type.clone(),
            error_message: s.error_message.clone(),
            final_state,
            steps: steps.clone(),
            leaves: leaf_keys,
        },
        None => RunReport {
            reason: ExitReason::Success,
            error_type: None,
            error_message: None,
            final_state,
            steps,
            leaves: leaf_keys,
        },
    }
}

fn step_name(step: &Step) -> &str {
    step.name.as_deref().unwrap_or(&step.id)
}

fn reason_word(r: ExitReason) -> &'static str {
    match r {
        ExitReason::Success => "success",
        ExitReason::Fail => "fail",
        ExitReason::Crash => "crash",
        ExitReason::Kill => "kill",
        ExitReason::Exception => "exception",
        ExitReason::Cancel => "cancel",
    }
}

fn severity(s: &str) -> ExitReason {
    match s {
        "fail" => ExitReason::Fail,
        "kill" => ExitReason::Kill,
        "exception" => ExitReason::Exception,
        _ => ExitReason::Crash,
    }
}

fn edge_key(from: &str, to: &str) -> String {
    format!("{}\u{0}{}", from, to)
}

fn drain(
    logs: &mut tokio::sync::mpsc::UnboundedReceiver<crate::events::LogLine>,
    on_event: &mut dyn FnMut(Event),
) {
    while let Ok(line) = logs.try_recv() {
        on_event(Event::Log(line));
    }
}

fn failure_parts(f: &EngineFailure, limits: &Limits) -> (ExitReason, String, String) {
    match f {
        EngineFailure::Timeout => (
            ExitReason::Kill,
            "TimeoutError".into(),
            format!("Workflow failed to return within {}ms", limits.timeout_ms),
        ),
        EngineFailure::OutOfMemory => (
            ExitReason::Kill,
            "OOMError".into(),
            "Run exceeded maximum memory usage".into(),
        ),
        EngineFailure::Internal(m) => (ExitReason::Exception, "ExecutionError".into(), m.clone()),
    }
}

fn failure_report(f: EngineFailure, limits: &Limits, steps: Vec<StepReport>) -> RunReport {
    let (reason, kind, message) = failure_parts(&f, limits);
    RunReport::aborted(reason, &kind, message, steps)
}

enum Abort {
    Edge(String),
    Engine(EngineFailure),
}

/// The targets to run after a step, in the order its edges are listed.
async fn follow_edges<'p>(
    engine: &Engine,
    step: &'p Step,
    output_json: Option<&str>,
    output: &Option<Value>,
) -> Result<Vec<&'p str>, Abort> {
    let has_error = || {
        output
            .as_ref()
            .and_then(|s| s.get("errors"))
            .and_then(|e| e.get(&step.id))
            .map(truthy)
            .unwrap_or(false)
    };
    let mut next = Vec::new();
    for (target, edge) in &step.next {
        let follow = match edge {
            Edge::Always => true,
            Edge::Never => false,
            Edge::OnSuccess => !has_error(),
            Edge::OnFailure => has_error(),
            Edge::Expression(_) => match engine
                .eval_edge(&edge_key(&step.id, target), output_json, &step.id)
                .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(msg)) => return Err(Abort::Edge(msg)),
                Err(f) => return Err(Abort::Engine(f)),
            },
        };
        if follow {
            next.push(target.as_str());
        }
    }
    Ok(next)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0 && !f.is_nan()).unwrap_or(true),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// `{}`, or an object whose only key is `data` holding `{}`.
fn is_empty_state(v: &Value) -> bool {
    match v {
        Value::Object(m) if m.is_empty() => true,
        Value::Object(m) if m.len() == 1 => {
            matches!(m.get("data"), Some(Value::Object(d)) if d.is_empty())
        }
        _ => false,
    }
}

fn js_falsy(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(v) => !truthy(v),
    }
}

/// OpenFn's assembleState: the step's default state under the input, the
/// input's `references`/`errors` kept, `configuration` merged (input, then
/// step), and `data` merged unless it is an array or a primitive.
pub fn assemble_state(input: Value, step: &Step) -> Value {
    // Moves the input's values (states can be large); clones only the
    // step's own (small) default state and configuration.
    let mut input = match input {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let default = match &step.state {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let mut configuration = Map::new();
    if let Some(Value::Object(c)) = input.get_mut("configuration") {
        configuration.extend(std::mem::take(c));
    }
    if let Some(Value::Object(c)) = &step.configuration {
        configuration.extend(c.clone());
    }
    let input_data = input.get_mut("data").map(Value::take);
    let data = match input_data {
        Some(d) if !js_falsy(Some(&d)) && !d.is_object() => d,
        other => {
            let mut m = match default.get("data") {
                Some(Value::Object(d)) => d.clone(),
                _ => Map::new(),
            };
            if let Some(Value::Object(d)) = other {
                m.extend(d);
            }
            Value::Object(m)
        }
    };
    let mut obj = default;
    for (k, v) in input {
        obj.insert(k, v);
    }
    obj.insert("configuration".into(), Value::Object(configuration));
    obj.insert("data".into(), data);
    Value::Object(obj)
}
