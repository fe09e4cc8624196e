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

use envelope::Codec;
use runtime::testing::{Echo, RunningStage};
use runtime::{RuntimeArgs, dedupe::Dedupe};
use testkit::{
    Broker,
    bench::{cpu_seconds, fill, passthrough},
    create_topics,
};
use topics::{PartitionKey, partition_for};

async fn stage(b: &str, n: usize, codec: Arc<Codec>) -> Duration {
    let stage = RunningStage::start(
        Echo,
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
        let base = passthrough(&b, "bench.in", "bench.out", n).await;
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
