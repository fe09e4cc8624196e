//! Producing raw rows to `connector.data.raw`: one event per row keyed by `org_id` with the
//! project partitioner, one correlation id per pull, pipelined sends bounded by
//! `max_in_flight`, an optional rate, and progress lines on stderr.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use envelope::{
    Codec, Date, Event, Id, Source, Timestamp,
    payload::raw::{FetchMetadata, RawReport},
};
use futures::StreamExt as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use topics::{Topic, partition_for};

use crate::sim::{BadKind, SimRow};

/// How to produce.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// Rows awaiting acknowledgement at most.
    pub max_in_flight: usize,
    /// Time between progress lines.
    pub progress_every: Duration,
    /// Rows expected, for progress (`None` = unbounded).
    pub expected: Option<u64>,
}

/// What was produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Rows acknowledged by the broker.
    pub acked: u64,
    /// Rows handed to the producer.
    pub sent: u64,
    /// DV360 footer rows among them.
    pub footers: u64,
    /// Bad rows among them, by kind.
    pub bad: BTreeMap<BadKind, u64>,
    /// Time taken.
    pub elapsed: Duration,
}

impl Totals {
    fn count(&mut self, row: &SimRow) {
        self.sent += 1;
        self.footers += u64::from(row.footer);
        if let Some(kind) = row.bad {
            *self.bad.entry(kind).or_default() += 1;
        }
    }

    /// Bad rows of every kind.
    pub fn bad_total(&self) -> u64 {
        self.bad.values().sum()
    }
}

/// The raw event of one row: one pull is one correlation id (and trace).
pub fn event(row: SimRow, source: &Source) -> Event<RawReport> {
    let mut event = Event::new(
        row.org_id,
        source.clone(),
        RawReport {
            request_id: row.request_id,
            dsp_type: row.dsp_type,
            report_date: Date(row.report_date),
            row_index: row.row_index,
            content_type: row.content_type,
            raw_payload: row.raw_payload,
            fetch: FetchMetadata {
                fetched_at: Timestamp::now(),
                connector: concat!("connector/", env!("CARGO_PKG_VERSION")).to_owned(),
                source_uri: row.source_uri,
                account_id: row.account_id,
                page: row.page,
                attempt: 1,
            },
        },
    );
    event.metadata.correlation_id = Id(uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        event.payload.request_id.as_bytes(),
    ));
    event
}

/// Produce `rows` until they are all acknowledged, or until `stop` completes (rows in flight
/// are still awaited). Fails on the first row the broker refuses.
pub async fn produce(
    codec: &Codec,
    producer: &FutureProducer,
    source: &Source,
    rows: impl Iterator<Item = SimRow>,
    options: &Options,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Totals> {
    let partitions = Topic::ConnectorDataRaw.spec().partitions;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut totals = Totals::default();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let interval = (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate));
    let mut rows = rows.peekable();
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    while (!stopping && rows.peek().is_some()) || !in_flight.is_empty() {
        let room = in_flight.len() < options.max_in_flight.max(1);
        tokio::select! {
            biased;
            () = &mut stop, if !stopping => stopping = true,
            done = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(result) = done {
                    result?;
                    totals.acked += 1;
                }
            }
            () = pace(interval, started, totals.sent), if !stopping && room && rows.peek().is_some() => {
                let Some(row) = rows.next() else { continue };
                totals.count(&row);
                let event = event(row, source);
                let value = codec.encode(&event)?;
                let key = event.record_key();
                let partition = partition_for(event.partition_key(), partitions);
                let producer = producer.clone();
                in_flight.push(async move {
                    producer
                        .send(
                            FutureRecord::to(Topic::ConnectorDataRaw.name())
                                .partition(partition)
                                .key(&key)
                                .payload(&value),
                            Duration::from_secs(60),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|(e, _)| anyhow::anyhow!("producing to connector.data.raw: {e}"))
                });
            }
        }
        if last_progress.elapsed() >= options.progress_every {
            last_progress = Instant::now();
            progress(&totals, options.expected, started);
        }
    }
    totals.elapsed = started.elapsed();
    progress(&totals, options.expected, started);
    Ok(totals)
}

/// Completes when the next row may be sent at the rate (at once without one).
async fn pace(interval: Option<Duration>, started: Instant, sent: u64) {
    if let Some(every) = interval {
        let due = started + every.mul_f64(sent as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

fn progress(totals: &Totals, expected: Option<u64>, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let of = expected.map_or_else(String::new, |n| format!("/{n}"));
    eprintln!(
        "connector: {}{of} rows acknowledged ({:.0}/s), {} bad so far",
        totals.acked,
        totals.acked as f64 / secs,
        totals.bad_total()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimConfig, Simulator};

    #[test]
    fn rows_of_one_pull_share_a_correlation_id() {
        let source = Source {
            service: "connector".into(),
            instance: "t".into(),
        };
        let rows: Vec<SimRow> = Simulator::new(SimConfig {
            orgs: 1,
            campaigns_per_org: 3,
            days: 1,
            dsps: vec![envelope::payload::common::DspType::Ttd],
            bad_share: 0.0,
            ..SimConfig::default()
        })
        .collect();
        assert_eq!(rows.len(), 3);
        let events: Vec<_> = rows.into_iter().map(|r| event(r, &source)).collect();
        assert!(
            events
                .iter()
                .all(|e| e.metadata.correlation_id == events[0].metadata.correlation_id)
        );
        assert_ne!(events[0].metadata.event_id, events[1].metadata.event_id);
        assert_eq!(events[2].payload.row_index, 2);
        assert_eq!(events[0].metadata.org_id, 1);
    }
}
