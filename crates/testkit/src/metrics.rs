//! Read a stage's Prometheus `/metrics` over plain HTTP/1.0 (no client library needed).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// The sum over all label sets of counter `name` (`<name>_total`) served on
/// `127.0.0.1:<port>/metrics`; `None` when nothing answers there.
pub fn counter_total(port: u16, name: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let prefix = format!("{name}_total");
    Some(
        text.lines()
            .filter(|l| {
                l.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}
