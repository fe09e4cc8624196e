//! `pipelinectl dlq inspect|replay`: read a topic's dead letters with their error headers, and
//! send chosen ones back to the topic and partition they came from — with a loop guard
//! (`adpipe.replay.count`) and a committed replay cursor, so a dead letter is replayed once.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use envelope::Codec;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use runtime::dlq::headers as h;
use serde::Serialize;

use crate::{Failure, Global, output};

/// `pipelinectl dlq`: the dead-letter side topics.
#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Show a topic's dead letters (from the beginning, up to the end offsets) with their
    /// error headers and, when the value decodes, the event type and id. Never commits.
    Inspect(InspectArgs),
    /// Send dead letters back to their original topic and partition (original key, value and
    /// headers), each at most once (a committed cursor per DLQ topic), with a loop guard.
    Replay(ReplayArgs),
}

/// Which dead letters a command takes.
#[derive(Debug, clap::Args)]
struct Filters {
    /// Only dead letters with this error code (repeat, or separate by commas, for several).
    #[arg(long, env = "DLQ_CODE", value_delimiter = ',')]
    code: Vec<String>,
    /// Only dead letters of this org (the record key).
    #[arg(long, env = "DLQ_ORG")]
    org: Option<String>,
    /// Only records dead-lettered at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, env = "DLQ_SINCE", value_parser = rfc3339)]
    since: Option<DateTime<Utc>>,
    /// Only records dead-lettered before this time (RFC 3339).
    #[arg(long, env = "DLQ_UNTIL", value_parser = rfc3339)]
    until: Option<DateTime<Utc>>,
    /// At most this many matching records.
    #[arg(long, env = "DLQ_LIMIT")]
    limit: Option<usize>,
    /// Once the end offsets read at the start are reached, stop after this many milliseconds
    /// without a record (Tansu's high watermark can under-report batched produce).
    #[arg(long, env = "DLQ_IDLE_MS", default_value_t = 1000)]
    idle_ms: u64,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The topic (e.g. silver.data.processed) or its DLQ (silver.data.processed.dlq).
    topic: String,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The topic (e.g. silver.data.processed) or its DLQ (silver.data.processed.dlq).
    topic: String,
    #[command(flatten)]
    filters: Filters,
    /// Print what would be replayed; produce and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Loop guard: skip dead letters already replayed this many times.
    #[arg(long, env = "DLQ_MAX_REPLAYS", default_value_t = 3)]
    max_replays: u32,
    /// Ignore the replay cursor: consider the whole DLQ again (already replayed records too).
    #[arg(long)]
    from_beginning: bool,
}

/// What can go wrong reading or replaying a DLQ.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DlqError {
    /// No metadata from the broker within the timeout.
    #[error("cannot reach the Kafka broker at {bootstrap} within {timeout:?}: {cause}")]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        cause: KafkaError,
    },
    /// The name is neither a consumed topic nor its DLQ.
    #[error(
        "{0} is not a topic with a dead-letter queue in topic-config.yaml (name a consumed topic or its DLQ)"
    )]
    NotADlqTopic(String),
    /// The DLQ topic is not on the broker.
    #[error("topic {0} does not exist on the broker (`pipelinectl topics apply` creates it)")]
    Missing(String),
    /// A value could not be decoded because the registry did not answer.
    #[error("cannot reach the schema registry at {url}: {message}")]
    Registry { url: String, message: String },
    /// A Kafka call failed.
    #[error("{what}: {cause}")]
    Kafka { what: String, cause: KafkaError },
    /// Some replayed records were not acknowledged (the others were, and are committed).
    #[error("{failed} of {total} records were not replayed: {first}")]
    Produce {
        failed: usize,
        total: usize,
        first: String,
    },
}

impl From<DlqError> for Failure {
    fn from(e: DlqError) -> Self {
        Failure::Error(e.into())
    }
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2025-01-31T00:00:00Z"))
}

/// `dlq …`.
pub(crate) async fn run(global: &Global, args: &DlqArgs) -> Result<(), Failure> {
    match &args.command {
        DlqCommand::Inspect(a) => inspect(global, a).await,
        DlqCommand::Replay(a) => replay(global, a).await,
    }
}

/// A consumed topic and its DLQ side topic.
struct Names {
    source: String,
    dlq: String,
}

