//! The sandboxed JavaScript engine of one run: a QuickJS runtime and context
//! (fresh per run), its limits, its module loader, and the glue that runs a
//! step the way OpenFn's runtime does (`glue.js`).
//!
//! Limits: the heap is capped by [`alloc::LimitedAllocator`] (its flag, not a
//! message, says "out of memory"); the C stack by QuickJS's stack limit (deep
//! recursion becomes a `RangeError`, as in Node); time by an interrupt handler
//! (JS running past the deadline) plus the caller's timer around every await
//! (time spent waiting on native futures).

pub mod alloc;
pub mod loader;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rquickjs::function::{Async, Func};
use rquickjs::{
    AsyncContext, AsyncRuntime, CatchResultExt, Ctx, Function, JsLifetime, Module, Object, Promise,
    Value,
};
use serde_json::Value as Json;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::events::{Limits, LogLine};
use crate::logs::LogPolicy;
use alloc::{LimitedAllocator, MemoryGauge};
use loader::{JobSources, RunLoader, RunResolver};

const GLUE_SOURCE: &str = include_str!("glue.js");

/// QuickJS's stack limit. Threads that run jobs have at least 2 MB (tokio
/// workers, test threads); 1 MB leaves room for the Rust frames around it.
const STACK_LIMIT: usize = 1024 * 1024;

/// How a step ended, as the glue reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Output state as JSON text (`configuration`/`response` removed; with
    /// `errors[step]` on fail). `None`: no state.
    pub json: Option<String>,
    pub error: Option<StepError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// `fail`, `crash` or `kill`.
    pub severity: String,
    /// OpenFn's error name (`JobError`, `RuntimeCrash`, …).
    pub name: String,
    /// Subtype if any, else the name (a step's `error_type`).
    pub kind: String,
    pub message: String,
}

/// The engine failed outside of job semantics (limits, or the engine itself).
#[derive(Debug, Clone, PartialEq)]
pub enum EngineFailure {
    Timeout,
    OutOfMemory,
    /// The engine could not do what was asked (message).
    Internal(String),
}

pub struct Engine {
    ctx: AsyncContext,
    /// Adaptors this engine has imported: importing one again would only
    /// build promises to learn that it is there.
    imported: Mutex<HashSet<String>>,
    jobs: JobSources,
    gauge: MemoryGauge,
    bounds: Arc<RunBounds>,
    current_step: Arc<Mutex<Option<String>>>,
}

/// The parts of an engine that belong to one run: set by [`Engine::arm`],
/// so an engine can be built (and its modules loaded) before its run is
/// known.
struct RunBounds {
    deadline: Mutex<Instant>,
    policy: Mutex<LogPolicy>,
}

impl RunBounds {
    fn deadline(&self) -> Instant {
        match self.deadline.lock() {
            Ok(d) => *d,
            // A poisoned lock means a panic mid-run: treat the run as late.
            Err(_) => Instant::now(),
        }
    }
}

fn exception_text(ctx: &Ctx<'_>, err: rquickjs::Error) -> String {
    if let rquickjs::Error::Exception = err {
        let v = ctx.catch();
        if let Some(o) = v.as_object() {
            let msg: Option<String> = o.get("message").ok();
            let name: Option<String> = o.get("name").ok();
            return match (name, msg) {
                (Some(n), Some(m)) => format!("{n}: {m}"),
                (None, Some(m)) => m,
                _ => "unknown exception".into(),
            };
        }
        if let Some(s) = v.as_string().and_then(|s| s.to_string().ok()) {
            return s;
        }
        return format!("{v:?}");
    }
    err.to_string()
}

impl Engine {
    /// A fresh runtime and context with the sandbox installed, armed for a
    /// run. Log lines arrive on the returned receiver as they are written.
    pub async fn new(
        limits: &Limits,
        deadline: Instant,
        policy: LogPolicy,
    ) -> Result<(Engine, UnboundedReceiver<LogLine>), EngineFailure> {
        let (engine, logs) = Engine::unarmed().await?;
        engine.arm(limits, deadline, policy);
        Ok((engine, logs))
    }

