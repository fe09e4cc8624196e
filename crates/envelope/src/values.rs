//! Value types with an exact Avro form: ids (uuid strings), dates (`date`), timestamps
//! (`timestamp-millis`) and fixed-scale decimals (`decimal` bytes) for money and ratios.
//!
//! Each serialises to its Avro logical type for binary formats and to readable text
//! (`"2024-12-26"`, RFC 3339, `"12.35"`) for human-readable formats such as JSON.

use std::{fmt, str::FromStr};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A UUID carried as an Avro `string` with logical type `uuid`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub uuid::Uuid);

impl Id {
    /// A new time-ordered (v7) id.
    pub fn new() -> Id {
        Id(uuid::Uuid::now_v7())
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::new()
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for Id {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Id)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = uuid::Uuid::encode_buffer();
        s.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UUID string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse()
                    .map_err(|e| E::custom(format!("invalid uuid {v:?}: {e}")))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Id, E> {
                uuid::Uuid::from_slice(v)
                    .map(Id)
                    .map_err(|e| E::custom(format!("invalid uuid bytes: {e}")))
            }
        }
        d.deserialize_str(V)
    }
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch");

/// A calendar day carried as an Avro `int` with logical type `date` (days since 1970-01-01).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date(pub NaiveDate);

impl Date {
    /// A date from year, month and day, if it exists.
    pub fn ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        NaiveDate::from_ymd_opt(year, month, day).map(Date)
    }

    /// Days since 1970-01-01 (the Avro representation).
    pub fn days_since_epoch(self) -> i32 {
        // NaiveDate spans about +/-262,000 years, well inside i32 days.
        (self.0 - EPOCH).num_days() as i32
    }

    /// The date `days` after 1970-01-01, if representable.
    pub fn from_days_since_epoch(days: i32) -> Option<Date> {
        EPOCH
            .checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?)
            .map(Date)
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({})", self.0)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(&self.0)
        } else {
            s.serialize_i32(self.days_since_epoch())
        }
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Date;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("days since 1970-01-01 or a YYYY-MM-DD string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Date, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(Date::from_days_since_epoch)
                    .ok_or_else(|| {
                        E::custom(format!("date out of range: {v} days since 1970-01-01"))
                    })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Date, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Date, E> {
                NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map(Date)
                    .map_err(|e| E::custom(format!("invalid date {v:?}: {e}")))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_i32(V)
        }
    }
}

/// An instant carried as an Avro `long` with logical type `timestamp-millis` (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to milliseconds (what Avro keeps).
    pub fn now() -> Timestamp {
        let now = Utc::now();
        Timestamp::from_millis(now.timestamp_millis()).unwrap_or(Timestamp(now))
    }

    /// The length of [`Timestamp::write_rfc3339_millis`]'s text for the years 0 to 9999.
    pub const RFC3339_MILLIS_LEN: usize = 24;

    /// Append the RFC 3339 text with milliseconds and `Z` (`2024-12-26T10:00:00.000Z`, what
    /// `Display` writes) to `out`.
    pub fn write_rfc3339_millis(&self, out: &mut String) {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        let (year, nanos) = (t.year(), t.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            // Signed years and leap seconds, as chrono writes them.
            out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            return;
        }
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let mut digits = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        digits(0, 4, year as u32);
        digits(5, 2, t.month());
        digits(8, 2, t.day());
        digits(11, 2, t.hour());
        digits(14, 2, t.minute());
        digits(17, 2, t.second());
        digits(20, 3, nanos / 1_000_000);
        // ASCII digits and separators.
        out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The instant `ms` milliseconds after the epoch, if representable.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        Utc.timestamp_millis_opt(ms).single().map(Timestamp)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Timestamp({})",
            self.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(Timestamp::RFC3339_MILLIS_LEN);
        self.write_rfc3339_millis(&mut text);
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.millis())
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("milliseconds since the epoch or an RFC 3339 string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Timestamp::from_millis(v)
                    .ok_or_else(|| E::custom(format!("timestamp out of range: {v} ms")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| Timestamp(t.with_timezone(&Utc)))
                    .map_err(|e| E::custom(format!("invalid timestamp {v:?}: {e}")))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_i64(V)
        }
    }
}

/// Largest unscaled magnitude of an Avro `decimal(18, s)`: 18 digits.
const MAX_UNSCALED: i128 = 999_999_999_999_999_999;

/// A decimal with exactly `SCALE` places, carried as an Avro `bytes` with logical type
/// `decimal(18, SCALE)` (big-endian two's-complement unscaled value).
///
/// Values are rounded to `SCALE` places **half away from zero** (`12.345` becomes `12.35`,
/// `-12.345` becomes `-12.35`), the rule used for money throughout adpipe.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dec<const SCALE: u32>(Decimal);

