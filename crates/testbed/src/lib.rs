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
    Broker, client_config, counter_total, create_stage_topics, pg::TestSchema, read_records,
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
        let broker = Broker::start_memory()?;
        let bootstrap = broker.bootstrap();
        create_stage_topics(&bootstrap, topics).await?;
        let dir = tempfile::tempdir()?;
        let registry = schema_registry::spawn_local(dir.path()).await?;
        let codec = runtime::codec(Some(&registry), topics).await?;
        let producer: FutureProducer = client_config(&bootstrap).set("acks", "all").create()?;
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
        let partitions = P::TOPIC.spec().partitions;
        let records: Vec<(i32, String, Vec<u8>)> = events
            .into_iter()
            .map(|e| {
                let e = e.borrow();
                (
                    partition_for(e.partition_key(), partitions),
                    e.record_key(),
                    self.codec.encode(e).expect("the test bed's events encode"),
                )
            })
            .collect();
        testkit::bench::fill(&self.bootstrap, P::TOPIC.name(), &records).await;
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

/// Time a stage process (metrics on `port`) draining a backlog of `rows` records: from its
/// first record in (start-up, migrations and group join excluded) until it has processed
/// them all. `on_poll(done)` runs at every poll (every 10 ms; e.g. to sample memory), and a
/// progress line goes to stderr every 10 s. Panics if nothing arrives within two minutes.
pub async fn drain(port: u16, rows: usize, what: &str, mut on_poll: impl FnMut(f64)) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter(port, runtime::metrics::MESSAGES_IN).await == 0.0 {
        assert!(Instant::now() < deadline, "{what} never consumed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let done = counter(port, runtime::metrics::PROCESSED).await;
        on_poll(done);
        if done >= rows as f64 {
            return start.elapsed();
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {what}: {done:.0} of {rows}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counter `name` of the stage on `port` (0 when it does not answer), off the async threads.
async fn counter(port: u16, name: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || counter_total(port, name).unwrap_or(0.0))
        .await
        .unwrap_or(0.0)
}
