//! `pipelinectl status`: every consumer group's committed offset, end offset and lag per
//! partition, its throughput from two samples of the committed offsets, and each DLQ topic's
//! record count — all from the broker, for the groups and topics of topic-config.yaml.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};
use serde::Serialize;
use topics::TopicConfig;

use crate::{Failure, Global, output};

/// `pipelinectl status` (its help, with the note on Tansu's high watermark, is on the
/// subcommand in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Seconds between the two samples of the committed offsets that measure throughput
    /// (records/s); 0 = one sample, no throughput.
    #[arg(long, env = "PIPELINECTL_STATUS_INTERVAL_SECS", default_value_t = 2)]
    interval_secs: u64,
}

/// Why a broker query failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerError {
    /// The broker did not answer a metadata request in time.
    #[error("cannot reach the broker at {bootstrap}: {error} (waited {timeout:?})")]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        error: KafkaError,
    },
    /// A Kafka client could not be created (invalid settings).
    #[error("creating a Kafka client for {bootstrap}: {error}")]
    Client {
        bootstrap: String,
        error: KafkaError,
    },
    /// The low and high watermarks of a partition could not be read.
    #[error("reading the offsets of {topic}/{partition}: {error}")]
    Watermarks {
        topic: String,
        partition: i32,
        error: KafkaError,
    },
    /// Partitions could not be assigned to a reading consumer.
    #[error("assigning partitions on {bootstrap}: {error}")]
    Assign {
        bootstrap: String,
        error: KafkaError,
    },
    /// A group's committed offsets could not be read.
    #[error("reading the committed offsets of group {group}: {error}")]
    Committed { group: String, error: KafkaError },
    /// The Kafka security settings do not fit together.
    #[error(transparent)]
    Settings(#[from] runtime::settings::SettingsError),
}

/// A consumer that never joins a group (assign, watermarks, committed offsets of `group`).
pub(crate) fn consumer(global: &Global, group: &str) -> Result<BaseConsumer, BrokerError> {
    global
        .kafka_config()?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(|error| BrokerError::Client {
            bootstrap: global.bootstrap_servers.clone(),
            error,
        })
}

/// The partition count of every topic on the broker; fails with [`BrokerError::Unreachable`]
/// when the broker does not answer within the global timeout.
pub(crate) fn broker_topics(
    global: &Global,
    consumer: &BaseConsumer,
) -> Result<BTreeMap<String, i32>, BrokerError> {
    let timeout = global.timeout();
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|error| BrokerError::Unreachable {
            bootstrap: global.bootstrap_servers.clone(),
            timeout,
            error,
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// Each consumer group of the configuration and the topics it consumes, in file order.
pub(crate) fn groups(config: &TopicConfig) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for topic in &config.topics {
        for group in &topic.consumer_groups {
            match out.iter_mut().find(|(g, _)| g == group) {
                Some((_, topics)) => topics.push(topic.name.clone()),
                None => out.push((group.clone(), vec![topic.name.clone()])),
            }
        }
    }
    out
}

/// One partition of a consumed topic.
#[derive(Debug, Serialize)]
struct PartitionLag {
    partition: i32,
    /// The group's committed offset; `None` when it never committed on this partition.
    committed: Option<i64>,
    /// The first offset still on the broker.
    start: i64,
    /// The high watermark.
    end: i64,
    /// Records the group has yet to consume: end − committed (end − start without a commit).
    lag: i64,
}

/// One topic a group consumes.
#[derive(Debug, Serialize)]
struct TopicLag {
    topic: String,
    /// False when the topic does not exist on the broker.
    exists: bool,
    lag: i64,
    records_per_sec: Option<f64>,
    partitions: Vec<PartitionLag>,
}

/// One consumer group.
#[derive(Debug, Serialize)]
struct GroupStatus {
    group: String,
    lag: i64,
    records_per_sec: Option<f64>,
    topics: Vec<TopicLag>,
}

/// One dead-letter topic.
#[derive(Debug, Serialize)]
struct DlqCount {
    topic: String,
    exists: bool,
    /// end − start over its partitions.
    records: i64,
}

/// The whole report (`--json` prints it as is).
#[derive(Debug, Serialize)]
struct Status {
    bootstrap_servers: String,
    /// Seconds between the two samples of committed offsets; 0 when not measured.
    interval_secs: f64,
    groups: Vec<GroupStatus>,
    dlq: Vec<DlqCount>,
}

type Committed = BTreeMap<(String, String, i32), i64>;

/// Low and high watermarks by topic and partition.
pub(crate) type Watermarks = BTreeMap<(String, i32), (i64, i64)>;

/// The committed offsets of every group on every partition of its topics that exist.
fn committed(
    global: &Global,
    groups: &[(String, Vec<String>)],
    on_broker: &BTreeMap<String, i32>,
) -> Result<Committed, BrokerError> {
    let mut out = Committed::new();
    for (group, topics) in groups {
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            for p in 0..on_broker.get(topic).copied().unwrap_or(0) {
                tpl.add_partition(topic, p);
            }
        }
        if tpl.count() == 0 {
            continue;
        }
        let c = consumer(global, group)?;
        let list = c
            .committed_offsets(tpl, global.timeout())
            .map_err(|error| BrokerError::Committed {
                group: group.clone(),
                error,
            })?;
        for e in list.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((group.clone(), e.topic().to_owned(), e.partition()), o);
            }
        }
    }
    Ok(out)
}

