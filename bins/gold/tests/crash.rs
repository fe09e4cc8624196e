//! The `gold` binary on a real broker, registry and PostgreSQL, killed with SIGKILL halfway
//! through a backlog and restarted: the final aggregates equal the ones this test computes
//! from the dataset itself — nothing lost, nothing counted twice, corrections replacing the
//! rows they correct.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use chrono::{Days, Utc};
use envelope::{
    Date, Event, Money, Timestamp,
    payload::{
        common::Booking,
        config::{ConfigChange, ConfigItem},
        gold::{AggregateReady, Grain, Trigger},
        silver::{ProcessedRow, QualityVerdict},
    },
};
use gold::formulas::{self, Flight, periods_of};
use rdkafka::Message;
use testbed::TestBed;
use testkit::StageProcess;
use testkit::{committed_offsets, counter, end_offsets, read_records, wait_until};
use topics::Topic;

const ORGS: i64 = 4;
const CAMPAIGNS: usize = 3;
const ENTITIES: usize = 20;
const DAYS: u64 = 5;

fn today() -> Date {
    Date(Utc::now().date_naive())
}

fn days_ago(n: u64) -> Date {
    Date(today().0 - Days::new(n))
}

/// One delivery row; values vary with `seed` so a correction differs from its original.
fn row(
    org: i64,
    c: usize,
    e: usize,
    date: Date,
    seed: i64,
    verdict: QualityVerdict,
) -> Event<ProcessedRow> {
    let impressions = 1_000 + seed * 37 % 5_000;
    let spend = Money::from_unscaled(impressions * 3 + seed % 100).expect("money");
    let (campaign, entity) = (format!("c{c}"), format!("o{org}-c{c}-e{e}"));
    let mut r = gold::fixtures::delivery_row(org, &campaign, &entity, date, impressions, spend);
    r.payload.request_id = format!("req-{seed}");
    r.payload.clicks = impressions / 50;
    r.payload.conversions = impressions / 700;
    r.payload.quality.verdict = verdict;
    if verdict == QualityVerdict::Quarantine {
        r.payload.quality.score = 40;
    }
    r
}

fn booking(org: i64, c: usize) -> Event<ConfigChange> {
    let b = Booking {
        campaign_id: format!("c{c}"),
        line_item_id: None,
        booked_impressions: 100_000 * (org + c as i64),
        booked_budget: Money::from_unscaled(5_000_000).expect("money"),
        booking_revenue: Money::from_unscaled(7_000_000 + org * 1_000).expect("money"),
        flight_start: days_ago(10),
        flight_end: Date(today().0 + Days::new(20)),
        currency: Some("USD".into()),
    };
    testbed::config_event(org, ConfigItem::Booking(b))
}

/// Per (org, campaign, day): impressions, clicks, conversions, spend, rows — from the final
/// value of each (org, entity, day) key, quarantined rows left out.
type Expected = BTreeMap<(i64, String, Date), (i64, i64, i64, Money, i64)>;

fn expected(rows: &[Event<ProcessedRow>]) -> Expected {
    let mut last: HashMap<(i64, String, Date), &ProcessedRow> = HashMap::new();
    for r in rows {
        if r.payload.quality.verdict == QualityVerdict::Quarantine {
            continue;
        }
        last.insert(
            (
                r.metadata.org_id,
                r.payload.entity.entity_id.clone(),
                r.payload.date,
            ),
            &r.payload,
        );
    }
    let mut out = Expected::new();
    for ((org, _, date), r) in last {
        let t = out
            .entry((org, r.campaign_id.clone(), date))
            .or_insert((0, 0, 0, Money::ZERO, 0));
        t.0 += r.impressions;
        t.1 += r.clicks;
        t.2 += r.conversions;
        t.3 = Money::new(t.3.value() + r.spend.value()).expect("money");
        t.4 += 1;
    }
    out
}

/// Expected totals of one campaign from `from` to `to`.
fn totals(
    exp: &Expected,
    org: i64,
    campaign: &str,
    from: Date,
    to: Date,
) -> (i64, i64, i64, Money, i64) {
    exp.range((org, campaign.to_owned(), from)..=(org, campaign.to_owned(), to))
        .fold((0, 0, 0, Money::ZERO, 0), |a, (_, t)| {
            (
                a.0 + t.0,
                a.1 + t.1,
                a.2 + t.2,
                Money::new(a.3.value() + t.3.value()).expect("money"),
                a.4 + t.4,
            )
        })
}

/// Events the gold on `port` processed so far; `None` when it is gone.
async fn processed(port: u16) -> Option<f64> {
    counter(port, runtime::metrics::PROCESSED).await
}

