//! One worker's socket: reads frames, answers heartbeats, routes each frame
//! to its topic, writes replies from one writer task.
//!
//! Like Phoenix, every joined `run:<id>` channel is its own task with its own
//! inbox, so a run's events are applied strictly in order while runs and
//! claims proceed in parallel. A new join on a topic replaces the channel
//! (join, leave, join again within a millisecond works: each join gets a
//! fresh task).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use gabbro_protocol::frame::{HEARTBEAT, PHOENIX_TOPIC, PHX_JOIN, PHX_LEAVE};
use gabbro_protocol::queue::{CLAIM, QUEUE_TOPIC};
use gabbro_protocol::{Frame, ReasonReply, WorkerClaims, run_id_of};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Inner;
use super::replies::Outbox;
use super::{queue_channel, run_channel};

/// Who is on the other end, for every task of the connection.
#[derive(Clone)]
pub(crate) struct Peer {
    pub ctx: Arc<Inner>,
    pub worker_id: String,
    pub out: Outbox,
}

pub(crate) async fn serve(ctx: Arc<Inner>, claims: WorkerClaims, ws: WebSocket) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            // Whatever is already queued goes out with this frame in one
            // flush: one write for a burst of replies, not one per frame.
            let mut ok = sink.feed(m).await.is_ok();
            while ok && let Ok(more) = rx.try_recv() {
                ok = sink.feed(more).await.is_ok();
            }
            if !ok || sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let peer = Peer {
        ctx,
        worker_id: claims.worker_id.clone(),
        out: Outbox::new(tx),
    };
    tracing::debug!(worker_id = %peer.worker_id, "worker connected");
    let listed_as = peer.ctx.workers.connect(&peer.worker_id);
    let mut conn = Connection {
        peer,
        listed_as,
        queue: None,
        channels: HashMap::new(),
        listed: HashSet::new(),
        last_touch: None,
    };
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(text)) => conn.on_text(text.as_str()),
            Ok(Message::Binary(_)) => conn.malformed("binary frames are not accepted from workers"),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
    tracing::debug!(worker_id = %conn.peer.worker_id, "worker disconnected");
    conn.peer.ctx.workers.disconnect(conn.listed_as);
    if let Some(q) = conn.queue.take() {
        q.wake.abort();
    }
    conn.channels.clear();
    // Drop the outbox's receiver: claims finishing now see a dead socket and
    // release their runs.
    writer.abort();
}

struct QueueJoined {
    wake: JoinHandle<()>,
    /// Bumped on each claim (see `wake::coalesce`).
    claims: tokio::sync::watch::Sender<u64>,
    token_alg: gabbro_protocol::RunTokenAlg,
}

struct Connection {
    peer: Peer,
    /// This connection's key in the server's list of connected workers.
    listed_as: u64,
    queue: Option<QueueJoined>,
    /// Joined run channels: topic → the channel task's inbox.
    channels: HashMap<String, mpsc::UnboundedSender<Frame>>,
    /// Runs the worker listed in `active_runs` when it last joined
    /// `worker:queue` and has not left the channel of since.
    listed: HashSet<String>,
    last_touch: Option<Instant>,
}

impl Connection {
    fn on_text(&mut self, text: &str) {
        let frame = match Frame::parse(text) {
            Ok(f) => f,
            Err(e) => return self.malformed_text(text, &e.to_string()),
        };
        match frame.topic.as_str() {
            PHOENIX_TOPIC => self.on_phoenix(&frame),
            QUEUE_TOPIC => self.on_queue(frame),
            topic => match run_id_of(topic) {
                Some(_) => self.on_run(frame),
                None => {
                    self.peer.out.reason(&frame, ReasonReply::UNMATCHED_TOPIC);
                }
            },
        }
    }

    fn on_phoenix(&mut self, frame: &Frame) {
        if frame.event != HEARTBEAT {
            self.peer.out.error(
                frame,
                json!({ "reason": format!("unknown event {:?}", frame.event) }),
            );
            return;
        }
        self.peer.out.ok(frame, json!({}));
        self.touch_leases();
    }

    /// The runs this connection holds: its joined run channels and the runs
    /// its worker listed in `active_runs`.
    fn held_runs(&self) -> Vec<String> {
        let joined = self.channels.keys().filter_map(|t| run_id_of(t));
        let mut held: HashSet<String> = joined.map(str::to_string).collect();
        held.extend(self.listed.iter().cloned());
        held.into_iter().collect()
    }

