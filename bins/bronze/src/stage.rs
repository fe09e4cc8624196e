//! Bronze's rules: read each raw report row schema-on-read by its `dsp_type`, map the source's
//! field names onto one common row shape (values stay text; silver casts them), drop a row
//! pulled twice, and attach ingestion metadata with completeness and freshness checks.
//!
//! # Mapping
//!
//! | common field | dv360 | ttd | meta | crm |
//! | --- | --- | --- | --- | --- |
//! | date | `Date` | `Date` | `date_start` | — |
//! | advertiser_id | `Advertiser ID` | `Advertiser ID` | `account_id` | `Client` |
//! | campaign_id | `Insertion Order ID` | `Campaign ID` | `campaign_id` | `Campaign ID` |
//! | campaign_name | `Insertion Order` | `Campaign` | `campaign_name` | `Campaign` |
//! | entity (type) | line item | ad group | ad set (ad group) | campaign |
//! | entity_id | `Line Item ID` | `Ad Group ID` | `adset_id` | `Campaign ID` |
//! | entity_name | `Line Item` | `Ad Group` | `adset_name` | `Campaign` |
//! | impressions | `Impressions` | `Impressions` | `impressions` | — |
//! | clicks | `Clicks` | `Clicks` | `clicks` | — |
//! | conversions | `Total Conversions` | `Total Click + View Conversions` | purchase `actions` | — |
//! | spend | `Media Cost (Advertiser Currency)` | `Advertiser Cost (Adv Currency)` | `spend` | — |
//! | revenue | `Revenue (Adv Currency)` | — | — | — |
//! | currency | `Advertiser Currency` | `Advertiser Currency Code` | `account_currency` | — |
//! | status | `Line Item Status` | `Ad Group Status` | `adset_status` | `Status` |
//! | booked impressions, budget, revenue | — | — | — | `Booked Impressions`, `Booked Budget`, `Revenue` |
//! | flight start, end | — | — | — | `Flight Start`, `Flight End` |
//!
//! Every other field is kept, as text, in `extra`. JSON numbers become their decimal text,
//! `null` an absent value. Meta's conversions are the sum of the purchase actions
//! (`offsite_conversion.fb_pixel_purchase`, `purchase`, `omni_purchase`).
//!
//! # Checks
//!
//! - Not JSON, not a JSON object, or an unknown `dsp_type`: the record goes to the DLQ
//!   (`BRONZE_MALFORMED_JSON`, `BRONZE_NOT_AN_OBJECT`, `BRONZE_UNKNOWN_DSP_TYPE`).
//! - DV360 summary rows (`Date` = `Total`/`Grand Total`, or starting `Report Time`) are not
//!   data and are skipped.
//! - A row pulled twice (same `request_id` and `row_index`) is dropped, with a
//!   `row.duplicate_dropped` audit event. The key is stored once the row's outputs are
//!   acknowledged (Redis with `--redis-url`, 24 h by default; in memory otherwise).
//! - Completeness: delivery rows require date, campaign id and entity id; booking rows
//!   campaign id, booked budget, flight start and end. Absent or blank ones are listed in
//!   `missing_fields` and `complete` is false; silver scores them.
//! - Freshness: `report_age_days` = ingestion day − row date (the report date when the row
//!   date cannot be read); fresh when between −1 (time zones) and `--freshness-days`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use envelope::{
    Event, Timestamp,
    payload::{
        audit::AuditEvent,
        bronze::{CleanedRow, IngestionMetadata},
        common::{DspType, EntityRef, EntityType, RowKind},
        raw::RawReport,
    },
};
use runtime::{Outputs, ProcessError, Processor};
use serde_json::{Map, Value};
use topics::{ConsumerGroup, Topic};

/// Bronze's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct BronzeRules {
    /// Rows dated more than this many days before ingestion are flagged stale.
    #[arg(long, env = "BRONZE_FRESHNESS_DAYS", default_value_t = 7)]
    pub freshness_days: i32,
}

impl Default for BronzeRules {
    fn default() -> Self {
        BronzeRules { freshness_days: 7 }
    }
}

