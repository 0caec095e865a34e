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
use crate::{Conn, Result, StoreError};

/// Runs the operation in the open transaction; returns whether it succeeded
/// and what to do once the batch's commit outcome is known.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Done> + Send>;
/// Called with the commit's outcome (`Err` = message of the commit error).
type Done = (
    bool,
    Box<dyn FnOnce(std::result::Result<(), String>) + Send>,
);

enum Msg {
    Job(Job),
    Stop(oneshot::Sender<()>),
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
                let done: Box<dyn FnOnce(std::result::Result<(), String>) + Send> =
                    Box::new(move |commit| {
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
        match first {
            Msg::Job(j) => batch.push(j),
            Msg::Stop(s) => stop = Some(s),
        }
        while batch.len() < max_batch && stop.is_none() {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop(s)) => stop = Some(s),
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

async fn commit_batch(conn: &mut SqliteConnection, batch: Vec<Job>) {
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        let msg = e.to_string();
        tracing::error!(error = %msg, "sqlite writer could not begin a transaction");
        // Dropping the jobs unrun closes their reply channels: each caller
        // gets a `Commit` error and nothing was written.
        drop(batch);
        return;
    }
    let mut dones = Vec::with_capacity(batch.len());
    for job in batch {
        // Savepoints nest: each operation opens one and a failing one rolls
        // back to its own. They are not released one by one (COMMIT
        // releases them all), which saves a round trip per operation.
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
