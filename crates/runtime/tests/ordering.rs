//! Outputs leave in input order: a stage whose work is deferred ([`Outputs::defer`]) and
//! finishes in reverse order (later records first, as many records do at once on a group
//! commit) still has each partition's outputs produced in the order of their inputs.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envelope::{
    Codec, Event, Id,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::Message;
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::PROCESSED,
    testing::{RunningStage, config_change, mirrored},
};
use testkit::{Broker, bench::fill, read_records, wait_until};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

const EVENTS: usize = 240;

/// Echoes each change, completing it only after a delay that shrinks along the partition:
/// of every ten records, the last one's work is done first.
struct Reversing;

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
        out.defer(async move {
            tokio::time::sleep(delay).await;
            Ok(())
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
        Reversing,
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
