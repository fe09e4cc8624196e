//! The runtime's Prometheus metrics. Every metric name of a stage is defined here.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

/// Events processed successfully, by stage and topic (`adpipe_events_processed_total`).
pub const PROCESSED: &str = "adpipe_events_processed";
/// Events that failed (before retry or DLQ), by stage, topic and error code.
pub const FAILED: &str = "adpipe_events_failed";
/// Retries of retryable errors.
pub const RETRIED: &str = "adpipe_events_retried";
/// Records sent to a DLQ, by stage, topic and error code.
pub const DEAD_LETTERED: &str = "adpipe_events_dead_lettered";
/// Events skipped because their event_id was already processed.
pub const DEDUPLICATED: &str = "adpipe_events_deduplicated";
/// Dedupe store failures (processing continued at-least-once).
pub const DEDUPE_UNAVAILABLE: &str = "adpipe_dedupe_unavailable";
/// Round trips to the dedupe store asking whether ids were seen; a look-ahead batch of
/// records (their event ids and the stage's own keys) is one.
pub const DEDUPE_LOOKUPS: &str = "adpipe_dedupe_lookups";
/// Records written to output topics and acknowledged (DLQ records not included).
pub const PRODUCED: &str = "adpipe_records_produced";
/// Output records the broker refused (or that timed out) and that were sent again.
pub const PRODUCE_RETRIED: &str = "adpipe_produce_retried";
/// Rows a stage quarantined (silver's quality verdict), counted by the stage.
pub const QUARANTINED: &str = "adpipe_rows_quarantined";
/// Seconds from record arrival to offset stored.
pub const PROCESSING_SECONDS: &str = "adpipe_processing_seconds";
/// Records read, by topic (`rate()` gives the spec's messages in per second).
pub const MESSAGES_IN: &str = "kafka_messages_in";
/// Bytes read, by topic (`rate()` gives bytes in per second).
pub const BYTES_IN: &str = "kafka_bytes_in";
/// High watermark minus the stage's position, by topic and partition.
pub const CONSUMER_LAG: &str = "kafka_consumer_lag";
/// 1 while the DLQ circuit breaker holds the stage stopped.
pub const BREAKER_OPEN: &str = "adpipe_dlq_breaker_open";

/// Records consumed per writer schema and event version, by stage (the consumer group),
/// topic, `version`, `schema_id` and `deprecated` (`adpipe_schema_version_in_use_total`):
/// a deprecated version can be retired once its count stops growing everywhere.
pub const SCHEMA_VERSION_IN_USE: &str = "adpipe_schema_version_in_use";