/// Why a raw row cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `dsp_type` is not one adpipe reads.
    UnknownDsp(String),
    /// The payload is not JSON.
    MalformedJson(String),
    /// The payload is JSON but not an object.
    NotAnObject,
}

impl ParseError {
    /// Stable code for the DLQ header.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::UnknownDsp(_) => "BRONZE_UNKNOWN_DSP_TYPE",
            ParseError::MalformedJson(_) => "BRONZE_MALFORMED_JSON",
            ParseError::NotAnObject => "BRONZE_NOT_AN_OBJECT",
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::UnknownDsp(d) => write!(
                f,
                "unknown dsp_type {d:?} (bronze reads dv360, ttd, meta and crm)"
            ),
            ParseError::MalformedJson(e) => write!(f, "raw_payload is not valid JSON: {e}"),
            ParseError::NotAnObject => f.write_str("raw_payload is JSON but not an object"),
        }
    }
}

/// One raw row, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A data row in the common shape (ingestion metadata still to attach).
    Row(Box<Mapped>),
    /// A report's summary or footer row: not data.
    Footer,
}

/// A row mapped onto the common shape, values as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    /// Delivery or booking.
    pub row_kind: Option<RowKind>,
    /// Grain of `entity_id`.
    pub entity_type: Option<EntityType>,
    /// Common field name → value as written.
    pub fields: BTreeMap<&'static str, String>,
    /// Unmapped source fields.
    pub extra: BTreeMap<String, String>,
}

/// (common field, source field) per DSP.
type Mapping = &'static [(&'static str, &'static str)];

const DV360: Mapping = &[
    ("date", "Date"),
    ("advertiser_id", "Advertiser ID"),
    ("campaign_id", "Insertion Order ID"),
    ("campaign_name", "Insertion Order"),
    ("entity_id", "Line Item ID"),
    ("entity_name", "Line Item"),
    ("impressions", "Impressions"),
    ("clicks", "Clicks"),
    ("conversions", "Total Conversions"),
    ("spend", "Media Cost (Advertiser Currency)"),
    ("revenue", "Revenue (Adv Currency)"),
    ("currency", "Advertiser Currency"),
    ("status", "Line Item Status"),
];

const TTD: Mapping = &[
    ("date", "Date"),
    ("advertiser_id", "Advertiser ID"),
    ("campaign_id", "Campaign ID"),
    ("campaign_name", "Campaign"),
    ("entity_id", "Ad Group ID"),
    ("entity_name", "Ad Group"),
    ("impressions", "Impressions"),
    ("clicks", "Clicks"),
    ("conversions", "Total Click + View Conversions"),
    ("spend", "Advertiser Cost (Adv Currency)"),
    ("currency", "Advertiser Currency Code"),
    ("status", "Ad Group Status"),
];

const META: Mapping = &[
    ("date", "date_start"),
    ("advertiser_id", "account_id"),
    ("campaign_id", "campaign_id"),
    ("campaign_name", "campaign_name"),
    ("entity_id", "adset_id"),
    ("entity_name", "adset_name"),
    ("impressions", "impressions"),
    ("clicks", "clicks"),
    ("spend", "spend"),
    ("currency", "account_currency"),
    ("status", "adset_status"),
];

const CRM: Mapping = &[
    ("advertiser_id", "Client"),
    ("campaign_id", "Campaign ID"),
    ("campaign_name", "Campaign"),
    ("entity_id", "Campaign ID"),
    ("entity_name", "Campaign"),
    ("status", "Status"),
    ("booked_impressions", "Booked Impressions"),
    ("booked_budget", "Booked Budget"),
    ("booking_revenue", "Revenue"),
    ("flight_start", "Flight Start"),
    ("flight_end", "Flight End"),
];

/// Meta action types that count as conversions.
const META_CONVERSIONS: &[&str] = &[
    "offsite_conversion.fb_pixel_purchase",
    "purchase",
    "omni_purchase",
];

