//! The evaluator's batches (`bins/rule-evaluator/src/batch.rs`) on a backlog: aggregates of
//! the same entities crossing the pacing thresholds back and forth, many per batch, raise
//! exactly the alerts the in-memory engine raises evaluating them one by one; an aggregate
//! PostgreSQL refuses fails alone; an entity state that cannot be read back fails that
//! entity's aggregates alone; an aggregate gold emits again under its event id is not
//! evaluated twice, though the evaluator's in-memory dedupe was lost in between. On
//! librdkafka's mock cluster and the real PostgreSQL.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use envelope::{
    Codec, Event,
    payload::{
        alerts::{Alert, AlertState},
        gold::AggregateReady,
    },
};
use pgstore::GroupCommit;
use rdkafka::Message as _;
use rule_evaluator::{
    fixtures::{booked, pacing},
    metrics::DUPLICATES,
    rules::{RuleEngine, default_rules},
    stage::{RuleEvaluator, RuleSettings},
    store::RuleStore,
};
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::RunningStage,
};
use testbed::fill_events;
use testkit::{MockBroker, header, pg::TestSchema, read_records, rewind_group, wait_until};
use topics::{ConsumerGroup, Topic};

/// The mock cluster with the evaluator's topics, and the evaluator running on a fresh
/// schema.
async fn start(
    prefix: &str,
) -> (
    MockBroker,
    TestSchema,
    Arc<Codec>,
    rule_evaluator::metrics::RuleMetrics,
    RunningStage,
) {
    let mock = MockBroker::start(1).expect("mock cluster");
    mock.create_stage_topics(&[
        Topic::GoldDataReady,
        Topic::ConfigChanges,
        Topic::RulesAlertsTriggered,
        Topic::AuditEvents,
    ])
    .expect("topics");
    let schema = TestSchema::create(prefix).await.expect("schema");
    let codec = Arc::new(Codec::offline());
    let (metrics, stage) = evaluator(&mock.bootstrap(), &schema, &codec);
    (mock, schema, codec, metrics, stage)
}

/// The evaluator (one lane, so the backlog's orgs share batches) on `schema`, with a dedupe
/// of its own.
fn evaluator(
    bootstrap: &str,
    schema: &TestSchema,
    codec: &Arc<Codec>,
) -> (rule_evaluator::metrics::RuleMetrics, RunningStage) {
    let evaluator = RuleEvaluator::new(RuleSettings {
        database_connections: 1,
        ..RuleSettings::for_tests(schema.url())
    });
    let metrics = evaluator.metrics();
    let stage = RunningStage::start(
        evaluator,
        RuntimeArgs::for_tests(bootstrap),
        codec.clone(),
        Dedupe::memory(10_000),
    );
    (metrics, stage)
}

/// After the evaluator stopped: its group's offsets back to 0 (a crash that lost every
/// commit), and a new evaluator that takes all `n` inputs again — every one a replay.
async fn replay(bootstrap: &str, schema: &TestSchema, codec: &Arc<Codec>, n: u64) -> RunningStage {
    let partitions = i32::try_from(Topic::GoldDataReady.spec().partitions).expect("partitions");
    rewind_group(
        bootstrap,
        ConsumerGroup::RuleEvaluator.name(),
        Topic::GoldDataReady.name(),
        partitions,
    )
    .expect("rewind");
    let (_, stage) = evaluator(bootstrap, schema, codec);
    settled(&stage, n, "the replays").await;
    stage
}

