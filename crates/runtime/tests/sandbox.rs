//! Each sandbox limit and error class, through the public `execute`.

use gabbro_runtime::{Event, ExitReason, Limits, Plan, RunReport, execute};
use serde_json::{Value, json};

async fn run_with(job: &str, limits: Limits, input: Value) -> (RunReport, Vec<Event>) {
    let plan = Plan::single_job(job, "@openfn/language-common@3.3.4");
    let mut events = Vec::new();
    let report = execute(&plan, input, &limits, &[], &mut |e| events.push(e)).await;
    (report, events)
}

async fn run(job: &str) -> RunReport {
    run_with(
        job,
        Limits {
            timeout_ms: 20_000,
            ..Limits::default()
        },
        json!({"data": {}}),
    )
    .await
    .0
}

fn assert_outcome(r: &RunReport, reason: ExitReason, step_type: &str, run_type: &str) {
    assert_eq!(r.reason, reason, "{r:?}");
    assert_eq!(r.steps.len(), 1, "{r:?}");
    assert_eq!(r.steps[0].reason, reason, "{r:?}");
    assert_eq!(r.steps[0].error_type.as_deref(), Some(step_type), "{r:?}");
    assert_eq!(r.error_type.as_deref(), Some(run_type), "{r:?}");
}

#[tokio::test]
async fn busy_loop_past_the_timeout_is_killed_with_timeout_error() {
    let started = std::time::Instant::now();
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let (r, _) = run_with("fn(state => { while (true) {} });", limits, json!({})).await;
    assert_outcome(&r, ExitReason::Kill, "TimeoutError", "TimeoutError");
    assert_eq!(r.final_state, None);
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_promise_that_never_settles_is_killed_with_timeout_error() {
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let (r, _) = run_with("fn(state => new Promise(() => {}));", limits, json!({})).await;
    assert_outcome(&r, ExitReason::Kill, "TimeoutError", "TimeoutError");
}

#[tokio::test]
async fn a_long_timer_is_killed_with_timeout_error() {
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let (r, _) = run_with(
        "fn(state => new Promise(r => setTimeout(() => r(state), 60000)));",
        limits,
        json!({}),
    )
    .await;
    assert_outcome(&r, ExitReason::Kill, "TimeoutError", "TimeoutError");
}

#[tokio::test]
async fn heap_growth_past_the_memory_limit_is_killed_with_oom_error_and_the_next_run_works() {
    let limits = Limits {
        timeout_ms: 30_000,
        memory_limit_mb: 64,
        ..Limits::default()
    };
    let job =
        "fn(state => { const a = []; while (true) a.push({ n: a.length, s: 'x' + a.length }); });";
    let (r, _) = run_with(job, limits.clone(), json!({})).await;
    assert_outcome(&r, ExitReason::Kill, "OOMError", "OOMError");
    let job =
        "fn(state => { const a = []; while (true) a.push('x'.repeat(1000000) + a.length); });";
    let (r, _) = run_with(job, limits, json!({})).await;
    assert_outcome(&r, ExitReason::Kill, "OOMError", "OOMError");
    let ok = run("fn(state => ({ ...state, ok: true }));").await;
    assert_eq!(ok.reason, ExitReason::Success, "{ok:?}");
}

#[tokio::test]
async fn eval_is_killed_with_security_error() {
    let r = run("fn(state => ({ ...state, v: eval('1 + 1') }));").await;
    assert_outcome(&r, ExitReason::Kill, "SecurityError", "SecurityError");
    assert_eq!(
        r.error_message.as_deref(),
        Some("Illegal eval statement detected")
    );
}

#[tokio::test]
async fn new_function_and_function_constructors_are_killed_with_security_error() {
    for job in [
        "fn(state => ({ ...state, v: new Function('return 1')() }));",
        "fn(state => ({ ...state, v: Function('return 1')() }));",
        "fn(state => ({ ...state, v: (() => 1).constructor('return 1')() }));",
        "fn(state => ({ ...state, v: (async () => 1).constructor('return 1')() }));",
    ] {
        let r = run(job).await;
        assert_outcome(&r, ExitReason::Kill, "SecurityError", "SecurityError");
    }
}

#[tokio::test]
async fn unbounded_recursion_fails_with_a_range_error() {
    let r = run("fn(state => { const f = n => f(n + 1) + 1; return f(0); });").await;
    assert_outcome(&r, ExitReason::Fail, "RuntimeError", "RuntimeError");
    let err = &r.final_state.as_ref().unwrap()["errors"]["job-1"];
    assert_eq!(err["subtype"], "RangeError", "{err}");
    assert!(
        err["message"].as_str().unwrap().starts_with("RangeError: "),
        "{err}"
    );
}

#[tokio::test]
async fn no_process_require_fetch_or_engine_modules() {
    let r = run(
        "fn(state => ({ ...state, t: [typeof process, typeof require, typeof fetch, typeof std, typeof os, typeof Deno, typeof module] }));",
    )
    .await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    assert_eq!(
        r.final_state.unwrap()["t"],
        json!([
            "undefined",
            "undefined",
            "undefined",
            "undefined",
            "undefined",
            "undefined",
            "undefined"
        ])
    );
}

#[tokio::test]
async fn job_code_cannot_import_the_host_module_or_other_modules() {
    for spec in [
        "gabbro:host",
        "gabbro:glue",
        "job:0",
        "fs",
        "node:child_process",
    ] {
        let job = format!(
            "fn(async state => {{ await import('{spec}'); return {{ ...state, imported: true }}; }});"
        );
        let r = run(&job).await;
        assert_ne!(r.reason, ExitReason::Success, "{spec}: {r:?}");
        assert!(
            r.final_state
                .as_ref()
                .is_none_or(|s| s.get("imported").is_none()),
            "{spec}: {r:?}"
        );
    }
    let r = run("import { httpRequest } from 'gabbro:host';\nfn(state => state);").await;
    assert_ne!(r.reason, ExitReason::Success, "{r:?}");
}

#[tokio::test]
async fn error_classes_map_to_fail_crash_and_kill() {
    let cases = [
        (
            "fn(s => s.data.nope.x);",
            ExitReason::Fail,
            "RuntimeError",
            "RuntimeError",
        ),
        (
            "fn(s => { null.x; });",
            ExitReason::Fail,
            "RuntimeError",
            "RuntimeError",
        ),
        (
            "fn(s => { new Array(-1); });",
            ExitReason::Fail,
            "RuntimeError",
            "RuntimeError",
        ),
        (
            "fn(s => nothing.here);",
            ExitReason::Crash,
            "ReferenceError",
            "RuntimeCrash",
        ),
        (
            "fn(s => JSON.parse('{'));",
            ExitReason::Crash,
            "SyntaxError",
            "RuntimeCrash",
        ),
        (
            "fn(s => { throw new Error('x'); });",
            ExitReason::Fail,
            "JobError",
            "JobError",
        ),
        (
            "fn(s => { throw 'str'; });",
            ExitReason::Fail,
            "JobError",
            "JobError",
        ),
        (
            "fn(s => Promise.reject(new Error('no')));",
            ExitReason::Fail,
            "JobError",
            "JobError",
        ),
        (
            "assert(false, 'nope');",
            ExitReason::Fail,
            "AdaptorError",
            "AdaptorError",
        ),
        (
            "console.log('x');",
            ExitReason::Crash,
            "InvalidOperationError",
            "RuntimeCrash",
        ),
        (
            "fn(s => s",
            ExitReason::Crash,
            "CompileError",
            "CompileError",
        ),
    ];
    for (job, reason, step_type, run_type) in cases {
        let r = run(job).await;
        assert_eq!(r.reason, reason, "{job}: {r:?}");
        assert_eq!(r.error_type.as_deref(), Some(run_type), "{job}: {r:?}");
        if step_type != "CompileError" {
            assert_eq!(
                r.steps[0].error_type.as_deref(),
                Some(step_type),
                "{job}: {r:?}"
            );
        } else {
            assert!(r.steps.is_empty());
        }
    }
}

#[tokio::test]
async fn an_unknown_adaptor_fails_before_running_and_lists_ours() {
    let plan = Plan::single_job("fn(s => s);", "@openfn/language-dhis2@4");
    let r = execute(&plan, json!({}), &Limits::default(), &[], &mut |_| {}).await;
    assert_ne!(r.reason, ExitReason::Success);
    assert!(r.steps.is_empty());
    let msg = r.error_message.unwrap();
    assert!(
        msg.contains("@openfn/language-common") && msg.contains("@openfn/language-http"),
        "{msg}"
    );
}

#[tokio::test]
async fn logs_carry_level_source_timestamp_and_scrub_credentials() {
    let job = "fn(state => { console.log('hello', { n: 1 }); console.warn('key is', state.configuration.apiKey); return state; });";
    let input = json!({"configuration": {"apiKey": "sup3r-s3cret"}});
    let (r, events) = run_with(job, Limits::default(), input).await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    let logs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Log(l) if l.source == "JOB" => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0].level, "info");
    assert_eq!(logs[0].message, vec![json!("hello"), json!({"n": 1})]);
    assert_eq!(logs[0].step.as_deref(), Some("job-1"));
    assert!(logs[0].timestamp_us > 1_600_000_000_000_000);
    assert_eq!(logs[1].level, "warn");
    assert_eq!(logs[1].message, vec![json!("key is"), json!("[REDACTED]")]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RunComplete { .. }))
    );
}

