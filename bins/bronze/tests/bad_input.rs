//! Bad raw rows, generated: bronze reads whatever a DSP or the connector sends — arbitrary
//! text, JSON with unicode oddities, numbers beyond f64 and i64, dates beyond any calendar,
//! absent or extreme org ids (`i64::MIN`, whose hash overflows Java's `abs`), huge payloads
//! — and every row ends either in a cleaned row on the org's partition or in a permanent
//! error with one of bronze's stable codes, never a panic.

use bronze::stage::{Bronze, BronzeRules, Mapped, Parsed, clean, dsp, parse, row_date};
use chrono::{NaiveDate, TimeZone, Utc};
use envelope::{
    Date, Event, Source, Timestamp,
    payload::{
        bronze::CleanedRow,
        common::DspType,
        raw::{FetchMetadata, RawReport},
    },
};
use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
use serde_json::{Map, Value};
use topics::{PartitionKey, Topic, partition_for};

/// Bronze's refusal codes.
const CODES: &[&str] = &[
    "BRONZE_UNKNOWN_DSP_TYPE",
    "BRONZE_MALFORMED_JSON",
    "BRONZE_NOT_AN_OBJECT",
];

/// Source field names bronze maps (so generated rows hit the mapping, not only `extra`).
const FIELDS: &[&str] = &[
    "Date",
    "date_start",
    "Advertiser ID",
    "Insertion Order ID",
    "Campaign ID",
    "campaign_id",
    "Line Item ID",
    "Ad Group ID",
    "adset_id",
    "Impressions",
    "impressions",
    "Clicks",
    "Total Conversions",
    "Media Cost (Advertiser Currency)",
    "spend",
    "Revenue (Adv Currency)",
    "Booked Budget",
    "Flight Start",
    "Flight End",
    "Line Item Status",
    "actions",
];

/// Text that trips parsers: controls, BOM, RTL and zero-width marks, combining characters,
/// astral-plane symbols, lookalike digits and minus signs, dates out of any range.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        Just("\u{feff}2024-12-26".to_owned()),
        Just("2024\u{2010}12\u{2010}26".to_owned()),
        Just("\u{202e}12345".to_owned()),
        Just("１２３４５".to_owned()),
        Just("\u{2212}5".to_owned()),
        Just("e\u{301}\u{301}\u{301}".to_owned()),
        Just("\u{1F4A9}\u{200d}\u{1F525}".to_owned()),
        Just("\0\0\0".to_owned()),
        Just("Total".to_owned()),
        Just("Report Time: \u{0}".to_owned()),
        Just("+262143-12-31".to_owned()),
        Just("-262144-01-01".to_owned()),
        Just("99999999-01-01".to_owned()),
        Just("0000-00-00".to_owned()),
        Just("2024-02-30".to_owned()),
        Just("13/45/2024".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e309".to_owned()),
        Just("NaN".to_owned()),
        Just("-0".to_owned()),
    ]
}

/// A JSON value with odd leaves and some nesting.
fn odd_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        odd_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A row object: mapped fields and others, with odd values.
fn odd_row() -> impl Strategy<Value = Value> {
    vec(
        (
            prop_oneof![
                proptest::sample::select(FIELDS).prop_map(str::to_owned),
                ".{0,12}"
            ],
            odd_json(),
        ),
        0..12,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>()))
}

