//! Gold working through a backlog, on a real Tansu broker, the project's registry and the
//! local PostgreSQL: throughput beside a bare rdkafka consume→produce loop over the same
//! records on the same broker, and the gold process's peak resident memory for a small and a
//! four times larger backlog. Bounded memory means the two peaks are about the same.
//!
//! `cargo bench -p gold --bench backlog` (`make bench`); `BENCH_ROWS` sets the larger
//! backlog (default 160,000 rows; the smaller is a quarter, and both exceed the fetch buffer). Gold runs with its defaults
//! (8 MiB fetch buffer, 500 records per partition in flight) and Redis for dedupe.

use std::time::Duration;

use chrono::{Days, Utc};
use envelope::{Date, Event, Money, payload::silver::ProcessedRow};
use testbed::TestBed;
use testkit::{
    StageProcess,
    bench::{passthrough, rss_kib},
    create_topics,
};
use topics::Topic;

/// One row of org `i % 50`, campaign `i % 20`, a distinct entity and one of 28 days.
fn row(i: usize) -> Event<ProcessedRow> {
    let org = (i % 50 + 1) as i64;
    let day = Date(Utc::now().date_naive() - Days::new((i % 28) as u64));
    let impressions = 1_000 + (i as i64 * 37) % 9_000;
    let spend = Money::from_unscaled(impressions * 4).expect("money");
    let (campaign, entity) = (format!("c{}", i % 20), format!("adset-{}", i / 28));
    gold::fixtures::delivery_row(org, &campaign, &entity, day, impressions, spend)
}

struct Round {
    rows: usize,
    bare: Duration,
    gold: Duration,
    peak_kib: u64,
    /// Resident memory when a quarter, half, three quarters and all of the backlog were done.
    quartiles_kib: Vec<u64>,
}

async fn round(rows: usize) -> Round {
    let bed = TestBed::start(
        "gold_bench",
        &[
            Topic::SilverDataProcessed,
            Topic::ConfigChanges,
            Topic::GoldDataReady,
        ],
    )
    .await
    .expect("test bed");
    let b = &bed.bootstrap;
    let partitions = i32::try_from(Topic::SilverDataProcessed.spec().partitions).expect("p");
    create_topics(b, &[("bench.out", partitions)])
        .await
        .expect("topics");
    bed.fill((0..rows).map(row)).await;

    let bare = passthrough(b, "silver.data.processed", "bench.out", rows).await;

    let mut env = bed.stage_env();
    env.extend([
        ("GOLD_DATABASE_URL", bed.schema.url()),
        ("GOLD_FLUSH_INTERVAL_SECS", "0".to_owned()),
        // event_id dedupe in Redis, as in production (ids of this run only, short TTL).
        ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
        ("DEDUPE_TTL_SECS", "600".to_owned()),
    ]);
    let gold = StageProcess::spawn(
        env!("CARGO_BIN_EXE_gold"),
        &env,
        &bed.dir.path().join("gold.log"),
    )
    .expect("gold starts");
    let pid = gold.pid().expect("gold runs");
    // Timed from the first record in (start-up and group join excluded, as for the bare
    // loop); memory sampled at the quartiles.
    let mut quartiles_kib = Vec::new();
    let gold_elapsed = testbed::drain(gold.metrics_port(), rows, "gold", |done| {
        while quartiles_kib.len() < 4
            && done >= rows as f64 * (quartiles_kib.len() + 1) as f64 / 4.0
        {
            quartiles_kib.push(rss_kib(pid).map_or(0, |(now, _)| now));
        }
    })
    .await;
    let (_, peak_kib) = rss_kib(pid).expect("gold's /proc status");
    drop(gold);
    bed.schema.drop().await;
    Round {
        rows,
        bare,
        gold: gold_elapsed,
        peak_kib,
        quartiles_kib,
    }
}

fn main() {
    let large: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut rounds = Vec::new();
        for rows in [large / 4, large] {
            eprintln!("backlog of {rows} rows...");
            rounds.push(round(rows).await);
        }
        println!("gold on a backlog (12 partitions, Tansu in memory, local PostgreSQL, one run)");
        for r in &rounds {
            let rate = |d: Duration| r.rows as f64 / d.as_secs_f64();
            println!(
                "{:>7} rows: gold {:>7.0} rows/s, bare consume->produce {:>7.0} rows/s \
                 (gold at {:.1} %), gold peak RSS {:.1} MiB",
                r.rows,
                rate(r.gold),
                rate(r.bare),
                100.0 * rate(r.gold) / rate(r.bare),
                r.peak_kib as f64 / 1024.0
            );
            let mib: Vec<String> = r
                .quartiles_kib
                .iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect();
            println!(
                "         RSS at 25/50/75/100 % of the backlog done: {} MiB",
                mib.join(" / ")
            );
        }
        let (small, big) = (&rounds[0], &rounds[1]);
        println!(
            "peak RSS, {}x the backlog: {:.2}x the memory",
            big.rows / small.rows.max(1),
            big.peak_kib as f64 / small.peak_kib.max(1) as f64
        );
    });
}
