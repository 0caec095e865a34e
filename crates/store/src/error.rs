//! The store's error type.

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `--db` was neither `sqlite://…` nor `postgres://…`.
    #[error("unsupported database url {0:?}: expected sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// The group-commit writer's transaction failed to commit; the operation
    /// did not happen.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The group-commit writer task is gone (the store is shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A row the caller named does not exist.
    #[error("{what} not found: {id}")]
    NotFound {
        /// What kind of thing (run, step, work order, …).
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The request is well-formed but refused by the rules (an illegal state
    /// transition, a job not in the snapshot, …). `field` and `message` are
    /// Lightning's words, to be answered as `{errors:{field:[message]}}`.
    #[error("{field}: {message}")]
    Rejected {
        /// The field the error is about (e.g. `state`, `job_id`).
        field: &'static str,
        /// The message, as Lightning words it.
        message: String,
    },
    /// The event came from a worker that does not hold the run (its claim
    /// was requeued and the run claimed again, or it never held it).
    #[error("run: is held by another worker")]
    NotHolder,
    /// A gabbro worker's event skipped ahead of the run's sequence; the
    /// worker should resend from `expected`.
    #[error("seq: expected {expected}")]
    SeqGap {
        /// The next seq the run accepts.
        expected: u64,
    },
    /// Encryption or decryption of a secret failed (wrong key, corrupt data).
    #[error("crypto: {0}")]
    Crypto(String),
    /// Stored JSON could not be read or a value could not be encoded.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    /// The same verdict for an event that follows a failed one and is
    /// therefore not applied: refusals stay refusals, outages stay
    /// outages (so the worker retries), anything else is definitive.
    pub fn repeated(&self) -> StoreError {
        match self {
            StoreError::NotHolder => StoreError::NotHolder,
            StoreError::NotFound { what, id } => StoreError::NotFound {
                what,
                id: id.clone(),
            },
            e if e.is_transient() => StoreError::Commit(e.to_string()),
            e => StoreError::rejected("run", e.to_string()),
        }
    }

    /// A [`StoreError::Rejected`] with Lightning's field and message.
    pub fn rejected(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::Rejected {
            field,
            message: message.into(),
        }
    }

    /// A [`StoreError::NotFound`].
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }

    /// True when the failure is the database's state rather than the
    /// request's (a lost connection, a restart, a lock, a full disk, the
    /// writer shutting down): the same request may succeed later, so a
    /// worker is told to send it again. Anything else (a secret that does
    /// not decrypt, stored JSON that does not parse, a constraint) would
    /// fail the same way forever.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Commit(_) | StoreError::WriterGone => true,
            StoreError::Db(e) => sqlx_is_transient(e),
            _ => false,
        }
    }

    /// True when the database reported a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL SQLSTATE classes: 08 connection, 40 rollback
            // (serialization, deadlock), 53 resources, 57 operator
            // intervention (shutdown, restart), 58 system/I-O.
            let pg = matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"));
            // SQLite primary codes (extended codes carry them in the low
            // byte): BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
            let sqlite = code
                .parse::<i32>()
                .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 10 | 13 | 14 | 15));
            pg || sqlite
        }
        _ => false,
    }
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_bad_data_is_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(StoreError::Db(sqlx::Error::Io(io)).is_transient());
        assert!(StoreError::Db(sqlx::Error::PoolTimedOut).is_transient());
        assert!(StoreError::Db(sqlx::Error::PoolClosed).is_transient());
        assert!(StoreError::Commit("disk I/O error".into()).is_transient());
        assert!(StoreError::WriterGone.is_transient());

        assert!(!StoreError::Crypto("aead::Error".into()).is_transient());
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert!(!StoreError::Json(json).is_transient());
        assert!(!StoreError::Db(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::not_found("run", "r1").is_transient());
        assert!(!StoreError::rejected("state", "already in completed state").is_transient());
    }

    #[tokio::test]
    async fn constraint_violations_are_not_transient_and_locks_are() {
        use sqlx::Connection as _;
        let mut a = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut a)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut a)
            .await
            .unwrap_err();
        assert!(!StoreError::Db(dup).is_transient());

        // A second connection writing while the first holds the write lock.
        let dir = std::env::temp_dir().join(format!("gabbro-transient-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let url = format!("sqlite://{}?mode=rwc", dir.display());
        let mut w1 = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut w2 = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER)")
            .execute(&mut w1)
            .await
            .unwrap();
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut w2)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut w1)
            .await
            .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut w2)
            .await
            .unwrap_err();
        assert!(StoreError::Db(busy).is_transient());
        let _ = std::fs::remove_file(&dir);
    }
}
