//! The JSON form of an entity's metric history — `{"spend": {"2026-11-01": "12.5", …}, …}`,
//! chrono's `YYYY-MM-DD` day keys — written and read without chrono's general formatter and
//! parser, which were a fifth of the rule evaluator's CPU (every aggregate reads and writes
//! its entity's state, up to 62 days per metric). Other dates (years outside 0–9999) take
//! chrono's way; the text is the same either way.

use std::{collections::BTreeMap, fmt};

use chrono::{Datelike as _, NaiveDate};
use rust_decimal::Decimal;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap as _,
};

/// Per metric name, the value of each day.
pub(crate) type History = BTreeMap<String, BTreeMap<NaiveDate, Decimal>>;

/// `#[serde(serialize_with)]` for [`History`].
pub(crate) fn serialize<S: Serializer>(history: &History, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(history.len()))?;
    for (metric, days) in history {
        map.serialize_entry(metric, &Days(days))?;
    }
    map.end()
}

/// `#[serde(deserialize_with)]` for [`History`].
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<History, D::Error> {
    let by_metric: BTreeMap<String, OwnedDays> = Deserialize::deserialize(d)?;
    Ok(by_metric
        .into_iter()
        .map(|(m, OwnedDays(d))| (m, d))
        .collect())
}

struct Days<'a>(&'a BTreeMap<NaiveDate, Decimal>);

impl Serialize for Days<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (day, value) in self.0 {
            let mut buf = [0u8; 10];
            match format(*day, &mut buf) {
                Some(key) => map.serialize_entry(key, value)?,
                None => map.serialize_entry(&day.to_string(), value)?,
            }
        }
        map.end()
    }
}

struct OwnedDays(BTreeMap<NaiveDate, Decimal>);

impl<'de> Deserialize<'de> for OwnedDays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DaysVisitor)
    }
}

struct DaysVisitor;

impl<'de> Visitor<'de> for DaysVisitor {
    type Value = OwnedDays;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of YYYY-MM-DD days to decimals")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<OwnedDays, A::Error> {
        let mut days = BTreeMap::new();
        while let Some(DayKey(day)) = access.next_key()? {
            days.insert(day, access.next_value()?);
        }
        Ok(OwnedDays(days))
    }
}

struct DayKey(NaiveDate);

impl<'de> Deserialize<'de> for DayKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = DayKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YYYY-MM-DD day")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DayKey, E> {
                parse(s)
                    .or_else(|| s.parse().ok())
                    .map(DayKey)
                    .ok_or_else(|| E::custom(format!("not a day: {s:?}")))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// `YYYY-MM-DD` into `buf`, for years 0–9999 (chrono's form for them); `None` otherwise.
fn format(day: NaiveDate, buf: &mut [u8; 10]) -> Option<&str> {
    let year = u16::try_from(day.year()).ok().filter(|y| *y <= 9999)?;
    let digits = |n: u32, out: &mut [u8]| {
        let mut n = n;
        for b in out.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(u32::from(year), &mut buf[0..4]);
    buf[4] = b'-';
    digits(day.month(), &mut buf[5..7]);
    buf[7] = b'-';
    digits(day.day(), &mut buf[8..10]);
    std::str::from_utf8(buf).ok()
}

/// A `YYYY-MM-DD` day; `None` for any other text (chrono then decides).
fn parse(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Chrono(History);

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ours(#[serde(with = "super")] History);

    fn history(days: &[NaiveDate]) -> History {
        let values = days
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, Decimal::new(i as i64 * 125 - 7, 2)))
            .collect();
        BTreeMap::from([
            ("spend".to_owned(), values),
            ("clicks".to_owned(), BTreeMap::new()),
        ])
    }

    #[test]
    fn the_text_is_chronos_and_reads_back_either_way() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a day");
        let h = history(&[
            day(2026, 11, 1),
            day(2024, 2, 29),
            day(1, 1, 9),
            day(9999, 12, 31),
            day(10_000, 1, 1),
            day(-3, 5, 6),
        ]);
        let ours = serde_json::to_string(&Ours(h.clone())).expect("ours");
        let chrono = serde_json::to_string(&Chrono(h.clone())).expect("chrono's");
        assert_eq!(ours, chrono);
        assert!(ours.contains("\"2026-11-01\":\"-0.07\""), "{ours}");
        assert_eq!(
            serde_json::from_str::<Ours>(&chrono)
                .expect("read by ours")
                .0,
            h
        );
        assert_eq!(
            serde_json::from_str::<Chrono>(&ours)
                .expect("read by chrono")
                .0,
            h
        );
    }

    #[test]
    fn a_key_that_is_no_day_is_an_error() {
        for bad in ["2026-13-01", "2026-02-30", "20x6-01-01", "yesterday"] {
            let json = format!(r#"{{"spend": {{"{bad}": "1"}}}}"#);
            let e = serde_json::from_str::<Ours>(&json).expect_err("not a day");
            assert!(e.to_string().contains("not a day"), "{bad}: {e}");
        }
    }
}
