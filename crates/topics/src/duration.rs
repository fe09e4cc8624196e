//! Human durations of `topic-config.yaml` (`7d`, `14d`, `500ms`) and topic retention.

use std::fmt;

/// A duration string that is not `<n><unit>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: expected <number><unit> with unit ms, s, m, h or d")]
pub struct DurationError {
    input: String,
}

/// Parse `<n>ms | <n>s | <n>m | <n>h | <n>d` into milliseconds.
pub fn parse_duration(input: &str) -> Result<u64, DurationError> {
    let err = || DurationError {
        input: input.to_owned(),
    };
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    n.checked_mul(factor).ok_or_else(err)
}

/// How long a topic keeps its records (`retention.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep records this many milliseconds.
    Millis(u64),
    /// Keep records forever (`retention.ms=-1`).
    Forever,
}

impl Retention {
    /// Milliseconds, or `i64::MAX` for forever (handy for comparisons).
    pub fn as_millis(self) -> i64 {
        match self {
            Retention::Millis(ms) => i64::try_from(ms).unwrap_or(i64::MAX),
            Retention::Forever => i64::MAX,
        }
    }

    /// The value of Kafka's `retention.ms` topic setting.
    pub fn kafka_value(self) -> String {
        match self {
            Retention::Millis(ms) => ms.to_string(),
            Retention::Forever => "-1".to_owned(),
        }
    }

    /// Parse the `retention.ms` value a broker reports.
    pub fn from_kafka_value(value: &str) -> Option<Retention> {
        match value.trim() {
            "-1" => Some(Retention::Forever),
            v => v.parse().ok().map(Retention::Millis),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Retention::Forever => f.write_str("forever"),
            Retention::Millis(ms) if ms % 86_400_000 == 0 => write!(f, "{}d", ms / 86_400_000),
            Retention::Millis(ms) if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            Retention::Millis(ms) => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(-1) => Ok(Retention::Forever),
            Raw::Num(n) => u64::try_from(n)
                .map(Retention::Millis)
                .map_err(|_| serde::de::Error::custom(format!("invalid retention {n}"))),
            Raw::Text(t) if t == "forever" || t == "-1" => Ok(Retention::Forever),
            Raw::Text(t) => parse_duration(&t)
                .map(Retention::Millis)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("3s"), Ok(3_000));
        assert_eq!(parse_duration("2m"), Ok(120_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("7d"), Ok(604_800_000));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "d", "7", "7w", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn retention_round_trips_kafka_values() {
        assert_eq!(Retention::Millis(604_800_000).to_string(), "7d");
        assert_eq!(Retention::from_kafka_value("-1"), Some(Retention::Forever));
        assert_eq!(
            Retention::from_kafka_value(&Retention::Millis(5).kafka_value()),
            Some(Retention::Millis(5))
        );
    }
}
