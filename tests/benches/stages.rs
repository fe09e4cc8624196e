//! Every stage binary draining a backlog on one test bed (a Tansu broker in memory, the
//! project's registry, the local PostgreSQL and Redis), each beside a bare rdkafka
//! consume→produce pass-through of the same records on the same broker, measured right
//! before it in the same run; each stage's peak resident memory, sampled as the backlog
//! drains; and one stage run as two instances of its group against one.
//!
//! The backlogs chain: simulated DSP rows for bronze, bronze's outputs for silver, silver's
//! for gold; the rule evaluator, the notification sender and the audit writer get generated
//! aggregates, alerts (each to its org's in-app inbox) and audit events. Stages run their
//! release binaries (`cargo build --profile bench --bins`, which `make bench` does first)
//! with Redis dedupe, as in production.
//!
//! `cargo bench -p pipeline-tests --bench stages` (`make bench`). `BENCH_ROWS` sets the raw
//! rows of the chain (default 100,000); `BENCH_REPORT=<file>` appends the figures as
//! Markdown (`scripts/bench.sh` builds BENCHMARKS.md from them).

use std::time::{Duration, Instant};

use chrono::Utc;
use connector::sim::{SimConfig, Simulator};
use envelope::{
    Event, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, DspType, EntityRef, EntityType},
        config::ConfigItem,
    },
};
use notification_sender::fixtures;
use rdkafka::consumer::{BaseConsumer, Consumer};
use testbed::TestBed;
use testkit::{
    StageProcess,
    bench::{passthrough, release_bin, rss_kib},
    client_config, create_topics,
};
use topics::Topic;

/// One stage's figures.
struct Figure {
    stage: &'static str,
    input: Topic,
    records: usize,
    bare: Duration,
    ours: Duration,
    peak_mib: f64,
    /// Resident memory at 25, 50, 75 and 100 % of the backlog done.
    quartiles_mib: Vec<f64>,
}

impl Figure {
    fn rate(&self, d: Duration) -> f64 {
        self.records as f64 / d.as_secs_f64()
    }

    fn ratio(&self) -> f64 {
        100.0 * self.bare.as_secs_f64() / self.ours.as_secs_f64()
    }
}

/// Records in `topic`, read from the start until none arrives for two seconds (Tansu's high
/// watermark under-reports batched produce, so records are counted by reading them); up to
/// 30 s for the first.
async fn count(bootstrap: &str, topic: &'static str) -> usize {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&b)
            .set(
                "group.id",
                format!("bench-count-{topic}-{}", std::process::id()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("counting consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        // The first record waits for the group join; after it, two idle seconds end the count.
        let (mut n, mut idle_since) = (0, Instant::now() + Duration::from_secs(30));
        while idle_since.elapsed() < Duration::from_secs(2) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => {
                    n += 1;
                    idle_since = Instant::now();
                }
                Some(Err(e)) => panic!("counting {topic}: {e}"),
                None => {}
            }
        }
        n
    })
    .await
    .expect("counting task")
}

struct Bench {
    bed: TestBed,
    redis_prefix: String,
    figures: Vec<Figure>,
}

impl Bench {
    /// The environment of `stage` on the bed: Redis dedupe under a prefix of this run, state
    /// in the bed's PostgreSQL schema, no flush timer.
    fn env(&self, stage: &str) -> Vec<(&'static str, String)> {
        let mut env = self.bed.stage_env();
        let db = self.bed.schema.url();
        env.extend([
            ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
            ("DEDUPE_TTL_SECS", "900".to_owned()),
            ("INSTANCE_ID", format!("{}-{stage}", self.redis_prefix)),
            ("GOLD_DATABASE_URL", db.clone()),
            ("GOLD_FLUSH_INTERVAL_SECS", "0".to_owned()),
            ("RULES_DATABASE_URL", db.clone()),
            ("NOTIFY_DATABASE_URL", db.clone()),
            ("AUDIT_DATABASE_URL", db),
        ]);
        env
    }

    fn spawn(&self, stage: &str, instance: usize) -> StageProcess {
        let env = self.env(stage);
        let log = self.bed.dir.path().join(format!("{stage}-{instance}.log"));
        StageProcess::spawn(&release_bin(stage), &env, &log).expect("the stage starts")
    }

