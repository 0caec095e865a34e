//! One run's channel (`run:<id>`), as the run's task sees it: every call
//! joins (or rejoins, after a reconnect) with the run token, then pushes the
//! event and waits for its reply. A lost connection or a missing reply is
//! never the run's outcome: the call waits for the socket, rejoins and
//! sends the same event again (same `seq`, so a gabbro orchestrator applies
//! it once). Only a refused join (the run is not ours, or no longer) ends
//! the conversation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gabbro_protocol::{ErrorsReply, RunEvent, describe_error, run_topic};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backoff::Backoff;
use crate::journal::RunJournal;
use crate::socket::{Channel, JoinError, PendingReply, ReplyBody, RequestError};
use crate::worker::Shared;

/// How many refused joins in a row make us give the run up.
const MAX_REFUSALS: u32 = 3;
/// A reply that says the channel is not joined (it was closed by the
/// server, e.g. after a crash of its channel process): rejoin and resend,
/// the event was not applied.
fn not_joined(reply: &ReplyBody) -> bool {
    !reply.is_ok()
        && reply
            .response_json()
            .get("reason")
            .and_then(Value::as_str)
            .is_some_and(|r| r == "unmatched topic")
}

/// What a reply to a run event means for the journal.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Applied, or refused for good (the orchestrator consumed the `seq`):
    /// the journal moves on.
    Ack,
    /// Not applied for a transient reason (`{errors: {server: [...]}}`,
    /// e.g. a database restart): send it again after a backoff.
    Retry,
    /// `seq` gap: the orchestrator still expects this earlier `seq`; send
    /// the journal again from there (the events below it were applied).
    ResendFrom(u64),
}

fn verdict(reply: &ReplyBody, seq: Option<u64>) -> Verdict {
    if reply.is_ok() {
        return Verdict::Ack;
    }
    let Ok(errors) = ErrorsReply::deserialize(reply.response_json()) else {
        return Verdict::Ack;
    };
    if errors.is_retryable() {
        return Verdict::Retry;
    }
    match (errors.expected_seq, seq) {
        // Expecting a later seq means this one was applied already.
        (Some(expected), Some(seq)) if expected < seq => Verdict::ResendFrom(expected),
        _ => Verdict::Ack,
    }
}

/// A join refusal `{reason: "unavailable"}`: the orchestrator's store
/// failed while checking the join; transient, not a refusal of the run.
fn is_unavailable(reply: &Value) -> bool {
    reply.get("reason").and_then(Value::as_str) == Some("unavailable")
}

/// Run events in flight at once on one run channel.
pub const PIPELINE_WINDOW: usize = 32;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("run channel refused: {0}")]
    Refused(String),
    #[error("the socket is closed")]
    Closed,
}

pub struct RunChannel {
    shared: Arc<Shared>,
    topic: String,
    token: String,
    channel: Option<Channel>,
    numberer: Numberer,
}

/// Numbers a run's events (`seq`) and writes each to the run's journal as
/// it is produced, ahead of delivery. Shared between the task producing
/// events and the one delivering them.
#[derive(Clone)]
pub struct Numberer {
    next_seq: Arc<AtomicU64>,
    journal: Arc<Mutex<Option<RunJournal>>>,
    topic: String,
}

impl Numberer {
    /// Give `event` the next `seq` (if it carries one) and journal it.
    pub fn number(&self, mut event: RunEvent) -> RunEvent {
        if matches!(
            event,
            RunEvent::RunStart(_)
                | RunEvent::StepStart(_)
                | RunEvent::StepComplete(_)
                | RunEvent::RunLog(_)
                | RunEvent::BatchLogs(_)
                | RunEvent::RunComplete(_)
        ) {
            event.set_seq(Some(self.next_seq.fetch_add(1, Ordering::Relaxed)));
            if let Ok(mut guard) = self.journal.lock()
                && let Some(j) = guard.as_mut()
                && let Err(e) = j.record(&event)
            {
                tracing::error!(topic = %self.topic, error = %e, "cannot write the journal; sending anyway");
            }
        }
        event
    }

    /// Journalled events with `from <= seq < before` (see
    /// [`RunJournal::events_between`]); none without a journal.
    fn journalled(&self, from: u64, before: u64) -> Vec<RunEvent> {
        self.journal
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|j| j.events_between(from, before)))
            .unwrap_or_default()
    }

    fn ack(&self, seq: u64) {
        if let Ok(mut guard) = self.journal.lock()
            && let Some(j) = guard.as_mut()
            && let Err(e) = j.ack(seq)
        {
            tracing::warn!(topic = %self.topic, error = %e, "cannot write an ack to the journal");
        }
    }
}

