//! Waiting between attempts: OpenFn's `--backoff min/max` (seconds), grown
//! ×1.15 after each empty or failed attempt, back to `min` after a success.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffRange {
    pub min: Duration,
    pub max: Duration,
}

impl BackoffRange {
    /// Parse `min/max` in seconds (fractions allowed), e.g. `1/10`.
    pub fn parse(s: &str) -> Result<BackoffRange, String> {
        let (a, b) = s
            .split_once('/')
            .ok_or_else(|| format!("backoff {s:?} is not min/max in seconds"))?;
        let secs = |x: &str| -> Result<Duration, String> {
            let v: f64 = x
                .trim()
                .parse()
                .map_err(|_| format!("backoff {s:?}: {x:?} is not a number"))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("backoff {s:?}: values must be positive"));
            }
            Ok(Duration::from_secs_f64(v))
        };
        let (min, max) = (secs(a)?, secs(b)?);
        if min > max {
            return Err(format!("backoff {s:?}: min is larger than max"));
        }
        Ok(BackoffRange { min, max })
    }
}

/// The current delay of one backoff sequence.
#[derive(Clone, Debug)]
pub struct Backoff {
    range: BackoffRange,
    current: Duration,
}

impl Backoff {
    pub fn new(range: BackoffRange) -> Backoff {
        Backoff {
            range,
            current: range.min,
        }
    }

    /// The delay to wait now; the next one is 15% longer, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.mul_f64(1.15).min(self.range.max);
        d
    }

    pub fn reset(&mut self) {
        self.current = self.range.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openfn_backoff_and_grows_by_15_percent_up_to_max() {
        let r = BackoffRange::parse("1/10").unwrap();
        let mut b = Backoff::new(r);
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_millis(1150));
        for _ in 0..50 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(10));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn rejects_malformed_backoff() {
        for bad in ["1", "a/2", "3/1", "0/1", "-1/2"] {
            assert!(BackoffRange::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            BackoffRange::parse("0.05/0.5").unwrap().min,
            Duration::from_millis(50)
        );
    }
}
