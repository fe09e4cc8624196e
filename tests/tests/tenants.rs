//! Tenant isolation through the stateful stages: two orgs on the same partition with
//! IDENTICAL campaign, entity, rule-name and channel ids, each with its own numbers, bookings,
//! rules and in-app channel, run through gold → rule-evaluator → notification-sender (in this
//! process, on a real broker, registry and PostgreSQL). Every output carries its own org and
//! only its own numbers: gold's state and aggregates hold no other org's delivery or booking,
//! a rule of one org never fires for the other's aggregate (each org has a rule the other's
//! numbers would trip), one org's alert state does not hide the other's, and one org's channel
//! never receives the other's alert.
//!
//! Also a static check: every SQL statement of the stages' `store.rs` that names a per-org
//! table keys it by `org_id`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use chrono::{Days, Utc};
use envelope::{
    Date, Event, Money,
    payload::{
        alerts::{Alert, AlertState},
        common::{Booking, Comparator, Metric},
        config::{ChannelDefinition, ChannelKind, ConfigChange, ConfigItem, ConfigOp},
        gold::{AggregateReady, Grain},
    },
};
use gold::stage::{Gold, GoldSettings};
use notification_sender::stage::{NotificationSender, NotifySettings};
use rule_evaluator::{
    fixtures::{rule, rule_change},
    stage::{RuleEvaluator, RuleSettings},
};
use runtime::{RuntimeArgs, dedupe::Dedupe, metrics::PROCESSED, testing::RunningStage};
use testbed::TestBed;
use testkit::{repo_root, wait_until};
use topics::{PartitionKey, Topic, partition_for};

const ORG_A: i64 = 11;
const CAMPAIGNS: [&str; 2] = ["c1", "c2"];
const ENTITIES: [&str; 2] = ["e1", "e2"];

/// An org's numbers: impressions and spend (cents) per entity row, and booked impressions.
#[derive(Debug, Clone, Copy)]
struct Numbers {
    impressions: i64,
    spend_cents: i64,
    booked: i64,
}

/// Org A delivers little against a large booking; org B much against a smaller one.
const A: Numbers = Numbers {
    impressions: 1_000,
    spend_cents: 1_000,
    booked: 100_000,
};
const B: Numbers = Numbers {
    impressions: 7_000,
    spend_cents: 7_000,
    booked: 30_000,
};

/// Another org on the same partition of every topic as [`ORG_A`]: state kept per partition
/// instead of per org would mix them.
fn org_b() -> i64 {
    let topics = [
        Topic::SilverDataProcessed,
        Topic::ConfigChanges,
        Topic::GoldDataReady,
        Topic::RulesAlertsTriggered,
    ];
    let home =
        |org: i64| topics.map(|t| partition_for(PartitionKey::Org(org), t.spec().partitions));
    (ORG_A + 1..)
        .find(|o| home(*o) == home(ORG_A))
        .expect("some org shares the partitions")
}

fn money(cents: i64) -> Money {
    Money::from_unscaled(cents).expect("money")
}

fn booking(org: i64, campaign: &str, n: Numbers, day: Date) -> Event<ConfigChange> {
    testbed::config_event(
        org,
        ConfigItem::Booking(Booking {
            campaign_id: campaign.into(),
            line_item_id: None,
            booked_impressions: n.booked,
            booked_budget: money(n.booked),
            booking_revenue: money(2 * n.booked),
            flight_start: Date(day.0 - Days::new(9)),
            flight_end: Date(day.0 + Days::new(10)),
            currency: Some("USD".into()),
        }),
    )
}

/// Org `org`'s in-app channel `inbox`, for audience `audience`.
fn inbox(org: i64, audience: &str) -> Event<ConfigChange> {
    testbed::config_event(
        org,
        ConfigItem::ChannelDefinition(ChannelDefinition {
            channel_id: "inbox".into(),
            kind: ChannelKind::InApp,
            target: audience.into(),
            secret_ref: None,
            rate_limit_per_minute: None,
            enabled: true,
        }),
    )
}