fn names(global: &Global, topic: &str) -> anyhow::Result<Names> {
    let config = global.config()?;
    let source = config.dlq_source(topic).unwrap_or(topic).to_owned();
    match config.topic(&source) {
        Some(spec) if spec.has_dlq() => Ok(Names {
            dlq: config.dlq_name(&source),
            source,
        }),
        _ => Err(DlqError::NotADlqTopic(topic.to_owned()).into()),
    }
}

/// One dead letter as read from the DLQ.
#[derive(Debug, Clone)]
struct DeadLetter {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
}

impl DeadLetter {
    fn from_message<M: Message>(m: &M) -> DeadLetter {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|x| (x.key.to_owned(), x.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn code(&self) -> String {
        self.header(h::ERROR_CODE).unwrap_or_default()
    }

    /// The record key: the org id on every topic with a DLQ.
    fn org(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    /// How many times the record had been replayed when it was dead-lettered (0 if never).
    fn replay_count(&self) -> u32 {
        self.header(h::REPLAY_COUNT)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// When it was dead-lettered: the last failure, else the record's timestamp (which the
    /// runtime sets to the original record's).
    fn dead_lettered_at(&self) -> Option<DateTime<Utc>> {
        self.header(h::LAST_FAILURE)
            .and_then(|t| rfc3339(&t).ok())
            .or_else(|| self.timestamp_ms.and_then(DateTime::from_timestamp_millis))
    }

    fn original_topic(&self, source: &str) -> String {
        self.header(h::ORIGINAL_TOPIC)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| source.to_owned())
    }

    fn original_partition(&self) -> i32 {
        self.header(h::ORIGINAL_PARTITION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.partition)
    }

    /// The headers a replay keeps: every header but the `dlq.*` ones and the old count.
    fn kept_headers(&self) -> impl Iterator<Item = &(String, Option<Vec<u8>>)> {
        self.headers
            .iter()
            .filter(|(k, _)| !k.starts_with("dlq.") && k != h::REPLAY_COUNT)
    }
}

impl Filters {
    fn matches(&self, d: &DeadLetter) -> bool {
        if !self.code.is_empty() && !self.code.contains(&d.code()) {
            return false;
        }
        if self.org.as_ref().is_some_and(|o| *o != d.org()) {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = d.dead_lettered_at() else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u) {
                return false;
            }
        }
        true
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
}

fn consumer(global: &Global, group: &str) -> anyhow::Result<BaseConsumer> {
    global
        .kafka_config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("Kafka consumer")
}

/// The partition count of `topic` on the broker.
fn partitions(global: &Global, consumer: &BaseConsumer, topic: &str) -> anyhow::Result<i32> {
    let timeout = global.timeout();
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|cause| DlqError::Unreachable {
            bootstrap: global.bootstrap_servers.clone(),
            timeout,
            cause,
        })?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| !t.partitions().is_empty())
        .ok_or_else(|| DlqError::Missing(topic.to_owned()))?;
    Ok(t.partitions().len() as i32)
}

/// Read `topic` from `starts` (per partition) up to the end offsets read first, then until no
/// record arrived for `idle` (bounded by `timeout`); stops early when `more` says so.
fn read(
    consumer: &BaseConsumer,
    topic: &str,
    starts: &BTreeMap<i32, Offset>,
    idle: Duration,
    timeout: Duration,
    mut more: impl FnMut(&DeadLetter) -> bool,
) -> anyhow::Result<Vec<DeadLetter>> {
    let kafka = |what: String| move |cause| DlqError::Kafka { what, cause };
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut high: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (&p, &start) in starts {
        let (low, hi) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(kafka(format!("watermarks of {topic}/{p}")))?;
        let from = match start {
            // Not capped at the high watermark: Tansu's can read below records it stores.
            Offset::Offset(o) if o >= low => Offset::Offset(o),
            _ => Offset::Offset(low),
        };
        if let Offset::Offset(o) = from {
            next.insert(p, o);
        }
        high.insert(p, hi);
        tpl.add_partition_offset(topic, p, from)
            .map_err(kafka(format!("assigning {topic}/{p}")))?;
    }
    consumer
        .assign(&tpl)
        .map_err(kafka(format!("assigning {topic}")))?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    let mut reached_at: Option<Instant> = None;
    loop {
        let reached = high
            .iter()
            .all(|(p, hi)| next.get(p).is_some_and(|n| n >= hi));
        if reached && reached_at.is_none() {
            reached_at = Some(Instant::now());
        }
        match reached_at {
            Some(at) if last.elapsed() >= idle || at.elapsed() >= timeout => break,
            // The end offsets were not reached and nothing comes: stop, bounded.
            None if last.elapsed() >= timeout => {
                eprintln!(
                    "pipelinectl: warning: {topic}: no record for {timeout:?} before the end offsets; showing what was read"
                );
                break;
            }
            _ => {}
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => eprintln!("pipelinectl: warning: reading {topic}: {e}"),
            Some(Ok(m)) => {
                last = Instant::now();
                next.insert(m.partition(), m.offset() + 1);
                let d = DeadLetter::from_message(&m);
                let go_on = more(&d);
                out.push(d);
                if !go_on {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// An inspected dead letter, for `--json`.
#[derive(Debug, Serialize)]
struct Inspected {
    partition: i32,
    offset: i64,
    original_topic: String,
    original_partition: i32,
    original_offset: Option<i64>,
    stage: String,
    code: String,
    message: String,
    org: String,
    dead_lettered_at: Option<String>,
    attempts: Option<u32>,
    replay_count: u32,
    event_type: Option<String>,
    event_id: Option<String>,
    decode_error: Option<String>,
    value_hex: Option<String>,
    value_utf8: Option<String>,
}

/// Decode a value to its event type and id, or say why not; an unreachable registry is an
/// error of the command, not of the record.
async fn decode(codec: &Codec, url: &str, value: &[u8]) -> Result<Decoded, DlqError> {
    match codec.decode_json(value).await {
        Ok((_, json)) => {
            // Every event is `{metadata: {event_id, event_type, …}, payload}`.
            let meta = json.get("metadata").unwrap_or(&json);
            let field = |name: &str| {
                meta.get(name).map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            Ok(Decoded::Event {
                event_type: field("event_type"),
                event_id: field("event_id"),
            })
        }
        Err(e) if e.retryable() => Err(DlqError::Registry {
            url: url.to_owned(),
            message: e.to_string(),
        }),
        Err(e) => Ok(Decoded::Undecodable(format!("{}: {e}", e.code()))),
    }
}

enum Decoded {
    Event {
        event_type: Option<String>,
        event_id: Option<String>,
    },
    Undecodable(String),
}

const PREVIEW_BYTES: usize = 32;

/// Where a dead letter came from, as a table cell: `topic/partition/offset`.
fn origin(topic: &str, partition: impl std::fmt::Display, offset: Option<i64>) -> String {
    let offset = offset.map(|o| o.to_string()).unwrap_or_default();
    format!("{topic}/{partition}/{offset}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn inspect(global: &Global, a: &InspectArgs) -> Result<(), Failure> {
    let n = names(global, &a.topic)?;
    let registry = global.registry()?;
    let url = registry.url().to_owned();
    let codec = Codec::new(registry);
    let group = format!(
        "pipelinectl-inspect-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let consumer = consumer(global, &group)?;
    let limit = a.filters.limit.unwrap_or(usize::MAX);
    let records = tokio::task::block_in_place(|| -> anyhow::Result<Vec<DeadLetter>> {
        let count = partitions(global, &consumer, &n.dlq)?;
        let starts = (0..count).map(|p| (p, Offset::Beginning)).collect();
        let mut matched = 0usize;
        let all = read(
            &consumer,
            &n.dlq,
            &starts,
            a.filters.idle(),
            global.timeout(),
            |d| {
                if a.filters.matches(d) {
                    matched += 1;
                }
                matched < limit
            },
        )?;
        Ok(all
            .into_iter()
            .filter(|d| a.filters.matches(d))
            .take(limit)
            .collect())
    })?;
    let mut rows = Vec::with_capacity(records.len());
    for d in &records {
        let mut row = Inspected {
            partition: d.partition,
            offset: d.offset,
            original_topic: d.original_topic(&n.source),
            original_partition: d.original_partition(),
            original_offset: d.header(h::ORIGINAL_OFFSET).and_then(|o| o.parse().ok()),
            stage: d.header(h::STAGE).unwrap_or_default(),
            code: d.code(),
            message: d.header(h::ERROR_MESSAGE).unwrap_or_default(),
            org: d.org(),
            dead_lettered_at: d
                .dead_lettered_at()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            attempts: d.header(h::ATTEMPTS).and_then(|x| x.parse().ok()),
            replay_count: d.replay_count(),
            event_type: None,
            event_id: None,
            decode_error: None,
            value_hex: None,
            value_utf8: None,
        };
        let value = d.value.as_deref().unwrap_or_default();
        match decode(&codec, &url, value).await? {
            Decoded::Event {
                event_type,
                event_id,
            } => {
                row.event_type = event_type;
                row.event_id = event_id;
            }
            Decoded::Undecodable(error) => {
                let head = &value[..value.len().min(PREVIEW_BYTES)];
                row.decode_error = Some(error);
                row.value_hex = Some(hex(head));
                row.value_utf8 = Some(String::from_utf8_lossy(head).into_owned());
            }
        }
        rows.push(row);
    }
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&rows).context("dead letters as JSON")?
        );
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let event = match (&r.event_type, &r.event_id, &r.decode_error) {
                (_, _, Some(err)) => format!(
                    "undecodable ({err}): {} {:?}",
                    r.value_hex.as_deref().unwrap_or_default(),
                    r.value_utf8.as_deref().unwrap_or_default()
                ),
                (t, id, None) => format!(
                    "{} {}",
                    t.as_deref().unwrap_or("?"),
                    id.as_deref().unwrap_or("?")
                ),
            };
            vec![
                r.partition.to_string(),
                r.offset.to_string(),
                origin(&r.original_topic, r.original_partition, r.original_offset),
                r.stage.clone(),
                r.code.clone(),
                r.org.clone(),
                r.dead_lettered_at.clone().unwrap_or_default(),
                r.replay_count.to_string(),
                event,
                r.message.clone(),
            ]
        })
        .collect();
    output::print(
        false,
        &[
            "partition",
            "offset",
            "original",
            "stage",
            "code",
            "org",
            "dead_lettered_at",
            "replays",
            "event",
            "message",
        ],
        &cells,
    );
    eprintln!("{} dead letters in {}", rows.len(), n.dlq);
    Ok(())
}

/// The replay cursor of one DLQ partition (the replay group's committed offset) after a run
/// that read `records` of it in offset order: past every record that needs nothing more —
/// replayed and acknowledged, skipped by the loop guard, or filtered out (a later run reaches
/// those only with `--from-beginning`) — and held at the first whose replay failed. The
/// cursor cannot remember single offsets past a hold: Tansu 0.6 drops commit metadata.
fn advance(before: Option<i64>, records: &[(&DeadLetter, Action)]) -> Option<i64> {
    let mut next = before;
    for (d, act) in records {
        if *act == Action::Failed {
            return Some(next.map_or(d.offset, |n| n.max(d.offset)));
        }
        next = Some(next.map_or(d.offset + 1, |n| n.max(d.offset + 1)));
    }
    next
}

/// What a replay does with one dead letter it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Replayed,
    WouldReplay,
    SkippedLoopGuard,
    FilteredOut,
    Failed,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Replayed => "replayed",
            Action::WouldReplay => "would replay",
            Action::SkippedLoopGuard => "skipped: loop guard",
            Action::FilteredOut => "filtered out",
            Action::Failed => "FAILED",
        }
    }
}

/// One dead letter a replay selected, for the output.
#[derive(Debug, Serialize)]
struct Replayed {
    partition: i32,
    offset: i64,
    original_topic: String,
    original_partition: i32,
    original_offset: Option<i64>,
    org: String,
    code: String,
    replay_count: u32,
    action: Action,
}

/// The outcome of `dlq replay`, for `--json`.
#[derive(Debug, Serialize)]
struct Summary {
    dlq_topic: String,
    dry_run: bool,
    replayed: usize,
    would_replay: usize,
    skipped_loop_guard: usize,
    filtered_out: usize,
    failed: usize,
    records: Vec<Replayed>,
}

async fn replay(global: &Global, a: &ReplayArgs) -> Result<(), Failure> {
    let n = names(global, &a.topic)?;
    let group = format!("pipelinectl-replay-{}", n.dlq);
    let consumer = consumer(global, &group)?;
    let timeout = global.timeout();
    let limit = a.filters.limit.unwrap_or(usize::MAX);
    let (count, cursors, records) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let count = partitions(global, &consumer, &n.dlq)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            tpl.add_partition(&n.dlq, p);
        }
        let committed =
            consumer
                .committed_offsets(tpl, timeout)
                .map_err(|cause| DlqError::Kafka {
                    what: format!("reading the replay cursor of group {group}"),
                    cause,
                })?;
        let cursors: BTreeMap<i32, Option<i64>> = (0..count)
            .map(|p| {
                let next = match committed.find_partition(&n.dlq, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                (p, next)
            })
            .collect();
        let starts = cursors
            .iter()
            .map(|(&p, next)| match next {
                Some(o) if !a.from_beginning => (p, Offset::Offset(*o)),
                _ => (p, Offset::Beginning),
            })
            .collect();
        let mut selected = 0usize;
        let records = read(&consumer, &n.dlq, &starts, a.filters.idle(), timeout, |d| {
            if a.filters.matches(d) {
                selected += 1;
            }
            selected < limit
        })?;
        Ok((count, cursors, records))
    })?;

