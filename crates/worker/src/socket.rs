//! A Phoenix Channels V2 client that never gives up: it (re)connects with
//! backoff forever, sends heartbeats, matches replies to requests (text and
//! binary), hands server pushes to whoever listens, and fails every pending
//! request with [`RequestError::Disconnected`] when a connection ends, so
//! callers can rejoin and retry.
//!
//! Each connection has a generation number. A [`Channel`] (a joined topic)
//! belongs to one generation; once the socket has reconnected, requests on
//! it fail at once and the caller joins again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gabbro_protocol::frame::{PHX_JOIN, PHX_LEAVE};
use gabbro_protocol::{BinaryReply, Frame, Reply, ReplyStatus};
use serde_json::Value;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::backoff::{Backoff, BackoffRange};

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Full websocket URL including `/websocket` and the query parameters.
    pub url: String,
    pub heartbeat: Duration,
    /// Reconnect delays.
    pub backoff: BackoffRange,
    /// Bound on TCP connect + websocket handshake.
    pub connect_timeout: Duration,
}

/// The body of a reply.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyBody {
    Json(Reply),
    /// A binary reply (`fetch:dataclip`): status and raw bytes.
    Binary {
        status: String,
        payload: Vec<u8>,
    },
}

impl ReplyBody {
    pub fn is_ok(&self) -> bool {
        match self {
            ReplyBody::Json(r) => r.status == ReplyStatus::Ok,
            ReplyBody::Binary { status, .. } => status == "ok",
        }
    }

    /// The response as JSON (binary payloads are parsed; unparsable bytes
    /// give a JSON string of their lossy text).
    pub fn response_json(&self) -> Value {
        match self {
            ReplyBody::Json(r) => r.response.clone(),
            ReplyBody::Binary { payload, .. } => serde_json::from_slice(payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned())),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("not connected")]
    Disconnected,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("the worker is shutting down")]
    Shutdown,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum JoinError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("join refused: {0}")]
    Refused(Value),
}

/// A request on the wire whose reply has not been read yet.
pub struct PendingReply {
    rx: oneshot::Receiver<ReplyBody>,
    msg_ref: String,
    inner: Arc<Inner>,
}

impl PendingReply {
    pub async fn wait(self, timeout: Duration) -> Result<ReplyBody, RequestError> {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(body)) => Ok(body),
            // The connection ended and dropped every pending sender.
            Ok(Err(_)) => Err(RequestError::Disconnected),
            Err(_) => {
                self.inner.pending.lock().await.remove(&self.msg_ref);
                Err(RequestError::Timeout(timeout))
            }
        }
    }
}

/// A `phx_join` on the wire whose reply has not been read yet.
struct PendingJoin {
    channel: Channel,
    reply: PendingReply,
}

impl PendingJoin {
    async fn wait(self, timeout: Duration) -> Result<Channel, JoinError> {
        let reply = self.reply.wait(timeout).await?;
        if reply.is_ok() {
            Ok(self.channel)
        } else {
            Err(JoinError::Refused(reply.response_json()))
        }
    }
}

/// A joined topic on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub topic: String,
    pub join_ref: String,
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnState {
    pub generation: u64,
    pub connected: bool,
}

struct Outgoing {
    generation: u64,
    text: String,
}

struct Inner {
    out_tx: mpsc::UnboundedSender<Outgoing>,
    state: watch::Receiver<ConnState>,
    next_ref: AtomicU64,
    pending: Mutex<HashMap<String, oneshot::Sender<ReplyBody>>>,
    pushes: broadcast::Sender<Frame>,
    /// Set once by [`Socket::close`]: stop reconnecting, close the socket.
    closed: watch::Sender<bool>,
}

/// Handle to the client; cheap to clone.
#[derive(Clone)]
pub struct Socket {
    inner: Arc<Inner>,
}

