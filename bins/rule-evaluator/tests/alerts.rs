//! The `rule-evaluator` binary on a real broker, registry and PostgreSQL: aggregates that
//! cross each built-in threshold raise exactly the expected alerts, also when the evaluator
//! is killed with SIGKILL mid-backlog and restarted; the alert state survives the restart (a
//! resolve carries the id of the alert it resolves); a rule change on `config.changes`
//! applies to the next aggregate without a restart; an unusable rule is dead-lettered.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use envelope::{
    Event, Id,
    payload::{
        alerts::{Alert, AlertState},
        common::{Comparator, Metric, Severity},
        config::ConfigOp,
    },
};
use rdkafka::{Message, message::Headers};
use rule_evaluator::fixtures::{
    DAY, THRESHOLD_ALERTS, pacing, rule, rule_change, threshold_dataset,
};
use testbed::TestBed;
use testkit::{StageProcess, counter, read_records, wait_until};
use topics::Topic;

/// Read the alerts until `done` holds of them, or fail after a minute with the stage's log.
async fn alerts_until(
    bed: &TestBed,
    stage: &StageProcess,
    what: &str,
    done: impl Fn(&[Event<Alert>]) -> bool,
) -> Vec<Event<Alert>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = bed.events::<Alert>(Duration::from_secs(5)).await;
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within a minute; log:\n{}",
            stage.log()
        );
    }
}

/// Alerts by event id (a replay may write an alert twice, always with the same event id).
fn distinct(alerts: &[Event<Alert>]) -> BTreeMap<Id, Event<Alert>> {
    alerts
        .iter()
        .map(|e| (e.metadata.event_id, e.clone()))
        .collect()
}

/// (org, rule id, campaign, state) of each distinct alert.
fn summary(alerts: &[Event<Alert>]) -> BTreeSet<(i64, String, String, AlertState)> {
    distinct(alerts)
        .values()
        .map(|e| {
            (
                e.metadata.org_id,
                e.payload.rule_id.clone(),
                e.payload.campaign_id.clone(),
                e.payload.state,
            )
        })
        .collect()
}

