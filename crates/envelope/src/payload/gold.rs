//! `gold.data.ready`: aggregates with derived metrics (`gold/data-ready.avsc`).

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{Booking, avro_enum},
    values::{Date, Money, Ratio, Timestamp},
};

avro_enum!(
    /// Aggregation period.
    Grain {
        /// One day.
        Daily = "daily",
        /// One ISO week.
        Weekly = "weekly",
        /// One calendar month.
        Monthly = "monthly",
    }
);

avro_enum!(
    /// Why an aggregate was emitted.
    Trigger {
        /// A new or corrected row.
        Update = "update",
        /// The periodic flush (day rollover, late data).
        Flush = "flush",
    }
);

/// Metrics derived in decimal arithmetic; `None` where a division is undefined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct DerivedMetrics {
    /// Pacing, percent.
    pub pacing_rate: Option<Money>,
    /// Margin, percent.
    pub margin_pct: Option<Money>,
    /// Projected flight spend.
    pub projected_spend: Option<Money>,
    /// Cost per mille.
    pub cpm: Option<Ratio>,
    /// Click-through rate, percent.
    pub ctr: Option<Ratio>,
    /// Conversion rate, percent.
    pub cvr: Option<Ratio>,
    /// Flight days elapsed.
    pub elapsed_days: Option<i32>,
    /// Flight days in total.
    pub total_days: Option<i32>,
    /// Flight-to-date impressions.
    pub delivered_impressions_to_date: Option<i64>,
    /// Flight-to-date spend.
    pub spend_to_date: Option<Money>,
}

/// One updated aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct AggregateReady {
    /// Period kind.
    pub grain: Grain,
    /// First day.
    pub period_start: Date,
    /// Last day (inclusive).
    pub period_end: Date,
    /// `2024-12-26`, `2024-W52` or `2024-12`.
    pub period_label: String,
    /// Campaign.
    pub campaign_id: String,
    /// Line item; `None` = whole campaign.
    pub line_item_id: Option<String>,
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions.
    pub conversions: i64,
    /// Spend.
    pub spend: Money,
    /// Contributing silver rows.
    pub rows: i64,
    /// Mean quality score.
    pub quality_score_avg: Option<Money>,
    /// The booking joined.
    pub booking: Option<Booking>,
    /// Derived metrics.
    pub metrics: DerivedMetrics,
    /// Computation time.
    pub as_of: Timestamp,
    /// Why emitted.
    pub trigger: Trigger,
}

impl Payload for AggregateReady {
    const TOPIC: Topic = Topic::GoldDataReady;
    const RECORD: &'static str = "DataReady";
}
