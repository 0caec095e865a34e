//! Microsecond timestamps (the schema's unit) to and from words, without a
//! date library: the UI only needs UTC civil time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// Howard Hinnant's days-from-civil / civil-from-days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-28 05:53:15` (UTC) for a microsecond timestamp.
pub fn format_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A duration in microseconds as `1.234 s` or `56 ms`.
pub fn format_duration_us(us: i64) -> String {
    if us >= 1_000_000 {
        format!("{:.3} s", us as f64 / 1_000_000.0)
    } else {
        format!("{} ms", us / 1000)
    }
}

/// Parses an HTML `datetime-local` value (`2026-11-28T05:53` or with
/// seconds), read as UTC, into microseconds. None when malformed.
pub fn parse_datetime_local(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut dp = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (dp.next()??, dp.next()??, dp.next()??);
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut tp = time.split(':').map(|p| p.parse::<i64>().ok());
    let h = tp.next()??;
    let min = tp.next()??;
    let sec = tp.next().flatten().unwrap_or(0);
    if !(0..24).contains(&h) || !(0..60).contains(&min) || !(0..61).contains(&sec) {
        return None;
    }
    Some(((days_from_civil(y, m, d) * 86_400) + h * 3600 + min * 60 + sec) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc_round_trip() {
        let us = parse_datetime_local("2026-11-28T05:53:15").unwrap();
        assert_eq!(format_us(us), "2026-11-28 05:53:15");
        assert_eq!(format_us(0), "1970-01-01 00:00:00");
        assert_eq!(
            parse_datetime_local("2026-11-28T05:53"),
            Some(us - 15_000_000)
        );
        assert_eq!(parse_datetime_local("yesterday"), None);
        assert_eq!(parse_datetime_local("2026-13-01T00:00"), None);
    }
}
