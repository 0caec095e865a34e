//! Shared by the protocol-double tests (included with `#[path]`): an
//! in-process orchestrator serving gabbro's real `/worker` endpoint on a
//! loopback port over a real database, and a Phoenix client that speaks
//! raw frames as OpenFn's worker does.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gabbro_protocol::{BinaryReply, Frame, RunSigner, WorkerToken};
use gabbro_server::worker_socket::{SocketSettings, WorkerSocket};
use gabbro_store::testing::TestDb;
use gabbro_store::{Backend, Store, Vault, WebhookIngest, exec, new_id, now_us};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "double-secret";
pub const WORKER_ID: &str = "eager-wombats-know";

/// One RSA key per test binary (generation takes a moment).
pub fn signer() -> RunSigner {
    static PEM: OnceLock<String> = OnceLock::new();
    let pem = PEM.get_or_init(|| {
        RunSigner::generate(2048)
            .expect("rsa key")
            .private_key_pem()
            .to_string()
    });
    RunSigner::from_private_pem(pem).expect("signer")
}

/// Jobs of the double's workflow, by the names the capture uses.
pub const JOBS: [&str; 4] = ["job-A", "job-B", "job-H", "job-S"];

pub struct Orchestrator {
    pub db: Option<TestDb>,
    pub store: Store,
    pub addr: SocketAddr,
    pub socket: WorkerSocket,
    pub trigger_id: String,
    pub project_id: String,
    /// Job name (as in the capture) → our id.
    pub jobs: Vec<(String, String)>,
    /// The credential the capture calls `c`.
    pub credential_id: String,
    pub credential_body: Value,
    server: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
}

impl Orchestrator {
    pub async fn start(backend: Backend) -> Orchestrator {
        Orchestrator::start_with(backend, SocketSettings::new(SECRET)).await
    }

    /// With the worker socket's settings given (secret: [`SECRET`]).
    pub async fn start_with(backend: Backend, settings: SocketSettings) -> Orchestrator {
        let db = TestDb::new(backend).await.expect("test database");
        let store = db.store.clone();
        let key = Vault::generate_key();
        let vault = Vault::new(&key).expect("vault");
        let credential_body = json!({"user": "user", "password": "pa55word-very-secret"});
        let seeded = seed(&store, &vault, &credential_body).await;
        let socket =
            WorkerSocket::new(store.clone(), vault, signer(), settings).expect("worker socket");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let app = socket.routes();
        let server = tokio::spawn(async move {
            let _ = axum::serve(tcp, app).await;
        });
        let s2 = socket.clone();
        let listener = tokio::spawn(async move { s2.listen_postgres().await });
        Orchestrator {
            db: Some(db),
            store,
            addr,
            socket,
            trigger_id: seeded.trigger_id,
            project_id: seeded.project_id,
            jobs: seeded.jobs,
            credential_id: seeded.credential_id,
            credential_body,
            server,
            listener,
        }
    }

    pub fn job(&self, name: &str) -> String {
        self.jobs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no job {name}"))
    }

    /// A webhook request with `body` on the seeded trigger.
    fn webhook(&self, body: Value) -> WebhookIngest {
        WebhookIngest {
            trigger_id: self.trigger_id.clone(),
            body: body.to_string(),
            request: json!({"method": "POST", "path": "/i/x", "query_params": {}, "headers": {}})
                .to_string(),
            idempotency_key: None,
            options: None,
            queue: None,
        }
    }

    /// A webhook request's work order and run, committed; workers are told.
    pub async fn enqueue(&self, body: Value) -> (String, String) {
        let out = self
            .store
            .ingest_webhook(self.webhook(body))
            .await
            .expect("ingest");
        self.socket.wake_hub().notify();
        (out.run_id, out.dataclip_id)
    }

    /// Enqueues through a second connection to the same database, as
    /// another `gabbro serve` node would: this node's hub is not told.
    pub async fn enqueue_from_other_node(&self, body: Value) -> String {
        let url = self.db.as_ref().expect("db").url.clone();
        let other = Store::connect(&url).await.expect("second node's store");
        let out = other
            .ingest_webhook(self.webhook(body))
            .await
            .expect("ingest");
        other.close().await;
        out.run_id
    }

