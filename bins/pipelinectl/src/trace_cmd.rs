//! `pipelinectl trace <id>`: every record of one report pull or user action (its correlation
//! id) or one event (its event id), found in every topic of topic-config.yaml and its DLQ, in
//! time order — so a pull can be followed bronze → silver → gold → alerts.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Headers,
};
use runtime::processor::headers;
use serde::Serialize;
use serde_json::Value;

use crate::{
    Failure, Global, output,
    status_cmd::{self, BrokerError},
};

/// `pipelinectl trace` (its help is on the subcommand in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct TraceArgs {
    /// A correlation id or an event id (UUID).
    id: uuid::Uuid,
    /// Records read at most per topic, from the start of its partitions.
    #[arg(long, env = "PIPELINECTL_TRACE_MAX_RECORDS", default_value_t = 100_000)]
    max_records: u64,
    /// Seconds the whole scan may take; topics not read to their end by then are reported.
    #[arg(long, env = "PIPELINECTL_TRACE_SCAN_SECS", default_value_t = 60)]
    scan_secs: u64,
}

/// Headers that carry the id, also under a prefix (`dlq.original.correlation_id`).
const ID_HEADERS: [&str; 2] = [headers::CORRELATION_ID, headers::ID];

/// Whether header `key` is one of [`ID_HEADERS`], possibly prefixed.
fn is_id_header(key: &str) -> bool {
    ID_HEADERS.iter().any(|name| {
        key == *name
            || key.strip_suffix(name).is_some_and(|prefix| {
                prefix.ends_with('.') || prefix.ends_with('_') || prefix.ends_with('-')
            })
    })
}

/// The DLQ header with the error code (`runtime::dlq::headers::ERROR_CODE`).
const DLQ_ERROR_CODE: &str = "dlq.error.code";

/// How a record was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum MatchedBy {
    /// A `correlation_id` or `ce_id` header.
    Header,
    /// The id appears in the record's value (checked by decoding when the registry answers).
    Value,
}

/// A record that carries the id.
#[derive(Debug)]
struct Found {
    topic_index: usize,
    topic: String,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    headers: BTreeMap<String, String>,
    matched_by: MatchedBy,
    value: Option<Vec<u8>>,
}

