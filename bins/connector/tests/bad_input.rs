//! Bad report files, generated: the connector's file ingest reads whatever a DSP delivered —
//! arbitrary bytes, ragged or quoted CSV, BOMs, unicode headers, JSON of every shape, huge
//! files — and either yields rows (each a JSON object bronze can read) or fails with a
//! message naming the file, never a panic.

use chrono::NaiveDate;
use connector::files::{FileSource, csv_rows, json_rows, read};
use proptest::{collection::vec, prelude::*};
use serde_json::Value;

/// CSV-ish text: separators, quotes, line ends and odd characters in any order.
fn csvish() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just(",".to_owned()),
            Just("\"".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\u{feff}".to_owned()),
            Just("\u{202e}".to_owned()),
            Just("１２,３４５".to_owned()),
            Just("\0".to_owned()),
            "[a-zA-Z0-9 .:/-]{0,8}",
            ".{0,4}",
        ],
        0..64,
    )
    .prop_map(|parts| parts.concat())
}

/// Every row is JSON text (bronze refuses those that are not objects, with a code).
fn rows_are_json(rows: &[String]) -> Result<(), TestCaseError> {
    for row in rows {
        prop_assert!(serde_json::from_str::<Value>(row).is_ok(), "{row}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_as_csv_is_rows_of_objects_or_an_error(text in prop_oneof![csvish(), ".*"]) {
        if let Ok(rows) = csv_rows(&text) {
            for row in &rows {
                let v: Value = serde_json::from_str(row).expect("a CSV row is JSON");
                prop_assert!(v.is_object(), "{row}");
            }
        }
    }

    #[test]
    fn any_text_as_json_is_rows_or_an_error(text in prop_oneof![".*", csvish()]) {
        if let Ok(rows) = json_rows(&text) {
            rows_are_json(&rows)?;
        }
    }

    #[test]
    fn any_bytes_in_a_file_are_rows_or_an_error_naming_the_file(
        bytes in vec(any::<u8>(), 0..2048),
        csv in any::<bool>(),
        org in any::<i64>(),
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(if csv { "report.csv" } else { "report.json" });
        std::fs::write(&path, &bytes).expect("write");
        let source = FileSource {
            org_id: org,
            dsp_type: "dv360".into(),
            report_date: NaiveDate::MAX,
        };
        match read(&path, &source) {
            Ok(rows) => {
                for (i, row) in rows.iter().enumerate() {
                    prop_assert_eq!(row.org_id, org);
                    prop_assert_eq!(row.row_index, i as i32);
                }
            }
            Err(e) => prop_assert!(format!("{e:#}").contains("report."), "{e:#}"),
        }
    }
}

#[test]
fn named_nasty_files() {
    // JSON numbers beyond f64, deep nesting and lone surrogates are errors, not panics.
    assert!(json_rows(r#"[{"Impressions": 1e400}]"#).is_err());
    assert!(json_rows(r#"[{"Date": "\ud800"}]"#).is_err());
    assert!(json_rows(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))).is_err());
    // Rows that are not objects reach bronze as written (it refuses them with a code).
    assert_eq!(
        json_rows("[1, \"a\", null]").expect("an array"),
        vec!["1", "\"a\"", "null"]
    );
    // A BOM and a ragged CSV: header names kept, short rows shorter.
    let rows = csv_rows("\u{feff}Date,Impressions\n2024-12-26\n2024-12-26,1,extra\n").expect("csv");
    assert_eq!(rows.len(), 2);
    // A header-only CSV and an empty file have no rows.
    assert!(csv_rows("Date,Impressions\n").expect("csv").is_empty());
    assert!(csv_rows("").expect("csv").is_empty());
    // A huge CSV (50,000 rows, ~2 MB) is read in full.
    let mut big = String::from("Date,Line Item ID,Impressions\n");
    for i in 0..50_000 {
        big.push_str(&format!("2024-12-26,{i},\"{}\"\n", "9".repeat(20)));
    }
    assert_eq!(csv_rows(&big).expect("csv").len(), 50_000);
}
