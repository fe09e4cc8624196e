//! The runtime when the whole broker goes away mid-stream and comes back with its data. On
//! librdkafka's mock cluster: `broker_down(-1)` closes every connection of every broker and
//! refuses new ones, while the partitions' logs, the committed offsets and the group stay in
//! the cluster's memory, so `broker_up(-1)` brings back the same broker with its storage — a
//! restart or a network partition of the whole cluster, which Tansu's memory engine (its data
//! dies with the process) cannot stage.
//!
//! A producer writes a steady stream of config changes before, during (its sends wait in
//! librdkafka and are retried) and after the outage while the `Echo` stage consumes them; the
//! stage must ride the outage out (never exit) and end with every input's output exactly once,
//! every offset committed and nothing dead-lettered.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use envelope::{Codec, Event, Id, payload::audit::AuditEvent};
use rdkafka::{Message as _, producer::FutureProducer};
use runtime::{
    Processor as _, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, DEDUPLICATED, MESSAGES_IN, PROCESSED},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{
    MockBroker, Paced, PacedStream, Sent, client_config, committed_offsets, end_offsets,
    read_records, wait_until,
};
use topics::{PartitionKey, Topic, partition_for};

/// One input every this often (100 a second).
const PACE: Duration = Duration::from_millis(10);
/// Processed inputs before the brokers go down (mid-stream: the producer is still going).
const DOWN_AFTER: u64 = 200;
/// How long every broker stays down: longer than the consumer's session timeout (6 s), so
/// the group also loses the member and has to take it back.
const OUTAGE: Duration = Duration::from_secs(8);
/// Inputs produced after the brokers are back, before the producer stops.
const AFTER: usize = 200;

