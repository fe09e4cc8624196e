//! Duplicates right behind their original: a producer retry or a re-sent batch puts the same
//! event several times into a partition, often before the first copy's outputs are
//! acknowledged. The runtime processes each event id once, with the in-memory store and with
//! Redis, whether the copies arrive in one look-ahead batch or in the next one.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envelope::{Codec, Event, Id, payload::audit::AuditEvent};
use rdkafka::Message;
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEDUPLICATED, PROCESSED},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{Broker, bench::fill, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

const EVENTS: usize = 300;
const COPIES: usize = 3;

async fn each_event_once(dedupe: Dedupe) {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    // Every event three times in a row on its partition.
    let mut records = Vec::new();
    let mut events = Vec::new();
    for i in 0..EVENTS {
        let e = config_change((i % 13 + 1) as i64, &format!("dup/{i}"));
        let value = codec.encode(&e).expect("encode");
        let partition = partition_for(PartitionKey::Org(e.metadata.org_id), 6);
        for _ in 0..COPIES {
            records.push((partition, e.record_key(), value.clone()));
        }
        events.push(e);
    }
    fill(&b, "config.changes", &records).await;

    let stage = RunningStage::start(Echo, RuntimeArgs::for_tests(&b), codec.clone(), dedupe);
    let all = (EVENTS * COPIES) as u64;
    wait_until(
        Duration::from_secs(90),
        "every copy processed or skipped",
        || {
            let m = &stage.metrics;
            let done = m.total(PROCESSED) + m.total(DEDUPLICATED) >= all;
            async move { done }
        },
    )
    .await
    .expect("the stage takes every record");
    let (processed, skipped) = (
        stage.metrics.total(PROCESSED),
        stage.metrics.total(DEDUPLICATED),
    );
    stage.stop().await.expect("clean stop");
    assert_eq!(processed, EVENTS as u64, "each event processed once");
    assert_eq!(
        skipped,
        (EVENTS * (COPIES - 1)) as u64,
        "every copy skipped"
    );

    // Exactly one output per event (asking for one more than expected finds none).
    let outputs =
        read_records(&b, "audit.events", EVENTS + 1, Duration::from_secs(10)).expect("outputs");
    let by_cause: HashMap<Id, usize> = outputs.iter().fold(HashMap::new(), |mut m, r| {
        let e: Event<AuditEvent> = codec
            .decode_known(r.payload().expect("value"))
            .expect("output decodes");
        *m.entry(e.metadata.causation_id.expect("causation"))
            .or_default() += 1;
        m
    });
    assert_eq!(outputs.len(), EVENTS);
    for e in &events {
        assert_eq!(by_cause.get(&e.metadata.event_id), Some(&1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_are_skipped_with_the_memory_store() {
    each_event_once(Dedupe::memory(10_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_are_skipped_with_redis() {
    let prefix = format!("adpipe:test:dup:{}", Id::new());
    let dedupe = Dedupe::redis("redis://127.0.0.1:6379", prefix, Duration::from_secs(600))
        .await
        .expect("Redis at 127.0.0.1:6379 is running");
    each_event_once(dedupe).await;
}
