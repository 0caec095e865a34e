//! `gabbro run`: runs one job or one execution plan locally.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use crate::events::{Event, ExitReason, Limits, LogLine};
use crate::plan::{DEFAULT_ADAPTOR, Plan};
use crate::run::{RunReport, execute};

/// Run an OpenFn job (.js) or an execution plan (.json) locally, without a server.
///
/// Logs go to stderr as they happen; the final state goes to stdout (or to
/// `-o`). Exit status: 0 when the run succeeded, 1 when it did not, 2 on bad
/// usage (unreadable or invalid files, bad flags).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The job (DSL source, e.g. job.js) or an OpenFn execution plan
    /// (`{"workflow": {"steps": [...]}, "options": {"start": ...}}`, .json).
    pub path: PathBuf,
    /// Initial state, a JSON file (default `{}`).
    #[arg(short = 's', long = "state", value_name = "STATE.json")]
    pub state: Option<PathBuf>,
    /// Adaptor for a single job, e.g. `@openfn/language-http@7` (default
    /// `@openfn/language-common`). With a plan: the adaptor of steps that name none.
    #[arg(short = 'a', long = "adaptor", value_name = "ADAPTOR")]
    pub adaptor: Option<String>,
    /// Write the final state here (also when the run fails; `null` when there
    /// is none) instead of printing it.
    #[arg(short = 'o', long = "output", value_name = "OUT.json")]
    pub output: Option<PathBuf>,
    /// Write `{"run": {reason, error_type, error_message}, "steps": [...]}` here.
    #[arg(long = "report", value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// Kill the run after this many seconds (TimeoutError).
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 300.0)]
    pub timeout: f64,
    /// Kill the run when its JavaScript heap exceeds this many MB (OOMError).
    #[arg(long = "memory-limit", value_name = "MB", default_value_t = 500)]
    pub memory_limit: u64,
    /// Withhold a step's output state above this many MB.
    #[arg(long = "payload-limit", value_name = "MB", default_value_t = 10.0)]
    pub payload_limit: f64,
    /// Redact log lines above this many MB.
    #[arg(long = "log-payload-limit", value_name = "MB", default_value_t = 1.0)]
    pub log_payload_limit: f64,
    /// Do not print logs.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// A usage problem: reported with exit status 2.
struct Usage(String);

fn read_json(path: &Path, what: &str) -> Result<Value, Usage> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Usage(format!("cannot read {what} {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Usage(format!("{what} {} is not valid JSON: {e}", path.display())))
}

fn load_plan(args: &RunArgs) -> Result<Plan, Usage> {
    let is_json = args
        .path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let value = read_json(&args.path, "plan")?;
        let mut plan = Plan::from_json(&value)
            .map_err(|e| Usage(format!("invalid plan {}: {e}", args.path.display())))?;
        if let Some(a) = &args.adaptor {
            for step in &mut plan.steps {
                let named = value_names_adaptor(&value, &step.id);
                if !named && step.expression.is_some() {
                    step.adaptors = vec![a.clone()];
                }
            }
        }
        Ok(plan)
    } else {
        let source = std::fs::read_to_string(&args.path)
            .map_err(|e| Usage(format!("cannot read job {}: {e}", args.path.display())))?;
        Ok(Plan::single_job(
            &source,
            args.adaptor.as_deref().unwrap_or(DEFAULT_ADAPTOR),
        ))
    }
}

/// Whether the plan JSON gives step `id` an adaptor of its own.
fn value_names_adaptor(plan: &Value, id: &str) -> bool {
    let steps = plan
        .pointer("/workflow/steps")
        .or_else(|| plan.get("steps"));
    steps
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            s.get("id").and_then(Value::as_str) == Some(id)
                && (s.get("adaptor").is_some_and(|a| a.is_string())
                    || s.get("adaptors")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty()))
        })
}

fn print_log(line: &LogLine) {
    let text: Vec<String> = line
        .message
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[{}] {} {}", line.source, line.level, text.join(" "));
}

/// The `--report` document.
pub fn report_json(report: &RunReport) -> Value {
    json!({
        "run": {
            "reason": report.reason,
            "error_type": report.error_type,
            "error_message": report.error_message,
        },
        "steps": report.steps.iter().map(|s| json!({
            "id": s.id,
            "reason": s.reason,
            "error_type": s.error_type,
            "error_message": s.error_message,
        })).collect::<Vec<_>>(),
    })
}

fn write_file(path: &Path, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let prepared = (|| -> Result<(Plan, Value), Usage> {
        if !(args.timeout.is_finite() && args.timeout > 0.0) {
            return Err(Usage(
                "--timeout must be a positive number of seconds".into(),
            ));
        }
        if args.memory_limit == 0 {
            return Err(Usage("--memory-limit must be at least 1 MB".into()));
        }
        let plan = load_plan(&args)?;
        let input = match &args.state {
            Some(p) => read_json(p, "state")?,
            None => json!({}),
        };
        Ok((plan, input))
    })();
    let (plan, input) = match prepared {
        Ok(x) => x,
        Err(Usage(msg)) => {
            eprintln!("gabbro run: {msg}");
            return Ok(2);
        }
    };
    let limits = Limits {
        timeout_ms: (args.timeout * 1000.0).round().max(1.0) as u64,
        memory_limit_mb: args.memory_limit,
        payload_limit_mb: args.payload_limit,
        log_payload_limit_mb: args.log_payload_limit,
    };
    let quiet = args.quiet;
    let started = std::time::Instant::now();
    let report = execute(&plan, input, &limits, &[], &mut |event| {
        if quiet {
            return;
        }
        if let Event::Log(line) = &event {
            print_log(line);
        }
    })
    .await;
    // For benchmarks: the run alone, without process start and file I/O.
    if std::env::var_os("GABBRO_RUN_TIMING").is_some() {
        eprintln!(
            "in-process: {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    if !quiet && report.reason != ExitReason::Success {
        eprintln!(
            "[R/T] error Run complete with status: {}{}",
            serde_json::to_value(report.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            match (&report.error_type, &report.error_message) {
                (Some(t), Some(m)) => format!(" ({t}: {m})"),
                _ => String::new(),
            }
        );
    }
    let final_state = report.final_state.clone().unwrap_or(Value::Null);
    match &args.output {
        Some(path) => write_file(path, &final_state)?,
        None => println!("{}", serde_json::to_string_pretty(&final_state)?),
    }
    if let Some(path) = &args.report {
        write_file(path, &report_json(&report))?;
    }
    Ok(if report.succeeded() { 0 } else { 1 })
}