    // Decide what happens to each record read.
    let mut actions: Vec<Action> = records
        .iter()
        .map(|d| {
            if !a.filters.matches(d) {
                Action::FilteredOut
            } else if d.replay_count() >= a.max_replays {
                Action::SkippedLoopGuard
            } else if a.dry_run {
                Action::WouldReplay
            } else {
                Action::Replayed
            }
        })
        .collect();

    let mut first_error: Option<String> = None;
    if !a.dry_run {
        let producer: FutureProducer = global
            .kafka_config()?
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create()
            .context("Kafka producer")?;
        let sends = records
            .iter()
            .zip(&actions)
            .filter(|(_, act)| **act == Action::Replayed)
            .map(|(d, _)| {
                let topic = d.original_topic(&n.source);
                let count = (d.replay_count() + 1).to_string();
                let headers = d
                    .kept_headers()
                    .fold(OwnedHeaders::new(), |hs, (k, v)| {
                        hs.insert(Header {
                            key: k.as_str(),
                            value: v.as_deref(),
                        })
                    })
                    .insert(Header {
                        key: h::REPLAY_COUNT,
                        value: Some(count.as_bytes()),
                    });
                let (producer, dlq) = (&producer, &n.dlq);
                async move {
                    let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                        .partition(d.original_partition())
                        .headers(headers);
                    if let Some(k) = d.key.as_deref() {
                        record = record.key(k);
                    }
                    if let Some(v) = d.value.as_deref() {
                        record = record.payload(v);
                    }
                    let result = producer.send(record, timeout).await;
                    (
                        d.offset,
                        d.partition,
                        result.map(|_| ()).map_err(|(e, _)| {
                            format!(
                                "{}/{} offset {} to {topic}/{}: {e}",
                                dlq,
                                d.partition,
                                d.offset,
                                d.original_partition()
                            )
                        }),
                    )
                }
            });
        let results = futures::future::join_all(sends).await;
        let failed: BTreeSet<(i32, i64)> = results
            .into_iter()
            .filter_map(|(offset, partition, r)| {
                r.err().map(|e| {
                    first_error.get_or_insert(e);
                    (partition, offset)
                })
            })
            .collect();
        for (d, act) in records.iter().zip(actions.iter_mut()) {
            if *act == Action::Replayed && failed.contains(&(d.partition, d.offset)) {
                *act = Action::Failed;
            }
        }

        // Commit the cursor past what this run finished with.
        let mut tpl = TopicPartitionList::new();
        for p in 0..count {
            let read: Vec<(&DeadLetter, Action)> = records
                .iter()
                .zip(actions.iter().copied())
                .filter(|(d, _)| d.partition == p)
                .collect();
            let before = cursors.get(&p).copied().flatten();
            let after = advance(before, &read);
            if let Some(next) = after.filter(|_| after != before) {
                tpl.add_partition_offset(&n.dlq, p, Offset::Offset(next))
                    .context("cursor offset")?;
            }
        }
        if tpl.count() > 0 {
            tokio::task::block_in_place(|| consumer.commit(&tpl, CommitMode::Sync)).map_err(
                |cause| DlqError::Kafka {
                    what: format!("committing the replay cursor of group {group}"),
                    cause,
                },
            )?;
        }
    }

