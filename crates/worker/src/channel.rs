//! One run's channel (`run:<id>`), as the run's task sees it: every call
//! joins (or rejoins, after a reconnect) with the run token, then pushes the
//! event and waits for its reply. A lost connection or a missing reply is
//! never the run's outcome: the call waits for the socket, rejoins and
//! sends the same event again (same `seq`, so a gabbro orchestrator applies
//! it once). Only a refused join (the run is not ours, or no longer) ends
//! the conversation.

use std::sync::Arc;
use std::time::Duration;

use gabbro_protocol::{RunEvent, describe_error, run_topic};
use serde_json::{Value, json};

use crate::backoff::Backoff;
use crate::socket::{Channel, JoinError, ReplyBody, RequestError};
use crate::worker::Shared;

/// How many refused joins in a row make us give the run up.
const MAX_REFUSALS: u32 = 3;

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
    next_seq: u64,
}

impl RunChannel {
    pub fn new(shared: Arc<Shared>, run_id: &str, token: String) -> RunChannel {
        RunChannel {
            shared,
            topic: run_topic(run_id),
            token,
            channel: None,
            next_seq: 1,
        }
    }

    /// Send `event` (numbering it with the next `seq` if it carries one) and
    /// return the reply, whatever its status.
    pub async fn send(&mut self, mut event: RunEvent) -> Result<ReplyBody, CallError> {
        if matches!(
            event,
            RunEvent::RunStart(_)
                | RunEvent::StepStart(_)
                | RunEvent::StepComplete(_)
                | RunEvent::RunLog(_)
                | RunEvent::BatchLogs(_)
                | RunEvent::RunComplete(_)
        ) {
            event.set_seq(Some(self.next_seq));
            self.next_seq += 1;
        }
        let payload = event.payload();
        let reply = self.call(event.name(), payload).await?;
        if !reply.is_ok() {
            tracing::warn!(
                topic = %self.topic,
                event = event.name(),
                error = %describe_error(&reply.response_json()),
                "orchestrator refused a run event"
            );
        }
        Ok(reply)
    }

    async fn call(&mut self, event: &str, payload: Value) -> Result<ReplyBody, CallError> {
        let socket = self.shared.socket.clone();
        let timeout = self.shared.config.message_timeout;
        let mut backoff = Backoff::new(self.shared.config.backoff);
        let mut refusals = 0;
        loop {
            let channel = match &self.channel {
                Some(c) if socket.is_current(c) => c.clone(),
                _ => {
                    self.channel = None;
                    match socket
                        .join(&self.topic, json!({ "token": self.token }), timeout)
                        .await
                    {
                        Ok(c) => {
                            self.channel = Some(c.clone());
                            c
                        }
                        Err(JoinError::Refused(r)) => {
                            refusals += 1;
                            let why = describe_error(&r);
                            if refusals >= MAX_REFUSALS {
                                return Err(CallError::Refused(why));
                            }
                            tracing::warn!(topic = %self.topic, error = %why, "run channel join refused; retrying");
                            sleep(backoff.next_delay()).await;
                            continue;
                        }
                        Err(JoinError::Request(RequestError::Shutdown)) => {
                            return Err(CallError::Closed);
                        }
                        Err(JoinError::Request(e)) => {
                            tracing::warn!(topic = %self.topic, error = %e, "run channel join failed; retrying");
                            if !matches!(e, RequestError::Disconnected) {
                                sleep(backoff.next_delay()).await;
                            }
                            continue;
                        }
                    }
                }
            };
            match socket
                .request(&channel, event, payload.clone(), timeout)
                .await
            {
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