impl Socket {
    /// Start the connection task. It runs until [`Socket::close`].
    pub fn start(config: SocketConfig) -> Socket {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(ConnState {
            generation: 0,
            connected: false,
        });
        let (pushes, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            out_tx,
            state: state_rx,
            next_ref: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            pushes,
            closed: watch::channel(false).0,
        });
        tokio::spawn(connection_loop(config, inner.clone(), out_rx, state_tx));
        Socket { inner }
    }

    /// Changes of connection state (connected, generation).
    pub fn watch_state(&self) -> watch::Receiver<ConnState> {
        let mut rx = self.inner.state.clone();
        rx.borrow_and_update();
        rx
    }

    pub fn state(&self) -> ConnState {
        *self.inner.state.borrow()
    }

    /// Server pushes (frames that are not replies), from every connection.
    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.inner.pushes.subscribe()
    }

    fn next_ref(&self) -> String {
        self.inner
            .next_ref
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// Close the socket for good (after shutdown, once runs are delivered).
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Wait until connected; returns the generation. Fails only once closed.
    pub async fn wait_connected(&self) -> Result<u64, RequestError> {
        let mut state = self.inner.state.clone();
        let mut closed = self.inner.closed.subscribe();
        loop {
            let s = *state.borrow_and_update();
            if s.connected {
                return Ok(s.generation);
            }
            if *closed.borrow_and_update() {
                return Err(RequestError::Shutdown);
            }
            tokio::select! {
                r = state.changed() => if r.is_err() { return Err(RequestError::Shutdown) },
                r = closed.changed() => if r.is_err() { return Err(RequestError::Shutdown) },
            }
        }
    }

    /// Send a frame and wait for its reply, on connection `generation`.
    async fn request_frame(
        &self,
        generation: u64,
        frame: Frame,
        timeout: Duration,
    ) -> Result<ReplyBody, RequestError> {
        self.start_frame(generation, frame)
            .await?
            .wait(timeout)
            .await
    }

    /// Send a frame now; its reply is awaited later (pipelining).
    async fn start_frame(
        &self,
        generation: u64,
        frame: Frame,
    ) -> Result<PendingReply, RequestError> {
        let state = self.state();
        if !state.connected || state.generation != generation {
            return Err(RequestError::Disconnected);
        }
        let msg_ref = frame.msg_ref.clone().unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().await.insert(msg_ref.clone(), tx);
        let sent = self.inner.out_tx.send(Outgoing {
            generation,
            text: frame.to_text(),
        });
        if sent.is_err() {
            self.inner.pending.lock().await.remove(&msg_ref);
            return Err(RequestError::Shutdown);
        }
        Ok(PendingReply {
            rx,
            msg_ref,
            inner: self.inner.clone(),
        })
    }

    /// Push `event` on a joined channel without waiting for the reply.
    pub async fn start_request(
        &self,
        channel: &Channel,
        event: &str,
        payload: Value,
    ) -> Result<PendingReply, RequestError> {
        let frame = Frame::new(
            Some(channel.join_ref.clone()),
            Some(self.next_ref()),
            channel.topic.clone(),
            event,
            payload,
        );
        self.start_frame(channel.generation, frame).await
    }

    /// Join `topic` and send `event` on it at once, without waiting for the
    /// join's reply: one round trip instead of two. Phoenix handles a
    /// topic's frames in order, so the event is handled after the join; if
    /// the join is refused, the event is answered "unmatched topic" and that
    /// answer is dropped here. The event's own outcome comes back beside the
    /// channel.
    pub async fn join_with(
        &self,
        topic: &str,
        payload: Value,
        event: &str,
        event_payload: Value,
        timeout: Duration,
    ) -> Result<(Channel, Result<ReplyBody, RequestError>), JoinError> {
        let join = self.start_join(topic, payload).await?;
        let first = self
            .start_request(&join.channel, event, event_payload)
            .await;
        let channel = join.wait(timeout).await?;
        let first = match first {
            Ok(pending) => pending.wait(timeout).await,
            Err(e) => Err(e),
        };
        Ok((channel, first))
    }

    /// Join `topic` on the current connection.
    pub async fn join(
        &self,
        topic: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Channel, JoinError> {
        self.start_join(topic, payload).await?.wait(timeout).await
    }

    /// Send a `phx_join` for `topic` on the current connection; the channel
    /// is ours once [`PendingJoin::wait`] says the join was accepted.
    async fn start_join(&self, topic: &str, payload: Value) -> Result<PendingJoin, JoinError> {
        let generation = self.wait_connected().await?;
        let join_ref = self.next_ref();
        let frame = Frame::new(
            Some(join_ref.clone()),
            Some(join_ref.clone()),
            topic,
            PHX_JOIN,
            payload,
        );
        let reply = self.start_frame(generation, frame).await?;
        Ok(PendingJoin {
            channel: Channel {
                topic: topic.to_string(),
                join_ref,
                generation,
            },
            reply,
        })
    }

    /// Push `event` on a joined channel and wait for the reply.
    pub async fn request(
        &self,
        channel: &Channel,
        event: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<ReplyBody, RequestError> {
        let msg_ref = self.next_ref();
        let frame = Frame::new(
            Some(channel.join_ref.clone()),
            Some(msg_ref),
            channel.topic.clone(),
            event,
            payload,
        );
        self.request_frame(channel.generation, frame, timeout).await
    }

    /// Leave a channel without waiting for the reply (as OpenFn's client).
    pub fn leave(&self, channel: &Channel) {
        let frame = Frame::new(
            Some(channel.join_ref.clone()),
            Some(self.next_ref()),
            channel.topic.clone(),
            PHX_LEAVE,
            Value::Object(Default::default()),
        );
        let _ = self.inner.out_tx.send(Outgoing {
            generation: channel.generation,
            text: frame.to_text(),
        });
    }

    /// Is `channel` still on the live connection?
    pub fn is_current(&self, channel: &Channel) -> bool {
        let s = self.state();
        s.connected && s.generation == channel.generation
    }
}

/// Connect, serve, reconnect — until shutdown.
async fn connection_loop(
    config: SocketConfig,
    inner: Arc<Inner>,
    mut out_rx: mpsc::UnboundedReceiver<Outgoing>,
    state_tx: watch::Sender<ConnState>,
) {
    let mut backoff = Backoff::new(config.backoff);
    let mut generation = 0u64;
    loop {
        if *inner.closed.borrow() {
            return;
        }
        let connect = tokio::time::timeout(
            config.connect_timeout,
            // Nagle off: frames are small and pipelined; with Nagle each one waits
            // for the peer's delayed ACK (~40 ms on Linux).
            tokio_tungstenite::connect_async_with_config(config.url.as_str(), None, true),
        );
        let ws = tokio::select! {
            r = connect => r,
            _ = closed(&inner) => return,
        };
        let ws = match ws {
            Ok(Ok((ws, _response))) => ws,
            Ok(Err(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?d, "cannot connect to the orchestrator");
                sleep_or_closed(d, &inner).await;
                continue;
            }
            Err(_) => {
                let d = backoff.next_delay();
                tracing::warn!(retry_in = ?d, "connecting to the orchestrator timed out");
                sleep_or_closed(d, &inner).await;
                continue;
            }
        };
        generation += 1;
        let started = tokio::time::Instant::now();
        tracing::info!(generation, "connected to the orchestrator");
        let _ = state_tx.send(ConnState {
            generation,
            connected: true,
        });
        let reason = serve_connection(ws, generation, &config, &inner, &mut out_rx).await;
        let _ = state_tx.send(ConnState {
            generation,
            connected: false,
        });
        // Fail everything that waited on this connection.
        inner.pending.lock().await.clear();
        if started.elapsed() > Duration::from_secs(10) {
            backoff.reset();
        }
        if matches!(reason, ConnEnd::Closed) {
            return;
        }
        let d = backoff.next_delay();
        tracing::warn!(?reason, retry_in = ?d, "disconnected from the orchestrator");
        sleep_or_closed(d, &inner).await;
    }
}

/// Resolves once [`Socket::close`] was called.
async fn closed(inner: &Inner) {
    let mut rx = inner.closed.subscribe();
    let _ = rx.wait_for(|c| *c).await;
}

async fn sleep_or_closed(d: Duration, inner: &Inner) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = closed(inner) => {}
    }
}

