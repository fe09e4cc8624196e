//! The runtime against a real Tansu broker: exact outputs and committed offsets, failures and
//! malformed records dead-lettered with their headers while the stage keeps going, and a stage
//! killed mid-run and restarted without loss and without doubled outputs, and a rewound
//! group whose every redelivery is skipped by the Redis dedupe.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use envelope::{
    Codec, Event, Id,
    payload::{
        audit::AuditEvent,
        config::ConfigChange,
        etl::{Execution, RunStatus},
    },
};
use rdkafka::{
    Message,
    consumer::{BaseConsumer, Consumer},
    producer::FutureProducer,
};
use runtime::testing::{RunningStage, config_change};
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs, Tick,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, DEDUPLICATED, PROCESSED},
};
use testkit::{
    Broker, client_config, committed_offsets, create_topics, end_offsets, header, read_records,
    wait_until,
};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

/// Mirrors each config change as an audit event. Keys starting with `fail/` are refused
/// permanently; keys starting with `flaky/` fail once with a retryable error.
#[derive(Default)]
struct Mirror {
    flaky: Mutex<HashSet<String>>,
}

impl Processor for Mirror {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::GoldProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let key = input.payload.key.clone();
        if key.starts_with("fail/") {
            return Err(ProcessError::permanent(
                "TEST_REFUSED",
                format!("refused {key}"),
            ));
        }
        if key.starts_with("flaky/") && self.flaky.lock().expect("lock").insert(key.clone()) {
            return Err(ProcessError::retryable("TEST_FLAKY", "try again"));
        }
        out.emit(runtime::testing::mirrored(&input))
    }
}

/// [`Mirror`] in another consumer group: reads its input again from the start.
struct Replay(Mirror);

impl Processor for Replay {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::AuditWriter;

    fn outputs() -> Vec<Topic> {
        Mirror::outputs()
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        self.0.process(input, out).await
    }
}

async fn setup() -> (Broker, Arc<Codec>) {
    let broker = Broker::start_memory().expect("broker");
    create_topics(
        &broker.bootstrap(),
        &[
            ("config.changes", 6),
            ("config.changes.dlq", 6),
            ("audit.events", 6),
        ],
    )
    .await
    .expect("topics");
    (broker, Arc::new(Codec::offline()))
}