/// Start the gold binary on `bed`, flushing every `flush_secs` (0: never), and with
/// `paced`, one record in flight per partition and 50 ms commits: batched, gold drains the
/// whole backlog faster than a kill can land once a third of it is done.
fn spawn_gold(bed: &TestBed, flush_secs: u64, paced: bool) -> StageProcess {
    let mut env = bed.stage_env();
    env.push(("GOLD_DATABASE_URL", bed.schema.url()));
    env.push(("GOLD_FLUSH_INTERVAL_SECS", flush_secs.to_string()));
    if paced {
        env.push(("MAX_IN_FLIGHT_PER_PARTITION", "1".to_owned()));
        env.push(("GOLD_COMMIT_LINGER_MS", "50".to_owned()));
    }
    StageProcess::spawn(
        env!("CARGO_BIN_EXE_gold"),
        &env,
        &bed.dir.path().join("gold.log"),
    )
    .expect("gold starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice() {
    let bed = TestBed::start(
        "gold_crash",
        &[
            Topic::SilverDataProcessed,
            Topic::ConfigChanges,
            Topic::GoldDataReady,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let (b, codec, _schema) = (bed.bootstrap.clone(), bed.codec.clone(), &bed.schema);
    let log_file = bed.dir.path().join("gold.log");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();

    // The dataset: bookings, then every row of every day, then corrections of a fifth of
    // the rows, exact duplicates and quarantined rows — all produced before gold starts.
    for org in 1..=ORGS {
        for c in 0..CAMPAIGNS {
            bed.produce(&booking(org, c)).await;
        }
    }
    let mut rows = Vec::new();
    let mut seed = 0i64;
    for d in (0..DAYS).rev() {
        for org in 1..=ORGS {
            for c in 0..CAMPAIGNS {
                for e in 0..ENTITIES {
                    seed += 1;
                    rows.push(row(org, c, e, days_ago(d), seed, QualityVerdict::Pass));
                }
            }
        }
    }
    let originals = rows.len();
    for i in (0..originals).step_by(5) {
        let r = &rows[i].payload;
        let org = rows[i].metadata.org_id;
        let (c, e) = (i / ENTITIES % CAMPAIGNS, i % ENTITIES);
        assert_eq!(r.entity.entity_id, format!("o{org}-c{c}-e{e}"));
        rows.push(row(
            org,
            c,
            e,
            r.date,
            100_000 + i as i64,
            QualityVerdict::Warn,
        ));
    }
    // Exact duplicates (same event_id) of rows that are not corrected later.
    for i in (1..originals).step_by(17).filter(|i| i % 5 != 0) {
        rows.push(rows[i].clone());
        let mut q = row(
            rows[i].metadata.org_id,
            0,
            99,
            rows[i].payload.date,
            7,
            QualityVerdict::Quarantine,
        );
        q.payload.impressions = 999_999_999;
        rows.push(q);
    }
    for r in &rows {
        bed.produce(r).await;
    }
    let exp = expected(&rows);
    let inputs = rows.len() + (ORGS as usize) * CAMPAIGNS;

    // First run: SIGKILL once a third of the backlog is processed.
    let mut gold = spawn_gold(&bed, 0, true);
    let port = gold.metrics_port();
    wait_until(
        Duration::from_secs(90),
        "gold processed a third of the backlog",
        || async {
            processed(port)
                .await
                .is_some_and(|n| n >= (inputs / 3) as f64)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; gold's log:\n{}", log()));
    let at_kill = processed(port).await.unwrap_or(0.0);
    gold.kill();
    let processed_before = processed(port).await;
    assert!(processed_before.is_none(), "the first gold is gone");

    // Second run, flushing every second: it replays what the first did not commit.
    let gold = spawn_gold(&bed, 1, false);
    let port = gold.metrics_port();
    let silver_ends = end_offsets(&b, "silver.data.processed", 12).expect("ends");
    let config_partitions = i32::try_from(Topic::ConfigChanges.spec().partitions).expect("p");
    let config_ends = end_offsets(&b, "config.changes", config_partitions).expect("ends");
    wait_until(
        Duration::from_secs(120),
        "gold committed every input",
        || {
            let b = b.clone();
            let (silver_ends, config_ends) = (silver_ends.clone(), config_ends.clone());
            async move {
                let done = |topic: &str, n: i32, ends: &[i64]| {
                    committed_offsets(&b, "gold-processor", topic, n)
                        .map(|c| c.iter().map(|o| (*o).max(0)).collect::<Vec<_>>() == ends)
                        .unwrap_or(false)
                };
                done("silver.data.processed", 12, &silver_ends)
                    && done("config.changes", config_partitions, &config_ends)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; gold's log:\n{}", log()));
    let all_done = Timestamp::now();

    // Read gold.data.ready until a flush computed after the last input shows every booking.
    let mut out: Vec<Event<AggregateReady>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let bookings = (ORGS as usize) * CAMPAIGNS;
    loop {
        out.clear();
        for m in
            read_records(&b, "gold.data.ready", usize::MAX, Duration::from_secs(4)).expect("read")
        {
            out.push(
                codec
                    .decode(m.payload().unwrap_or_default())
                    .await
                    .expect("decodes"),
            );
        }
        let flushed = out
            .iter()
            .filter(|e| e.payload.trigger == Trigger::Flush && e.payload.as_of > all_done)
            .filter(|e| e.payload.grain == Grain::Monthly)
            .map(|e| (e.metadata.org_id, e.payload.campaign_id.clone()))
            .collect::<std::collections::HashSet<_>>();
        if flushed.len() == bookings {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no complete flush; gold's log:\n{}",
            log()
        );
    }
    let dead =
        read_records(&b, "silver.data.processed.dlq", 1, Duration::from_secs(3)).expect("dlq");
    assert!(
        dead.is_empty(),
        "nothing dead-lettered; gold's log:\n{}",
        log()
    );

    // 1. The last update of every period equals the dataset's totals.
    let mut last: BTreeMap<(i64, String, Grain, String), &AggregateReady> = BTreeMap::new();
    for e in out.iter().filter(|e| e.payload.trigger == Trigger::Update) {
        let a = &e.payload;
        if a.line_item_id.is_none() {
            last.insert(
                (
                    e.metadata.org_id,
                    a.campaign_id.clone(),
                    a.grain,
                    a.period_label.clone(),
                ),
                a,
            );
        }
    }
    let mut checked = 0;
    for d in 0..DAYS {
        for period in periods_of(days_ago(d)) {
            for org in 1..=ORGS {
                for c in 0..CAMPAIGNS {
                    let campaign = format!("c{c}");
                    let key = (org, campaign.clone(), period.grain, period.label.clone());
                    let a = last
                        .get(&key)
                        .unwrap_or_else(|| panic!("no aggregate for {key:?}"));
                    let want = totals(&exp, org, &campaign, period.start, period.end);
                    assert_eq!(
                        (a.impressions, a.clicks, a.conversions, a.spend, a.rows),
                        want,
                        "{key:?}"
                    );
                    assert_eq!(a.metrics.cpm, formulas::cpm(want.3, want.0), "{key:?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= (DAYS as usize) * 3 * bookings);

    // 2. The flush after the last input: today's periods with the booking's metrics.
    let now = today();
    for e in out
        .iter()
        .filter(|e| e.payload.trigger == Trigger::Flush && e.payload.as_of > all_done)
    {
        let (org, a) = (e.metadata.org_id, &e.payload);
        let b = a.booking.as_ref().expect("flushes carry the booking");
        let flight = Flight {
            start: b.flight_start,
            end: b.flight_end,
        };
        let want = totals(&exp, org, &a.campaign_id, a.period_start, a.period_end);
        assert_eq!((a.impressions, a.spend, a.rows), (want.0, want.3, want.4));
        let to_date = totals(&exp, org, &a.campaign_id, flight.start, now);
        assert_eq!(a.metrics.delivered_impressions_to_date, Some(to_date.0));
        assert_eq!(
            a.metrics.pacing_rate,
            formulas::pacing_rate(to_date.0, b.booked_impressions, flight, now)
        );
        assert_eq!(
            a.metrics.margin_pct,
            formulas::margin_pct(b.booking_revenue, to_date.3)
        );
        assert_eq!(
            a.metrics.projected_spend,
            formulas::projected_spend(to_date.3, flight, now)
        );
        assert_eq!(a.metrics.elapsed_days, Some(11));
    }

    // 3. The first run really was cut off mid-stream, and the second resumed from the
    // committed offsets rather than from the start.
    let second = processed(port).await.expect("metrics");
    eprintln!("killed after {at_kill} of {inputs} inputs; the restart processed {second}");
    assert!(
        at_kill < inputs as f64 * 0.9,
        "killed mid-stream ({at_kill} of {inputs} processed)"
    );
    assert!(
        second > 0.0 && second < inputs as f64,
        "the restart resumed ({second} of {inputs} processed by the second run)"
    );
    bed.schema.drop().await;
}
