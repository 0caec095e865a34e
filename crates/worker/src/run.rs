//! One claimed run, start to finish: join, `fetch:plan`, `fetch:dataclip`,
//! `fetch:credential`…, `run:start` (acknowledged before anything runs),
//! execution in a pooled child with every event forwarded in order, then
//! `run:complete` and leave. The run's execution slot is given back as soon
//! as its child has finished (see [`crate::capacity`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gabbro_protocol::{
    ClaimedRun, FetchId, LightningPlan, Reason, RunEvent, RunStart, Timestamp, describe_error,
};
use gabbro_runtime::events::ChildRequest;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::capacity::Hold;
use crate::channel::{CallError, RunChannel};
use crate::plan;
use crate::pool::{Budget, Outcome};
use crate::socket::ReplyBody;
use crate::translate::Translator;
use crate::worker::Shared;

/// Run `claimed` to completion. Never panics on server or job input.
pub async fn execute(shared: Arc<Shared>, claimed: ClaimedRun, mut hold: Hold) {
    let run_id = claimed.id.clone();
    shared.run_started(&run_id);
    let mut ch = RunChannel::new(shared.clone(), &run_id, claimed.token.clone());
    match shared.journal.begin(&run_id, &claimed.token) {
        Ok(j) => ch.attach_journal(j),
        Err(e) => {
            tracing::error!(run = %run_id, error = %e, "cannot open the run's journal; running without")
        }
    }
    let result = drive(&shared, &mut ch, &run_id, &mut hold).await;
    settle(&mut ch, &run_id, result);
    ch.leave();
    shared.run_finished(&run_id);
    drop(hold);
}

/// After delivery: drop the journal unless the socket closed before the
/// run was delivered (then the next start replays it).
fn settle(ch: &mut RunChannel, run_id: &str, result: Result<(), CallError>) {
    match result {
        Ok(()) => {
            tracing::info!(run = %run_id, "run delivered");
            ch.finish_journal();
        }
        Err(CallError::Refused(e)) => {
            tracing::warn!(run = %run_id, error = %e, "run refused by the orchestrator; dropping it");
            ch.finish_journal();
        }
        Err(CallError::Closed) => {
            tracing::warn!(run = %run_id, "run not fully delivered; it stays in the journal for the next start");
        }
    }
}

/// Deliver what a previous life of this worker left undelivered.
pub async fn replay(shared: Arc<Shared>, pending: crate::journal::PendingRun) {
    let run_id = pending.run_id.clone();
    shared.run_started(&run_id);
    tracing::info!(run = %run_id, events = pending.events.len(), "replaying undelivered run events");
    let mut ch = RunChannel::new(shared.clone(), &run_id, pending.token.clone());
    match shared.journal.resume(&pending) {
        Ok(j) => ch.attach_journal(j),
        Err(e) => tracing::error!(run = %run_id, error = %e, "cannot reopen the run's journal"),
    }
    let mut result = Ok(());
    for event in pending.events {
        if let Err(e) = ch.resend(event).await {
            result = Err(e);
            break;
        }
    }
    settle(&mut ch, &run_id, result);
    ch.leave();
    shared.run_finished(&run_id);
}

