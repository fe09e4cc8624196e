//! The rule evaluator when its PostgreSQL goes away (a proxy in front of the real server is
//! cut) halfway through a dataset that crosses each built-in threshold once: aggregates wait
//! instead of going to the DLQ, and once the database is back every aggregate is evaluated
//! once, raising exactly the five threshold alerts. On librdkafka's mock cluster.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use envelope::{Codec, Event, payload::alerts::Alert};
use rdkafka::Message as _;
use rule_evaluator::{
    fixtures::{THRESHOLD_ALERTS, threshold_dataset},
    stage::{RuleEvaluator, RuleSettings},
};
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::RunningStage,
};
use testbed::fill_events;
use testkit::{CutProxy, MockBroker, pg::TestSchema, read_records, wait_until};
use topics::Topic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_makes_the_evaluator_wait_and_lose_nothing() {
    let mock = MockBroker::start(1).expect("mock cluster");
    let b = mock.bootstrap();
    mock.create_stage_topics(&[
        Topic::GoldDataReady,
        Topic::ConfigChanges,
        Topic::RulesAlertsTriggered,
        Topic::AuditEvents,
    ])
    .expect("topics");
    let schema = TestSchema::create("rules_outage").await.expect("schema");
    let proxy = CutProxy::start("127.0.0.1:5432").await.expect("proxy");
    let codec = Arc::new(Codec::offline());
    let dataset = threshold_dataset(40);
    let half = dataset.len() / 2;
    fill_events(&b, &codec, &dataset[..half]).await;

    let evaluator = RuleEvaluator::new(RuleSettings::for_tests(schema.url_via(proxy.port())));
    let waits = evaluator.metrics().batch.waits;
    // Three attempts for retryable errors: had the evaluator's batches handed the outage to
    // the runtime as plain retries, it would dead-letter them.
    let stage = RunningStage::start(
        evaluator,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(1000),
    );
    let m = stage.metrics.clone();
    let processed = |n: usize| {
        let m = m.clone();
        move || {
            let done = m.total(PROCESSED) >= n as u64;
            async move { done }
        }
    };
    wait_until(Duration::from_secs(60), "the first half", processed(half))
        .await
        .expect("before the outage");

    proxy.cut().await;
    fill_events(&b, &codec, &dataset[half..]).await;
    let waiting = {
        let waits = waits.clone();
        let before = waits.get();
        // Five failed attempts of a batch take about 1.5 s of backoff: well past the
        // runtime's 3 attempts per record.
        move || {
            let n = waits.get();
            async move { n >= before + 5 }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "the evaluator's batches waiting for PostgreSQL",
        waiting,
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: waits {}, processed {}, dead-lettered {}",
            waits.get(),
            m.total(PROCESSED),
            m.total(DEAD_LETTERED)
        )
    });
    assert_eq!(
        m.total(DEAD_LETTERED),
        0,
        "nothing dead-lettered while down"
    );
    assert!(
        m.total(PROCESSED) < dataset.len() as u64,
        "nothing evaluated while down"
    );

    proxy.restore();
    wait_until(
        Duration::from_secs(90),
        "every aggregate",
        processed(dataset.len()),
    )
    .await
    .expect("after the outage");
    stage.stop().await.expect("clean stop");
    assert_eq!(m.total(DEAD_LETTERED), 0);
    assert_eq!(
        m.total(PROCESSED),
        dataset.len() as u64,
        "each evaluated once"
    );

    // Exactly the five threshold alerts, each once (asking for one more finds none).
    let alerts: Vec<Event<Alert>> = read_records(
        &b,
        Topic::RulesAlertsTriggered.name(),
        THRESHOLD_ALERTS.len() + 1,
        Duration::from_secs(10),
    )
    .expect("alerts")
    .iter()
    .map(|r| {
        codec
            .decode_known(r.payload().expect("value"))
            .expect("an alert")
    })
    .collect();
    let fired: BTreeSet<(i64, String, String)> = alerts
        .iter()
        .map(|e| {
            (
                e.metadata.org_id,
                e.payload.rule_id.clone(),
                e.payload.entity.entity_id.clone(),
            )
        })
        .collect();
    let expected: BTreeSet<(i64, String, String)> = THRESHOLD_ALERTS
        .iter()
        .map(|(o, r, c)| (*o, (*r).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(fired, expected);
    assert_eq!(alerts.len(), THRESHOLD_ALERTS.len());
    schema.drop().await;
}