/// A raw payload: arbitrary text, JSON that is not an object, odd objects, or hand-made
/// JSON text serde_json's own writer would never produce (numbers out of range, lone
/// surrogates, deep nesting).
fn raw_payload() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        odd_json().prop_map(|v| v.to_string()),
        odd_row().prop_map(|v| v.to_string()),
        odd_row().prop_map(|v| v.to_string()),
        Just(r#"{"Impressions": 1e400}"#.to_owned()),
        Just(r#"{"Impressions": -1e400}"#.to_owned()),
        Just(r#"{"Impressions": 123456789012345678901234567890123456789}"#.to_owned()),
        Just(r#"{"Date": "\ud800"}"#.to_owned()),
        Just(r#"{"Campaign ID": "\u0000", "Date": "\uffff"}"#.to_owned()),
        Just(format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000))),
        Just(format!(r#"{{"a":{}1{}}}"#, "[".repeat(200), "]".repeat(200))),
        Just(
            r#"{"actions":[{"action_type":"purchase","value":"9223372036854775807"},{"action_type":"omni_purchase","value":"1"}]}"#
                .to_owned()
        ),
        Just(r#"{"actions":[{"action_type":"purchase","value":{"nested":true}}]}"#.to_owned()),
        Just(r#"{"actions":"not a list"}"#.to_owned()),
    ]
}

fn dsp_type() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(&["dv360", "ttd", "meta", "crm", " DV360 ", "Meta"][..])
            .prop_map(str::to_owned),
        1 => ".*",
        1 => Just("ｄｖ３６０".to_owned()),
    ]
}

/// Any date Avro's `date` (days since the epoch, an int) and chrono can hold.
fn any_date() -> impl Strategy<Value = Date> {
    let min = (NaiveDate::MIN - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
    let max = (NaiveDate::MAX - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days();
    prop_oneof![
        (min as i32..=max as i32).prop_map(|d| Date::from_days_since_epoch(d).expect("in range")),
        Just(Date(NaiveDate::MIN)),
        Just(Date(NaiveDate::MAX)),
    ]
}

fn org_id() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        Just(-1),
        Just(2_147_483_648)
    ]
}

fn report(dsp_type: String, raw_payload: String, report_date: Date, row_index: i32) -> RawReport {
    RawReport {
        request_id: "req-\u{1F4A9}".to_owned(),
        dsp_type,
        report_date,
        row_index,
        content_type: "application/json".to_owned(),
        raw_payload,
        fetch: FetchMetadata {
            fetched_at: Timestamp::now(),
            connector: "test/1".to_owned(),
            source_uri: None,
            account_id: None,
            page: None,
            attempt: 1,
        },
    }
}

fn source() -> Source {
    Source {
        service: "connector".to_owned(),
        instance: "test".to_owned(),
    }
}

/// Run bronze on one raw row through the real codec; the outcome must be a cleaned row on
/// the org's partition (or nothing, for a footer or a duplicate) or a stable refusal.
async fn bronze_outcome(event: &Event<RawReport>) -> Result<Option<CleanedRow>, &'static str> {
    match runtime::testing::check(&Bronze::new(BronzeRules::default()), event).await {
        Ok(checked) => {
            for r in &checked.records {
                let topic = Topic::from_name(r.topic).expect("a known topic");
                assert_eq!(
                    r.partition,
                    partition_for(
                        PartitionKey::Org(event.metadata.org_id),
                        topic.spec().partitions
                    ),
                    "outputs stay on the org's partition"
                );
            }
            let mut rows = checked.events::<CleanedRow>(&envelope::Codec::offline());
            assert!(rows.len() <= 1, "one row in, at most one row out");
            Ok(rows.pop().map(|e| e.payload))
        }
        Err(e) => Err(e.code),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a test runtime")
}

fn check_outcome(
    outcome: Result<Option<CleanedRow>, &'static str>,
    rules: BronzeRules,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(Some(row)) => {
            let ingestion = &row.ingestion;
            prop_assert_eq!(ingestion.complete, ingestion.missing_fields.is_empty());
            prop_assert_eq!(
                ingestion.fresh,
                (-1..=rules.freshness_days).contains(&ingestion.report_age_days)
            );
        }
        Ok(None) => {}
        Err(code) => prop_assert!(CODES.contains(&code), "unstable code {code}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_parses_or_is_refused_with_a_code(dsp in proptest::sample::select(&[DspType::Dv360, DspType::Ttd, DspType::Meta, DspType::Crm][..]), raw in raw_payload()) {
        match parse(dsp, &raw) {
            Ok(Parsed::Row(m)) => prop_assert!(m.row_kind.is_some()),
            Ok(Parsed::Footer) => prop_assert_eq!(dsp, DspType::Dv360),
            Err(e) => {
                prop_assert!(CODES.contains(&e.code()), "{e:?}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn any_dsp_type_is_read_or_refused(text in dsp_type()) {
        if let Err(e) = dsp(&text) {
            prop_assert_eq!(e.code(), "BRONZE_UNKNOWN_DSP_TYPE");
        }
    }

    #[test]
    fn any_date_text_is_a_date_or_none(text in odd_text()) {
        let _ = row_date(&text);
    }

    #[test]
    fn cleaning_never_overflows_on_extreme_dates(
        report_date in any_date(),
        row_date_text in odd_text(),
        ingested_days in any::<i32>(),
        freshness_days in any::<i32>(),
    ) {
        let mut mapped = Mapped::default();
        mapped.fields.insert("date", row_date_text);
        let ingested_at = Utc
            .timestamp_opt(i64::from(ingested_days) * 86_400, 0)
            .single()
            .map_or_else(Timestamp::now, Timestamp);
        let rules = BronzeRules { freshness_days };
        let r = report("dv360".into(), String::new(), report_date, 0);
        let meta = Event::new(1, source(), r.clone()).metadata;
        let row = clean(&r, &meta, DspType::Dv360, mapped, ingested_at, rules);
        prop_assert_eq!(row.ingestion.fresh, (-1..=freshness_days).contains(&row.ingestion.report_age_days));
    }

    #[test]
    fn every_generated_row_is_a_cleaned_row_or_a_coded_refusal(
        org in org_id(),
        dsp_type in dsp_type(),
        raw in raw_payload(),
        report_date in any_date(),
        row_index in any::<i32>(),
    ) {
        let event = Event::new(org, source(), report(dsp_type, raw, report_date, row_index));
        let outcome = runtime().block_on(bronze_outcome(&event));
        check_outcome(outcome, BronzeRules::default())?;
    }
}

#[test]
fn named_nasty_rows_end_in_their_codes() {
    let rt = runtime();
    let cases: &[(i64, &str, String, Result<bool, &str>)] = &[
        (
            i64::MIN,
            "dv360",
            r#"{"Date":"2024-12-26","Insertion Order ID":"1","Line Item ID":"2"}"#.into(),
            Ok(true),
        ),
        (
            i64::MAX,
            "meta",
            r#"{"date_start":"+262143-12-31","campaign_id":"1","adset_id":"2"}"#.into(),
            Ok(true),
        ),
        (
            7,
            "ttd",
            r#"{"Impressions": 1e400}"#.into(),
            Err("BRONZE_MALFORMED_JSON"),
        ),
        (
            7,
            "ttd",
            r#"{"Date": "\ud800"}"#.into(),
            Err("BRONZE_MALFORMED_JSON"),
        ),
        (
            7,
            "ttd",
            format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            Err("BRONZE_MALFORMED_JSON"),
        ),
        (7, "crm", "[1, 2, 3]".into(), Err("BRONZE_NOT_AN_OBJECT")),
        (
            7,
            "crm",
            "\"just text\"".into(),
            Err("BRONZE_NOT_AN_OBJECT"),
        ),
        (7, "dv360\u{0}", "{}".into(), Err("BRONZE_UNKNOWN_DSP_TYPE")),
        (7, "", "{}".into(), Err("BRONZE_UNKNOWN_DSP_TYPE")),
        (
            7,
            "dv360",
            r#"{"Date":"Total","Impressions":"12"}"#.into(),
            Ok(false),
        ),
        // A huge row (8 MiB of one value) is read like any other.
        (
            7,
            "dv360",
            format!(
                r#"{{"Date":"2024-12-26","Line Item":"{}"}}"#,
                "x".repeat(8 << 20)
            ),
            Ok(true),
        ),
    ];
    for (org, dsp_type, raw, want) in cases {
        let event = Event::new(
            *org,
            source(),
            report((*dsp_type).to_owned(), raw.clone(), Date(NaiveDate::MAX), 0),
        );
        let got = rt.block_on(bronze_outcome(&event)).map(|row| row.is_some());
        assert_eq!(&got, want, "org {org}, dsp {dsp_type:?}, raw {:.60}", raw);
    }
}
