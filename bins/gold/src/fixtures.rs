//! A silver delivery row with plain values, for gold's tests and benchmark (each changes the
//! fields it cares about).

use envelope::{
    Date, Event, Id, Money, Source,
    payload::{
        common::{DspType, EntityRef, EntityType, RowKind},
        silver::{ProcessedRow, QualityScore, QualityVerdict},
    },
};

/// A TTD ad-group row of `org` that passed silver with 100 points: `impressions`, 1 click
/// per 100 impressions, 1 conversion per 1,000, and `spend`.
pub fn delivery_row(
    org: i64,
    campaign: &str,
    entity: &str,
    date: Date,
    impressions: i64,
    spend: Money,
) -> Event<ProcessedRow> {
    Event::new(
        org,
        Source {
            service: "silver-processor".into(),
            instance: "fixture".into(),
        },
        ProcessedRow {
            request_id: format!("req-{entity}-{date}"),
            dsp_type: DspType::Ttd,
            row_kind: RowKind::Delivery,
            date,
            entity: EntityRef {
                entity_type: EntityType::AdGroup,
                entity_id: entity.into(),
                name: None,
            },
            campaign_id: campaign.into(),
            campaign_name: None,
            advertiser_id: None,
            impressions,
            clicks: impressions / 100,
            conversions: impressions / 1000,
            spend,
            revenue: None,
            currency: Some("USD".into()),
            spend_usd: None,
            status: None,
            booking: None,
            quality: QualityScore {
                score: 100,
                completeness: 40,
                validity: 30,
                consistency: 20,
                timeliness: 10,
                verdict: QualityVerdict::Pass,
                reasons: vec![],
            },
            is_correction: false,
            bronze_event_id: Id::new(),
        },
    )
}
