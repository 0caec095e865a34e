//! Connecting to SQLite or PostgreSQL, and the one connection type, [`Conn`],
//! that every query in the store is written against.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection};

use crate::pg_batcher::PgBatcher;
use crate::snapshot_jobs::SnapshotJobs;
use crate::writer::SqliteWriter;
use crate::{Result, StoreError};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL, `synchronous=FULL`), single node.
    Sqlite,
    /// PostgreSQL, possibly shared by several `gabbro serve` nodes.
    Postgres,
}

/// A borrowed database connection of either kind. Queries are written once
/// with the [`exec!`](crate::exec), [`fetch_all!`](crate::fetch_all), … macros
/// and run on whichever variant this is.
pub enum Conn<'c> {
    /// An SQLite connection (the writer's, inside its transaction, or a reader).
    Sqlite(&'c mut SqliteConnection),
    /// A PostgreSQL connection (inside a transaction for writes).
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// A shorter-lived copy of this borrow, so a `Conn` can be used for many
    /// statements (the query macros call this).
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }

    /// Which database this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// `sqlite` on SQLite, `postgres` on PostgreSQL: for the few statements
    /// whose dialects differ.
    pub fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Conn::Sqlite(_) => sqlite,
            Conn::Postgres(_) => postgres,
        }
    }
}

/// A connection checked out of the read pool; [`PooledConn::reborrow`] gives
/// the [`Conn`] the query macros take.
pub enum PooledConn {
    /// From the SQLite reader pool.
    Sqlite(PoolConnection<Sqlite>),
    /// From the PostgreSQL pool.
    Postgres(PoolConnection<Postgres>),
}

impl PooledConn {
    /// The connection as a [`Conn`].
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Sqlite(c) => Conn::Sqlite(c),
            PooledConn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// The pools of a store.
#[derive(Clone)]
pub enum Db {
    /// SQLite: readers in the pool; all writes go through the group-commit
    /// writer.
    Sqlite(SqlitePool),
    /// PostgreSQL: one pool for reads and writes.
    Postgres(PgPool),
}

/// The persistence layer: a database and, on SQLite, its single writer.
/// Cheap to clone (pools and a channel sender).
#[derive(Clone)]
pub struct Store {
    db: Db,
    writer: Option<SqliteWriter>,
    pg_ingest: Option<PgBatcher>,
    snapshot_jobs: Arc<SnapshotJobs>,
}

/// Options for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Maximum pooled connections (SQLite readers, or PostgreSQL connections).
    pub max_connections: u32,
    /// Most operations the SQLite writer packs into one transaction.
    pub max_batch: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_connections: 16,
            max_batch: 1024,
        }
    }
}

/// The operation [`Store::write`] runs inside a transaction.
pub type WriteOp<T> =
    Box<dyn for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T>> + Send + 'static>;

impl Store {
    /// Connects to `sqlite://PATH` (file created if missing, WAL,
    /// `synchronous=FULL`, foreign keys on, 5 s busy timeout, temporary
    /// storage in memory) or
    /// `postgres://…`, and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, ConnectOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    pub async fn connect_with(url: &str, opts: ConnectOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let conn_opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
                // Statement journals (the writer's per-operation savepoints)
                // in memory rather than temporary files: they cost 6% of the
                // orchestrator's CPU while the worker drained the queue.
                .pragma("temp_store", "MEMORY");
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections.max(1))
                // No ping per acquire: see the PostgreSQL pool below.
                .test_before_acquire(false)
                .connect_with(conn_opts.clone())
                .await?;
            migrator().run(&pool).await?;
            let writer = SqliteWriter::start(conn_opts, opts.max_batch).await?;
            Ok(Store {
                db: Db::Sqlite(pool),
                writer: Some(writer),
                pg_ingest: None,
                snapshot_jobs: Arc::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let conn_opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections.max(1))
                // sqlx pings every connection it hands out by default: a
                // round trip before each read and each transaction. A
                // connection that died (a database restart) fails its first
                // statement instead, which every caller already treats as a
                // transient outage (retried; workers are told to retry), and
                // sqlx closes it.
                .test_before_acquire(false)
                .connect_with(conn_opts)
                .await?;
            migrator().run(&pool).await?;
            Ok(Store {
                pg_ingest: Some(PgBatcher::start(pool.clone())),
                db: Db::Postgres(pool),
                writer: None,
                snapshot_jobs: Arc::default(),
            })
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// The PostgreSQL ingest batcher, if this store runs on PostgreSQL.
    pub(crate) fn pg_batcher(&self) -> Option<&PgBatcher> {
        self.pg_ingest.as_ref()
    }

    /// The SQLite writer, if this store runs on SQLite.
    pub(crate) fn sqlite_writer(&self) -> Option<&SqliteWriter> {
        self.writer.as_ref()
    }

    /// The job ids of snapshots read so far (shared by clones).
    pub(crate) fn snapshot_jobs(&self) -> Arc<SnapshotJobs> {
        self.snapshot_jobs.clone()
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The pools, for what the store does not wrap (e.g. PostgreSQL
    /// `LISTEN`).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A pooled connection for reads. On SQLite never write through it: all
    /// writes go through [`Store::write`] (one writer, group commit).
    pub async fn read(&self) -> Result<PooledConn> {
        Ok(match &self.db {
            Db::Sqlite(p) => PooledConn::Sqlite(p.acquire().await?),
            Db::Postgres(p) => PooledConn::Postgres(p.acquire().await?),
        })
    }

    /// Runs `op` in a write transaction and returns once it is durably
    /// committed (or failed and rolled back: all of `op` or nothing).
    ///
    /// On SQLite `op` joins the group-commit writer's next batch: many
    /// operations share one `BEGIN IMMEDIATE … COMMIT`, each inside its own
    /// savepoint, so one failing operation rolls back only itself. `op` must
    /// therefore not begin or commit transactions itself, and should be
    /// short (it holds the write lock for everyone). On PostgreSQL it runs
    /// in its own transaction on a pooled connection.
    pub async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        match (&self.db, &self.writer) {
            (Db::Sqlite(_), Some(w)) => w.submit(Box::new(op)).await,
            (Db::Postgres(p), _) => {
                let mut tx = p.begin().await?;
                let out = op(Conn::Postgres(&mut tx)).await;
                match out {
                    Ok(v) => {
                        tx.commit().await?;
                        Ok(v)
                    }
                    Err(e) => {
                        // Dropping the transaction rolls it back; do it
                        // explicitly so the connection returns clean.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
            (Db::Sqlite(_), None) => Err(StoreError::WriterGone),
        }
    }

    /// Closes the pools and stops the writer (after it finished what it was
    /// given).
    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.stop().await;
        }
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// The migrations in `crates/store/migrations`, embedded in the binary; one
/// portable set for both databases.
pub fn migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}
