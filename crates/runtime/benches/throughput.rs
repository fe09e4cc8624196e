//! Stage throughput on a real Tansu broker: the runtime running a one-output stage
//! (decode, dedupe, process, encode, produce, wait for acks, store offset) beside a bare
//! rdkafka consume→produce loop over the same records, on the same broker, in the same run.
//! Both are timed from their first record in to their last output acknowledged.
//!
//! The stage runs twice: with in-memory dedupe, and with event ids in Redis as the binaries
//! run.
//!
//! `cargo bench -p runtime --bench throughput` (`make bench`); `BENCH_EVENTS` sets the count;
//! `BENCH_REPORT=<file>` appends the figures as Markdown.

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

async fn stage(b: &str, n: usize, codec: Arc<Codec>, dedupe: Dedupe) -> Duration {
    let mut args = RuntimeArgs::for_tests(b);
    if let Some(n) = std::env::var("BENCH_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        args.max_in_flight_per_partition = n;
    }
    let stage = RunningStage::start(Echo, args, codec, dedupe);
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

/// `n` config changes, keyed and partitioned as a stage would.
fn records(codec: &Codec, n: usize, tag: &str) -> Vec<(i32, String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let e = runtime::testing::config_change((i % 101 + 1) as i64, &format!("{tag}/{i}"));
            (
                partition_for(PartitionKey::Org(e.metadata.org_id), 6),
                e.record_key(),
                codec.encode(&e).expect("encode"),
            )
        })
        .collect()
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
        fill(&b, "bench.in", &records(&codec, n, "bare")).await;
        fill(&b, "config.changes", &records(&codec, n, "memory")).await;

        let c0 = cpu_seconds();
        let base = passthrough(&b, "bench.in", "bench.out", n).await;
        let c1 = cpu_seconds();
        let memory = stage(&b, n, codec.clone(), Dedupe::memory(n * 2)).await;
        let c2 = cpu_seconds();
        // The same stage with its event ids in Redis, as the binaries run: the group goes
        // on from its committed offsets over a second backlog.
        fill(&b, "config.changes", &records(&codec, n, "redis")).await;
        let prefix = format!("adpipe:bench:{}", envelope::Id::new());
        let redis = Dedupe::redis("redis://127.0.0.1:6379", prefix, Duration::from_secs(900))
            .await
            .expect("Redis at 127.0.0.1:6379");
        let c3 = cpu_seconds();
        let with_redis = stage(&b, n, codec, redis).await;
        let c4 = cpu_seconds();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let us = |c: f64| 1e6 * c / n as f64;
        let mut md = format!(
            "### Runtime loop (`cargo bench -p runtime --bench throughput`, BENCH_EVENTS={n})\n\n\
             A one-output stage (decode, dedupe, process, encode, produce, wait for acks, store \
             the offset) in this process, beside a bare rdkafka consume→produce loop over the \
             same number of records on the same broker (6 partitions), in the same run. CPU is \
             this process's (not the broker's) per record, group join included.\n\n\
             | loop | records/s | / bare | CPU per record |\n| --- | ---: | ---: | ---: |\n\
             | bare rdkafka consume→produce | {:.0} | 100 % | {:.1} µs |\n",
            rate(base),
            us(c1 - c0)
        );
        for (what, d, cpu) in [
            ("runtime, in-memory dedupe", memory, c2 - c1),
            ("runtime, Redis dedupe", with_redis, c4 - c3),
        ] {
            md.push_str(&format!(
                "| {what} | {:.0} | **{:.1} %** | {:.1} µs |\n",
                rate(d),
                100.0 * rate(d) / rate(base),
                us(cpu)
            ));
        }
        md.push('\n');
        print!("{md}");
        testkit::bench::append_report(&md);
    });
}
