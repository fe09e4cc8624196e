//! A durable broker keeps every acknowledged record across a SIGKILL and restart. Needs the
//! durable Tansu build (`scripts/install-tansu.sh --durable`, several minutes), so it runs in
//! `make test-durable`, not in `make test`.

use std::{collections::BTreeSet, future::Future, time::Duration};

use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use testkit::{Broker, Storage, client_config, create_topics, end_offsets};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the durable Tansu build; run with `make test-durable`"]
async fn records_survive_a_kill_and_restart() {
    let mut broker = Broker::start(Storage::Durable("sqlite://tansu.db".into())).expect("broker");
    let bootstrap = broker.bootstrap();
    create_topics(&bootstrap, &[("durable.t", 6)])
        .await
        .expect("topic");

    let producer: FutureProducer = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    const N: usize = 5_000;
    let sends = (0..N).map(|i| {
        let producer = &producer;
        async move {
            let value = format!("r{i}");
            producer
                .send(
                    FutureRecord::to("durable.t")
                        .key("k")
                        .payload(&value)
                        .partition((i % 6) as i32),
                    Duration::from_secs(30),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }
    });
    for result in in_chunks(sends).await {
        result.expect("acknowledged");
    }
    drop(producer);
    assert_eq!(
        end_offsets(&bootstrap, "durable.t", 6)
            .expect("ends")
            .iter()
            .sum::<i64>(),
        N as i64
    );

    broker.restart().expect("restart after SIGKILL");

    assert_eq!(
        end_offsets(&bootstrap, "durable.t", 6)
            .expect("ends")
            .iter()
            .sum::<i64>(),
        N as i64
    );
    let consumer: StreamConsumer = client_config(&bootstrap)
        .set("group.id", "durable-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["durable.t"]).expect("subscribe");
    let mut seen = BTreeSet::new();
    while seen.len() < N {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("record within 30 s")
            .expect("record");
        seen.insert(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
    }
    assert_eq!(
        seen.len(),
        N,
        "every acknowledged record was read back after the restart"
    );
}

/// Run the sends 100 at a time and collect their results in order.
async fn in_chunks<F: Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<F> = futs.collect();
    let mut out = Vec::with_capacity(futs.len());
    let mut rest = futs.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<F> = rest.by_ref().take(100).collect();
        out.extend(futures::future::join_all(chunk).await);
    }
    out
}
