//! Time in microseconds since the Unix epoch (the worker protocol's unit and
//! the schema's: every timestamp column is BIGINT µs).

use crate::{Conn, Result};

/// This machine's clock, in microseconds since the Unix epoch.
///
/// Good for anything only this node compares (SQLite is single-node). For
/// values compared across nodes on PostgreSQL (leases, cron) use
/// [`db_now_us`].
pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The database's clock in microseconds: PostgreSQL's `clock_timestamp()`
/// (one clock for every node), this machine's clock on SQLite.
pub async fn db_now_us(conn: &mut Conn<'_>) -> Result<i64> {
    match conn.reborrow() {
        Conn::Sqlite(_) => Ok(now_us()),
        Conn::Postgres(c) => Ok(sqlx::query_scalar::<_, i64>(
            "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
        )
        .fetch_one(c)
        .await?),
    }
}

/// Converts Lightning's `timestamp` strings (13-digit milliseconds or
/// 16-digit microseconds, as `Lightning.UnixDateTime` accepts) or numbers to
/// microseconds. `None` if it is neither.
pub fn parse_protocol_timestamp(v: &serde_json::Value) -> Option<i64> {
    let n: i64 = match v {
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    // Below 10^14 it is milliseconds (year 5138 in ms is still < 10^14).
    if n.abs() < 100_000_000_000_000 {
        n.checked_mul(1000)
    } else {
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_timestamps_accept_ms_and_us() {
        let ms = serde_json::json!("1700000000123");
        let us = serde_json::json!("1700000000123456");
        assert_eq!(parse_protocol_timestamp(&ms), Some(1_700_000_000_123_000));
        assert_eq!(parse_protocol_timestamp(&us), Some(1_700_000_000_123_456));
        assert_eq!(
            parse_protocol_timestamp(&serde_json::json!(1700000000123456_i64)),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(parse_protocol_timestamp(&serde_json::json!("x")), None);
    }

    #[test]
    fn now_is_microseconds() {
        let n = now_us();
        assert!(n > 1_700_000_000_000_000 && n < 10_000_000_000_000_000);
    }
}