async fn drive(
    shared: &Arc<Shared>,
    ch: &mut RunChannel,
    run_id: &str,
    hold: &mut Hold,
) -> Result<(), CallError> {
    // 1. The plan.
    let reply = ch.send(RunEvent::FetchPlan).await?;
    if !reply.is_ok() {
        return Err(CallError::Refused(format!(
            "fetch:plan: {}",
            describe_error(&reply.response_json())
        )));
    }
    let plan: LightningPlan = match serde_json::from_value(reply.response_json()) {
        Ok(p) => p,
        Err(e) => {
            let fake = LightningPlan {
                id: run_id.to_string(),
                ..Default::default()
            };
            return fail_before_start(ch, &fake, "PlanError", &format!("invalid plan: {e}")).await;
        }
    };
    let mut translator = Translator::new(&plan);

    // 2–3. The input dataclip and the credentials, fetched together.
    let credential_ids = plan::credential_ids(&plan);
    let mut fetches = Vec::new();
    if let Some(id) = &plan.dataclip_id {
        fetches.push(RunEvent::FetchDataclip(FetchId { id: id.clone() }));
    }
    fetches.extend(
        credential_ids
            .iter()
            .map(|id| RunEvent::FetchCredential(FetchId { id: id.clone() })),
    );
    let mut replies = ch.send_all(fetches).await?.into_iter();
    let input = match &plan.dataclip_id {
        None => json!({}),
        Some(id) => match replies.next().map(|r| dataclip_of(&r)) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return fail_before_start(
                    ch,
                    &plan,
                    "DataClipError",
                    &format!("Failed to load dataclip {id}: {e}"),
                )
                .await;
            }
            None => return Err(CallError::Closed),
        },
    };
    let mut credentials: HashMap<String, Value> = HashMap::new();
    for (id, reply) in credential_ids.into_iter().zip(replies) {
        if reply.is_ok() {
            credentials.insert(id, reply.response_json());
        } else {
            let msg = format!(
                "Failed to load credential {id}: [fetch:credential] {}",
                reply.response_json()
            );
            return fail_before_start(ch, &plan, "CredentialLoadError", &msg).await;
        }
    }

    // 4. Start: nothing executes before the orchestrator acknowledged it.
    let limits = plan::limits_for(&plan, &shared.config.limits);
    let versions = shared.versions(&plan);
    let start = vec![
        translator.worker_log(
            "RTE",
            "info",
            &format!("Memory limit: {}mb", limits.memory_limit_mb),
        ),
        translator.worker_log(
            "RTE",
            "info",
            &format!("Timeout: {}s", limits.timeout_ms / 1000),
        ),
        RunEvent::RunStart(RunStart {
            versions: Some(versions.clone()),
            timestamp: Timestamp::now(),
            seq: None,
        }),
    ];
    let replies = ch.send_all(start).await?;
    let Some(reply) = replies.last() else {
        return Err(CallError::Closed);
    };
    if !reply.is_ok() {
        return Err(CallError::Refused(format!(
            "run:start: {}",
            describe_error(&reply.response_json())
        )));
    }
    let banner = vec![
        translator.worker_log(
            "RTE",
            "info",
            &format!("Payload limit: {}mb", limits.payload_limit_mb),
        ),
        translator.worker_log("VER", "info", &versions_banner(&versions)),
    ];

    // 5. Execute in a child, forwarding events in order.
    let request = ChildRequest {
        plan: plan::execution_plan(&plan, &credentials),
        input,
        secrets: plan::secrets_of(&credentials),
        limits: limits.clone(),
    };
    let budget = Budget {
        timeout: Duration::from_millis(limits.timeout_ms),
        grace: shared.config.kill_grace,
        memory_limit_mb: limits.memory_limit_mb,
    };
    // The producer numbers and journals each event as the child reports
    // it; the sender delivers them in order, as fast as the orchestrator
    // answers. Execution never waits for delivery, and everything produced
    // is in the journal even if delivery stops.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let exec_shared = shared.clone();
    let exec = tokio::spawn(async move { exec_shared.pool.execute(&request, budget, tx).await });
    let numberer = ch.numberer();
    let (send_tx, mut send_rx) = mpsc::unbounded_channel();
    let producer = async move {
        let send = |e: RunEvent| {
            let _ = send_tx.send(numberer.number(e));
        };
        // The banner goes out with the child's first events rather than on
        // its own: the orchestrator applies the events that arrive together
        // in one transaction, so a banner sent alone costs a run one more.
        let mut banner = Some(banner);
        while let Some(event) = rx.recv().await {
            banner.take().into_iter().flatten().for_each(send);
            translator.on_event(event).into_iter().for_each(send);
        }
        banner.take().into_iter().flatten().for_each(send);
        let outcome = exec.await.unwrap_or_else(|e| Outcome::Died {
            reason: Reason::Crash,
            error_type: "ExitError".into(),
            message: format!("executor task failed: {e}"),
        });
        // The child is done and every event it reported is journaled: the
        // slot can take the next run while this one's delivery goes on.
        hold.executed().await;
        let ending = match outcome {
            Outcome::Died {
                reason,
                error_type,
                message,
            } => translator.on_child_death(reason, &error_type, &message),
            Outcome::Completed if !translator.is_complete() => translator.on_child_death(
                Reason::Crash,
                "ExitError",
                "the runtime ended without completing the run",
            ),
            Outcome::Completed => Vec::new(),
        };
        ending.into_iter().for_each(send);
    };
    let sender = async {
        let result = ch.deliver_stream(&mut send_rx).await;
        // Once delivery fails for good, keep draining so the child finishes
        // (every event is already in the journal).
        while send_rx.recv().await.is_some() {}
        result.err()
    };
    let ((), failure) = tokio::join!(producer, sender);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The run ends `exception` before `run:start` (as OpenFn's worker does for
/// a dataclip or credential it cannot load).
async fn fail_before_start(
    ch: &mut RunChannel,
    plan: &LightningPlan,
    error_type: &str,
    message: &str,
) -> Result<(), CallError> {
    let mut t = Translator::new(plan);
    for out in t.on_child_death(Reason::Exception, error_type, message) {
        ch.send(out).await?;
    }
    Ok(())
}

/// The dataclip from a `fetch:dataclip` reply: Lightning's binary frame of
/// JSON text, or (kit's mock) a JSON array of byte values, or plain JSON.
fn dataclip_of(reply: &ReplyBody) -> Result<Value, String> {
    if !reply.is_ok() {
        return Err(describe_error(&reply.response_json()));
    }
    match reply {
        ReplyBody::Binary { payload, .. } => {
            serde_json::from_slice(payload).map_err(|e| format!("dataclip is not JSON: {e}"))
        }
        ReplyBody::Json(r) => match &r.response {
            Value::Array(items) if items.iter().all(|v| v.as_u64().is_some_and(|b| b < 256)) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|v| v.as_u64())
                    .map(|b| b as u8)
                    .collect();
                serde_json::from_slice(&bytes).map_err(|e| format!("dataclip is not JSON: {e}"))
            }
            other => Ok(other.clone()),
        },
    }
}

fn versions_banner(versions: &serde_json::Map<String, Value>) -> String {
    let mut s = String::from("Versions:");
    for (name, v) in versions {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        };
        s.push_str(&format!("\n    ▸ {name:<27}{v}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use gabbro_protocol::{Reply, ReplyStatus};

    #[test]
    fn reads_dataclips_in_lightnings_and_the_mocks_forms() {
        let bin = ReplyBody::Binary {
            status: "ok".into(),
            payload: br#"{"data":{"x":1}}"#.to_vec(),
        };
        assert_eq!(dataclip_of(&bin).unwrap(), json!({"data": {"x": 1}}));
        let bytes: Vec<Value> = br#"{"a":1}"#.iter().map(|b| json!(b)).collect();
        let mock = ReplyBody::Json(Reply {
            status: ReplyStatus::Ok,
            response: Value::Array(bytes),
        });
        assert_eq!(dataclip_of(&mock).unwrap(), json!({"a": 1}));
        let err = ReplyBody::Json(Reply {
            status: ReplyStatus::Error,
            response: json!({"errors": {"id": ["not found"]}}),
        });
        assert!(dataclip_of(&err).is_err());
    }
}
