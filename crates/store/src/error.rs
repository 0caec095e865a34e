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

    /// True when the database reported a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
