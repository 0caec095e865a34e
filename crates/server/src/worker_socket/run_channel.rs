//! One `run:<id>` channel: the join (run token), then the run's events, one
//! at a time in arrival order, each answered with Lightning's reply.

use gabbro_protocol::frame::PHX_LEAVE;
use gabbro_protocol::{
    BinaryReply, Frame, MessageError, ReasonReply, RunEvent, RunJoin, RunLog, run_id_of,
};
use gabbro_store::StoreError;
use gabbro_store::{
    NewLogLine, RunComplete as LedgerRunComplete, StepComplete as LedgerStepComplete,
    StepStart as LedgerStepStart,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::connection::Peer;
use super::plan::{self, Snapshot};
use super::replies::{field_error, payload_error, store_error};
use super::run_data::{self, RunRow};
use super::scrub::{Scrubber, message_text};

/// Serves the channel until the worker leaves it, the socket closes or a
/// new join replaces it.
pub(crate) async fn serve(peer: Peer, join: Frame, mut inbox: mpsc::UnboundedReceiver<Frame>) {
    let mut channel = match authorize(&peer, &join).await {
        Ok(c) => c,
        Err(reason) => {
            peer.out.reason(&join, reason);
            // Frames already routed here were sent to a channel that never
            // opened: answer them as Phoenix would.
            inbox.close();
            while let Ok(f) = inbox.try_recv() {
                peer.out.reason(&f, ReasonReply::UNMATCHED_TOPIC);
            }
            return;
        }
    };
    peer.out.ok(&join, json!({}));
    while let Some(frame) = inbox.recv().await {
        if frame.event == PHX_LEAVE {
            peer.out.ok(&frame, json!({}));
            peer.out.send(&Frame::push(
                frame.join_ref.clone(),
                frame.topic.clone(),
                gabbro_protocol::frame::PHX_CLOSE,
                json!({}),
            ));
            return;
        }
        channel.handle(&frame).await;
    }
}

struct RunChannel {
    peer: Peer,
    run: RunRow,
    snapshot: Snapshot,
    scrubber: Scrubber,
}

/// Lightning's checks: a valid run token for this very run (else
/// `unauthorized`), and the run exists (else `not_found`). gabbro adds: a
/// token from a claim the run has since lost (older claim epoch) is refused,
/// and an expired token is still taken from the worker that holds the run
/// while the run is unfinished or `lost` (an outage outlived the token).
async fn authorize(peer: &Peer, join: &Frame) -> Result<RunChannel, &'static str> {
    let unauthorized = ReasonReply::UNAUTHORIZED;
    let run_id = run_id_of(&join.topic).ok_or(unauthorized)?.to_string();
    let token = serde_json::from_value::<RunJoin>(join.payload.clone())
        .map_err(|_| unauthorized)?
        .token;
    let ctx = &peer.ctx;
    let (claims, fresh) = match ctx.verifier.verify(&token, Some(&run_id)) {
        Ok(c) => (c, true),
        Err(_) => match ctx.verifier.verify_ignoring_expiry(&token, Some(&run_id)) {
            Ok(c) => (c, false),
            Err(e) => {
                tracing::info!(run_id, error = %e, "run join refused");
                return Err(unauthorized);
            }
        },
    };
    let run = match run_data::load_run(&ctx.store, &run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return Err(ReasonReply::NOT_FOUND),
        Err(e) => {
            // Transient (the store failed): the worker rejoins later; a
            // `not_found` would make it drop the run.
            tracing::error!(run_id, error = %e, "cannot load run");
            return Err("unavailable");
        }
    };
    if let Some(epoch) = claims.epoch
        && u64::try_from(run.claim_epoch).ok() != Some(epoch)
    {
        return Err(unauthorized);
    }
    if !fresh {
        let holder = run.worker_id.as_deref() == Some(peer.worker_id.as_str())
            && claims.worker_id.as_deref() == Some(peer.worker_id.as_str());
        let open = matches!(run.state.as_str(), "claimed" | "started" | "lost");
        if !(holder && open) {
            return Err(unauthorized);
        }
    }
    // The lease: the holder joined (the janitor stops counting the claim
    // lease); anyone but the holder under this claim epoch is refused.
    match ctx
        .store
        .run_joined(&run.id, &peer.worker_id, run.claim_epoch)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotHolder) => return Err(unauthorized),
        Err(StoreError::NotFound { .. }) => return Err(ReasonReply::NOT_FOUND),
        Err(e) => {
            tracing::error!(run_id, error = %e, "cannot record the run's join");
            return Err("unavailable");
        }
    }
    let snapshot = run_data::load_snapshot(&ctx.store, &run.snapshot_id)
        .await
        .map_err(|e| {
            tracing::error!(run_id, error = %e, "cannot load the run's snapshot");
            "unavailable"
        })?;
    // Every secret the run's jobs may see is masked in its logs, also after
    // a reconnect or an orchestrator restart (no fetch:credential needed).
    let mut scrubber = Scrubber::default();
    for id in snapshot.credential_ids() {
        match run_data::credential(&ctx.store, &ctx.vault, &run.project_id, &id).await {
            Ok(Some(body)) => scrubber.add_credential(&body),
            Ok(None) => {}
            Err(e) => tracing::warn!(credential_id = id, error = %e, "cannot read credential"),
        }
    }
    Ok(RunChannel {
        peer: peer.clone(),
        run,
        snapshot,
        scrubber,
    })
}