/// How far one topic was read.
#[derive(Debug, Serialize)]
struct TopicScan {
    topic: String,
    /// False when the topic is not on the broker.
    exists: bool,
    records_read: u64,
    /// True when every partition was read to its end.
    complete: bool,
    /// Why it is not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

/// One matching record, as printed.
#[derive(Debug, Serialize)]
struct TraceRecord {
    time: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    source: Option<String>,
    ce_type: Option<String>,
    event_id: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    org_id: Option<i64>,
    matched_by: MatchedBy,
    decoded: bool,
    /// For DLQ records, the error code that sent them there.
    #[serde(skip_serializing_if = "Option::is_none")]
    dlq_error: Option<String>,
}

/// The report (`--json` prints it as is).
#[derive(Debug, Serialize)]
struct Trace {
    id: String,
    records: Vec<TraceRecord>,
    topics: Vec<TopicScan>,
    /// False when the schema registry could not be used to decode records.
    decoded: bool,
}

/// Every topic of the configuration, each followed by its DLQ.
fn topics_in_order(global: &Global) -> anyhow::Result<Vec<String>> {
    let config = global.config()?;
    let mut names = Vec::new();
    for t in &config.topics {
        names.push(t.name.clone());
        if t.has_dlq() {
            names.push(config.dlq_name(&t.name));
        }
    }
    Ok(names)
}

/// The headers of a record as text.
fn headers_of(m: &impl Message) -> BTreeMap<String, String> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a record carries `id`, if it does.
fn matches(m: &impl Message, headers: &BTreeMap<String, String>, id: &str) -> Option<MatchedBy> {
    if headers
        .iter()
        .any(|(k, v)| is_id_header(k) && v.eq_ignore_ascii_case(id))
    {
        return Some(MatchedBy::Header);
    }
    let needle = id.as_bytes();
    m.payload()
        .is_some_and(|v| {
            v.windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        })
        .then_some(MatchedBy::Value)
}

/// Read every topic from its first to its end offsets with one consumer (all partitions
/// assigned), keeping the records that carry `id` (blocking: run it off the async runtime).
fn scan(
    global: &Global,
    id: &str,
    (max_records, within): (u64, Duration),
) -> Result<(Vec<Found>, Vec<TopicScan>), Failure> {
    let names = topics_in_order(global)?;
    let probe = status_cmd::consumer(global, "pipelinectl-trace")?;
    let on_broker = status_cmd::broker_topics(global, &probe)?;
    let present: BTreeSet<String> = names
        .iter()
        .filter(|n| on_broker.contains_key(*n))
        .cloned()
        .collect();
    let marks = status_cmd::watermarks(global, &probe, &present, &on_broker)?;
    let deadline = Instant::now() + within;

    // The partitions still to read, with the end offset to read to.
    let mut open: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), (low, high)) in &marks {
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*low))
                .map_err(|error| BrokerError::Watermarks {
                    topic: topic.clone(),
                    partition: *p,
                    error,
                })?;
            open.insert((topic.clone(), *p), *high);
        }
    }
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut read: BTreeMap<String, u64> = BTreeMap::new();
    let mut capped: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    let mut last_error = None;
    if !open.is_empty() {
        let consumer: BaseConsumer = global
            .kafka_config()?
            .set(
                "group.id",
                format!("pipelinectl-trace-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(|error| BrokerError::Client {
                bootstrap: global.bootstrap_servers.clone(),
                error,
            })?;
        consumer.assign(&tpl).map_err(|error| BrokerError::Assign {
            bootstrap: global.bootstrap_servers.clone(),
            error,
        })?;
        while !open.is_empty() && Instant::now() < deadline {
            let m = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    if !matches!(e, KafkaError::PartitionEOF(_)) {
                        last_error = Some(e.to_string());
                    }
                    // A partition can end on a record never delivered (a transaction
                    // marker): the consumer's position says it was read to its end.
                    if let Ok(positions) = consumer.position() {
                        for e in positions.elements() {
                            let key = (e.topic().to_owned(), e.partition());
                            if let (Offset::Offset(at), Some(&end)) = (e.offset(), open.get(&key))
                                && at >= end
                            {
                                open.remove(&key);
                            }
                        }
                    }
                    continue;
                }
                None => continue,
            };
            let topic = m.topic().to_owned();
            if capped.contains(&topic) {
                continue; // already fetched before its partitions were paused
            }
            let key = (topic.clone(), m.partition());
            let count = read.entry(topic.clone()).or_default();
            *count += 1;
            if let Some(&end) = open.get(&key)
                && m.offset() + 1 >= end
            {
                open.remove(&key);
            }
            if *count >= max_records && capped.insert(topic.clone()) {
                let mut rest = TopicPartitionList::new();
                open.retain(|(t, p), _| {
                    if *t == topic {
                        rest.add_partition(t, *p);
                    }
                    *t != topic
                });
                if rest.count() > 0 {
                    let _ = consumer.pause(&rest);
                }
            }
            let headers = headers_of(&m);
            let Some(matched_by) = matches(&m, &headers, id) else {
                continue;
            };
            found.push(Found {
                topic_index: index.get(topic.as_str()).copied().unwrap_or(usize::MAX),
                topic,
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis(),
                headers,
                matched_by,
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
    }
    let scans = names
        .iter()
        .map(|name| {
            let exists = on_broker.contains_key(name);
            let stopped = if capped.contains(name) {
                Some(format!("stopped after --max-records {max_records}"))
            } else if open.keys().any(|(t, _)| t == name) {
                Some(match &last_error {
                    Some(e) => format!("out of --scan-secs ({e})"),
                    None => "out of --scan-secs".to_owned(),
                })
            } else {
                None
            };
            TopicScan {
                topic: name.clone(),
                exists,
                records_read: read.get(name).copied().unwrap_or(0),
                complete: stopped.is_none(),
                stopped,
            }
        })
        .collect();
    Ok((found, scans))
}

/// The envelope fields of a decoded record.
#[derive(Debug, Default)]
struct Meta {
    event_id: Option<String>,
    event_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    org_id: Option<i64>,
    service: Option<String>,
}

