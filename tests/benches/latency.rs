//! End-to-end latency, connector → notification: DSP rows produced at a steady moderate
//! rate through bronze, silver, gold, the rule evaluator and the notification sender (all
//! release binaries, Redis dedupe, state in PostgreSQL), each alert delivered as an in-app
//! notification. A notification's latency is the time its row was written (`created_at`)
//! minus the time the raw row that caused it was created, found by walking the events'
//! causation ids back from the alert. Beside it, in the same run on the same broker: a
//! one-hop produce→consume latency at the same rate.
//!
//! The rows are one report day of 50 orgs × 20 campaigns from every DSP; each org has the
//! in-app channel `inbox` and a rule that fires on any spend, so the first aggregate of every
//! campaign and line item raises one alert.
//!
//! `cargo bench -p pipeline-tests --bench latency` (`make bench`); `BENCH_LATENCY_RATE` sets
//! the rows per second (default 200); `BENCH_REPORT=<file>` appends the figures as Markdown.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::Utc;
use connector::sim::{SimConfig, Simulator};
use envelope::{
    Event, Id, Payload, Source,
    payload::{
        alerts::Alert,
        bronze::CleanedRow,
        common::{Comparator, DspType, Metric, Severity},
        config::{ConfigChange, ConfigItem, RuleDefinition},
        gold::AggregateReady,
        raw::RawReport,
        silver::ProcessedRow,
    },
};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    producer::FutureRecord,
};
use testbed::TestBed;
use testkit::{StageProcess, bench::release_bin, client_config, create_topics, wait_until};
use topics::Topic;

const STAGES: [&str; 5] = [
    "bronze",
    "silver",
    "gold",
    "rule-evaluator",
    "notification-sender",
];

/// p50, p99 and p99.9 of `ms`, in milliseconds.
fn percentiles(mut ms: Vec<f64>) -> [f64; 3] {
    assert!(!ms.is_empty(), "no latencies measured");
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), at(0.999)]
}

/// Sleep until the `i`-th send of a `rate`-per-second schedule that began at `start`.
async fn pace(start: Instant, rate: f64, i: usize) {
    let due = start + Duration::from_secs_f64(i as f64 / rate);
    tokio::time::sleep_until(due.into()).await;
}

/// One hop: records produced at `rate` to a topic, consumed by a consumer already in its
/// group; latency from the producer's timestamp to receipt.
async fn one_hop(bed: &TestBed, rate: f64, n: usize) -> Vec<f64> {
    let b = &bed.bootstrap;
    create_topics(b, &[("bench.hop", 12)])
        .await
        .expect("hop topic");
    let consumer: StreamConsumer = client_config(b)
        .set("group.id", "bench-hop")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["bench.hop"]).expect("subscribe");
    let reader = tokio::spawn(async move {
        let mut ms = Vec::with_capacity(n);
        while ms.len() < n {
            let m = consumer.recv().await.expect("record");
            let sent = m.timestamp().to_millis().expect("a create time");
            ms.push((Utc::now().timestamp_micros() as f64 / 1000.0) - sent as f64);
        }
        ms
    });
    // Let the consumer join before the clock starts (its first fetch waits for the group).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let value = vec![0u8; 400];
    let start = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        pace(start, rate, i).await;
        let key = format!("k{i}");
        let now = Utc::now().timestamp_millis();
        let send = bed.producer.send_result(
            FutureRecord::to("bench.hop")
                .key(&key)
                .payload(&value)
                .partition((i % 12) as i32)
                .timestamp(now),
        );
        acks.push(send.expect("queued"));
    }
    for a in acks {
        let _ = a.await;
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("every hop record arrives")
        .expect("reader")
}

/// Each org's in-app channel and a rule on any spend that notifies it.
fn config(orgs: i64) -> Vec<Event<ConfigChange>> {
    let mut out = Vec::new();
    for org in 1..=orgs {
        let channel = connector::sim::inbox();
        let rule = RuleDefinition {
            rule_id: "bench.any-spend".into(),
            name: "any spend".into(),
            metric: Metric::Spend,
            comparator: Comparator::Gt,
            threshold: "0".parse().expect("a threshold"),
            window: "daily".into(),
            severity: Severity::Info,
            channels: vec![channel.channel_id.clone()],
            cooldown_seconds: 0,
            enabled: true,
            campaign_id: None,
        };
        out.push(testbed::config_event(
            org,
            ConfigItem::ChannelDefinition(channel),
        ));
        out.push(testbed::config_event(org, ConfigItem::RuleDefinition(rule)));
    }
    out
}

/// (cause, created at in ms) of every event of `P`'s topic, by event id.
async fn causes<P: Payload>(bed: &TestBed) -> HashMap<Id, (Option<Id>, f64)> {
    bed.events::<P>(Duration::from_secs(8))
        .await
        .into_iter()
        .map(|e| {
            let m = e.metadata;
            (m.event_id, (m.causation_id, m.timestamp.millis() as f64))
        })
        .collect()
}

