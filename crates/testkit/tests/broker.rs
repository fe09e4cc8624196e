//! The real broker works for what adpipe needs: 12-partition topics, keyed produce,
//! consumer-group consumption with committed offsets, and independent brokers side by side.

use std::{collections::HashSet, time::Duration};

use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use testkit::{Broker, client_config, committed_offsets, create_topics, end_offsets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_through_a_group() {
    let broker = Broker::start_memory().expect("broker");
    let bootstrap = broker.bootstrap();
    create_topics(&bootstrap, &[("t.raw", 12)])
        .await
        .expect("topics");

    let producer: FutureProducer = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    const N: usize = 600;
    for i in 0..N {
        let key = format!("org-{}", i % 37);
        let value = format!("record-{i}");
        producer
            .send(
                FutureRecord::to("t.raw")
                    .key(&key)
                    .payload(&value)
                    .partition((i % 12) as i32),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let ends = end_offsets(&bootstrap, "t.raw", 12).expect("ends");
    assert_eq!(ends.iter().sum::<i64>(), N as i64);

    let consumer: StreamConsumer = client_config(&bootstrap)
        .set("group.id", "testkit-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()
        .expect("consumer");
    consumer.subscribe(&["t.raw"]).expect("subscribe");
    let mut seen = HashSet::new();
    while seen.len() < N {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a record within 30 s")
            .expect("record");
        seen.insert(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    assert_eq!(seen.len(), N);
    let committed = committed_offsets(&bootstrap, "testkit-group", "t.raw", 12).expect("committed");
    assert_eq!(committed, ends, "committed offsets equal end offsets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_run_side_by_side() {
    let a = Broker::start_memory().expect("broker a");
    let b = Broker::start_memory().expect("broker b");
    assert_ne!(a.bootstrap(), b.bootstrap());
    create_topics(&a.bootstrap(), &[("only.on.a", 3)])
        .await
        .expect("topic on a");
    let partitions_on = |bootstrap: &str| {
        let c: rdkafka::consumer::BaseConsumer = client_config(bootstrap).create().expect("client");
        let md = c
            .fetch_metadata(Some("only.on.a"), Duration::from_secs(5))
            .expect("metadata");
        md.topics().first().map_or(0, |t| t.partitions().len())
    };
    assert_eq!(partitions_on(&a.bootstrap()), 3);
    assert_ne!(partitions_on(&b.bootstrap()), 3, "b does not see a's topic");
}
