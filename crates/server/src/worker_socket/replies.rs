//! Lightning's reply shapes, and the outbox every task of a connection sends
//! through.

use axum::extract::ws::Message;
use gabbro_protocol::{ErrorsReply, Frame, MessageError, ReasonReply, ReplyStatus};
use gabbro_store::StoreError;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_are_answered_retry_later() {
        let retry = |e: &StoreError| {
            serde_json::from_value::<ErrorsReply>(store_error(e)).is_ok_and(|r| r.is_retryable())
        };
        assert!(retry(&StoreError::Db(sqlx::Error::PoolTimedOut)));
        assert!(retry(&StoreError::WriterGone));
        assert!(!retry(&StoreError::Crypto("aead::Error".into())));
        assert_eq!(
            store_error(&StoreError::Crypto("aead::Error".into())),
            json!({"errors": {"internal": ["cannot be applied"]}})
        );
        assert_eq!(
            store_error(&StoreError::NotHolder),
            json!({"reason": "unauthorized"})
        );
    }
}

/// Frames waiting to be written to one socket.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Message>,
}

impl Outbox {
    pub fn new(tx: mpsc::UnboundedSender<Message>) -> Outbox {
        Outbox { tx }
    }

    /// False once the socket is gone.
    pub fn send(&self, frame: &Frame) -> bool {
        self.tx.send(Message::Text(frame.to_text().into())).is_ok()
    }

    pub fn send_binary(&self, bytes: Vec<u8>) -> bool {
        self.tx.send(Message::Binary(bytes.into())).is_ok()
    }

    pub fn ok(&self, request: &Frame, response: Value) -> bool {
        self.send(&Frame::reply_to(request, ReplyStatus::Ok, response))
    }

    pub fn error(&self, request: &Frame, response: Value) -> bool {
        self.send(&Frame::reply_to(request, ReplyStatus::Error, response))
    }

    pub fn reason(&self, request: &Frame, reason: &str) -> bool {
        self.error(request, ReasonReply::new(reason).to_value())
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// `{errors:{field:[message]}}`.
pub(crate) fn field_error(field: &str, message: impl Into<String>) -> Value {
    ErrorsReply::field(field, message).to_value()
}

/// The reply for a payload that does not parse: Lightning's changeset shape,
/// naming the missing field when serde says which one.
pub(crate) fn payload_error(e: &MessageError) -> Value {
    if let MessageError::Payload { source, .. } = e {
        let text = source.to_string();
        if let Some(rest) = text.strip_prefix("missing field `")
            && let Some(field) = rest.split('`').next()
        {
            return field_error(field, "can't be blank");
        }
        return field_error("payload", text);
    }
    json!({ "reason": e.to_string() })
}

/// The reply for a store failure: refusals in Lightning's words; a database
/// outage (see [`StoreError::is_transient`]) as the transient
/// `{errors:{server:[…retry later]}}`, which gabbro's worker sends again;
/// any other failure (a credential that does not decrypt, corrupt stored
/// data) as a definitive `{errors:{internal:["cannot be applied"]}}`, so the
/// worker moves on instead of retrying forever. Details go to our log, not
/// the worker. An event from a worker that no longer holds the run is a
/// definitive `unauthorized`.
pub(crate) fn store_error(e: &StoreError) -> Value {
    match e {
        StoreError::Rejected { field, message } => field_error(field, message.clone()),
        StoreError::SeqGap { expected } => ErrorsReply::expected_seq(*expected).to_value(),
        StoreError::NotFound { what, .. } => field_error(what, "not found"),
        StoreError::NotHolder => ReasonReply::new(ReasonReply::UNAUTHORIZED).to_value(),
        other if other.is_transient() => {
            tracing::error!(error = %other, "worker event failed; the worker will retry");
            field_error("server", "internal error, retry later")
        }
        other => {
            tracing::error!(error = %other, "worker event failed");
            field_error("internal", "cannot be applied")
        }
    }
}