    let tally = |which: Action| actions.iter().filter(|x| **x == which).count();
    let summary = Summary {
        dlq_topic: n.dlq.clone(),
        dry_run: a.dry_run,
        replayed: tally(Action::Replayed),
        would_replay: tally(Action::WouldReplay),
        skipped_loop_guard: tally(Action::SkippedLoopGuard),
        filtered_out: tally(Action::FilteredOut),
        failed: tally(Action::Failed),
        records: records
            .iter()
            .zip(&actions)
            .filter(|(_, act)| **act != Action::FilteredOut)
            .map(|(d, act)| Replayed {
                partition: d.partition,
                offset: d.offset,
                original_topic: d.original_topic(&n.source),
                original_partition: d.original_partition(),
                original_offset: d.header(h::ORIGINAL_OFFSET).and_then(|o| o.parse().ok()),
                org: d.org(),
                code: d.code(),
                replay_count: d.replay_count(),
                action: *act,
            })
            .collect(),
    };
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&summary).context("summary as JSON")?
        );
    } else {
        let cells: Vec<Vec<String>> = summary
            .records
            .iter()
            .map(|r| {
                vec![
                    r.partition.to_string(),
                    r.offset.to_string(),
                    origin(&r.original_topic, r.original_partition, r.original_offset),
                    r.org.clone(),
                    r.code.clone(),
                    r.replay_count.to_string(),
                    r.action.label().to_owned(),
                ]
            })
            .collect();
        output::print(
            false,
            &[
                "partition",
                "offset",
                "original",
                "org",
                "code",
                "replays",
                "action",
            ],
            &cells,
        );
        let done = if a.dry_run {
            format!("would replay {}", summary.would_replay)
        } else {
            format!("replayed {}", summary.replayed)
        };
        println!(
            "{}: {done}, skipped by the loop guard (--max-replays {}) {}, filtered out {}{}",
            summary.dlq_topic,
            a.max_replays,
            summary.skipped_loop_guard,
            summary.filtered_out,
            if summary.failed > 0 {
                format!(", FAILED {}", summary.failed)
            } else {
                String::new()
            }
        );
    }
    match first_error {
        Some(first) => Err(Failure::Error(
            DlqError::Produce {
                failed: summary.failed,
                total: summary.replayed + summary.failed,
                first,
            }
            .into(),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset,
            key: Some(b"7".to_vec()),
            value: None,
            headers: vec![
                (h::ERROR_CODE.to_owned(), Some(b"X".to_vec())),
                (h::REPLAY_COUNT.to_owned(), Some(b"2".to_vec())),
                ("traceparent".to_owned(), Some(b"00-a".to_vec())),
            ],
            timestamp_ms: Some(0),
        }
    }

    #[test]
    fn the_cursor_moves_past_what_is_finished_and_holds_at_a_failure() {
        let records: Vec<DeadLetter> = (10..14).map(letter).collect();
        let with = |acts: [Action; 4]| -> Vec<(&DeadLetter, Action)> {
            records.iter().zip(acts).collect()
        };
        use Action::*;
        let done = with([Replayed, FilteredOut, SkippedLoopGuard, Replayed]);
        assert_eq!(advance(None, &done), Some(14));
        assert_eq!(advance(Some(10), &done), Some(14));
        let failed = with([Replayed, Failed, Replayed, Replayed]);
        assert_eq!(advance(None, &failed), Some(11));
        let first_failed = with([Failed, Replayed, Replayed, Replayed]);
        assert_eq!(advance(None, &first_failed), Some(10));
        // Never backwards (a --from-beginning run re-reads records behind the cursor).
        assert_eq!(advance(Some(20), &done), Some(20));
        assert_eq!(advance(Some(7), &[]), Some(7));
    }

    #[test]
    fn a_replay_keeps_the_record_headers_but_not_the_dlq_ones() {
        let d = letter(1);
        let kept: Vec<&str> = d.kept_headers().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kept, ["traceparent"]);
        assert_eq!(d.replay_count(), 2);
        assert_eq!(d.original_partition(), 0);
        assert_eq!(d.original_topic("config.changes"), "config.changes");
    }
}
