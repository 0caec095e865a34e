//! One `run:<id>` channel: the join (run token), then the run's events in
//! arrival order, each answered with Lightning's reply. Ledger events that
//! arrived together are applied in one transaction when they can be.

use std::collections::HashMap;
use std::sync::Arc;

use gabbro_protocol::frame::PHX_LEAVE;
use gabbro_protocol::{
    BinaryReply, Frame, MessageError, ReasonReply, RunEvent, RunJoin, RunLog, run_id_of,
};
use gabbro_store::{Applied, LedgerEvent};
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
    while let Some(first) = inbox.recv().await {
        // Everything the worker has already sent (it pipelines a run's
        // events) is applied together: see `Store::apply_events`.
        let mut frames = vec![first];
        while frames.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(f) => frames.push(f),
                Err(_) => break,
            }
        }
        if !channel.handle_all(frames).await {
            return;
        }
    }
}

/// Most frames of one channel applied in one transaction.
const MAX_BATCH: usize = 64;

/// How a ledger event's result becomes Lightning's reply.
#[derive(Clone, Copy)]
enum Answer {
    /// `null` (`run:start`, `run:complete`).
    Null,
    /// `{step_id}`.
    StepId,
    /// `{log_line_id}` of the line (`run:log`).
    LogLineId,
    /// `{}` (`run:batch_logs`).
    Empty,
}

impl Answer {
    fn render(self, applied: Applied) -> Value {
        match (self, applied) {
            (Answer::StepId, Applied::Step(id)) => json!({ "step_id": id }),
            (Answer::LogLineId, Applied::Logs(ids)) => {
                json!({ "log_line_id": ids.into_iter().next() })
            }
            (Answer::Empty, _) => json!({}),
            _ => Value::Null,
        }
    }
}

/// Where a run event goes.
enum Routed {
    /// To the run ledger, answered in this shape.
    Ledger(LedgerEvent, Answer),
    /// Answered by the channel itself (fetches).
    Other(RunEvent),
}

/// Ledger events waiting to be applied together, with their frames.
#[derive(Default)]
struct Pending {
    frames: Vec<(Frame, Answer)>,
    events: Vec<LedgerEvent>,
}

