//! SQLite group commit: one task owns the only write connection and packs
//! every pending write operation into one `BEGIN IMMEDIATE … COMMIT`.
//!
//! With `synchronous=FULL` each commit costs an fsync; while one batch is
//! being committed the next requests queue up in the channel and are all
//! committed by the next fsync, so throughput grows with load while every
//! caller still hears back only after its write is on disk. Each operation
//! runs inside its own savepoint, so a failing one is rolled back alone and
//! the rest of the batch commits. The writer carries any write (webhook
//! ingest, claims, ledger events, provisioning): it takes boxed closures.

use futures_util::future::BoxFuture;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::db::WriteOp;
use crate::ingest_batch::ingest_group;
use crate::{Conn, Ingested, Result, StoreError, WebhookIngest};

/// Runs the operation in the open transaction; returns whether it succeeded
/// and what to do once the batch's commit outcome is known.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Done> + Send>;
/// Whether the operation succeeded, and its reply.
type Done = (bool, Reply);
/// Called with the commit's outcome (`Err` = message of the commit error)
/// to deliver an operation's result.
type Reply = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

enum Msg {
    Job(Job),
    /// Webhook ingests are data, not closures, so the writer can insert all
    /// of a batch's ingests with a few multi-row statements.
    Ingest(WebhookIngest, oneshot::Sender<Result<Ingested>>),
    Stop(oneshot::Sender<()>),
}

enum Item {
    Job(Job),
    Ingest(WebhookIngest, oneshot::Sender<Result<Ingested>>),
}

/// Handle to the writer task.
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl SqliteWriter {
    /// Opens the write connection and starts the task.
    pub(crate) async fn start(opts: SqliteConnectOptions, max_batch: usize) -> Result<Self> {
        let conn = opts.connect().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx, max_batch.max(1)));
        Ok(SqliteWriter { tx })
    }

    /// Queues `op` for the next batch and waits for its durable outcome.
    pub(crate) async fn submit<T: Send + 'static>(&self, op: WriteOp<T>) -> Result<T> {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn: &mut SqliteConnection| {
            Box::pin(async move {
                let out = op(Conn::Sqlite(conn)).await;
                let ok = out.is_ok();
                let done: Reply = Box::new(move |commit| {
                    let reply = match commit {
                        Ok(()) => out,
                        // The operation's own error explains more than the
                        // commit's, and it was rolled back either way.
                        Err(_) if out.is_err() => out,
                        Err(msg) => Err(StoreError::Commit(msg)),
                    };
                    let _ = reply_tx.send(reply);
                });
                (ok, done)
            })
        });
        self.tx
            .send(Msg::Job(job))
            .map_err(|_| StoreError::WriterGone)?;
        reply_rx.await.map_err(|_| {
            StoreError::Commit("the writer could not begin a transaction or stopped".into())
        })?
    }

    /// Queues a webhook ingest for the next batch's group insert.
    pub(crate) async fn ingest(&self, req: WebhookIngest) -> Result<Ingested> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ingest(req, tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| {
            StoreError::Commit("the writer could not begin a transaction or stopped".into())
        })?
    }

    /// Asks the task to finish the queued work and stop.
    pub(crate) async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Msg>, max_batch: usize) {
    let mut stop: Option<oneshot::Sender<()>> = None;
    while stop.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Vec::new();
        let mut push = |m: Msg, batch: &mut Vec<Item>| match m {
            Msg::Job(j) => batch.push(Item::Job(j)),
            Msg::Ingest(r, tx) => batch.push(Item::Ingest(r, tx)),
            Msg::Stop(s) => stop = Some(s),
        };
        push(first, &mut batch);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Stop(s)) => {
                    push(Msg::Stop(s), &mut batch);
                    break;
                }
                Ok(m) => push(m, &mut batch),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, batch).await;
        }
    }
    let _ = conn.close().await;
    if let Some(s) = stop {
        let _ = s.send(());
    }
}

async fn commit_batch(conn: &mut SqliteConnection, batch: Vec<Item>) {
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        let msg = e.to_string();
        tracing::error!(error = %msg, "sqlite writer could not begin a transaction");
        // Dropping the items unrun closes their reply channels: each caller
        // gets a `Commit` error and nothing was written.
        drop(batch);
        return;
    }
    let mut dones: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut items = batch.into_iter().peekable();
    while let Some(item) = items.next() {
        match item {
            Item::Job(job) => {
                // Savepoints nest: each operation opens one and a failing
                // one rolls back to its own. They are not released one by
                // one (COMMIT releases them all), saving a round trip.
                if let Err(e) = sqlx::query("SAVEPOINT op").execute(&mut *conn).await {
                    tracing::error!(error = %e, "sqlite writer savepoint failed");
                }
                let (ok, done) = job(&mut *conn).await;
                if !ok {
                    let _ = sqlx::query("ROLLBACK TO SAVEPOINT op")
                        .execute(&mut *conn)
                        .await;
                }
                dones.push(done);
            }
            Item::Ingest(req, tx) => {
                // This ingest and every ingest right after it: one group.
                let mut reqs = vec![req];
                let mut replies = vec![tx];
                while let Some(Item::Ingest(..)) = items.peek() {
                    if let Some(Item::Ingest(r, t)) = items.next() {
                        reqs.push(r);
                        replies.push(t);
                    }
                }
                let results = ingest_group(&mut Conn::Sqlite(&mut *conn), reqs).await;
                for (result, reply) in results.into_iter().zip(replies) {
                    dones.push(Box::new(move |commit| {
                        let _ = reply.send(match commit {
                            Ok(()) => result,
                            Err(_) if result.is_err() => result,
                            Err(msg) => Err(StoreError::Commit(msg)),
                        });
                    }));
                }
            }
        }
    }
    let outcome = match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "sqlite writer commit failed");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(msg)
        }
    };
    for done in dones {
        done(outcome.clone());
    }
}
