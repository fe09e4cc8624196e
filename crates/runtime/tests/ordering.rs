//! Outputs leave in input order: a stage whose work is deferred ([`Outputs::defer`]) and
//! finishes in reverse order (later records first, as many records do at once on a group
//! commit) still has each partition's outputs produced in the order of their inputs. Outputs
//! decided by deferred work ([`Outputs::defer_outputs`], gold's batches) follow the input's
//! own, with ids derived from the input; deferred work that fails dead-letters the input
//! with none of its outputs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envelope::{
    Codec, Event, Id,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::{Message, producer::FutureProducer};
use runtime::{
    Late, Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    processor::derived_id,
    testing::{RunningStage, config_change, mirrored},
};
use testkit::{Broker, bench::fill, client_config, produce_in_order, read_records, wait_until};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

const EVENTS: usize = 240;

/// Echoes each change, completing it only after a delay that shrinks along the partition:
/// of every ten records, the last one's work is done first. With `late`, the deferred work
/// echoes the change a second time once done, and fails every tenth record (offset 3 of 10).
struct Reversing {
    late: bool,
}

impl Processor for Reversing {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::NotificationSender;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let offset = out.input_position()?.offset;
        let delay = Duration::from_millis(5 * (10 - offset.rem_euclid(10)) as u64);
        if !self.late {
            out.defer(async move {
                tokio::time::sleep(delay).await;
                Ok(())
            });
            return out.emit(mirrored(&input));
        }
        let again = mirrored(&input);
        out.defer_outputs(async move {
            tokio::time::sleep(delay).await;
            if offset.rem_euclid(10) == 3 {
                return Err(ProcessError::permanent("TEST_LATE", "refused late"));
            }
            let late: Late = Box::new(move |out: &mut Outputs<'_>| out.emit(again));
            Ok(late)
        });
        out.emit(mirrored(&input))
    }
}

#[tokio::test]
async fn deferred_work_finishing_out_of_order_keeps_outputs_in_input_order() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    // Three orgs, so three input partitions, each holding one org's changes in order.
    let mut records = Vec::new();
    let mut position: HashMap<Id, (i64, usize)> = HashMap::new();
    for i in 0..EVENTS {
        let org = (i % 3 + 1) as i64;
        let e = config_change(org, &format!("order/{i}"));
        let partition = partition_for(PartitionKey::Org(org), 6);
        records.push((partition, e.record_key(), codec.encode(&e).expect("encode")));
        position.insert(e.metadata.event_id, (org, i));
    }
    fill(&b, "config.changes", &records).await;

    let stage = RunningStage::start(
        Reversing { late: false },
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(10_000),
    );
    wait_until(Duration::from_secs(60), "every record processed", || {
        let done = stage.metrics.total(PROCESSED) >= EVENTS as u64;
        async move { done }
    })
    .await
    .expect("the stage takes every record");
    let outputs =
        read_records(&b, "audit.events", EVENTS, Duration::from_secs(30)).expect("outputs");
    stage.stop().await.expect("clean stop");
    assert_eq!(outputs.len(), EVENTS);

    // Per org (one output partition each), the outputs' causes in the inputs' order.
    let mut seen: HashMap<i64, Vec<usize>> = HashMap::new();
    for r in &outputs {
        let e: Event<AuditEvent> = codec
            .decode_known(r.payload().expect("value"))
            .expect("output decodes");
        let cause = e.metadata.causation_id.expect("causation");
        let (org, index) = position[&cause];
        seen.entry(org).or_default().push(index);
    }
    for (org, order) in seen {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "org {org}'s outputs in input order");
    }
}

#[tokio::test]
async fn outputs_decided_by_deferred_work_follow_the_inputs_own_or_fail_it_whole() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let mut records = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..60 {
        let e = config_change(1, &format!("late/{i}"));
        let partition = partition_for(PartitionKey::Org(1), 6);
        records.push((partition, e.record_key(), codec.encode(&e).expect("encode")));
        inputs.push(e.metadata.event_id);
    }
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .create()
        .expect("producer");
    produce_in_order(&producer, "config.changes", &records).await;
    let stage = RunningStage::start(
        Reversing { late: true },
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(10_000),
    );
    // Offsets 3, 13, ..., 53 fail: 6 dead letters, 54 inputs with two outputs each.
    let m = stage.metrics.clone();
    wait_until(Duration::from_secs(60), "every record done", || {
        let done = m.total(PROCESSED) == 54 && m.total(DEAD_LETTERED) == 6;
        async move { done }
    })
    .await
    .expect("54 processed, 6 dead-lettered");
    let dead =
        read_records(&b, "config.changes.dlq", 6, Duration::from_secs(60)).expect("dead letters");
    let outputs = read_records(&b, "audit.events", 108, Duration::from_secs(60)).expect("outputs");
    stage.stop().await.expect("clean stop");
    assert_eq!(dead.len(), 6);
    for d in &dead {
        assert_eq!(
            testkit::header(d, "dlq.error.code").as_deref(),
            Some("TEST_LATE")
        );
    }
    // Output id → (input index, output number), expected for every input that did not fail.
    let expected: HashMap<Id, (usize, usize)> = inputs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 3)
        .flat_map(|(i, id)| [(derived_id(*id, 0), (i, 0)), (derived_id(*id, 1), (i, 1))])
        .collect();
    let mut per_partition: HashMap<i32, Vec<(usize, usize)>> = HashMap::new();
    for r in &outputs {
        let id = codec
            .decode_known::<AuditEvent>(r.payload().expect("value"))
            .expect("output decodes")
            .metadata
            .event_id;
        let at = expected.get(&id).expect("an expected output id");
        per_partition.entry(r.partition()).or_default().push(*at);
    }
    let mut seen: Vec<(usize, usize)> = per_partition.values().flatten().copied().collect();
    seen.sort_unstable();
    let mut all: Vec<(usize, usize)> = expected.values().copied().collect();
    all.sort_unstable();
    assert_eq!(seen, all, "each input's own output and its late one, once");
    for (partition, order) in per_partition {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            order, sorted,
            "partition {partition}: own output, then late, in input order"
        );
    }
}
