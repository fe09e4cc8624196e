//! Stage throughput on a real Tansu broker: the runtime running a one-output stage
//! (decode, dedupe, process, encode, produce, wait for acks, store offset) beside a bare
//! rdkafka consume→produce loop over the same records, on the same broker, in the same run.
//! Both are timed from their first record in to their last output acknowledged.
//!
//! The stage runs twice: with in-memory dedupe, and with event ids in Redis as the binaries
//! run.
//!
//! `cargo bench -p runtime --bench throughput` (`make bench`); `BENCH_EVENTS` sets the count
//! (default 1,000,000); `BENCH_REPORT=<file>` appends the figures as Markdown.
//! `BENCH_ONLY=memory` (or `bare`, `redis`, comma-separated) runs only those loops;
//! `BENCH_TRACING=text` logs as the stage binaries do; `BENCH_IN_FLIGHT`, `BENCH_FETCH_KIB`
//! and `BENCH_FETCH_RECORDS` set `--max-in-flight-per-partition`, `--fetch-buffer-kib` and
//! `--fetch-buffer-records`.
//!
//! Instructions per record, repeatable on a noisy machine: run the bench under callgrind with
//! `BENCH_CALLGRIND=1`, which dumps the counts at the start and end of each loop (named after
//! it), e.g.
//!
//! ```text
//! BENCH_ONLY=memory BENCH_EVENTS=20000 BENCH_CALLGRIND=1 valgrind --tool=callgrind \
//!     --collect-atstart=yes target/release/deps/throughput-<hash>
//! callgrind_annotate callgrind.out.<pid>.2   # the memory loop: total Ir / BENCH_EVENTS
//! ```

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
    if let Some(n) = env_number("BENCH_IN_FLIGHT") {
        args.max_in_flight_per_partition = n;
    }
    if let Some(n) = env_number("BENCH_FETCH_KIB") {
        args.fetch_buffer_kib = n;
    }
    if let Some(n) = env_number("BENCH_FETCH_RECORDS") {
        args.fetch_buffer_records = Some(n);
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

/// The number environment variable `name` holds, if set and a number.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

/// Whether `BENCH_ONLY` (unset: every loop) includes `what`.
fn runs(what: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|o| o.trim() == what))
}

/// Under callgrind with `BENCH_CALLGRIND` set: dump the counts so far as `name` (the next
/// dump then holds what ran in between).
fn callgrind_dump(name: &str) {
    if std::env::var_os("BENCH_CALLGRIND").is_some() {
        let _ = std::process::Command::new("callgrind_control")
            .arg(format!("--dump={name}"))
            .arg(std::process::id().to_string())
            .status();
    }
}

fn main() {
    // `BENCH_TRACING=text` (or `json`): log as a stage binary does (`runtime::init_tracing`,
    // `RUST_LOG` or `info`), to count what the per-record spans cost with a subscriber.
    if let Ok(format) = std::env::var("BENCH_TRACING") {
        runtime::init_tracing(&format);
    }
    // A million: each loop runs for seconds at its steady rate (at 100,000 the group's first
    // fetches and the in-flight windows filling up were a large share of a 2 s run).
    let n: usize = env_number("BENCH_EVENTS").unwrap_or(1_000_000);
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
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let us = |c: f64| 1e6 * c / n as f64;
        let mut md = format!(
            "### Runtime loop (`cargo bench -p runtime --bench throughput`, BENCH_EVENTS={n})\n\n\
             A one-output stage (decode, dedupe, process, encode, produce, wait for acks, store \
             the offset) in this process, beside a bare rdkafka consume→produce loop over the \
             same number of records on the same broker (6 partitions), in the same run. CPU is \
             this process's (not the broker's) per record, group join included.\n\n\
             | loop | records/s | / bare | drained in | CPU per record |\n\
             | --- | ---: | ---: | ---: | ---: |\n"
        );
        let mut base = None;
        if runs("bare") {
            fill(&b, "bench.in", &records(&codec, n, "bare")).await;
            callgrind_dump("before-bare");
            let c0 = cpu_seconds();
            let d = passthrough(&b, "bench.in", "bench.out", n).await;
            let cpu = cpu_seconds() - c0;
            callgrind_dump("bare");
            md.push_str(&format!(
                "| bare rdkafka consume→produce | {:.0} | 100 % | {:.1} s | {:.1} µs |\n",
                rate(d),
                d.as_secs_f64(),
                us(cpu)
            ));
            base = Some(d);
        }
        let mut row = |what: &str, d: Duration, cpu: f64| {
            let share = base.map_or("–".to_owned(), |b| {
                format!("**{:.1} %**", 100.0 * rate(d) / rate(b))
            });
            md.push_str(&format!(
                "| {what} | {:.0} | {share} | {:.1} s | {:.1} µs |\n",
                rate(d),
                d.as_secs_f64(),
                us(cpu)
            ));
        };
        if runs("memory") {
            fill(&b, "config.changes", &records(&codec, n, "memory")).await;
            callgrind_dump("before-memory");
            let c1 = cpu_seconds();
            let memory = stage(&b, n, codec.clone(), Dedupe::memory(n * 2)).await;
            let cpu = cpu_seconds() - c1;
            callgrind_dump("memory");
            row("runtime, in-memory dedupe", memory, cpu);
        }
        if runs("redis") {
            // The same stage with its event ids in Redis, as the binaries run: the group goes
            // on from its committed offsets over a second backlog.
            fill(&b, "config.changes", &records(&codec, n, "redis")).await;
            let prefix = format!("adpipe:bench:{}", envelope::Id::new());
            let redis = Dedupe::redis("redis://127.0.0.1:6379", prefix, Duration::from_secs(900))
                .await
                .expect("Redis at 127.0.0.1:6379");
            callgrind_dump("before-redis");
            let c3 = cpu_seconds();
            let with_redis = stage(&b, n, codec, redis).await;
            let cpu = cpu_seconds() - c3;
            callgrind_dump("redis");
            row("runtime, Redis dedupe", with_redis, cpu);
        }
        md.push('\n');
        print!("{md}");
        testkit::bench::append_report(&md);
    });
}
