//! Persistence on SQLite and PostgreSQL: migrations, the run queue, the run
//! ledger.
