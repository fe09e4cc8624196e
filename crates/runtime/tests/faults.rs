//! The runtime under faults: the DLQ circuit breaker stops a stage that dead-letters
//! everything, a panicking stage exits with an error instead of stalling its partition,
//! refused produce requests (on librdkafka's mock cluster) lose and double nothing, a Redis
//! outage degrades to at-least-once without stalling, and the in-memory test kit runs a
//! processor without Kafka.

mod common;

use std::{sync::Arc, time::Duration};

use envelope::{
    Codec, Event,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::{
    producer::{FutureProducer, FutureRecord},
    types::{RDKafkaApiKey, RDKafkaRespErr},
};
use runtime::testing::{Echo, RunningStage, config_change};
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
};
use testkit::{
    Broker, MockBroker, client_config, committed_offsets, create_topics, end_offsets, wait_until,
};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

/// Refuses every event.
struct Refuser;

impl Processor for Refuser {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::RuleEvaluator;
    fn outputs() -> Vec<Topic> {
        Vec::new()
    }
    async fn process(
        &self,
        _: Event<ConfigChange>,
        _: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        Err(ProcessError::permanent(
            "TEST_BAD_DEPLOY",
            "this build rejects everything",
        ))
    }
}

/// Panics on the change keyed `k/13` (a bug in a stage), echoes the others.
struct Buggy;

impl Processor for Buggy {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::RuleEvaluator;
    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }
    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        assert_ne!(input.payload.key, "k/13", "a stage bug");
        out.emit(runtime::testing::mirrored(&input))
    }
}

async fn produce_changes(b: &str, codec: &Codec, range: std::ops::Range<usize>) {
    let producer: FutureProducer = client_config(b)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in range {
        let e = config_change((i % 9 + 1) as i64, &format!("k/{i}"));
        let value = codec.encode(&e).expect("encode");
        let p = partition_for(PartitionKey::Org(e.metadata.org_id), 6);
        producer
            .send(
                FutureRecord::to("config.changes")
                    .partition(p)
                    .key(&e.record_key())
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_breaker_stops_a_bad_deploy() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    create_topics(&b, &[("config.changes", 6), ("config.changes.dlq", 6)])
        .await
        .expect("topics");
    let codec = Arc::new(Codec::offline());
    produce_changes(&b, &codec, 0..200).await;

    let mut args = RuntimeArgs::for_tests(&b);
    args.dlq_breaker_window = 20;
    args.dlq_breaker_threshold = 0.5;
    let stage = RunningStage::start(Refuser, args, codec, Dedupe::memory(1000));
    let (metrics, health) = (stage.metrics.clone(), stage.health.clone());
    let h = health.clone();
    wait_until(Duration::from_secs(60), "the breaker to open", || {
        let open = h.breaker_open.load(std::sync::atomic::Ordering::Relaxed);
        async move { open }
    })
    .await
    .expect("breaker");
    assert!(!health.ready(), "an open breaker makes the stage not ready");
    assert!(metrics.render().contains("adpipe_dlq_breaker_open 1"));
    stage.stop().await.expect("clean stop");
    let dead = metrics.total(DEAD_LETTERED) as i64;
    assert!(
        (20..200).contains(&dead),
        "stopped after about a window, not the whole topic: {dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_stage_stops_with_an_error_instead_of_stalling_a_partition() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    produce_changes(&b, &codec, 0..50).await;
    let stage = RunningStage::start(
        Buggy,
        RuntimeArgs::for_tests(&b),
        codec,
        Dedupe::memory(1000),
    );
    // No stop signal: the stage must end by itself, with the panic in its error.
    let ended = tokio::time::timeout(Duration::from_secs(60), stage.task)
        .await
        .expect("the stage ended by itself")
        .expect("not aborted");
    let err = ended.expect_err("a panic is an error exit");
    assert!(
        format!("{err:#}").contains("panicked") && format!("{err:#}").contains("a stage bug"),
        "{err:#}"
    );
}

/// On librdkafka's mock cluster, whose error injection a real broker does not offer: the
/// broker refuses produce requests for a while; the outputs are retried until acknowledged,
/// every input gets exactly one output, and every offset is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_produce_errors_lose_nothing_and_double_nothing() {
    let mock = MockBroker::start(3).expect("mock cluster");
    let b = mock.bootstrap();
    mock.create_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .expect("topics");
    let codec = Arc::new(Codec::offline());
    let n = 300;
    produce_changes(&b, &codec, 0..n).await;
    // The next 30 produce requests are refused with an error librdkafka does not retry
    // itself: the runtime must send those outputs again.
    mock.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 30],
    );
    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(1000),
    );
    let metrics = stage.metrics.clone();
    wait_until(Duration::from_secs(60), "every change processed", || {
        let done = metrics.total(PROCESSED) == n as u64;
        async move { done }
    })
    .await
    .expect("processed");
    stage.stop().await.expect("clean stop");
    assert!(
        metrics.produce_retried.get() > 0,
        "the refused produce requests were sent again"
    );

    let partitions = i32::try_from(Topic::ConfigChanges.spec().partitions).expect("p");
    assert_eq!(
        committed_offsets(&b, Echo::GROUP.name(), "config.changes", partitions).expect("committed"),
        end_offsets(&b, "config.changes", partitions).expect("ends"),
        "every input offset committed"
    );
    assert_eq!(
        common::outputs_and_causes(&b, &codec, n, Duration::from_secs(8)),
        (n, n),
        "one output per input, none twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_at_least_once() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let redis = testkit::RedisServer::start().await.expect("redis up");
    let url = format!("redis://127.0.0.1:{}", redis.port());
    let mut dedupe = None;
    for _ in 0..20 {
        if let Ok(d) = Dedupe::redis(&url, "adpipe:outage".into(), Duration::from_secs(60)).await {
            dedupe = Some(d);
            break;
        }
    }
    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        dedupe.expect("dedupe on the test's redis"),
    );
    let metrics = stage.metrics.clone();
    produce_changes(&b, &codec, 0..50).await;
    // Counted by the stage (Tansu's high watermark under-reports batched produce).
    wait_until(Duration::from_secs(60), "first outputs", || {
        let n = metrics.total(PROCESSED);
        async move { n >= 50 }
    })
    .await
    .expect("outputs before the outage");

    drop(redis); // Redis goes away mid-run.
    produce_changes(&b, &codec, 50..100).await;
    wait_until(Duration::from_secs(60), "outputs during the outage", || {
        let n = metrics.total(PROCESSED);
        async move { n >= 100 }
    })
    .await
    .expect("the stage kept processing without Redis");
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l.starts_with("adpipe_dedupe_unavailable_total ") && !l.ends_with(" 0"))
    );
    stage.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_test_kit_runs_a_processor_in_memory() {
    let codec = Codec::offline();
    let input = config_change(42, "k/7");
    let checked = runtime::testing::check(&Echo, &input)
        .await
        .expect("processed");
    let out = checked.events::<AuditEvent>(&codec);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload.entity.entity_id, "k/7");
    assert_eq!(out[0].metadata.org_id, 42);
    assert_eq!(out[0].metadata.causation_id, Some(input.metadata.event_id));
    assert_eq!(
        out[0].metadata.correlation_id,
        input.metadata.correlation_id
    );
    let err = runtime::testing::check(&Refuser, &input)
        .await
        .expect_err("refused");
    assert_eq!((err.code, err.retryable), ("TEST_BAD_DEPLOY", false));
}
