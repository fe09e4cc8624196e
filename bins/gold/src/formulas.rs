//! Gold's metric formulas and aggregation periods, in decimal arithmetic with every division
//! guarded.
//!
//! # Formulas
//!
//! | metric | formula | undefined (`None`) when |
//! | --- | --- | --- |
//! | `total_days` | `flight_end - flight_start + 1` (inclusive) | the flight ends before it starts |
//! | `elapsed_days` | days from `flight_start` to the as-of day, inclusive, capped at `total_days` | the flight has not started (0 days) |
//! | `pacing_rate` | `(delivered / booked) × (total_days / elapsed_days) × 100` | booked impressions are 0, no day has elapsed, or the flight is invalid |
//! | `margin_pct` | `(booking_revenue - spend) / booking_revenue × 100` | booking revenue is 0 |
//! | `projected_spend` | `spend / elapsed_days × total_days` | no day has elapsed, or the flight is invalid |
//! | `cpm` | `spend / impressions × 1000` | impressions are 0 |
//! | `ctr` | `clicks / impressions × 100` | impressions are 0 |
//! | `cvr` | `conversions / clicks × 100` | clicks are 0 |
//!
//! `delivered` and `spend` are flight-to-date totals for pacing, margin and projection, and the
//! aggregate's own totals for CPM, CTR and CVR.
//!
//! # Rounding
//!
//! Every formula is computed at full `rust_decimal` precision (28 significant digits) and
//! rounded **once**, at the end, **half away from zero**: to 2 places for `pacing_rate`,
//! `margin_pct` and `projected_spend`, to 4 places for `cpm`, `ctr` and `cvr` (the scales of
//! their Avro fields). Intermediate results are never rounded, so `(a / b) × c` and
//! `a × c / b` give the same answer.
//!
//! # Periods
//!
//! Daily (`2024-12-26`), ISO weekly (Monday to Sunday, labelled by ISO week-year:
//! `2020-W53`, `2025-W01` for 2024-12-30) and calendar monthly (`2024-02`, ending on the 29th
//! in leap years).

use chrono::{Datelike, Days, NaiveDate};
use envelope::{Date, Dec, Money, Ratio, payload::gold::Grain};
use rust_decimal::Decimal;

/// A booking's flight, first and last day inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flight {
    /// First delivery day.
    pub start: Date,
    /// Last delivery day.
    pub end: Date,
}

impl Flight {
    /// Days in the flight, inclusive; `None` when it ends before it starts.
    pub fn total_days(self) -> Option<i64> {
        let days = (self.end.0 - self.start.0).num_days() + 1;
        (days > 0).then_some(days)
    }

    /// Days of the flight elapsed on `as_of`, inclusive of both ends, between 0 (not started)
    /// and `total_days` (ended). `None` when the flight is invalid.
    pub fn elapsed_days(self, as_of: Date) -> Option<i64> {
        let total = self.total_days()?;
        let elapsed = (as_of.0 - self.start.0).num_days() + 1;
        Some(elapsed.clamp(0, total))
    }
}

fn round<const SCALE: u32>(value: Decimal) -> Option<Dec<SCALE>> {
    Dec::new(value).ok()
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    if denominator.is_zero() {
        None
    } else {
        numerator.checked_div(denominator)
    }
}

/// `(delivered / booked) × (total_days / elapsed_days) × 100`, percent, 2 places.
pub fn pacing_rate(delivered: i64, booked: i64, flight: Flight, as_of: Date) -> Option<Money> {
    let total = flight.total_days()?;
    let elapsed = flight.elapsed_days(as_of)?;
    let delivery_share = ratio(Decimal::from(delivered), Decimal::from(booked))?;
    let time_factor = ratio(Decimal::from(total), Decimal::from(elapsed))?;
    round(
        delivery_share
            .checked_mul(time_factor)?
            .checked_mul(Decimal::ONE_HUNDRED)?,
    )
}

/// `(booking_revenue - spend) / booking_revenue × 100`, percent, 2 places.
pub fn margin_pct(booking_revenue: Money, spend: Money) -> Option<Money> {
    let revenue = booking_revenue.value();
    let share = ratio(revenue.checked_sub(spend.value())?, revenue)?;
    round(share.checked_mul(Decimal::ONE_HUNDRED)?)
}