/// Required fields per row kind (completeness).
const REQUIRED_DELIVERY: &[&str] = &["date", "campaign_id", "entity_id"];
const REQUIRED_BOOKING: &[&str] = &["campaign_id", "booked_budget", "flight_start", "flight_end"];

/// The parser name and version written to `ingestion.parser`.
pub fn parser_name(dsp: DspType) -> String {
    format!("{dsp}/1")
}

/// Read `dsp_type`.
pub fn dsp(dsp_type: &str) -> Result<DspType, ParseError> {
    dsp_type
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| ParseError::UnknownDsp(dsp_type.to_owned()))
}

/// A JSON value as the text the source meant; `None` for null.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Parse one raw payload of `dsp`.
pub fn parse(dsp: DspType, raw: &str) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_str(raw).map_err(|e| ParseError::MalformedJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ParseError::NotAnObject);
    };
    let (mapping, row_kind, entity_type) = match dsp {
        DspType::Dv360 => (DV360, RowKind::Delivery, EntityType::LineItem),
        DspType::Ttd => (TTD, RowKind::Delivery, EntityType::AdGroup),
        DspType::Meta => (META, RowKind::Delivery, EntityType::AdGroup),
        DspType::Crm => (CRM, RowKind::Booking, EntityType::Campaign),
    };
    if dsp == DspType::Dv360 && is_dv360_footer(&obj) {
        return Ok(Parsed::Footer);
    }
    let mut mapped = Mapped {
        row_kind: Some(row_kind),
        entity_type: Some(entity_type),
        ..Mapped::default()
    };
    for (common, source) in mapping {
        if let Some(v) = obj.get(*source).and_then(text) {
            mapped.fields.insert(common, v);
        }
    }
    if dsp == DspType::Meta
        && let Some(Value::Array(actions)) = obj.remove("actions")
    {
        if let Some(c) = meta_conversions(&actions) {
            mapped.fields.insert("conversions", c);
        }
        obj.insert("actions".into(), Value::Array(actions));
    }
    let used: Vec<&str> = mapping.iter().map(|(_, source)| *source).collect();
    mapped.extra = obj
        .iter()
        .filter(|(k, _)| !used.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
        .collect();
    Ok(Parsed::Row(Box::new(mapped)))
}

fn is_dv360_footer(obj: &Map<String, Value>) -> bool {
    let date = obj
        .get("Date")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    date == "total" || date == "grand total" || date.starts_with("report time")
}

/// The sum of Meta's purchase actions, as text; the first value as written when one is not
/// an integer (silver judges it).
fn meta_conversions(actions: &[Value]) -> Option<String> {
    let values: Vec<String> = actions
        .iter()
        .filter(|a| {
            a.get("action_type")
                .and_then(Value::as_str)
                .is_some_and(|t| META_CONVERSIONS.contains(&t))
        })
        .filter_map(|a| a.get("value").and_then(text))
        .collect();
    if values.is_empty() {
        return None;
    }
    let sum: Option<i64> = values
        .iter()
        .map(|v| v.trim().parse::<i64>().ok())
        .try_fold(0i64, |acc, v| acc.checked_add(v?));
    Some(sum.map_or_else(|| values[0].clone(), |s| s.to_string()))
}

/// A row date in any format the sources write (time of day ignored).
pub fn row_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let day = s.split(['T', ' ']).next().unwrap_or(s);
    ["%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(day, f).ok())
}

