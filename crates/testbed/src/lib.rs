//! The test bed a stage's binary tests start with: a Tansu broker with the stage's topics
//! (and their DLQs), the project's schema registry with their schemas registered, a codec,
//! an `acks=all` producer, a PostgreSQL schema of the test's own, and a scratch directory —
//! everything on free ports or under unique names, stopped or dropped with the bed.
//!
//! Used only as a dev-dependency (it builds on `testkit`).

use std::{
    borrow::Borrow,
    sync::Arc,
    time::{Duration, Instant},
};

use envelope::{Codec, Event, Payload};
use rdkafka::{Message, producer::FutureProducer};
use testkit::{
    Broker, StageProcess, counter_total, create_stage_topics, pg::TestSchema, read_records,
};
use topics::{Topic, partition_for};

/// A stage's test platform (see the module docs).
pub struct TestBed {
    /// The broker (killed on drop).
    pub broker: Broker,
    /// Its bootstrap address.
    pub bootstrap: String,
    /// The registry's URL.
    pub registry: String,
    /// A codec on the registry.
    pub codec: Arc<Codec>,
    /// An `acks=all` producer.
    pub producer: FutureProducer,
    /// The test's PostgreSQL schema (drop it with `bed.schema.drop().await` at the end).
    pub schema: TestSchema,
    /// Scratch space (the registry's file, logs).
    pub dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBed")
            .field("bootstrap", &self.bootstrap)
            .field("registry", &self.registry)
            .field("schema", &self.schema.name())
            .finish_non_exhaustive()
    }
}

impl TestBed {
    /// Start a bed with `topics` created and their schemas registered; `name` prefixes the
    /// PostgreSQL schema.
    pub async fn start(name: &str, topics: &[Topic]) -> anyhow::Result<TestBed> {
        TestBed::start_on(Broker::start_memory()?, name, topics).await
    }

    /// [`TestBed::start`] on a broker of the test's own (e.g. a durable one it restarts).
    pub async fn start_on(broker: Broker, name: &str, topics: &[Topic]) -> anyhow::Result<TestBed> {
        let bootstrap = broker.bootstrap();
        create_stage_topics(&bootstrap, topics).await?;
        let dir = tempfile::tempdir()?;
        let registry = schema_registry::spawn_local(dir.path()).await?;
        let codec = runtime::codec(Some(&registry), topics).await?;
        let producer: FutureProducer = broker.client_config().set("acks", "all").create()?;
        let schema = TestSchema::create(name).await?;
        Ok(TestBed {
            broker,
            bootstrap,
            registry,
            codec,
            producer,
            schema,
            dir,
        })
    }

    /// The environment a stage binary needs to run on this bed (broker, registry, no run
    /// events); add the stage's own settings.
    pub fn stage_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KAFKA_BOOTSTRAP_SERVERS", self.bootstrap.clone()),
            ("SCHEMA_REGISTRY_URL", self.registry.clone()),
            ("RUN_REPORT_SECS", "0".to_owned()),
        ]
    }

    /// Produce `event` as a stage would (its topic, key and partition); panics on failure.
    pub async fn produce<P: Payload>(&self, event: &Event<P>) {
        runtime::testing::produce_event(&self.producer, &self.codec, event)
            .await
            .expect("the test bed's broker takes the event");
    }

    /// Fill `P`'s topic with `events` as a backlog (encoded, keyed and partitioned as a
    /// stage would, produced many at a time), for benchmarks.
    pub async fn fill<P: Payload, E: Borrow<Event<P>>>(&self, events: impl IntoIterator<Item = E>) {
        fill_events(&self.bootstrap, &self.codec, events).await;
    }

    /// Every event of `P`'s topic so far, read from the start for up to `within`.
    pub async fn events<P: Payload>(&self, within: Duration) -> Vec<Event<P>> {
        let mut out = Vec::new();
        let records = read_records(&self.bootstrap, P::TOPIC.name(), usize::MAX, within)
            .expect("the test bed's broker answers");
        for m in records {
            out.push(
                self.codec
                    .decode(m.payload().unwrap_or_default())
                    .await
                    .expect("the topic's events decode"),
            );
        }
        out
    }
}

