//! Load: a seeded simulator run of about 1,000,000 raw rows (`ADPIPE_RELIABILITY_ROWS`; 20
//! orgs, 250 campaigns each, as many report days as the number needs, 5 % bad rows of every
//! kind) goes through the release binaries connector → bronze → silver → gold → rule
//! evaluator → notification sender, and the audit-writer, on one Tansu broker, the project's
//! registry and PostgreSQL (the connector publishes no bookings: 5,000 of them take minutes
//! of their own; the CRM rows carry bookings into gold; each org's in-app inbox is filled
//! into `config.changes` before the stages start, and the built-in rules' alerts, which name
//! no channel, go to every channel of their org). Every 5 s the test prints each stage's
//! resident memory (from /proc), its processed count and its group's lag (end minus
//! committed offsets of its inputs; Tansu's end offsets read low, so this lag does too). At
//! the end nothing is lost or doubled:
//!
//! - every raw row is accounted for exactly once: a silver row (one per cleaned row, distinct
//!   event ids), a bronze dead letter (broken JSON, unknown source: the simulator's counts,
//!   by code), a duplicate pull bronze dropped (its `row.duplicate_dropped` audit event), or a
//!   DV360 footer;
//! - silver's quarantined rows each have their `row.quarantined` audit event;
//! - gold's per-day totals (impressions, clicks, conversions, spend, rows per org, campaign,
//!   line item and day) equal the sums of silver's rows, read back from
//!   `silver.data.processed` (passed and warned delivery rows, the last per silver dedupe key);
//! - the rule evaluator evaluated every aggregate gold produced once (its processed count
//!   equals gold's produced records, none skipped as duplicates, none taken for a
//!   re-emission by its own event-id check);
//! - the notification sender delivered every alert once, to its org's inbox: one sent
//!   delivery and one in-app row per alert;
//! - no stage dead-lettered anything else, and every stage still runs.
//!
//! Long: `make test-reliability` builds the release binaries and runs it; not part of
//! `make test`. Dedupe is in Redis, as deployed: a `redis-server` of the run's own (its peak
//! memory is printed at the end). `ADPIPE_RELIABILITY_BIN_DIR` runs binaries from another
//! directory of `target/` (e.g. `target/debug`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use connector::sim::{BadKind, SimConfig, Simulator};
use envelope::{
    Event,
    payload::{
        common::EntityType,
        config::ConfigItem,
        silver::{ProcessedRow, QualityVerdict},
    },
};
use rdkafka::{
    Message as _,
    consumer::{BaseConsumer, Consumer as _},
    message::Headers as _,
};
use rule_evaluator::metrics::DUPLICATES;
use runtime::metrics::{DEAD_LETTERED, DEDUPLICATED, MESSAGES_IN, PROCESSED, PRODUCED};
use testbed::TestBed;
use testkit::{
    RedisServer, StageProcess, bench::rss_kib, client_config, committed_offsets, counter_total,
    end_offsets, read_records, repo_root,
};
use topics::{ConsumerGroup, Topic};

/// The stages, and their consumer groups.
const STAGES: [(&str, &str); 6] = [
    ("bronze", "bronze-processor"),
    ("silver", "silver-processor"),
    ("gold", "gold-processor"),
    ("rule-evaluator", "rule-evaluator"),
    ("notification-sender", "notification-sender"),
    ("audit-writer", "audit-writer"),
];
const ORGS: u32 = 20;
const CAMPAIGNS: u32 = 250;
const SAMPLE: Duration = Duration::from_secs(5);