/// Attach ingestion metadata and build the cleaned row.
pub fn clean(
    report: &RawReport,
    raw_event: &envelope::EventMetadata,
    dsp: DspType,
    mapped: Mapped,
    ingested_at: Timestamp,
    rules: BronzeRules,
) -> CleanedRow {
    let mut f = mapped.fields;
    let row_kind = mapped.row_kind.unwrap_or(RowKind::Delivery);
    let required = match row_kind {
        RowKind::Delivery => REQUIRED_DELIVERY,
        RowKind::Booking => REQUIRED_BOOKING,
    };
    let missing_fields: Vec<String> = required
        .iter()
        .filter(|k| f.get(**k).is_none_or(|v| v.trim().is_empty()))
        .map(|k| (*k).to_owned())
        .collect();
    let dated = f
        .get("date")
        .and_then(|d| row_date(d))
        .unwrap_or(report.report_date.0);
    let age = (ingested_at.0.date_naive() - dated).num_days();
    let report_age_days = i32::try_from(age).unwrap_or(if age < 0 { i32::MIN } else { i32::MAX });
    let mut take = |k: &str| f.remove(k);
    CleanedRow {
        request_id: report.request_id.clone(),
        dsp_type: dsp,
        row_kind,
        report_date: report.report_date,
        row_index: report.row_index,
        date: take("date"),
        advertiser_id: take("advertiser_id"),
        campaign_id: take("campaign_id"),
        campaign_name: take("campaign_name"),
        entity_type: mapped.entity_type.unwrap_or(EntityType::Other),
        entity_id: take("entity_id"),
        entity_name: take("entity_name"),
        impressions: take("impressions"),
        clicks: take("clicks"),
        conversions: take("conversions"),
        spend: take("spend"),
        revenue: take("revenue"),
        currency: take("currency"),
        status: take("status"),
        booked_impressions: take("booked_impressions"),
        booked_budget: take("booked_budget"),
        booking_revenue: take("booking_revenue"),
        flight_start: take("flight_start"),
        flight_end: take("flight_end"),
        extra: mapped.extra,
        ingestion: IngestionMetadata {
            ingested_at,
            raw_event_id: raw_event.event_id,
            parser: parser_name(dsp),
            complete: missing_fields.is_empty(),
            missing_fields,
            report_age_days,
            fresh: (-1..=rules.freshness_days).contains(&report_age_days),
        },
    }
}

/// The idempotency key of a pulled row.
pub fn pull_key(report: &RawReport) -> String {
    format!("{}/{}", report.request_id, report.row_index)
}

/// The bronze stage.
#[derive(Debug, Default)]
pub struct Bronze {
    rules: BronzeRules,
}

impl Bronze {
    /// A stage with `rules`.
    pub fn new(rules: BronzeRules) -> Bronze {
        Bronze { rules }
    }
}