/// `spend / elapsed_days × total_days`, 2 places.
pub fn projected_spend(spend: Money, flight: Flight, as_of: Date) -> Option<Money> {
    let total = flight.total_days()?;
    let elapsed = flight.elapsed_days(as_of)?;
    let per_day = ratio(spend.value(), Decimal::from(elapsed))?;
    round(per_day.checked_mul(Decimal::from(total))?)
}

/// `spend / impressions × 1000`, 4 places.
pub fn cpm(spend: Money, impressions: i64) -> Option<Ratio> {
    let per_impression = ratio(spend.value(), Decimal::from(impressions))?;
    round(per_impression.checked_mul(Decimal::ONE_THOUSAND)?)
}

/// `clicks / impressions × 100`, percent, 4 places.
pub fn ctr(clicks: i64, impressions: i64) -> Option<Ratio> {
    round(
        ratio(Decimal::from(clicks), Decimal::from(impressions))?
            .checked_mul(Decimal::ONE_HUNDRED)?,
    )
}

/// `conversions / clicks × 100`, percent, 4 places.
pub fn cvr(conversions: i64, clicks: i64) -> Option<Ratio> {
    round(
        ratio(Decimal::from(conversions), Decimal::from(clicks))?
            .checked_mul(Decimal::ONE_HUNDRED)?,
    )
}

/// One aggregation period.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// Daily, weekly or monthly.
    pub grain: Grain,
    /// First day.
    pub start: Date,
    /// Last day, inclusive.
    pub end: Date,
    /// `2024-12-26`, `2024-W52` or `2024-12`.
    pub label: String,
}

/// The period of `grain` that contains `day`.
pub fn period_of(grain: Grain, day: Date) -> Period {
    let d = day.0;
    match grain {
        Grain::Daily => Period {
            grain,
            start: day,
            end: day,
            label: d.format("%Y-%m-%d").to_string(),
        },
        Grain::Weekly => {
            let monday = d - Days::new(u64::from(d.weekday().num_days_from_monday()));
            let week = d.iso_week();
            Period {
                grain,
                start: Date(monday),
                end: Date(monday + Days::new(6)),
                label: format!("{}-W{:02}", week.year(), week.week()),
            }
        }
        Grain::Monthly => {
            let first = d.with_day(1).unwrap_or(d);
            let next_month = first
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(NaiveDate::MAX);
            let last = next_month.pred_opt().unwrap_or(next_month);
            Period {
                grain,
                start: Date(first),
                end: Date(last),
                label: d.format("%Y-%m").to_string(),
            }
        }
    }
}