    /// A fresh runtime and context with the sandbox installed but no run's
    /// limits yet: no heap limit, no deadline, no secrets to scrub. Call
    /// [`Engine::arm`] before any job code runs.
    pub async fn unarmed() -> Result<(Engine, UnboundedReceiver<LogLine>), EngineFailure> {
        let (allocator, gauge) = LimitedAllocator::new(usize::MAX);
        let rt = AsyncRuntime::new_with_alloc(allocator)
            .map_err(|e| EngineFailure::Internal(e.to_string()))?;
        rt.set_max_stack_size(STACK_LIMIT).await;
        // Far enough to never fire before `arm` sets the run's deadline.
        let unbounded = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        let bounds = Arc::new(RunBounds {
            deadline: Mutex::new(unbounded),
            policy: Mutex::new(LogPolicy::default()),
        });
        let gauge_for_interrupt = gauge.clone();
        let bounds_for_interrupt = bounds.clone();
        rt.set_interrupt_handler(Some(Box::new(move || {
            let late = Instant::now() >= bounds_for_interrupt.deadline();
            if late {
                gauge_for_interrupt.cut_off();
            }
            late
        })))
        .await;
        let jobs: JobSources = Arc::new(Mutex::new(HashMap::new()));
        rt.set_loader(
            RunResolver { jobs: jobs.clone() },
            RunLoader { jobs: jobs.clone() },
        )
        .await;
        let ctx = AsyncContext::full(&rt)
            .await
            .map_err(|e| EngineFailure::Internal(e.to_string()))?;

        let (tx, rx) = unbounded_channel();
        let current_step = Arc::new(Mutex::new(None));
        let step_for_log = current_step.clone();
        let bounds_for_log = bounds.clone();
        ctx.with(move |ctx| -> Result<(), String> {
            let setup = || -> rquickjs::Result<()> {
                let (module, promise) =
                    loader::declare_cached(&ctx, loader::GLUE, GLUE_SOURCE)?.eval()?;
                promise.finish::<()>()?;
                let ns = module.namespace()?;
                let _ = ctx.store_userdata(GlueNamespace(ns.clone()));
                let install: Function = ns.get("install")?;
                let log = Func::from(native_log(tx, bounds_for_log, step_for_log));
                let sleep = Func::from(Async(|ms: f64| async move {
                    let ms = if ms.is_finite() && ms > 0.0 { ms } else { 0.0 };
                    tokio::time::sleep(Duration::from_micros((ms * 1000.0) as u64)).await;
                    rquickjs::Result::Ok(())
                }));
                install.call::<_, ()>((log, sleep))?;
                Ok(())
            };
            setup().map_err(|e| exception_text(&ctx, e))
        })
        .await
        .map_err(EngineFailure::Internal)?;
        Ok((
            Engine {
                ctx,
                imported: Mutex::new(HashSet::new()),
                jobs,
                gauge,
                bounds,
                current_step,
            },
            rx,
        ))
    }

    /// Gives the engine its run's heap limit, deadline and log policy.
    pub fn arm(&self, limits: &Limits, deadline: Instant, policy: LogPolicy) {
        let limit = (limits.memory_limit_mb as usize).saturating_mul(1024 * 1024);
        self.gauge.set_limit(limit.max(8 * 1024 * 1024));
        if let Ok(mut d) = self.bounds.deadline.lock() {
            *d = deadline;
        }
        if let Ok(mut p) = self.bounds.policy.lock() {
            *p = policy;
        }
    }

    pub fn gauge(&self) -> &MemoryGauge {
        &self.gauge
    }

