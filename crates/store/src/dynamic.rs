//! Statements whose SQL is built at run time (a variable number of
//! placeholders: rows of one `INSERT`, queues of a claim, filters of a
//! listing). The text is made only of fixed fragments and placeholders;
//! every value is bound. sqlx binds per backend, so both arms live here once.

use crate::{Conn, Result};

/// A value bound into a statement whose SQL is built at run time.
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

/// Binds `binds` in order on a query of either backend.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Text(v) => q.bind(v),
                Bind::Int(v) => q.bind(v),
                Bind::OptText(v) => q.bind(v),
                Bind::OptInt(v) => q.bind(v),
            };
        }
        q
    }};
}

/// Fetches every row of `sql` as `T`.
pub(crate) async fn fetch_dynamic<T>(
    c: &mut Conn<'_>,
    sql: String,
    binds: Vec<Bind>,
) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    let sql = sqlx::AssertSqlSafe(sql);
    Ok(match c.reborrow() {
        Conn::Sqlite(conn) => {
            bind_all!(sqlx::query_as::<sqlx::Sqlite, T>(sql), binds)
                .fetch_all(conn)
                .await?
        }
        Conn::Postgres(conn) => {
            bind_all!(sqlx::query_as::<sqlx::Postgres, T>(sql), binds)
                .fetch_all(conn)
                .await?
        }
    })
}

/// Executes `sql`; returns the number of rows affected.
pub(crate) async fn exec_dynamic(c: &mut Conn<'_>, sql: String, binds: Vec<Bind>) -> Result<u64> {
    let sql = sqlx::AssertSqlSafe(sql);
    let done = match c.reborrow() {
        Conn::Sqlite(conn) => bind_all!(sqlx::query::<sqlx::Sqlite>(sql), binds)
            .execute(conn)
            .await?
            .rows_affected(),
        Conn::Postgres(conn) => bind_all!(sqlx::query::<sqlx::Postgres>(sql), binds)
            .execute(conn)
            .await?
            .rows_affected(),
    };
    Ok(done)
}