impl RunChannel {
    async fn handle(&mut self, frame: &Frame) {
        let out = self.peer.out.clone();
        let event = match RunEvent::from_parts(&frame.event, &frame.payload) {
            Ok(e) => e,
            Err(MessageError::UnknownEvent { event, .. }) => {
                out.error(
                    frame,
                    json!({ "reason": format!("unknown event {event:?}") }),
                );
                return;
            }
            Err(e) => {
                out.error(frame, payload_error(&e));
                return;
            }
        };
        if let RunEvent::FetchDataclip(_) = event {
            return self.fetch_dataclip(frame).await;
        }
        match self.apply(event).await {
            Ok(v) => out.ok(frame, v),
            Err(v) => out.error(frame, v),
        };
    }

    async fn fetch_dataclip(&self, frame: &Frame) {
        let ctx = &self.peer.ctx;
        let (status, body) = match run_data::input_dataclip(&ctx.store, &self.run).await {
            Ok(b) => ("ok", b.into_bytes()),
            Err(e) => ("error", store_error(&e).to_string().into_bytes()),
        };
        let reply = BinaryReply {
            join_ref: frame.join_ref.clone().unwrap_or_default(),
            msg_ref: frame.msg_ref.clone().unwrap_or_default(),
            topic: frame.topic.clone(),
            status: status.to_string(),
            payload: body,
        };
        match reply.encode() {
            Ok(bytes) => {
                self.peer.out.send_binary(bytes);
            }
            Err(e) => {
                self.peer
                    .out
                    .error(frame, json!({ "reason": e.to_string() }));
            }
        }
    }

    async fn apply(&mut self, event: RunEvent) -> Result<Value, Value> {
        let ctx = self.peer.ctx.clone();
        let store = &ctx.store;
        let run_id = self.run.id.as_str();
        let worker = Some(self.peer.worker_id.as_str());
        let err = |e: StoreError| store_error(&e);
        match event {
            RunEvent::FetchPlan => Ok(json!(plan::render(&self.run, &self.snapshot))),
            RunEvent::FetchDataclip(_) => Ok(Value::Null),
            RunEvent::FetchCredential(f) => {
                if f.id.trim().is_empty() {
                    return Err(field_error("id", "can't be blank"));
                }
                match run_data::credential(store, &ctx.vault, &self.run.project_id, &f.id).await {
                    Ok(Some(body)) => {
                        self.scrubber.add_credential(&body);
                        Ok(body)
                    }
                    Ok(None) => Err(field_error("id", "Credential not found!")),
                    Err(e) => Err(err(e)),
                }
            }
            RunEvent::RunStart(p) => store
                .run_start(run_id, worker, Some(p.timestamp.as_micros()), p.seq)
                .await
                .map(|()| Value::Null)
                .map_err(err),
            RunEvent::StepStart(p) => {
                let credential_id = p
                    .credential_id
                    .clone()
                    .or_else(|| self.snapshot.credential_of(&p.job_id).map(str::to_string));
                let ev = LedgerStepStart {
                    step_id: p.step_id,
                    job_id: p.job_id,
                    input_dataclip_id: p.input_dataclip_id,
                    credential_id,
                    timestamp: Some(p.timestamp.as_micros()),
                    seq: p.seq,
                };
                store
                    .step_start(run_id, worker, ev)
                    .await
                    .map(|step_id| json!({ "step_id": step_id }))
                    .map_err(err)
            }
            RunEvent::StepComplete(p) => {
                let ev = LedgerStepComplete {
                    step_id: p.step_id,
                    reason: p.reason.as_str().to_string(),
                    error_type: p.error_type,
                    error_message: p.error_message,
                    output_dataclip_id: p.output_dataclip_id,
                    output_dataclip: p.output_dataclip,
                    output_dataclip_error: p.output_dataclip_error,
                    timestamp: Some(p.timestamp.as_micros()),
                    seq: p.seq,
                };
                store
                    .step_complete(run_id, worker, ev)
                    .await
                    .map(|step_id| json!({ "step_id": step_id }))
                    .map_err(err)
            }
            RunEvent::RunLog(p) => {
                let seq = p.seq;
                let line = self.log_line(p);
                let ids = store
                    .append_logs(run_id, worker, vec![line], seq)
                    .await
                    .map_err(err)?;
                Ok(json!({ "log_line_id": ids.into_iter().next() }))
            }
            RunEvent::BatchLogs(p) => {
                let lines = p.logs.into_iter().map(|l| self.log_line(l)).collect();
                store
                    .append_logs(run_id, worker, lines, p.seq)
                    .await
                    .map(|_| json!({}))
                    .map_err(err)
            }
            RunEvent::RunComplete(p) => {
                let ev = LedgerRunComplete {
                    reason: p.reason.as_str().to_string(),
                    error_type: p.error_type,
                    error_message: p.error_message,
                    timestamp: p.timestamp.map(|t| t.as_micros()),
                    seq: p.seq,
                };
                let state = store.run_complete(run_id, worker, ev).await.map_err(err)?;
                ctx.metrics.run_finished(state.as_str());
                Ok(Value::Null)
            }
        }
    }

    /// A worker's log line, rendered and scrubbed of the run's secrets
    /// before it is stored.
    fn log_line(&self, l: RunLog) -> NewLogLine {
        let text = self.scrubber.scrub(message_text(&l.message));
        NewLogLine {
            message: Value::String(text),
            level: l.level,
            source: l.source.unwrap_or_default(),
            timestamp: Some(l.timestamp.as_micros()),
            step_id: l.step_id,
        }
    }
}
