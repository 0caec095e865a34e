//! A Lightning-style server double for `gabbro worker`, written from the
//! reference (openfn-lightning.md §4, ws-worker-frames.md): Phoenix V2
//! frames, `phx_reply` replies, heartbeat replies, the binary
//! `fetch:dataclip` reply, HS256 worker-token check at connect, RS256 run
//! tokens checked at `run:<id>` join. It hands out queued runs, records
//! every event it receives, and can be told to misbehave.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gabbro_protocol::token::{RunClaims, RunSigner};
use gabbro_protocol::{
    BinaryReply, ErrorsReply, Frame, ReasonReply, ReplyStatus, RunEvent, WorkerMessage, WorkerToken,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

pub const SECRET: &str = "test-secret";
const TEST_KEY: &str = include_str!("../../../protocol/tests/fixtures/run-token-test-key.pem");

/// How the double misbehaves (switchable at any time).
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Reads frames, never replies (heartbeats included).
    Silent,
    /// Replies after a delay.
    Slow(Duration),
    /// Replies `{errors: …}` to everything but heartbeats and joins.
    Errors,
    /// Sends malformed frames before every reply.
    Malformed,
    /// Answers everything but heartbeats (as kit's mock).
    NoHeartbeat,
}

#[derive(Clone, Debug)]
pub struct TestRun {
    pub id: String,
    pub plan: Value,
    pub dataclip: Option<Value>,
    pub credentials: Vec<(String, Value)>,
}

/// One received run event.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub run_id: String,
    pub event: RunEvent,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// Every `worker:queue` join payload received, in order.
    queue_joins: Vec<gabbro_protocol::QueueJoin>,
    queue: VecDeque<TestRun>,
    runs: Vec<TestRun>,
    events: Vec<Recorded>,
    connections: u32,
    claims: u32,
    /// Close every connection after this many more frames (then reset).
    drop_after: Option<u32>,
    /// Answer the next N run events `{reason: "unmatched topic"}` (as
    /// Phoenix does once a channel process is gone), not recording them.
    unmatched: u32,
    /// Hand out unsigned tokens and accept any (for measurements: RS256 in
    /// a debug build would dominate).
    fast_tokens: bool,
    /// Apply numbered run events in `seq` order as gabbro's orchestrator
    /// does: a replay is answered ok, a gap `{errors: {seq: ["expected
    /// N"]}, expected_seq: N}` (not recorded).
    enforce_seq: bool,
    /// Per run, the last `seq` applied (with `enforce_seq`).
    last_seq: std::collections::HashMap<String, u64>,
    /// Answer the next N events of this name with the transient store
    /// error `{errors: {server: ["internal error, retry later"]}}` (not
    /// recorded, not applied).
    transient: Option<(String, u32)>,
    /// Transient errors sent so far.
    transient_sent: u32,
    /// The first event of this name with seq `s` is answered with a gap
    /// expecting `s - back`, as if the events from there were lost.
    rewind: Option<(String, u64)>,
    /// Replies to events of this name wait this long (the rest answer at once).
    slow_event: Option<(String, Duration)>,
    /// Senders to push `work-available` to joined queue channels.
    queue_pushers: Vec<mpsc::UnboundedSender<Message>>,
}

#[derive(Clone)]
pub struct Lightning {
    pub url: String,
    state: Arc<Mutex<State>>,
    signer: Arc<RunSigner>,
    changed: Arc<Notify>,
}