fn bin(name: &str) -> String {
    let dir =
        std::env::var("ADPIPE_RELIABILITY_BIN_DIR").unwrap_or_else(|_| "target/release".into());
    let path: PathBuf = repo_root().join(dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: `make test-reliability` builds it (cargo build --profile bench --bin {name})",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The dataset: about `rows` raw rows. Per day and org a pull per delivery source with a row
/// per campaign (+ a DV360 footer); CRM booking rows on the first day only.
fn dataset(rows: u64) -> SimConfig {
    let per_day = u64::from(ORGS) * (3 * u64::from(CAMPAIGNS) + 1);
    SimConfig {
        seed: 20_261_128,
        orgs: ORGS,
        campaigns_per_org: CAMPAIGNS,
        days: u32::try_from(rows.div_ceil(per_day))
            .unwrap_or(u32::MAX)
            .max(1),
        end_date: chrono::Utc::now().date_naive(),
        bad_share: 0.05,
        ..SimConfig::default()
    }
}

fn logs(bed: &TestBed) -> String {
    let mut out = String::new();
    for name in STAGES.iter().map(|(s, _)| *s).chain(["connector"]) {
        let log =
            std::fs::read_to_string(bed.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        out += &format!(
            "--- {name} ---\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out
}

fn group(name: &str) -> ConsumerGroup {
    *ConsumerGroup::ALL
        .iter()
        .find(|g| g.name() == name)
        .expect("a group of topic-config.yaml")
}

/// Lag of `group` (end minus committed offsets over its inputs' partitions), and whether it
/// committed up to every end offset; `None` when the broker did not answer.
fn lag(bootstrap: &str, group: ConsumerGroup) -> Option<(i64, bool)> {
    let mut total = 0;
    let mut caught_up = true;
    for t in group.inputs() {
        let partitions = i32::try_from(t.spec().partitions).ok()?;
        let end = end_offsets(bootstrap, t.name(), partitions).ok()?;
        let committed = committed_offsets(bootstrap, group.name(), t.name(), partitions).ok()?;
        for (e, c) in end.iter().zip(&committed) {
            total += (e - c.max(&0)).max(0);
            caught_up &= *e == 0 || c >= e;
        }
    }
    Some((total, caught_up))
}

/// One stage's figures over the run.
#[derive(Debug, Default, Clone)]
struct Figures {
    processed: f64,
    first: Option<Duration>,
    last_change: Duration,
    peak_rss_mib: f64,
}

/// A silver row's contribution to gold, as gold stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Contribution {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend_cents: i128,
}

/// Gold's key: org, campaign, line item ("" for none), day.
type DayKey = (i64, String, String, String);

/// What silver emitted: its rows' count, distinct event ids and cleaned ids, quarantined
/// rows, and the per-day sums gold must hold.
struct SilverOutput {
    records: u64,
    event_ids: usize,
    cleaned_ids: usize,
    quarantined: u64,
    days: BTreeMap<DayKey, (i64, i64, i64, i128, i64)>,
}

/// Read `silver.data.processed` from the start (every partition, in order) until `expected`
/// records and then 5 s without one, summing what gold must hold: per silver dedupe key the
/// last passed or warned delivery row.
async fn silver_output(bed: &TestBed, expected: u64) -> SilverOutput {
    let consumer: BaseConsumer = client_config(&bed.bootstrap)
        .set(
            "group.id",
            format!("reliability-reader-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[Topic::SilverDataProcessed.name()])
        .expect("subscribe");
    let mut records = 0u64;
    let mut event_ids = HashSet::new();
    let mut cleaned_ids = HashSet::new();
    let mut quarantined = 0;
    // Per dedupe key (org, dsp, entity, day): the latest row's gold key and contribution.
    let mut latest: HashMap<(i64, String, String, String), (DayKey, Contribution)> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_record = Instant::now();
    loop {
        let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        let Some(m) = polled else {
            if records >= expected && last_record.elapsed() > Duration::from_secs(5) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reading silver: {records} of {expected}"
            );
            continue;
        };
        let m = m.expect("silver records read");
        last_record = Instant::now();
        records += 1;
        let e: Event<ProcessedRow> = bed
            .codec
            .decode(m.payload().unwrap_or_default())
            .await
            .expect("silver records decode");
        event_ids.insert(e.metadata.event_id);
        let row = e.payload;
        cleaned_ids.insert(row.bronze_event_id);
        if row.quality.verdict == QualityVerdict::Quarantine {
            quarantined += 1;
            continue;
        }
        if row.booking.is_some() {
            continue;
        }
        let day = row.date.0.to_string();
        let line_item = if row.entity.entity_type == EntityType::LineItem {
            row.entity.entity_id.clone()
        } else {
            String::new()
        };
        latest.insert(
            (
                e.metadata.org_id,
                row.dsp_type.to_string(),
                row.entity.entity_id.clone(),
                day.clone(),
            ),
            (
                (e.metadata.org_id, row.campaign_id.clone(), line_item, day),
                Contribution {
                    impressions: row.impressions,
                    clicks: row.clicks,
                    conversions: row.conversions,
                    spend_cents: row.spend.unscaled(),
                },
            ),
        );
    }
    let mut days: BTreeMap<DayKey, (i64, i64, i64, i128, i64)> = BTreeMap::new();
    for (key, c) in latest.into_values() {
        let d = days.entry(key).or_default();
        d.0 += c.impressions;
        d.1 += c.clicks;
        d.2 += c.conversions;
        d.3 += c.spend_cents;
        d.4 += 1;
    }
    SilverOutput {
        records,
        event_ids: event_ids.len(),
        cleaned_ids: cleaned_ids.len(),
        quarantined,
        days,
    }
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: make test-reliability"]
async fn a_million_rows_through_the_chain_lose_nothing_and_double_nothing() {
    let rows: u64 = std::env::var("ADPIPE_RELIABILITY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let config = dataset(rows);
    let counts = Simulator::counts(&config);
    let bad = |k: BadKind| counts.bad.get(&k).copied().unwrap_or(0);
    let total = counts.rows;
    let dead = bad(BadKind::BrokenJson) + bad(BadKind::UnknownDsp);
    let duplicates = bad(BadKind::Duplicate);
    let cleaned = total - counts.footers - dead - duplicates;
    eprintln!(
        "dataset: {total} raw rows ({} orgs × {} campaigns × {} days), {} footers, {dead} \
         unparseable, {duplicates} duplicate pulls, {cleaned} rows for silver",
        config.orgs, config.campaigns_per_org, config.days, counts.footers
    );

    let bed = TestBed::start("reliability", Topic::ALL)
        .await
        .expect("test bed");
    let db = bed.schema.url();
    let mut env = bed.stage_env();
    env.push(("GOLD_DATABASE_URL", db.clone()));
    env.push(("RULES_DATABASE_URL", db.clone()));
    env.push(("NOTIFY_DATABASE_URL", db.clone()));
    env.push(("AUDIT_DATABASE_URL", db));
    // The stages' event ids in a Redis of the run's own, as deployed.
    let redis = RedisServer::start().await.expect("redis-server");
    env.push(("REDIS_URL", redis.open_url()));
    // Each org's in-app inbox, where its alerts go.
    bed.fill(
        (1..=i64::from(ORGS))
            .map(|org| {
                testbed::config_event(org, ConfigItem::ChannelDefinition(connector::sim::inbox()))
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let started = Instant::now();
    let mut procs: Vec<StageProcess> = STAGES
        .iter()
        .map(|(s, _)| {
            StageProcess::spawn(&bin(s), &env, &bed.dir.path().join(format!("{s}.log")))
                .unwrap_or_else(|e| panic!("starting {s}: {e}"))
        })
        .collect();
    let mut connector_env = env.clone();
    connector_env.extend([
        ("SIM_SEED", config.seed.to_string()),
        ("SIM_PASSES", "1".to_owned()),
        ("SIM_ORGS", config.orgs.to_string()),
        ("SIM_CAMPAIGNS", config.campaigns_per_org.to_string()),
        ("SIM_DAYS", config.days.to_string()),
        ("SIM_END_DATE", config.end_date.to_string()),
        ("SIM_BAD_SHARE", config.bad_share.to_string()),
        ("CONNECTOR_PROGRESS_SECS", "30".to_owned()),
        // The rows only: publishing a booking per campaign (5,000) takes minutes of its own.
        ("SIM_PUBLISH_CONFIG", "false".to_owned()),
    ]);
    let mut connector = StageProcess::spawn(
        &bin("connector"),
        &connector_env,
        &bed.dir.path().join("connector.log"),
    )
    .expect("starting the connector");
    let connector_pid = connector.pid();

    // Sample every 5 s until every stage is done and nothing moved for 5 s.
    let mut figures = vec![Figures::default(); STAGES.len()];
    let mut connector_peak = 0.0f64;
    let mut connector_done: Option<Duration> = None;
    let mut last_activity = (f64::NAN, Instant::now());
    let mut peak_lag = vec![0i64; STAGES.len()];
    let mut last_counters = vec![[0.0f64; 5]; STAGES.len()];
    loop {
        tokio::time::sleep(SAMPLE).await;
        let now = started.elapsed();
        assert!(
            now < Duration::from_secs(3600),
            "not done within an hour\n{}",
            logs(&bed)
        );
        if let Some(pid) = connector_pid
            && let Some((rss, _)) = rss_kib(pid)
        {
            connector_peak = connector_peak.max(rss as f64 / 1024.0);
        }
        if connector_done.is_none()
            && let Some(status) = connector.exited()
        {
            assert!(
                status.success(),
                "the connector failed: {status}\n{}",
                logs(&bed)
            );
            connector_done = Some(now);
        }
        let ports: Vec<u16> = procs.iter().map(StageProcess::metrics_port).collect();
        let pids: Vec<Option<u32>> = procs.iter().map(StageProcess::pid).collect();
        let b = bed.bootstrap.clone();
        let sample = tokio::task::spawn_blocking(move || {
            STAGES
                .iter()
                .zip(ports.iter().zip(&pids))
                .map(|((_, g), (port, pid))| {
                    // `+ 0.0`: an empty sum is -0.0.
                    let c = |name| counter_total(*port, name).map_or(-1.0, |v| v + 0.0);
                    (
                        [
                            c(PROCESSED),
                            c(DEAD_LETTERED),
                            c(DEDUPLICATED),
                            c(MESSAGES_IN),
                            c(PRODUCED),
                        ],
                        pid.and_then(rss_kib)
                            .map_or(0.0, |(rss, _)| rss as f64 / 1024.0),
                        lag(&b, group(g)),
                    )
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("sampler");
        let mut line = format!("{:>5.0}s", now.as_secs_f64());
        let mut all_caught_up = true;
        let mut activity = 0.0;
        for (i, (counters, rss, lag)) in sample.iter().enumerate() {
            last_counters[i] = *counters;
            let f = &mut figures[i];
            let processed = counters[0];
            if processed > 0.0 && f.first.is_none() {
                f.first = Some(now);
            }
            if processed != f.processed {
                f.last_change = now;
            }
            f.processed = processed;
            f.peak_rss_mib = f.peak_rss_mib.max(*rss);
            activity += counters.iter().sum::<f64>();
            let (l, up) = lag.unwrap_or((-1, false));
            peak_lag[i] = peak_lag[i].max(l);
            all_caught_up &= up;
            line += &format!(
                " | {} {:.0} done, {:.0} dlq, lag {l}, {rss:.0} MiB",
                STAGES[i].0, processed, counters[1]
            );
        }
        eprintln!("{line}");
        if activity != last_activity.0 {
            last_activity = (activity, Instant::now());
        }
        let bronze_done = sample[0].0[0] + sample[0].0[1];
        if connector_done.is_some()
            && bronze_done >= total as f64
            && sample[1].0[0] >= cleaned as f64
            && all_caught_up
            && last_activity.1.elapsed() >= Duration::from_secs(5)
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    for ((stage, _), p) in STAGES.iter().zip(procs.iter_mut()) {
        assert!(
            p.exited().is_none(),
            "{stage} exited by itself\n{}",
            logs(&bed)
        );
    }
    let connector_rss = if connector_peak > 0.0 {
        format!("peak RSS {connector_peak:.0} MiB")
    } else {
        "done before the first sample".to_owned()
    };
    eprintln!(
        "drained after {:.0} s (connector done at {:.0} s, {connector_rss})",
        elapsed.as_secs_f64(),
        connector_done.unwrap_or_default().as_secs_f64()
    );
    if let Some(peak) = redis.peak_memory() {
        eprintln!(
            "  redis (dedupe): peak memory {:.0} MiB",
            peak as f64 / 1024.0 / 1024.0
        );
    }
    for ((stage, _), (f, l)) in STAGES.iter().zip(figures.iter().zip(&peak_lag)) {
        let busy = f.last_change.saturating_sub(f.first.unwrap_or_default());
        eprintln!(
            "  {stage}: {:.0} processed, ~{:.0}/s over {:.0} s busy, peak RSS {:.0} MiB, peak \
             lag {l}",
            f.processed,
            f.processed / busy.as_secs_f64().max(1.0),
            busy.as_secs_f64(),
            f.peak_rss_mib
        );
    }

    // 1. Bronze's dead letters: exactly the unparseable rows, by code.
    let dlq = read_records(
        &bed.bootstrap,
        &Topic::ConnectorDataRaw.dlq(),
        usize::MAX,
        Duration::from_secs(15),
    )
    .expect("bronze dlq");
    let originals: HashSet<(Option<String>, Option<String>)> = dlq
        .iter()
        .map(|m| {
            (
                header(m, runtime::dlq::headers::ORIGINAL_PARTITION),
                header(m, runtime::dlq::headers::ORIGINAL_OFFSET),
            )
        })
        .collect();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for m in &dlq {
        *codes
            .entry(header(m, runtime::dlq::headers::ERROR_CODE).unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        originals.len() as u64,
        dead,
        "bronze dead letters: {codes:?}"
    );
    assert_eq!(
        codes,
        BTreeMap::from([
            ("BRONZE_MALFORMED_JSON".to_owned(), bad(BadKind::BrokenJson)),
            (
                "BRONZE_UNKNOWN_DSP_TYPE".to_owned(),
                bad(BadKind::UnknownDsp)
            ),
        ])
    );

    // 2. Nothing else dead-lettered anywhere.
    for t in Topic::ALL.iter().filter(|t| **t != Topic::ConnectorDataRaw) {
        let n = read_records(&bed.bootstrap, &t.dlq(), 1, Duration::from_secs(2))
            .expect("dlq")
            .len();
        assert_eq!(n, 0, "{} is empty\n{}", t.dlq(), logs(&bed));
    }

    // 3. Silver: one row per cleaned row, none twice.
    let silver = silver_output(&bed, cleaned).await;
    eprintln!(
        "silver.data.processed: {} records, {} distinct event ids, {} quarantined, {} gold days",
        silver.records,
        silver.event_ids,
        silver.quarantined,
        silver.days.len()
    );
    assert_eq!(
        silver.cleaned_ids as u64, cleaned,
        "one silver row per cleaned row"
    );
    assert_eq!(
        silver.event_ids as u64, cleaned,
        "no silver row emitted twice"
    );

    // 4. The rule evaluator: every aggregate gold produced, once.
    let stage_index = |name: &str| {
        STAGES
            .iter()
            .position(|(s, _)| *s == name)
            .expect("a stage")
    };
    let stage_counters = |name: &str| last_counters[stage_index(name)];
    let (gold_produced, rules) = (stage_counters("gold")[4], stage_counters("rule-evaluator"));
    let alerts = rules[4];
    // The evaluator also reads `config.changes`: the orgs' inboxes (which it ignores).
    let evaluated = rules[0] - f64::from(ORGS);
    eprintln!(
        "rule-evaluator: {evaluated:.0} aggregates evaluated of {gold_produced:.0} produced by \
         gold, {:.0} skipped as duplicates, {alerts:.0} alerts",
        rules[2]
    );
    assert!(gold_produced > 0.0, "gold produced aggregates");
    assert_eq!(evaluated, gold_produced, "every aggregate evaluated");
    assert_eq!(rules[2], 0.0, "no aggregate delivered twice");
    // Nothing was killed, so gold emitted no aggregate twice: an event id the evaluator
    // found evaluated before here would be an aggregate wrongly skipped.
    let port = procs[stage_index("rule-evaluator")].metrics_port();
    let skipped = tokio::task::spawn_blocking(move || counter_total(port, DUPLICATES))
        .await
        .expect("the counter");
    assert_eq!(
        skipped,
        Some(0.0),
        "aggregates the evaluator took for re-emissions (adpipe_rules_duplicates_total)"
    );

    // 5. The audit trail: each dropped duplicate and each quarantined row once.
    let pg = bed.schema.admin();
    let schema = bed.schema.name().to_owned();
    // One count from PostgreSQL.
    let count = |sql: String| {
        let pg = &pg;
        async move {
            pg.query_one(&sql, &[])
                .await
                .expect("a count")
                .get::<_, i64>(0)
        }
    };
    let audited = |action: &'static str| {
        count(format!(
            "SELECT count(DISTINCT event_id) FROM \"{schema}\".audit_events \
             WHERE action = '{action}'"
        ))
    };
    assert_eq!(
        audited("row.duplicate_dropped").await as u64,
        duplicates,
        "each duplicate pull dropped once"
    );
    assert_eq!(
        audited("row.quarantined").await as u64,
        silver.quarantined,
        "each quarantined row audited once"
    );

    // 6. The notification sender: every alert (and each org's inbox change) processed, each
    // alert delivered once to its org's inbox.
    let sender = stage_counters("notification-sender");
    let sent = count(format!(
        "SELECT count(*) FROM \"{schema}\".notify_deliveries WHERE status = 'sent'"
    ))
    .await;
    let in_app = count(format!(
        "SELECT count(DISTINCT (org_id, alert_id, state)) FROM \"{schema}\".notify_in_app"
    ))
    .await;
    let in_app_rows = count(format!("SELECT count(*) FROM \"{schema}\".notify_in_app")).await;
    eprintln!(
        "notification-sender: {:.0} records processed, {sent} deliveries sent, {in_app_rows} \
         in-app notifications for {alerts:.0} alerts",
        sender[0]
    );
    assert!(alerts > 0.0, "the rules raised alerts");
    assert_eq!(
        sender[0],
        alerts + f64::from(ORGS),
        "every alert and inbox processed"
    );
    assert_eq!(sender[2], 0.0, "no alert delivered twice");
    assert_eq!(sent as f64, alerts, "one sent delivery per alert");
    // An alert's firing and its resolution share its id: one row per id and state.
    assert_eq!(
        in_app_rows as f64, alerts,
        "one in-app row per alert record"
    );
    assert_eq!(in_app, in_app_rows, "no alert state notified twice");

    // 7. Gold: per org, campaign, line item and day, the sums of silver's rows.
    let gold: BTreeMap<DayKey, (i64, i64, i64, i128, i64)> = pg
        .query(
            &format!(
                "SELECT org_id, campaign_id, line_item_id, day::text, impressions, clicks, \
                 conversions, (spend * 100)::bigint, rows FROM \"{schema}\".gold_days \
                 WHERE rows > 0"
            ),
            &[],
        )
        .await
        .expect("gold_days")
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2), r.get(3)),
                (
                    r.get(4),
                    r.get(5),
                    r.get(6),
                    i128::from(r.get::<_, i64>(7)),
                    r.get(8),
                ),
            )
        })
        .collect();
    let differing: Vec<_> = silver
        .days
        .iter()
        .filter(|(k, v)| gold.get(*k) != Some(*v))
        .take(10)
        .map(|(k, v)| (k.clone(), *v, gold.get(k).copied()))
        .collect();
    assert!(
        differing.is_empty() && gold.len() == silver.days.len(),
        "gold's days ({}) equal silver's sums ({}); first differing (key, silver, gold): \
         {differing:#?}",
        gold.len(),
        silver.days.len()
    );
    let impressions: i64 = gold.values().map(|v| v.0).sum();
    eprintln!(
        "gold_days: {} rows equal silver's sums ({impressions} impressions); total {:.0} s",
        gold.len(),
        started.elapsed().as_secs_f64()
    );
    drop(procs);
    drop(connector);
    bed.schema.drop().await;
}