    /// The worker is alive: refresh the lease of every run this connection
    /// holds (not every run of its worker id: a restarted worker keeps its
    /// id), at most once per `lease_touch_every`.
    fn touch_leases(&mut self) {
        let every = self.peer.ctx.settings.lease_touch_every;
        if self.last_touch.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_touch = Some(Instant::now());
        let store = self.peer.ctx.store.clone();
        let worker_id = self.peer.worker_id.clone();
        let held = self.held_runs();
        tokio::spawn(async move {
            if let Err(e) = store.heartbeat(&worker_id, held).await {
                tracing::warn!(error = %e, "cannot refresh run leases");
            }
        });
    }

    fn on_queue(&mut self, frame: Frame) {
        match frame.event.as_str() {
            PHX_JOIN => {
                if let Some(q) = self.queue.take() {
                    q.wake.abort();
                }
                if let Some(capacity) = frame.payload.get("capacity").and_then(Value::as_u64) {
                    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
                    self.peer
                        .ctx
                        .workers
                        .update(self.listed_as, |w| w.capacity = capacity);
                }
                let joined: Vec<String> = self
                    .channels
                    .keys()
                    .filter_map(|t| run_id_of(t))
                    .map(str::to_string)
                    .collect();
                if let Some(j) = queue_channel::join(&self.peer, frame, joined) {
                    if let Some(listed) = j.listed {
                        self.listed = listed.into_iter().collect();
                    }
                    self.queue = Some(QueueJoined {
                        wake: j.task,
                        claims: j.claims,
                        token_alg: j.token_alg,
                    });
                }
            }
            PHX_LEAVE => {
                if let Some(q) = self.queue.take() {
                    q.wake.abort();
                }
                self.peer.out.ok(&frame, json!({}));
            }
            _ if self.queue.is_none() => {
                self.peer.out.reason(&frame, ReasonReply::UNMATCHED_TOPIC);
            }
            CLAIM => {
                if let Some(name) = frame.payload.get("worker_name").and_then(Value::as_str) {
                    let name = name.to_string();
                    self.peer
                        .ctx
                        .workers
                        .update(self.listed_as, |w| w.name = name);
                }
                self.touch_leases();
                let mut token_alg = Default::default();
                if let Some(q) = &self.queue {
                    q.claims.send_modify(|n| *n = n.wrapping_add(1));
                    token_alg = q.token_alg;
                }
                queue_channel::claim(self.peer.clone(), frame, token_alg);
            }
            other => {
                let reply = json!({ "reason": format!("unknown event {other:?}") });
                self.peer.out.error(&frame, reply);
            }
        }
    }

    fn on_run(&mut self, frame: Frame) {
        if frame.event == PHX_JOIN {
            let (tx, rx) = mpsc::unbounded_channel();
            // A new join replaces any channel on the topic (as Phoenix does).
            self.channels.insert(frame.topic.clone(), tx);
            self.count_active_runs();
            tokio::spawn(run_channel::serve(self.peer.clone(), frame, rx));
            return;
        }
        let leave = frame.event == PHX_LEAVE;
        let topic = frame.topic.clone();
        let delivered = match self.channels.get(&topic) {
            Some(tx) => tx.send(frame).map_err(|e| e.0),
            None => Err(frame),
        };
        match delivered {
            Ok(()) => {
                if leave {
                    self.channels.remove(&topic);
                    // Left: the worker is done with the run.
                    if let Some(id) = run_id_of(&topic) {
                        self.listed.remove(id);
                    }
                }
            }
            Err(frame) => {
                self.channels.remove(&topic);
                self.peer.out.reason(&frame, ReasonReply::UNMATCHED_TOPIC);
            }
        }
        self.count_active_runs();
    }

    /// The dashboard's "active runs" of this worker: its open run channels.
    fn count_active_runs(&self) {
        let n = u32::try_from(self.channels.len()).unwrap_or(u32::MAX);
        self.peer
            .ctx
            .workers
            .update(self.listed_as, |w| w.active_runs = n);
    }

    /// A text frame that is not `[join_ref, ref, topic, event, payload]`:
    /// answer on its ref and topic when they can be read, and carry on.
    fn malformed_text(&mut self, text: &str, why: &str) {
        let value: Option<Value> = serde_json::from_str(text).ok();
        let field = |i: usize| {
            value
                .as_ref()
                .and_then(|v| v.get(i))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let topic = field(2).unwrap_or_else(|| PHOENIX_TOPIC.to_string());
        let reply = Frame::reply_to(
            &Frame::new(field(0), field(1), topic, "", Value::Null),
            gabbro_protocol::ReplyStatus::Error,
            json!({ "reason": format!("malformed frame: {why}") }),
        );
        tracing::debug!(why, "malformed frame from worker");
        self.peer.out.send(&reply);
    }

    fn malformed(&mut self, why: &str) {
        self.malformed_text("", why);
    }
}
