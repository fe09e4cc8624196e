//! Bronze rows for the silver binary's tests.

use std::collections::BTreeMap;

use envelope::{
    Date, Event, Id, Source, Timestamp,
    payload::{
        bronze::{CleanedRow, IngestionMetadata},
        common::{DspType, EntityType, RowKind},
    },
};

/// Row `i` of a Meta delivery report for `date` (`YYYY-MM-DD`, as the DSP wrote it; an
/// impossible date is quarantined by silver).
pub(crate) fn row(i: usize, date: &str) -> CleanedRow {
    CleanedRow {
        request_id: format!("req-{i}"),
        dsp_type: DspType::Meta,
        row_kind: RowKind::Delivery,
        report_date: Date::ymd(2024, 12, 26).expect("date"),
        row_index: i as i32,
        date: Some(date.into()),
        advertiser_id: Some("act_1".into()),
        campaign_id: Some(format!(" c{} ", i % 5)),
        campaign_name: Some("Winter".into()),
        entity_type: EntityType::AdGroup,
        entity_id: Some(format!("adset-{i}")),
        entity_name: None,
        impressions: Some("1,000".into()),
        clicks: Some("10".into()),
        conversions: Some("1".into()),
        spend: Some("12.345".into()),
        revenue: None,
        currency: Some("usd".into()),
        status: Some("ACTIVE".into()),
        booked_impressions: None,
        booked_budget: None,
        booking_revenue: None,
        flight_start: None,
        flight_end: None,
        extra: BTreeMap::new(),
        ingestion: IngestionMetadata {
            ingested_at: Timestamp::from_millis(1_735_257_600_000).expect("ts"), // 2024-12-27
            raw_event_id: Id::new(),
            parser: "meta/1".into(),
            missing_fields: vec![],
            complete: true,
            report_age_days: 1,
            fresh: true,
        },
    }
}

/// Row `i` as bronze emits it, for org `i % 7 + 1`, dated 2024-12-26 (silver passes it).
#[allow(dead_code, reason = "not every test file uses every helper")]
pub(crate) fn cleaned(i: usize) -> Event<CleanedRow> {
    Event::new(
        (i % 7 + 1) as i64,
        Source {
            service: "bronze-processor".into(),
            instance: "t".into(),
        },
        row(i, "2024-12-26"),
    )
}