    pub fn url(&self, token: &str) -> String {
        format!(
            "ws://{}/worker/websocket?token={token}&api_version=1.2&worker_version=1.25.0&vsn=2.0.0",
            self.addr
        )
    }

    pub async fn connect(&self) -> Client {
        let token = WorkerToken::sign(SECRET, WORKER_ID).expect("token");
        Client::connect(&self.url(&token)).await.expect("connect")
    }

    pub async fn run_state(&self, run_id: &str) -> String {
        let mut conn = self.store.read().await.expect("read");
        let mut c = conn.reborrow();
        gabbro_store::scalar!(c, String, "SELECT state FROM runs WHERE id = $1", run_id)
            .expect("query")
            .expect("run exists")
    }

    pub async fn count(&self, sql: &'static str, run_id: &str) -> i64 {
        let mut conn = self.store.read().await.expect("read");
        let mut c = conn.reborrow();
        gabbro_store::scalar!(c, i64, sql, run_id)
            .expect("query")
            .unwrap_or(0)
    }

    pub async fn strings(&self, sql: &'static str, run_id: &str) -> Vec<String> {
        let mut conn = self.store.read().await.expect("read");
        let mut c = conn.reborrow();
        gabbro_store::scalars!(c, String, sql, run_id).expect("query")
    }