/// Low and high watermarks of every partition of `topics` that exist.
pub(crate) fn watermarks(
    global: &Global,
    consumer: &BaseConsumer,
    topics: &BTreeSet<String>,
    on_broker: &BTreeMap<String, i32>,
) -> Result<Watermarks, BrokerError> {
    let mut out = BTreeMap::new();
    for topic in topics {
        for p in 0..on_broker.get(topic).copied().unwrap_or(0) {
            let marks = consumer
                .fetch_watermarks(topic, p, global.timeout())
                .map_err(|error| BrokerError::Watermarks {
                    topic: topic.clone(),
                    partition: p,
                    error,
                })?;
            out.insert((topic.clone(), p), marks);
        }
    }
    Ok(out)
}

/// Records per second from two samples of committed offsets `elapsed` apart, over the
/// partitions committed in both.
fn rate<'a>(
    keys: impl Iterator<Item = &'a (String, String, i32)>,
    before: &Committed,
    after: &Committed,
    elapsed: Duration,
) -> f64 {
    let moved: i64 = keys
        .filter_map(|k| Some(after.get(k)? - before.get(k)?))
        .map(|d| d.max(0))
        .sum();
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { moved as f64 / secs } else { 0.0 }
}

/// Gather the report (blocking: run it off the async runtime).
fn collect(global: &Global, interval: Duration) -> Result<Status, Failure> {
    let config = global.config()?;
    let groups = groups(&config);
    let probe = consumer(global, "pipelinectl-status")?;
    let on_broker = broker_topics(global, &probe)?;

    let (first, elapsed) = if interval.is_zero() {
        (None, Duration::ZERO)
    } else {
        let started = Instant::now();
        let first = committed(global, &groups, &on_broker)?;
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
        (Some(first), started.elapsed())
    };
    let second = committed(global, &groups, &on_broker)?;

    let dlq_topics: Vec<String> = config
        .topics
        .iter()
        .filter(|t| t.has_dlq())
        .map(|t| config.dlq_name(&t.name))
        .collect();
    let mut wanted: BTreeSet<String> = groups.iter().flat_map(|(_, t)| t.clone()).collect();
    wanted.extend(dlq_topics.iter().cloned());
    let marks = watermarks(global, &probe, &wanted, &on_broker)?;

    let mut out = Vec::new();
    for (group, topics) in &groups {
        let mut rows = Vec::new();
        for topic in topics {
            let partitions: Vec<PartitionLag> = (0..on_broker.get(topic).copied().unwrap_or(0))
                .map(|p| {
                    let (start, end) = marks.get(&(topic.clone(), p)).copied().unwrap_or((0, 0));
                    let committed = second.get(&(group.clone(), topic.clone(), p)).copied();
                    let lag = (end - committed.unwrap_or(start)).max(0);
                    PartitionLag {
                        partition: p,
                        committed,
                        start,
                        end,
                        lag,
                    }
                })
                .collect();
            let records_per_sec = first.as_ref().map(|first| {
                let keys: Vec<(String, String, i32)> = partitions
                    .iter()
                    .map(|p| (group.clone(), topic.clone(), p.partition))
                    .collect();
                rate(keys.iter(), first, &second, elapsed)
            });
            rows.push(TopicLag {
                topic: topic.clone(),
                exists: on_broker.contains_key(topic),
                lag: partitions.iter().map(|p| p.lag).sum(),
                records_per_sec,
                partitions,
            });
        }
        out.push(GroupStatus {
            group: group.clone(),
            lag: rows.iter().map(|t| t.lag).sum(),
            records_per_sec: first
                .as_ref()
                .map(|_| rows.iter().filter_map(|t| t.records_per_sec).sum()),
            topics: rows,
        });
    }
    let dlq = dlq_topics
        .into_iter()
        .map(|topic| {
            let records = (0..on_broker.get(&topic).copied().unwrap_or(0))
                .filter_map(|p| marks.get(&(topic.clone(), p)))
                .map(|(start, end)| (end - start).max(0))
                .sum();
            DlqCount {
                exists: on_broker.contains_key(&topic),
                topic,
                records,
            }
        })
        .collect();
    Ok(Status {
        bootstrap_servers: global.bootstrap_servers.clone(),
        interval_secs: elapsed.as_secs_f64(),
        groups: out,
        dlq,
    })
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
}

