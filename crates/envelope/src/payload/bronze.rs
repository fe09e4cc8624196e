//! `bronze.data.cleaned`: rows mapped onto the common row shape, values still text
//! (`bronze/data-cleaned.avsc`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{DspType, EntityType, RowKind},
    values::{Date, Id, Timestamp},
};

/// Ingestion metadata bronze attaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct IngestionMetadata {
    /// When bronze processed the row.
    pub ingested_at: Timestamp,
    /// The `connector.data.raw` event.
    pub raw_event_id: Id,
    /// Parser name and version.
    pub parser: String,
    /// Required fields absent or empty.
    pub missing_fields: Vec<String>,
    /// All required fields present.
    pub complete: bool,
    /// Age of the row's date at ingestion, in days.
    pub report_age_days: i32,
    /// Within the freshness bound.
    pub fresh: bool,
}

/// One row in the common shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct CleanedRow {
    /// The pull.
    pub request_id: String,
    /// Source.
    pub dsp_type: DspType,
    /// Delivery or booking.
    pub row_kind: RowKind,
    /// The report day asked for.
    pub report_date: Date,
    /// Position within the pull.
    pub row_index: i32,
    /// Row date as written by the source.
    pub date: Option<String>,
    /// Advertiser.
    pub advertiser_id: Option<String>,
    /// Campaign id as written.
    pub campaign_id: Option<String>,
    /// Campaign name.
    pub campaign_name: Option<String>,
    /// Finest grain the source reports at.
    pub entity_type: EntityType,
    /// Id at that grain.
    pub entity_id: Option<String>,
    /// Name at that grain.
    pub entity_name: Option<String>,
    /// Impressions as written.
    pub impressions: Option<String>,
    /// Clicks as written.
    pub clicks: Option<String>,
    /// Conversions as written.
    pub conversions: Option<String>,
    /// Media cost as written.
    pub spend: Option<String>,
    /// Revenue as written.
    pub revenue: Option<String>,
    /// Currency as written.
    pub currency: Option<String>,
    /// Status as written.
    pub status: Option<String>,
    /// Booking: impressions sold, as written.
    pub booked_impressions: Option<String>,
    /// Booking: budget, as written.
    pub booked_budget: Option<String>,
    /// Booking: revenue, as written.
    pub booking_revenue: Option<String>,
    /// Booking: flight start, as written.
    pub flight_start: Option<String>,
    /// Booking: flight end, as written.
    pub flight_end: Option<String>,
    /// Unmapped source fields.
    pub extra: BTreeMap<String, String>,
    /// Ingestion metadata.
    pub ingestion: IngestionMetadata,
}

impl Payload for CleanedRow {
    const TOPIC: Topic = Topic::BronzeDataCleaned;
    const RECORD: &'static str = "DataCleaned";
}
