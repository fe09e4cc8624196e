//! Duplicates right behind their original: a producer retry or a re-sent batch puts the same
//! event several times into a partition, often before the first copy's outputs are
//! acknowledged. The runtime processes each event id once, with the in-memory store and with
//! Redis, whether the copies arrive in one look-ahead batch or in the next one. A stage's
//! own idempotency key (bronze's pulled row) is looked up with the event ids of its batch.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envelope::{
    Codec, Event, Id,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::Message;
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::{Dedupe, key_id},
    metrics::{DEDUPE_LOOKUPS, DEDUPLICATED, PROCESSED},
    testing::{Echo, RunningStage, config_change, mirrored},
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

/// A stage with an idempotency key of its own, the change's `key`: a key seen before emits
/// nothing (as bronze drops a row pulled twice).
struct Keyed;

impl Processor for Keyed {
    type Input = Event<ConfigChange>;
    const GROUP: topics::ConsumerGroup = topics::ConsumerGroup::NotificationSender;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    fn idempotency_key(input: &Event<ConfigChange>) -> Option<String> {
        Some(input.payload.key.clone())
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        if out.seen_key(&input.payload.key).await {
            return Ok(());
        }
        out.emit(mirrored(&input))?;
        out.mark_when_acked(&input.payload.key);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stages_own_keys_are_looked_up_with_the_batch_not_one_round_trip_each() {
    const KEYS: usize = 300;
    const EARLIER: usize = 50;
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let prefix = format!("adpipe:test:keys:{}", Id::new());
    let redis = || {
        Dedupe::redis(
            "redis://127.0.0.1:6379",
            prefix.clone(),
            Duration::from_secs(600),
        )
    };
    // Keys 0..50 were done by an earlier run (another process, so only Redis knows them).
    let earlier: Vec<Id> = (0..EARLIER).map(|k| key_id(&format!("row/{k}"))).collect();
    redis()
        .await
        .expect("Redis at 127.0.0.1:6379 is running")
        .mark_many(&earlier)
        .await
        .expect("marked");
    // Every key twice, in distinct events; both copies on one partition, the second later.
    let events: Vec<Event<ConfigChange>> = (0..2 * KEYS)
        .map(|i| config_change((i % KEYS % 13 + 1) as i64, &format!("row/{}", i % KEYS)))
        .collect();
    let records: Vec<(i32, String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let partition = partition_for(PartitionKey::Org(e.metadata.org_id), 6);
            (partition, e.record_key(), codec.encode(e).expect("encode"))
        })
        .collect();
    fill(&b, "config.changes", &records).await;

    let dedupe = redis().await.expect("Redis");
    let stage = RunningStage::start(Keyed, RuntimeArgs::for_tests(&b), codec.clone(), dedupe);
    wait_until(Duration::from_secs(90), "every record processed", || {
        let done = stage.metrics.total(PROCESSED) >= records.len() as u64;
        async move { done }
    })
    .await
    .expect("the stage takes every record");
    let lookups = stage.metrics.total(DEDUPE_LOOKUPS);
    stage.stop().await.expect("clean stop");

    // Each key not done earlier emitted once (asking for one more finds none).
    let outputs = read_records(
        &b,
        "audit.events",
        KEYS - EARLIER + 1,
        Duration::from_secs(10),
    )
    .expect("outputs");
    let mut keys: Vec<String> = outputs
        .iter()
        .map(|r| {
            let e: Event<AuditEvent> = codec
                .decode_known(r.payload().expect("value"))
                .expect("output decodes");
            e.payload.entity.entity_id
        })
        .collect();
    keys.sort_by_key(|k| k[4..].parse::<usize>().expect("row/<n>"));
    let expected: Vec<String> = (EARLIER..KEYS).map(|k| format!("row/{k}")).collect();
    assert_eq!(keys, expected, "each key once, none of the earlier run's");
    // One round trip per look-ahead batch for event ids and keys together; asked on each
    // record's turn, the keys alone would take one per record.
    eprintln!("{lookups} dedupe lookups for {} records", records.len());
    assert!(
        lookups < records.len() as u64 / 2,
        "{lookups} lookups for {} records: keys asked one at a time",
        records.len()
    );
}