struct RunChannel {
    peer: Peer,
    run: RunRow,
    snapshot: Arc<Snapshot>,
    scrubber: Scrubber,
    /// The run's credentials, read and decrypted once at the join (for the
    /// scrubber); `fetch:credential` answers from here.
    credentials: HashMap<String, Value>,
    /// The claim epoch joined under, until the join is recorded.
    unrecorded_join: Option<i32>,
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
    // Only the holder under this claim may join. Its lease record (the
    // janitor stops counting the claim lease) is written with the run's
    // first ledger events, in their transaction: see `flush`.
    if run.worker_id.as_deref() != Some(peer.worker_id.as_str()) {
        return Err(unauthorized);
    }
    let snapshot = ctx
        .snapshots
        .get(&ctx.store, &run.snapshot_id)
        .await
        .map_err(|e| {
            tracing::error!(run_id, error = %e, "cannot load the run's snapshot");
            "unavailable"
        })?;
    // Every secret the run's jobs may see is masked in its logs, also after
    // a reconnect or an orchestrator restart (no fetch:credential needed).
    let mut scrubber = Scrubber::default();
    let mut credentials = HashMap::new();
    for id in snapshot.credential_ids() {
        match run_data::credential(&ctx.store, &ctx.vault, &run.project_id, &id).await {
            Ok(Some(body)) => {
                scrubber.add_credential(&body);
                credentials.insert(id, body);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(credential_id = id, error = %e, "cannot read credential"),
        }
    }
    Ok(RunChannel {
        peer: peer.clone(),
        unrecorded_join: Some(run.claim_epoch),
        run,
        snapshot,
        scrubber,
        credentials,
    })
}

impl RunChannel {
    /// Answers `frames` in order; false once the worker left the channel.
    async fn handle_all(&mut self, frames: Vec<Frame>) -> bool {
        let mut pending = Pending::default();
        for frame in frames {
            if frame.event == PHX_LEAVE {
                self.flush(std::mem::take(&mut pending)).await;
                self.peer.out.ok(&frame, json!({}));
                self.peer.out.send(&Frame::push(
                    frame.join_ref.clone(),
                    frame.topic.clone(),
                    gabbro_protocol::frame::PHX_CLOSE,
                    json!({}),
                ));
                return false;
            }
            let out = self.peer.out.clone();
            let event = match RunEvent::from_parts(&frame.event, &frame.payload) {
                Ok(e) => e,
                Err(MessageError::UnknownEvent { event, .. }) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    out.error(
                        &frame,
                        json!({ "reason": format!("unknown event {event:?}") }),
                    );
                    continue;
                }
                Err(e) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    out.error(&frame, payload_error(&e));
                    continue;
                }
            };
            match self.route(event) {
                Routed::Ledger(ev, answer) => {
                    pending.frames.push((frame, answer));
                    pending.events.push(ev);
                }
                Routed::Other(RunEvent::FetchDataclip(_)) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    self.fetch_dataclip(&frame).await;
                }
                Routed::Other(other) => {
                    self.flush(std::mem::take(&mut pending)).await;
                    match self.fetch(other).await {
                        Ok(v) => out.ok(&frame, v),
                        Err(v) => out.error(&frame, v),
                    };
                }
            }
        }
        self.flush(pending).await;
        true
    }

    /// Applies the pending ledger events and answers each. The first
    /// batch also records the join (`LedgerEvent::Joined`), in the same
    /// transaction: if that fails, none of the batch is applied.
    async fn flush(&mut self, pending: Pending) {
        if pending.events.is_empty() {
            return;
        }
        let ctx = self.peer.ctx.clone();
        let mut events = pending.events;
        if let Some(claim_epoch) = self.unrecorded_join {
            events.insert(0, LedgerEvent::Joined { claim_epoch });
        }
        let mut results = ctx
            .store
            .apply_events(&self.run.id, Some(self.peer.worker_id.as_str()), events)
            .await
            .into_iter();
        if self.unrecorded_join.is_some() && results.next().is_some_and(|r| r.is_ok()) {
            self.unrecorded_join = None;
        }
        for ((frame, answer), result) in pending.frames.into_iter().zip(results) {
            match result {
                Ok(applied) => {
                    if let Applied::Finished(state) = &applied {
                        ctx.metrics.run_finished(state.as_str());
                    }
                    self.peer.out.ok(&frame, answer.render(applied))
                }
                Err(e) => self.peer.out.error(&frame, store_error(&e)),
            };
        }
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

    /// The run's data the worker asks for (`fetch:plan`,
    /// `fetch:credential`).
    async fn fetch(&mut self, event: RunEvent) -> Result<Value, Value> {
        let ctx = self.peer.ctx.clone();
        match event {
            RunEvent::FetchPlan => Ok(json!(plan::render(&self.run, &self.snapshot))),
            RunEvent::FetchCredential(f) => {
                if f.id.trim().is_empty() {
                    return Err(field_error("id", "can't be blank"));
                }
                if let Some(body) = self.credentials.get(&f.id) {
                    return Ok(body.clone());
                }
                // Not one of the run's jobs' credentials, or it could not
                // be read at the join: ask the store (its answer decides).
                match run_data::credential(&ctx.store, &ctx.vault, &self.run.project_id, &f.id)
                    .await
                {
                    Ok(Some(body)) => {
                        self.scrubber.add_credential(&body);
                        Ok(body)
                    }
                    Ok(None) => Err(field_error("id", "Credential not found!")),
                    Err(e) => Err(store_error(&e)),
                }
            }
            _ => Ok(Value::Null),
        }
    }

    /// A worker event for the run ledger, with the shape of its answer; the
    /// event itself back when it is not one (fetches).
    fn route(&self, event: RunEvent) -> Routed {
        let (ev, answer) = match event {
            RunEvent::RunStart(p) => (
                LedgerEvent::RunStart {
                    timestamp: Some(p.timestamp.as_micros()),
                    seq: p.seq,
                },
                Answer::Null,
            ),
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
                (LedgerEvent::StepStart(ev), Answer::StepId)
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
                (LedgerEvent::StepComplete(ev), Answer::StepId)
            }
            RunEvent::RunLog(p) => {
                let seq = p.seq;
                let lines = vec![self.log_line(p)];
                (LedgerEvent::Logs { lines, seq }, Answer::LogLineId)
            }
            RunEvent::BatchLogs(p) => {
                let lines = p.logs.into_iter().map(|l| self.log_line(l)).collect();
                (LedgerEvent::Logs { lines, seq: p.seq }, Answer::Empty)
            }
            RunEvent::RunComplete(p) => {
                let ev = LedgerRunComplete {
                    reason: p.reason.as_str().to_string(),
                    error_type: p.error_type,
                    error_message: p.error_message,
                    timestamp: p.timestamp.map(|t| t.as_micros()),
                    seq: p.seq,
                };
                (LedgerEvent::RunComplete(ev), Answer::Null)
            }
            other => return Routed::Other(other),
        };
        Routed::Ledger(ev, answer)
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
