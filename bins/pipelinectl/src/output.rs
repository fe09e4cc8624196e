//! Output: aligned tables for people, JSON for scripts.

use serde_json::Value;

/// Print `rows` under `headers` as an aligned table, or as a JSON array of objects.
pub(crate) fn print(json: bool, headers: &[&str], rows: &[Vec<String>]) {
    if json {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Object(
                    headers
                        .iter()
                        .zip(r)
                        .map(|(h, v)| ((*h).to_owned(), Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect();
        println!("{}", Value::Array(items));
        return;
    }
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