    /// Registers a compiled job module under `name` (`job:<n>`).
    pub fn add_job(&self, name: &str, code: String) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(name.to_string(), code);
        }
    }

    pub fn set_current_step(&self, key: Option<String>) {
        if let Ok(mut s) = self.current_step.lock() {
            *s = key;
        }
    }

    fn failure_after(&self, message: String) -> EngineFailure {
        if self.gauge.exhausted() {
            EngineFailure::OutOfMemory
        } else if Instant::now() >= self.bounds.deadline() {
            EngineFailure::Timeout
        } else {
            EngineFailure::Internal(message)
        }
    }

    /// Loads the adaptors a run uses (so their module-level code runs before
    /// job code, with code generation still allowed), then refuses `eval`
    /// and `Function` for everything that follows.
    pub async fn preload(&self, adaptors: &[&str]) -> Result<(), EngineFailure> {
        self.import(adaptors, true).await
    }

    /// Loads adaptors without locking the engine down: for an engine built
    /// ahead of its run, which calls [`Engine::preload`] once it knows it.
    pub async fn warm(&self, adaptors: &[&str]) -> Result<(), EngineFailure> {
        self.import(adaptors, false).await
    }

    async fn import(&self, adaptors: &[&str], lock_down: bool) -> Result<(), EngineFailure> {
        let names: Vec<String> = {
            // A poisoned set only costs imports again.
            let done = self.imported.lock().ok();
            adaptors
                .iter()
                .filter(|a| done.as_ref().is_none_or(|d| !d.contains(**a)))
                .map(|s| s.to_string())
                .collect()
        };
        let imported = names.clone();
        let res = self
            .ctx
            .async_with(async move |ctx| -> Result<(), String> {
                let run = async || -> rquickjs::Result<()> {
                    for name in &names {
                        let p: Promise = Module::import(&ctx, name.as_str())?;
                        p.into_future::<Value>().await?;
                    }
                    if lock_down {
                        let glue = glue_namespace(&ctx)?;
                        let lockdown: Function = glue.get("lockdown")?;
                        lockdown.call::<_, ()>(())?;
                    }
                    Ok(())
                };
                run().await.map_err(|e| exception_text(&ctx, e))
            })
            .await;
        if res.is_ok()
            && let Ok(mut done) = self.imported.lock()
        {
            done.extend(imported);
        }
        res.map_err(|m| self.failure_after(m))
    }

    /// Compiles an edge condition; `Err(message)` if it does not compile.
    pub async fn compile_edge(
        &self,
        key: &str,
        expression: &str,
    ) -> Result<Result<(), String>, EngineFailure> {
        let (key, expression) = (key.to_string(), expression.to_string());
        let res = self
            .ctx
            .with(move |ctx| -> Result<Option<String>, String> {
                let run = || -> rquickjs::Result<Option<String>> {
                    let glue = glue_namespace(&ctx)?;
                    let f: Function = glue.get("compileEdge")?;
                    f.call((key, expression))
                };
                run().map_err(|e| exception_text(&ctx, e))
            })
            .await;
        match res {
            Ok(None) => Ok(Ok(())),
            Ok(Some(msg)) => Ok(Err(msg)),
            Err(m) => Err(self.failure_after(m)),
        }
    }

    /// Evaluates a compiled edge on a step's output.
    pub async fn eval_edge(
        &self,
        key: &str,
        output: Option<&str>,
        upstream: &str,
    ) -> Result<Result<bool, String>, EngineFailure> {
        let (key, output, upstream) = (
            key.to_string(),
            output.map(str::to_string),
            upstream.to_string(),
        );
        let res = self
            .ctx
            .with(move |ctx| -> Result<Result<bool, String>, String> {
                let run = || -> rquickjs::Result<Result<bool, String>> {
                    let glue = glue_namespace(&ctx)?;
                    let f: Function = glue.get("evalEdge")?;
                    let r: Object = f.call((key, output, upstream))?;
                    if let Some(msg) = r.get::<_, Option<String>>("error")? {
                        return Ok(Err(msg));
                    }
                    Ok(Ok(r.get::<_, bool>("ok")?))
                };
                run().map_err(|e| exception_text(&ctx, e))
            })
            .await;
        res.map_err(|m| self.failure_after(m))
    }

    /// Runs one compiled step on `state_json`. `operations_json` is the
    /// compiler's operation list (`[{name, line}]`).
    pub async fn run_step(
        &self,
        module: &str,
        step_id: &str,
        step_name: &str,
        state_json: &str,
        operations_json: &str,
    ) -> Result<StepOutcome, EngineFailure> {
        let args = (
            module.to_string(),
            step_id.to_string(),
            step_name.to_string(),
            state_json.to_string(),
            operations_json.to_string(),
        );
        let res = self
            .ctx
            .async_with(async move |ctx| -> Result<StepOutcome, String> {
                let run = async || -> rquickjs::Result<StepOutcome> {
                    let glue = glue_namespace(&ctx)?;
                    let f: Function = glue.get("runStep")?;
                    let state = ctx.json_parse(args.3.as_str())?;
                    let ops = ctx.json_parse(args.4.as_str())?;
                    let remove = ctx.json_parse(r#"["configuration","response"]"#)?;
                    let p: Promise = f.call((
                        args.0.as_str(),
                        args.1.as_str(),
                        args.2.as_str(),
                        state,
                        ops,
                        remove,
                    ))?;
                    let r: Object = p.into_future().await?;
                    let json: Option<String> = r.get("json")?;
                    let error = match r.get::<_, Option<Object>>("error")? {
                        None => None,
                        Some(e) => Some(StepError {
                            severity: e.get("severity")?,
                            name: e.get("name")?,
                            kind: e.get("type")?,
                            message: e.get::<_, Option<String>>("message")?.unwrap_or_default(),
                        }),
                    };
                    Ok(StepOutcome { json, error })
                };
                run().await.catch(&ctx).map_err(|e| e.to_string())
            })
            .await;
        // A run that hit a limit is reported as that limit, whatever JS saw.
        if self.gauge.exhausted() {
            return Err(EngineFailure::OutOfMemory);
        }
        if Instant::now() >= self.bounds.deadline() {
            return Err(EngineFailure::Timeout);
        }
        res.map_err(|m| self.failure_after(m))
    }

    /// Heap in use by this run's QuickJS runtime, in bytes.
    pub fn heap_used(&self) -> u64 {
        self.gauge.used() as u64
    }

    /// Lets spawned work (timers) settle; used only by tests.
    #[cfg(test)]
    pub async fn idle(&self) {
        self.ctx.runtime().idle().await
    }
}