fn meta(value: &Value) -> Meta {
    let m = &value["metadata"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Meta {
        event_id: text(&m["event_id"]),
        event_type: text(&m["event_type"]),
        correlation_id: text(&m["correlation_id"]),
        causation_id: text(&m["causation_id"]),
        org_id: m["org_id"].as_i64(),
        service: text(&m["source"]["service"]),
    }
}

/// Decode the found records when the registry answers; drop value matches whose envelope
/// shows the id is neither their event id nor their correlation id (e.g. only a causation id).
async fn decode(global: &Global, id: &str, found: Vec<Found>) -> (Vec<TraceRecord>, bool) {
    let mut codec = match global.registry() {
        Ok(registry) => Some(envelope::Codec::new(registry)),
        Err(e) => {
            eprintln!("pipelinectl: not decoding records: {e:#}");
            None
        }
    };
    let mut decoded_any = false;
    let mut out = Vec::new();
    for f in found {
        let mut decoded = None;
        if let (Some(c), Some(bytes)) = (&codec, &f.value) {
            match c.decode_json(bytes).await {
                Ok((_, json)) => decoded = Some(meta(&json)),
                Err(e) if e.retryable() => {
                    eprintln!("pipelinectl: not decoding records: {e}");
                    codec = None;
                }
                Err(_) => {}
            }
        }
        let is_decoded = decoded.is_some();
        decoded_any |= is_decoded;
        let m = decoded.unwrap_or_default();
        let same = |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(id));
        if f.matched_by == MatchedBy::Value
            && is_decoded
            && !same(&m.event_id)
            && !same(&m.correlation_id)
        {
            continue;
        }
        let header = |name: &str| f.headers.get(name).cloned();
        out.push(TraceRecord {
            time: f
                .timestamp_ms
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            topic: f.topic.clone(),
            partition: f.partition,
            offset: f.offset,
            source: m.service.or_else(|| header(headers::SOURCE)),
            ce_type: header(headers::TYPE).or(m.event_type),
            event_id: header(headers::ID).or(m.event_id),
            correlation_id: header(headers::CORRELATION_ID).or(m.correlation_id),
            causation_id: m.causation_id,
            org_id: m.org_id,
            matched_by: f.matched_by,
            decoded: is_decoded,
            dlq_error: header(DLQ_ERROR_CODE),
        });
    }
    (out, decoded_any || codec.is_some())
}

fn print_human(trace: &Trace) {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = trace
        .records
        .iter()
        .map(|r| {
            let mut note = Vec::new();
            if let Some(code) = &r.dlq_error {
                note.push(format!("dlq: {code}"));
            }
            if !r.decoded && r.matched_by == MatchedBy::Value {
                note.push("id found in the value, not decoded".to_owned());
            }
            vec![
                dash(&r.time),
                r.topic.clone(),
                r.partition.to_string(),
                r.offset.to_string(),
                dash(&r.source),
                dash(&r.ce_type),
                dash(&r.event_id),
                dash(&r.causation_id),
                r.org_id.map_or_else(|| "-".to_owned(), |o| o.to_string()),
                note.join("; "),
            ]
        })
        .collect();
    output::print(
        false,
        &[
            "time",
            "topic",
            "partition",
            "offset",
            "source",
            "ce_type",
            "event_id",
            "causation_id",
            "org",
            "note",
        ],
        &rows,
    );
}

/// `trace`.
pub(crate) async fn run(global: &Global, args: &TraceArgs) -> Result<(), Failure> {
    let id = args.id.hyphenated().to_string();
    let owned = global.clone();
    let (max, within) = (args.max_records.max(1), Duration::from_secs(args.scan_secs));
    let scan_id = id.clone();
    let (mut found, topics) =
        tokio::task::spawn_blocking(move || scan(&owned, &scan_id, (max, within)))
            .await
            .map_err(|e| Failure::Error(e.into()))??;
    found.sort_by_key(|f| (f.timestamp_ms, f.topic_index, f.partition, f.offset));
    let (records, decoded) = decode(global, &id, found).await;
    let trace = Trace {
        id,
        records,
        topics,
        decoded,
    };
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&trace).map_err(|e| Failure::Error(e.into()))?
        );
    } else {
        print_human(&trace);
    }
    for t in &trace.topics {
        if let Some(why) = &t.stopped {
            eprintln!(
                "pipelinectl: {} not read to its end ({} records read): {why}",
                t.topic, t.records_read
            );
        }
    }
    if trace.records.is_empty() {
        eprintln!("pipelinectl: no record carries {}", trace.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_headers_also_under_a_prefix() {
        assert!(is_id_header("correlation_id"));
        assert!(is_id_header("ce_id"));
        assert!(is_id_header("dlq.original.correlation_id"));
        assert!(is_id_header("original_ce_id"));
        assert!(!is_id_header("ce_idx"));
        assert!(!is_id_header("xce_id"));
        assert!(!is_id_header("traceparent"));
    }

    #[test]
    fn envelope_fields_from_a_decoded_record() {
        let v = serde_json::json!({"metadata": {
            "event_id": "e", "event_type": "t", "correlation_id": "c",
            "causation_id": null, "org_id": 7, "source": {"service": "silver-processor"}
        }});
        let m = meta(&v);
        assert_eq!(m.event_id.as_deref(), Some("e"));
        assert_eq!(m.causation_id, None);
        assert_eq!(m.org_id, Some(7));
        assert_eq!(m.service.as_deref(), Some("silver-processor"));
    }
}