// Read through `Debug` in the disconnect log line.
#[allow(dead_code)]
#[derive(Debug)]
enum ConnEnd {
    Error(String),
    ServerClosed,
    HeartbeatTimeout,
    Closed,
}

async fn serve_connection<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    generation: u64,
    config: &SocketConfig,
    inner: &Inner,
    out_rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> ConnEnd
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await; // the first tick is immediate
    let mut awaiting_heartbeat: Option<String> = None;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let msg = match msg {
                    None => return ConnEnd::ServerClosed,
                    Some(Err(e)) => return ConnEnd::Error(e.to_string()),
                    Some(Ok(m)) => m,
                };
                match msg {
                    Message::Text(text) => match Frame::parse(text.as_str()) {
                        Ok(frame) => {
                            if frame.is_reply() {
                                if awaiting_heartbeat.is_some() && frame.msg_ref == awaiting_heartbeat {
                                    awaiting_heartbeat = None;
                                    continue;
                                }
                                deliver_reply(inner, frame).await;
                            } else {
                                let _ = inner.pushes.send(frame);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, frame = %truncate(text.as_str()), "ignoring a malformed frame"),
                    },
                    Message::Binary(bytes) => match BinaryReply::decode(&bytes) {
                        Ok(r) => {
                            if let Some(tx) = inner.pending.lock().await.remove(&r.msg_ref) {
                                let _ = tx.send(ReplyBody::Binary { status: r.status, payload: r.payload });
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "ignoring a malformed binary frame"),
                    },
                    Message::Close(_) => return ConnEnd::ServerClosed,
                    // Pongs are queued by tungstenite and flushed with our next write.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            _ = closed(inner) => {
                // Flush what is queued (e.g. the queue's phx_leave) first.
                while let Ok(out) = out_rx.try_recv() {
                    if out.generation == generation {
                        let _ = sink.send(Message::text(out.text)).await;
                    }
                }
                let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "shutdown".into() }))).await;
                return ConnEnd::Closed;
            }
            out = out_rx.recv() => {
                let Some(out) = out else {
                    return ConnEnd::Closed;
                };
                // This frame and whatever else is queued for this connection
                // go out with one flush (one write for a pipelined burst).
                let mut written = Ok(());
                for out in std::iter::once(out).chain(std::iter::from_fn(|| out_rx.try_recv().ok())) {
                    if out.generation != generation {
                        continue; // meant for a connection that is gone
                    }
                    written = sink.feed(Message::text(out.text)).await;
                    if written.is_err() {
                        break;
                    }
                }
                let flushed = match written {
                    Ok(()) => sink.flush().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = flushed {
                    return ConnEnd::Error(e.to_string());
                }
            }
            _ = heartbeat.tick() => {
                if awaiting_heartbeat.is_some() {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "heartbeat timeout".into() }))).await;
                    return ConnEnd::HeartbeatTimeout;
                }
                let r = inner.next_ref.fetch_add(1, Ordering::Relaxed).to_string();
                if let Err(e) = sink.send(Message::text(Frame::heartbeat(r.clone()).to_text())).await {
                    return ConnEnd::Error(e.to_string());
                }
                awaiting_heartbeat = Some(r);
            }
        }
    }
}

async fn deliver_reply(inner: &Inner, frame: Frame) {
    let Some(msg_ref) = frame.msg_ref.clone() else {
        return;
    };
    let body = match frame.reply() {
        Ok(r) => r,
        Err(_) => {
            // A reply we cannot read: fail the request as an error reply.
            Reply {
                status: ReplyStatus::Error,
                response: frame.payload.clone(),
            }
        }
    };
    if let Some(tx) = inner.pending.lock().await.remove(&msg_ref) {
        let _ = tx.send(ReplyBody::Json(body));
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