/// The glue module's namespace, kept in the context's user data at setup:
/// fetching it through `import` on every call would build a promise and its
/// resolving functions each time (objects a warm engine's forks pay for in
/// copy-on-write faults as well as in allocations).
struct GlueNamespace<'js>(Object<'js>);

// SAFETY: the one lifetime of the type is `'js`, and `Changed` only renames it.
unsafe impl<'js> JsLifetime<'js> for GlueNamespace<'js> {
    type Changed<'to> = GlueNamespace<'to>;
}

/// The glue module's namespace (already evaluated, so an import settles at
/// once when the kept one is missing).
fn glue_namespace<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    if let Some(ns) = ctx.userdata::<GlueNamespace>() {
        return Ok(ns.0.clone());
    }
    Module::import(ctx, loader::GLUE)?.finish::<Object>()
}

/// The native behind console and adaptor logging: `(level, source, json)`.
fn native_log(
    tx: UnboundedSender<LogLine>,
    bounds: Arc<RunBounds>,
    step: Arc<Mutex<Option<String>>>,
) -> impl Fn(String, String, String) + Send + 'static {
    move |level: String, source: String, json: String| {
        let message = match bounds.policy.lock() {
            Ok(policy) => policy.message_from_json(&json),
            // Never log unscrubbed: a poisoned policy drops the message.
            Err(_) => vec![Json::String(crate::logs::SCRUBBED.into())],
        };
        let step = step.lock().ok().and_then(|s| s.clone());
        let _ = tx.send(LogLine {
            level,
            source,
            message,
            timestamp_us: crate::logs::now_us(),
            step,
        });
    }
}

/// Parses a JSON value for the engine boundary (used by the runner).
pub fn parse_json(text: &str) -> Option<Json> {
    serde_json::from_str(text).ok()
}