async fn produce(bootstrap: &str, records: &[(i32, String, Vec<u8>)]) {
    let producer: FutureProducer = client_config(bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer");
    testkit::produce_in_order(&producer, "config.changes", records).await;
}

fn encoded(codec: &Codec, events: &[Event<ConfigChange>]) -> Vec<(i32, String, Vec<u8>)> {
    events
        .iter()
        .map(|e| {
            (
                partition_for(PartitionKey::Org(e.metadata.org_id), 6),
                e.record_key(),
                codec.encode(e).expect("encode"),
            )
        })
        .collect()
}

fn start(bootstrap: &str, codec: Arc<Codec>, dedupe: Dedupe) -> RunningStage {
    start_as(Mirror::default(), bootstrap, codec, dedupe)
}

fn start_as<P: Processor>(
    processor: P,
    bootstrap: &str,
    codec: Arc<Codec>,
    dedupe: Dedupe,
) -> RunningStage {
    RunningStage::start(processor, RuntimeArgs::for_tests(bootstrap), codec, dedupe)
}

/// Reads `topic` (all partitions) from the start with a plain consumer of its own group.
struct Reader(BaseConsumer);

impl Reader {
    fn new(bootstrap: &str, topic: &str) -> Reader {
        let consumer: BaseConsumer = client_config(bootstrap)
            .set("group.id", format!("reader-{}", Id::new()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        consumer.subscribe(&[topic]).expect("subscribe");
        Reader(consumer)
    }

    /// The next record, if one arrives within 200 ms.
    fn poll(&mut self) -> Option<rdkafka::message::OwnedMessage> {
        let consumer = &self.0;
        tokio::task::block_in_place(|| match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => Some(m.detach()),
            _ => None,
        })
    }
}

/// A dead letter carries its input's event headers and replay count (the first value of
/// each, as the worker copied them out of librdkafka's buffer) and no other input header,
/// beside its original key and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_carries_the_inputs_event_headers_and_replay_count_only() {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::FutureRecord,
    };
    let (broker, codec) = setup().await;
    let b = broker.bootstrap();
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .create()
        .expect("producer");
    let headers = [
        ("ce_id", Some("first-id")),
        ("x-other", Some("not carried")),
        ("ce_id", Some("second-id")),
        ("traceparent", None),
        ("adpipe.replay.count", Some("2")),
        ("correlation_id", Some("corr-1")),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: value.map(str::as_bytes),
        })
    });
    producer
        .send(
            FutureRecord::to("config.changes")
                .partition(2)
                .key("k")
                .payload(&b"garbage bytes"[..])
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .expect("produced");

    let stage = start(&b, codec, Dedupe::memory(100));
    let dlq = read_records(&b, "config.changes.dlq", 1, Duration::from_secs(60)).expect("dlq");
    stage.stop().await.expect("clean stop");
    let [d] = dlq.as_slice() else {
        panic!("one dead letter, got {}", dlq.len())
    };
    assert_eq!(d.payload(), Some(&b"garbage bytes"[..]));
    assert_eq!(d.key(), Some(&b"k"[..]));
    assert_eq!(d.partition(), 2);
    assert_eq!(
        header(d, "dlq.error.code").as_deref(),
        Some("DECODE_WRONG_MAGIC_BYTE")
    );
    assert_eq!(header(d, "ce_id").as_deref(), Some("first-id"));
    assert_eq!(header(d, "correlation_id").as_deref(), Some("corr-1"));
    assert_eq!(header(d, "adpipe.replay.count").as_deref(), Some("2"));
    assert_eq!(header(d, "x-other"), None, "not an event header");
    assert_eq!(header(d, "traceparent"), None, "the input's had no value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_dlq_and_offsets() {
    let (broker, codec) = setup().await;
    let b = broker.bootstrap();
    let mut events: Vec<Event<ConfigChange>> = (0..120)
        .map(|i| config_change(i % 17 + 1, &format!("org/{i}")))
        .collect();
    events.extend((0..6).map(|i| config_change(i + 1, &format!("fail/{i}"))));
    events.extend((0..4).map(|i| config_change(i + 1, &format!("flaky/{i}"))));
    let mut records = encoded(&codec, &events);
    let valid = codec.encode(&events[0]).expect("encode");
    let malformed: Vec<(i32, String, Vec<u8>, &str)> = vec![
        (
            0,
            "1".into(),
            b"garbage bytes".to_vec(),
            "DECODE_WRONG_MAGIC_BYTE",
        ),
        (1, "2".into(), vec![0, 0, 0], "DECODE_SHORT_BUFFER"),
        (
            2,
            "3".into(),
            vec![0, 0, 0, 0x7f, 0x7f, 1, 2, 3],
            "DECODE_UNKNOWN_SCHEMA_ID",
        ),
        (
            3,
            "4".into(),
            valid[..valid.len() - 4].to_vec(),
            "DECODE_MALFORMED_BODY",
        ),
    ];
    records.extend(
        malformed
            .iter()
            .map(|(p, k, v, _)| (*p, k.clone(), v.clone())),
    );
    produce(&b, &records).await;

    let stage = start(&b, codec.clone(), Dedupe::memory(10_000));
    let want_out = 120 + 4;
    let want_dlq = 6 + malformed.len() as i64;
    // Counted by the stage: Tansu's high watermark under-reports batched produce.
    wait_until(
        Duration::from_secs(90),
        "all outputs and dead letters",
        || {
            let ok = stage.metrics.total(PROCESSED) == want_out as u64
                && stage.metrics.total(DEAD_LETTERED) == want_dlq as u64;
            async move { ok }
        },
    )
    .await
    .expect("outputs");
    let metrics = stage.metrics.clone();
    stage.stop().await.expect("clean stop");

    // Every input offset was committed after its outputs.
    let ends = end_offsets(&b, "config.changes", 6).expect("ends");
    assert_eq!(
        committed_offsets(&b, "gold-processor", "config.changes", 6).expect("committed"),
        ends
    );

    // Exactly one audit event per good input, caused by it, on the org's partition.
    let outputs = read_records(
        &b,
        "audit.events",
        want_out as usize,
        Duration::from_secs(60),
    )
    .expect("outputs");
    assert_eq!(outputs.len(), want_out as usize);
    let by_cause: HashMap<Id, usize> = outputs.iter().fold(HashMap::new(), |mut m, r| {
        let e: Event<AuditEvent> = codec
            .decode_known(r.payload().expect("value"))
            .expect("output decodes");
        assert_eq!(
            r.partition(),
            partition_for(PartitionKey::Org(e.metadata.org_id), 6)
        );
        assert_eq!(header(r, "ce_type").as_deref(), Some("audit.events"));
        assert!(
            e.metadata
                .traceparent
                .as_deref()
                .is_some_and(|t| t.starts_with("00-"))
        );
        *m.entry(e.metadata.causation_id.expect("causation"))
            .or_default() += 1;
        m
    });
    for e in events
        .iter()
        .filter(|e| !e.payload.key.starts_with("fail/"))
    {
        assert_eq!(
            by_cause.get(&e.metadata.event_id),
            Some(&1),
            "{}",
            e.payload.key
        );
    }

    // Dead letters: original bytes and key, with the error headers.
    let dlq = read_records(
        &b,
        "config.changes.dlq",
        want_dlq as usize,
        Duration::from_secs(60),
    )
    .expect("dead letters");
    assert_eq!(dlq.len(), want_dlq as usize);
    for (partition, key, value, code) in &malformed {
        let d = dlq
            .iter()
            .find(|d| d.payload() == Some(value.as_slice()))
            .unwrap_or_else(|| panic!("{code} record in the DLQ"));
        assert_eq!(header(d, "dlq.error.code").as_deref(), Some(*code));
        assert_eq!(d.partition(), *partition);
        assert_eq!(d.key(), Some(key.as_bytes()));
        assert_eq!(
            header(d, "dlq.original.topic").as_deref(),
            Some("config.changes")
        );
        assert_eq!(
            header(d, "dlq.original.partition"),
            Some(partition.to_string())
        );
        assert!(header(d, "dlq.original.offset").is_some_and(|o| o.parse::<i64>().is_ok()));
        assert_eq!(header(d, "dlq.stage").as_deref(), Some("gold-processor"));
        assert!(header(d, "dlq.error.message").is_some_and(|m| !m.is_empty()));
    }
    let refused: Vec<_> = dlq
        .iter()
        .filter(|d| header(d, "dlq.error.code").as_deref() == Some("TEST_REFUSED"))
        .collect();
    assert_eq!(refused.len(), 6);
    assert!(
        refused
            .iter()
            .all(|d| header(d, "dlq.attempts").as_deref() == Some("1"))
    );
    assert!(refused.iter().all(
        |d| header(d, "dlq.first.failure").is_some() && header(d, "dlq.last.failure").is_some()
    ));

    let text = metrics.render();
    assert!(
        text.contains(
            "adpipe_events_retried_total{stage=\"gold-processor\",topic=\"config.changes\"} 4"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "adpipe_events_processed_total{stage=\"gold-processor\",topic=\"config.changes\"} 124"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_and_restarted_loses_nothing_and_doubles_nothing() {
    let (broker, codec) = setup().await;
    let b = broker.bootstrap();
    let events: Vec<Event<ConfigChange>> = (0..400)
        .map(|i| config_change(i % 23 + 1, &format!("org/{i}")))
        .collect();
    produce(&b, &encoded(&codec, &events)).await;
    let prefix = format!("adpipe:test:{}", Id::new());
    let redis = || {
        Dedupe::redis(
            "redis://127.0.0.1:6379",
            prefix.clone(),
            Duration::from_secs(600),
        )
    };

    let first = start(
        &b,
        codec.clone(),
        redis().await.expect("Redis at 127.0.0.1:6379"),
    );
    wait_until(Duration::from_secs(60), "some outputs", || {
        let n = first.metrics.total(PROCESSED);
        async move { n >= 50 }
    })
    .await
    .expect("first run made progress");
    first.task.abort(); // a crash: no draining, no final commit
    let _ = first.task.await;

    let second = start(&b, codec.clone(), redis().await.expect("Redis"));
    // Read audit.events until every input's output is there (records are counted by
    // consuming them, not by Tansu's under-reporting high watermark).
    let mut reader = Reader::new(&b, "audit.events");
    let mut out: Vec<Event<AuditEvent>> = Vec::new();
    let causes = |out: &[Event<AuditEvent>]| {
        out.iter()
            .map(|e| e.metadata.causation_id)
            .collect::<HashSet<_>>()
            .len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while causes(&out) < 400 && std::time::Instant::now() < deadline {
        out.extend(reader.poll().as_ref().and_then(codec_decode));
    }
    second.stop().await.expect("clean stop");

    assert_eq!(causes(&out), 400, "no input lost");
    // A redelivered input yields outputs with the same event ids: distinct ids == inputs.
    let ids: HashSet<Id> = out.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(
        ids.len(),
        400,
        "one distinct output per input ({} records)",
        out.len()
    );
    let ends = end_offsets(&b, "config.changes", 6).expect("ends");
    assert_eq!(
        committed_offsets(&b, "gold-processor", "config.changes", 6).expect("committed"),
        ends
    );

    // Every input delivered once more, from the start (a new group, the same dedupe keys, as
    // after a rewind of the group's offsets): Redis remembers them all.
    let third = start_as(
        Replay(Mirror::default()),
        &b,
        codec.clone(),
        redis().await.expect("Redis"),
    );
    wait_until(Duration::from_secs(60), "every redelivery skipped", || {
        let n = third.metrics.total(DEDUPLICATED);
        async move { n >= 400 }
    })
    .await
    .expect("third run skipped the redeliveries");
    let metrics = third.metrics.clone();
    third.stop().await.expect("clean stop");
    assert_eq!(metrics.total(DEDUPLICATED), 400);
    assert_eq!(metrics.total(PROCESSED), 0, "nothing processed twice");
}

/// A stage with every hook: `start` must run before the first record, and each tick emits
/// one `tick.flush` audit event per assigned partition.
#[derive(Default)]
struct Hooked {
    started: AtomicBool,
    ticks: Arc<AtomicUsize>,
}

impl Processor for Hooked {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::GoldProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    async fn start(&self) -> anyhow::Result<()> {
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        if !self.started.load(Ordering::SeqCst) {
            return Err(ProcessError::permanent(
                "TEST_NOT_STARTED",
                "start hook not run",
            ));
        }
        let position = out.position().expect("inputs have a position");
        assert_eq!(position.topic, Topic::ConfigChanges);
        out.emit(runtime::testing::mirrored(&input))
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }

    async fn tick(&self, tick: &Tick, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        assert!(out.position().is_none(), "a tick has no input");
        for (topic, partition) in &tick.assigned {
            let mut flush = runtime::testing::mirrored(&config_change(1, "tick"));
            flush.action = "tick.flush".into();
            flush.entity.entity_id = format!("{topic}/{partition}");
            out.emit_new(i64::from(*partition) + 1, flush)?;
        }
        self.ticks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_tick_and_run_events() {
    let (broker, codec) = setup().await;
    let b = broker.bootstrap();
    create_topics(&b, &[("etl.execution", 6)])
        .await
        .expect("etl topic");
    let events: Vec<Event<ConfigChange>> = (0..30)
        .map(|i| config_change(i % 5 + 1, &format!("org/{i}")))
        .collect();
    produce(&b, &encoded(&codec, &events)).await;
    let stage = Hooked::default();
    let ticks = stage.ticks.clone();
    let mut args = RuntimeArgs::for_tests(&b);
    args.run_report_secs = 1;
    let running = RunningStage::start(stage, args, codec.clone(), Dedupe::memory(100));
    wait_until(
        Duration::from_secs(60),
        "inputs processed, ticks run",
        || {
            let done = running.metrics.total(PROCESSED) == 30 && ticks.load(Ordering::SeqCst) >= 2;
            async move { done }
        },
    )
    .await
    .expect("processed and ticked");
    let metrics = running.metrics.clone();
    running.stop().await.expect("clean stop");
    assert_eq!(
        metrics.total(DEAD_LETTERED),
        0,
        "start ran before the first record"
    );

    // Each tick flushed every one of the 6 assigned partitions.
    let audit: Vec<Event<AuditEvent>> =
        read_records(&b, "audit.events", 30 + 12, Duration::from_secs(30))
            .expect("audit records")
            .iter()
            .filter_map(codec_decode)
            .collect();
    let flushed: HashSet<String> = audit
        .iter()
        .filter(|e| e.payload.action == "tick.flush")
        .map(|e| e.payload.entity.entity_id.clone())
        .collect();
    assert_eq!(
        flushed.len(),
        6,
        "one flush per assigned partition: {flushed:?}"
    );

    // Run events: started first, completed last, with this run's counts. They were all
    // acknowledged before `stop` returned; read until the completed one is in.
    let mut reader = Reader::new(&b, "etl.execution");
    let mut runs: Vec<Execution> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !runs.iter().any(|r| r.status == RunStatus::Completed)
        && std::time::Instant::now() < deadline
    {
        let event = reader.poll().and_then(|r| {
            Codec::offline()
                .decode_known::<Execution>(r.payload()?)
                .ok()
        });
        runs.extend(event.map(|e| e.payload));
    }
    runs.sort_by_key(|r| {
        (
            r.status != RunStatus::Started,
            r.status == RunStatus::Completed,
        )
    });
    let (first, last) = (
        runs.first().expect("a run event"),
        runs.last().expect("run events"),
    );
    assert_eq!(first.status, RunStatus::Started);
    assert_eq!(last.status, RunStatus::Completed, "{runs:?}");
    assert_eq!(first.run_id, last.run_id);
    assert_eq!(last.pipeline_id, "gold-processor");
    assert_eq!(last.counts.records_in, 30);
    assert!(last.counts.records_out >= 30 + 12, "{:?}", last.counts);
    assert!(last.ended_at.is_some());
}

fn codec_decode(r: &rdkafka::message::OwnedMessage) -> Option<Event<AuditEvent>> {
    Codec::offline().decode_known(r.payload()?).ok()
}

#[test]
fn derived_ids_are_stable_and_distinct() {
    let a = Id::new();
    assert_eq!(
        runtime::processor::derived_id(a, 0),
        runtime::processor::derived_id(a, 0)
    );
    assert_ne!(
        runtime::processor::derived_id(a, 0),
        runtime::processor::derived_id(a, 1)
    );
    assert_ne!(
        runtime::processor::derived_id(a, 0),
        runtime::processor::derived_id(Id::new(), 0)
    );
}
