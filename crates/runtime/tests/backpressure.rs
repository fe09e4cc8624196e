//! Backpressure is per partition: a partition whose worker is stuck (its queue full) holds up
//! only itself. The consumer loop parks that partition's further records, in order, and goes
//! on feeding the other partitions; once the worker moves again, the parked records follow,
//! none lost, none doubled, in their order.

use std::{collections::HashMap, sync::Arc, time::Duration};

use envelope::{
    Codec, Event, Id,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::Message;
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{MESSAGES_IN, PROCESSED},
    testing::{RunningStage, config_change, mirrored},
};
use testkit::{Broker, bench::fill, read_records, wait_until};
use tokio::sync::Semaphore;
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

/// The org whose records wait for the gate, and the one whose records flow.
const HELD: i64 = 1;
const FREE: i64 = 2;
/// Far more records than the held partition's worker and queues take in (with two in flight
/// per partition, about 520), so the rest must wait in the consumer loop.
const HELD_RECORDS: usize = 1_500;
const FREE_RECORDS: usize = 100;

/// Echoes each change; a change of org [`HELD`] first waits for a permit of `gate`.
struct Gated {
    gate: Arc<Semaphore>,
}

impl Processor for Gated {
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
        if input.metadata.org_id == HELD {
            self.gate
                .acquire()
                .await
                .map_err(|e| ProcessError::permanent("TEST_GATE", e.to_string()))?
                .forget();
        }
        out.emit(mirrored(&input))
    }
}

/// Records as `fill` takes them: (partition, key, value).
type Records = Vec<(i32, String, Vec<u8>)>;

/// `n` changes of `org`, keyed and partitioned as a stage would, and their event ids in order.
fn changes(codec: &Codec, org: i64, n: usize) -> (Records, Vec<Id>) {
    (0..n)
        .map(|i| {
            let e = config_change(org, &format!("backpressure/{org}/{i}"));
            let record = (
                partition_for(PartitionKey::Org(org), 6),
                e.record_key(),
                codec.encode(&e).expect("encode"),
            );
            (record, e.metadata.event_id)
        })
        .unzip()
}

#[tokio::test]
async fn a_stuck_partition_holds_up_only_itself() {
    assert_ne!(
        partition_for(PartitionKey::Org(HELD), 6),
        partition_for(PartitionKey::Org(FREE), 6),
        "the two orgs must land on different partitions"
    );
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let (held, held_ids) = changes(&codec, HELD, HELD_RECORDS);
    let (free, free_ids) = changes(&codec, FREE, FREE_RECORDS);
    fill(&b, "config.changes", &held).await;

    let gate = Arc::new(Semaphore::new(0));
    let mut args = RuntimeArgs::for_tests(&b);
    args.max_in_flight_per_partition = 2;
    let stage = RunningStage::start(
        Gated { gate: gate.clone() },
        args,
        codec.clone(),
        Dedupe::memory(10_000),
    );
    let m = stage.metrics.clone();
    // Every held record reaches the consumer loop: the ones the worker cannot take wait there.
    // (A loop that waited for the full queue would stop at about 520.)
    wait_until(
        Duration::from_secs(60),
        "the held partition's records taken in",
        || {
            let n = m.total(MESSAGES_IN);
            async move { n >= HELD_RECORDS as u64 }
        },
    )
    .await
    .expect("the consumer loop takes in the stuck partition's whole backlog");

    // The other partition's records arrive after them and are processed meanwhile.
    fill(&b, "config.changes", &free).await;
    wait_until(
        Duration::from_secs(60),
        "the free partition processed",
        || {
            let n = m.total(PROCESSED);
            async move { n >= FREE_RECORDS as u64 }
        },
    )
    .await
    .expect("a stuck partition does not hold up the others");
    assert_eq!(
        m.total(PROCESSED),
        FREE_RECORDS as u64,
        "no held record done yet"
    );

    // Released, the held records follow: each once, in order.
    gate.add_permits(HELD_RECORDS);
    let total = HELD_RECORDS + FREE_RECORDS;
    wait_until(Duration::from_secs(60), "every record processed", || {
        let n = m.total(PROCESSED);
        async move { n >= total as u64 }
    })
    .await
    .expect("the parked records are processed once released");
    let outputs =
        read_records(&b, "audit.events", total, Duration::from_secs(30)).expect("outputs");
    stage.stop().await.expect("clean stop");
    assert_eq!(m.total(PROCESSED), total as u64);

    let mut per_org: HashMap<i64, Vec<Id>> = HashMap::new();
    for r in &outputs {
        let e: Event<AuditEvent> = codec
            .decode_known(r.payload().expect("value"))
            .expect("output decodes");
        per_org
            .entry(e.metadata.org_id)
            .or_default()
            .push(e.metadata.causation_id.expect("causation"));
    }
    assert_eq!(
        per_org[&HELD], held_ids,
        "the held org's outputs, once each, in order"
    );
    assert_eq!(
        per_org[&FREE], free_ids,
        "the free org's outputs, once each, in order"
    );
}
