//! Kafka client helpers for tests: Tansu-friendly settings, topic creation, offsets, and
//! awaiting a condition with a deadline.

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};
use tokio::time::Instant;

/// Client settings that work well on Tansu. With librdkafka's default
/// `session.timeout.ms` (45 s) a new group member takes ~23 s to join a group on Tansu; with
/// 6 s it joins in ~3 s.
pub const TANSU_CLIENT_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
    ("log_level", "3"),
];

/// A client config for `bootstrap` with [`TANSU_CLIENT_DEFAULTS`].
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in TANSU_CLIENT_DEFAULTS {
        config.set(*k, *v);
    }
    config
}

/// Await `check` until it returns true, polling every 50 ms, for at most `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create adpipe topics with their configured partitions, each with its `.dlq` side topic.
pub async fn create_stage_topics(bootstrap: &str, topics: &[topics::Topic]) -> anyhow::Result<()> {
    create_stage_topics_with(&client_config(bootstrap), topics).await
}

/// [`create_stage_topics`] through clients built from `config` (a broker behind TLS or a
/// login: [`crate::Broker::client_config`]).
pub async fn create_stage_topics_with(
    config: &ClientConfig,
    topics: &[topics::Topic],
) -> anyhow::Result<()> {
    let mut all: Vec<(String, i32)> = Vec::new();
    for t in topics {
        let partitions = i32::try_from(t.spec().partitions).context("partitions fit i32")?;
        all.push((t.name().to_owned(), partitions));
        all.push((t.dlq(), partitions));
    }
    let refs: Vec<(&str, i32)> = all.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    create_topics_with(config, &refs).await
}

/// Create `topics` (name, partitions) with replication 1 and wait until metadata shows them.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    create_topics_with(&client_config(bootstrap), topics).await
}

/// [`create_topics`] through clients built from `config`.
pub async fn create_topics_with(
    config: &ClientConfig,
    topics: &[(&str, i32)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.create().context("admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("create topics")?
    {
        if let Err((topic, code)) = result {
            bail!("creating {topic}: {code}");
        }
    }
    let consumer: BaseConsumer = config.create()?;
    let names: Vec<(String, usize)> = topics
        .iter()
        .map(|(n, p)| ((*n).to_owned(), *p as usize))
        .collect();
    wait_until(Duration::from_secs(15), "topics in metadata", || {
        let ok = names.iter().all(|(name, partitions)| {
            consumer
                .fetch_metadata(Some(name), Duration::from_secs(1))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .first()
                        .map(|t| t.partitions().len() == *partitions)
                })
                .unwrap_or(false)
        });
        async move { ok }
    })
    .await
}

/// High watermark of every partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| high)
                .with_context(|| format!("watermarks of {topic}/{p}"))
        })
        .collect()
}

/// Offsets `group` committed on every partition of `topic` (`-1` where none).
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = client_config(bootstrap).set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .context("committed offsets")?;
    Ok((0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            },
        )
        .collect())
}

/// Commit offset 0 for every partition of `topic` in `group` (whose members must be
/// stopped): the group's next members consume the topic again from the start, as after a
/// crash that lost every commit. Joins the group to commit (a broker may refuse a commit
/// from outside it), then leaves.
pub fn rewind_group(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // The stages' strategy: members of one group must agree on it.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer.assignment()?.count() < usize::try_from(partitions)? {
        if std::time::Instant::now() > deadline {
            bail!("no assignment of {topic} in group {group} within 30 s");
        }
        // Polling drives the join; records read meanwhile are not committed.
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .context("committing offset 0")?;
    consumer.unsubscribe();
    Ok(())
}

/// The first `n` records of `topic` (all partitions, each in offset order), read from the
/// start by a consumer of its own group; fewer if they do not arrive `within`. Counting by
/// consuming is exact where Tansu's high watermark under-reports batched produce.
pub fn read_records(
    bootstrap: &str,
    topic: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    read_records_with(client_config(bootstrap), topic, n, within)
}

/// [`read_records`] with a client config of the caller's (e.g. one that logs in); an error
/// the consumer reports (a refused login) is returned.
pub fn read_records_with(
    mut config: ClientConfig,
    topic: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    let consumer: BaseConsumer = config
        .set(
            "group.id",
            format!("reader-{}-{:016x}", std::process::id(), crate::unique()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .context("reader")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    let deadline = std::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.with_context(|| format!("reading {topic}"))?;
            out.push(m.detach());
        }
    }
    Ok(out)
}

/// Produce `records` (partition, key, value) to `topic` one after the other, each
/// acknowledged before the next, so each partition holds them in the order given; panics on
/// failure.
pub async fn produce_in_order(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    records: &[(i32, String, Vec<u8>)],
) {
    for (partition, key, value) in records {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .partition(*partition)
                    .key(key)
                    .payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
    }
}

/// The value of header `name` of record `m`, as text (lossy UTF-8); `None` when it has none.
pub fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers as _, Message as _};
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}