impl Lightning {
    pub async fn start() -> Lightning {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lightning = Lightning {
            url: format!("ws://{addr}/worker"),
            state: Arc::new(Mutex::new(State {
                mode: Some(Mode::Normal),
                ..Default::default()
            })),
            signer: Arc::new(RunSigner::from_private_pem(TEST_KEY).unwrap()),
            changed: Arc::new(Notify::new()),
        };
        let l = lightning.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let l = l.clone();
                tokio::spawn(async move { l.serve(tcp).await });
            }
        });
        lightning
    }

    pub fn unmatch_next(&self, n: u32) {
        self.state.lock().unwrap().unmatched = n;
    }

    /// See `State::enforce_seq`.
    pub fn enforce_seq(&self) {
        self.state.lock().unwrap().enforce_seq = true;
    }

    /// See `State::transient`.
    pub fn fail_transiently(&self, event: &str, times: u32) {
        self.state.lock().unwrap().transient = Some((event.to_string(), times));
    }

    pub fn transient_sent(&self) -> u32 {
        self.state.lock().unwrap().transient_sent
    }

    /// See `State::rewind`.
    pub fn rewind_at(&self, event: &str, back: u64) {
        self.state.lock().unwrap().rewind = Some((event.to_string(), back));
    }

    /// See `State::slow_event`.
    pub fn slow_to_answer(&self, event: &str, delay: Duration) {
        self.state.lock().unwrap().slow_event = Some((event.to_string(), delay));
    }

    pub fn use_fast_tokens(&self) {
        self.state.lock().unwrap().fast_tokens = true;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    fn mode(&self) -> Mode {
        self.state
            .lock()
            .unwrap()
            .mode
            .clone()
            .unwrap_or(Mode::Normal)
    }

    /// Close connections after `n` more frames from the worker.
    pub fn drop_after(&self, n: u32) {
        self.state.lock().unwrap().drop_after = Some(n);
    }

    pub fn connections(&self) -> u32 {
        self.state.lock().unwrap().connections
    }

    /// The `worker:queue` join payloads received so far.
    pub fn queue_joins(&self) -> Vec<gabbro_protocol::QueueJoin> {
        self.state.lock().unwrap().queue_joins.clone()
    }

    pub fn claims(&self) -> u32 {
        self.state.lock().unwrap().claims
    }

    /// Queue a run and push `work-available` to joined workers.
    pub fn enqueue(&self, run: TestRun) {
        let mut s = self.state.lock().unwrap();
        s.runs.push(run.clone());
        s.queue.push_back(run);
        s.queue_pushers.retain(|tx| {
            tx.send(Message::text(
                Frame::push(None, "worker:queue", "work-available", json!({})).to_text(),
            ))
            .is_ok()
        });
    }

    /// Events received for `run_id`, deduplicated by `seq` (a resent event
    /// counts once), in order.
    pub fn events(&self, run_id: &str) -> Vec<RunEvent> {
        let s = self.state.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        s.events
            .iter()
            .filter(|r| r.run_id == run_id)
            .filter(|r| match r.event.seq() {
                Some(seq) => seen.insert(seq),
                None => true,
            })
            .map(|r| r.event.clone())
            .collect()
    }

    /// Every event received for `run_id`, duplicates included.
    pub fn raw_events(&self, run_id: &str) -> Vec<RunEvent> {
        let s = self.state.lock().unwrap();
        s.events
            .iter()
            .filter(|r| r.run_id == run_id)
            .map(|r| r.event.clone())
            .collect()
    }

    pub fn completed(&self, run_id: &str) -> Option<gabbro_protocol::RunComplete> {
        self.events(run_id).into_iter().find_map(|e| match e {
            RunEvent::RunComplete(c) => Some(c),
            _ => None,
        })
    }

    /// Wait until `run_id` has a `run:complete`, or panic after `within`.
    pub async fn wait_complete(
        &self,
        run_id: &str,
        within: Duration,
    ) -> gabbro_protocol::RunComplete {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so a change between the check
            // and the wait is not missed (`notify_waiters` keeps no permit).
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.completed(run_id) {
                return c;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "run {run_id} did not complete within {within:?}; events: {:#?}",
                    self.events(run_id)
                );
            }
        }
    }

    async fn serve(&self, tcp: tokio::net::TcpStream) {
        let token_ok = Arc::new(Mutex::new(false));
        let t = token_ok.clone();
        // The error type is tungstenite's; its size is not ours to choose.
        #[allow(clippy::result_large_err)]
        let callback = move |req: &Request, resp: Response| {
            let query = req.uri().query().unwrap_or("");
            let token = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .unwrap_or("");
            *t.lock().unwrap() = WorkerToken::verify(token, SECRET).is_ok()
                && req.uri().path() == "/worker/websocket"
                && query.contains("vsn=2.0.0")
                && query.contains("api_version=1.2");
            Ok(resp)
        };
        let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        if !*token_ok.lock().unwrap() {
            return; // dropped: as a 401 would be
        }
        self.state.lock().unwrap().connections += 1;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(text) = msg else { continue };
            {
                let mut s = self.state.lock().unwrap();
                if let Some(n) = s.drop_after {
                    if n == 0 {
                        s.drop_after = None;
                        break;
                    }
                    s.drop_after = Some(n - 1);
                }
            }
            let Ok(frame) = Frame::parse(text.as_str()) else {
                continue;
            };
            let mode = self.mode();
            if mode == Mode::Silent {
                continue;
            }
            let replies = self.handle(&frame, &out_tx);
            let out = out_tx.clone();
            let slow_event = self.state.lock().unwrap().slow_event.clone();
            let delay = match mode {
                Mode::Slow(d) => Some(d),
                _ => slow_event.and_then(|(event, d)| (event == frame.event).then_some(d)),
            };
            let malformed = mode == Mode::Malformed;
            tokio::spawn(async move {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                if malformed {
                    for junk in [
                        Message::text("this is not json"),
                        Message::text("[1,2,3]"),
                        Message::text(r#"[null,null,"worker:queue","phx_reply",{"status":"ok"}]"#),
                        Message::text(
                            r#"["1","999999","run:x","phx_reply",{"status":"ok","response":{}}]"#,
                        ),
                        Message::binary(vec![7u8, 1, 2]),
                        Message::binary(vec![1u8, 200, 0, 0, 0]),
                    ] {
                        let _ = out.send(junk);
                    }
                }
                for r in replies {
                    let _ = out.send(r);
                }
            });
        }
        drop(out_tx);
        writer.abort();
    }

    fn reply(frame: &Frame, status: ReplyStatus, response: Value) -> Message {
        Message::text(Frame::reply_to(frame, status, response).to_text())
    }

    /// The replies to one frame.
    fn handle(&self, frame: &Frame, out: &mpsc::UnboundedSender<Message>) -> Vec<Message> {
        let msg = match WorkerMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => {
                return vec![Self::reply(
                    frame,
                    ReplyStatus::Error,
                    json!({"reason": e.to_string()}),
                )];
            }
        };
        let errors = self.mode() == Mode::Errors;
        match msg {
            WorkerMessage::Heartbeat if self.mode() == Mode::NoHeartbeat => vec![],
            WorkerMessage::Heartbeat => vec![Self::reply(frame, ReplyStatus::Ok, json!({}))],
            WorkerMessage::Leave { .. } => vec![Self::reply(frame, ReplyStatus::Ok, json!({}))],
            WorkerMessage::QueueJoin(join) => {
                let mut s = self.state.lock().unwrap();
                s.queue_joins.push(join);
                s.queue_pushers.push(out.clone());
                vec![Self::reply(frame, ReplyStatus::Ok, json!({}))]
            }
            WorkerMessage::Claim(c) => {
                if errors {
                    return vec![Self::reply(
                        frame,
                        ReplyStatus::Error,
                        ErrorsReply::field("demand", "database unavailable").to_value(),
                    )];
                }
                let mut s = self.state.lock().unwrap();
                s.claims += 1;
                let mut runs = Vec::new();
                while runs.len() < c.demand as usize {
                    let Some(r) = s.queue.pop_front() else { break };
                    let token = if s.fast_tokens {
                        "unsigned".to_string()
                    } else {
                        self.signer.sign(&RunClaims::new(&r.id, 600)).unwrap()
                    };
                    runs.push(json!({"id": r.id, "token": token}));
                }
                vec![Self::reply(frame, ReplyStatus::Ok, json!({ "runs": runs }))]
            }
            WorkerMessage::RunJoin { run_id, join } => {
                let fast = self.state.lock().unwrap().fast_tokens;
                let ok = fast
                    || self
                        .signer
                        .verifier()
                        .unwrap()
                        .verify(&join.token, Some(&run_id))
                        .is_ok();
                if ok {
                    vec![Self::reply(frame, ReplyStatus::Ok, json!({}))]
                } else {
                    vec![Self::reply(
                        frame,
                        ReplyStatus::Error,
                        ReasonReply::new(ReasonReply::UNAUTHORIZED).to_value(),
                    )]
                }
            }
            WorkerMessage::Run { run_id, event } => {
                if errors {
                    return vec![Self::reply(
                        frame,
                        ReplyStatus::Error,
                        ErrorsReply::field("run", "database unavailable").to_value(),
                    )];
                }
                if !matches!(
                    event,
                    RunEvent::FetchPlan | RunEvent::FetchDataclip(_) | RunEvent::FetchCredential(_)
                ) {
                    let mut s = self.state.lock().unwrap();
                    if s.unmatched > 0 {
                        s.unmatched -= 1;
                        return vec![Self::reply(
                            frame,
                            ReplyStatus::Error,
                            ReasonReply::new(ReasonReply::UNMATCHED_TOPIC).to_value(),
                        )];
                    }
                    if let Some((name, n)) = &mut s.transient
                        && *name == event.name()
                        && *n > 0
                    {
                        *n -= 1;
                        s.transient_sent += 1;
                        return vec![Self::reply(
                            frame,
                            ReplyStatus::Error,
                            ErrorsReply::field("server", "internal error, retry later").to_value(),
                        )];
                    }
                    if let Some(seq) = event.seq()
                        && s.enforce_seq
                    {
                        if let Some((name, back)) = s.rewind.clone()
                            && name == event.name()
                        {
                            s.rewind = None;
                            let expected = seq.saturating_sub(back).max(1);
                            s.last_seq.insert(run_id.clone(), expected - 1);
                        }
                        let last = s.last_seq.get(&run_id).copied().unwrap_or(0);
                        if seq > last + 1 {
                            return vec![Self::reply(
                                frame,
                                ReplyStatus::Error,
                                ErrorsReply::expected_seq(last + 1).to_value(),
                            )];
                        }
                        s.last_seq.insert(run_id.clone(), last.max(seq));
                    }
                }
                let run = {
                    let s = self.state.lock().unwrap();
                    s.runs.iter().find(|r| r.id == run_id).cloned()
                };
                let Some(run) = run else {
                    return vec![Self::reply(
                        frame,
                        ReplyStatus::Error,
                        ReasonReply::new(ReasonReply::NOT_FOUND).to_value(),
                    )];
                };
                let reply = match &event {
                    RunEvent::FetchPlan => Self::reply(frame, ReplyStatus::Ok, run.plan.clone()),
                    RunEvent::FetchDataclip(_) => {
                        let body = run.dataclip.clone().unwrap_or(Value::Null);
                        let bytes = BinaryReply {
                            join_ref: frame.join_ref.clone().unwrap_or_default(),
                            msg_ref: frame.msg_ref.clone().unwrap_or_default(),
                            topic: frame.topic.clone(),
                            status: "ok".into(),
                            payload: serde_json::to_vec(&body).unwrap(),
                        }
                        .encode()
                        .unwrap();
                        Message::binary(bytes)
                    }
                    RunEvent::FetchCredential(f) => {
                        match run.credentials.iter().find(|(id, _)| *id == f.id) {
                            Some((_, c)) => Self::reply(frame, ReplyStatus::Ok, c.clone()),
                            None => Self::reply(
                                frame,
                                ReplyStatus::Error,
                                ErrorsReply::field("id", "Credential not found!").to_value(),
                            ),
                        }
                    }
                    RunEvent::StepStart(s) => {
                        Self::reply(frame, ReplyStatus::Ok, json!({"step_id": s.step_id}))
                    }
                    RunEvent::StepComplete(s) => {
                        Self::reply(frame, ReplyStatus::Ok, json!({"step_id": s.step_id}))
                    }
                    RunEvent::RunLog(_) => Self::reply(
                        frame,
                        ReplyStatus::Ok,
                        json!({"log_line_id": uuid::Uuid::new_v4().to_string()}),
                    ),
                    _ => Self::reply(frame, ReplyStatus::Ok, Value::Null),
                };
                if !matches!(
                    event,
                    RunEvent::FetchPlan | RunEvent::FetchDataclip(_) | RunEvent::FetchCredential(_)
                ) {
                    self.state.lock().unwrap().events.push(Recorded {
                        run_id: run_id.clone(),
                        event,
                    });
                    self.changed.notify_waiters();
                }
                vec![reply]
            }
        }
    }
}

/// A one-job run: trigger → job-A (with credential `c`), input dataclip `d`.
pub fn one_job_run(id: &str, body: &str) -> TestRun {
    TestRun {
        id: id.to_string(),
        plan: json!({
            "id": id,
            "dataclip_id": "d",
            "starting_node_id": "trigger-1",
            "triggers": [{"id": "trigger-1", "type": "webhook"}],
            "edges": [{"id": "e1", "source_trigger_id": "trigger-1", "target_job_id": "job-A", "condition": "always", "enabled": true}],
            "jobs": [{"id": "job-A", "name": "A", "adaptor": "@openfn/language-common@3.3.4", "credential_id": "c", "body": body}],
            "options": {"run_timeout_ms": 10000}
        }),
        dataclip: Some(json!({"data": {"x": 1}})),
        credentials: vec![("c".into(), json!({"user": "u", "password": "s3cret-pw"}))],
    }
}