/// The finished records (processed, dead-lettered or skipped as duplicates) of the stages
/// whose metrics are on `ports`.
async fn finished(ports: &[u16]) -> f64 {
    let ports = ports.to_vec();
    tokio::task::spawn_blocking(move || {
        ports
            .iter()
            .flat_map(|p| {
                [
                    runtime::metrics::PROCESSED,
                    runtime::metrics::DEAD_LETTERED,
                    runtime::metrics::DEDUPLICATED,
                ]
                .map(|name| counter_total(*p, name).unwrap_or(0.0))
            })
            .sum()
    })
    .await
    .unwrap_or(0.0)
}

/// The records the stages on `ports` consumed.
async fn consumed(ports: &[u16]) -> f64 {
    let ports = ports.to_vec();
    tokio::task::spawn_blocking(move || {
        ports
            .iter()
            .map(|p| counter_total(*p, runtime::metrics::MESSAGES_IN).unwrap_or(0.0))
            .sum()
    })
    .await
    .unwrap_or(0.0)
}

/// Time `stages` (one or more instances of a stage binary) draining `records`: from the
/// first record in (start-up, migrations and group join excluded, as for a pass-through)
/// until every record is finished. `on_poll` gets the share done at each poll (every 10 ms),
/// e.g. to sample memory; a progress line goes to stderr every 10 s. Panics with the logs if
/// a stage exits before consuming, nothing arrives within two minutes, or progress stalls
/// for a minute.
pub async fn drain(
    stages: &mut [StageProcess],
    records: usize,
    what: &str,
    mut on_poll: impl FnMut(f64),
) -> Duration {
    let ports: Vec<u16> = stages.iter().map(StageProcess::metrics_port).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(&ports).await == 0.0 {
        for s in stages.iter_mut() {
            assert!(s.exited().is_none(), "{what} exited:\n{}", s.log());
        }
        assert!(Instant::now() < deadline, "{what} never consumed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let (mut last, mut last_change, mut last_report) = (0.0, Instant::now(), Instant::now());
    loop {
        let done = finished(&ports).await;
        on_poll(done / records as f64);
        if done >= records as f64 {
            return start.elapsed();
        }
        if done > last {
            (last, last_change) = (done, Instant::now());
        }
        let logs = || stages.iter().map(StageProcess::log).collect::<String>();
        assert!(
            last_change.elapsed() < Duration::from_secs(60),
            "{what} stalled at {done} of {records}:\n{}",
            logs()
        );
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {what}: {done:.0} of {records}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fill `P`'s topic on `bootstrap` with `events` as a backlog: encoded with `codec`, keyed
/// and partitioned as a stage would, produced many at a time.
pub async fn fill_events<P: Payload, E: Borrow<Event<P>>>(
    bootstrap: &str,
    codec: &Codec,
    events: impl IntoIterator<Item = E>,
) {
    let partitions = P::TOPIC.spec().partitions;
    let records: Vec<(i32, String, Vec<u8>)> = events
        .into_iter()
        .map(|e| {
            let e = e.borrow();
            (
                partition_for(e.partition_key(), partitions),
                e.record_key(),
                codec.encode(e).expect("the events encode"),
            )
        })
        .collect();
    testkit::bench::fill(bootstrap, P::TOPIC.name(), &records).await;
}

/// The stage binaries, in the order `scripts/platform.sh` starts them (and numbers their
/// metrics ports).
pub const STAGE_BINARIES: [&str; 6] = [
    "bronze",
    "silver",
    "gold",
    "rule-evaluator",
    "notification-sender",
    "audit-writer",
];

/// Version 1 of `item` for `org`, upserted by account manager `am-1` through `pipelinectl`,
/// under the item's key (`booking/<campaign>`, `channel/<id>`, …): the configuration a test
/// or benchmark fills into `config.changes`.
pub fn config_event(
    org: i64,
    item: envelope::payload::config::ConfigItem,
) -> Event<envelope::payload::config::ConfigChange> {
    use envelope::payload::{
        common::{Actor, ActorType},
        config::{ConfigChange, ConfigOp},
    };
    Event::new(
        org,
        envelope::Source {
            service: "pipelinectl".into(),
            instance: "test".into(),
        },
        ConfigChange {
            key: config_log::key_of(&item),
            version: 1,
            op: ConfigOp::Upsert,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: "am-1".into(),
                display_name: None,
            },
            reason: None,
            change: item,
        },
    )
}