/// Wait until `n` inputs are processed or dead-lettered.
async fn settled(stage: &RunningStage, n: u64, what: &str) {
    let m = stage.metrics.clone();
    wait_until(Duration::from_secs(90), what, move || {
        let done = m.total(PROCESSED) + m.total(DEAD_LETTERED) >= n;
        async move { done }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The alerts on the topic, per (org, campaign) in the order emitted, and how many distinct
/// event ids they carry.
fn alerts_by_entity(
    bootstrap: &str,
    codec: &Codec,
    at_most: usize,
) -> (BTreeMap<(i64, String), Vec<Alert>>, usize) {
    let mut records = read_records(
        bootstrap,
        Topic::RulesAlertsTriggered.name(),
        at_most,
        Duration::from_secs(5),
    )
    .expect("alerts");
    records.sort_by_key(|r| (r.partition(), r.offset()));
    let mut out: BTreeMap<(i64, String), Vec<Alert>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for r in records {
        let e: Event<Alert> = codec
            .decode_known(r.payload().expect("value"))
            .expect("an alert");
        ids.insert(e.metadata.event_id);
        out.entry((e.metadata.org_id, e.payload.campaign_id.clone()))
            .or_default()
            .push(e.payload);
    }
    (out, ids.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_in_batches_alerts_as_one_by_one_and_a_refused_aggregate_fails_alone() {
    // 3 orgs x 4 campaigns x 50 aggregates, pacing switching between 70 % (below the
    // built-in low threshold) and 100 % every third aggregate, an hour apart: each entity
    // fires, resolves and fires again many times, often within one batch.
    let mut backlog = Vec::new();
    for step in 0..50i64 {
        for org in 1..=3 {
            for c in 0..4 {
                let pct = if (step / 3 + c) % 2 == 0 { "70" } else { "100" };
                backlog.push(pacing(org, &format!("c{c}"), 20, step * 60, pct));
            }
        }
    }
    // What evaluating them one by one decides.
    let mut engine = RuleEngine::new();
    let rules = default_rules();
    let mut expected: BTreeMap<(i64, String), Vec<Alert>> = BTreeMap::new();
    for e in &backlog {
        for d in engine.evaluate(e.metadata.org_id, &rules, &e.payload, e.metadata.event_id) {
            expected
                .entry((d.org_id, d.alert.campaign_id.clone()))
                .or_default()
                .push(d.alert);
        }
    }
    let alerts: usize = expected.values().map(Vec::len).sum();
    assert!(
        alerts > 100,
        "the backlog crosses thresholds often: {alerts}"
    );

    let (mock, schema, codec, metrics, stage) = start("rules_batches").await;
    let b = mock.bootstrap();
    fill_events(&b, &codec, &backlog).await;
    settled(&stage, backlog.len() as u64, "the backlog").await;
    assert_eq!(stage.metrics.total(DEAD_LETTERED), 0);
    assert_eq!(metrics.batch.split.get(), 0, "batches split");
    let (batches, inputs) = (metrics.batch.batches.get(), metrics.batch.inputs.get());
    assert_eq!(
        inputs,
        backlog.len() as u64,
        "every aggregate went through a batch"
    );
    assert!(
        batches * 5 <= inputs,
        "{batches} batches for {inputs} aggregates: not batched"
    );
    let (emitted, _) = alerts_by_entity(&b, &codec, alerts + 1);
    assert_eq!(
        emitted.values().map(Vec::len).sum::<usize>(),
        alerts,
        "as many alerts as one by one"
    );
    assert_eq!(
        emitted, expected,
        "the same alerts, in the same order per entity"
    );

    // Then new aggregates with one PostgreSQL refuses (a NUL byte in its campaign id): only
    // that one is dead-lettered, with PostgreSQL's reason.
    let mut more: Vec<_> = (0..20)
        .map(|i| booked(1, &format!("later-{i}"), 20, 0))
        .collect();
    more.insert(10, booked(1, "bad\0campaign", 20, 0));
    fill_events(&b, &codec, &more).await;
    settled(&stage, (backlog.len() + more.len()) as u64, "the rest").await;
    let dead = read_records(&b, &Topic::GoldDataReady.dlq(), 1, Duration::from_secs(10))
        .expect("dead letters");
    stage.stop().await.expect("clean stop");
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(
        header(&dead[0], "dlq.error.code").as_deref(),
        Some("STORE_QUERY")
    );
    let reason = header(&dead[0], "dlq.error.message").unwrap_or_default();
    assert!(reason.contains("0x00"), "PostgreSQL's reason: {reason}");
    assert_eq!(metrics.batch.split.get(), 1, "batches split");
    assert_eq!(
        schema.count("rules_entities").await,
        Some(3 * 4 + 20),
        "every other entity's state stored"
    );

    // A crash that lost every commit: all 621 inputs again, each a replay. The same alerts
    // again with the same event ids, the refused one dead-lettered again, no state changed.
    let total = (backlog.len() + more.len()) as u64;
    let again = replay(&b, &schema, &codec, total).await;
    let m = again.metrics.clone();
    again.stop().await.expect("clean stop");
    assert_eq!(m.total(PROCESSED), total - 1);
    assert_eq!(m.total(DEAD_LETTERED), 1, "the refused aggregate, again");
    let dead = read_records(&b, &Topic::GoldDataReady.dlq(), 3, Duration::from_secs(5))
        .expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        header(&dead[1], "dlq.error.code").as_deref(),
        Some("STORE_QUERY")
    );
    let (replayed, ids) = alerts_by_entity(&b, &codec, 2 * alerts + 1);
    let twice: BTreeMap<_, _> = expected
        .iter()
        .map(|(k, v)| (k.clone(), [v.clone(), v.clone()].concat()))
        .collect();
    assert_eq!(replayed, twice, "each entity's alerts once more, in order");
    assert_eq!(ids, alerts, "with the first run's event ids");
    assert_eq!(schema.count("rules_entities").await, Some(3 * 4 + 20));
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_state_that_cannot_be_read_back_fails_that_entitys_aggregates_alone() {
    let (mock, schema, codec, _metrics, stage) = start("rules_unreadable").await;
    let b = mock.bootstrap();
    let first: Vec<_> = (0..4).map(|c| booked(5, &format!("c{c}"), 20, 0)).collect();
    fill_events(&b, &codec, &first).await;
    settled(&stage, 4, "the first aggregates").await;
    // c0's stored state is no longer a state document.
    schema
        .admin()
        .execute(
            &format!(
                "UPDATE {}.rules_entities SET state = '{{\"alerts\": 5}}' \
                 WHERE org_id = 5 AND campaign_id = 'c0'",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("corrupt c0");
    let later: Vec<_> = (1..=3)
        .flat_map(|m| (0..4).map(move |c| booked(5, &format!("c{c}"), 20, m * 60)))
        .collect();
    fill_events(&b, &codec, &later).await;
    settled(&stage, 16, "the later aggregates").await;
    let m = stage.metrics.clone();
    let dead = read_records(&b, &Topic::GoldDataReady.dlq(), 4, Duration::from_secs(10))
        .expect("dead letters");
    stage.stop().await.expect("clean stop");
    assert_eq!(
        m.total(PROCESSED),
        13,
        "c0..c3's first and c1..c3's later aggregates"
    );
    assert_eq!(dead.len(), 3, "c0's three later aggregates");
    for d in &dead {
        assert_eq!(
            header(d, "dlq.error.code").as_deref(),
            Some("STORE_CORRUPT")
        );
        let e: Event<AggregateReady> = codec
            .decode_known(d.payload().expect("the original bytes"))
            .expect("an aggregate");
        assert_eq!(e.payload.campaign_id, "c0");
    }

    // Replayed (every commit lost): the three fail again, the rest pass again.
    let again = replay(&b, &schema, &codec, 16).await;
    let m = again.metrics.clone();
    again.stop().await.expect("clean stop");
    assert_eq!(m.total(PROCESSED), 13);
    assert_eq!(m.total(DEAD_LETTERED), 3, "c0's three, again");
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_emitted_again_under_its_event_id_is_not_evaluated_twice_without_redis() {
    // Gold, killed after producing an aggregate and before committing its input, emits it
    // again at a later offset under the same event id, recomputed from a state that changed
    // in between (here: pacing back to 100 %, which would resolve the first one's alert).
    let first = pacing(1, "c0", 20, 0, "70");
    let (mock, schema, codec, _, stage) = start("rules_again").await;
    let b = mock.bootstrap();
    fill_events(&b, &codec, std::slice::from_ref(&first)).await;
    settled(&stage, 1, "the first aggregate").await;
    stage.stop().await.expect("clean stop");

    // A restarted evaluator: its in-memory dedupe starts empty, as without Redis.
    let mut again = pacing(1, "c0", 20, 0, "100");
    again.metadata = first.metadata.clone();
    let fresh = pacing(1, "c1", 20, 0, "70");
    let (metrics, stage) = evaluator(&b, &schema, &codec);
    fill_events(&b, &codec, &[again, fresh]).await;
    settled(&stage, 2, "the re-emitted and a new aggregate").await;
    stage.stop().await.expect("clean stop");

    let (alerts, _) = alerts_by_entity(&b, &codec, 3);
    let states = |c: &str| -> Vec<AlertState> {
        alerts
            .get(&(1, c.to_owned()))
            .map(|v| v.iter().map(|a| a.state).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        states("c0"),
        [AlertState::Firing],
        "the first aggregate's alert, not resolved by its re-emission"
    );
    assert_eq!(
        states("c1"),
        [AlertState::Firing],
        "the new aggregate is evaluated"
    );
    assert_eq!(metrics.duplicates.get(), 1, "counted in {DUPLICATES}");

    // The ids evaluated (not the copy's twice) are kept as long as the outbox, and pruned
    // with it.
    let applied = || async {
        schema
            .admin()
            .query_one(
                &format!("SELECT count(*) FROM {}.rules_applied", schema.name()),
                &[],
            )
            .await
            .expect("a count")
            .get::<_, i64>(0)
    };
    assert_eq!(
        applied().await,
        2,
        "the first aggregate's id and the new one's"
    );
    let store = RuleStore::new(
        &schema.url(),
        GroupCommit {
            lanes: 1,
            linger: Duration::ZERO,
            max_writes: 1,
        },
    );
    store.prune_outbox(0).await.expect("prune");
    assert_eq!(applied().await, 0, "pruned with the outbox");
    schema.drop().await;
}