/// Config changes, one every [`PACE`], as the stream the producer sends.
fn paced_config_changes(codec: Arc<Codec>) -> impl FnMut(usize) -> (Id, Paced) {
    let partitions = Topic::ConfigChanges.spec().partitions;
    move |i| {
        let e = config_change((i % 9 + 1) as i64, &format!("k/{i}"));
        let record = Paced {
            topic: Topic::ConfigChanges.name().to_owned(),
            partition: partition_for(PartitionKey::Org(e.metadata.org_id), partitions),
            key: e.record_key(),
            value: codec.encode(&e).expect("encode"),
        };
        (e.metadata.event_id, record)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_stream_loses_nothing_doubles_nothing_and_the_stage_rides_it_out() {
    let started = Instant::now();
    // Leaked, so that it outlives the stage's consumer even when an assertion fails: the
    // consumer then closes as the runtime shuts down, after the test's locals are gone, and
    // would hang closing against a destroyed cluster.
    let mock: &'static MockBroker = Box::leak(Box::new(MockBroker::start(3).expect("mock")));
    let b = mock.bootstrap();
    mock.create_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .expect("topics");
    let codec = Arc::new(Codec::offline());

    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(100_000),
    );
    let m = stage.metrics.clone();
    // Idempotent and patient: a send queued while the brokers are down is retried by
    // librdkafka until they are back, and written once.
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    let stream = PacedStream::start(producer, PACE, paced_config_changes(codec.clone()));

    wait_until(
        Duration::from_secs(30),
        "the stage processing the stream",
        || {
            let n = m.total(PROCESSED);
            async move { n >= DOWN_AFTER }
        },
    )
    .await
    .expect("before the outage");
    assert!(!stream.is_finished(), "the brokers go down mid-stream");

    mock.cluster().broker_down(-1).expect("every broker down");
    let down_at = Instant::now();
    let at_down = (m.total(PROCESSED), stream.queued());
    // Writes acknowledged just before the cut finish; nothing is acknowledged after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = m.total(PROCESSED);
    // The outage itself: a fault of fixed length, not a wait for a condition.
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let before_up = m.total(PROCESSED);
    let (stage_ran, producer_ran) = (!stage.task.is_finished(), !stream.is_finished());
    mock.cluster().broker_up(-1).expect("every broker up");
    let up_at = Instant::now();
    assert!(
        stage_ran,
        "the stage keeps running while the brokers are down"
    );
    assert!(
        producer_ran,
        "the producer kept producing while the brokers were down"
    );
    assert_eq!(
        before_up, settled,
        "no output acknowledged while every broker was down"
    );

    // After: more inputs, then the producer stops and every send is acknowledged.
    let sent = stream
        .finish_after(AFTER, Duration::from_secs(20), Duration::from_secs(60))
        .await;
    let n = sent.len();
    let ids: BTreeSet<Id> = sent.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), n);
    let before = sent.iter().filter(|s| s.queued < down_at).count();
    let during: Vec<&Sent<Id>> = sent
        .iter()
        .filter(|s| s.queued >= down_at && s.queued < up_at)
        .collect();
    let after = sent.iter().filter(|s| s.queued >= up_at).count();
    assert!(
        before >= DOWN_AFTER as usize && during.len() >= 100 && after >= AFTER,
        "inputs sent before ({before}), during ({}) and after ({after}) the outage",
        during.len()
    );
    assert!(
        during.iter().all(|s| s.acked >= up_at),
        "inputs sent while down are acknowledged only once the brokers are back"
    );

    wait_until(
        Duration::from_secs(40),
        "every input processed after the outage",
        || {
            let n_inputs = n as u64;
            let n = m.total(PROCESSED);
            async move { n >= n_inputs }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: processed {}, dead-lettered {}",
            m.total(PROCESSED),
            m.total(DEAD_LETTERED)
        )
    });
    let caught_up = up_at.elapsed();
    assert!(!stage.task.is_finished(), "the stage never exited");
    stage.stop().await.expect("a clean stop after the outage");
    assert_eq!(m.total(PROCESSED), n as u64, "each input processed once");
    assert_eq!(m.total(DEAD_LETTERED), 0, "nothing dead-lettered");

    let partitions = i32::try_from(Topic::ConfigChanges.spec().partitions).expect("partitions");
    assert_eq!(
        committed_offsets(
            &b,
            Echo::GROUP.name(),
            Topic::ConfigChanges.name(),
            partitions
        )
        .expect("committed"),
        end_offsets(&b, Topic::ConfigChanges.name(), partitions).expect("ends"),
        "every input offset committed"
    );
    // One output per input, by the input's event id (asking for more finds none).
    let outputs = read_records(
        &b,
        Topic::AuditEvents.name(),
        n + 50,
        Duration::from_secs(8),
    )
    .expect("outputs");
    let mut per_input: BTreeMap<Id, usize> = BTreeMap::new();
    for r in &outputs {
        let e: Event<AuditEvent> = codec
            .decode_known(r.payload().unwrap_or_default())
            .expect("an output decodes");
        *per_input
            .entry(e.metadata.causation_id.expect("caused by an input"))
            .or_default() += 1;
    }
    let twice: Vec<_> = per_input.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "inputs with more than one output: {twice:?}"
    );
    assert_eq!(
        per_input.keys().copied().collect::<BTreeSet<_>>(),
        ids,
        "an output for every input"
    );
    assert_eq!(outputs.len(), n);
    let dead =
        read_records(&b, &Topic::ConfigChanges.dlq(), 1, Duration::from_secs(2)).expect("dlq");
    assert!(dead.is_empty(), "nothing in the DLQ");
    eprintln!(
        "broker outage: all brokers down for {:.1} s with {} of {} inputs processed; inputs \
         sent before {before}, during {} (acknowledged after the restart), after {after}; {} \
         records in, {} redeliveries skipped by dedupe; all processed {:.1} s after the restart; \
         {n} outputs, one per input; {:.1} s",
        up_at.duration_since(down_at).as_secs_f64(),
        at_down.0,
        at_down.1,
        during.len(),
        m.total(MESSAGES_IN),
        m.total(DEDUPLICATED),
        caught_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
