//! `connector.data.raw`: raw report rows as fetched (`connector/data-raw.avsc`).

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    values::{Date, Timestamp},
};

/// How and when a row was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct FetchMetadata {
    /// Fetch time.
    pub fetched_at: Timestamp,
    /// Connector name and version.
    pub connector: String,
    /// API endpoint or file.
    pub source_uri: Option<String>,
    /// DSP account the pull was made for.
    pub account_id: Option<String>,
    /// Result page.
    pub page: Option<i32>,
    /// Successful fetch attempt.
    pub attempt: i32,
}

/// One raw report row (or page), unparsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct RawReport {
    /// Identifies one pull; re-delivered pulls repeat it.
    pub request_id: String,
    /// Source as declared by the connector; validated by bronze.
    pub dsp_type: String,
    /// The report day asked for.
    pub report_date: Date,
    /// Position within the pull.
    pub row_index: i32,
    /// Media type of `raw_payload`.
    pub content_type: String,
    /// The row as received.
    pub raw_payload: String,
    /// Fetch metadata.
    pub fetch: FetchMetadata,
}

impl Payload for RawReport {
    const TOPIC: Topic = Topic::ConnectorDataRaw;
    const RECORD: &'static str = "DataRaw";
}
