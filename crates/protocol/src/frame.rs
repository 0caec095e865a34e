//! Phoenix Channels V2 JSON frames: `[join_ref, ref, topic, event, payload]`.
//!
//! This is the transport layer only: a frame carries a topic, an event name
//! and an arbitrary JSON payload. [`crate::message`] turns the payloads of
//! the worker protocol into typed values.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Topic of socket-level messages (heartbeats).
pub const PHOENIX_TOPIC: &str = "phoenix";
pub const HEARTBEAT: &str = "heartbeat";
pub const PHX_JOIN: &str = "phx_join";
pub const PHX_LEAVE: &str = "phx_leave";
pub const PHX_REPLY: &str = "phx_reply";
pub const PHX_ERROR: &str = "phx_error";
pub const PHX_CLOSE: &str = "phx_close";

/// Why a text frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("not a Phoenix V2 frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("reply frame without a {{status, response}} payload")]
    NotAReply,
}

/// One Phoenix V2 JSON frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The `ref` of the channel's `phx_join`; `None` for heartbeats and for
    /// pushes that belong to no joined channel.
    pub join_ref: Option<String>,
    /// The message ref, a socket-wide counter chosen by the client; `None`
    /// for server pushes.
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

impl Frame {
    pub fn new(
        join_ref: Option<String>,
        msg_ref: Option<String>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: Value,
    ) -> Frame {
        Frame {
            join_ref,
            msg_ref,
            topic: topic.into(),
            event: event.into(),
            payload,
        }
    }

    /// Parse a text frame.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Parse a frame already decoded as JSON.
    pub fn from_value(value: Value) -> Result<Frame, FrameError> {
        Ok(serde_json::from_value(value)?)
    }

    /// The frame as a JSON text, ready to send.
    pub fn to_text(&self) -> String {
        // Serialising strings and `Value`s cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            opt_str(&self.join_ref),
            opt_str(&self.msg_ref),
            Value::String(self.topic.clone()),
            Value::String(self.event.clone()),
            self.payload.clone(),
        ])
    }

    /// A heartbeat, as the client sends it every 30 s.
    pub fn heartbeat(msg_ref: impl Into<String>) -> Frame {
        Frame::new(
            None,
            Some(msg_ref.into()),
            PHOENIX_TOPIC,
            HEARTBEAT,
            Value::Object(Default::default()),
        )
    }

    /// A reply to `request` (same join_ref, ref and topic), event `phx_reply`.
    pub fn reply_to(request: &Frame, status: ReplyStatus, response: Value) -> Frame {
        Frame::new(
            request.join_ref.clone(),
            request.msg_ref.clone(),
            request.topic.clone(),
            PHX_REPLY,
            serde_json::json!({ "status": status, "response": response }),
        )
    }

    /// A server push (no ref) on a joined channel.
    pub fn push(
        join_ref: Option<String>,
        topic: impl Into<String>,
        event: impl Into<String>,
        payload: Value,
    ) -> Frame {
        Frame::new(join_ref, None, topic, event, payload)
    }

    /// Is this a reply? Phoenix sends `phx_reply`; kit's lightning-mock sends
    /// `chan_reply_<ref>`, which the JS client also accepts, so we do too.
    pub fn is_reply(&self) -> bool {
        self.event == PHX_REPLY || self.event.starts_with("chan_reply_")
    }

    /// The `{status, response}` of a reply frame. A missing `response` (the
    /// mock's `{"status":"ok"}`) reads as `null`.
    pub fn reply(&self) -> Result<Reply, FrameError> {
        if !self.is_reply() {
            return Err(FrameError::NotAReply);
        }
        Reply::deserialize(&self.payload).map_err(|_| FrameError::NotAReply)
    }
}

fn opt_str(s: &Option<String>) -> Value {
    match s {
        Some(s) => Value::String(s.clone()),
        None => Value::Null,
    }
}

/// `status` of a `phx_reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Ok,
    Error,
}

/// The payload of a `phx_reply`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub status: ReplyStatus,
    #[serde(default)]
    pub response: Value,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        self.status == ReplyStatus::Ok
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(5)?;
        t.serialize_element(&self.join_ref)?;
        t.serialize_element(&self.msg_ref)?;
        t.serialize_element(&self.topic)?;
        t.serialize_element(&self.event)?;
        t.serialize_element(&self.payload)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Frame, D::Error> {
        struct FrameVisitor;
        impl<'de> Visitor<'de> for FrameVisitor {
            type Value = Frame;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array [join_ref, ref, topic, event, payload]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
                let join_ref: Option<String> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let msg_ref: Option<String> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let topic: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                let event: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(3, &self))?;
                let payload: Value = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(4, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(6, &self));
                }
                Ok(Frame {
                    join_ref,
                    msg_ref,
                    topic,
                    event,
                    payload,
                })
            }
        }
        d.deserialize_seq(FrameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_a_frame_with_null_join_ref() {
        let text = r#"[null,"20","phoenix","heartbeat",{}]"#;
        let frame = Frame::parse(text).unwrap();
        assert_eq!(frame, Frame::heartbeat("20"));
        assert_eq!(frame.to_text(), text);
    }

    #[test]
    fn rejects_frames_of_the_wrong_shape() {
        for bad in [
            r#"{"topic":"x"}"#,
            r#"[null,"1","t"]"#,
            r#"[null,"1","t","e",{},1]"#,
            r#"[1,"1","t","e",{}]"#,
            "not json",
        ] {
            assert!(Frame::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_to_copies_refs_and_topic() {
        let req = Frame::parse(r#"["6","7","worker:queue","claim",{"demand":1}]"#).unwrap();
        let reply = Frame::reply_to(&req, ReplyStatus::Ok, serde_json::json!({"runs":[]}));
        assert_eq!(
            serde_json::from_str::<Value>(&reply.to_text()).unwrap(),
            serde_json::json!(["6","7","worker:queue","phx_reply",{"status":"ok","response":{"runs":[]}}])
        );
        let r = reply.reply().unwrap();
        assert!(r.is_ok());
        assert_eq!(r.response, serde_json::json!({"runs":[]}));
    }

    #[test]
    fn accepts_the_mocks_chan_reply_without_response() {
        let f = Frame::parse(r#"["42","45","run:run-a","chan_reply_45",{"status":"ok"}]"#).unwrap();
        let r = f.reply().unwrap();
        assert!(r.is_ok());
        assert_eq!(r.response, Value::Null);
    }
}
