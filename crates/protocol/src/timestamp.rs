//! Protocol timestamps: microseconds since the Unix epoch, sent as strings
//! of digits (`"1795844572205836"`).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Microseconds since the Unix epoch.
///
/// Serialises as a string of digits. Reads a string or a JSON number; a value
/// below 10^14 is taken as milliseconds (13 digits today) and scaled up, so
/// senders that use `Date.now()` are understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Values smaller than this are milliseconds (µs values have had 16 digits
/// since 2001; ms values will have 13 until the year 5138).
const MS_THRESHOLD: i64 = 100_000_000_000_000;

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as i64)
    }

    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    fn normalise(v: i64) -> Timestamp {
        if v.abs() < MS_THRESHOLD {
            Timestamp(v.saturating_mul(1000))
        } else {
            Timestamp(v)
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a timestamp in µs (or ms) as a string of digits or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                let n: i64 = v
                    .trim()
                    .parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))?;
                Ok(Timestamp::normalise(n))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp::normalise(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                let n = i64::try_from(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))?;
                Ok(Timestamp::normalise(n))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Ok(Timestamp::normalise(v as i64))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_microsecond_strings_and_writes_them_back() {
        let t: Timestamp = serde_json::from_str(r#""1795844572205836""#).unwrap();
        assert_eq!(t, Timestamp(1_795_844_572_205_836));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""1795844572205836""#);
    }

    #[test]
    fn scales_millisecond_values_up() {
        let t: Timestamp = serde_json::from_str(r#""1795844572205""#).unwrap();
        assert_eq!(t, Timestamp(1_795_844_572_205_000));
        let t: Timestamp = serde_json::from_str("1795844572205").unwrap();
        assert_eq!(t, Timestamp(1_795_844_572_205_000));
        let t: Timestamp = serde_json::from_str("1795844572205836").unwrap();
        assert_eq!(t, Timestamp(1_795_844_572_205_836));
    }

    #[test]
    fn rejects_non_numbers() {
        assert!(serde_json::from_str::<Timestamp>(r#""soon""#).is_err());
        assert!(serde_json::from_str::<Timestamp>("null").is_err());
    }
}