#[tokio::test]
async fn an_oversized_output_is_redacted() {
    let limits = Limits {
        payload_limit_mb: 0.01,
        ..Limits::default()
    };
    let (r, events) = run_with(
        "fn(state => ({ data: 'x'.repeat(20000) }));",
        limits,
        json!({}),
    )
    .await;
    assert_eq!(r.reason, ExitReason::Success);
    let redacted = events.iter().any(|e| {
        matches!(
            e,
            Event::StepComplete {
                redacted: true,
                output_json: None,
                ..
            }
        )
    });
    assert!(redacted, "{events:?}");
}

#[tokio::test]
async fn events_come_in_order_with_step_keys_and_leaves() {
    let plan = Plan::from_json(&json!({"workflow": {"start": "a", "steps": [
        {"id": "a", "expression": "fn(s => s);", "next": {"b": true, "c": true}},
        {"id": "b", "expression": "fn(s => ({ ...s, b: 1 }));", "next": {"d": true}},
        {"id": "c", "expression": "fn(s => ({ ...s, c: 1 }));", "next": {"d": true}},
        {"id": "d", "expression": "fn(s => ({ ...s, d: 1 }));"}
    ]}}))
    .unwrap();
    let mut events = Vec::new();
    let r = execute(
        &plan,
        json!({"data": {"x": 1}}),
        &Limits::default(),
        &[],
        &mut |e| events.push(e),
    )
    .await;
    assert_eq!(r.reason, ExitReason::Success);
    let kinds: Vec<String> = events
        .iter()
        .filter(|e| !matches!(e, Event::Log(_)))
        .map(|e| match e {
            Event::RunStart { .. } => "run-start".to_string(),
            Event::StepStart { key, .. } => format!("start {key}"),
            Event::StepComplete { key, reason, .. } => format!("complete {key} {reason:?}"),
            Event::RunComplete { leaves, .. } => format!("run-complete {}", leaves.join(",")),
            Event::Log(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "run-start",
            "start a",
            "complete a Success",
            "start b",
            "complete b Success",
            "start c",
            "complete c Success",
            "start d",
            "complete d Success",
            "start d-1",
            "complete d-1 Success",
            "run-complete d,d-1",
        ]
    );
    let compile_error = Plan::single_job("fn(s => ", "@openfn/language-common");
    let mut events = Vec::new();
    execute(
        &compile_error,
        json!({}),
        &Limits::default(),
        &[],
        &mut |e| events.push(e),
    )
    .await;
    assert!(
        matches!(events.first(), Some(Event::RunStart { .. })),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::RunComplete {
                reason: ExitReason::Crash,
                ..
            })
        ),
        "{events:?}"
    );
}