    pub async fn stop(mut self) {
        self.server.abort();
        self.listener.abort();
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

struct Seeded {
    project_id: String,
    trigger_id: String,
    jobs: Vec<(String, String)>,
    credential_id: String,
}

/// A project shaped like the capture's plans: trigger → A (credential `c`)
/// → B on success; A → H on failure; A → S on success.
async fn seed(store: &Store, vault: &Vault, credential: &Value) -> Seeded {
    let project_id = new_id();
    let workflow_id = new_id();
    let trigger_id = new_id();
    let credential_id = new_id();
    let snapshot_id = new_id();
    let jobs: Vec<(String, String)> = JOBS.iter().map(|n| (n.to_string(), new_id())).collect();
    let id = |n: &str| {
        jobs.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body_a = "fn(s => { console.log('A sees user', s.configuration.user); return s; })";
    let snapshot = json!({
        "id": workflow_id, "name": "double", "lock_version": 1,
        "jobs": JOBS.iter().map(|n| json!({
            "id": id(n), "name": n, "adaptor": "@openfn/language-common@3.3.4",
            "body": if *n == "job-A" { body_a } else { "fn(s => s)" },
            "project_credential_id": if *n == "job-A" { Some(credential_id.clone()) } else { None },
        })).collect::<Vec<_>>(),
        "triggers": [{"id": trigger_id, "type": "webhook", "enabled": true}],
        "edges": [
            {"id": new_id(), "source_trigger_id": trigger_id, "target_job_id": id("job-A"), "condition_type": "always", "enabled": true},
            {"id": new_id(), "source_job_id": id("job-A"), "target_job_id": id("job-B"), "condition_type": "on_job_success", "enabled": true},
            {"id": new_id(), "source_job_id": id("job-A"), "target_job_id": id("job-H"), "condition_type": "on_job_failure", "enabled": true},
            {"id": new_id(), "source_job_id": id("job-A"), "target_job_id": id("job-S"), "condition_type": "js_expression", "condition_expression": "!state.errors", "enabled": true},
        ],
    })
    .to_string();
    let encrypted = vault.encrypt_json(credential).expect("encrypt");
    let (p, w, t, c, s, j) = (
        project_id.clone(),
        workflow_id.clone(),
        trigger_id.clone(),
        credential_id.clone(),
        snapshot_id,
        jobs.clone(),
    );
    store
        .write(move |mut conn| {
            Box::pin(async move {
                let now = now_us();
                exec!(conn, "INSERT INTO projects (id, name, inserted_at, updated_at) VALUES ($1, $2, $3, $3)",
                    &p, format!("double-{p}"), now)?;
                exec!(conn, "INSERT INTO workflows (id, project_id, name, lock_version, inserted_at, updated_at) VALUES ($1, $2, 'double', 1, $3, $3)",
                    &w, &p, now)?;
                exec!(conn, "INSERT INTO credentials (id, project_id, name, body_encrypted, inserted_at, updated_at) VALUES ($1, $2, 'c', $3, $4, $4)",
                    &c, &p, encrypted, now)?;
                for (name, id) in &j {
                    exec!(conn, "INSERT INTO jobs (id, workflow_id, name, body, inserted_at, updated_at) VALUES ($1, $2, $3, 'fn(s => s)', $4, $4)",
                        id, &w, name, now)?;
                }
                exec!(conn, "INSERT INTO triggers (id, workflow_id, type, inserted_at, updated_at) VALUES ($1, $2, 'webhook', $3, $3)",
                    &t, &w, now)?;
                exec!(conn, "INSERT INTO workflow_snapshots (id, workflow_id, lock_version, body, inserted_at) VALUES ($1, $2, 1, $3, $4)",
                    &s, &w, snapshot, now)?;
                Ok(())
            })
        })
        .await
        .expect("seed");
    Seeded {
        project_id,
        trigger_id,
        jobs,
        credential_id,
    }
}

/// What the server sent.
#[derive(Debug, Clone)]
pub enum Incoming {
    Text(Frame),
    Binary(BinaryReply),
}

impl Incoming {
    pub fn msg_ref(&self) -> Option<String> {
        match self {
            Incoming::Text(f) => f.msg_ref.clone(),
            Incoming::Binary(b) => Some(b.msg_ref.clone()),
        }
    }
}

/// A raw Phoenix V2 client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Pushes and replies read while waiting for another reply.
    pub backlog: Vec<Incoming>,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn connect(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Client {
            ws,
            backlog: Vec::new(),
        })
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_text(frame.to_text()).await;
    }

    /// The next frame from the server (None if the socket closed).
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("server answered in time")?;
            match msg.ok()? {
                Message::Text(t) => {
                    return Some(Incoming::Text(
                        Frame::parse(&t).expect("server frame parses"),
                    ));
                }
                Message::Binary(b) => {
                    return Some(Incoming::Binary(
                        BinaryReply::decode(&b).expect("binary reply decodes"),
                    ));
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Waits for the reply to `msg_ref`, keeping anything else in the backlog.
    pub async fn reply_to(&mut self, msg_ref: &str) -> Incoming {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|m| m.msg_ref().as_deref() == Some(msg_ref) && is_reply(m))
        {
            return self.backlog.remove(i);
        }
        loop {
            let m = self.next().await.expect("socket open");
            if m.msg_ref().as_deref() == Some(msg_ref) && is_reply(&m) {
                return m;
            }
            self.backlog.push(m);
        }
    }

    /// Sends and waits for the reply: `(status, response)` of a text reply.
    pub async fn call(&mut self, frame: &Frame) -> (String, Value) {
        self.send(frame).await;
        let r = frame.msg_ref.clone().expect("frame has a ref");
        match self.reply_to(&r).await {
            Incoming::Text(f) => (
                f.payload["status"].as_str().unwrap_or_default().to_string(),
                f.payload["response"].clone(),
            ),
            Incoming::Binary(b) => (
                b.status,
                Value::String(String::from_utf8_lossy(&b.payload).into()),
            ),
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn is_reply(m: &Incoming) -> bool {
    match m {
        Incoming::Text(f) => f.event == "phx_reply",
        Incoming::Binary(_) => true,
    }
}

pub fn frame(
    join_ref: Option<&str>,
    msg_ref: &str,
    topic: &str,
    event: &str,
    payload: Value,
) -> Frame {
    Frame::new(
        join_ref.map(str::to_string),
        Some(msg_ref.to_string()),
        topic,
        event,
        payload,
    )
}

/// The captured session's lines (meta line skipped).
pub fn captured_lines() -> Vec<Value> {
    let dir = std::env::var("GABBRO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = dir.join("reference/ws-worker-frames.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}
