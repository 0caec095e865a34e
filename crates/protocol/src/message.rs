//! Every worker → orchestrator message as one typed value.
//!
//! The orchestrator reads incoming frames with [`WorkerMessage::from_frame`];
//! the worker builds outgoing ones with [`WorkerMessage::to_frame`]. The two
//! are inverse: the captured frames of OpenFn's worker parse and re-serialise
//! to the same JSON (see `tests/captured_frames.rs`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::frame::{Frame, HEARTBEAT, PHOENIX_TOPIC, PHX_JOIN, PHX_LEAVE};
use crate::queue::{CLAIM, Claim, QUEUE_TOPIC, QueueJoin};
use crate::run::*;

/// Why a frame is not a valid worker message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("unmatched topic {0:?}")]
    UnmatchedTopic(String),
    #[error("unknown event {event:?} on {topic:?}")]
    UnknownEvent { topic: String, event: String },
    #[error("invalid {event} payload: {source}")]
    Payload {
        event: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A message the worker sends.
// Messages live only between the socket and their handler; boxing the large
// run events would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerMessage {
    /// `[null, ref, "phoenix", "heartbeat", {}]`.
    Heartbeat,
    QueueJoin(QueueJoin),
    Claim(Claim),
    RunJoin {
        run_id: String,
        join: RunJoin,
    },
    /// `phx_leave` on any topic (payload `{}`).
    Leave {
        topic: String,
    },
    Run {
        run_id: String,
        event: RunEvent,
    },
}

/// An event on a `run:<id>` channel.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    FetchPlan,
    FetchDataclip(FetchId),
    FetchCredential(FetchId),
    RunStart(RunStart),
    StepStart(StepStart),
    StepComplete(StepComplete),
    RunLog(RunLog),
    BatchLogs(BatchLogs),
    RunComplete(RunComplete),
}

fn parse<T: DeserializeOwned>(event: &str, payload: &Value) -> Result<T, MessageError> {
    T::deserialize(payload).map_err(|source| MessageError::Payload {
        event: event.to_string(),
        source,
    })
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Our payload types hold only strings, numbers, maps and `Value`s.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn empty() -> Value {
    Value::Object(Default::default())
}

impl RunEvent {
    /// Event name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::FetchPlan => FETCH_PLAN,
            RunEvent::FetchDataclip(_) => FETCH_DATACLIP,
            RunEvent::FetchCredential(_) => FETCH_CREDENTIAL,
            RunEvent::RunStart(_) => RUN_START,
            RunEvent::StepStart(_) => STEP_START,
            RunEvent::StepComplete(_) => STEP_COMPLETE,
            RunEvent::RunLog(_) => RUN_LOG,
            RunEvent::BatchLogs(_) => BATCH_LOGS,
            RunEvent::RunComplete(_) => RUN_COMPLETE,
        }
    }

    pub fn from_parts(event: &str, payload: &Value) -> Result<RunEvent, MessageError> {
        Ok(match event {
            // OpenFn's worker sends `{}`; Lightning reads no payload.
            FETCH_PLAN => RunEvent::FetchPlan,
            FETCH_DATACLIP => RunEvent::FetchDataclip(parse(event, payload)?),
            FETCH_CREDENTIAL => RunEvent::FetchCredential(parse(event, payload)?),
            RUN_START => RunEvent::RunStart(parse(event, payload)?),
            STEP_START => RunEvent::StepStart(parse(event, payload)?),
            STEP_COMPLETE => RunEvent::StepComplete(parse(event, payload)?),
            RUN_LOG => RunEvent::RunLog(parse(event, payload)?),
            BATCH_LOGS => RunEvent::BatchLogs(parse(event, payload)?),
            RUN_COMPLETE => RunEvent::RunComplete(parse(event, payload)?),
            other => {
                return Err(MessageError::UnknownEvent {
                    topic: "run:*".into(),
                    event: other.to_string(),
                });
            }
        })
    }

    pub fn payload(&self) -> Value {
        match self {
            RunEvent::FetchPlan => empty(),
            RunEvent::FetchDataclip(p) | RunEvent::FetchCredential(p) => to_value(p),
            RunEvent::RunStart(p) => to_value(p),
            RunEvent::StepStart(p) => to_value(p),
            RunEvent::StepComplete(p) => to_value(p),
            RunEvent::RunLog(p) => to_value(p),
            RunEvent::BatchLogs(p) => to_value(p),
            RunEvent::RunComplete(p) => to_value(p),
        }
    }

    /// gabbro's `seq` extension, on the events that carry one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            RunEvent::RunStart(p) => p.seq,
            RunEvent::StepStart(p) => p.seq,
            RunEvent::StepComplete(p) => p.seq,
            RunEvent::RunLog(p) => p.seq,
            RunEvent::BatchLogs(p) => p.seq,
            RunEvent::RunComplete(p) => p.seq,
            _ => None,
        }
    }

    /// Set the `seq` of an event that carries one (no-op for fetches).
    pub fn set_seq(&mut self, seq: Option<u64>) {
        match self {
            RunEvent::RunStart(p) => p.seq = seq,
            RunEvent::StepStart(p) => p.seq = seq,
            RunEvent::StepComplete(p) => p.seq = seq,
            RunEvent::RunLog(p) => p.seq = seq,
            RunEvent::BatchLogs(p) => p.seq = seq,
            RunEvent::RunComplete(p) => p.seq = seq,
            _ => {}
        }
    }
}