/// A daily impressions rule of `org` to its `inbox`.
fn impressions_rule(org: i64, id: &str, threshold: &str) -> Event<ConfigChange> {
    let mut r = rule(id, Metric::Impressions, Comparator::Gt, threshold);
    r.channels = vec!["inbox".into()];
    rule_change(org, 1, ConfigOp::Upsert, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orgs_with_identical_ids_never_see_each_others_data_alerts_or_notifications() {
    let org_b = org_b();
    let numbers = |org: i64| if org == ORG_A { A } else { B };
    let bed = TestBed::start(
        "tenants",
        &[
            Topic::SilverDataProcessed,
            Topic::ConfigChanges,
            Topic::GoldDataReady,
            Topic::RulesAlertsTriggered,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let (b, schema) = (&bed.bootstrap, &bed.schema);
    let args = || RuntimeArgs::for_tests(b);
    let dedupe = || Dedupe::memory(10_000);
    let gold = RunningStage::start(
        Gold::new(GoldSettings::for_tests(schema.url())),
        args(),
        bed.codec.clone(),
        dedupe(),
    );
    let rules = RunningStage::start(
        RuleEvaluator::new(RuleSettings::for_tests(schema.url())),
        args(),
        bed.codec.clone(),
        dedupe(),
    );
    let sender = RunningStage::start(
        NotificationSender::new(NotifySettings {
            database_url: schema.url(),
            database_connections: 2,
            commit_linger_ms: 5,
            commit_max_writes: 1000,
            smtp_url: "smtp://127.0.0.1:9".into(),
            smtp_from: "adpipe <alerts@adpipe.invalid>".into(),
            secrets_dir: bed.dir.path().to_owned(),
            channel_attempts: 3,
            channel_backoff_ms: 50,
            channel_backoff_max_ms: 200,
            request_timeout_ms: 2_000,
        })
        .expect("sender"),
        args(),
        bed.codec.clone(),
        dedupe(),
    );

    // Configuration first (so the rows meet their bookings): each org books both campaigns,
    // has a rule the OTHER org's numbers would trip and its own in-app "inbox".
    let day = Date(Utc::now().date_naive() - Days::new(1));
    let mut changes = Vec::new();
    for org in [ORG_A, org_b] {
        for c in CAMPAIGNS {
            changes.push(booking(org, c, numbers(org), day));
        }
    }
    // A's daily campaigns deliver 2,000, B's 14,000: A's rule trips on B's numbers only, B's
    // rule on both (a positive control for B, a leak for A).
    changes.push(impressions_rule(ORG_A, "tenant.reach", "10000"));
    changes.push(impressions_rule(org_b, "tenant.reach-low", "1000"));
    changes.push(inbox(ORG_A, "audience-a"));
    changes.push(inbox(org_b, "audience-b"));
    for c in &changes {
        bed.produce(c).await;
    }
    wait_until(
        Duration::from_secs(60),
        "every stage applied the config",
        || async {
            schema.count("gold_bookings").await == Some(4)
                && schema.count("rules_definitions").await == Some(2)
                && schema.count("notify_channels").await == Some(2)
        },
    )
    .await
    .expect("config applied");

    // The rows: identical campaign and entity ids, each org its own numbers.
    let mut rows = 0;
    for org in [ORG_A, org_b] {
        let n = numbers(org);
        for c in CAMPAIGNS {
            for e in ENTITIES {
                let row = gold::fixtures::delivery_row(
                    org,
                    c,
                    &format!("{c}-{e}"),
                    day,
                    n.impressions,
                    money(n.spend_cents),
                );
                bed.produce(&row).await;
                rows += 1;
            }
        }
    }
    let gold_inputs = (changes.len() + rows) as u64;
    wait_until(
        Duration::from_secs(60),
        "gold processed every input",
        || {
            let done = gold.metrics.total(PROCESSED) >= gold_inputs;
            async move { done }
        },
    )
    .await
    .expect("gold done");
    let aggregates = bed.events::<AggregateReady>(Duration::from_secs(5)).await;
    let evaluator_inputs = (aggregates.len() + changes.len()) as u64;
    wait_until(
        Duration::from_secs(60),
        "the evaluator processed every aggregate",
        || {
            let done = rules.metrics.total(PROCESSED) >= evaluator_inputs;
            async move { done }
        },
    )
    .await
    .expect("evaluator done");
    let alerts = bed.events::<Alert>(Duration::from_secs(5)).await;
    let sender_inputs = (alerts.len() + changes.len()) as u64;
    wait_until(
        Duration::from_secs(60),
        "the sender processed every alert",
        || {
            let done = sender.metrics.total(PROCESSED) >= sender_inputs;
            async move { done }
        },
    )
    .await
    .expect("sender done");

    // 1. Gold's state: per org and campaign, only that org's rows.
    let days: BTreeSet<(i64, String, i64, String, i64)> = schema
        .admin()
        .query(
            &format!(
                "SELECT org_id, campaign_id, sum(impressions)::bigint, sum(spend)::text, \
                 sum(rows)::bigint FROM {}.gold_days GROUP BY org_id, campaign_id",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("gold_days")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let want: BTreeSet<_> = [ORG_A, org_b]
        .into_iter()
        .flat_map(|org| {
            let n = numbers(org);
            CAMPAIGNS.map(|c| {
                (
                    org,
                    c.to_owned(),
                    2 * n.impressions,
                    money(2 * n.spend_cents).to_string(),
                    2,
                )
            })
        })
        .collect();
    assert_eq!(days, want, "gold_days per org: its own rows only");

    // 2. Gold's aggregates: each carries its org's booking and its org's delivery (none when
    // the booking arrived, then one row, then both), never the other org's or a mix.
    let mut final_daily: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for e in &aggregates {
        let org = e.metadata.org_id;
        assert!(org == ORG_A || org == org_b, "an org of the test: {org}");
        let (n, a) = (numbers(org), &e.payload);
        assert!(
            [0, n.impressions, 2 * n.impressions].contains(&a.impressions),
            "org {org}'s {} aggregate holds its own impressions only: {}",
            a.campaign_id,
            a.impressions
        );
        assert!(
            [0, n.spend_cents, 2 * n.spend_cents]
                .map(money)
                .contains(&a.spend),
            "org {org}'s spend only: {}",
            a.spend
        );
        let booked = a.booking.as_ref().map(|b| b.booked_impressions);
        assert_eq!(
            booked,
            Some(n.booked),
            "org {org} joined with its own booking"
        );
        if a.grain == Grain::Daily {
            final_daily.insert((org, a.campaign_id.clone()), a.impressions);
        }
    }
    let want_daily: BTreeMap<_, _> = [ORG_A, org_b]
        .into_iter()
        .flat_map(|org| CAMPAIGNS.map(|c| ((org, c.to_owned()), 2 * numbers(org).impressions)))
        .collect();
    assert_eq!(final_daily, want_daily, "each org's latest daily aggregate");

    // 3. Alerts: A's rule never fires (only B's numbers would trip it); B's fires for B's
    // campaigns only; every alert's figures are its own org's.
    let firing = |org: i64, rule: &str| -> BTreeSet<String> {
        alerts
            .iter()
            .filter(|e| e.metadata.org_id == org && e.payload.rule_id == rule)
            .filter(|e| e.payload.state == AlertState::Firing)
            .map(|e| e.payload.campaign_id.clone())
            .collect()
    };
    assert!(
        alerts.iter().all(|e| e.payload.rule_id != "tenant.reach"),
        "org A's rule fired (for org B's aggregate?): {:?}",
        alerts
            .iter()
            .filter(|e| e.payload.rule_id == "tenant.reach")
            .map(|e| (e.metadata.org_id, &e.payload.campaign_id))
            .collect::<Vec<_>>()
    );
    let campaigns: BTreeSet<String> = CAMPAIGNS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        firing(org_b, "tenant.reach-low"),
        campaigns,
        "B's rule, B's campaigns"
    );
    assert!(
        firing(ORG_A, "tenant.reach-low").is_empty(),
        "org B's rule fired for org A"
    );
    for e in &alerts {
        let org = e.metadata.org_id;
        assert!(org == ORG_A || org == org_b);
        if e.payload.metric == Metric::Impressions {
            let n = numbers(org).impressions;
            let own: Vec<Option<envelope::Ratio>> = [n, 2 * n]
                .map(|v| Some(v.to_string().parse().expect("ratio")))
                .to_vec();
            assert!(
                own.contains(&e.payload.observed),
                "org {org}'s own impressions: {:?}",
                e.payload.observed
            );
        }
    }
    // The same built-in rule on the same campaign id: A's under-pacing fires for A, and B's
    // state is B's own (on pace at the end: never firing last).
    let last_pacing = |org: i64, campaign: &str| {
        alerts
            .iter()
            .filter(|e| e.metadata.org_id == org && e.payload.campaign_id == campaign)
            .filter(|e| e.payload.rule_id == "default.pacing-low")
            .map(|e| e.payload.state)
            .next_back()
    };
    for c in CAMPAIGNS {
        assert_eq!(
            last_pacing(ORG_A, c),
            Some(AlertState::Firing),
            "A under-paces {c}"
        );
        assert_ne!(
            last_pacing(org_b, c),
            Some(AlertState::Firing),
            "B is on pace on {c}"
        );
    }

    // 4. Notifications: every in-app row is in its own org's inbox and carries one of its own
    // org's alerts; B's rule alerts reached B's inbox.
    let alert_org: BTreeMap<String, i64> = alerts
        .iter()
        .map(|e| (e.payload.alert_id.0.to_string(), e.metadata.org_id))
        .collect();
    let in_app: Vec<(i64, String, String, String)> = schema
        .admin()
        .query(
            &format!(
                "SELECT org_id, audience, alert_id::text, channel_id FROM {}.notify_in_app",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("in-app rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(!in_app.is_empty(), "alerts reached the inboxes");
    for (org, audience, alert, channel) in &in_app {
        let own = if *org == ORG_A {
            "audience-a"
        } else {
            "audience-b"
        };
        assert_eq!(audience, own, "org {org}'s inbox only");
        assert_eq!(channel, "inbox");
        assert_eq!(alert_org.get(alert), Some(org), "org {org}'s own alert");
    }
    let b_rule_alerts: BTreeSet<String> = alerts
        .iter()
        .filter(|e| e.payload.rule_id == "tenant.reach-low")
        .map(|e| e.payload.alert_id.0.to_string())
        .collect();
    let delivered_b: BTreeSet<String> = in_app
        .iter()
        .filter(|(org, ..)| *org == org_b)
        .map(|(_, _, a, _)| a.clone())
        .collect();
    assert!(
        b_rule_alerts.is_subset(&delivered_b),
        "B's alerts in B's inbox"
    );
    let deliveries: Vec<(i64, String)> = schema
        .admin()
        .query(
            &format!(
                "SELECT org_id, alert_id::text FROM {}.notify_deliveries",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("deliveries")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (org, alert) in &deliveries {
        assert_eq!(
            alert_org.get(alert),
            Some(org),
            "a delivery of org {org}'s own alert"
        );
    }
    eprintln!(
        "tenants: orgs {ORG_A} and {org_b}, {} aggregates, {} alerts, {} in-app rows, {} \
         deliveries",
        aggregates.len(),
        alerts.len(),
        in_app.len(),
        deliveries.len()
    );
    gold.stop().await.expect("gold stops");
    rules.stop().await.expect("evaluator stops");
    sender.stop().await.expect("sender stops");
    bed.schema.drop().await;
}

/// Statements that touch a per-org table without `org_id`, or read one without an
/// `org_id = $n` (or `org_id = ANY($n)`) filter, and why that is right. Each must still match a statement.
const NOT_ORG_SCOPED: &[(&str, &str, &str)] = &[
    (
        "bins/gold/src/store.rs",
        "SELECT DISTINCT org_id, campaign_id, line_item_id FROM gold_bookings",
        "the flush lists every org's active bookings (returning each org id) and emits each \
         under its own org",
    ),
    (
        "bins/audit-writer/src/store.rs",
        "DELETE FROM audit_events WHERE event_id IN",
        "the retention job deletes by age across orgs",
    ),
    (
        "bins/audit-writer/src/store.rs",
        "SELECT count(*) FROM audit_events",
        "a total for tests and status output",
    ),
];

/// The string literals of a Rust source, `\`-continued lines joined, whitespace collapsed.
fn string_literals(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal ('"', '\\') or a lifetime: skip a char literal whole.
                let ahead: String = chars.clone().take(3).collect();
                if ahead.starts_with('\\') {
                    chars.nth(2);
                } else if ahead.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                }
            }
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('\n') => {
                                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                                    chars.next();
                                }
                            }
                            Some(other) => s.push(other),
                            None => {}
                        },
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(s.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            _ => {}
        }
    }
    out
}

/// Tables of a stage's migrations that have an `org_id` column.
fn per_org_tables(migrations: &std::path::Path) -> Vec<String> {
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(migrations).expect("migrations") {
        let sql = std::fs::read_to_string(entry.expect("entry").path()).expect("sql");
        for part in sql.split("CREATE TABLE IF NOT EXISTS ").skip(1) {
            let name = part.split_whitespace().next().unwrap_or_default();
            let body = part.split(");").next().unwrap_or_default();
            if body.contains("org_id") {
                tables.push(name.to_owned());
            }
        }
    }
    tables
}

#[test]
fn every_statement_on_a_per_org_table_is_keyed_by_org_id() {
    let root = repo_root();
    let mut checked = 0;
    let mut allowed = vec![0; NOT_ORG_SCOPED.len()];
    let mut missing = Vec::new();
    for stage in [
        "gold",
        "rule-evaluator",
        "notification-sender",
        "audit-writer",
    ] {
        let file = format!("bins/{stage}/src/store.rs");
        let tables = per_org_tables(&root.join(format!("bins/{stage}/migrations")));
        assert!(!tables.is_empty(), "{stage} has per-org tables");
        let source = std::fs::read_to_string(root.join(&file)).expect("store.rs");
        for sql in string_literals(&source) {
            let touches = tables.iter().any(|t| {
                ["FROM", "INTO", "UPDATE", "JOIN"].iter().any(|k| {
                    sql.contains(&format!("{k} {t} ")) || sql.ends_with(&format!("{k} {t}"))
                })
            });
            if !touches {
                continue;
            }
            checked += 1;
            let read =
                sql.starts_with("SELECT") || sql.starts_with("DELETE") || sql.starts_with("UPDATE");
            let scoped = if read {
                // One org (`org_id = $n`), or the orgs of a batch's own inputs
                // (`org_id = ANY($n)`), each row returned with its org id.
                sql.contains("org_id = $") || sql.contains("org_id = ANY($")
            } else {
                sql.contains("org_id")
            };
            if scoped {
                continue;
            }
            match NOT_ORG_SCOPED
                .iter()
                .position(|(f, snippet, _)| *f == file && sql.contains(snippet))
            {
                Some(i) => allowed[i] += 1,
                None => missing.push(format!("{file}: {sql}")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "statements on per-org tables without org_id:\n{}",
        missing.join("\n")
    );
    for ((file, snippet, _), n) in NOT_ORG_SCOPED.iter().zip(&allowed) {
        assert!(*n > 0, "stale exception: {file}: {snippet}");
    }
    assert!(checked >= 15, "the statements were found: {checked}");
    eprintln!("{checked} statements on per-org tables checked");
}