impl RunChannel {
    pub fn new(shared: Arc<Shared>, run_id: &str, token: String) -> RunChannel {
        RunChannel {
            shared,
            topic: run_topic(run_id),
            token,
            channel: None,
            numberer: Numberer {
                next_seq: Arc::new(AtomicU64::new(1)),
                journal: Arc::new(Mutex::new(None)),
                topic: run_topic(run_id),
            },
        }
    }

    /// Journal every numbered event before sending it (see [`crate::journal`]).
    pub fn attach_journal(&mut self, journal: RunJournal) {
        if let Ok(mut g) = self.numberer.journal.lock() {
            *g = Some(journal);
        }
    }

    /// The run is delivered (or refused): its journal file goes.
    pub fn finish_journal(&mut self) {
        let j = self.numberer.journal.lock().ok().and_then(|mut g| g.take());
        if let Some(j) = j {
            j.finish();
        }
    }

    /// A handle that numbers and journals events for [`Self::deliver`].
    pub fn numberer(&self) -> Numberer {
        self.numberer.clone()
    }

    /// Send `event` (numbering and journalling it if it carries a `seq`)
    /// and return the reply, whatever its status.
    pub async fn send(&mut self, event: RunEvent) -> Result<ReplyBody, CallError> {
        let event = self.numberer.number(event);
        self.deliver(event).await
    }

    /// Send an event that already carries its `seq` and is already in the
    /// journal (replay after a restart).
    pub async fn resend(&mut self, event: RunEvent) -> Result<ReplyBody, CallError> {
        self.deliver(event).await
    }

    /// Send an event numbered by [`Numberer::number`] and return its
    /// reply once it acknowledges the event (see [`Verdict`]): a transient
    /// error is retried after a backoff, a `seq` gap first sends the
    /// journalled events the orchestrator still expects.
    pub async fn deliver(&mut self, event: RunEvent) -> Result<ReplyBody, CallError> {
        let mut backoff = Backoff::new(self.shared.config.backoff);
        let mut queue: VecDeque<RunEvent> = VecDeque::from([event]);
        loop {
            let Some(e) = queue.front() else {
                return Err(CallError::Closed);
            };
            let (name, payload, seq) = (e.name(), e.payload(), e.seq());
            let reply = self.call(name, payload).await?;
            match self.judge(&reply, name, seq) {
                Verdict::Ack => {
                    backoff.reset();
                    queue.pop_front();
                    if queue.is_empty() {
                        return Ok(reply);
                    }
                }
                Verdict::Retry => sleep(backoff.next_delay()).await,
                Verdict::ResendFrom(from) => {
                    let before = queue.front().and_then(RunEvent::seq).unwrap_or(from);
                    for e in self.numberer.journalled(from, before).into_iter().rev() {
                        queue.push_front(e);
                    }
                }
            }
        }
    }

    /// Classify a reply, acknowledge it in the journal when it is an ack,
    /// and log what is not plain success.
    fn judge(&self, reply: &ReplyBody, event: &str, seq: Option<u64>) -> Verdict {
        let mut v = verdict(reply, seq);
        if let Verdict::ResendFrom(from) = v
            && let Some(seq) = seq
            && self.numberer.journalled(from, seq).is_empty()
        {
            // Nothing journalled to send again (no journal): nothing better
            // to do than move on.
            tracing::error!(topic = %self.topic, event, expected = from, seq, "seq gap with nothing journalled to resend");
            v = Verdict::Ack;
        }
        match v {
            Verdict::Ack => {
                if let Some(seq) = seq {
                    self.numberer.ack(seq);
                }
                if !reply.is_ok() {
                    tracing::warn!(
                        topic = %self.topic,
                        event,
                        error = %describe_error(&reply.response_json()),
                        "orchestrator refused a run event"
                    );
                }
            }
            Verdict::Retry => tracing::warn!(
                topic = %self.topic,
                event,
                error = %describe_error(&reply.response_json()),
                "orchestrator could not apply a run event; sending it again"
            ),
            Verdict::ResendFrom(from) => tracing::warn!(
                topic = %self.topic,
                event,
                expected = from,
                "orchestrator expects an earlier seq; resending from the journal"
            ),
        }
        v
    }