#[tokio::test]
async fn buffer_from_works_and_its_constructor_throws() {
    let r = run(
        "fn(state => ({ ...state, b64: Buffer.from('user:pässword').toString('base64'), \
         back: Buffer.from('dXNlcjpww6Rzc3dvcmQ=', 'base64').toString(), hex: Buffer.from('hi').toString('hex'), \
         isBuf: Buffer.isBuffer(Buffer.from([1, 2])), len: Buffer.byteLength('ä') }));",
    )
    .await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    let s = r.final_state.unwrap();
    assert_eq!(s["b64"], "dXNlcjpww6Rzc3dvcmQ=");
    assert_eq!(s["back"], "user:pässword");
    assert_eq!(s["hex"], "6869");
    assert_eq!(s["isBuf"], true);
    assert_eq!(s["len"], 2);
    let r = run("fn(state => ({ ...state, b: new Buffer(3) }));").await;
    assert_eq!(r.reason, ExitReason::Fail, "{r:?}");
}

#[tokio::test]
async fn a_throwing_timer_callback_is_logged_and_the_run_goes_on() {
    let job = "fn(state => new Promise(r => { setTimeout(() => { throw new Error('tick'); }, 1); setTimeout(() => r({ ok: 1 }), 20); }));";
    let (r, events) = run_with(job, Limits::default(), json!({})).await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    let logged = events.iter().any(|e| match e {
        Event::Log(l) => {
            l.level == "error"
                && l.message
                    .iter()
                    .any(|m| m.as_str().is_some_and(|s| s.contains("tick")))
        }
        _ => false,
    });
    assert!(logged, "{events:?}");
}