/// The daily, weekly and monthly periods containing `day`.
pub fn periods_of(day: Date) -> [Period; 3] {
    [
        period_of(Grain::Daily, day),
        period_of(Grain::Weekly, day),
        period_of(Grain::Monthly, day),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::ymd(y, m, d).expect("date")
    }

    fn money(s: &str) -> Money {
        s.parse().expect("money")
    }

    fn dec<const S: u32>(s: &str) -> Option<Dec<S>> {
        Some(s.parse().expect("decimal"))
    }

    /// A 31-day December flight.
    fn december() -> Flight {
        Flight {
            start: day(2024, 12, 1),
            end: day(2024, 12, 31),
        }
    }

    #[test]
    fn flight_days() {
        let f = december();
        assert_eq!(f.total_days(), Some(31));
        assert_eq!(f.elapsed_days(day(2024, 11, 30)), Some(0), "not started");
        assert_eq!(
            f.elapsed_days(day(2024, 12, 1)),
            Some(1),
            "first day counts"
        );
        assert_eq!(f.elapsed_days(day(2024, 12, 10)), Some(10));
        assert_eq!(f.elapsed_days(day(2024, 12, 31)), Some(31));
        assert_eq!(f.elapsed_days(day(2025, 3, 1)), Some(31), "ended: capped");
        let one_day = Flight {
            start: day(2024, 2, 29),
            end: day(2024, 2, 29),
        };
        assert_eq!(one_day.total_days(), Some(1));
        let backwards = Flight {
            start: day(2024, 12, 31),
            end: day(2024, 12, 1),
        };
        assert_eq!(backwards.total_days(), None);
        assert_eq!(backwards.elapsed_days(day(2024, 12, 15)), None);
    }

    #[test]
    fn pacing_hand_computed() {
        // 10 of 31 days elapsed, 400,000 of 1,000,000 delivered:
        // 0.4 × 31/10 × 100 = 124.00
        assert_eq!(
            pacing_rate(400_000, 1_000_000, december(), day(2024, 12, 10)),
            dec("124.00")
        );
        // 0.25 × 31/10 × 100 = 77.50: under the default 80 % rule.
        assert_eq!(
            pacing_rate(250_000, 1_000_000, december(), day(2024, 12, 10)),
            dec("77.50")
        );
        // 1/3 delivered after 7 of 31 days: 1/3 × 31/7 × 100 = 147.619047... → 147.62
        assert_eq!(
            pacing_rate(1, 3, december(), day(2024, 12, 7)),
            dec("147.62")
        );
        // Flight over: elapsed = total, pacing = delivery share.
        assert_eq!(
            pacing_rate(990_000, 1_000_000, december(), day(2025, 1, 5)),
            dec("99.00")
        );
    }

    #[test]
    fn pacing_guards() {
        assert_eq!(
            pacing_rate(10, 0, december(), day(2024, 12, 10)),
            None,
            "zero booked"
        );
        assert_eq!(
            pacing_rate(10, 100, december(), day(2024, 11, 30)),
            None,
            "not started"
        );
        let backwards = Flight {
            start: day(2024, 12, 31),
            end: day(2024, 12, 1),
        };
        assert_eq!(
            pacing_rate(10, 100, backwards, day(2024, 12, 15)),
            None,
            "invalid flight"
        );
        assert_eq!(
            pacing_rate(0, 100, december(), day(2024, 12, 15)),
            dec("0.00")
        );
    }

    #[test]
    fn margin_hand_computed() {
        // (15,000 - 12,000) / 15,000 × 100 = 20.00
        assert_eq!(margin_pct(money("15000"), money("12000")), dec("20.00"));
        // (10 - 8.67) / 10 × 100 = 13.30: under the default 15 % rule.
        assert_eq!(margin_pct(money("10"), money("8.67")), dec("13.30"));
        // Spend above revenue: negative margin.
        assert_eq!(margin_pct(money("100"), money("150")), dec("-50.00"));
        // 2/3 → 66.666...% → 66.67 (half away from zero).
        assert_eq!(margin_pct(money("3"), money("1")), dec("66.67"));
        assert_eq!(margin_pct(money("0"), money("10")), None, "revenue 0");
    }

    #[test]
    fn projected_spend_hand_computed() {
        // 1,000 spent in 10 of 31 days → 3,100.00
        assert_eq!(
            projected_spend(money("1000"), december(), day(2024, 12, 10)),
            dec("3100.00")
        );
        // 100 in 3 days of 31 → 1,033.333... → 1,033.33
        assert_eq!(
            projected_spend(money("100"), december(), day(2024, 12, 3)),
            dec("1033.33")
        );
        assert_eq!(
            projected_spend(money("100"), december(), day(2024, 11, 1)),
            None,
            "not started"
        );
    }

    #[test]
    fn efficiency_hand_computed() {
        // 1,234.57 / 183,442 × 1000 = 6.72999... → 6.7300
        assert_eq!(cpm(money("1234.57"), 183_442), dec("6.7300"));
        // 911 / 183,442 × 100 = 0.496614... → 0.4966
        assert_eq!(ctr(911, 183_442), dec("0.4966"));
        // 37 / 911 × 100 = 4.061470... → 4.0615
        assert_eq!(cvr(37, 911), dec("4.0615"));
        // Half away from zero at the 4th place: 1/8 % = 0.125 %... 1/800 × 100 = 0.125 → 0.1250
        assert_eq!(ctr(1, 800), dec("0.1250"));
        // 0.00005 rounds up: 1 / 2,000,000 × 100 = 0.00005 → 0.0001
        assert_eq!(ctr(1, 2_000_000), dec("0.0001"));
    }

    #[test]
    fn efficiency_guards() {
        assert_eq!(cpm(money("10"), 0), None);
        assert_eq!(ctr(5, 0), None);
        assert_eq!(cvr(5, 0), None);
        assert_eq!(cpm(money("0"), 100), dec("0.0000"));
    }

    #[test]
    fn days_weeks_and_months() {
        let p = period_of(Grain::Daily, day(2024, 12, 26));
        assert_eq!(
            (p.start, p.end, p.label.as_str()),
            (day(2024, 12, 26), day(2024, 12, 26), "2024-12-26")
        );

        let p = period_of(Grain::Weekly, day(2024, 12, 26));
        assert_eq!(
            (p.start, p.end, p.label.as_str()),
            (day(2024, 12, 23), day(2024, 12, 29), "2024-W52")
        );

        // The Monday of 2024-12-30 starts ISO week 1 of 2025.
        let p = period_of(Grain::Weekly, day(2024, 12, 31));
        assert_eq!(
            (p.start, p.end, p.label.as_str()),
            (day(2024, 12, 30), day(2025, 1, 5), "2025-W01")
        );

        // Week 53: 2020 has one (Thursday 31 Dec), and 3 Jan 2021 still belongs to it.
        let p = period_of(Grain::Weekly, day(2021, 1, 3));
        assert_eq!(
            (p.start, p.end, p.label.as_str()),
            (day(2020, 12, 28), day(2021, 1, 3), "2020-W53")
        );
        assert_eq!(
            period_of(Grain::Weekly, day(2020, 12, 31)).label,
            "2020-W53"
        );
        assert_eq!(period_of(Grain::Weekly, day(2021, 1, 4)).label, "2021-W01");

        // Leap and non-leap February, December and a 30-day month.
        let p = period_of(Grain::Monthly, day(2024, 2, 29));
        assert_eq!(
            (p.start, p.end, p.label.as_str()),
            (day(2024, 2, 1), day(2024, 2, 29), "2024-02")
        );
        assert_eq!(
            period_of(Grain::Monthly, day(2023, 2, 14)).end,
            day(2023, 2, 28)
        );
        assert_eq!(
            period_of(Grain::Monthly, day(2024, 12, 31)).end,
            day(2024, 12, 31)
        );
        assert_eq!(
            period_of(Grain::Monthly, day(2024, 4, 1)).end,
            day(2024, 4, 30)
        );
        // 1 March and 29 February fall in different months.
        assert_ne!(
            period_of(Grain::Monthly, day(2024, 3, 1)),
            period_of(Grain::Monthly, day(2024, 2, 29))
        );
    }

    proptest::proptest! {
        #[test]
        fn every_day_is_inside_its_periods(days in -200_000i32..200_000) {
            let d = Date::from_days_since_epoch(days).expect("in range");
            for p in periods_of(d) {
                proptest::prop_assert!(p.start <= d && d <= p.end, "{p:?}");
            }
            let w = period_of(Grain::Weekly, d);
            proptest::prop_assert_eq!((w.end.0 - w.start.0).num_days(), 6);
        }

        #[test]
        fn guarded_formulas_never_panic(a in any_i64(), b in any_i64(), s in -1000i32..1000, e in -1000i32..1000, t in -1000i32..1000) {
            let flight = Flight {
                start: Date::from_days_since_epoch(s).expect("d"),
                end: Date::from_days_since_epoch(e).expect("d"),
            };
            let as_of = Date::from_days_since_epoch(t).expect("d");
            let _ = pacing_rate(a, b, flight, as_of);
            let _ = ctr(a, b);
            let _ = cvr(a, b);
            let m = Money::from_unscaled(a % 999_999_999_999_999_999).unwrap_or(Money::ZERO);
            let _ = cpm(m, b);
            let _ = margin_pct(m, m);
            let _ = projected_spend(m, flight, as_of);
        }
    }

    fn any_i64() -> impl proptest::strategy::Strategy<Value = i64> {
        proptest::prelude::any::<i64>()
    }
}
