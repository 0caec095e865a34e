//! Persistence on SQLite and PostgreSQL: migrations, the run queue, the run
//! ledger.
//!
//! # How to write store code (both databases, one query)
//!
//! * Open with [`Store::connect`] (`sqlite://PATH` or `postgres://…`); it
//!   runs the migrations in `migrations/` (portable SQL, one set for both).
//! * **Reads**: `let mut c = store.read().await?;` then use the macros on
//!   `c` — [`fetch_all!`], [`fetch_optional!`], [`scalar!`], [`scalars!`],
//!   [`exec!`]. Each expands to a match over [`Conn`], the same SQL and binds
//!   on both databases. Use `$1, $2, …` placeholders (SQLite accepts them).
//! * **Writes**: always through [`Store::write`], which runs a closure in a
//!   transaction and returns after a durable commit. On SQLite that closure
//!   joins the group-commit writer's batch (one `BEGIN IMMEDIATE` for many
//!   operations, a savepoint each), so it must not begin/commit itself and
//!   should not hold the lock long; on PostgreSQL it gets its own
//!   transaction.
//!
//!   ```ignore
//!   let id = store.write(move |mut c| Box::pin(async move {
//!       let now = gabbro_store::now_us();
//!       gabbro_store::exec!(c, "INSERT INTO projects (id, name, inserted_at, updated_at)
//!                               VALUES ($1, $2, $3, $3)", id.clone(), name, now)?;
//!       Ok(id)
//!   })).await?;
//!   ```
//! * Rows: `#[derive(sqlx::FromRow)]` structs with `String`, `i64` (BIGINT:
//!   timestamps in µs), `i32` (INTEGER), `bool` (BOOLEAN) and `Option`s —
//!   these decode on both. JSON columns are TEXT: store and return strings,
//!   never re-encode bodies.
//! * Dialect differences: branch on [`Conn::backend`] or use
//!   [`Conn::pick`]`("sqlite sql", "postgres sql")`. Known ones: `FOR UPDATE
//!   SKIP LOCKED` (PostgreSQL only; SQLite's writer is already exclusive),
//!   `INSERT … ON CONFLICT DO NOTHING` works on both.
//! * Time: [`now_us`] (this machine) or [`db_now_us`] (the database clock on
//!   PostgreSQL — use it for anything compared across nodes: leases, cron).
//! * Dynamic SQL strings must be wrapped in `sqlx::AssertSqlSafe(…)`;
//!   `&'static str` literals need nothing.
//! * Tests: [`testing::TestDb`] makes a fresh SQLite file or PostgreSQL
//!   database per test (fails if PostgreSQL is unreachable).

pub mod cron;
mod db;
mod dynamic;
mod error;
mod ingest;
mod ingest_batch;
mod janitor;
mod ledger;
mod macros;
mod pg_batcher;
pub mod provision;
pub mod queue;
mod reads;
mod retry;
mod snapshot_jobs;
pub mod testing;
mod time;
mod users;
mod vault;
mod writer;

pub use db::{Backend, Conn, ConnectOptions, Db, PooledConn, Store, WriteOp, migrator};
pub use error::{Result, StoreError};
pub use ingest::{Ingested, WebhookIngest};
pub use janitor::{JanitorReport, LeaseConfig};
pub use ledger::{Applied, LedgerEvent, NewLogLine, RunComplete, StepComplete, StepStart};
pub use queue::{ClaimRequest, ClaimedRun, RUN_AVAILABLE_CHANNEL};
pub use reads::{
    CredentialRow, DataclipRow, LogLineRow, Page, ProjectRow, RunDetail, RunRow, StepRow,
    WorkOrderDetail, WorkOrderFilter, WorkOrderRow, WorkflowRow,
};
pub use retry::RerunOutcome;
pub use time::{db_now_us, now_us, parse_protocol_timestamp};
pub use users::{ADMIN_EMAIL, NewToken, User};
pub use vault::Vault;

/// A new random id (UUID v7: time-ordered, so B-tree inserts stay local).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
