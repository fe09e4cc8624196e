//! The real broker works for what adpipe needs: 12-partition topics, keyed produce,
//! consumer-group consumption with committed offsets, independent brokers side by side, and
//! a broker behind TLS.

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

/// Measured Tansu 0.6 behaviour: after concurrent, batched produce every acknowledged record
/// is stored and consumable, but the high watermark (ListOffsets latest) under-reports
/// (about 1,956 of 2,000 here). adpipe's tests therefore count records by consuming them, and
/// `kafka_consumer_lag` reads low on Tansu. This test fails if records go missing, and tells
/// when a Tansu release fixes the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_produce_keeps_every_record_though_the_watermark_lags() {
    use rdkafka::consumer::BaseConsumer;
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    create_topics(&b, &[("batched", 6)]).await.expect("topic");
    let producer: FutureProducer = client_config(&b)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    const N: usize = 2000;
    let mut acked = 0;
    for round in 0..N / 50 {
        let sends = (0..50).map(|i| {
            let value = format!("r{round}-{i}");
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to("batched")
                            .partition(((round * 7 + i) % 6) as i32)
                            .key("k")
                            .payload(&value),
                        Duration::from_secs(10),
                    )
                    .await
            }
        });
        acked += futures::future::join_all(sends)
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    assert_eq!(acked, N);
    let consumer: BaseConsumer = client_config(&b)
        .set("group.id", "batched-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["batched"]).expect("subscribe");
    let mut seen = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < N && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(
        seen.len(),
        N,
        "every acknowledged record is stored and consumable"
    );
    let watermark: i64 = end_offsets(&b, "batched", 6).expect("ends").iter().sum();
    assert!(
        watermark <= N as i64,
        "watermark {watermark} above the records produced"
    );
    if watermark < N as i64 {
        eprintln!(
            "tansu: high watermark {watermark} under-reports {N} stored records (known Tansu 0.6 behaviour)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tls_the_broker_serves_clients_that_trust_its_certificate_only() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use testkit::read_records_with;

    let mut broker = Broker::start_memory().expect("broker");
    tokio::task::block_in_place(|| broker.serve_tls()).expect("the broker restarts behind TLS");
    let front = broker.tls().expect("a TLS front");
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{}", front.port()));
    let admin: AdminClient<_> = broker.client_config().create().expect("admin");
    let topic = NewTopic::new("t.tls", 3, TopicReplication::Fixed(1));
    admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("topic created over TLS");
    let producer: FutureProducer = broker
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    const N: usize = 50;
    for i in 0..N {
        let value = format!("record-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("t.tls").payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("acknowledged over TLS");
    }
    let records = tokio::task::block_in_place(|| {
        read_records_with(broker.client_config(), "t.tls", N, Duration::from_secs(20))
    })
    .expect("a reader over TLS");
    assert_eq!(records.len(), N, "every record read back over TLS");
    let handshakes = front.handshakes();
    assert!(handshakes > 0, "the clients came through the TLS front");
    // One record, read with `config`, for 3 s.
    let read_one = |config: rdkafka::ClientConfig| {
        tokio::task::block_in_place(|| {
            read_records_with(config, "t.tls", 1, Duration::from_secs(3))
        })
    };
    // A plaintext client reaches nothing: its bytes are not a TLS handshake.
    let plain = read_one(client_config(&broker.bootstrap()));
    assert!(
        plain.map_or(true, |r| r.is_empty()),
        "a plaintext client read records"
    );
    assert!(
        front.refused() > 0,
        "the plaintext client's connections were refused"
    );
    // TLS without trusting the certificate fails the handshake too.
    let untrusted = read_one(
        client_config(&broker.bootstrap())
            .set("security.protocol", "ssl")
            .clone(),
    );
    assert!(
        untrusted.map_or(true, |r| r.is_empty()),
        "an untrusting client read records"
    );
    assert_eq!(
        front.handshakes(),
        handshakes,
        "no handshake completed without trust"
    );
}