    /// The joined channel, joining (again) when there is none on the live
    /// connection. Fails only when the run is refused or the socket closed.
    /// The first event of a channel that is not joined goes out with the
    /// join (one round trip, see [`crate::socket::Socket::join_with`]).
    /// `None` when it is joined already or that did not work out: the usual
    /// path then joins, with its retries, and sends the event again (a
    /// numbered event is idempotent by its `seq`).
    async fn join_with_first(&mut self, event: &str, payload: &Value) -> Option<ReplyBody> {
        let socket = self.shared.socket.clone();
        if self.channel.as_ref().is_some_and(|c| socket.is_current(c)) {
            return None;
        }
        self.channel = None;
        let joined = socket
            .join_with(
                &self.topic,
                json!({ "token": self.token }),
                event,
                payload.clone(),
                self.shared.config.message_timeout,
            )
            .await;
        match joined {
            Ok((channel, first)) => {
                self.channel = Some(channel);
                first.ok().filter(|reply| !not_joined(reply))
            }
            Err(e) => {
                tracing::debug!(topic = %self.topic, error = %e, "joining with the first event did not work; joining alone");
                None
            }
        }
    }

    async fn joined(&mut self, backoff: &mut Backoff) -> Result<Channel, CallError> {
        let socket = self.shared.socket.clone();
        let timeout = self.shared.config.message_timeout;
        let mut refusals = 0;
        loop {
            if let Some(c) = &self.channel
                && socket.is_current(c)
            {
                return Ok(c.clone());
            }
            self.channel = None;
            match socket
                .join(&self.topic, json!({ "token": self.token }), timeout)
                .await
            {
                Ok(c) => {
                    self.channel = Some(c.clone());
                    return Ok(c);
                }
                Err(JoinError::Refused(r)) if is_unavailable(&r) => {
                    // The orchestrator could not check the join (its store
                    // failed): not a refusal, try again.
                    tracing::warn!(topic = %self.topic, "run channel join unavailable; retrying");
                    sleep(backoff.next_delay()).await;
                }
                Err(JoinError::Refused(r)) => {
                    refusals += 1;
                    let why = describe_error(&r);
                    if refusals >= MAX_REFUSALS {
                        return Err(CallError::Refused(why));
                    }
                    tracing::warn!(topic = %self.topic, error = %why, "run channel join refused; retrying");
                    sleep(backoff.next_delay()).await;
                }
                Err(JoinError::Request(RequestError::Shutdown)) => return Err(CallError::Closed),
                Err(JoinError::Request(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "run channel join failed; retrying");
                    if !matches!(e, RequestError::Disconnected) {
                        sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    async fn call(&mut self, event: &str, payload: Value) -> Result<ReplyBody, CallError> {
        let socket = self.shared.socket.clone();
        let timeout = self.shared.config.message_timeout;
        let mut backoff = Backoff::new(self.shared.config.backoff);
        if let Some(reply) = self.join_with_first(event, &payload).await {
            return Ok(reply);
        }
        loop {
            let channel = self.joined(&mut backoff).await?;
            match socket
                .request(&channel, event, payload.clone(), timeout)
                .await
            {
                Ok(reply) if not_joined(&reply) => {
                    self.channel = None;
                    sleep(backoff.next_delay()).await;
                }
                Ok(reply) => return Ok(reply),
                Err(RequestError::Disconnected) => {
                    self.channel = None;
                }
                Err(RequestError::Timeout(t)) => {
                    tracing::warn!(topic = %self.topic, event, timeout = ?t, "no reply; sending again");
                    sleep(backoff.next_delay()).await;
                }
                Err(RequestError::Shutdown) => return Err(CallError::Closed),
            }
        }
    }

    /// Send several events at once (pipelined; numbered ones are numbered
    /// and journalled first) and return their replies in order. Unanswered
    /// ones are sent again, in order, after a drop or a late reply.
    pub async fn send_all(&mut self, events: Vec<RunEvent>) -> Result<Vec<ReplyBody>, CallError> {
        let events: Vec<RunEvent> = events
            .into_iter()
            .map(|e| self.numberer.number(e))
            .collect();
        let socket = self.shared.socket.clone();
        let timeout = self.shared.config.message_timeout;
        let mut backoff = Backoff::new(self.shared.config.backoff);
        let mut replies: Vec<ReplyBody> = Vec::with_capacity(events.len());
        'attempt: while replies.len() < events.len() {
            let channel = self.joined(&mut backoff).await?;
            let mut pending = Vec::new();
            for e in &events[replies.len()..] {
                match socket.start_request(&channel, e.name(), e.payload()).await {
                    Ok(p) => pending.push(p),
                    Err(RequestError::Shutdown) => return Err(CallError::Closed),
                    Err(_) => break,
                }
            }
            for p in pending {
                match p.wait(timeout).await {
                    Ok(reply) if not_joined(&reply) => {
                        self.channel = None;
                        sleep(backoff.next_delay()).await;
                        continue 'attempt;
                    }
                    Ok(reply) => {
                        let e = &events[replies.len()];
                        let seq = e.seq();
                        match self.judge(&reply, e.name(), seq) {
                            Verdict::Ack => replies.push(reply),
                            Verdict::Retry => {
                                sleep(backoff.next_delay()).await;
                                continue 'attempt;
                            }
                            Verdict::ResendFrom(from) => {
                                let before = seq.unwrap_or(from);
                                for earlier in self.numberer.journalled(from, before) {
                                    self.deliver(earlier).await?;
                                }
                                continue 'attempt;
                            }
                        }
                    }
                    Err(RequestError::Shutdown) => return Err(CallError::Closed),
                    Err(RequestError::Timeout(_)) => {
                        sleep(backoff.next_delay()).await;
                        continue 'attempt;
                    }
                    Err(RequestError::Disconnected) => {
                        self.channel = None;
                        continue 'attempt;
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Deliver numbered events from `events` in order, with up to
    /// [`PIPELINE_WINDOW`] of them in flight (the orchestrator applies a
    /// channel's messages in order, so replies need not be awaited one by
    /// one). When the connection drops or a reply is late, every event not
    /// yet answered is sent again, in order, after rejoining. Returns when
    /// `events` is closed and everything is answered, or on refusal/close.
    pub async fn deliver_stream(
        &mut self,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<RunEvent>,
    ) -> Result<(), CallError> {
        let socket = self.shared.socket.clone();
        let timeout = self.shared.config.message_timeout;
        let mut backoff = Backoff::new(self.shared.config.backoff);
        // Sent, reply not read yet.
        let mut inflight: VecDeque<(RunEvent, PendingReply)> = VecDeque::new();
        // To (re)send before taking new events.
        let mut resend: VecDeque<RunEvent> = VecDeque::new();
        let mut closed = false;
        loop {
            // Fill the window.
            while inflight.len() < PIPELINE_WINDOW {
                let next = if let Some(e) = resend.pop_front() {
                    e
                } else if closed {
                    break;
                } else if inflight.is_empty() {
                    match events.recv().await {
                        Some(e) => e,
                        None => {
                            closed = true;
                            break;
                        }
                    }
                } else {
                    match events.try_recv() {
                        Ok(e) => e,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                };
                let channel = match self.joined(&mut backoff).await {
                    Ok(c) => c,
                    Err(e) => return Err(e),
                };
                match socket
                    .start_request(&channel, next.name(), next.payload())
                    .await
                {
                    Ok(p) => inflight.push_back((next, p)),
                    Err(RequestError::Shutdown) => return Err(CallError::Closed),
                    Err(_) => {
                        // Gone before it left: resend it (and all after it) later.
                        self.channel = None;
                        resend.push_front(next);
                        break;
                    }
                }
            }
            let Some((event, pending)) = inflight.pop_front() else {
                if closed && resend.is_empty() {
                    return Ok(());
                }
                continue;
            };
            let result = match pending.wait(timeout).await {
                Ok(reply) if not_joined(&reply) => {
                    self.channel = None;
                    sleep(backoff.next_delay()).await;
                    Err(RequestError::Disconnected)
                }
                other => other,
            };
            match result {
                Ok(reply) => match self.judge(&reply, event.name(), event.seq()) {
                    Verdict::Ack => backoff.reset(),
                    verdict => {
                        // Not applied: this event and everything after it
                        // goes again, in order (the later ones in flight
                        // cannot have been applied either); after a gap,
                        // preceded by the journalled events from the
                        // expected seq.
                        let mut again: VecDeque<RunEvent> = VecDeque::new();
                        if let Verdict::ResendFrom(from) = verdict {
                            let before = event.seq().unwrap_or(from);
                            again.extend(self.numberer.journalled(from, before));
                        }
                        again.push_back(event);
                        again.extend(inflight.drain(..).map(|(e, _)| e));
                        again.extend(resend.drain(..));
                        resend = again;
                        if verdict == Verdict::Retry {
                            sleep(backoff.next_delay()).await;
                        }
                    }
                },
                Err(e) => {
                    if matches!(e, RequestError::Shutdown) {
                        return Err(CallError::Closed);
                    }
                    tracing::warn!(topic = %self.topic, event = event.name(), error = %e, "no reply; resending unanswered events");
                    // Everything unanswered goes again, in order, ahead of
                    // what was waiting to be resent.
                    let mut again: VecDeque<RunEvent> = VecDeque::new();
                    again.push_back(event);
                    again.extend(inflight.drain(..).map(|(e, _)| e));
                    again.extend(resend.drain(..));
                    resend = again;
                    if matches!(e, RequestError::Timeout(_)) {
                        sleep(backoff.next_delay()).await;
                    } else {
                        self.channel = None;
                    }
                }
            }
        }
    }

    /// Leave the channel (no reply awaited).
    pub fn leave(&mut self) {
        if let Some(c) = self.channel.take() {
            self.shared.socket.leave(&c);
        }
    }
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}
