//! Alerts end to end: gold aggregates that cross each built-in threshold go through the rule
//! evaluator (in this process, on the real broker and PostgreSQL) to the
//! `notification-sender` binary, which is killed with SIGKILL mid-delivery and restarted
//! while the webhook fails its first two calls. Each expected alert reaches each of its org's
//! channels once; a rule added on `config.changes` while everything runs raises its alert to
//! the channel it names, and only that one.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use common::{Env, spawn_sender, start_hooks};
use envelope::{
    Event,
    payload::{
        alerts::{Alert, AlertState, AlertV2},
        common::{Comparator, Metric},
        config::ConfigOp,
    },
};
use notification_sender::key::idempotency_key;
use rule_evaluator::{
    fixtures::{DAY, THRESHOLD_ALERTS, booked, rule, rule_change, threshold_dataset},
    stage::{RuleEvaluator, RuleSettings},
};
use runtime::{RuntimeArgs, dedupe::Dedupe, testing::RunningStage};
use testbed::TestBed;
use testkit::wait_until;
use topics::Topic;

/// The alerts so far, by event id (a replay may write one twice, with the same id).
async fn alerts(bed: &TestBed) -> BTreeMap<envelope::Id, Event<Alert>> {
    bed.events::<Alert>(Duration::from_secs(5))
        .await
        .into_iter()
        .map(|e| (e.metadata.event_id, e))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threshold_alerts_reach_each_channel_once_through_a_sender_crash_and_a_flaky_webhook() {
    let bed = TestBed::start(
        "alerts_e2e",
        &[
            Topic::GoldDataReady,
            Topic::ConfigChanges,
            Topic::RulesAlertsTriggered,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let b = bed.bootstrap.clone();
    let codec = bed.codec.clone();
    let schema = &bed.schema;
    let dir = &bed.dir;
    let (http, hooks) = start_hooks(2, &[]).await;
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    let env = Env::new(&bed, "smtp://127.0.0.1:1".into(), &secrets);
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();

    // Org 1's channels: a webhook and an in-app inbox. The built-in rules name no channel,
    // so their alerts go to both.
    let mut sender = spawn_sender(&env, &[]);
    common::org1_webhook_and_inbox(&bed, &http, log).await;

    // The evaluator runs in this process for the whole test.
    let settings = RuleSettings::for_tests(schema.url());
    let evaluator = RunningStage::start(
        RuleEvaluator::new(settings),
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(100_000),
    );
    for e in threshold_dataset(20) {
        bed.produce(&e).await;
    }

    // Kill the sender once the webhook accepted its first deliveries (after two refusals).
    wait_until(Duration::from_secs(60), "two webhook deliveries", || {
        let hooks = hooks.clone();
        async move { hooks.lock().expect("hooks").accepted.len() >= 2 }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    sender.kill();
    let _sender = spawn_sender(&env, &[]);

    let expected: BTreeSet<(i64, String, String)> = THRESHOLD_ALERTS
        .iter()
        .map(|(o, r, c)| (*o, (*r).to_owned(), (*c).to_owned()))
        .collect();
    wait_until(
        Duration::from_secs(60),
        "five alerts on the webhook and in the inbox",
        || {
            let hooks = hooks.clone();
            async move {
                hooks.lock().expect("hooks").accepted.len() == 5
                    && schema.count("notify_in_app").await == Some(5)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    // Exactly the threshold alerts, and each reached each channel under its own key.
    let raised = alerts(&bed).await;
    let summary: BTreeSet<_> = raised
        .values()
        .map(|e| {
            assert_eq!(e.payload.state, AlertState::Firing);
            (
                e.metadata.org_id,
                e.payload.rule_id.clone(),
                e.payload.campaign_id.clone(),
            )
        })
        .collect();
    assert_eq!(summary, expected, "exactly the threshold alerts");
    let keys = |channel: &str| -> BTreeSet<String> {
        raised
            .values()
            .map(|e| idempotency_key(&AlertV2::from(e.payload.clone()), channel).to_string())
            .collect()
    };
    {
        let h = hooks.lock().expect("hooks");
        let accepted: BTreeSet<String> = h.accepted.keys().cloned().collect();
        assert_eq!(accepted, keys("ops-webhook"), "one webhook call per alert");
        assert!(h.calls.len() >= 7, "two refused calls, then five accepted");
        assert!(h.accepted.values().all(|c| c.path == "/hook/org1"));
        println!(
            "webhook: {} calls, {} accepted, {} repeats of an accepted key",
            h.calls.len(),
            h.accepted.len(),
            h.repeated.len()
        );
    }
    let inbox: BTreeSet<String> = schema
        .admin()
        .query(
            &format!(
                "SELECT idempotency_key::text FROM {}.notify_in_app WHERE org_id = 1",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("inbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(inbox, keys("ops-inbox"), "one in-app note per alert");

    // A rule added while everything runs: its alert goes to the channel it names only.
    bed.produce(&rule_change(
        1,
        1,
        ConfigOp::Upsert,
        rule("org1.reach", Metric::Impressions, Comparator::Gt, "5000"),
    ))
    .await;
    wait_until(Duration::from_secs(30), "the rule stored", || async {
        schema.count("rules_definitions WHERE org_id = 1").await == Some(1)
    })
    .await
    .expect("rule stored");
    let mut reach = booked(1, "c-reach", DAY, 0);
    reach.payload.impressions = 9_000;
    bed.produce(&reach).await;
    wait_until(Duration::from_secs(60), "the new rule's delivery", || {
        let hooks = hooks.clone();
        async move { hooks.lock().expect("hooks").accepted.len() == 6 }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    let raised = alerts(&bed).await;
    let new: Vec<_> = raised
        .values()
        .filter(|e| e.payload.rule_id == "org1.reach")
        .collect();
    assert_eq!(new.len(), 1, "one alert of the new rule");
    assert!(hooks.lock().expect("hooks").accepted.contains_key(
        &idempotency_key(&AlertV2::from(new[0].payload.clone()), "ops-webhook").to_string()
    ));
    assert!(
        schema.count("notify_in_app").await == Some(5),
        "the new rule names the webhook only"
    );
    assert_eq!(raised.len(), 6, "no other alert");
    evaluator.stop().await.expect("the evaluator stops cleanly");
    bed.schema.drop().await;
}