/// Money: 2 decimal places.
pub type Money = Dec<2>;
/// Ratios, thresholds and per-mille prices: 4 decimal places.
pub type Ratio = Dec<4>;

/// A decimal that does not fit 18 significant digits at its scale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} does not fit decimal(18, {scale})")]
pub struct DecimalOverflow {
    /// The rejected value.
    pub value: String,
    /// The target scale.
    pub scale: u32,
}

impl<const SCALE: u32> Dec<SCALE> {
    /// Zero.
    pub const ZERO: Dec<SCALE> = Dec(Decimal::ZERO);

    /// Round `value` to `SCALE` places (half away from zero); fails beyond 18 digits.
    pub fn new(value: Decimal) -> Result<Self, DecimalOverflow> {
        let mut v = value.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointAwayFromZero);
        v.rescale(SCALE);
        if v.scale() != SCALE || v.mantissa().abs() > MAX_UNSCALED {
            return Err(DecimalOverflow {
                value: value.to_string(),
                scale: SCALE,
            });
        }
        Ok(Dec(v))
    }

    /// From an unscaled integer: `Dec::<2>::from_unscaled(1235)` is `12.35`.
    pub fn from_unscaled(unscaled: i64) -> Result<Self, DecimalOverflow> {
        Dec::new(Decimal::from_i128_with_scale(i128::from(unscaled), SCALE))
    }

    /// The value.
    pub fn value(self) -> Decimal {
        self.0
    }

    /// The unscaled integer (`12.35` at scale 2 is `1235`).
    pub fn unscaled(self) -> i128 {
        self.0.mantissa()
    }

    fn from_be_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(format!("decimal needs 1 to 16 bytes, got {}", bytes.len()));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut buf = [fill; 16];
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        let unscaled = i128::from_be_bytes(buf);
        if unscaled.abs() > MAX_UNSCALED {
            return Err(format!(
                "decimal unscaled value {unscaled} exceeds 18 digits"
            ));
        }
        Ok(Dec(Decimal::from_i128_with_scale(unscaled, SCALE)))
    }
}

impl<const SCALE: u32> fmt::Debug for Dec<SCALE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dec({})", self.0)
    }
}

impl<const SCALE: u32> fmt::Display for Dec<SCALE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const SCALE: u32> FromStr for Dec<SCALE> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d =
            Decimal::from_str_exact(s.trim()).map_err(|e| format!("invalid decimal {s:?}: {e}"))?;
        Dec::new(d).map_err(|e| e.to_string())
    }
}

impl<const SCALE: u32> Serialize for Dec<SCALE> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.collect_str(&self.0);
        }
        let bytes = self.unscaled().to_be_bytes();
        // Minimal two's-complement: drop leading bytes that only repeat the sign.
        let mut start = 0;
        while start < 15 {
            let (b, next) = (bytes[start], bytes[start + 1]);
            if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
                start += 1;
            } else {
                break;
            }
        }
        s.serialize_bytes(&bytes[start..])
    }
}

impl<'de, const SCALE: u32> Deserialize<'de> for Dec<SCALE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const S: u32>;
        impl<'de, const S: u32> de::Visitor<'de> for V<S> {
            type Value = Dec<S>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a decimal(18, {S})")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Dec<S>, E> {
                Dec::from_be_bytes(v).map_err(E::custom)
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Dec<S>, E> {
                self.visit_bytes(&v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dec<S>, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Dec<S>, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                self.visit_bytes(&bytes)
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V::<SCALE>)
        } else {
            d.deserialize_bytes(V::<SCALE>)
        }
    }
}

#[cfg(any(test, feature = "testing"))]
mod arbitrary {
    //! Strategies for property tests: values inside each type's Avro range.
    use super::*;
    use proptest::prelude::*;