#[tokio::test]
async fn a_trigger_step_without_expression_passes_its_input_on() {
    let plan = Plan::from_json(&json!({
        "workflow": {"steps": [
            {"id": "trigger", "next": {"a": true}},
            {"id": "a", "adaptors": ["@openfn/language-common@latest"], "expression": "fn(s => ({ ...s, a: s.data.n }));",
             "configuration": {"token": "abc"}}
        ]},
        "options": {"start": "trigger"}
    }))
    .unwrap();
    let r = execute(
        &plan,
        json!({"data": {"n": 5}}),
        &Limits::default(),
        &[],
        &mut |_| {},
    )
    .await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].id, "a");
    assert_eq!(r.final_state, Some(json!({"data": {"n": 5}, "a": 5})));
}

#[tokio::test]
async fn an_endless_microtask_chain_is_killed_with_timeout_error() {
    let limits = Limits {
        timeout_ms: 300,
        ..Limits::default()
    };
    let job = "fn(state => { const f = () => Promise.resolve().then(f); f(); return new Promise(() => {}); });";
    let started = std::time::Instant::now();
    let (r, _) = run_with(job, limits, json!({})).await;
    assert_outcome(&r, ExitReason::Kill, "TimeoutError", "TimeoutError");
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_static_import_of_an_unknown_module_is_an_import_error_crash() {
    let r = run("import fs from 'fs';\nfn(state => state);").await;
    assert_eq!(r.reason, ExitReason::Crash, "{r:?}");
    assert_eq!(
        r.steps[0].error_type.as_deref(),
        Some("ImportError"),
        "{r:?}"
    );
    let r = run("import { get } from '@openfn/language-http@7';\nfn(state => ({ ...state, t: typeof get }));").await;
    assert_eq!(r.reason, ExitReason::Success, "{r:?}");
    assert_eq!(r.final_state.unwrap()["t"], "function");
}

#[tokio::test]
async fn runtime_error_positions_point_into_the_users_source() {
    let job = "fn(state => {\n  state.data.before = 1;\n  return state;\n});\nfn(state => state.data.nope.x);";
    let r = run(job).await;
    let pos = &r.final_state.unwrap()["errors"]["job-1"]["pos"];
    assert_eq!(pos["line"], 5, "{pos}");
    // OpenFn (V8) reports column 29 (the `x`); QuickJS points at the start
    // of the expression (13). Either way a column of the user's line 5, not
    // of the compiled code (which is 28 characters longer there).
    let column = pos["column"].as_i64().unwrap();
    assert!((1..=31).contains(&column), "{pos}");
}
