//! Report-file ingest: a JSON or CSV report a DSP delivered, read into raw rows unchanged
//! (bronze parses them). JSON: an array of row objects, or an object whose `data` array holds
//! them (Meta's insights). CSV: the first line is the header; each row becomes a JSON object
//! keyed by it, every value a string, so quirks such as `12,345` reach bronze as written.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::sim::SimRow;

/// Where the rows of a file belong.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The organisation the report is for.
    pub org_id: i64,
    /// The source, as the connector declares it (`dv360`, `ttd`, `meta`, `crm`).
    pub dsp_type: String,
    /// The report day.
    pub report_date: NaiveDate,
}

/// The rows of the report file at `path`, in file order.
pub fn read(path: &Path, source: &FileSource) -> anyhow::Result<Vec<SimRow>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading report file {}", path.display()))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let objects = if is_csv {
        csv_rows(&text).with_context(|| format!("reading {} as CSV", path.display()))?
    } else {
        json_rows(&text).with_context(|| format!("reading {} as JSON", path.display()))?
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // One file is one pull: re-ingesting the same file repeats its request id, so bronze
    // drops the rows it already has.
    let request_id = format!(
        "file-{}-{}-{}-{name}",
        source.dsp_type, source.org_id, source.report_date
    );
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, row)| SimRow {
            org_id: source.org_id,
            request_id: request_id.clone(),
            dsp_type: source.dsp_type.clone(),
            report_date: source.report_date,
            row_index: i32::try_from(i).unwrap_or(i32::MAX),
            content_type: "application/json".to_owned(),
            raw_payload: row,
            account_id: None,
            page: None,
            source_uri: Some(format!("file://{}", path.display())),
            bad: None,
            footer: false,
        })
        .collect())
}

/// Rows of a JSON report, each as JSON text.
pub fn json_rows(text: &str) -> anyhow::Result<Vec<String>> {
    let value: Value = serde_json::from_str(text)?;
    let rows = match value {
        Value::Array(rows) => rows,
        Value::Object(mut obj) => match obj.remove("data") {
            Some(Value::Array(rows)) => rows,
            _ => bail!("expected an array of rows, or an object with a \"data\" array"),
        },
        _ => bail!("expected an array of rows, or an object with a \"data\" array"),
    };
    Ok(rows.iter().map(Value::to_string).collect())
}

/// Rows of a CSV report (header first), each as a JSON object of strings.
pub fn csv_rows(text: &str) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        if record.iter().all(|v| v.trim().is_empty()) {
            continue; // blank line
        }
        let obj: Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
            .collect();
        rows.push(Value::Object(obj).to_string());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_values_as_written() {
        let text =
            "Date,Line Item ID,Impressions\n2024/12/26,456,\"12,345\"\n,,\nTotal,,\"12,345\"\n";
        let rows = csv_rows(text).expect("csv");
        assert_eq!(
            rows.len(),
            2,
            "the blank line is skipped, the footer kept for bronze"
        );
        let first: Value = serde_json::from_str(&rows[0]).expect("json");
        assert_eq!(first["Impressions"], "12,345");
        assert_eq!(first["Line Item ID"], "456");
    }

    #[test]
    fn json_reports_are_arrays_or_meta_pages() {
        assert_eq!(json_rows(r#"[{"a":1},{"a":2}]"#).expect("array").len(), 2);
        let meta = r#"{"data":[{"impressions":"1"}],"paging":{"cursors":{}}}"#;
        assert_eq!(
            json_rows(meta).expect("page"),
            vec![r#"{"impressions":"1"}"#]
        );
        assert!(json_rows(r#"{"rows":[]}"#).is_err());
        assert!(json_rows("not json").is_err());
    }

    #[test]
    fn a_file_is_one_pull() {
        let dir = std::env::temp_dir().join(format!("adpipe-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("dv360.csv");
        std::fs::write(&path, "Date,Impressions\n2024/12/26,5\n2024/12/26,6\n").expect("write");
        let source = FileSource {
            org_id: 7,
            dsp_type: "dv360".into(),
            report_date: NaiveDate::from_ymd_opt(2024, 12, 26).expect("date"),
        };
        let rows = read(&path, &source).expect("read");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].request_id, rows[1].request_id);
        assert_eq!((rows[0].row_index, rows[1].row_index), (0, 1));
        assert_eq!(
            read(&path, &source).expect("again")[0].request_id,
            rows[0].request_id
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
