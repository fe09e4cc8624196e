//! `pipelinectl status` end to end: the real binary against a real Tansu broker, with a
//! group's offsets committed by a plain rdkafka consumer.

mod common;

use common::{pipelinectl, text};

use std::time::Duration;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;
use testkit::{Broker, client_config};
use topics::{ConsumerGroup, Topic};

/// Produce `n` records to `topic`/`partition`, one acknowledgement at a time (so Tansu's
/// high watermark is exact).
async fn produce(producer: &FutureProducer, topic: &str, partition: i32, n: usize) {
    for i in 0..n {
        let value = format!("record {i}");
        producer
            .send(
                FutureRecord::<str, str>::to(topic)
                    .partition(partition)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

/// The partition entry of `group`'s `topic` in the JSON report.
fn partition<'a>(report: &'a Value, group: &str, topic: &str, p: i64) -> &'a Value {
    let g = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("group {group} in {report}"));
    let t = g["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == topic)
        .unwrap_or_else(|| panic!("topic {topic} in {g}"));
    t["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|e| e["partition"] == p)
        .unwrap_or_else(|| panic!("partition {p} in {t}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_lag_of_a_group_that_consumed_part_of_a_topic() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    let out = pipelinectl(&["--bootstrap-servers", &b, "topics", "apply"]);
    assert!(out.status.success(), "{}", text(&out));

    let topic = Topic::SilverDataProcessed.name();
    let group = ConsumerGroup::GoldProcessor.name();
    let dlq = Topic::SilverDataProcessed.dlq();
    let producer: FutureProducer = client_config(&b).create().expect("producer");
    produce(&producer, topic, 0, 10).await;
    produce(&producer, topic, 1, 4).await;
    produce(&producer, &dlq, 2, 3).await;

    // The group consumed 6 of partition 0 and all of partition 1.
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(6))
        .expect("offset");
    tpl.add_partition_offset(topic, 1, Offset::Offset(4))
        .expect("offset");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");

    let out = tokio::task::spawn_blocking({
        let b = b.clone();
        move || {
            pipelinectl(&[
                "--bootstrap-servers",
                &b,
                "--json",
                "status",
                "--interval-secs",
                "1",
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");

    let p0 = partition(&report, group, topic, 0);
    assert_eq!(
        (&p0["committed"], &p0["end"], &p0["lag"]),
        (&Value::from(6), &Value::from(10), &Value::from(4)),
        "{p0}"
    );
    let p1 = partition(&report, group, topic, 1);
    assert_eq!(
        (&p1["committed"], &p1["lag"]),
        (&Value::from(4), &Value::from(0))
    );
    let p2 = partition(&report, group, topic, 2);
    assert_eq!(
        (&p2["committed"], &p2["lag"]),
        (&Value::Null, &Value::from(0))
    );
    let gold = report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["group"] == group)
        .expect("gold group");
    assert_eq!(gold["lag"], 4, "{gold}");
    assert_eq!(gold["records_per_sec"], 0.0, "nothing moved: {gold}");
    // Every group of topic-config.yaml is there.
    for g in ConsumerGroup::ALL {
        assert!(
            report["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .any(|r| r["group"] == g.name()),
            "{g}"
        );
    }
    let dlq_count = report["dlq"]
        .as_array()
        .expect("dlq")
        .iter()
        .find(|d| d["topic"] == dlq.as_str())
        .expect("dlq entry");
    assert_eq!(dlq_count["records"], 3, "{dlq_count}");

    // The table for people.
    let out = pipelinectl(&["--bootstrap-servers", &b, "status", "--interval-secs", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table
        .lines()
        .find(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.first() == Some(&group)
                && cells.get(1) == Some(&topic)
                && cells.get(2) == Some(&"0")
        })
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        row.split_whitespace().skip(3).collect::<Vec<_>>(),
        ["6", "10", "4"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [dlq.as_str(), "3"]),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_an_unreachable_broker_is_a_clear_error() {
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let out = pipelinectl(&[
        "--bootstrap-servers",
        &addr,
        "--timeout-secs",
        "2",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cannot reach the broker at {addr}")),
        "{}",
        text(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
}