/// `[("stage", …), ("topic", …)]` and friends.
pub type Labels = Vec<(&'static str, String)>;

/// All runtime metrics of one stage.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// See [`PROCESSED`].
    pub processed: Family<Labels, Counter>,
    /// See [`FAILED`].
    pub failed: Family<Labels, Counter>,
    /// See [`RETRIED`].
    pub retried: Family<Labels, Counter>,
    /// See [`DEAD_LETTERED`].
    pub dead_lettered: Family<Labels, Counter>,
    /// See [`DEDUPLICATED`].
    pub deduplicated: Family<Labels, Counter>,
    /// See [`DEDUPE_UNAVAILABLE`].
    pub dedupe_unavailable: Counter,
    /// See [`PRODUCED`].
    pub produced: Counter,
    /// See [`PRODUCE_RETRIED`].
    pub produce_retried: Counter,
    /// See [`QUARANTINED`].
    pub quarantined: Counter,
    /// See [`PROCESSING_SECONDS`].
    pub processing_seconds: Histogram,
    /// See [`MESSAGES_IN`].
    pub messages_in: Family<Labels, Counter>,
    /// See [`BYTES_IN`].
    pub bytes_in: Family<Labels, Counter>,
    /// See [`CONSUMER_LAG`].
    pub lag: Family<Labels, Gauge>,
    /// See [`BREAKER_OPEN`].
    pub breaker_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            processed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            deduplicated: Family::default(),
            dedupe_unavailable: Counter::default(),
            produced: Counter::default(),
            produce_retried: Counter::default(),
            quarantined: Counter::default(),
            processing_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            messages_in: Family::default(),
            bytes_in: Family::default(),
            lag: Family::default(),
            breaker_open: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(PROCESSED, "Events processed", m.processed.clone());
        registry.register(FAILED, "Events that failed", m.failed.clone());
        registry.register(RETRIED, "Retries of retryable errors", m.retried.clone());
        registry.register(
            DEAD_LETTERED,
            "Records sent to a DLQ",
            m.dead_lettered.clone(),
        );
        registry.register(
            DEDUPLICATED,
            "Events skipped as already processed",
            m.deduplicated.clone(),
        );
        registry.register(
            DEDUPE_UNAVAILABLE,
            "Dedupe store failures",
            m.dedupe_unavailable.clone(),
        );
        registry.register(
            PRODUCED,
            "Records produced and acknowledged",
            m.produced.clone(),
        );
        registry.register(
            PRODUCE_RETRIED,
            "Output records sent again after a refused or timed-out produce",
            m.produce_retried.clone(),
        );
        registry.register(QUARANTINED, "Rows quarantined", m.quarantined.clone());
        registry.register(
            PROCESSING_SECONDS,
            "Arrival to offset stored",
            m.processing_seconds.clone(),
        );
        registry.register(MESSAGES_IN, "Records read", m.messages_in.clone());
        registry.register(BYTES_IN, "Bytes read", m.bytes_in.clone());
        registry.register(CONSUMER_LAG, "High watermark minus position", m.lag.clone());
        registry.register(
            BREAKER_OPEN,
            "DLQ circuit breaker open",
            m.breaker_open.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The runtime's metrics plus those `register` adds (a stage's own).
    pub fn with(register: impl FnOnce(&mut Registry)) -> Metrics {
        let mut m = Metrics::default();
        register(&mut m.registry);
        m
    }

    /// The metrics of a running stage: the runtime's, the stage's own
    /// ([`crate::Processor::register_metrics`]), the schema versions its codec decoded and its
    /// dedupe store's lookups.
    pub fn for_stage<P: crate::Processor>(
        processor: &P,
        codec: &Arc<envelope::Codec>,
        dedupe: &crate::dedupe::Dedupe,
    ) -> Metrics {
        Metrics::with(|r| {
            processor.register_metrics(r);
            SchemaVersions::register(r, P::GROUP.name(), codec.clone());
            r.register(
                DEDUPE_LOOKUPS,
                "Dedupe store lookup round trips",
                dedupe.lookups(),
            );
        })
    }

    /// The sum of every sample of the counter `name` (e.g. [`PROCESSED`]) across its labels.
    pub fn total(&self, name: &str) -> u64 {
        let prefix = format!("{name}_total");
        self.render()
            .lines()
            .filter(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// [`SCHEMA_VERSION_IN_USE`], read from the codec's per-writer-schema counts at each scrape
/// (the decode path only bumps an atomic counter).
#[derive(Debug)]
pub struct SchemaVersions {
    stage: &'static str,
    codec: Arc<envelope::Codec>,
}

impl SchemaVersions {
    /// Register the metric of `stage`'s `codec` in `registry`.
    pub fn register(registry: &mut Registry, stage: &'static str, codec: Arc<envelope::Codec>) {
        registry.register_collector(Box::new(SchemaVersions { stage, codec }));
    }
}

impl Collector for SchemaVersions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self.codec.schema_usage();
        if usage.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            SCHEMA_VERSION_IN_USE,
            "Records consumed per writer schema and event version",
            None,
            MetricType::Counter,
        )?;
        for u in usage {
            let labels: Labels = vec![
                ("stage", self.stage.to_owned()),
                ("topic", u.topic.name().to_owned()),
                ("version", u.version),
                ("schema_id", u.schema_id.to_string()),
                ("deprecated", u.deprecated.to_string()),
            ];
            ConstCounter::new(u.records).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