fn main() {
    let rate: f64 = std::env::var("BENCH_LATENCY_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bed = TestBed::start("latency_bench", Topic::ALL)
            .await
            .expect("test bed");
        let orgs = 50;
        let sim = SimConfig {
            // New in every run: bronze remembers each request's rows in Redis for a day.
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(11, |d| d.as_secs()),
            orgs: orgs as u32,
            campaigns_per_org: 20,
            days: 1,
            end_date: Utc::now().date_naive(),
            bad_share: 0.0,
            dsps: DspType::ALL.to_vec(),
        };
        let rows = Simulator::counts(&sim).rows as usize;

        eprintln!("one hop: {rows} records at {rate}/s");
        let hop = percentiles(one_hop(&bed, rate, rows).await);

        for change in config(orgs) {
            bed.produce(&change).await;
        }
        let db = bed.schema.url();
        let mut env = bed.stage_env();
        env.extend([
            ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
            ("DEDUPE_TTL_SECS", "900".to_owned()),
            ("GOLD_DATABASE_URL", db.clone()),
            ("GOLD_FLUSH_INTERVAL_SECS", "0".to_owned()),
            ("RULES_DATABASE_URL", db.clone()),
            ("NOTIFY_DATABASE_URL", db),
        ]);
        let procs: Vec<StageProcess> = STAGES
            .iter()
            .map(|s| {
                let log = bed.dir.path().join(format!("{s}.log"));
                StageProcess::spawn(&release_bin(s), &env, &log).expect("the stage starts")
            })
            .collect();
        // Every org's rule and channel applied before the first row.
        wait_until(Duration::from_secs(90), "the config applied", || async {
            bed.schema.count("rules_definitions").await == Some(orgs)
                && bed.schema.count("notify_channels").await == Some(orgs)
        })
        .await
        .unwrap_or_else(|e| {
            let logs: String = procs.iter().map(StageProcess::log).collect();
            panic!("{e}\n{logs}")
        });

        eprintln!("pipeline: {rows} DSP rows at {rate}/s");
        let source = Source {
            service: "connector".into(),
            instance: "bench".into(),
        };
        let start = Instant::now();
        for (i, row) in Simulator::new(sim).enumerate() {
            pace(start, rate, i).await;
            // Created now, so its timestamp is when the connector would have sent it.
            bed.produce(&connector::produce::event(row, &source)).await;
        }
        // The notifications settle: none new for 10 s.
        let (mut last, mut since) = (-1, Instant::now());
        while since.elapsed() < Duration::from_secs(10) {
            let n = bed.schema.count("notify_in_app").await.unwrap_or(0);
            if n != last {
                (last, since) = (n, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(procs);

        let delivered: Vec<(String, f64)> = bed
            .schema
            .admin()
            .query(
                &format!(
                    "SELECT alert_id::text, extract(epoch FROM created_at)::float8 * 1000 \
                     FROM {}.notify_in_app",
                    bed.schema.name()
                ),
                &[],
            )
            .await
            .expect("in-app notifications")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let alerts: HashMap<String, Id> = bed
            .events::<Alert>(Duration::from_secs(8))
            .await
            .into_iter()
            .map(|e| (e.payload.alert_id.to_string(), e.metadata.event_id))
            .collect();
        let mut chain = causes::<Alert>(&bed).await;
        chain.extend(causes::<AggregateReady>(&bed).await);
        chain.extend(causes::<ProcessedRow>(&bed).await);
        chain.extend(causes::<CleanedRow>(&bed).await);
        chain.extend(causes::<RawReport>(&bed).await);
        let raw_ids: std::collections::HashSet<Id> =
            causes::<RawReport>(&bed).await.into_keys().collect();
        let mut ms = Vec::new();
        for (alert_id, at) in &delivered {
            let mut id = *alerts
                .get(alert_id)
                .expect("every notification's alert was read");
            while !raw_ids.contains(&id) {
                id = chain
                    .get(&id)
                    .and_then(|(cause, _)| *cause)
                    .unwrap_or_else(|| {
                        panic!("the causation chain of alert {alert_id} breaks at {id}")
                    });
            }
            ms.push(at - chain[&id].1);
        }
        let n = ms.len();
        let e2e = percentiles(ms);
        let md = format!(
            "### End-to-end latency (`cargo bench -p pipeline-tests --bench latency`, \
             BENCH_LATENCY_RATE={rate})\n\n\
             {rows} DSP rows at {rate} rows/s through bronze, silver, gold, the rule evaluator \
             and the notification sender; {n} alerts delivered in-app. Latency from the raw \
             row's creation to the notification's row in PostgreSQL, beside one hop \
             (produce→consume, same broker, same rate, same run).\n\n\
             | path | p50 | p99 | p99.9 |\n| --- | ---: | ---: | ---: |\n\
             | one hop produce→consume | {:.1} ms | {:.1} ms | {:.1} ms |\n\
             | connector → in-app notification (5 stages) | {:.0} ms | {:.0} ms | {:.0} ms |\n\
             | ratio | {:.0}× | {:.0}× | {:.0}× |\n\n",
            hop[0],
            hop[1],
            hop[2],
            e2e[0],
            e2e[1],
            e2e[2],
            e2e[0] / hop[0],
            e2e[1] / hop[1],
            e2e[2] / hop[2]
        );
        print!("{md}");
        testkit::bench::append_report(&md);
        bed.schema.drop().await;
    });
}