    /// The pass-through over `input`'s backlog, then `stage` draining it.
    async fn stage(&mut self, stage: &'static str, input: Topic, records: usize) {
        eprintln!("{stage}: {records} records of {}", input.name());
        let b = self.bed.bootstrap.clone();
        let out = format!("bench.out.{}", input.name());
        let partitions = i32::try_from(input.spec().partitions).expect("partitions");
        create_topics(&b, &[(out.as_str(), partitions)])
            .await
            .expect("pass-through topic");
        let bare = passthrough(&b, input.name(), &out, records).await;
        let mut procs = vec![self.spawn(stage, 0)];
        let pid = procs[0].pid().expect("the stage runs");
        let mut quartiles_mib = Vec::new();
        let ours = testbed::drain(&mut procs, records, stage, |done| {
            while quartiles_mib.len() < 4 && done >= (quartiles_mib.len() + 1) as f64 / 4.0 {
                let now = rss_kib(pid).map_or(0, |(now, _)| now);
                quartiles_mib.push(now as f64 / 1024.0);
            }
        })
        .await;
        let (_, peak) = rss_kib(pid).expect("the stage's /proc status");
        drop(procs);
        let f = Figure {
            stage,
            input,
            records,
            bare,
            ours,
            peak_mib: peak as f64 / 1024.0,
            quartiles_mib,
        };
        eprintln!(
            "  {stage}: {:.0} records/s, bare {:.0} records/s: {:.1} %, peak RSS {:.1} MiB",
            f.rate(f.ours),
            f.rate(f.bare),
            f.ratio(),
            f.peak_mib
        );
        self.figures.push(f);
    }
}

/// Simulated DSP rows: 20 orgs, 10 campaigns each, every DSP, as many days as `rows` needs.
/// The seed is new in every run: bronze remembers each request's rows (in Redis, for a day),
/// so rows of an earlier run would be skipped as duplicates.
fn raw_rows(rows: usize, seed: u64) -> Vec<Event<envelope::payload::raw::RawReport>> {
    let source = Source {
        service: "connector".into(),
        instance: "bench".into(),
    };
    let config = SimConfig {
        seed,
        orgs: 20,
        // 10 campaigns per org over 400 days hold ~100,000 rows: more rows, more campaigns.
        campaigns_per_org: 10
            * u32::try_from(rows.div_ceil(100_000).max(1)).unwrap_or(u32::MAX / 10),
        days: 400,
        end_date: Utc::now().date_naive(),
        bad_share: 0.02,
        dsps: DspType::ALL.to_vec(),
    };
    Simulator::new(config)
        .take(rows)
        .map(|row| connector::produce::event(row, &source))
        .collect()
}