impl WorkerMessage {
    pub fn from_frame(frame: &Frame) -> Result<WorkerMessage, MessageError> {
        let (topic, event, payload) = (&frame.topic, frame.event.as_str(), &frame.payload);
        if event == PHX_LEAVE {
            return Ok(WorkerMessage::Leave {
                topic: topic.clone(),
            });
        }
        if topic == PHOENIX_TOPIC {
            return match event {
                HEARTBEAT => Ok(WorkerMessage::Heartbeat),
                _ => Err(unknown(topic, event)),
            };
        }
        if topic == QUEUE_TOPIC {
            return match event {
                PHX_JOIN => Ok(WorkerMessage::QueueJoin(parse(event, payload)?)),
                CLAIM => Ok(WorkerMessage::Claim(parse(event, payload)?)),
                _ => Err(unknown(topic, event)),
            };
        }
        let Some(run_id) = run_id_of(topic) else {
            return Err(MessageError::UnmatchedTopic(topic.clone()));
        };
        let run_id = run_id.to_string();
        if event == PHX_JOIN {
            return Ok(WorkerMessage::RunJoin {
                run_id,
                join: parse(event, payload)?,
            });
        }
        match RunEvent::from_parts(event, payload) {
            Ok(event) => Ok(WorkerMessage::Run { run_id, event }),
            Err(MessageError::UnknownEvent { .. }) => Err(unknown(topic, event)),
            Err(e) => Err(e),
        }
    }

    pub fn topic(&self) -> String {
        match self {
            WorkerMessage::Heartbeat => PHOENIX_TOPIC.to_string(),
            WorkerMessage::QueueJoin(_) | WorkerMessage::Claim(_) => QUEUE_TOPIC.to_string(),
            WorkerMessage::RunJoin { run_id, .. } | WorkerMessage::Run { run_id, .. } => {
                run_topic(run_id)
            }
            WorkerMessage::Leave { topic } => topic.clone(),
        }
    }

    pub fn event(&self) -> &'static str {
        match self {
            WorkerMessage::Heartbeat => HEARTBEAT,
            WorkerMessage::QueueJoin(_) | WorkerMessage::RunJoin { .. } => PHX_JOIN,
            WorkerMessage::Claim(_) => CLAIM,
            WorkerMessage::Leave { .. } => PHX_LEAVE,
            WorkerMessage::Run { event, .. } => event.name(),
        }
    }

    pub fn payload(&self) -> Value {
        match self {
            WorkerMessage::Heartbeat | WorkerMessage::Leave { .. } => empty(),
            WorkerMessage::QueueJoin(p) => to_value(p),
            WorkerMessage::Claim(p) => to_value(p),
            WorkerMessage::RunJoin { join, .. } => to_value(join),
            WorkerMessage::Run { event, .. } => event.payload(),
        }
    }

    /// The frame to send. Heartbeats never carry a join_ref.
    pub fn to_frame(&self, join_ref: Option<String>, msg_ref: Option<String>) -> Frame {
        let join_ref = match self {
            WorkerMessage::Heartbeat => None,
            _ => join_ref,
        };
        Frame::new(
            join_ref,
            msg_ref,
            self.topic(),
            self.event(),
            self.payload(),
        )
    }
}

fn unknown(topic: &str, event: &str) -> MessageError {
    MessageError::UnknownEvent {
        topic: topic.to_string(),
        event: event.to_string(),
    }
}
