//! Stage throughput on a real Tansu broker: the runtime running a one-output stage
//! (decode, dedupe, process, encode, produce, wait for acks, store offset) beside a bare
//! rdkafka consume→produce loop over the same records, on the same broker, in the same run.
//! Both are timed from their first record in to their last output acknowledged.
//!
//! `cargo bench -p runtime --bench throughput` (`make bench`); `BENCH_EVENTS` sets the count.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use envelope::{Codec, Event, payload::config::ConfigChange};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use runtime::testing::RunningStage;
use runtime::{Outputs, ProcessError, Processor, RuntimeArgs, dedupe::Dedupe};
use testkit::{Broker, client_config, create_topics};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

struct Mirror;

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
        out.emit(runtime::testing::mirrored(&input))
    }
}

async fn fill(b: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    let producer: FutureProducer = client_config(b)
        .set("linger.ms", "20")
        .set("acks", "all")
        .create()
        .expect("producer");
    for chunk in records.chunks(2000) {
        let sends = chunk.iter().map(|(p, k, v)| {
            producer.send(
                FutureRecord::to(topic).partition(*p).key(k).payload(v),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("filled");
        }
    }
}

/// Bare rdkafka: consume each record and produce its bytes to another topic, pipelined,
/// until every produce is acknowledged.
async fn passthrough(b: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = client_config(b)
        .set("group.id", "bench-passthrough")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["bench.in"]).expect("subscribe");
    let producer: FutureProducer = client_config(b)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut start = None;
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut acked = 0;
    let mut received = 0;
    use futures::StreamExt;
    while acked < n {
        tokio::select! {
            Some(r) = pending.next(), if !pending.is_empty() => {
                let _: Result<_, _> = r;
                acked += 1;
            }
            m = consumer.recv(), if received < n && pending.len() < 10_000 => {
                let m = m.expect("record");
                start.get_or_insert_with(Instant::now);
                let (p, k, v) = (m.partition(), m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec());
                received += 1;
                let producer = producer.clone();
                pending.push(async move {
                    producer.send(FutureRecord::to("bench.out").partition(p).key(&k).payload(&v), Duration::from_secs(30)).await
                });
            }
        }
    }
    start.expect("records arrived").elapsed()
}

async fn stage(b: &str, n: usize, codec: Arc<Codec>) -> Duration {
    let stage = RunningStage::start(
        Mirror,
        RuntimeArgs::for_tests(b),
        codec,
        Dedupe::memory(n * 2),
    );
    let metrics = stage.metrics.clone();
    // Timed from the first record in (group join excluded, as for the bare loop), polled
    // every millisecond.
    while metrics.total(runtime::metrics::MESSAGES_IN) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    while metrics.total(runtime::metrics::PROCESSED) < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    stage.stop().await.expect("stage");
    elapsed
}

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = Broker::start_memory().expect("broker");
        let b = broker.bootstrap();
        create_topics(
            &b,
            &[
                ("config.changes", 6),
                ("config.changes.dlq", 6),
                ("audit.events", 6),
                ("bench.in", 6),
                ("bench.out", 6),
            ],
        )
        .await
        .expect("topics");
        let codec = Arc::new(Codec::offline());
        let records: Vec<(i32, String, Vec<u8>)> = (0..n)
            .map(|i| {
                let e = runtime::testing::config_change((i % 101 + 1) as i64, &format!("k/{i}"));
                (
                    partition_for(PartitionKey::Org(e.metadata.org_id), 6),
                    e.record_key(),
                    codec.encode(&e).expect("encode"),
                )
            })
            .collect();
        fill(&b, "bench.in", &records).await;
        fill(&b, "config.changes", &records).await;

        let c0 = cpu_seconds();
        let base = passthrough(&b, n).await;
        let c1 = cpu_seconds();
        let ours = stage(&b, n, codec).await;
        let c2 = cpu_seconds();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!("events: {n} (6 partitions, Tansu in memory, one run)");
        println!(
            "bare rdkafka consume->produce: {:>9.0} events/s ({:.2} s)",
            rate(base),
            base.as_secs_f64()
        );
        println!(
            "runtime, one-output stage:     {:>9.0} events/s ({:.2} s)",
            rate(ours),
            ours.as_secs_f64()
        );
        println!(
            "ratio runtime / bare: {:.1} %",
            100.0 * rate(ours) / rate(base)
        );
        // CPU of this process (not the broker's) per event, group join included.
        println!(
            "CPU per event: bare {:.1} us, runtime {:.1} us",
            1e6 * (c1 - c0) / n as f64,
            1e6 * (c2 - c1) / n as f64
        );
    });
}

/// CPU time (user + system) this process used so far, from /proc/self/stat (Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name: utime and stime are the 12th and 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}
