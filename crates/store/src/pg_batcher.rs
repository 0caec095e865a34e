//! PostgreSQL ingest batching: webhook ingests queue here and are written
//! in groups — one transaction and three multi-row INSERTs per group
//! ([`crate::ingest_batch`]) — with a few groups in flight at once, so the
//! database does one commit per group instead of one per request.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ingest_batch::ingest_group;
use crate::{Conn, Ingested, Result, StoreError, WebhookIngest};

type Pending = (WebhookIngest, oneshot::Sender<Result<Ingested>>);

/// Most requests in one group.
const MAX_GROUP: usize = 256;
/// Groups committing at once.
const IN_FLIGHT: usize = 4;

/// Handle to the batching task.
#[derive(Clone)]
pub(crate) struct PgBatcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl PgBatcher {
    pub(crate) fn start(pool: PgPool) -> PgBatcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        PgBatcher { tx }
    }

    /// Queues one ingest and waits for its committed result.
    pub(crate) async fn ingest(&self, req: WebhookIngest) -> Result<Ingested> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((req, tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: while all slots commit, requests pile
        // up and the next group is larger.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_group(&pool, group).await;
            drop(permit);
        });
    }
}

async fn commit_group(pool: &PgPool, group: Vec<Pending>) {
    let (reqs, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            for r in replies {
                let _ = r.send(Err(StoreError::Commit(msg.clone())));
            }
            return;
        }
    };
    let results = ingest_group(&mut Conn::Postgres(&mut tx), reqs).await;
    let commit = tx.commit().await.map_err(|e| e.to_string());
    for (result, reply) in results.into_iter().zip(replies) {
        let _ = reply.send(match &commit {
            Ok(()) => result,
            Err(_) if result.is_err() => result,
            Err(msg) => Err(StoreError::Commit(msg.clone())),
        });
    }
}
