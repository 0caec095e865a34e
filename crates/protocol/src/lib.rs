//! Lightning's worker protocol: Phoenix Channels V2 frames, every
//! worker ⇄ orchestrator message, worker and run tokens. Pure: no sockets.
//!
//! - [`Frame`]: `[join_ref, ref, topic, event, payload]` text frames
//!   ([`Frame::parse`], [`Frame::to_text`], [`Frame::reply_to`], [`Frame::reply`]).
//! - [`BinaryReply`]: the binary reply frame Lightning answers
//!   `fetch:dataclip` with ([`BinaryReply::encode`] / [`BinaryReply::decode`]).
//! - [`WorkerMessage`] / [`RunEvent`]: every message a worker sends, typed;
//!   [`queue`] and [`run`] hold the payloads and the reply types,
//!   [`LightningPlan`] the `fetch:plan` reply, [`errors`] Lightning's error
//!   shapes.
//! - [`token`]: [`WorkerToken`] (HS256) and run tokens ([`RunSigner`],
//!   [`RunVerifier`], RS256).
//! - [`Timestamp`]: µs since the epoch, as a string on the wire.
//!
//! gabbro's extensions (optional fields Lightning ignores) are listed in
//! `docs/protocol.md`.

pub mod binary;
pub mod errors;
pub mod frame;
pub mod message;
pub mod plan;
pub mod queue;
pub mod run;
pub mod timestamp;
pub mod token;

pub use binary::{BinaryError, BinaryReply};
pub use errors::{ErrorsReply, ReasonReply, describe_error};
pub use frame::{Frame, FrameError, Reply, ReplyStatus};
pub use message::{MessageError, RunEvent, WorkerMessage};
pub use plan::{LightningPlan, PlanEdge, PlanJob, PlanOptions, PlanTrigger};
pub use queue::{Claim, ClaimReply, ClaimedRun, QueueJoin, WorkAvailable};
pub use run::{
    BatchLogs, FetchId, LogReply, Reason, RunComplete, RunJoin, RunLog, RunStart, StepComplete,
    StepMem, StepReply, StepStart, run_id_of, run_topic,
};
pub use timestamp::Timestamp;
pub use token::{
    RunClaims, RunSigner, RunTokenAlg, RunVerifier, TokenError, WorkerClaims, WorkerToken,
};

/// `api_version` query parameter sent when connecting.
pub const API_VERSION: &str = "1.2";
/// Phoenix serializer version query parameter.
pub const VSN: &str = "2.0.0";