/// One audit event of org `i % 50`, in the shape stages emit.
fn audit_event(i: usize) -> Event<AuditEvent> {
    Event::new(
        (i % 50 + 1) as i64,
        Source {
            service: "silver-processor".into(),
            instance: "bench".into(),
        },
        AuditEvent {
            action: "row.quarantined".into(),
            category: AuditCategory::Data,
            actor: Actor {
                actor_type: ActorType::Service,
                actor_id: "silver-processor".into(),
                display_name: None,
            },
            entity: EntityRef {
                entity_type: EntityType::LineItem,
                entity_id: format!("li-{}", i % 5_000),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::now(),
            reason: Some("quality score 40 below 60".into()),
            before: None,
            after: Some(format!(r#"{{"score":40,"row":{i}}}"#)),
            details: [("request_id".to_owned(), format!("req-{}", i / 100))].into(),
        },
    )
}

/// Two instances of `stage` in one group against one, each on a fresh backlog produced
/// while the instances are already in the group (so no rebalance falls into the timing).
async fn scaling(bench: &Bench, stage: &'static str, rows: usize) -> (Duration, Duration) {
    let mut times = Vec::new();
    for (round, instances) in [1usize, 2].into_iter().enumerate() {
        let mut procs: Vec<StageProcess> = (0..instances)
            .map(|i| bench.spawn(stage, 10 + 10 * round + i))
            .collect();
        // Ready = running with partitions assigned.
        testkit::wait_until(Duration::from_secs(120), "instances in the group", || {
            let ready = tokio::task::block_in_place(|| procs.iter().all(StageProcess::ready));
            async move { ready }
        })
        .await
        .unwrap_or_else(|e| {
            let logs: String = procs.iter().map(StageProcess::log).collect();
            panic!("{e}\n{logs}")
        });
        // Timed from the fill's start: the instances consume while it produces, so a timer
        // started at their first record (as `drain`'s) may start late and overstate the rate.
        let started = Instant::now();
        bench
            .bed
            .fill(raw_rows(rows, run_seed() + round as u64))
            .await;
        let what = format!("{stage} x{instances}");
        testbed::drain(&mut procs, rows, &what, |_| {}).await;
        times.push(started.elapsed());
    }
    (times[0], times[1])
}

/// A seed of this run (see [`raw_rows`]).
fn run_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ u64::from(std::process::id())
}

fn main() {
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bed = TestBed::start("stages_bench", Topic::ALL)
            .await
            .expect("test bed");
        let mut bench = Bench {
            redis_prefix: format!("bench-{}", std::process::id()),
            bed,
            figures: Vec::new(),
        };

        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        let run = |what: &str| only.is_empty() || only.split(',').any(|o| o == what);
        // The audit writer first: its topic then holds only the generated events.
        if run("audit-writer") {
            bench.bed.fill((0..rows).map(audit_event)).await;
            bench.stage("audit-writer", Topic::AuditEvents, rows).await;
        }

        // The chain: raw rows → bronze → silver → gold.
        if run("bronze") || run("silver") || run("gold") {
            let raw = raw_rows(rows, run_seed());
            // The stage and its pass-through wait for every record: count what was filled.
            let n = raw.len();
            bench.bed.fill(raw).await;
            bench.stage("bronze", Topic::ConnectorDataRaw, n).await;
        }
        if run("silver") || run("gold") {
            let cleaned = count(&bench.bed.bootstrap, Topic::BronzeDataCleaned.name()).await;
            bench
                .stage("silver", Topic::BronzeDataCleaned, cleaned)
                .await;
        }
        if run("gold") {
            let processed = count(&bench.bed.bootstrap, Topic::SilverDataProcessed.name()).await;
            bench
                .stage("gold", Topic::SilverDataProcessed, processed)
                .await;
        }

        // Aggregates for the rule evaluator: 50 orgs x 40 campaigns over 20 days.
        if run("rule-evaluator") {
            let aggregates = rows / 2;
            bench
                .bed
                .fill((0..aggregates).map(|i| {
                    rule_evaluator::fixtures::daily(
                        (i % 50 + 1) as i64,
                        &format!("c{}", i / 50 % 40),
                        (i / 2_000 % 20 + 1) as u32,
                        (i % 600) as i64,
                    )
                }))
                .await;
            bench
                .stage("rule-evaluator", Topic::GoldDataReady, aggregates)
                .await;
        }

        // Alerts for the notification sender, each to its org's in-app inbox: the channels
        // are applied by a first run of the sender, then the alerts are filled for a second.
        if run("notification-sender") {
            const ORGS: i64 = 50;
            let inboxes = (1..=ORGS).map(|org| {
                testbed::config_event(org, ConfigItem::ChannelDefinition(connector::sim::inbox()))
            });
            bench.bed.fill(inboxes.collect::<Vec<_>>()).await;
            let mut first = bench.spawn("notification-sender", 9);
            let schema = &bench.bed.schema;
            testkit::wait_until(
                Duration::from_secs(120),
                "every org's inbox applied",
                || async { schema.count("notify_channels").await == Some(ORGS) },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", first.log()));
            first
                .terminate(Duration::from_secs(30))
                .await
                .expect("the sender stops on SIGTERM");
            let alerts = rows / 5;
            bench
                .bed
                .fill(
                    (0..alerts).map(|i| fixtures::alert(i as i64 % ORGS + 1, i as i64, &["inbox"])),
                )
                .await;
            bench
                .stage("notification-sender", Topic::RulesAlertsTriggered, alerts)
                .await;
        }

        let scale_rows = rows / 2;
        let scaled = if run("scaling") {
            let (one, two) = scaling(&bench, "bronze", scale_rows).await;
            eprintln!(
                "bronze x1 {:.0} rows/s, x2 {:.0} rows/s",
                scale_rows as f64 / one.as_secs_f64(),
                scale_rows as f64 / two.as_secs_f64()
            );
            Some((scale_rows, one, two))
        } else {
            None
        };

        report(&bench.figures, rows, scaled);
        bench.bed.schema.drop().await;
    });
}

/// Print the figures, and append them as Markdown to `BENCH_REPORT` when set.
fn report(figures: &[Figure], rows: usize, scaled: Option<(usize, Duration, Duration)>) {
    let mut md = String::new();
    md.push_str(&format!(
        "### Stage throughput and memory (`cargo bench -p pipeline-tests --bench stages`, \
         BENCH_ROWS={rows})\n\n\
         Each stage binary drains a pre-filled backlog of its input topic, timed from its \
         first record in to its last record finished (processed, dead-lettered or skipped as a \
         duplicate), beside a bare rdkafka consume→produce pass-through of the same records \
         on the same broker, measured just before it.\n\n\
         | stage | input | records | bare pass-through | stage | stage / bare | peak RSS | RSS at 25/50/75/100 % |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n"
    ));
    for f in figures {
        let q: Vec<String> = f.quartiles_mib.iter().map(|m| format!("{m:.0}")).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {:.0}/s | {:.0}/s | **{:.1} %** | {:.0} MiB | {} MiB |\n",
            f.stage,
            f.input.name(),
            f.records,
            f.rate(f.bare),
            f.rate(f.ours),
            f.ratio(),
            f.peak_mib,
            q.join(" / ")
        ));
    }
    if let Some((scale_rows, one, two)) = scaled {
        let rate = |d: Duration| scale_rows as f64 / d.as_secs_f64();
        md.push_str(&format!(
            "\n**Scaling** (bronze, {scale_rows} raw rows each, produced once the instances had \
             joined, timed from the start of producing them to the last row done): one \
             instance {:.0} rows/s, two instances in the group {:.0} rows/s: **{:.2}×**.\n\n",
            rate(one),
            rate(two),
            rate(two) / rate(one)
        ));
    }
    print!("{md}");
    testkit::bench::append_report(&md);
}
