//! One query, both databases: each macro expands to a `match` over
//! [`Conn`](crate::Conn) with the same SQL and binds in both arms.
//! SQLite accepts PostgreSQL's `$1, $2, …` placeholders, so most SQL needs no
//! branching. All return `Result<_, sqlx::Error>`.

/// Executes a statement; yields the number of rows affected.
///
/// `exec!(conn, "UPDATE runs SET state = $1 WHERE id = $2", state, id)?`
#[macro_export]
macro_rules! exec {
    ($conn:expr, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn.reborrow() {
            $crate::Conn::Sqlite(c) => ::sqlx::query::<::sqlx::Sqlite>($sql)$(.bind($arg))*
                .execute(c).await.map(|r| r.rows_affected()),
            $crate::Conn::Postgres(c) => ::sqlx::query::<::sqlx::Postgres>($sql)$(.bind($arg))*
                .execute(c).await.map(|r| r.rows_affected()),
        }
    };
}

/// Fetches all rows as `T` (a `#[derive(sqlx::FromRow)]` struct whose field
/// types decode on both databases: `String`, `i64`, `i32`, `bool`, `Option`s).
///
/// `let runs: Vec<RunRow> = fetch_all!(conn, RunRow, "SELECT … WHERE x = $1", x)?;`
#[macro_export]
macro_rules! fetch_all {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn.reborrow() {
            $crate::Conn::Sqlite(c) => ::sqlx::query_as::<::sqlx::Sqlite, $ty>($sql)$(.bind($arg))*
                .fetch_all(c).await,
            $crate::Conn::Postgres(c) => ::sqlx::query_as::<::sqlx::Postgres, $ty>($sql)$(.bind($arg))*
                .fetch_all(c).await,
        }
    };
}

/// Fetches at most one row as `T`; `None` if there is none.
#[macro_export]
macro_rules! fetch_optional {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn.reborrow() {
            $crate::Conn::Sqlite(c) => ::sqlx::query_as::<::sqlx::Sqlite, $ty>($sql)$(.bind($arg))*
                .fetch_optional(c).await,
            $crate::Conn::Postgres(c) => ::sqlx::query_as::<::sqlx::Postgres, $ty>($sql)$(.bind($arg))*
                .fetch_optional(c).await,
        }
    };
}

/// Fetches one value of the first column (`T` = `i64`, `String`, `bool`,
/// `Option<…>`); `None` when there is no row.
///
/// `let n: Option<i64> = scalar!(conn, i64, "SELECT count(*) FROM runs")?;`
#[macro_export]
macro_rules! scalar {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn.reborrow() {
            $crate::Conn::Sqlite(c) => ::sqlx::query_scalar::<::sqlx::Sqlite, $ty>($sql)$(.bind($arg))*
                .fetch_optional(c).await,
            $crate::Conn::Postgres(c) => ::sqlx::query_scalar::<::sqlx::Postgres, $ty>($sql)$(.bind($arg))*
                .fetch_optional(c).await,
        }
    };
}

/// Fetches the first column of every row.
#[macro_export]
macro_rules! scalars {
    ($conn:expr, $ty:ty, $sql:expr $(, $arg:expr)* $(,)?) => {
        match $conn.reborrow() {
            $crate::Conn::Sqlite(c) => ::sqlx::query_scalar::<::sqlx::Sqlite, $ty>($sql)$(.bind($arg))*
                .fetch_all(c).await,
            $crate::Conn::Postgres(c) => ::sqlx::query_scalar::<::sqlx::Postgres, $ty>($sql)$(.bind($arg))*
                .fetch_all(c).await,
        }
    };
}