fn expected(
    items: &[(i64, &str, &str, AlertState)],
) -> BTreeSet<(i64, String, String, AlertState)> {
    items
        .iter()
        .map(|(o, r, c, s)| (*o, (*r).to_owned(), (*c).to_owned(), *s))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_alert_once_across_a_crash_and_rule_changes_apply_without_a_restart() {
    let bed = TestBed::start(
        "rules_e2e",
        &[
            Topic::GoldDataReady,
            Topic::ConfigChanges,
            Topic::RulesAlertsTriggered,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let (b, schema) = (&bed.bootstrap, &bed.schema);
    let mut envs = bed.stage_env();
    envs.push(("RULES_DATABASE_URL", schema.url()));
    let log = bed.dir.path().join("rule-evaluator.log");
    let bin = env!("CARGO_BIN_EXE_rule-evaluator");

    // 1. The whole dataset is waiting; the first evaluator is killed halfway through it.
    let data = threshold_dataset(300);
    for e in &data {
        bed.produce(e).await;
    }
    let mut stage = StageProcess::spawn(bin, &envs, &log).expect("starts");
    let port = stage.metrics_port();
    let half = (data.len() / 2) as f64;
    wait_until(
        Duration::from_secs(90),
        "the evaluator processed half the dataset",
        || async move {
            counter(port, runtime::metrics::PROCESSED)
                .await
                .is_some_and(|n| n >= half)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", stage.log()));
    stage.kill();
    let mut stage = StageProcess::spawn(bin, &envs, &log).expect("restarts");

    let thresholds: BTreeSet<_> = THRESHOLD_ALERTS
        .iter()
        .map(|(o, r, c)| (*o, (*r).to_owned(), (*c).to_owned(), AlertState::Firing))
        .collect();
    let seen = alerts_until(&bed, &stage, "five threshold alerts", |seen| {
        summary(seen).len() >= thresholds.len()
    })
    .await;
    assert_eq!(summary(&seen), thresholds, "exactly the threshold alerts");
    let by_key: BTreeMap<String, Event<Alert>> = distinct(&seen)
        .into_values()
        .map(|e| (e.payload.dedupe_key.clone(), e))
        .collect();
    assert_eq!(by_key.len(), 5, "one alert per org/rule/entity");
    let spike = &by_key["1/default.spend-anomaly/c-spend/c-spend"].payload;
    assert_eq!(spike.baseline, Some("100".parse().expect("r")));
    assert_eq!(spike.observed, Some("200".parse().expect("r")));
    let fired_low = by_key["1/default.pacing-low/c-pace-low/c-pace-low"].clone();

    // 2. After the restart, pacing recovers: the resolve carries the first run's alert id.
    let recovered = pacing(1, "c-pace-low", DAY, 30, "95");
    bed.produce(&recovered).await;
    let seen = alerts_until(&bed, &stage, "resolve", |seen| {
        seen.iter().any(|e| e.payload.state == AlertState::Resolved)
    })
    .await;
    let resolved = seen
        .iter()
        .find(|e| e.payload.state == AlertState::Resolved)
        .expect("found");
    assert_eq!(resolved.payload.alert_id, fired_low.payload.alert_id);
    assert_eq!(resolved.payload.dedupe_key, fired_low.payload.dedupe_key);

    // 3. Rule changes, with the same process running: org 1 lowers its pacing floor to 50 %
    // and adds an impressions rule; an unusable rule goes to the DLQ.
    for change in [
        rule_change(
            1,
            1,
            ConfigOp::Upsert,
            rule(
                "default.pacing-low",
                Metric::PacingRate,
                Comparator::Lt,
                "50",
            ),
        ),
        rule_change(
            1,
            1,
            ConfigOp::Upsert,
            rule("org1.reach", Metric::Impressions, Comparator::Gt, "5000"),
        ),
        rule_change(1, 1, ConfigOp::Upsert, {
            let mut r = rule("org1.broken", Metric::Spend, Comparator::DropPct, "10");
            r.window = "daily".into();
            r
        }),
    ] {
        bed.produce(&change).await;
    }
    wait_until(
        Duration::from_secs(30),
        "the rule changes stored",
        || async { schema.count("rules_definitions WHERE org_id = 1").await == Some(2) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", stage.log()));
    let mut next = pacing(1, "c-new", DAY, 0, "70");
    next.payload.impressions = 6_000;
    bed.produce(&next).await;
    let after = expected(&[(1, "org1.reach", "c-new", AlertState::Firing)]);
    let seen = alerts_until(&bed, &stage, "alert of the new rule", |seen| {
        summary(seen).iter().any(|s| s.2 == "c-new")
    })
    .await;
    let all: BTreeSet<_> = thresholds
        .iter()
        .cloned()
        .chain(expected(&[(
            1,
            "default.pacing-low",
            "c-pace-low",
            AlertState::Resolved,
        )]))
        .chain(after)
        .collect();
    assert_eq!(
        summary(&seen),
        all,
        "pacing 70 % no longer fires under the 50 % floor; the new rule does"
    );
    let reach = distinct(&seen)
        .into_values()
        .find(|e| e.payload.rule_id == "org1.reach")
        .expect("reach alert");
    assert_eq!(reach.payload.channels, ["ops-webhook"]);
    assert_eq!(reach.payload.severity, Severity::Critical);

    let dead = read_records(b, "config.changes.dlq", 1, Duration::from_secs(10)).expect("dlq");
    assert_eq!(dead.len(), 1, "the unusable rule is dead-lettered");
    let code = dead[0]
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == runtime::dlq::headers::ERROR_CODE)
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        })
        .unwrap_or_default();
    assert_eq!(code, "RULE_INVALID");
    let audited = read_records(b, "audit.events", 3, Duration::from_secs(10)).expect("audit");
    assert_eq!(
        audited.len(),
        2,
        "one config.applied audit event per stored rule"
    );
    let port = stage.metrics_port();
    let counted = counter(port, rule_evaluator::metrics::ALERTS).await;
    assert!(
        counted.is_some_and(|n| n >= 2.0),
        "the second run counted at least the resolve and the new rule's alert: {counted:?}"
    );
    assert!(stage.exited().is_none(), "the evaluator keeps running");
    bed.schema.drop().await;
}