impl Processor for Bronze {
    type Input = Event<RawReport>;
    const GROUP: ConsumerGroup = ConsumerGroup::BronzeProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::BronzeDataCleaned, Topic::AuditEvents]
    }

    /// A pulled row's key, looked up with the event ids of the rows queued ahead.
    fn idempotency_key(input: &Event<RawReport>) -> Option<String> {
        Some(pull_key(&input.payload))
    }

    async fn process(
        &self,
        input: Event<RawReport>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let report = &input.payload;
        let reject = |e: ParseError| ProcessError::permanent(e.code(), e.to_string());
        let dsp = dsp(&report.dsp_type).map_err(reject)?;
        let mapped = match parse(dsp, &report.raw_payload).map_err(reject)? {
            Parsed::Row(m) => *m,
            Parsed::Footer => return Ok(()),
        };
        let key = pull_key(report);
        if out.seen_key(&key).await {
            return out.emit(AuditEvent::data_decision(
                Self::GROUP.name(),
                "row.duplicate_dropped",
                EntityRef {
                    entity_type: EntityType::Report,
                    entity_id: report.request_id.clone(),
                    name: None,
                },
                input.metadata.timestamp,
                format!(
                    "row {} of pull {} was already ingested",
                    report.row_index, report.request_id
                ),
                [
                    ("request_id".to_owned(), report.request_id.clone()),
                    ("row_index".to_owned(), report.row_index.to_string()),
                    ("dsp_type".to_owned(), dsp.to_string()),
                ]
                .into(),
            ));
        }
        let row = clean(
            report,
            &input.metadata,
            dsp,
            mapped,
            Timestamp::now(),
            self.rules,
        );
        out.emit(row)?;
        out.mark_when_acked(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envelope::{Date, Source, payload::raw::FetchMetadata};

    fn fields(p: Parsed) -> BTreeMap<&'static str, String> {
        match p {
            Parsed::Row(m) => m.fields,
            Parsed::Footer => panic!("a data row"),
        }
    }

    #[test]
    fn dv360_rows_map_their_csv_headers() {
        let raw = r#"{"Date":"2024/12/26","Advertiser ID":"123","Insertion Order ID":"io-9","Line Item ID":"456","Line Item":"Brand  ","Impressions":"12,345","Clicks":"","Total Conversions":"3","Media Cost (Advertiser Currency)":"12.345","Revenue (Adv Currency)":"20","Advertiser Currency":"EUR","Exchange Rate":"1.0"}"#;
        let Parsed::Row(m) = parse(DspType::Dv360, raw).expect("parses") else {
            panic!("a data row")
        };
        assert_eq!(m.entity_type, Some(EntityType::LineItem));
        assert_eq!(m.fields["date"], "2024/12/26");
        assert_eq!(m.fields["campaign_id"], "io-9");
        assert_eq!(m.fields["entity_id"], "456");
        assert_eq!(m.fields["entity_name"], "Brand  ", "values stay as written");
        assert_eq!(m.fields["impressions"], "12,345");
        assert_eq!(m.fields["clicks"], "", "an empty cell is kept empty");
        assert_eq!(m.fields["spend"], "12.345");
        assert_eq!(m.fields["revenue"], "20");
        assert_eq!(m.extra["Exchange Rate"], "1.0", "unmapped fields are kept");
    }

    #[test]
    fn dv360_summary_rows_are_footers() {
        for date in [
            "Total",
            "grand total",
            "Report Time: 2024/12/27 03:00:00 UTC",
        ] {
            let raw = format!(r#"{{"Date":"{date}","Impressions":"1,000"}}"#);
            assert_eq!(parse(DspType::Dv360, &raw), Ok(Parsed::Footer), "{date}");
        }
        // Only DV360 writes footers: a TTD row dated "Total" is a (bad) data row.
        assert!(matches!(
            parse(DspType::Ttd, r#"{"Date":"Total"}"#),
            Ok(Parsed::Row(_))
        ));
    }

    #[test]
    fn ttd_numbers_become_their_decimal_text() {
        let raw = r#"{"Date":"2024-12-26T00:00:00","Campaign ID":"x7k2p9a","Ad Group ID":"ag1","Impressions":1200,"Clicks":7,"Advertiser Cost (Adv Currency)":12.3456789,"Partner Cost (USD)":10.5,"Total Click + View Conversions":0,"Advertiser Currency Code":"USD","Notes":null}"#;
        let Parsed::Row(m) = parse(DspType::Ttd, raw).expect("parses") else {
            panic!("a data row")
        };
        assert_eq!(m.entity_type, Some(EntityType::AdGroup));
        assert_eq!(m.fields["impressions"], "1200");
        assert_eq!(m.fields["spend"], "12.3456789");
        assert_eq!(m.fields["conversions"], "0");
        assert_eq!(m.extra["Partner Cost (USD)"], "10.5");
        assert!(!m.extra.contains_key("Notes"), "null is absent");
    }

    #[test]
    fn meta_conversions_sum_the_purchase_actions() {
        let raw = r#"{"date_start":"2024-12-26","date_stop":"2024-12-26","account_id":"act_1","campaign_id":"238","adset_id":"239","impressions":"1234","clicks":"12","spend":"12.34","actions":[{"action_type":"link_click","value":"12"},{"action_type":"offsite_conversion.fb_pixel_purchase","value":"3"},{"action_type":"omni_purchase","value":"2"}]}"#;
        let f = fields(parse(DspType::Meta, raw).expect("parses"));
        assert_eq!(f["conversions"], "5");
        assert_eq!(f["date"], "2024-12-26");
        assert_eq!(f["entity_id"], "239");
        assert_eq!(
            meta_conversions(
                &serde_json::from_str::<Vec<Value>>(
                    r#"[{"action_type":"purchase","value":"N/A"}]"#
                )
                .expect("json")
            ),
            Some("N/A".to_owned()),
            "a value that is not an integer is passed on for silver to judge"
        );
        assert_eq!(meta_conversions(&[]), None);
    }

    #[test]
    fn crm_rows_are_bookings_of_a_campaign() {
        let raw = r#"{"Client":"Acme","Campaign":"Spring","Campaign ID":"c-1","Booked Impressions":"1,200,000","Booked Budget":"$12,345.50","Revenue":"$15,000.00","Flight Start":"12/01/2024","Flight End":"12/31/2024","Notes":"call back"}"#;
        let Parsed::Row(m) = parse(DspType::Crm, raw).expect("parses") else {
            panic!("a data row")
        };
        assert_eq!(m.row_kind, Some(RowKind::Booking));
        assert_eq!(m.entity_type, Some(EntityType::Campaign));
        assert_eq!(m.fields["entity_id"], "c-1");
        assert_eq!(m.fields["booked_budget"], "$12,345.50");
        assert_eq!(m.fields["flight_start"], "12/01/2024");
        assert_eq!(m.extra["Notes"], "call back");
    }

    #[test]
    fn unreadable_rows_say_why() {
        assert_eq!(
            parse(DspType::Ttd, r#"{"Date":"2024-12-26","#).map_err(|e| e.code()),
            Err("BRONZE_MALFORMED_JSON")
        );
        assert_eq!(
            parse(DspType::Meta, "[1,2]").map_err(|e| e.code()),
            Err("BRONZE_NOT_AN_OBJECT")
        );
        assert_eq!(dsp(" DV360 "), Ok(DspType::Dv360));
        let e = dsp("yahoo").expect_err("unknown");
        assert_eq!(e.code(), "BRONZE_UNKNOWN_DSP_TYPE");
        assert!(e.to_string().contains("\"yahoo\""));
    }

    #[test]
    fn row_dates_in_every_source_format() {
        let d = NaiveDate::from_ymd_opt(2024, 12, 26);
        for s in [
            "2024-12-26",
            "2024/12/26",
            "2024-12-26T00:00:00",
            "12/26/2024",
            " 2024-12-26 ",
        ] {
            assert_eq!(row_date(s), d, "{s}");
        }
        for s in ["2024-02-30", "2024/13/01", "02/30/2024", "", "Total"] {
            assert_eq!(row_date(s), None, "{s}");
        }
    }

    fn report(dsp: &str, raw: &str, date: NaiveDate) -> (RawReport, envelope::EventMetadata) {
        let report = RawReport {
            request_id: "req-1".into(),
            dsp_type: dsp.into(),
            report_date: Date(date),
            row_index: 3,
            content_type: "application/json".into(),
            raw_payload: raw.into(),
            fetch: FetchMetadata {
                fetched_at: Timestamp::now(),
                connector: "test".into(),
                source_uri: None,
                account_id: None,
                page: None,
                attempt: 1,
            },
        };
        let e = Event::new(
            7,
            Source {
                service: "connector".into(),
                instance: "t".into(),
            },
            report.clone(),
        );
        (report, e.metadata)
    }

    fn at(y: i32, m: u32, d: u32) -> Timestamp {
        Timestamp(
            NaiveDate::from_ymd_opt(y, m, d)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .expect("valid")
                .and_utc(),
        )
    }

    #[test]
    fn completeness_lists_the_missing_required_fields() {
        let date = NaiveDate::from_ymd_opt(2024, 12, 26).expect("date");
        let raw = r#"{"Date":"2024/12/26","Insertion Order ID":"  ","Impressions":"5"}"#;
        let (r, meta) = report("dv360", raw, date);
        let Parsed::Row(m) = parse(DspType::Dv360, raw).expect("parses") else {
            panic!("row")
        };
        let row = clean(
            &r,
            &meta,
            DspType::Dv360,
            *m,
            at(2024, 12, 27),
            BronzeRules::default(),
        );
        assert_eq!(
            row.ingestion.missing_fields,
            vec!["campaign_id", "entity_id"]
        );
        assert!(!row.ingestion.complete);
        assert_eq!(row.ingestion.raw_event_id, meta.event_id);
        assert_eq!(row.ingestion.parser, "dv360/1");
        assert_eq!((row.request_id.as_str(), row.row_index), ("req-1", 3));
        assert_eq!(row.impressions.as_deref(), Some("5"));
    }

    #[test]
    fn freshness_counts_days_from_the_row_date() {
        let date = NaiveDate::from_ymd_opt(2024, 12, 26).expect("date");
        let rules = BronzeRules { freshness_days: 7 };
        let clean_at = |raw: &str, now: Timestamp| {
            let (r, meta) = report("ttd", raw, date);
            let Parsed::Row(m) = parse(DspType::Ttd, raw).expect("parses") else {
                panic!("row")
            };
            clean(&r, &meta, DspType::Ttd, *m, now, rules).ingestion
        };
        let fresh = clean_at(r#"{"Date":"2024-12-26T00:00:00"}"#, at(2025, 1, 2));
        assert_eq!((fresh.report_age_days, fresh.fresh), (7, true));
        let stale = clean_at(r#"{"Date":"2024-12-26T00:00:00"}"#, at(2025, 1, 3));
        assert_eq!((stale.report_age_days, stale.fresh), (8, false));
        let future = clean_at(r#"{"Date":"2024-12-29T00:00:00"}"#, at(2024, 12, 26));
        assert_eq!((future.report_age_days, future.fresh), (-3, false));
        // An unreadable row date falls back to the report date.
        let fallback = clean_at(r#"{"Date":"2024-02-30"}"#, at(2024, 12, 27));
        assert_eq!(fallback.report_age_days, 1);
    }

    #[tokio::test]
    async fn a_row_pulled_twice_is_dropped_footers_skipped_unknown_sources_refused() {
        use runtime::testing::{check, check_with_store};
        let stage = Bronze::default();
        let date = NaiveDate::from_ymd_opt(2024, 12, 26).expect("date");
        let raw = r#"{"Date":"2024/12/26","Insertion Order ID":"io","Line Item ID":"li","Impressions":"5"}"#;
        let (r, _) = report("dv360", raw, date);
        let event = Event::new(
            7,
            Source {
                service: "connector".into(),
                instance: "t".into(),
            },
            r,
        );
        let codec = envelope::Codec::offline();
        let store = runtime::dedupe::Dedupe::memory(16);
        let first = check_with_store(&stage, &event, &store)
            .await
            .expect("processed");
        let rows = first.events::<CleanedRow>(&codec);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload.entity_id.as_deref(), Some("li"));
        // The same pull delivered again as a new event: dropped, and audited.
        let mut again = event.clone();
        again.metadata.event_id = envelope::Id::new();
        let second = check_with_store(&stage, &again, &store)
            .await
            .expect("processed");
        assert!(second.events::<CleanedRow>(&codec).is_empty());
        let audit = second.events::<AuditEvent>(&codec);
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].payload.action, "row.duplicate_dropped");
        assert_eq!(audit[0].payload.details["row_index"], "3");
        // Another row of the same pull is not a duplicate.
        let mut next = event.clone();
        next.metadata.event_id = envelope::Id::new();
        next.payload.row_index = 4;
        let third = check_with_store(&stage, &next, &store)
            .await
            .expect("processed");
        assert_eq!(third.events::<CleanedRow>(&codec).len(), 1);
        let footer = Event::new(
            7,
            Source {
                service: "connector".into(),
                instance: "t".into(),
            },
            report("dv360", r#"{"Date":"Total"}"#, date).0,
        );
        assert!(check(&stage, &footer).await.expect("ok").records.is_empty());
        let broken = Event::new(
            7,
            Source {
                service: "connector".into(),
                instance: "t".into(),
            },
            report("yahoo", raw, date).0,
        );
        assert_eq!(
            check(&stage, &broken).await.map(|_| ()).map_err(|e| e.code),
            Err("BRONZE_UNKNOWN_DSP_TYPE")
        );
    }
}
