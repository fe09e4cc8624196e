//! `silver.data.processed`: typed, validated, deduplicated and scored rows
//! (`silver/data-processed.avsc`).

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{Booking, DspType, EntityRef, RowKind, avro_enum},
    values::{Date, Id, Money},
};

avro_enum!(
    /// Normalised campaign status.
    CampaignStatus {
        /// Delivering.
        Active = "active",
        /// Paused.
        Paused = "paused",
        /// Finished.
        Completed = "completed",
    }
);

avro_enum!(
    /// What the quality score means for the row.
    QualityVerdict {
        /// Score >= 90.
        Pass = "pass",
        /// Score 70..=89: passed with a warning.
        Warn = "warn",
        /// Score < 70: quarantined.
        Quarantine = "quarantine",
    }
);

/// Data-quality score: completeness 40 + validity 30 + consistency 20 + timeliness 10.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct QualityScore {
    /// 0..=100.
    pub score: i32,
    /// 0..=40.
    pub completeness: i32,
    /// 0..=30.
    pub validity: i32,
    /// 0..=20.
    pub consistency: i32,
    /// 0..=10.
    pub timeliness: i32,
    /// Pass, warn or quarantine.
    pub verdict: QualityVerdict,
    /// Why points were lost.
    pub reasons: Vec<String>,
}

/// One typed row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct ProcessedRow {
    /// The pull.
    pub request_id: String,
    /// Source.
    pub dsp_type: DspType,
    /// Delivery or booking.
    pub row_kind: RowKind,
    /// The day the row is about.
    pub date: Date,
    /// Finest grain; with org, dsp and date the dedupe key.
    pub entity: EntityRef,
    /// Trimmed campaign id.
    pub campaign_id: String,
    /// Campaign name.
    pub campaign_name: Option<String>,
    /// Advertiser.
    pub advertiser_id: Option<String>,
    /// Impressions (0 when empty).
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions.
    pub conversions: i64,
    /// Media cost, 2 places.
    pub spend: Money,
    /// Revenue, 2 places.
    pub revenue: Option<Money>,
    /// Currency.
    pub currency: Option<String>,
    /// Media cost in US dollars as the source reports it (TTD's `Partner Cost (USD)`), 2
    /// places; `None` when the source gives none. Added in contract 1.1.0: optional, so
    /// 1.0.0 readers skip it and 1.1.0 readers get `None` from 1.0.0 data.
    pub spend_usd: Option<Money>,
    /// Normalised status.
    pub status: Option<CampaignStatus>,
    /// Set on booking rows.
    pub booking: Option<Booking>,
    /// Quality score.
    pub quality: QualityScore,
    /// Replaces an earlier row with the same dedupe key.
    pub is_correction: bool,
    /// The bronze event.
    pub bronze_event_id: Id,
}

impl Payload for ProcessedRow {
    const TOPIC: Topic = Topic::SilverDataProcessed;
    const RECORD: &'static str = "DataProcessed";
    /// 1.1.0 added the optional `spend_usd` (a backward and forward compatible change).
    const VERSION: &'static str = "1.1.0";
    /// 1.0.0 producers write no `spend_usd`; they are read as before, and counted as
    /// deprecated until none is left.
    const DEPRECATED_VERSIONS: &'static [&'static str] = &["1.0.0"];
}