fn print_human(status: &Status) {
    let mut rows = Vec::new();
    for g in &status.groups {
        for t in &g.topics {
            if !t.exists {
                rows.push(vec![
                    g.group.clone(),
                    t.topic.clone(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "missing on the broker".to_owned(),
                ]);
            }
            for p in &t.partitions {
                rows.push(vec![
                    g.group.clone(),
                    t.topic.clone(),
                    p.partition.to_string(),
                    p.committed
                        .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    p.end.to_string(),
                    p.lag.to_string(),
                ]);
            }
        }
    }
    output::print(
        false,
        &["group", "topic", "partition", "committed", "end", "lag"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = status
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.lag.to_string(),
                rate_text(g.records_per_sec),
            ]
        })
        .collect();
    output::print(false, &["group", "lag", "records/s"], &rows);
    println!();
    let rows: Vec<Vec<String>> = status
        .dlq
        .iter()
        .map(|d| {
            vec![
                d.topic.clone(),
                if d.exists {
                    d.records.to_string()
                } else {
                    "missing on the broker".to_owned()
                },
            ]
        })
        .collect();
    output::print(false, &["dlq topic", "records"], &rows);
}

/// `status`.
pub(crate) async fn run(global: &Global, args: &StatusArgs) -> Result<(), Failure> {
    let interval = Duration::from_secs(args.interval_secs);
    let owned = global.clone();
    let status = tokio::task::spawn_blocking(move || collect(&owned, interval))
        .await
        .map_err(|e| Failure::Error(e.into()))??;
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&status).map_err(|e| Failure::Error(e.into()))?
        );
    } else {
        print_human(&status);
    }
    Ok(())
}

impl From<BrokerError> for Failure {
    fn from(e: BrokerError) -> Self {
        Failure::Error(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_of_the_configuration_with_its_topics() {
        let groups = groups(TopicConfig::embedded());
        let gold = groups
            .iter()
            .find(|(g, _)| g == "gold-processor")
            .expect("gold-processor is a group");
        assert_eq!(gold.1, vec!["silver.data.processed", "config.changes"]);
        assert!(groups.iter().all(|(_, t)| !t.is_empty()));
    }

    #[test]
    fn rate_counts_only_partitions_committed_in_both_samples() {
        let k = |p| ("g".to_owned(), "t".to_owned(), p);
        let before: Committed = [(k(0), 10), (k(1), 5)].into_iter().collect();
        let after: Committed = [(k(0), 30), (k(1), 5), (k(2), 100)].into_iter().collect();
        let keys = [k(0), k(1), k(2)];
        let r = rate(keys.iter(), &before, &after, Duration::from_secs(2));
        assert!((r - 10.0).abs() < 1e-9, "{r}");
    }
}
