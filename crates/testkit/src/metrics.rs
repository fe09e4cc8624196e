//! Read a stage's Prometheus `/metrics` over plain HTTP/1.0 (no client library needed).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// The text of `127.0.0.1:<port>/metrics`; `None` when nothing answers there.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The samples named exactly `name` (e.g. `adpipe_events_processed_total`,
/// `kafka_consumer_lag`, `adpipe_processing_seconds_count`) in the Prometheus `text`: label
/// part (`{…}` or empty) and value.
pub fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (rest.starts_with(['{', ' '])).then_some(())?;
            Some((labels.trim(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// The sum over all label sets of counter `name` (`<name>_total`) served on
/// `127.0.0.1:<port>/metrics`; `None` when nothing answers there.
pub fn counter_total(port: u16, name: &str) -> Option<f64> {
    let text = scrape(port)?;
    Some(
        samples(&text, &format!("{name}_total"))
            .iter()
            .map(|(_, v)| v)
            .sum(),
    )
}

/// The sum of counter `name` over the label sets that have every `labels` pair (e.g.
/// `[("version", "1.0.0"), ("deprecated", "true")]`); `None` when nothing answers there.
pub fn counter_with_labels(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = scrape(port)?;
    Some(
        samples(&text, &format!("{name}_total"))
            .iter()
            .filter(|(set, _)| {
                labels
                    .iter()
                    .all(|(k, v)| set.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum(),
    )
}

/// [`counter_total`] from async code (the scrape is blocking I/O, run off the runtime's
/// threads); `None` when nothing answers there.
pub async fn counter(port: u16, name: &'static str) -> Option<f64> {
    tokio::task::spawn_blocking(move || counter_total(port, name))
        .await
        .ok()
        .flatten()
}
