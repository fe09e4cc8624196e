//! Benchmark support: fill a topic fast, the bare rdkafka consume→produce loop every stage
//! benchmark is measured against, and this process's CPU time and memory.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};

use crate::client_config;

/// Produce `records` (partition, key, value) to `topic`, 2,000 in flight at a time.
pub async fn fill(b: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
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
pub async fn passthrough(b: &str, from: &str, to: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = client_config(b)
        .set("group.id", format!("bench-passthrough-{from}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[from]).expect("subscribe");
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
                    producer.send(FutureRecord::to(to).partition(p).key(&k).payload(&v), Duration::from_secs(30)).await
                });
            }
        }
    }
    start.expect("records arrived").elapsed()
}

/// CPU time (user + system) this process used so far, from /proc/self/stat (Linux).
pub fn cpu_seconds() -> f64 {
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

/// Resident memory of process `pid` now and at its peak, in KiB, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Append a benchmark's Markdown figures to the file `BENCH_REPORT` names (when set):
/// `scripts/bench.sh` builds BENCHMARKS.md from it.
pub fn append_report(markdown: &str) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("BENCH_REPORT") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    file.write_all(markdown.as_bytes())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// The release build of binary `name` beside the running benchmark (`target/release/`), for
/// benchmarks that start stage binaries; panics with what to run when it is missing.
pub fn release_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/release/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --profile bench --bins` first (`make bench` does)",
        path.display()
    );
    path.display().to_string()
}