    impl Arbitrary for Id {
        type Parameters = ();
        type Strategy = BoxedStrategy<Id>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            any::<u128>()
                .prop_map(|n| Id(uuid::Uuid::from_u128(n)))
                .boxed()
        }
    }

    impl Arbitrary for Date {
        type Parameters = ();
        type Strategy = BoxedStrategy<Date>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            // Years 1..9999 in days since the epoch.
            (-719_162i32..2_932_896)
                .prop_map(|d| Date::from_days_since_epoch(d).unwrap_or(Date(EPOCH)))
                .boxed()
        }
    }

    impl Arbitrary for Timestamp {
        type Parameters = ();
        type Strategy = BoxedStrategy<Timestamp>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            (-62_135_596_800_000i64..253_402_300_799_999)
                .prop_map(|ms| {
                    Timestamp::from_millis(ms).unwrap_or(Timestamp(DateTime::UNIX_EPOCH))
                })
                .boxed()
        }
    }

    impl<const SCALE: u32> Arbitrary for Dec<SCALE> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Dec<SCALE>>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            (-(MAX_UNSCALED as i64)..=(MAX_UNSCALED as i64))
                .prop_map(|u| Dec::from_unscaled(u).unwrap_or(Dec::ZERO))
                .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rounds_half_away_from_zero() {
        let m: Money = "12.345".parse().expect("decimal");
        assert_eq!(m.to_string(), "12.35");
        let m: Money = "-12.345".parse().expect("decimal");
        assert_eq!(m.to_string(), "-12.35");
        let m: Money = "12.344999".parse().expect("decimal");
        assert_eq!(m.to_string(), "12.34");
        let m: Money = "7".parse().expect("decimal");
        assert_eq!((m.to_string(), m.unscaled()), ("7.00".to_owned(), 700));
    }

    #[test]
    fn decimal_overflow_is_an_error() {
        assert!("1e30".parse::<Money>().is_err());
        assert!(Money::from_unscaled(1_000_000_000_000_000_000).is_err());
        assert!(Money::from_unscaled(999_999_999_999_999_999).is_ok());
    }

    #[test]
    fn decimal_bytes_are_minimal_twos_complement() {
        let enc = |u: i64| {
            let v = apache_avro::to_value(Money::from_unscaled(u).expect("fits")).expect("value");
            match v {
                apache_avro::types::Value::Bytes(b) => b,
                other => panic!("bytes expected, got {other:?}"),
            }
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x00, 0x80]);
        assert_eq!(enc(-1), [0xff]);
        assert_eq!(enc(-128), [0x80]);
        assert_eq!(enc(-129), [0xff, 0x7f]);
        assert_eq!(
            Money::from_be_bytes(&[0xff, 0x7f]).map(Dec::unscaled),
            Ok(-129)
        );
        assert!(Money::from_be_bytes(&[]).is_err());
        assert!(Money::from_be_bytes(&[0x7f; 17]).is_err());
        assert!(
            Money::from_be_bytes(&[0x7f; 16]).is_err(),
            "beyond 18 digits"
        );
    }

    #[test]
    fn dates_and_timestamps_round_trip_their_avro_numbers() {
        let d = Date::ymd(2024, 2, 29).expect("leap day");
        assert_eq!(d.days_since_epoch(), 19_782);
        assert_eq!(Date::from_days_since_epoch(19_782), Some(d));
        assert_eq!(Date::from_days_since_epoch(i32::MAX), None);
        assert_eq!(Date::ymd(2024, 2, 30), None);
        let t = Timestamp::from_millis(1_735_207_200_000).expect("ts");
        assert_eq!(t.to_string(), "2024-12-26T10:00:00.000Z");
        assert_eq!(Timestamp::from_millis(i64::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn timestamps_print_as_chrono_prints_them(
            t in proptest::prelude::any::<Timestamp>(),
            nanos in 0u32..1_000_000,
        ) {
            let chrono = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            proptest::prop_assert_eq!(t.to_string(), chrono(t.0));
            // Sub-millisecond digits are cut, not rounded.
            let finer = Timestamp(t.0 + chrono::TimeDelta::nanoseconds(i64::from(nanos)));
            proptest::prop_assert_eq!(finer.to_string(), chrono(finer.0));
        }
    }

    #[test]
    fn timestamps_outside_four_digit_years_print_as_chrono_prints_them() {
        for ms in [
            -62_135_596_800_001,
            -62_167_219_200_000,
            -62_167_219_200_001,
            -100_000_000_000_000,
            253_402_300_800_000,
            i64::from(i32::MAX) * 100_000,
        ] {
            let t = Timestamp::from_millis(ms).expect("representable");
            assert_eq!(
                t.to_string(),
                t.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "{ms}"
            );
        }
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .expect("leap second")
            .and_utc();
        assert_eq!(
            Timestamp(leap).to_string(),
            leap.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }

    #[test]
    fn json_forms_are_readable() {
        let d = Date::ymd(2024, 12, 26).expect("date");
        assert_eq!(serde_json::to_string(&d).expect("json"), "\"2024-12-26\"");
        let m: Money = "1234.5".parse().expect("money");
        assert_eq!(serde_json::to_string(&m).expect("json"), "\"1234.50\"");
        let back: Money = serde_json::from_str("\"1234.50\"").expect("parse");
        assert_eq!(back, m);
    }
}
